//! Command-line flags (clap derive). Raw flags only; validation happens in `commands`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  thresholds or the regression gate failed
  2  invalid usage or scenario
  3  the run could not be carried out (target unreachable, I/O error, aborted)";

/// Fleet simulator and load tester for pull-model CI agent protocols (Azure Pipelines).
#[derive(Parser, Debug)]
#[command(name = "fleetsim", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// More log output (-v info, -vv debug). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Live run: real HTTP(S), real crypto, real time; the embedded emulator unless the scenario
    /// or --target names a server.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// The same scenario in virtual time (discrete events); same report format.
    #[command(after_help = EXIT_CODES)]
    Simulate(SimulateArgs),
    /// Serve the emulator of the agent-facing Azure Pipelines API.
    #[command(after_help = EXIT_CODES)]
    Serve(ServeArgs),
    /// Compare two reports and fail on a regression.
    #[command(after_help = EXIT_CODES)]
    Compare(CompareArgs),
    /// Merge shard reports exactly (HDR histograms add).
    Merge(MergeArgs),
    /// Check a scenario file and report every problem with file:line:col.
    #[command(after_help = EXIT_CODES)]
    Validate(ValidateArgs),
    /// Print the scenario files' JSON Schema.
    Schema,
    /// Measure key generation, OAEP, RS256 and AES throughput on this machine.
    CryptoBench(CryptoBenchArgs),
}

/// Flags shared by `run` and `simulate`.
#[derive(Args, Debug)]
pub struct ScenarioArgs {
    /// Scenario file (TOML).
    pub scenario: PathBuf,
    /// Override any scenario field: --set fleet.agents=100 (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub overrides: Vec<String>,
    /// Run seed (overrides run.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write thresholds as JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Keep serving metrics this long after the run ends, so the final values get scraped.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub metrics_linger: String,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: ScenarioArgs,
    /// Target server base URL (overrides [target].url; default: the embedded emulator).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub common: ScenarioArgs,
    /// Calibration profile written by `fleetsim calibrate`.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Server configuration (pools, PATs, TTLs, limits). Without it, the PAT in FLEETSIM_PAT
    /// is accepted with every scope.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Generate a self-signed certificate and print where it was written.
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Directory for the self-signed certificate (default: a fleetsim dir under the temp dir).
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Seed for ids, keys and tokens.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    pub baseline: PathBuf,
    pub current: PathBuf,
    /// Largest tolerated regression, e.g. 10%.
    #[arg(long, default_value = "10%")]
    pub max_regression: String,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    pub scenario: PathBuf,
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CryptoBenchArgs {
    /// Time budget per measurement.
    #[arg(long, default_value = "500ms")]
    pub budget: String,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}
