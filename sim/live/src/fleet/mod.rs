//! The live fleet (`fleetsim run`): thousands of virtual agents, each a core `Agent` driven by its
//! own tokio task over real HTTP(S), against the embedded emulator or any compatible target.
//!
//! [`run`] does, in order: refuse the `[[faults]]` this run cannot apply (`faults`: a fault a
//! live run would ignore is refused, exit 2, never dropped in silence); raise the open-file
//! limit; start the embedded emulator when the scenario names no target — in this process
//! when both ends of the fleet's connections fit in the limit (and no fault must stop its
//! process), otherwise in a child process (see `child`; [`EmulatorPlacement`]) — or read the
//! target's PAT, TLS trust and proxy, and refuse a job source the target cannot serve; load or
//! generate the agents' RSA keys from the on-disk cache (off the async workers); read the
//! emulator's counters once before the start (so the report holds what changed during the run,
//! not the target's lifetime totals, which are kept apart); start the
//! recorder task; start agents spread over the ramp-up, each with its own seeded RNG stream;
//! start the loop that drives the core's job `Workload` (queueing, cancels, pipeline runs);
//! wait for the run's length or the shutdown future (Ctrl-C); stop every agent gracefully (they
//! delete their sessions, within a drain deadline); then read the target's job list (to
//! account for every queued job, `jobs.lost`, and to time pickups of jobs the fleet did not
//! queue on the server's clock) and, from fleetsim's emulator only, its counters (leaked
//! secrets, requeues); stop the embedded emulator and build the report. An interrupted run
//! still returns everything measured.
//!
//! A sharded run (`RunOptions.shard`, `fleetsim_core::shard`) does the same with this shard's
//! agents and arrivals only, waits after loading keys for the common start (`start`), and
//! leaves pickups of jobs other shards queued as halves for the merge.
//!
//! Code map: `driver` (one agent's loop), `jobs` (the loop driving the core's job `Workload`,
//! the same machine the virtual-time driver drives), `origins` (one client per origin the
//! server names), `telemetry` (the recorder task), `ledger` (queued vs ended jobs), `progress`
//! (the snapshot a display reads), `setup` (scenario → component settings), `limits`
//! (RLIMIT_NOFILE), `child` (the emulator as a child process), `faults` (`[[faults]]` in real
//! time: refusals, each agent's windows, the task that acts on the emulator), `start` (run
//! time zero: `--start-at`), `processes` (`run --processes N`: one run as N shard children of this
//! executable against one emulator).
//!
//! Architecture Invariant: nothing here decides protocol behaviour. Agents decide what to send
//! and when; this module moves their calls, answers, timers and events.

mod child;
pub(crate) mod driver;
mod faults;
mod jobs;
mod lanes;
mod ledger;
pub mod limits;
pub(crate) mod origins;
pub mod processes;
pub mod progress;
pub mod setup;
mod start;
mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetsim_core::SimTime;
use fleetsim_core::agent::Agent;
use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, EmulatorStats, Request};
use fleetsim_core::codec;
use fleetsim_core::event::{CryptoOp, Event, Side};
use fleetsim_core::proto::TaskAgentJobRequest;
use fleetsim_core::rng::{self, StreamKind};
use fleetsim_core::shard::Shard;
use fleetsim_metrics::{Mode, Recorder, Report, RunMeta};
use fleetsim_scenario::{Arrival, ConnectionMode, Scenario};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use fleetsim_core::workload::{GENERATOR_AGENT, WorkloadStats as GeneratorStats};
pub use ledger::JobAccount;
pub use progress::{Phase, Placement, Progress, ProgressBoard};
pub use start::{MAX_START_WAIT, StartAt, parse_instant_us};

use crate::client::{
    ClientError, ClientOptions, DEFAULT_CONNECTIONS_PER_SOURCE, HttpClient, SourceSpread, Target,
    TlsTrust,
};
use crate::keycache::{KeyCache, KeyCacheError, KeySet};
use crate::proxy::{ProxyConfig, ProxyError};
use crate::server::{self, EmulatorOptions, RunningEmulator, ServeError};
use child::{ChildEmulator, ChildSpec};
use driver::{AgentTask, Clock, Rebirth, Transport};
use fleetsim_core::faults::ScheduledFault;
use fleetsim_core::workload::Workload;
use jobs::WorkloadTask;
use ledger::JobLedger;
use telemetry::{EVENT_CHANNEL_CAPACITY, Telemetry};

/// How long agents get to delete their sessions after the run ends, by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// Extra drain time per agent: every agent stops at the same instant, and each one whose long
/// poll was cut needs a new connection to delete its session — 10,000 connects at once overflow
/// the listen backlog, and the SYN retries take seconds.
const DRAIN_PER_AGENT: Duration = Duration::from_millis(2);
/// Descriptors reserved beyond the fleet's connections (emulator, recorder, files, stdio).
const FD_HEADROOM: u64 = 1_024;
/// How long the final admin stats call to a remote target may take.
const STATS_TIMEOUT: Duration = Duration::from_secs(10);

/// Knobs of a live run that are not part of the scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where the run publishes its progress; `None` = nobody watches.
    pub progress: Option<Arc<ProgressBoard>>,
    /// After the run ends, how long agents may take to delete their sessions (the run adds
    /// 2 ms per agent for large fleets' connection storm at the end).
    pub drain: Duration,
    /// Parallel key-generation jobs (default: the machine's cores).
    pub key_parallelism: Option<usize>,
    /// Feed every event to a `prom::PromSink` (and an embedded emulator's counters to an
    /// `EmulatorSink`): set it after `prom::install`, which makes the sinks export.
    pub prom: bool,
    /// Where the embedded emulator runs (ignored when the scenario names a target).
    pub emulator: EmulatorPlacement,
    /// Where an emulator started as a child process serves its own Prometheus metrics (its
    /// series cannot reach this process's exporter); `None`: it serves none.
    pub child_metrics_addr: Option<std::net::SocketAddr>,
    /// Which part of the fleet and of the job arrivals this process runs (`--shard I/N`; see
    /// `fleetsim_core::shard`); every shard must share one target. `None`: the whole run, and
    /// the report names no shard (`Some(0/1)` runs the whole fleet and says so).
    pub shard: Option<Shard>,
    /// When run time zero is (`--start-at`): shards of one run share it.
    pub start_at: StartAt,
    /// Close each agent's keep-alive connection between polls even when this process's
    /// descriptor limit would hold it: the shared emulator's end cannot hold every shard's
    /// (`run --processes` decides it for its emulator, as one process decides for itself).
    pub close_keepalive: bool,
}

impl RunOptions {
    /// This process's part of the run ([`Shard::WHOLE`] when not sharded).
    pub fn slice(&self) -> Shard {
        self.shard.unwrap_or(Shard::WHOLE)
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: None,
            drain: DEFAULT_DRAIN,
            key_parallelism: None,
            prom: false,
            emulator: EmulatorPlacement::Auto,
            child_metrics_addr: None,
            shard: None,
            start_at: StartAt::Ready,
            close_keepalive: false,
        }
    }
}

/// Where to run the embedded emulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmulatorPlacement {
    /// In this process when both ends of every connection fit in the descriptor limit (raised
    /// to the hard limit first), otherwise in a child process.
    #[default]
    Auto,
    /// Always in this process (connections beyond the limit fail; a warning says so).
    InProcess,
    /// Always in a child process: this executable run as `serve` (see `fleet::child`). The
    /// executable must be the `fleetsim` binary.
    ChildProcess,
}

/// Why a run could not be carried out (exit code 3 territory). Carries no secrets.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FleetError {
    #[error("PAT: {0}")]
    Pat(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("proxy: {0}")]
    Proxy(#[from] ProxyError),
    #[error("target: {0}")]
    Client(#[from] ClientError),
    #[error("key cache: {0}")]
    Keys(#[from] KeyCacheError),
    #[error("embedded emulator: {0}")]
    Emulator(#[from] ServeError),
    /// The embedded emulator's child process could not be started.
    #[error("embedded emulator: {0}")]
    ChildEmulator(String),
    /// The scenario asks for something this target cannot do (a usage error: exit 2); the
    /// message says what to write instead.
    #[error("{0}")]
    Unsupported(String),
    /// The agents' lane threads could not be started.
    #[error("cannot start the agents' threads: {0}")]
    Threads(std::io::Error),
}

/// Key-cache figures of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyStats {
    pub distinct: usize,
    pub loaded: usize,
    pub generated: usize,
    pub replaced: usize,
}

/// Connection figures of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub connects: u64,
    pub connect_failures: u64,
    pub requests: u64,
    pub resends: u64,
}

/// Everything a run measured.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report, thresholds evaluated.
    pub report: Report,
    /// The raw recorder (for merging or further reports).
    pub recorder: Recorder,
    /// The emulator's counters at the end (embedded, or a remote emulator's admin API).
    pub emulator: Option<EmulatorStats>,
    /// The in-process embedded emulator's front counters at the end (per-route requests and
    /// busy time: what `fleetsim calibrate` derives service demand from); `None` for a child
    /// process or a remote target.
    pub emulator_front: Option<crate::server::FrontSnapshot>,
    /// The run was stopped by the shutdown future before its length.
    pub interrupted: bool,
    /// The collection URL the agents used.
    pub target_url: String,
    /// The agents ran against the embedded emulator.
    pub embedded: bool,
    /// Where the embedded emulator ran; `None` for a remote target.
    pub placement: Option<Placement>,
    /// The proxy the agents went through, as `host:port`, if any.
    pub proxy: Option<String>,
    pub keys: KeyStats,
    pub transport: TransportStats,
    pub generator: GeneratorStats,
    /// Where every queued job is at the end (the `jobs.lost` check); `None` when the target has
    /// no admin job list or nothing was queued.
    pub jobs: Option<JobAccount>,
    /// Things the operator should know (descriptor limits, unsupported settings).
    pub warnings: Vec<String>,
    /// Wall time from start to the end of draining.
    pub wall: Duration,
}

/// Where the agents go, resolved.
struct Destination {
    url: String,
    pool: String,
    pat: String,
    tls: Option<TlsTrust>,
    proxy: Option<ProxyConfig>,
    emulator: Option<RunningEmulator>,
    /// The embedded emulator, when it runs in a child process.
    child: Option<ChildEmulator>,
    /// The child's private state directory (`serve --state-dir`), when a `server_restart`
    /// fault needs its state to survive a kill; removed after the child stops.
    state_dir: Option<faults::StateDir>,
}

impl Destination {
    /// Where the embedded emulator runs; `None` for a remote target.
    fn placement(&self) -> Option<Placement> {
        match (&self.emulator, &self.child) {
            (Some(_), _) => Some(Placement::InProcess),
            (None, Some(child)) => Some(Placement::ChildProcess { pid: child.pid }),
            (None, None) => None,
        }
    }

    /// Stop the embedded emulator, wherever it runs.
    async fn stop_emulator(&mut self) {
        if let Some(running) = self.emulator.take() {
            running.handle.shutdown().await;
        }
        if let Some(child) = self.child.take() {
            child.stop().await;
        }
        self.state_dir = None;
    }
}

/// Run `scenario` live until its length passes or `shutdown` completes, whichever is first.
pub async fn run(
    scenario: &Scenario,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunOutcome, FleetError> {
    let started = Started {
        wall: Instant::now(),
        at: SystemTime::now(),
    };
    crate::tls::install_default_provider();
    // Everything sized by the fleet is sized by this shard's part of it.
    let agents = opts.slice().agent_count(scenario.fleet.agents);
    let board = opts.progress.clone().unwrap_or_default();
    board.update(|p| {
        p.phase = Phase::Starting;
        p.agents = agents;
        p.duration = scenario.run.duration;
    });
    let mut warnings = Vec::new();
    let in_process = match opts.emulator {
        // A stall or restart stops the emulator's process: it must be a child.
        EmulatorPlacement::Auto if faults::wants_child(scenario) => false,
        EmulatorPlacement::Auto => embedded_fits(scenario, agents, &mut warnings),
        EmulatorPlacement::InProcess => true,
        EmulatorPlacement::ChildProcess => false,
    };
    let server_kind = match (&scenario.target, in_process) {
        (Some(_), _) => faults::ServerKind::Foreign,
        (None, true) => faults::ServerKind::InProcess,
        (None, false) => faults::ServerKind::Child,
    };
    // Before anything starts: a fault this run cannot apply is refused, never ignored.
    faults::refuse(scenario, server_kind, opts.slice().count)?;
    let dest = destination(scenario, in_process, opts.child_metrics_addr).await?;
    board.update(|p| p.emulator = dest.placement());
    let mut budget = fd_budget(agents, dest.emulator.is_some(), "fleet", &mut warnings);
    budget.close_keepalive |= opts.close_keepalive;
    let agent_config = Arc::new(setup::agent_config(scenario, dest.pat.clone()));
    let http = http_client(&dest, &agent_config).await?;
    let base_path: Arc<str> = Arc::from(http.options().target.base_path.as_str());
    preflight(&http, &base_path).await?;
    check_job_source(scenario, &dest, &http, &base_path).await?;

    tokio::pin!(shutdown);
    let Some(keys) = load_keys(scenario, &opts, &board, &mut shutdown).await? else {
        return Ok(interrupted_before_start(scenario, &opts, dest, &http, started, warnings).await);
    };
    let key_stats = KeyStats {
        distinct: keys.keys.len(),
        loaded: keys.loaded,
        generated: keys.generated,
        replaced: keys.replaced,
    };

    // The target's counters before any agent acts: the report holds what changed after this.
    let emulator_at_start = emulator_reading(scenario, &dest, &http, &base_path).await;
    // Ready: wait for the common start, if one is asked, then time is run time.
    // Keys loaded and target checked: a parent of `run --processes` waits for this phase.
    board.update(|p| p.phase = Phase::Ready);
    let anchor = match start::anchor(&opts.start_at, scenario.run.duration, &mut shutdown).await {
        Ok(anchor) => anchor,
        Err(start::StartError::Interrupted) => {
            let outcome = interrupted_before_start(scenario, &opts, dest, &http, started, warnings);
            return Ok(outcome.await);
        }
        Err(start::StartError::Refused(message)) => {
            let mut dest = dest;
            dest.stop_emulator().await;
            return Err(FleetError::Unsupported(message));
        }
    };
    if let Some(late) = anchor.late {
        warnings.push(format!(
            "shard {} was ready {:.3} s after the start time: it started at once, {:.3} s into \
             the run (agents whose ramp-up start had passed started late)",
            opts.slice(),
            late.as_secs_f64(),
            late.as_secs_f64()
        ));
    }
    let clock = Clock::new(anchor.instant);
    let (events, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let telemetry = telemetry(scenario, agents, rx, &board, clock, opts.prom);
    let telemetry = tokio::spawn(telemetry.run());
    // The fault task holds the emulator's child process while the run lasts (it stops and
    // restarts it); it hands it back when it ends.
    let mut dest = dest;
    let fault_child = if scenario.faults.is_empty() {
        None
    } else {
        dest.child.take()
    };
    // The embedded emulator's own series, exported beside the fleet's while the run lasts.
    // Never completes (hence `Infallible`): it only runs while the select below waits.
    let emulator_metrics = async {
        if let (Some(running), true) = (&dest.emulator, opts.prom) {
            crate::prom::observe_emulator(&running.handle, crate::prom::EMULATOR_EVERY).await;
        }
        std::future::pending::<std::convert::Infallible>().await
    };
    if let Some(keygen) = keygen_event(&keys) {
        let _ = events.send(keygen).await;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    board.update(|p| p.phase = Phase::Running);
    let fleet = Spawn {
        scenario,
        clock,
        base_path: &base_path,
        events: &events,
        stop: &stop_rx,
        drain: drain(agents, &opts),
        close_keepalive: budget.close_keepalive,
        shard: opts.slice(),
    };
    let epoch_unix_ms = anchor.unix_us / 1_000;
    let transport = transport(scenario, agents, &http)?;
    let schedule: Arc<[ScheduledFault]> =
        fleetsim_core::faults::schedule(scenario.run.seed, &scenario.faults).into();
    let lanes = lanes::Lanes::for_fleet(agents).map_err(FleetError::Threads)?;
    let mut tasks = fleet.agents(
        &agent_config,
        &keys,
        transport,
        epoch_unix_ms,
        &schedule,
        &lanes,
    );
    drop(keys);
    let generator = tokio::spawn(fleet.workload(&http, &dest).run());
    let fault_task = (!schedule.is_empty()).then(|| {
        let task = fleet.faults(
            schedule,
            &http,
            &dest,
            fault_child,
            &agent_config.name_prefix,
            &board,
        );
        tokio::spawn(task.run())
    });

    let interrupted = tokio::select! {
        // The run ends at start + duration, also for a shard that started late.
        () = tokio::time::sleep_until(clock.instant(SimTime::ZERO + scenario.run.duration)) => false,
        () = &mut shutdown => true,
        never = emulator_metrics => match never {},
    };
    let measured = clock
        .now()
        .saturating_since(SimTime::ZERO)
        .saturating_sub(scenario.run.warmup);
    board.update(|p| p.phase = Phase::Draining);
    let _ = stop_tx.send(true);
    // Faults first: a stalled emulator is continued before agents say goodbye to it.
    if let Some(task) = fault_task
        && let Ok(done) = task.await
    {
        warnings.extend(done.warnings);
        dest.child = done.child;
    }
    while tasks.join_next().await.is_some() {}
    drop(lanes);
    let generator = join_generator(generator, drain(agents, &opts)).await;

    // Every agent has stopped: what the target still holds is final for this run.
    // The pool's id: the workload looked it up when it queued; otherwise (jobs queued by
    // someone else) look it up now, for the server's pickup times.
    let pool_id = match generator.pool_id {
        Some(id) => Some(id),
        None => pool_lookup(&dest, &http, &base_path, scenario).await,
    };
    let target_jobs = match pool_id {
        Some(pool_id) => job_list(&dest, &http, &base_path, pool_id, scenario).await,
        None => None,
    };
    let emulator = final_stats(scenario, &dest, &http, &base_path, &events).await;
    let emulator_front = dest.emulator.as_ref().map(|r| r.handle.front_metrics());
    drop(events);
    let (mut recorder, ledger) = telemetry.await.unwrap_or_default();
    if let Some(stats) = &emulator {
        recorder.set_server_readings(emulator_at_start, stats.clone());
    }
    if server_clock_pickups(scenario, opts.slice()) {
        server_pickups(&mut recorder, target_jobs.as_deref());
    }
    if let fleetsim_core::workload::Source::Pipelines(_) = scenario.jobs.source {
        recorder.set_runs(generator.runs.into());
    }
    let jobs = account_jobs(&ledger, target_jobs.as_deref(), &mut warnings);
    if let Some(account) = &jobs {
        recorder.set_jobs_lost(account.lost);
    }
    let placement = dest.placement();
    dest.stop_emulator().await;
    let mut meta = run_meta(scenario, &opts, &started, measured);
    meta.started_unix_us = Some(anchor.unix_us);
    let mut report = Report::from_recorder(&recorder, meta);
    report.evaluate_thresholds(&scenario.thresholds);
    board.update(|p| p.phase = Phase::Done);
    Ok(RunOutcome {
        report,
        recorder,
        emulator,
        emulator_front,
        interrupted,
        target_url: dest.url,
        embedded: placement.is_some(),
        placement,
        proxy: proxy_label(&http, dest.proxy.as_ref()),
        keys: key_stats,
        transport: transport_stats(&http),
        generator,
        jobs,
        warnings,
        wall: started.wall.elapsed(),
    })
}

/// When the run started, by both clocks.
struct Started {
    wall: Instant,
    at: SystemTime,
}

/// What agents and the generator share when they are spawned.
struct Spawn<'a> {
    scenario: &'a Scenario,
    clock: Clock,
    base_path: &'a Arc<str>,
    events: &'a mpsc::Sender<Event>,
    stop: &'a watch::Receiver<bool>,
    drain: Duration,
    close_keepalive: bool,
    /// This process's part of the fleet and of the arrivals.
    shard: Shard,
}

impl Spawn<'_> {
    /// One task per agent of this shard, on its lane, starting evenly over the ramp-up, each
    /// with its own RNG stream and a key shared round-robin. An agent keeps its global index (its name, key and
    /// stream) and its place in the global ramp-up, so the shards' agents together are the
    /// unsharded fleet, ramping up together. `epoch_unix_ms` is the wall time of run time zero.
    fn agents(
        &self,
        config: &Arc<fleetsim_core::agent::AgentConfig>,
        keys: &KeySet,
        transport: Transport,
        epoch_unix_ms: u64,
        schedule: &[ScheduledFault],
        lanes: &lanes::Lanes,
    ) -> JoinSet<()> {
        let agents = self.scenario.fleet.agents;
        // A crashed agent comes back registering with `--replace`, as a reinstalled one does.
        let reborn_config = Arc::new(fleetsim_core::agent::AgentConfig {
            register_mode: fleetsim_core::agent::RegisterMode::Replace,
            ..(**config).clone()
        });
        let ramp_us = u64::try_from(self.scenario.fleet.ramp_up.as_micros()).unwrap_or(u64::MAX);
        let mut tasks = JoinSet::new();
        for index in self.shard.agents(agents) {
            let start_us = ramp_us.saturating_mul(u64::from(index)) / u64::from(agents);
            let agent = Agent::new(
                index,
                Arc::clone(config),
                Some(keys.key_for(index)),
                rng::stream(self.scenario.run.seed, StreamKind::Agent, u64::from(index)),
                SimTime::from_micros(start_us),
                epoch_unix_ms,
            );
            let task = AgentTask {
                agent,
                faults: faults::AgentFaults::new(schedule, index),
                rebirth: Rebirth {
                    config: Arc::clone(&reborn_config),
                    key: Some(keys.key_for(index)),
                    seed: self.scenario.run.seed,
                    epoch_unix_ms,
                },
                clock: self.clock,
                transport: transport.clone(),
                events: self.events.clone(),
                stop: self.stop.clone(),
                drain: self.drain,
                close_keepalive: self.close_keepalive,
            };
            tasks.spawn_on(task.run(), lanes.handle(index));
        }
        tasks
    }

    /// The task applying server faults and reporting every fault, on its own connection (past
    /// the workload's slot).
    fn faults(
        &self,
        schedule: Arc<[ScheduledFault]>,
        http: &Arc<HttpClient>,
        dest: &Destination,
        child: Option<ChildEmulator>,
        name_prefix: &str,
        board: &Arc<ProgressBoard>,
    ) -> faults::FaultTask {
        faults::FaultTask {
            schedule,
            clock: self.clock,
            events: self.events.clone(),
            stop: self.stop.clone(),
            child,
            http: Arc::clone(http),
            base_path: Arc::clone(self.base_path),
            pat: dest.pat.clone(),
            name_prefix: name_prefix.to_string(),
            agents: self.shard.agents(self.scenario.fleet.agents).collect(),
            slot: u64::from(self.scenario.fleet.agents) * 3 + 2,
            board: Arc::clone(board),
        }
    }

    /// The job workload, on its own connection (the slot after the agents').
    fn workload(&self, http: &Arc<HttpClient>, dest: &Destination) -> WorkloadTask {
        let s = self.scenario;
        let mut config = s.workload_config(pat_credential(&dest.pat));
        config.pool_name = dest.pool.clone();
        config.shard = self.shard;
        WorkloadTask {
            workload: Workload::new(config, s.run.seed),
            http: Arc::clone(http),
            // Past every agent's slots: agents keep their global index, so the global size.
            slot: u64::from(s.fleet.agents) * 3,
            base_path: Arc::clone(self.base_path),
            clock: self.clock,
            events: self.events.clone(),
            stop: self.stop.clone(),
        }
    }
}

/// How long this process's `agents` get to delete their sessions: the option, plus
/// [`DRAIN_PER_AGENT`] each.
fn drain(agents: u32, opts: &RunOptions) -> Duration {
    opts.drain + DRAIN_PER_AGENT * agents
}

/// The recorder task for this run of `agents` agents (this shard's).
fn telemetry(
    scenario: &Scenario,
    agents: u32,
    rx: mpsc::Receiver<Event>,
    board: &Arc<ProgressBoard>,
    clock: Clock,
    prom: bool,
) -> Telemetry {
    let mut recorder = Recorder::new();
    recorder.set_fleet_size(u64::from(agents));
    Telemetry {
        rx,
        recorder,
        board: Some(Arc::clone(board)),
        clock,
        warmup: SimTime::ZERO + scenario.run.warmup,
        duration: scenario.run.duration,
        prom: prom.then(|| crate::prom::PromSink::new(agents)),
        ledger: JobLedger::default(),
    }
}

/// The key generation the cache did, as the agents' side of the crypto report.
fn keygen_event(keys: &KeySet) -> Option<Event> {
    (keys.generated > 0).then(|| Event::Crypto {
        side: Side::Agents,
        op: CryptoOp::KeyGen,
        count: u32::try_from(keys.generated).unwrap_or(u32::MAX),
        bytes: 0,
        nanos: keys.generate_nanos,
    })
}

/// The agents' HTTP client for `dest`.
async fn http_client(
    dest: &Destination,
    agent_config: &fleetsim_core::agent::AgentConfig,
) -> Result<Arc<HttpClient>, FleetError> {
    let mut opts = ClientOptions::new(Target::parse(&dest.url)?);
    opts.tls = dest.tls.clone();
    opts.proxy = dest.proxy.clone();
    opts.request_timeout = setup::client_timeout(agent_config);
    opts.source_spread = SourceSpread::Loopback {
        connections_per_address: DEFAULT_CONNECTIONS_PER_SOURCE,
    };
    Ok(HttpClient::new(opts).await?)
}

/// Per-agent connections, or one shared pool (per origin) for this process's `agents`.
fn transport(
    scenario: &Scenario,
    agents: u32,
    http: &Arc<HttpClient>,
) -> Result<Transport, ClientError> {
    match scenario.fleet.connection_mode {
        ConnectionMode::PerAgent => Transport::per_agent(http),
        // Long polls hold their connection: the pool must fit ~1.5 per agent plus job traffic.
        ConnectionMode::Pooled => Transport::pooled(http, agents as usize * 2 + 16),
    }
}

/// Wait for the workload within the drain allowance: it stops at the signal too, but a queue
/// call in flight may wait on a slow target.
async fn join_generator(
    generator: tokio::task::JoinHandle<GeneratorStats>,
    drain: Duration,
) -> GeneratorStats {
    let abort = generator.abort_handle();
    match tokio::time::timeout(drain, generator).await {
        Ok(stats) => stats.unwrap_or_default(),
        Err(_) => {
            abort.abort();
            GeneratorStats::default()
        }
    }
}

/// The outcome of a run stopped while its keys were still being made: nothing ran.
async fn interrupted_before_start(
    scenario: &Scenario,
    opts: &RunOptions,
    mut dest: Destination,
    http: &Arc<HttpClient>,
    started: Started,
    warnings: Vec<String>,
) -> RunOutcome {
    let placement = dest.placement();
    let emulator = match dest.emulator.take() {
        Some(e) => Some(e.handle.shutdown().await),
        None => None,
    };
    dest.stop_emulator().await;
    let recorder = Recorder::new();
    let meta = run_meta(scenario, opts, &started, Duration::ZERO);
    let report = Report::from_recorder(&recorder, meta);
    RunOutcome {
        report,
        recorder,
        emulator,
        emulator_front: None,
        interrupted: true,
        target_url: dest.url,
        embedded: placement.is_some(),
        placement,
        proxy: proxy_label(http, dest.proxy.as_ref()),
        keys: KeyStats::default(),
        transport: TransportStats::default(),
        generator: GeneratorStats::default(),
        jobs: None,
        warnings,
        wall: started.wall.elapsed(),
    }
}

/// `host:port` of the proxy the agents actually go through.
fn proxy_label(http: &HttpClient, proxy: Option<&ProxyConfig>) -> Option<String> {
    proxy
        .filter(|_| http.via_proxy())
        .map(|p| format!("{}:{}", p.addr.host, p.addr.port))
}

fn transport_stats(http: &HttpClient) -> TransportStats {
    let s = http.stats();
    TransportStats {
        connects: s.connects.load(Ordering::Relaxed),
        connect_failures: s.connect_failures.load(Ordering::Relaxed),
        requests: s.requests.load(Ordering::Relaxed),
        resends: s.resends.load(Ordering::Relaxed),
    }
}

/// Start the embedded emulator (in this process or a child), or resolve the scenario's target
/// (PAT, TLS trust, proxy).
async fn destination(
    scenario: &Scenario,
    in_process: bool,
    child_metrics_addr: Option<std::net::SocketAddr>,
) -> Result<Destination, FleetError> {
    match &scenario.target {
        None => {
            let pat = setup::generate_pat().map_err(FleetError::Pat)?;
            // A restart must find the emulator's state where the killed process left it.
            let state_dir = if faults::wants_state(scenario) && !in_process {
                Some(faults::StateDir::create().map_err(FleetError::ChildEmulator)?)
            } else {
                None
            };
            let config = setup::server_config(scenario, &pat);
            // With `[server.layout] collection_path` the agents' URL is the collection's.
            let collection = config.layout.collection_path();
            let wanted = scenario.fleet.agents as usize * 3 + 64;
            let max_connections = scenario
                .server
                .limits
                .max_connections
                .map_or(wanted.max(server::DEFAULT_MAX_CONNECTIONS), |m| {
                    usize::try_from(m).unwrap_or(usize::MAX)
                });
            let (url, emulator, child) = if in_process {
                let mut opts = EmulatorOptions::new(([127, 0, 0, 1], 0).into(), config);
                opts.seed = scenario.run.seed;
                opts.max_connections = max_connections;
                let d = &scenario.server.deadlines;
                opts.head_timeout = d.head_timeout.unwrap_or(opts.head_timeout);
                opts.body_timeout = d.body_timeout.unwrap_or(opts.body_timeout);
                opts.keep_alive_timeout = d.keep_alive_timeout.unwrap_or(opts.keep_alive_timeout);
                let running = server::start(opts).await?;
                (running.base_url.clone(), Some(running), None)
            } else {
                let program = std::env::current_exe().map_err(|e| {
                    FleetError::ChildEmulator(format!("cannot find this executable: {e}"))
                })?;
                let spec = ChildSpec {
                    program,
                    config,
                    seed: scenario.run.seed,
                    max_connections,
                    deadlines: scenario.server.deadlines.clone(),
                    metrics_addr: child_metrics_addr,
                };
                let child = match &state_dir {
                    Some(dir) => ChildEmulator::start_with_state_dir(spec, dir.path().to_owned())
                        .await
                        .map_err(FleetError::ChildEmulator)?,
                    None => ChildEmulator::start(spec)
                        .await
                        .map_err(FleetError::ChildEmulator)?,
                };
                (child.base_url.clone(), None, Some(child))
            };
            Ok(Destination {
                url: format!("{url}{collection}"),
                pool: scenario.pool_name().to_string(),
                pat,
                tls: None,
                proxy: None,
                emulator,
                child,
                state_dir,
            })
        }
        Some(target) => {
            let pat = setup::read_pat(&target.pat).map_err(FleetError::Pat)?;
            let https = target.url.starts_with("https://");
            let tls = if https {
                Some(setup::tls_trust(&target.tls).map_err(FleetError::Tls)?)
            } else {
                None
            };
            let proxy = match setup::proxy_inputs(&target.proxy) {
                Some(inputs) => {
                    ProxyConfig::resolve(&inputs, &|name| std::env::var(name).ok(), https)?
                }
                None => None,
            };
            Ok(Destination {
                url: target.url.clone(),
                pool: target.pool.clone(),
                pat,
                tls,
                proxy,
                emulator: None,
                child: None,
                state_dir: None,
            })
        }
    }
}

/// Whether the embedded emulator fits in this process: both ends of every connection (two held
/// per agent, plus job connections) within the descriptor limit, raised to the hard limit
/// first. When not, the emulator runs in a child process and each process needs half.
fn embedded_fits(scenario: &Scenario, agents: u32, warnings: &mut Vec<String>) -> bool {
    if scenario.target.is_some() {
        return true;
    }
    let needed = held_descriptors(agents, 2);
    match limits::raise_nofile(needed) {
        Ok(limit) => limit.soft >= needed,
        Err(e) => {
            warnings.push(format!("cannot read or raise the open-file limit: {e}"));
            true
        }
    }
}

/// Descriptors this process's `agents` hold with `ends` ends of each connection in this
/// process: two held connections per agent, a job connection for up to a fifth of them, and
/// headroom.
fn held_descriptors(agents: u32, ends: u64) -> u64 {
    let agents = u64::from(agents);
    agents * ends * 2 + agents * ends / 5 + FD_HEADROOM
}

/// How the fleet fits its connections into the descriptor limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FdBudget {
    /// Close each agent's keep-alive connection between keep-alive polls.
    pub(super) close_keepalive: bool,
}

/// Raise the descriptor limit for the fleet and decide how connections fit in it.
///
/// An idle agent holds two connections the whole time (the long poll and the keep-alive, whose
/// connection the real agent's HTTP pool keeps open between polls), and the embedded emulator
/// holds the other end of each in the same process. When that does not fit, keep-alive
/// connections are closed between polls (held 50 s of every ~80 s instead of always), which is
/// said in a warning; when even that does not fit, a second warning says connections will fail.
/// `holder` names the process in the warning: `run --processes` asks the same question for its
/// emulator, which holds one end of every shard's connections (and has the same hard limit).
pub(super) fn fd_budget(
    agents: u32,
    embedded: bool,
    holder: &str,
    warnings: &mut Vec<String>,
) -> FdBudget {
    let ends = if embedded { 2 } else { 1 };
    let needed = held_descriptors(agents, ends);
    let agents = u64::from(agents);
    let limit = match limits::raise_nofile(needed) {
        Ok(limit) => limit,
        Err(e) => {
            warnings.push(format!("cannot read or raise the open-file limit: {e}"));
            return FdBudget {
                close_keepalive: false,
            };
        }
    };
    if limit.soft >= needed {
        return FdBudget {
            close_keepalive: false,
        };
    }
    // Keep-alive connections open 50 s of every 80 s on average (5/8).
    let frugal = agents * ends + agents * ends * 5 / 8 + agents * ends / 5 + FD_HEADROOM;
    warnings.push(format!(
        "the {holder} would hold ~{needed} file descriptors but the limit is {}: keep-alive \
         connections are closed between polls (~{frugal} needed)",
        limit.soft
    ));
    warnings.extend(limit.shortfall(frugal));
    FdBudget {
        close_keepalive: true,
    }
}

/// Load or generate the fleet's keys, publishing progress; `None` when `shutdown` came first.
async fn load_keys(
    scenario: &Scenario,
    opts: &RunOptions,
    board: &ProgressBoard,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<KeySet>, FleetError> {
    let dir = scenario
        .fleet
        .key_cache_dir
        .clone()
        .unwrap_or_else(KeyCache::default_dir);
    let cache = KeyCache::open(dir)?;
    let total = scenario.fleet.distinct_keys as usize;
    let parallelism = opts
        .key_parallelism
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let done = Arc::new(AtomicUsize::new(0));
    let keys = cache.load_or_generate(
        scenario.fleet.key_bits.bits(),
        total,
        parallelism,
        Some(Arc::clone(&done)),
    );
    tokio::pin!(keys);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        board.update(|p| {
            p.phase = Phase::Keys {
                done: done.load(Ordering::Relaxed),
                total,
            }
        });
        tokio::select! {
            keys = &mut keys => return Ok(Some(keys?)),
            _ = tick.tick() => {}
            () = &mut *shutdown => return Ok(None),
        }
    }
}

/// The target's admin job list of `pool_id` (`None` when it has none, e.g. Azure DevOps).
async fn job_list(
    dest: &Destination,
    http: &Arc<HttpClient>,
    base_path: &str,
    pool_id: u32,
    scenario: &Scenario,
) -> Option<Vec<TaskAgentJobRequest>> {
    let request = Request {
        credential: pat_credential(&dest.pat),
        call: ApiRequest::ListJobRequests { pool_id },
    };
    let wire = codec::encode_request(&request, base_path);
    // A slot of its own past the agents' and the generator's.
    let mut conn = http.connection(u64::from(scenario.fleet.agents) * 3 + 1);
    let resp = tokio::time::timeout(STATS_TIMEOUT, conn.send(&wire))
        .await
        .ok()?
        .ok()?;
    match codec::decode_response(&request.call, &resp) {
        ApiResponse::JobRequests(list) => Some(list.value),
        _ => None,
    }
}

/// Whether pickups of jobs this process did not queue are timed on the server's clock. Not in
/// a sharded run whose source queues jobs itself (`emulator`, `pipelines`): there another shard
/// queued those jobs and timed their queueing on the fleet clock, so the merge joins the two
/// halves (this shard's pickup, that shard's queue) on it; a server-clock sample here would
/// count the job twice and on the wrong clock. With `source = "server"` nobody in the fleet
/// queues, and the server's clock is the only one there is.
fn server_clock_pickups(scenario: &Scenario, shard: Shard) -> bool {
    shard.is_whole() || scenario.jobs.source == fleetsim_core::workload::Source::Server
}

/// Pickups of jobs the fleet did not queue, from the server's own times (`queueTime` →
/// `receiveTime` in the job list): each turns a waiting pickup half into a sample on the
/// server's clock (see `fleetsim_core::workload::server_pickup`).
fn server_pickups(recorder: &mut Recorder, target_jobs: Option<&[TaskAgentJobRequest]>) {
    for job in target_jobs.unwrap_or_default() {
        if let Some(latency) = fleetsim_core::workload::server_pickup(job) {
            recorder.record_server_pickup(job.request_id, latency);
        }
    }
}

/// The id of the fleet's pool on the target, by name (`None` when it cannot be found).
async fn pool_lookup(
    dest: &Destination,
    http: &Arc<HttpClient>,
    base_path: &str,
    scenario: &Scenario,
) -> Option<u32> {
    let request = Request {
        credential: pat_credential(&dest.pat),
        call: ApiRequest::ListPools {
            pool_name: Some(dest.pool.clone()),
        },
    };
    let wire = codec::encode_request(&request, base_path);
    let mut conn = http.connection(u64::from(scenario.fleet.agents) * 3 + 1);
    let resp = tokio::time::timeout(STATS_TIMEOUT, conn.send(&wire))
        .await
        .ok()?
        .ok()?;
    match codec::decode_response(&request.call, &resp) {
        ApiResponse::Pools(list) => list
            .value
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(&dest.pool))
            .map(|p| p.id),
        _ => None,
    }
}

/// Account for every queued job (see `ledger`), with warnings for lost jobs and for a check
/// that could not be made.
fn account_jobs(
    ledger: &JobLedger,
    target_jobs: Option<&[TaskAgentJobRequest]>,
    warnings: &mut Vec<String>,
) -> Option<JobAccount> {
    if ledger.outstanding().is_empty() && !ledger.overflowed() {
        // Every queued job was seen to end: nothing to look up.
        return Some(ledger.reconcile(&[]));
    }
    if ledger.overflowed() {
        warnings.push(format!(
            "jobs.lost not checked: more than {} jobs to track",
            ledger::MAX_TRACKED
        ));
        return None;
    }
    let Some(target_jobs) = target_jobs else {
        warnings.push("jobs.lost not checked: the target has no admin job list".to_string());
        return None;
    };
    let account = ledger.reconcile(target_jobs);
    if account.lost > 0 {
        warnings.push(format!(
            "{} jobs lost: queued, never seen to end, unknown to the target (e.g. request ids \
             {:?})",
            account.lost, account.lost_examples
        ));
    }
    Some(account)
}

/// One anonymous discovery call before any agent starts: a target that cannot be reached (no
/// listener, TLS refused, proxy refused) makes the run impossible (exit 3), rather than a run of
/// agents retrying against nothing that would pass thresholds that do not mention errors. Any
/// HTTP answer, even an error status, proves the target is there.
async fn preflight(http: &Arc<HttpClient>, base_path: &str) -> Result<(), FleetError> {
    let request = Request {
        credential: Credential::Anonymous,
        call: ApiRequest::ConnectionData,
    };
    let wire = codec::encode_request(&request, base_path);
    http.connection(0).send(&wire).await?;
    Ok(())
}

/// A job source the target cannot serve is refused before any agent starts, never run as a
/// stream of errors: the `emulator` source needs fleetsim's admin extension, so against a
/// `[target]` it is probed once (`GET …/_apis/fleetsim/stats` with the PAT) and anything but the
/// emulator's counters stops the run with the fix.
async fn check_job_source(
    scenario: &Scenario,
    dest: &Destination,
    http: &Arc<HttpClient>,
    base_path: &str,
) -> Result<(), FleetError> {
    match &scenario.jobs.source {
        fleetsim_core::workload::Source::Emulator
            if scenario.target.is_some() && scenario.jobs.arrival != Arrival::None => {}
        _ => return Ok(()),
    }
    let request = Request {
        credential: pat_credential(&dest.pat),
        call: ApiRequest::AdminStats,
    };
    let wire = codec::encode_request(&request, base_path);
    let mut conn = http.connection(0);
    let answer = match tokio::time::timeout(STATS_TIMEOUT, conn.send(&wire)).await {
        Ok(Ok(resp)) => match codec::decode_response(&request.call, &resp) {
            ApiResponse::Stats(_) => return Ok(()),
            _ => format!("answered {}", resp.status),
        },
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => format!("gave no answer within {}s", STATS_TIMEOUT.as_secs()),
    };
    Err(FleetError::Unsupported(format!(
        "[jobs] source = \"emulator\" needs fleetsim's emulator, and the target is not one \
         (GET {}{} {answer}): set [jobs] source = \"pipelines\" with [[jobs.pipelines]] to queue \
         runs through the Pipelines API, or source = \"server\" (and no arrival keys) to serve \
         jobs someone else queues",
        dest.url,
        codec::STATS_PATH,
    )))
}

/// The emulator's counters at the end: [`emulator_reading`], plus the embedded emulator's crypto
/// totals as `Side::Emulator` events.
async fn final_stats(
    scenario: &Scenario,
    dest: &Destination,
    http: &Arc<HttpClient>,
    base_path: &str,
    events: &mpsc::Sender<Event>,
) -> Option<EmulatorStats> {
    if let Some(running) = &dest.emulator {
        for (op, totals) in running.handle.front_metrics().crypto {
            let ev = Event::Crypto {
                side: Side::Emulator,
                op,
                count: u32::try_from(totals.count).unwrap_or(u32::MAX),
                bytes: totals.bytes,
                nanos: totals.nanos,
            };
            let _ = events.send(ev).await;
        }
    }
    emulator_reading(scenario, dest, http, base_path).await
}

/// The emulator's counters now (its lifetime totals): the embedded one directly, a remote target
/// through the admin API only when it is known to be fleetsim's emulator (the `emulator` job
/// source, probed at start) or the scenario asks for `emulator.*` thresholds. Any other target
/// is a real server, which has no such route: asking it anyway would put a stray request on the
/// server under test.
async fn emulator_reading(
    scenario: &Scenario,
    dest: &Destination,
    http: &Arc<HttpClient>,
    base_path: &str,
) -> Option<EmulatorStats> {
    if let Some(running) = &dest.emulator {
        return Some(running.handle.stats());
    }
    let emulator_source = matches!(
        scenario.jobs.source,
        fleetsim_core::workload::Source::Emulator
    ) && scenario.jobs.arrival != Arrival::None;
    let asked = scenario
        .thresholds
        .iter()
        .any(|t| t.metric.starts_with("emulator."));
    if !(emulator_source || asked) {
        return None;
    }
    let request = Request {
        credential: pat_credential(&dest.pat),
        call: ApiRequest::AdminStats,
    };
    let wire = codec::encode_request(&request, base_path);
    let mut conn = http.connection(0);
    let resp = tokio::time::timeout(STATS_TIMEOUT, conn.send(&wire))
        .await
        .ok()?
        .ok()?;
    match codec::decode_response(&request.call, &resp) {
        ApiResponse::Stats(stats) => Some(stats),
        // A real Azure DevOps target has no admin API; the report then has no emulator section.
        _ => None,
    }
}

/// HTTP Basic with a PAT, as fleetsim's own admin and probe calls send it.
pub(crate) fn pat_credential(pat: &str) -> Credential {
    Credential::Basic {
        user: "fleetsim".to_string(),
        password: pat.to_string(),
    }
}

/// What the report says about the run itself; `measured` is the run time after the warm-up.
/// The shard is named whenever `--shard` was given, even `0/1`; `started_unix_us` is set by
/// the caller once run time zero is fixed.
fn run_meta(
    scenario: &Scenario,
    opts: &RunOptions,
    started: &Started,
    measured: Duration,
) -> RunMeta {
    RunMeta {
        mode: Mode::Live,
        seed: scenario.run.seed,
        wall_s: started.wall.elapsed().as_secs_f64(),
        scenario: scenario.run.name.clone(),
        started_at: Some(rfc3339(started.at)),
        duration_s: measured.as_secs_f64(),
        shard: opts.shard,
        scenario_digest: Some(scenario.digest()),
        ..RunMeta::default()
    }
}

/// `2026-11-25T21:22:03Z` for a wall time (UTC, whole seconds).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: report timestamps are RFC 3339 UTC, including leap days and the epoch.
    #[test]
    fn rfc3339_formats_civil_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_641_723), "2026-11-25T21:22:03Z");
    }
}
