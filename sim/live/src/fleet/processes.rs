//! `fleetsim run --processes N`: one run of a scenario split over N shard processes on this
//! machine, against one emulator, started together, watched as one.
//!
//! Why processes: a process's descriptor limit caps the connections one fleet process can hold
//! (two per idle agent), and one tokio runtime per process keeps every shard's scheduling
//! independent. The split is `--shard I/N` (see `fleetsim_core::shard`): child i runs agents
//! i, i+N, … and arrivals k with k mod N = i, so the children together are the one-process run.
//!
//! [`run`] does, in order: start the one emulator every child shares — in this process when
//! its ends of the fleet's connections fit in the descriptor limit (the fleet's own ends are in
//! the children), otherwise in a `fleetsim serve` child (`fleet::child`) — or use the scenario's
//! target; check it answers; fill the key cache (once, here, rather than N times at once in
//! the children); spawn N children of this executable as `run SCENARIO --shard i/N
//! --target URL --start-at stdin --out DIR/shard-i.json --quiet --progress-json` with the
//! user's overrides and this run's job source; read each child's progress lines (stdout) and
//! keep the last lines of its stderr; once every child says it is ready (keys loaded), write
//! one start time (now + [`START_MARGIN`]) to every child's stdin, so ramps, warm-ups, faults
//! and run lengths line up; publish the children's folded progress until all have exited;
//! forward a shutdown (Ctrl-C) to them as SIGINT, so they drain and write their reports; read
//! the emulator's counters (also read once before the children start, so the run's figures are
//! what changed); stop the emulator. Reading and merging the shard reports is the
//! caller's (the CLI), and so is the verdict.
//!
//! Children run in their own process groups (a Ctrl-C at the terminal reaches this process,
//! which forwards it once, in order) and with `PR_SET_PDEATHSIG`, so they stop when this
//! process dies without stopping them; dropping the [`Children`] kills any still running, so
//! no error path leaves a fleet behind. Plain `std::process` with reader threads, as in
//! `fleet::child` (the workspace's tokio has no `process` feature).
//!
//! Architecture Invariant: nothing here decides protocol or workload behaviour: the split is
//! the core's `Shard`, every child runs the unchanged fleet.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetsim_core::api::EmulatorStats;
use fleetsim_core::event::Event;
use fleetsim_core::shard::{MAX_SHARDS, Shard};
use fleetsim_scenario::{PatSource, Scenario};
use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::child::{MAX_LINE, STDERR_TAIL, keep_tail};
use super::progress::{Phase, Placement, Progress, ProgressBoard};
use super::{
    EmulatorPlacement, FleetError, RunOptions, destination, emulator_reading, final_stats,
    http_client, load_keys, preflight,
};
use super::{fd_budget, held_descriptors, limits, setup};

/// Time between the moment every child is ready and the common start: enough for N children to
/// read their start line, so none starts late.
pub const START_MARGIN: Duration = Duration::from_millis(200);
/// Extra start margin per child (the lines are written one after another).
const START_MARGIN_PER_CHILD: Duration = Duration::from_millis(5);
/// How often the parent folds its children's progress and checks whether they exited.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How long children may take to load their keys and say they are ready.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// Knobs of a `run --processes` that are not part of the scenario.
#[derive(Clone, Debug)]
pub struct ProcessesOptions {
    /// How many shard processes (1 ..= the fleet's agents, at most `MAX_SHARDS`).
    pub processes: u32,
    /// The program each child runs: this executable (`std::env::current_exe()`), which must be
    /// the `fleetsim` binary.
    pub program: PathBuf,
    /// The scenario file, as the user named it.
    pub scenario_path: PathBuf,
    /// The user's `--set` overrides, passed on to every child unchanged.
    pub overrides: Vec<String>,
    /// The user's `--seed`, passed on.
    pub seed: Option<u64>,
    /// Where the children write their reports (`shard-<i>.json`).
    pub out_dir: PathBuf,
    /// Where the embedded emulator runs (ignored when the scenario names a target).
    pub emulator: EmulatorPlacement,
    /// The parent's Prometheus address, if any: child i serves its series on port + 1 + i and
    /// an emulator child on port + 1 + N. Port 0 gives the children no endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the folded progress goes; `None` = nobody watches.
    pub progress: Option<Arc<ProgressBoard>>,
    /// Export the embedded emulator's counters to this process's Prometheus endpoint.
    pub prom: bool,
}

/// Why a `run --processes` could not be carried out. Carries no secrets.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProcessesError {
    /// The options cannot be honoured (a usage error: exit 2); the message says what to write.
    #[error("{0}")]
    Usage(String),
    /// The emulator or the target failed as in a one-process run.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// A child could not be started, or exited before it was ready (names it, with its
    /// output).
    #[error("{0}")]
    Child(String),
}

/// How one shard child ended.
#[derive(Clone, Debug)]
pub struct ShardExit {
    pub shard: Shard,
    pub pid: u32,
    /// Where it was told to write its report.
    pub report: PathBuf,
    /// Its exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// The last lines of its stderr.
    pub stderr_tail: Vec<String>,
}

impl ShardExit {
    /// "shard 1/2 (pid 4711) exited with code 2", with its last stderr lines when it had any.
    pub fn describe(&self) -> String {
        self.describe_when("")
    }

    /// As [`ShardExit::describe`], with `when` (e.g. " before it was ready") after how it ended
    /// and before its output.
    pub fn describe_when(&self, when: &str) -> String {
        let how = match (self.code, self.signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "ended".to_string(),
        };
        let mut text = format!("shard {} (pid {}) {how}{when}", self.shard, self.pid);
        if !self.stderr_tail.is_empty() {
            text.push_str("; its last output:\n    ");
            text.push_str(&self.stderr_tail.join("\n    "));
        }
        text
    }
}

/// Everything the parent knows at the end.
#[derive(Debug)]
pub struct ProcessesOutcome {
    /// One per child, in shard order.
    pub shards: Vec<ShardExit>,
    /// The emulator's counters before the children started (its lifetime totals then).
    pub emulator_at_start: Option<EmulatorStats>,
    /// The emulator's counters at the end (embedded, or a remote fleetsim emulator's).
    pub emulator: Option<EmulatorStats>,
    /// The embedded emulator's crypto totals, as `Side::Emulator` events for the merged report.
    pub emulator_crypto: Vec<Event>,
    /// Where the embedded emulator ran; `None` for a remote target.
    pub placement: Option<Placement>,
    /// The collection URL the children used.
    pub target_url: String,
    /// The shutdown future completed (Ctrl-C) before the children ended.
    pub interrupted: bool,
    /// The common start (run time zero) as Unix milliseconds; `None` when interrupted first.
    pub start_unix_ms: Option<u64>,
    /// Things the operator should know.
    pub warnings: Vec<String>,
    /// Wall time from the start of `run` until every child had exited.
    pub wall: Duration,
}

/// Run `scenario` as `opts.processes` shard children until they end or `shutdown` completes.
pub async fn run(
    scenario: &Scenario,
    opts: ProcessesOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<ProcessesOutcome, ProcessesError> {
    let started = Instant::now();
    check_options(scenario, &opts)?;
    // The emulator is this parent's; the shards' agents reach it as a target.
    super::faults::refuse(scenario, super::faults::ServerKind::Child, opts.processes)?;
    crate::tls::install_default_provider();
    let board = opts.progress.clone().unwrap_or_default();
    board.update(|p| {
        p.phase = Phase::Starting;
        p.agents = scenario.fleet.agents;
        p.duration = scenario.run.duration;
    });
    let mut warnings = Vec::new();
    let in_process = match opts.emulator {
        EmulatorPlacement::Auto => emulator_fits(scenario, &mut warnings),
        EmulatorPlacement::InProcess => true,
        EmulatorPlacement::ChildProcess => false,
    };
    let emulator_metrics = metrics_addr(opts.metrics_addr, opts.processes);
    let mut dest = destination(scenario, in_process, emulator_metrics).await?;
    let placement = dest.placement();
    board.update(|p| p.emulator = placement);
    // One check here instead of N children failing one by one against nothing.
    let agent_config = setup::agent_config(scenario, dest.pat.clone());
    let http = http_client(&dest, &agent_config).await?;
    let base_path = http.options().target.base_path.clone();
    preflight(&http, &base_path).await?;

    // The emulator holds one end of every shard's connections: when it cannot hold two per
    // agent, every shard closes keep-alive connections between polls, as one process of the
    // whole fleet would (each shard alone would fit, and the emulator would refuse the rest).
    let close_keepalive = scenario.target.is_none()
        && fd_budget(scenario.fleet.agents, false, "emulator", &mut warnings).close_keepalive;
    let launch = Launch::new(scenario, &opts, &dest.url, &dest.pat, close_keepalive)?;
    tokio::pin!(shutdown);
    // The key cache is filled here once, with every core, instead of by N children generating
    // the same keys at the same time; the children then only load them.
    let keys = load_keys(scenario, &RunOptions::default(), &board, &mut shutdown).await?;
    let Some(keys) = keys else {
        dest.stop_emulator().await;
        return Ok(ProcessesOutcome {
            shards: Vec::new(),
            emulator_at_start: None,
            emulator: None,
            emulator_crypto: Vec::new(),
            placement,
            target_url: dest.url.clone(),
            interrupted: true,
            start_unix_ms: None,
            warnings,
            wall: started.elapsed(),
        });
    };
    drop(keys);
    // The shared emulator's counters before any child acts: the run's figures are the change
    // from here to the reading after every child has ended.
    let emulator_at_start = emulator_reading(scenario, &dest, &http, &base_path).await;
    let mut children = Children::spawn(&launch, &opts)?;
    let (start_unix_ms, interrupted) = {
        // The embedded emulator's series, exported while the children run (never completes).
        let emulator_series = async {
            if let (Some(running), true) = (&dest.emulator, opts.prom) {
                crate::prom::observe_emulator(&running.handle, crate::prom::EMULATOR_EVERY).await;
            }
            std::future::pending::<std::convert::Infallible>().await
        };
        tokio::pin!(emulator_series);
        let start_unix_ms = tokio::select! {
            ready = children.barrier(&board) => Some(ready?),
            () = &mut shutdown => None,
            never = &mut emulator_series => match never {},
        };
        let interrupted = match start_unix_ms {
            Some(_) => tokio::select! {
                interrupted = children.wait_all(&board, &mut shutdown) => interrupted,
                never = &mut emulator_series => match never {},
            },
            None => {
                // Stopped before the start: nothing ran, so nothing needs to drain.
                children.kill_all();
                true
            }
        };
        (start_unix_ms, interrupted)
    };
    let shards = children.exits();

    let (events, mut rx) = mpsc::channel(64);
    let emulator = final_stats(scenario, &dest, &http, &base_path, &events).await;
    drop(events);
    let mut emulator_crypto = Vec::new();
    while let Some(ev) = rx.recv().await {
        emulator_crypto.push(ev);
    }
    dest.stop_emulator().await;
    board.update(|p| p.phase = Phase::Done);
    Ok(ProcessesOutcome {
        shards,
        emulator_at_start,
        emulator,
        emulator_crypto,
        placement,
        target_url: dest.url.clone(),
        interrupted,
        start_unix_ms,
        warnings,
        wall: started.elapsed(),
    })
}

/// Refuse what cannot be honoured before anything starts.
fn check_options(scenario: &Scenario, opts: &ProcessesOptions) -> Result<(), ProcessesError> {
    let n = opts.processes;
    let agents = scenario.fleet.agents;
    if n == 0 || n > agents || n > MAX_SHARDS {
        return Err(ProcessesError::Usage(format!(
            "--processes {n}: give 1 to {} (the fleet's {agents} agents, at most {MAX_SHARDS} \
             processes), e.g. --processes {}",
            agents.min(MAX_SHARDS),
            agents.clamp(1, 2)
        )));
    }
    if let Some(addr) = opts.metrics_addr
        && addr.port() != 0
        && u32::from(addr.port()) + 1 + n > u32::from(u16::MAX)
    {
        return Err(ProcessesError::Usage(format!(
            "--metrics-addr {addr}: the {n} processes serve their metrics on the next {} ports, \
             past 65535; give a lower port",
            n + 1
        )));
    }
    Ok(())
}

/// Where child `i` of `n` serves metrics (`i == n`: the emulator child): the parent's port
/// + 1 + i. Port 0 (any free port) gives the children none: nobody would know where to scrape.
fn metrics_addr(parent: Option<SocketAddr>, i: u32) -> Option<SocketAddr> {
    let mut addr = parent.filter(|a| a.port() != 0)?;
    let port = u16::try_from(u32::from(addr.port()) + 1 + i).ok()?;
    addr.set_port(port);
    Some(addr)
}

/// Whether the embedded emulator fits in this process: here it holds only its ends of the
/// fleet's connections (the fleet's ends are in the children), within the descriptor limit
/// raised to the hard limit.
fn emulator_fits(scenario: &Scenario, warnings: &mut Vec<String>) -> bool {
    if scenario.target.is_some() {
        return true;
    }
    let needed = held_descriptors(scenario.fleet.agents, 1);
    match limits::raise_nofile(needed) {
        Ok(limit) => limit.soft >= needed,
        Err(e) => {
            warnings.push(format!("cannot read or raise the open-file limit: {e}"));
            true
        }
    }
}

/// What every child is started with.
struct Launch {
    /// Arguments after `run SCENARIO`, the same for every child.
    common: Vec<String>,
    /// Environment the children need beyond this process's: the embedded emulator's PAT,
    /// under the name the children's scenario reads it from.
    env: Vec<(String, String)>,
}

impl Launch {
    /// The children's arguments, checked: the scenario the children load (the user's
    /// overrides, this run's job source, the target URL) must describe the same run as the
    /// parent's (`Scenario::digest`), or the merged report would not be this scenario's.
    fn new(
        scenario: &Scenario,
        opts: &ProcessesOptions,
        url: &str,
        pat: &str,
        close_keepalive: bool,
    ) -> Result<Launch, ProcessesError> {
        let mut sets = opts.overrides.clone();
        sets.extend(source_overrides(scenario));
        let child = child_scenario(&opts.scenario_path, &sets, url, opts.seed)?;
        if child.digest() != scenario.digest() {
            return Err(ProcessesError::Usage(format!(
                "the shard processes would run another scenario than this one (digest {} vs \
                 {}) against {url}: give the scenario a [target] or run it without \
                 --processes",
                child.digest(),
                scenario.digest()
            )));
        }
        let env = match (&scenario.target, child.target.as_ref().map(|t| &t.pat)) {
            // The children find their own PAT where the scenario says.
            (Some(_), _) => Vec::new(),
            (None, Some(PatSource::Env(name))) => vec![(name.clone(), pat.to_string())],
            (None, _) => {
                return Err(ProcessesError::Usage(
                    "the shard processes get the embedded emulator's PAT in the environment, \
                     and target.pat_file asks for a file: remove the target.pat_file override"
                        .to_string(),
                ));
            }
        };
        let mut common = vec!["--target".to_string(), url.to_string()];
        for set in &sets {
            common.push("--set".to_string());
            common.push(set.clone());
        }
        if let Some(seed) = opts.seed {
            common.push("--seed".to_string());
            common.push(seed.to_string());
        }
        common.extend(
            ["--start-at", "stdin", "--quiet", "--progress-json"]
                .iter()
                .map(|s| s.to_string()),
        );
        if close_keepalive {
            common.push("--close-keepalive".to_string());
        }
        Ok(Launch { common, env })
    }
}

/// The overrides that make the children's workload the parent's: the job source named
/// explicitly, because against a target the default source is `server` (someone else queues),
/// and a rate of 0 where the parent has no arrivals (a named source without a rate is refused).
fn source_overrides(scenario: &Scenario) -> Vec<String> {
    let source = scenario.jobs.source.name();
    let mut sets = vec![format!("jobs.source={source}")];
    let no_arrivals = scenario.jobs.arrival == fleetsim_scenario::Arrival::None;
    if no_arrivals
        && !matches!(
            scenario.jobs.source,
            fleetsim_core::workload::Source::Server
        )
    {
        sets.push("jobs.rate_per_s=0".to_string());
    }
    sets
}

/// The scenario a child loads: as the CLI's `run` builds it from `--set`, `--target`, `--seed`.
fn child_scenario(
    path: &Path,
    sets: &[String],
    url: &str,
    seed: Option<u64>,
) -> Result<Scenario, ProcessesError> {
    let mut all = sets.to_vec();
    all.push(format!("target.url={url:?}"));
    if let Some(seed) = seed {
        all.push(format!("run.seed={seed}"));
    }
    fleetsim_scenario::load(path, &all).map_err(|diags| {
        ProcessesError::Usage(format!(
            "the shard processes' scenario (with target.url = {url:?} and the job source set) \
             does not load:\n{diags}"
        ))
    })
}

/// One running shard child.
struct ShardChild {
    shard: Shard,
    pid: u32,
    report: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Its latest progress line.
    progress: Arc<Mutex<Option<Progress>>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl ShardChild {
    /// Whether it has exited (reaping it when it has).
    fn exited(&mut self) -> bool {
        if self.status.is_none()
            && let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.status = Some(status);
            self.child = None;
            self.stdin = None;
        }
        self.status.is_some()
    }

    fn signal(&self, signal: libc::c_int) {
        if self.child.is_some()
            && let Ok(pid) = libc::pid_t::try_from(self.pid)
        {
            // SAFETY: kill sends a signal to our own child, which is not reaped yet (`child`
            // is still held), so the pid cannot have been reused.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// How it ended, once its output is read to the end.
    fn exit(&mut self) -> ShardExit {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        ShardExit {
            shard: self.shard,
            pid: self.pid,
            report: self.report.clone(),
            code: self.status.and_then(|s| s.code()),
            signal: self.status.and_then(|s| s.signal()),
            stderr_tail: self.stderr_tail.lock().iter().cloned().collect(),
        }
    }
}

/// The shard children; dropping it kills and reaps any still running.
struct Children {
    all: Vec<ShardChild>,
}

impl Children {
    /// Start every child. Called from an async worker thread, which lives as long as the
    /// runtime: `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so never from a
    /// short-lived blocking thread.
    fn spawn(launch: &Launch, opts: &ProcessesOptions) -> Result<Children, ProcessesError> {
        let mut children = Children { all: Vec::new() };
        for index in 0..opts.processes {
            let shard = Shard::new(index, opts.processes)
                .map_err(|e| ProcessesError::Usage(format!("--processes: {e}")))?;
            children.all.push(spawn_one(shard, launch, opts)?);
        }
        Ok(children)
    }

    /// Wait until every child is ready, then write them one start time; it returns that time
    /// (Unix ms). A child that exits first, or a wait past [`READY_TIMEOUT`], is an error that
    /// names the child (the others are killed when `self` drops).
    async fn barrier(&mut self, board: &ProgressBoard) -> Result<u64, ProcessesError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut tick = tokio::time::interval(POLL_EVERY);
        loop {
            tick.tick().await;
            self.publish(board);
            for c in &mut self.all {
                if c.exited() {
                    return Err(ProcessesError::Child(c.exit().describe_when(
                        " before it was ready to start (the other shards were stopped)",
                    )));
                }
            }
            if self.all.iter().all(is_ready) {
                break;
            }
            if Instant::now() > deadline {
                let waiting: Vec<String> = self
                    .all
                    .iter()
                    .filter(|c| !is_ready(c))
                    .map(|c| c.shard.to_string())
                    .collect();
                return Err(ProcessesError::Child(format!(
                    "shards {} were not ready to start within {}s",
                    waiting.join(", "),
                    READY_TIMEOUT.as_secs()
                )));
            }
        }
        let margin = START_MARGIN + START_MARGIN_PER_CHILD * self.all.len() as u32;
        let start = SystemTime::now() + margin;
        let start_ms = start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let line = format!("{}\n", fleetsim_core::codec::text::iso8601_utc(start_ms));
        for c in &mut self.all {
            // Closed after the line: the child reads nothing more.
            let Some(mut stdin) = c.stdin.take() else {
                continue;
            };
            if let Err(e) = stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
            {
                return Err(ProcessesError::Child(format!(
                    "cannot tell shard {} (pid {}) its start time: {e}",
                    c.shard, c.pid
                )));
            }
        }
        Ok(start_ms)
    }

    /// Publish progress until every child has exited; a `shutdown` on the way is forwarded
    /// to the children once, as SIGINT (they drain and write their reports). Returns whether
    /// that happened.
    async fn wait_all(
        &mut self,
        board: &ProgressBoard,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> bool {
        let mut interrupted = false;
        let mut tick = tokio::time::interval(POLL_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut *shutdown, if !interrupted => {
                    interrupted = true;
                    for c in &self.all {
                        c.signal(libc::SIGINT);
                    }
                }
            }
            self.publish(board);
            let mut all_exited = true;
            for c in &mut self.all {
                all_exited &= c.exited();
            }
            if all_exited {
                return interrupted;
            }
        }
    }

    /// Fold the children's latest snapshots into `board` (the parent's emulator placement
    /// kept).
    fn publish(&self, board: &ProgressBoard) {
        let parts: Vec<Progress> = self
            .all
            .iter()
            .filter_map(|c| c.progress.lock().clone())
            .collect();
        // Until every child has reported once, the run is still starting.
        if parts.len() < self.all.len() {
            return;
        }
        if let Some(mut all) = Progress::fold(&parts) {
            all.emulator = board.snapshot().emulator;
            board.set(all);
        }
    }

    fn kill_all(&mut self) {
        for c in &mut self.all {
            if let Some(mut child) = c.child.take() {
                let _ = child.kill();
                c.status = child.wait().ok();
            }
            c.stdin = None;
        }
    }

    /// How every child ended (all must have exited).
    fn exits(&mut self) -> Vec<ShardExit> {
        self.all.iter_mut().map(ShardChild::exit).collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Whether `c` has said it is ready (or is past it).
fn is_ready(c: &ShardChild) -> bool {
    c.progress
        .lock()
        .as_ref()
        .is_some_and(|p| p.phase.is_ready())
}

/// Start shard child `shard` and the threads that read its output.
fn spawn_one(
    shard: Shard,
    launch: &Launch,
    opts: &ProcessesOptions,
) -> Result<ShardChild, ProcessesError> {
    let report = opts.out_dir.join(format!("shard-{}.json", shard.index));
    let mut command = Command::new(&opts.program);
    command
        .arg("run")
        .arg(&opts.scenario_path)
        .args(["--shard", &shard.to_string()])
        .args(&launch.common)
        .arg("--out")
        .arg(&report);
    if let Some(addr) = metrics_addr(opts.metrics_addr, shard.index) {
        command.args(["--metrics-addr", &addr.to_string()]);
    }
    for (name, value) in &launch.env {
        command.env(name, value);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C at the terminal reaches only the parent, which
        // forwards it to every child once (and to a child still loading keys not at all).
        .process_group(0);
    // SAFETY: runs in the forked child before exec; prctl is async-signal-safe and touches no
    // memory of the parent. If the parent dies without stopping it, the child gets SIGTERM,
    // drains and exits, so no shard is left running.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        ProcessesError::Child(format!(
            "cannot start {} run --shard {shard}: {e}",
            opts.program.display()
        ))
    })?;
    let progress = Arc::new(Mutex::new(None));
    let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let slot = Arc::clone(&progress);
        readers.push(std::thread::spawn(move || read_progress(stdout, &slot)));
    }
    if let Some(stderr) = child.stderr.take() {
        let tail = Arc::clone(&stderr_tail);
        readers.push(std::thread::spawn(move || keep_tail(stderr, &tail)));
    }
    Ok(ShardChild {
        shard,
        pid: child.id(),
        report,
        stdin: child.stdin.take(),
        child: Some(child),
        progress,
        stderr_tail,
        readers,
        status: None,
    })
}

/// Read a child's stdout to the end, keeping its latest progress line; other lines (the
/// report's path) are skipped.
fn read_progress(stdout: impl Read, slot: &Mutex<Option<Progress>>) {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(p) = parse_progress(&line) {
            *slot.lock() = Some(p);
        }
    }
}

/// A `--progress-json` line, or `None` for any other line.
fn parse_progress(line: &str) -> Option<Progress> {
    let line = line.trim();
    line.starts_with('{')
        .then(|| serde_json::from_str(line).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: child i's metrics port is the parent's + 1 + i, and port 0 gives children none.
    #[test]
    fn children_serve_metrics_on_the_ports_after_the_parent() {
        let parent: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert_eq!(
            metrics_addr(Some(parent), 0),
            Some("127.0.0.1:9465".parse().unwrap())
        );
        assert_eq!(
            metrics_addr(Some(parent), 3),
            Some("127.0.0.1:9468".parse().unwrap())
        );
        assert_eq!(metrics_addr(Some("127.0.0.1:0".parse().unwrap()), 1), None);
        assert_eq!(metrics_addr(None, 1), None);
        assert_eq!(
            metrics_addr(Some("127.0.0.1:65535".parse().unwrap()), 0),
            None
        );
    }

    // Goal: the parent reads progress lines and skips everything else a child prints.
    #[test]
    fn progress_lines_are_read_and_other_lines_skipped() {
        let p = Progress {
            phase: Phase::Ready,
            agents: 3,
            ..Progress::default()
        };
        let text = format!(
            "  report → /tmp/x.json\n{}\nnot json {{\n",
            serde_json::to_string(&p).unwrap()
        );
        let slot = Mutex::new(None);
        read_progress(text.as_bytes(), &slot);
        assert_eq!(slot.lock().clone(), Some(p));
        assert_eq!(parse_progress("{\"phase\": 3}"), None);
    }

    // Goal: what the children load (a target URL, the parent's job source named) is the
    // parent's scenario by digest: with jobs (source emulator, which a target would otherwise
    // turn into `server`) and without any [jobs] at all; and the embedded emulator's PAT goes
    // to the children under the variable their scenario reads.
    #[test]
    fn children_load_the_parents_scenario() {
        let dir = std::env::temp_dir().join(format!("fleetsim-procs-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, jobs) in [
            ("jobs", "[jobs]\nrate_per_s = 2.0\narrival = \"constant\"\n"),
            ("none", ""),
        ] {
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(
                &path,
                format!("[run]\nduration = \"9s\"\n[fleet]\nagents = 4\n{jobs}"),
            )
            .unwrap();
            let opts = ProcessesOptions {
                processes: 2,
                program: PathBuf::from("fleetsim"),
                scenario_path: path.clone(),
                overrides: vec!["run.duration=5s".to_string()],
                seed: Some(9),
                out_dir: dir.clone(),
                emulator: EmulatorPlacement::Auto,
                metrics_addr: None,
                progress: None,
                prom: false,
            };
            let parent = fleetsim_scenario::load(
                &path,
                &["run.duration=5s".to_string(), "run.seed=9".to_string()],
            )
            .unwrap();
            let launch = Launch::new(&parent, &opts, "http://127.0.0.1:1", "the-pat", false)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!launch.common.contains(&"--close-keepalive".to_string()));
            let frugal = Launch::new(&parent, &opts, "http://127.0.0.1:1", "the-pat", true)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                frugal.common.contains(&"--close-keepalive".to_string()),
                "an emulator short of descriptors makes every shard close keep-alives"
            );
            assert_eq!(
                launch.env,
                vec![("FLEETSIM_PAT".to_string(), "the-pat".to_string())]
            );
            assert!(
                launch.common.contains(&"jobs.source=emulator".to_string()),
                "{name}"
            );
            assert!(
                !launch.common.iter().any(|a| a.contains("the-pat")),
                "no PAT in argv"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // Goal: an exit reads as the operator needs it: which shard, which process, how, and its
    // last words.
    #[test]
    fn a_shard_exit_names_the_shard_pid_and_output() {
        let exit = ShardExit {
            shard: Shard::new(1, 2).unwrap(),
            pid: 4711,
            report: PathBuf::from("shard-1.json"),
            code: Some(2),
            signal: None,
            stderr_tail: vec!["fleetsim: bad".to_string()],
        };
        assert_eq!(
            exit.describe(),
            "shard 1/2 (pid 4711) exited with code 2; its last output:\n    fleetsim: bad"
        );
    }
}
