//! Command-line flags (clap derive). Raw flags only; validation happens in `commands`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  thresholds or the regression gate failed
  2  invalid usage or scenario
  3  the run could not be carried out (target unreachable, I/O error, aborted), or a live
     run did not do its work (no token, no session, or no job completed while jobs were
     offered: the summary names the phase)";

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
    /// Merge the shard reports of one run exactly (HDR histograms add, pickups join across
    /// shards) and judge the scenario's thresholds on the whole.
    #[command(after_help = EXIT_CODES)]
    Merge(MergeArgs),
    /// Check a scenario file and report every problem with file:line:col.
    #[command(after_help = EXIT_CODES)]
    Validate(ValidateArgs),
    /// Print the scenario files' JSON Schema.
    Schema,
    /// Measure key generation, OAEP, RS256 and AES throughput on this machine.
    CryptoBench(CryptoBenchArgs),
    /// Capacity planning: simulate a scenario across values of one key (--vary; --shard I/N
    /// runs one machine's share, --merge joins the shares), or search the largest value that
    /// still meets the thresholds (--find-max).
    #[command(after_help = EXIT_CODES)]
    Plan(PlanArgs),
    /// Measure a live target's service times and saturation throughput; write the profile
    /// that `simulate --profile` and `plan --profile` read.
    #[command(after_help = EXIT_CODES)]
    Calibrate(CalibrateArgs),
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
    /// Run the embedded emulator in a child process (`fleetsim serve`) even when it fits in
    /// this one. It moves there anyway when both ends of the fleet's connections would not fit
    /// in the open-file limit.
    #[arg(long, conflicts_with = "target")]
    pub emulator_process: bool,
    /// Run shard I of N (0-based, e.g. 1/3) of a run split over processes or machines: agents
    /// I, I+N, I+2N, … (each with its global name, key and place in the ramp-up) and job
    /// arrivals I, I+N, … of the one arrival sequence every shard draws from the seed. Every
    /// shard needs the same scenario, seed and target (`[target]` or --target, e.g. one
    /// `fleetsim serve`); `fleetsim merge` joins the reports exactly.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<fleetsim_core::shard::Shard>,
    /// Run time zero (when the ramp-up, warm-up, faults and the run's length count from), the
    /// same for every shard: RFC 3339 (2026-12-05T15:00:00Z; fractional seconds and offsets
    /// allowed) or whole Unix seconds. The run gets ready (keys, target checks), then waits for
    /// it; a shard ready after it starts at once, as far into the run as it is late, and says
    /// how late. `stdin`: once ready, read the start time from the first line of standard
    /// input (in the same forms), a barrier for a parent that starts every shard together.
    /// Default: when this process is ready.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<fleetsim_live::fleet::StartAt>,
    /// Run the fleet as N processes of this program on this machine (1 to the fleet's agents):
    /// each runs `--shard i/N` of the scenario against one emulator (this process's, or the
    /// target), all start at the same instant, one progress display shows them, and one report
    /// merged from theirs is judged and written (exit codes as one run; a shard process that
    /// fails is exit 3, named). With --metrics-addr HOST:PORT this process serves the
    /// emulator's series and shard i its own on PORT+1+i (an emulator child on PORT+1+N); with
    /// port 0 only this process serves. Ctrl-C is passed on to the shards, which drain and
    /// report.
    #[arg(long, value_name = "N", conflicts_with_all = ["shard", "start_at"])]
    pub processes: Option<u32>,
    /// Print one JSON progress snapshot a line to stdout every 500 ms and at each change of
    /// phase (what a parent `run --processes` reads from its shard processes).
    #[arg(long, hide = true)]
    pub progress_json: bool,
    /// Close each agent's keep-alive connection between polls whatever this process's
    /// descriptor limit (what `run --processes` tells its shards when the shared emulator's
    /// limit cannot hold every shard's keep-alive connections).
    #[arg(long, hide = true)]
    pub close_keepalive: bool,
}

fn parse_shard(s: &str) -> Result<fleetsim_core::shard::Shard, String> {
    s.parse()
        .map_err(|e: fleetsim_core::shard::ShardError| e.to_string())
}

/// A front deadline: a duration with its unit (`10s`, `500ms`), above zero.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match fleetsim_core::dist::parse_duration(s)? {
        d if d.is_zero() => Err("must be above zero, e.g. 10s".to_string()),
        d => Ok(d),
    }
}

fn parse_start_at(s: &str) -> Result<fleetsim_live::fleet::StartAt, String> {
    s.parse()
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
    /// Connections served at once; more wait briefly, then are closed.
    #[arg(
        long,
        value_name = "N",
        default_value_t = fleetsim_live::server::DEFAULT_MAX_CONNECTIONS
    )]
    pub max_connections: usize,
    /// Close a connection whose TLS handshake and first request head are not complete this
    /// long after the accept (and a later request head this long after its first byte).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub head_timeout: Duration,
    /// Answer 408 and close when a request body is not complete this long after its head.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub body_timeout: Duration,
    /// Close a connection idle this long between requests.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    pub keep_alive_timeout: Duration,
    /// Bytes of request bodies received at once across all connections; beyond, 503.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = fleetsim_live::server::DEFAULT_MAX_INFLIGHT_BODY_BYTES
    )]
    pub max_inflight_body_bytes: usize,
    /// Serve the OAuth token endpoint on a second listener at ADDR (Services layout): the
    /// registration's authorizationUrl names it and the main listener no longer serves tokens.
    /// Overrides `[layout] token_listen`.
    #[arg(long, value_name = "ADDR")]
    pub token_listen: Option<SocketAddr>,
    /// Serve the collection under PATH (e.g. /org); nothing outside it is served. Overrides
    /// `[layout] collection_path`.
    #[arg(long, value_name = "PATH")]
    pub collection_path: Option<String>,
    /// Serve the plan hub on a third listener at ADDR (e.g. 127.0.0.2:0), named in job
    /// messages' SystemVssConnection.url; the main listener then refuses plan-hub routes.
    /// Overrides `[layout] plan_listen`.
    #[arg(long, value_name = "ADDR")]
    pub plan_listen: Option<SocketAddr>,
    /// Type `expires_in` in token answers as a JSON string.
    #[arg(long)]
    pub expires_in_as_string: bool,
    /// Keep pools, agents, PATs, jobs and plans in DIR/state.redb and restore them at start:
    /// after a crash (even kill -9) no answered change is lost. Sessions are not kept (agents
    /// open new ones). A dir written with another --seed or record format is refused.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    pub baseline: PathBuf,
    pub current: PathBuf,
    /// Largest tolerated regression, e.g. 10%.
    #[arg(long, default_value = "10%")]
    pub max_regression: String,
    /// Also write a self-contained HTML page: the baseline beside the current run over time,
    /// regressions highlighted.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The JSON reports of every shard of one run (`run --shard I/N --out …`), e.g.
    /// shard-*.json. Shards of different scenarios, seeds or counts, a shard given twice or
    /// missing: exit 2. Reports of whole runs (no shard) add without these checks.
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Write the merged JSON report here.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The scenario the shards ran: it must be the same scenario (digest), and its thresholds
    /// are judged on the merged report (exit 1 when one fails). Without it nothing is judged.
    #[arg(long, value_name = "SCENARIO")]
    pub scenario: Option<PathBuf>,
    /// Override a field of --scenario, as the shards' `run --set` did (repeatable); a shard
    /// run's --seed N is --set run.seed=N here.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE", requires = "scenario")]
    pub overrides: Vec<String>,
    /// Write the self-contained HTML report of the merged run here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the merged run's thresholds as JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Print the summary only when thresholds fail or the run is incomplete.
    #[arg(short, long)]
    pub quiet: bool,
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

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Scenario file (TOML).
    #[arg(required_unless_present = "merge")]
    pub scenario: Option<PathBuf>,
    /// Sweep: one point per value (each runs --seeds seeds), e.g. --vary
    /// fleet.agents=1000,2000,4000.
    #[arg(long, value_name = "KEY=V1,V2,...", conflicts_with_all = ["find_max", "find_min"])]
    pub vary: Option<String>,
    /// Search the largest value of KEY that every seed passes (more is worse, e.g. agents on
    /// one server); --lo must pass.
    #[arg(long, value_name = "KEY", requires_all = ["lo", "hi"], conflicts_with = "find_min")]
    pub find_max: Option<String>,
    /// Search the smallest value of KEY that every seed passes (less is worse, e.g. agents for
    /// a surge); --hi must pass.
    #[arg(long, value_name = "KEY", requires_all = ["lo", "hi"])]
    pub find_min: Option<String>,
    /// Low end of the search bracket. Whole numbers make an integer search.
    #[arg(long, value_name = "A")]
    pub lo: Option<String>,
    /// High end of the search bracket.
    #[arg(long, value_name = "B")]
    pub hi: Option<String>,
    /// At most this many points in a --find-max/--find-min search (each runs --seeds seeds).
    #[arg(long, default_value_t = 12)]
    pub runs: usize,
    /// Seeds per point: the run seed and the next N-1; each metric is reported as the mean
    /// with a 95 % Student-t interval over them. --seeds 1 is one run per point.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=100))]
    pub seeds: u16,
    /// Scale KEY in proportion to the varied value (repeatable), e.g. --scale-with
    /// jobs.rate_per_s keeps the load per agent while fleet.agents varies.
    #[arg(long = "scale-with", value_name = "KEY")]
    pub scale_with: Vec<String>,
    /// Add a threshold (repeatable), e.g. --threshold 'job_pickup.p99 < 5s'.
    #[arg(long = "threshold", value_name = "METRIC OP VALUE")]
    pub thresholds: Vec<String>,
    /// Override any scenario field: --set fleet.ramp_up=5m (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub overrides: Vec<String>,
    /// Run seed (overrides run.seed): the first of the --seeds seeds.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Calibration profile written by `fleetsim calibrate` (replaces [[server.stations]]).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Write the table as CSV here.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write an SVG chart of pickup p50/p99 here.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Write an HTML page here: the capacity curves (each metric against the value, with its
    /// 95 % interval band and the threshold line) and the table; one self-contained file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Simulations at once (default: the machine's cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
    /// Run only this machine's share of a --vary sweep: point j when j mod N = I (0-based),
    /// e.g. --shard 0/3 … 2/3 on three machines; needs --out. `plan --merge` joins the files
    /// into the table one machine would print.
    #[arg(long, value_name = "I/N", requires = "out")]
    pub shard: Option<String>,
    /// Write the plan result (every point's row with its index, the scenario digest, the key,
    /// the shard) as JSON here, for `plan --merge`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Merge the --out files of every shard of one sweep and print (and --csv/--svg) the
    /// table one machine would have made; runs no simulation.
    #[arg(
        long,
        value_name = "PLAN.json",
        num_args = 1..,
        conflicts_with_all = [
            "scenario", "vary", "find_max", "find_min", "shard", "out", "overrides",
            "thresholds", "scale_with", "seed", "seeds", "profile", "threads", "lo", "hi",
        ]
    )]
    pub merge: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Target base URL (default: the embedded emulator, started in this process).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Environment variable holding the target's PAT.
    #[arg(long, value_name = "NAME", default_value = "FLEETSIM_PAT")]
    pub pat_env: String,
    /// Agents of the low-load fleet run (per-operation service times and, for the embedded
    /// emulator, the process's CPU per request). Default: 8 against a target, 200 against the
    /// embedded emulator, where enough requests make the run's fixed CPU (timers, telemetry)
    /// a small part of the CPU per request.
    #[arg(long)]
    pub agents: Option<u32>,
    /// Length of the low-load fleet run.
    #[arg(long, value_name = "DURATION", default_value = "20s")]
    pub duration: String,
    /// Length of each step of the saturation ramp.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub step: String,
    /// Highest concurrency of the saturation ramp.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_concurrency: u32,
    /// Seed of the fleet run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Against --target: after the other measurements, one saturation ramp per route group
    /// (token exchange, session create/delete, lock renewal, timeline update) with calibration
    /// agents that register, hold one job and are deleted at the end, so the profile has one
    /// station per group. `false` skips them (each ramp loads the target up to
    /// --max-concurrency clients)
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub per_route: bool,
    /// Write the profile here.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}
