//! One function per subcommand: parse what clap could not, call the library, write the
//! outputs, and map the outcome to an exit code (`crate::exit`).

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleetsim_core::dist::parse_duration;
use fleetsim_core::shard::Shard;
use fleetsim_live::prom::{self, PromHandle, Role};
use fleetsim_metrics::{
    Report, compare, parse_max_regression, render_compare_html, render_html, render_junit,
    render_summary,
};
use fleetsim_scenario::Scenario;

use crate::args::{
    Cli, Command, CompareArgs, CryptoBenchArgs, RunArgs, ScenarioArgs, ServeArgs, SimulateArgs,
    ValidateArgs,
};
use crate::{Failure, exit};

pub(crate) type Outcome = Result<u8, Failure>;

/// Logs go to stderr; `RUST_LOG` wins over `-v`.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn dispatch(cli: Cli) -> Outcome {
    match cli.command {
        Command::Run(a) => run(a),
        Command::Simulate(a) => simulate(a),
        Command::Serve(a) => serve(a),
        Command::Compare(a) => compare_reports(a),
        Command::Merge(a) => crate::merge::run(a),
        Command::Validate(a) => validate(a),
        Command::Schema => schema(),
        Command::CryptoBench(a) => crypto_bench(a),
        Command::Plan(a) => crate::plan::run(a),
        Command::Calibrate(a) => crate::calibrate::run(a),
    }
}

/// Load a scenario with `--set` overrides plus the flags that are shorthands for overrides.
pub(crate) fn load_scenario(
    path: &Path,
    overrides: &[String],
    seed: Option<u64>,
) -> Result<Scenario, Failure> {
    let mut all = overrides.to_vec();
    if let Some(seed) = seed {
        all.push(format!("run.seed={seed}"));
    }
    load_with(path, &all)
}

/// Load a scenario with these overrides; its diagnostics become a usage error (exit 2).
pub(crate) fn load_with(path: &Path, overrides: &[String]) -> Result<Scenario, Failure> {
    fleetsim_scenario::load(path, overrides).map_err(|diags| {
        let n = diags.items.len();
        Failure::usage(anyhow::anyhow!(
            "{} problem{} in the scenario:\n{diags}",
            n,
            if n == 1 { "" } else { "s" }
        ))
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::run)
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn run(args: RunArgs) -> Outcome {
    if let Some(n) = args.processes {
        return crate::processes::run(args, n);
    }
    let mut overrides = args.common.overrides.clone();
    if let Some(url) = &args.target {
        overrides.push(format!("target.url={url:?}"));
    }
    let scenario = load_scenario(&args.common.scenario, &overrides, args.common.seed)?;
    if args.shard.is_some() && scenario.target.is_none() {
        // Each shard would start its own embedded emulator: N servers, not one run.
        return Err(Failure::usage(anyhow::anyhow!(
            "--shard needs a target every shard shares: start one with `fleetsim serve` and \
             pass --target URL, or use --processes N on one machine"
        )));
    }
    let linger = parse_linger(&args.common)?;
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        // A shard's series carry its index, so Prometheus keeps the shards apart and the
        // dashboards sum them into the fleet.
        let shard = args.shard.unwrap_or(Shard::WHOLE);
        let prom = start_metrics(args.common.metrics_addr, Role::Fleet, shard)?;
        let board = fleetsim_live::fleet::ProgressBoard::new();
        let display = (!args.common.quiet).then(|| progress::spawn(board.clone()));
        let json = args
            .progress_json
            .then(|| progress::spawn_json(board.clone()));
        let opts = fleetsim_live::fleet::RunOptions {
            progress: Some(board),
            prom: prom.is_some(),
            // A child-process emulator exports its own series on the next port (documented in
            // docs/OBSERVABILITY.md); port 0 stays 0, i.e. no fixed place to scrape.
            child_metrics_addr: args.common.metrics_addr.and_then(|mut a| {
                let next = a.port().checked_add(1).filter(|_| a.port() != 0)?;
                a.set_port(next);
                Some(a)
            }),
            emulator: if args.emulator_process {
                fleetsim_live::fleet::EmulatorPlacement::ChildProcess
            } else {
                fleetsim_live::fleet::EmulatorPlacement::Auto
            },
            shard: args.shard,
            start_at: args.start_at.clone().unwrap_or_default(),
            close_keepalive: args.close_keepalive,
            ..Default::default()
        };
        let result = fleetsim_live::fleet::run(&scenario, opts, interrupted()).await;
        if let Some(d) = display {
            d.finish().await;
        }
        if let Some(j) = json {
            j.finish().await;
        }
        let outcome = result.map_err(|e| match e {
            // The scenario asks for what the target cannot do: a usage error, with the fix.
            fleetsim_live::fleet::FleetError::Unsupported(_) => Failure::usage(e),
            e => Failure::run(anyhow::Error::new(e).context("the run could not be carried out")),
        })?;
        Ok::<_, Failure>((outcome, prom))
    });
    let (mut outcome, prom) = outcome?;
    if !outcome.interrupted {
        // A live run that never got a token, a session or a finished job measured nothing:
        // it fails (exit 3) whatever its thresholds say.
        outcome.report.incomplete = fleetsim_metrics::incomplete::check(&outcome.report);
    }
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    let mut summary = render_summary(&outcome.report);
    summary.push_str(&format!(
        "\n  target {}{}  keys {} distinct ({} loaded, {} generated)\n",
        outcome.target_url,
        outcome
            .placement
            .map_or(String::new(), |p| format!(" ({p})")),
        outcome.keys.distinct,
        outcome.keys.loaded,
        outcome.keys.generated,
    ));
    let g = &outcome.generator;
    if g.cancels_sent + g.cancels_unsent + g.refused + g.unsent > 0 {
        summary.push_str(&format!(
            "  generator queued {} · refused {} · unsent {} · cancels sent {} (running {}, \
             queued {}, too late {}, failed {}) · cancels unsent {}\n",
            g.queued,
            g.refused,
            g.unsent,
            g.cancels_sent,
            g.cancels_delivered,
            g.canceled_queued,
            g.cancels_too_late,
            g.cancel_errors,
            g.cancels_unsent,
        ));
    }
    let code = finish(&args.common, &outcome.report, summary, outcome.interrupted)?;
    rt.block_on(linger_metrics(prom, linger));
    Ok(code)
}

fn simulate(args: SimulateArgs) -> Outcome {
    let mut overrides = args.common.overrides.clone();
    if let Some(profile) = &args.profile {
        // The profile's stations go first, so the user's --set still applies on top.
        overrides = crate::calibrate::with_profile(profile, &overrides)?;
    }
    let scenario = load_scenario(&args.common.scenario, &overrides, args.common.seed)?;
    let linger = parse_linger(&args.common)?;
    let rt = runtime()?;
    let prom = rt.block_on(async {
        start_metrics(args.common.metrics_addr, Role::Simulate, Shard::WHOLE)
    })?;
    let sim_opts = fleetsim_des::SimOptions::default();
    let out = match &prom {
        // The exporter sees every event as it happens; its run-time gauge is virtual seconds.
        Some(_) => {
            let mut sink = prom::PromSink::new(scenario.fleet.agents);
            let tap = Box::new(move |ev: &fleetsim_core::event::Event| sink.observe(ev));
            fleetsim_des::simulate_observed(&scenario, &sim_opts, tap)
        }
        None => fleetsim_des::simulate(&scenario, &sim_opts),
    }
    .map_err(|e| match e {
        // The scenario asks for what virtual time cannot do: a usage error.
        fleetsim_des::DesError::Unsupported(_) => Failure::usage(e),
        e => Failure::run(anyhow::Error::new(e).context("the simulation could not run")),
    })?;
    let mut summary = render_summary(&out.report);
    summary.push_str("\n  stations\n");
    for s in &out.stations {
        summary.push_str(&format!(
            "    {:<16} workers {:>6}  util {:>5.1}%  mean wait {:>9.6}s  shed {}\n",
            s.name,
            s.workers.map_or("∞".to_string(), |w| w.to_string()),
            s.utilisation * 100.0,
            s.mean_wait_s,
            s.shed
        ));
    }
    let inv = &out.invariants;
    summary.push_str(&format!(
        "\n  invariants {}: jobs lost {}, double leases {}, leaked secrets {}\n",
        if inv.ok() { "✓ hold" } else { "✗ VIOLATED" },
        inv.jobs_lost,
        inv.double_leases,
        inv.leaked_secrets
    ));
    for ex in &inv.examples {
        summary.push_str(&format!("    {ex}\n"));
    }
    for note in &out.notes {
        summary.push_str(&format!("  note: {note}\n"));
    }
    let mut code = finish(&args.common, &out.report, summary, false)?;
    if !inv.ok() {
        code = exit::GATE_FAILED;
    }
    rt.block_on(linger_metrics(prom, linger));
    Ok(code)
}

/// Where a finished run's report goes, and whether its summary is printed when all is well.
pub(crate) struct Outputs<'a> {
    pub quiet: bool,
    pub out: Option<&'a Path>,
    pub junit: Option<&'a Path>,
    pub html: Option<&'a Path>,
}

impl<'a> From<&'a ScenarioArgs> for Outputs<'a> {
    fn from(c: &'a ScenarioArgs) -> Self {
        Outputs {
            quiet: c.quiet,
            out: c.out.as_deref(),
            junit: c.junit.as_deref(),
            html: c.html.as_deref(),
        }
    }
}

/// Print the summary, write every requested report, and decide the exit code.
pub(crate) fn finish(
    common: &ScenarioArgs,
    report: &Report,
    summary: String,
    interrupted: bool,
) -> Outcome {
    finish_outputs(&Outputs::from(common), report, summary, interrupted)
}

/// `finish` for any command that ends with a report (`run`, `simulate`, `merge`).
pub(crate) fn finish_outputs(
    outputs: &Outputs<'_>,
    report: &Report,
    summary: String,
    interrupted: bool,
) -> Outcome {
    if !outputs.quiet || !report.thresholds_passed() || report.incomplete.is_some() {
        print!("{summary}");
    }
    if let Some(path) = outputs.out {
        write_report(path, report)?;
        println!("  report → {}", path.display());
    }
    if let Some(path) = outputs.junit {
        write_text(path, &render_junit(report))?;
        println!("  junit  → {}", path.display());
    }
    if let Some(path) = outputs.html {
        write_text(path, &render_html(report))?;
        println!("  html   → {}", path.display());
    }
    if interrupted {
        eprintln!("fleetsim: interrupted; the reports hold what was measured until then");
        return Ok(exit::RUN_FAILED);
    }
    if let Some(i) = &report.incomplete {
        eprintln!(
            "fleetsim: the run did not do its work: phase {} never happened ({})",
            i.phase.name(),
            i.reason
        );
        return Ok(exit::RUN_FAILED);
    }
    Ok(if report.thresholds_passed() {
        exit::OK
    } else {
        exit::GATE_FAILED
    })
}

pub(crate) fn parse_linger(common: &ScenarioArgs) -> Result<Duration, Failure> {
    parse_duration(&common.metrics_linger)
        .map_err(|e| Failure::usage(anyhow::anyhow!("--metrics-linger: {e}")))
}

/// The Prometheus endpoint (`--metrics-addr`), when asked for; every series carries `shard`'s
/// index (`Shard::WHOLE` exports `shard="0"`). Needs the runtime entered.
pub(crate) fn start_metrics(
    addr: Option<SocketAddr>,
    role: Role,
    shard: Shard,
) -> Result<Option<PromHandle>, Failure> {
    addr.map(|addr| {
        prom::install(addr, role, shard).map_err(|e| match e {
            // Someone else holds the port: the user can pick another one.
            prom::PromError::Bind { .. } => Failure::usage(anyhow::Error::new(e)),
            _ => Failure::run(anyhow::Error::new(e)),
        })
    })
    .transpose()
}

/// Keep serving the final values for `linger` (Ctrl-C cuts it short), then stop.
pub(crate) async fn linger_metrics(prom: Option<PromHandle>, linger: Duration) {
    let Some(p) = prom else { return };
    if linger.is_zero() {
        return;
    }
    println!(
        "  metrics stay on {} for {} so the final values get scraped (Ctrl-C stops)",
        p.url(),
        fleetsim_core::dist::format_duration(linger)
    );
    let _ = std::io::stdout().flush();
    p.linger(linger, interrupted()).await;
}

fn serve(args: ServeArgs) -> Outcome {
    use fleetsim_live::server::{EmulatorOptions, TlsMode, config};
    let env_pat = std::env::var(config::PAT_ENV_VAR).ok();
    let mut server_config = config::resolve(args.config.as_deref(), env_pat.as_deref())
        .map_err(|e| Failure::usage(anyhow::Error::new(e)))?;
    apply_layout_flags(&args, &mut server_config.layout)?;
    let tls = match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
        (Some(cert), Some(key), _) => TlsMode::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, true) => TlsMode::SelfSigned {
            dir: args
                .tls_dir
                .clone()
                .unwrap_or_else(fleetsim_live::tls::default_self_signed_dir),
        },
        _ => TlsMode::Plain,
    };
    let running_collection = server_config.layout.collection_path();
    let listeners = 1
        + usize::from(server_config.layout.token_listen.is_some())
        + usize::from(server_config.layout.plan_listen.is_some());
    let mut opts = EmulatorOptions::new(args.listen, server_config);
    opts.tls = tls;
    opts.seed = args.seed;
    opts.max_connections = args.max_connections;
    opts.head_timeout = args.head_timeout;
    opts.body_timeout = args.body_timeout;
    opts.keep_alive_timeout = args.keep_alive_timeout;
    opts.max_inflight_body_bytes = args.max_inflight_body_bytes;
    opts.state_dir = args.state_dir.clone();
    if let Some(warning) = raise_serve_fd_limit(args.max_connections, listeners) {
        eprintln!("warning: {warning}");
    }
    let rt = runtime()?;
    rt.block_on(async {
        let prom = start_metrics(args.metrics_addr, Role::Emulator, Shard::WHOLE)?;
        let running = fleetsim_live::server::start(opts)
            .await
            .map_err(serve_failure)?;
        if let Some(cert) = &running.cert_path {
            println!(
                "fleetsim: self-signed certificate written to {}",
                cert.display()
            );
        }
        if let Some(p) = &prom {
            println!("fleetsim: metrics on {}", p.url());
        }
        if let Some(url) = &running.token_url {
            println!("fleetsim: token service on {url}");
        }
        if let Some(url) = &running.plan_url {
            println!("fleetsim: plan hub on {url}");
        }
        let collection = &running_collection;
        if !collection.is_empty() {
            println!("fleetsim: collection at {}{collection}", running.base_url);
        }
        if let Some(dir) = &args.state_dir {
            println!("fleetsim: state kept in {}", dir.display());
        }
        println!("fleetsim: emulator listening on {}", running.base_url);
        let _ = std::io::stdout().flush();
        // The exporter copies the emulator's counters until the shutdown signal.
        let exporter = async {
            if prom.is_some() {
                prom::observe_emulator(&running.handle, prom::EMULATOR_EVERY).await;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = interrupted() => {}
            () = exporter => {}
        }
        let stats = running.handle.shutdown().await;
        println!(
            "fleetsim: stopped; {} agents, {} jobs completed, {} requeued, {} leaked secrets",
            stats.agents, stats.jobs_completed, stats.jobs_requeued, stats.leaked_secrets
        );
        Ok(exit::OK)
    })
}

/// Why `serve` could not start, as an exit code: options that cannot work and a key directory
/// others could read or swap are the user's to fix (2); the rest (a port in use, unreadable
/// files) are run failures (3).
fn serve_failure(err: fleetsim_live::server::ServeError) -> Failure {
    use fleetsim_live::server::ServeError;
    use fleetsim_live::tls::TlsError;
    match err {
        ServeError::Options(_)
        | ServeError::Tls(TlsError::UnsafeDir { .. })
        | ServeError::Store(_)
        | ServeError::Restore(_) => Failure::usage(anyhow::Error::new(err)),
        err => Failure::run(anyhow::Error::new(err)),
    }
}

/// Descriptors `serve` keeps beyond its connections: listeners, the metrics endpoint, files.
const SERVE_FD_HEADROOM: u64 = 256;

/// Raise the open-file soft limit so that `max_connections` on each of `listeners` fit: a
/// standalone emulator (a container, a systemd unit) starts with whatever soft limit it
/// inherits, often 1,024, and would fail accepts (EMFILE) long before its own bound. `run`
/// raises its limit for the same reason (`fleet::limits`). Returns a warning when the hard
/// limit is lower than needed or the limit cannot be read.
fn raise_serve_fd_limit(max_connections: usize, listeners: usize) -> Option<String> {
    let wanted = (max_connections as u64)
        .saturating_mul(listeners as u64)
        .saturating_add(SERVE_FD_HEADROOM);
    match fleetsim_live::fleet::limits::raise_nofile(wanted) {
        Ok(limit) if limit.soft >= wanted => None,
        Ok(limit) => Some(format!(
            "--max-connections {max_connections} on {listeners} listener(s) needs ~{wanted} file \
             descriptors but the open-file limit is {} (hard {}); connections beyond it will be \
             refused by the OS (raise the hard limit, e.g. `ulimit -Hn`, or lower \
             --max-connections)",
            limit.soft, limit.hard
        )),
        Err(e) => Some(format!("cannot read or raise the open-file limit: {e}")),
    }
}

/// The `serve` layout flags over the config file's `[layout]`, checked like the file.
fn apply_layout_flags(
    args: &ServeArgs,
    layout: &mut fleetsim_core::server::Layout,
) -> Result<(), Failure> {
    if args.token_listen.is_some() {
        layout.token_listen = args.token_listen;
    }
    if args.collection_path.is_some() {
        layout.collection_path = args.collection_path.clone();
    }
    if args.plan_listen.is_some() {
        layout.plan_listen = args.plan_listen;
    }
    layout.expires_in_as_string |= args.expires_in_as_string;
    let check = fleetsim_core::server::ServerConfig {
        layout: layout.clone(),
        ..Default::default()
    };
    check
        .validate()
        .map_err(|e| Failure::usage(anyhow::anyhow!("serve flags: {e}")))
}

pub(crate) fn read_report(path: &Path) -> Result<Report, Failure> {
    let file = File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))
        .map_err(Failure::usage)?;
    Report::read_json(BufReader::new(file))
        .with_context(|| format!("{} is not a fleetsim report", path.display()))
        .map_err(Failure::usage)
}

fn write_report(path: &Path, report: &Report) -> Result<(), Failure> {
    let file = File::create(path)
        .with_context(|| format!("cannot create {}", path.display()))
        .map_err(Failure::run)?;
    let mut w = BufWriter::new(file);
    report
        .write_json(&mut w)
        .and_then(|_| w.flush())
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(Failure::run)
}

pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text)
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(Failure::run)
}

fn compare_reports(args: CompareArgs) -> Outcome {
    let max = parse_max_regression(&args.max_regression)
        .map_err(|e| Failure::usage(anyhow::anyhow!("--max-regression: {e}")))?;
    let baseline = read_report(&args.baseline)?;
    let current = read_report(&args.current)?;
    let cmp = compare(&baseline, &current, max);
    if let Some(path) = &args.html {
        write_text(path, &render_compare_html(&baseline, &current, &cmp))?;
    }
    print!("{}", cmp.render());
    Ok(if cmp.passed {
        exit::OK
    } else {
        exit::GATE_FAILED
    })
}

fn validate(args: ValidateArgs) -> Outcome {
    let s = load_scenario(&args.scenario, &args.overrides, None)?;
    println!(
        "{}: ok — {} agents for {}, {} threshold{}",
        args.scenario.display(),
        s.fleet.agents,
        fleetsim_core::dist::format_duration(s.run.duration),
        s.thresholds.len(),
        if s.thresholds.len() == 1 { "" } else { "s" }
    );
    Ok(exit::OK)
}

fn schema() -> Outcome {
    let text = serde_json::to_string_pretty(&fleetsim_scenario::json_schema())
        .context("cannot render the schema")
        .map_err(Failure::run)?;
    println!("{text}");
    Ok(exit::OK)
}

fn crypto_bench(args: CryptoBenchArgs) -> Outcome {
    let budget = parse_duration(&args.budget)
        .map_err(|e| Failure::usage(anyhow::anyhow!("--budget: {e}")))?;
    let opts = fleetsim_live::cryptobench::CryptoBenchOptions {
        budget,
        ..Default::default()
    };
    let report = fleetsim_live::cryptobench::run(opts);
    print!("{}", report.render_text());
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&report)
            .context("cannot render the results")
            .map_err(Failure::run)?;
        write_text(path, &text)?;
    }
    Ok(exit::OK)
}

/// The live progress display: a spinner line on a TTY, a plain line every 5 s otherwise; and the
/// machine-readable stream (`run --progress-json`) a parent `run --processes` reads.
pub(crate) mod progress {
    use super::*;
    use fleetsim_live::fleet::ProgressBoard;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    pub struct Display {
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    impl Display {
        pub async fn finish(self) {
            let _ = self.stop.send(());
            let _ = self.task.await;
        }
    }

    /// How often `--progress-json` prints a snapshot; a change of phase prints at once.
    const JSON_EVERY: Duration = Duration::from_millis(500);
    /// How often it looks for a change of phase.
    const JSON_PHASE_CHECK: Duration = Duration::from_millis(50);

    /// Print one JSON `Progress` line to stdout every [`JSON_EVERY`], and as soon as the phase
    /// changes (a parent waits for `ready`), plus a last one when stopped.
    pub fn spawn_json(board: Arc<ProgressBoard>) -> Display {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let print = |p: &fleetsim_live::fleet::Progress| {
                if let Ok(line) = serde_json::to_string(p) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
                }
            };
            let mut tick = tokio::time::interval(JSON_PHASE_CHECK);
            let mut last: Option<(fleetsim_live::fleet::Phase, tokio::time::Instant)> = None;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        let p = board.snapshot();
                        let due = last.is_none_or(|(phase, at)| {
                            phase != p.phase || at.elapsed() >= JSON_EVERY
                        });
                        if due {
                            print(&p);
                            last = Some((p.phase, tokio::time::Instant::now()));
                        }
                    }
                }
            }
            print(&board.snapshot());
        });
        Display { stop, task }
    }

    pub fn spawn(board: Arc<ProgressBoard>) -> Display {
        let (stop, mut stopped) = oneshot::channel();
        let tty = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let bar = tty.then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.enable_steady_tick(Duration::from_millis(200));
                b
            });
            let every = if tty {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(5)
            };
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        let line = board.snapshot().line();
                        match &bar {
                            Some(b) => b.set_message(line),
                            None => eprintln!("{line}"),
                        }
                    }
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Display { stop, task }
    }
}
