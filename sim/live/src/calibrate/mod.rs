//! `fleetsim calibrate`: measure a live target and derive the capacity model a simulation reads
//! (a `fleetsim_scenario::Profile`).
//!
//! The measurements, in order:
//!
//! 1. **Saturation ramp** — closed-loop clients, each on its own keep-alive connection, send the
//!    probe operation (`pool_lookup`: PAT check plus a core lookup, what every registration
//!    starts with) back to back. After one uncounted warm-up step, concurrency doubles
//!    (1, 2, 4, …) for a fixed step each, until throughput stops rising (two steps in a row
//!    under +5%) or the ceiling is reached. The single-client mean round trip is the probe's
//!    low-load service time E[S]; the highest throughput is X_max; the utilisation law gives
//!    the workers, c = round(X_max · E[S]).
//! 2. **Low-load fleet run** — a few real agents (`fleet::run`) with short jobs for a short
//!    while, which exercises every operation of the protocol; each operation's round trip
//!    (median, 90th percentile) becomes its service time, fitted as a log-normal.
//! 3. **The process's CPU** (embedded emulator only, where agents and emulator share this
//!    process and its cores): the cores the process used at each ramp step (the most is what
//!    the machine gives it under a saturating load), and the process's CPU over the steady
//!    part of the fleet run and of a second run four times busier. The line through the two
//!    gives the CPU per added request and the fixed use; the capacity is where that line meets
//!    the cores obtained ([`SharedCpu`]).
//!
//! 4. **Per-route ramps** (a target only, `routes`): one ramp per route group with requests
//!    the calibration agents sent, so a target that reports no busy time still gets one
//!    station per group ([`ramp_stations`]).
//!
//! Nothing is subtracted from a round trip: client encode, loopback and decode are inside every
//! service time, and the simulation runs with no network latency of its own (the scenario
//! default). Against the embedded emulator both measurements start their own emulator in this
//! process, so client and server share the machine's cores — as in a live run against the
//! embedded emulator, which is what a calibrated simulation is compared with.
//!
//! This module never writes files and never runs a simulation; the CLI saves the profile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::api::{ApiRequest, Request};
use fleetsim_core::codec;
use fleetsim_core::dist::{DurationDist, Shape};
use fleetsim_core::ops::Operation;
use fleetsim_metrics::Report;
use fleetsim_scenario::profile::{Demand, GroupDemand, MeasuredOp, ProfileStation, Saturation};
use fleetsim_scenario::{PROFILE_VERSION, Profile, Scenario};
use thiserror::Error;
use tokio::time::Instant;

use crate::client::{ClientError, ClientOptions, HttpClient, Target};
use crate::fleet::{self, EmulatorPlacement, FleetError, Phase, ProgressBoard, RunOptions, setup};
use crate::server::{self, BusyTotals, EmulatorOptions, FrontSnapshot, ServeError};
use ramp::{Probe, RampTarget};
pub use routes::RouteRamps;

mod ramp;
mod routes;

/// The operation the saturation ramp sends.
pub const PROBE: Operation = Operation::PoolLookup;

/// Largest concurrency the ramp may reach (a bound on tasks and connections).
pub const MAX_CONCURRENCY: u32 = 1024;

/// Round trips kept per ramp step for quantiles (a bound on memory).
const MAX_SAMPLES: usize = 200_000;

/// Below this many samples an operation's service time is its median, with no fitted tail.
pub const MIN_FIT_SAMPLES: u64 = 30;

/// Largest log-normal σ a fit may have (SCV e^σ² − 1 ≈ 8.5): one slow outlier among few
/// samples must not turn into a tail that swamps the single worker of a small server.
const MAX_SIGMA: f64 = 1.5;

/// z for the 90th percentile of a standard normal (log-normal fit on p50 and p90).
const Z90: f64 = 1.281_551_565_5;

/// What to measure and how hard.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Base URL of the target; `None` = the embedded emulator, started in-process.
    pub target: Option<String>,
    /// Name of the environment variable with the target's PAT (remote targets only).
    pub pat_env: String,
    /// Agents of the low-load fleet run.
    pub agents: u32,
    /// Length of the low-load fleet run.
    pub duration: Duration,
    /// Length of each ramp step (the first fifth is a warm-up, not counted).
    pub step: Duration,
    /// The ramp stops at this concurrency at the latest.
    pub max_concurrency: u32,
    /// Seed of the fleet run.
    pub seed: u64,
    /// Against a target: one saturation ramp per route group after the other measurements
    /// (`routes`), so the profile has one station per group.
    pub per_route: bool,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            target: None,
            pat_env: fleetsim_scenario::DEFAULT_PAT_ENV.to_string(),
            agents: 8,
            duration: Duration::from_secs(20),
            step: Duration::from_secs(1),
            max_concurrency: 64,
            seed: 1,
            per_route: true,
        }
    }
}

/// Why a calibration could not be carried out.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CalibrateError {
    /// The options make no sense (zero agents, a ceiling out of range, a bad URL).
    #[error("{0}")]
    Options(String),
    #[error("fleet run: {0}")]
    Fleet(#[from] FleetError),
    #[error("embedded emulator: {0}")]
    Emulator(#[from] ServeError),
    #[error("probe client: {0}")]
    Client(#[from] ClientError),
    /// The probe never got a successful answer (wrong PAT, wrong pool, target down).
    #[error("saturation probe: {0}")]
    Probe(String),
}

/// What a calibration produced.
#[derive(Debug)]
pub struct Calibration {
    /// The profile to save.
    pub profile: Profile,
    /// The low-load fleet run's report (per-operation round trips).
    pub fleet_report: Report,
}

/// The low-load scenario: short jobs that touch every operation, agents about half busy.
pub fn low_load_scenario(opts: &CalibrateOptions) -> Result<Scenario, CalibrateError> {
    if opts.agents == 0 || opts.agents > 10_000 {
        return Err(CalibrateError::Options(
            "--agents must be between 1 and 10000".into(),
        ));
    }
    if opts.duration < Duration::from_secs(2) {
        return Err(CalibrateError::Options(
            "--duration must be at least 2s".into(),
        ));
    }
    let secs = opts.duration.as_secs_f64();
    // Jobs of ~3 s; half the agents busy on average.
    let rate = f64::from(opts.agents) * 0.5 / 3.0;
    let mut text = format!(
        "[run]\nname = \"calibrate\"\nduration = \"{secs}s\"\nseed = {seed}\n\
         [fleet]\nagents = {agents}\nramp_up = \"{ramp}s\"\nname_prefix = \"calibrate-\"\n\
         distinct_keys = {keys}\n\
         [jobs]\nrate_per_s = {rate}\nduration = {{ dist = \"uniform\", min = \"2s\", max = \"4s\" }}\n\
         steps = 2\nlog_lines_per_s = 10\nartifact_bytes = \"4KiB\"\ntoken_ttl = \"20s\"\n\
         [agent]\njob_token_rotate_before = \"10s\"\n\
         [server]\nlong_poll_hold = \"5s\"\n",
        seed = opts.seed,
        agents = opts.agents,
        // Keys are generated before the run; 16 keep start-up short at any fleet size.
        keys = opts.agents.min(16),
        ramp = (secs / 10.0).min(2.0),
    );
    if let Some(url) = &opts.target {
        let url = serde_json::to_string(url.trim_end_matches('/'))
            .map_err(|e| CalibrateError::Options(e.to_string()))?;
        let env = serde_json::to_string(&opts.pat_env)
            .map_err(|e| CalibrateError::Options(e.to_string()))?;
        text.push_str(&format!("[target]\nurl = {url}\npat_env = {env}\n"));
    }
    fleetsim_scenario::load_str("calibrate", &text, &[])
        .map_err(|d| CalibrateError::Options(d.to_string()))
}

/// Calibrate: the saturation ramp, then the low-load fleet run; see the module docs.
pub async fn calibrate(opts: &CalibrateOptions) -> Result<Calibration, CalibrateError> {
    if opts.max_concurrency == 0 || opts.max_concurrency > MAX_CONCURRENCY {
        return Err(CalibrateError::Options(format!(
            "the ramp ceiling must be between 1 and {MAX_CONCURRENCY}"
        )));
    }
    if opts.step < Duration::from_millis(50) {
        return Err(CalibrateError::Options(
            "a ramp step must be at least 50ms".into(),
        ));
    }
    let scenario = low_load_scenario(opts)?;
    let (saturation, probe_fit) = saturate(&scenario, opts).await?;
    let (outcome, low) = measured_run(&scenario).await?;
    let report = outcome.report;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    // Where clients and server share the process, what runs out is the process's CPU on the
    // cores it obtains, not the server's own demand on every core (docs/PLANNING.md). Its CPU
    // per request falls as the load rises (more requests per wake-up), so a second, busier run
    // gives the marginal cost and the fixed part apart.
    let high = match low {
        Some(_) => {
            let busier = CalibrateOptions {
                agents: opts.agents.saturating_mul(BUSIER).min(MAX_AGENTS),
                duration: (opts.duration / 2).max(Duration::from_secs(2)),
                ..opts.clone()
            };
            measured_run(&low_load_scenario(&busier)?).await?.1
        }
        None => None,
    };
    let shared = top_step_cores(&saturation)
        .zip(low)
        .and_then(|(obtained, low)| SharedCpu::fit(obtained.min(f64::from(cores)), low, high));
    // Per-route ramps: against a target only (the embedded emulator reports its per-route
    // busy time instead), after the fleet run so they do not load it.
    let routes = match &scenario.target {
        Some(_) if opts.per_route => {
            let connected = connect(&scenario, opts).await?;
            let registration = (saturation.clone(), probe_fit.clone());
            Some(routes::ramp_routes(&scenario, opts, &connected, registration).await)
        }
        _ => None,
    };
    let profile = build_profile(
        opts,
        Measured {
            saturation,
            probe_fit,
            report: &report,
            front: outcome.emulator_front.as_ref(),
            routes,
        },
        cores,
        shared,
    );
    Ok(Calibration {
        profile,
        fleet_report: report,
    })
}

/// How many times the low-load run's agents the second run has.
const BUSIER: u32 = 4;

/// Largest fleet a calibration runs.
const MAX_AGENTS: u32 = 10_000;

/// One fleet run of the calibration scenario, its emulator in this process (so its per-route
/// busy time can be read at the end); for the embedded emulator also the process's load over
/// the run's steady part.
async fn measured_run(
    scenario: &Scenario,
) -> Result<(fleet::RunOutcome, Option<Load>), CalibrateError> {
    let board = ProgressBoard::new();
    let run_opts = RunOptions {
        emulator: EmulatorPlacement::InProcess,
        progress: Some(board.clone()),
        ..RunOptions::default()
    };
    let sampler = scenario
        .target
        .is_none()
        .then(|| tokio::spawn(steady_load(board, steady_window(scenario))));
    let outcome = fleet::run(scenario, run_opts, std::future::pending()).await?;
    let load = match sampler {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    Ok((outcome, load))
}

/// What the process spent and served over a steady stretch of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// CPU time per second of wall time (cores in use).
    pub cores: f64,
    /// Requests finished per second.
    pub requests_per_s: f64,
}

/// The CPU a process that holds both the clients and the server spends, and the cores it gets:
/// what limits a live run against the embedded emulator. The process's CPU is modelled as
/// `fixed_cores + cpu_per_request_s · requests/s`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SharedCpu {
    /// Cores the process obtained at the ramp's saturated step.
    pub cores_obtained: f64,
    /// Process CPU time per additional request (the marginal cost at the calibration's mix).
    pub cpu_per_request_s: f64,
    /// Cores the process uses whatever its load (timers, telemetry, the runtime).
    pub fixed_cores: f64,
}

impl SharedCpu {
    /// The line through the two runs' loads; with one run (or two too close to tell apart,
    /// or a slope that is not positive) its average cost per request and no fixed part.
    pub fn fit(cores_obtained: f64, low: Load, high: Option<Load>) -> Option<SharedCpu> {
        if cores_obtained <= 0.0 || low.requests_per_s <= 0.0 || low.cores <= 0.0 {
            return None;
        }
        let average = SharedCpu {
            cores_obtained,
            cpu_per_request_s: low.cores / low.requests_per_s,
            fixed_cores: 0.0,
        };
        let Some(high) = high else {
            return Some(average);
        };
        let slope = (high.cores - low.cores) / (high.requests_per_s - low.requests_per_s);
        if high.requests_per_s < 1.5 * low.requests_per_s || slope.is_nan() || slope <= 0.0 {
            return Some(SharedCpu {
                cpu_per_request_s: high.cores.max(low.cores) / high.requests_per_s.max(1e-9),
                ..average
            });
        }
        Some(SharedCpu {
            cores_obtained,
            cpu_per_request_s: slope,
            fixed_cores: (low.cores - slope * low.requests_per_s).clamp(0.0, cores_obtained / 2.0),
        })
    }

    /// Requests per second at which the process's CPU reaches the cores it obtains.
    pub fn capacity_per_s(&self) -> f64 {
        (self.cores_obtained - self.fixed_cores).max(1e-9) / self.cpu_per_request_s
    }
}

/// CPU time this process has used so far (user + system, every thread).
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we own and reads nothing.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The part of the fleet run (run time, from, to) that is steady: after the ramp-up and one
/// more second, until one second before the end, so key generation, ramp-up and the drain's
/// session deletes are not charged to the requests.
fn steady_window(scenario: &Scenario) -> (Duration, Duration) {
    let from = scenario.fleet.ramp_up + Duration::from_secs(1);
    let to = scenario.run.duration.saturating_sub(Duration::from_secs(1));
    (from, to.max(from))
}

/// The process's load over `window` of the run `board` reports on; `None` when the window
/// saw no request (a run too short or interrupted). The board publishes its request count on
/// a tick; the CPU and the clock are read when a new count appears, so the ends of each ratio
/// are read together.
async fn steady_load(board: Arc<ProgressBoard>, (from, to): (Duration, Duration)) -> Option<Load> {
    type Sample = (Instant, Duration, u64);
    let load = |a: Sample, b: Sample| {
        let wall = (b.0 - a.0).as_secs_f64();
        let requests = b.2.saturating_sub(a.2);
        (requests > 0 && wall > 0.0).then(|| Load {
            cores: b.1.saturating_sub(a.1).as_secs_f64() / wall,
            requests_per_s: requests as f64 / wall,
        })
    };
    let (mut start, mut end): (Option<Sample>, Option<Sample>) = (None, None);
    let mut last_seen = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let p = board.snapshot();
        match p.phase {
            Phase::Running => {}
            // Ended before the window's end (a short run): the window up to the last count.
            Phase::Draining | Phase::Done => return load(start?, end?),
            _ => continue,
        }
        if p.requests == last_seen {
            continue;
        }
        last_seen = p.requests;
        let sample = (Instant::now(), process_cpu(), p.requests);
        match start {
            None if p.elapsed >= from => start = Some(sample),
            Some(first) if p.elapsed >= to => return load(first, sample),
            Some(_) => end = Some(sample),
            None => {}
        }
    }
}

/// The most cores the process used in a step of the ramp, where it measured them: the ramp
/// keeps adding clients until throughput stops rising, so its busiest step is what the machine
/// gave the process under a saturating load.
fn top_step_cores(saturation: &Saturation) -> Option<f64> {
    saturation
        .ramp
        .iter()
        .filter_map(|step| step.process_cores)
        .max_by(f64::total_cmp)
}

/// The route groups a profile gives a station each, with the operations each serves. Every
/// operation is in exactly one group, so a profile with demand routes every request.
pub const ROUTE_GROUPS: &[(&str, &[Operation])] = &[
    (
        "poll",
        &[
            Operation::SessionCreate,
            Operation::SessionDelete,
            Operation::PollMessage,
            Operation::PollEmpty,
            Operation::KeepAlive,
            Operation::MessageAck,
        ],
    ),
    (
        "job",
        &[
            Operation::LockRenew,
            Operation::JobRequestFinish,
            Operation::JobCompleted,
            Operation::QueueJobs,
        ],
    ),
    (
        "timeline",
        &[
            Operation::TimelineUpdate,
            Operation::FeedPost,
            Operation::LogCreate,
            Operation::LogAppend,
            Operation::AttachmentUpload,
        ],
    ),
    (
        "token",
        &[
            Operation::AuthChallenge,
            Operation::TokenExchange,
            Operation::TokenRotate,
        ],
    ),
    (
        "registration",
        &[
            Operation::ConnectionData,
            Operation::PoolLookup,
            Operation::AgentLookup,
            Operation::Register,
            Operation::ReplaceAgent,
            Operation::DeleteAgent,
        ],
    ),
];

/// The route group of an emulator route label (`codec::route_label`); `None` for routes no
/// agent operation uses (admin statistics, unrouted refusals).
pub fn route_group(route: &str) -> Option<&'static str> {
    Some(match route {
        "create_session" | "delete_session" | "get_message" | "delete_message" => "poll",
        "update_job_request" | "queue_jobs" | "list_job_requests" | "cancel_job" | "event"
        | "run_pipeline" | "get_pipeline_run" | "list_pipeline_runs" | "update_build" => "job",
        "timeline_records" | "feed" | "create_log" | "append_log" | "attachment" => "timeline",
        "token" | "token_refresh" => "token",
        "connection_data" | "options" | "resource_areas" | "list_pools" | "list_agents"
        | "add_agent" | "get_agent" | "replace_agent" | "delete_agent" | "query_agents"
        | "get_agent_with" | "update_agent" | "get_pool" | "query_pools" | "add_pool"
        | "update_pool" | "delete_pool" => "registration",
        _ => return None,
    })
}

/// The emulator's busy time summed per route group.
pub fn group_busy(front: &FrontSnapshot) -> BTreeMap<&'static str, BusyTotals> {
    let mut groups: BTreeMap<&'static str, BusyTotals> = BTreeMap::new();
    for (route, totals) in &front.busy {
        if let Some(g) = route_group(route) {
            groups.entry(g).or_default().add(totals);
        }
    }
    groups
}

/// A log-normal with the given mean and squared coefficient of variation (seconds), in µs,
/// σ capped like [`lognormal_fit`]; a constant when the spread is nil.
pub fn lognormal_moments(mean_s: f64, scv: f64) -> DurationDist {
    let mean = (mean_s * 1e6).max(1e-3);
    let sigma2 = (1.0 + scv.max(0.0)).ln().min(MAX_SIGMA * MAX_SIGMA);
    if sigma2 <= 1e-12 || !sigma2.is_finite() {
        return DurationDist(Shape::Constant(mean));
    }
    DurationDist(Shape::LogNormal {
        mu: mean.ln() - sigma2 / 2.0,
        sigma: sigma2.sqrt(),
    })
}

/// The polls' round trips hold the long poll: not service time.
fn is_poll(op: Operation) -> bool {
    matches!(
        op,
        Operation::PollMessage | Operation::PollEmpty | Operation::KeepAlive
    )
}

/// An operation's measured round trip as a service time: a log-normal on its median and 90th
/// percentile, or the median alone when a handful of samples gives no tail worth fitting.
fn round_trip_fit(l: &fleetsim_metrics::report::LatencySummary) -> DurationDist {
    if l.count >= MIN_FIT_SAMPLES {
        lognormal_fit(l.p50, l.p90)
    } else {
        lognormal_fit(l.p50, l.p50)
    }
}

/// What `build_profile` is made from.
struct Measured<'a> {
    /// The registration ramp and its single-client fit.
    saturation: Saturation,
    probe_fit: DurationDist,
    /// The low-load fleet run.
    report: &'a Report,
    /// The in-process emulator's per-route busy time, where it was read.
    front: Option<&'a FrontSnapshot>,
    /// The per-route ramps against a target, where they ran.
    routes: Option<RouteRamps>,
}

/// The profile from the measurements: with the emulator's per-route busy time (`front`), one
/// station per route group ([`demand_stations`]); with per-route ramps (a target), one station
/// per ramped group ([`ramp_stations`]); with neither, the single station of the saturation
/// ramp.
fn build_profile(
    opts: &CalibrateOptions,
    measured: Measured<'_>,
    cores: u32,
    shared: Option<SharedCpu>,
) -> Profile {
    let Measured {
        saturation,
        probe_fit,
        report,
        front,
        routes,
    } = measured;
    let mut operations = BTreeMap::new();
    let mut service_by_op = BTreeMap::new();
    for (name, op) in &report.operations {
        let l = &op.latency_s;
        let Some(operation) = Operation::from_name(name) else {
            continue;
        };
        if l.count == 0 {
            continue;
        }
        operations.insert(
            name.clone(),
            MeasuredOp {
                count: l.count,
                mean_s: l.mean,
                p50_s: l.p50,
                p90_s: l.p90,
                p99_s: l.p99,
            },
        );
        // A poll's round trip is mostly its hold: those fall back to the station's `service`.
        if !is_poll(operation) {
            service_by_op.insert(name.clone(), round_trip_fit(l));
        }
    }
    let demand = front
        .map(group_busy)
        .filter(|g| g.values().any(|t| t.count > 0));
    let (demand, stations) = match demand {
        Some(groups) => {
            let (demand, stations) =
                demand_stations(&groups, &operations, &service_by_op, cores, shared);
            (Some(demand), stations)
        }
        None => {
            let station = ProfileStation {
                name: "server".into(),
                workers: workers_of(&saturation),
                queue_limit: None,
                shed: None,
                ops: None,
                service: probe_fit,
                service_by_op,
            };
            match &routes {
                Some(r) => (None, ramp_stations(r, station)),
                None => (None, vec![station]),
            }
        }
    };
    let (routes, unramped) = routes.map_or_else(Default::default, |r| {
        let name = |g: &str| g.to_string();
        (
            r.ramped
                .into_iter()
                .map(|(g, (s, _))| (name(g), s))
                .collect(),
            r.unramped
                .into_iter()
                .map(|(g, why)| (name(g), why))
                .collect(),
        )
    });
    Profile {
        version: PROFILE_VERSION,
        target: opts.target.clone().unwrap_or_else(|| "embedded".into()),
        saturation,
        operations,
        demand,
        routes,
        unramped,
        stations,
    }
}

/// The utilisation law: c = round(X_max · E[S]), at least 1, at most a station's bound.
fn workers_of(s: &Saturation) -> u32 {
    (s.busy_workers
        .round()
        .min(f64::from(fleetsim_scenario::MAX_STATION_SIZE)) as u32)
        .max(1)
}

/// One station per ramped route group, in `ROUTE_GROUPS` order: its ramp's workers
/// (utilisation law), its operations, the ramp's single-client fit as the service time of the
/// operation it sent and of those the fleet run did not time (the polls' holds among them),
/// and the fleet run's round trips for the others. The operations of groups that could not be
/// ramped stay with `server` (the single station of the registration ramp), listed last as
/// the station of every operation no other station names.
pub fn ramp_stations(routes: &RouteRamps, server: ProfileStation) -> Vec<ProfileStation> {
    let mut stations = Vec::new();
    for (name, ops) in ROUTE_GROUPS {
        let Some((saturation, fit)) = routes.ramped.get(name) else {
            continue;
        };
        let mut by_op: BTreeMap<String, DurationDist> = ops
            .iter()
            .filter_map(|op| {
                let fit = server.service_by_op.get(op.name())?;
                Some((op.name().to_string(), fit.clone()))
            })
            .collect();
        by_op.insert(saturation.probe.clone(), fit.clone());
        stations.push(ProfileStation {
            name: name.to_string(),
            workers: workers_of(saturation),
            queue_limit: None,
            shed: None,
            ops: Some(ops.iter().map(|o| o.name().to_string()).collect()),
            service: fit.clone(),
            service_by_op: by_op,
        });
    }
    if stations.len() < ROUTE_GROUPS.len() {
        stations.push(server);
    }
    stations
}

/// One station per route group from the emulator's busy time.
///
/// The model: a request's service time is what the client measured at low load (its round
/// trip, `service_by_op`; polls: the group's busy time, their hold being the core's pure
/// delay), so a simulation without load predicts the live latencies. The server's CPU is what
/// runs out under load: group g, with share s_g of all busy time and mean demand D_g, gets
/// s_g of the cores, and c_g = s_g · cores · E[S_g] / D_g workers, so the station saturates at
/// s_g · cores / D_g requests/s — the demand law — however long its round trips are. A group
/// gets at least `cores` workers (rounded): alone, it can have every core.
///
/// With `shared` (clients in the server's process, the embedded emulator) the cores are the
/// ones the process obtained less its fixed use, and every demand is multiplied by the client
/// factor k = process CPU per request / mean server demand: the clients' CPU for a request
/// comes from the same cores, in proportion to the server's (an assumption: the split of the
/// clients' CPU over the groups is not measured). The capacity is then
/// (cores obtained − fixed cores) / process CPU per request.
pub fn demand_stations(
    groups: &BTreeMap<&'static str, BusyTotals>,
    operations: &BTreeMap<String, MeasuredOp>,
    service_by_op: &BTreeMap<String, DurationDist>,
    cores: u32,
    shared: Option<SharedCpu>,
) -> (Demand, Vec<ProfileStation>) {
    let cores = cores.max(1);
    let total_busy: f64 = groups
        .values()
        .map(|t| t.nanos as f64)
        .sum::<f64>()
        .max(1.0);
    let total_requests: u64 = groups.values().map(|t| t.count).sum();
    let mean_demand = total_busy * 1e-9 / total_requests.max(1) as f64;
    let (usable_cores, client_factor) = match shared {
        Some(s) => (
            (s.cores_obtained - s.fixed_cores).clamp(0.01, f64::from(cores)),
            (s.cpu_per_request_s / mean_demand).max(1.0),
        ),
        None => (f64::from(cores), 1.0),
    };
    let min_workers = (usable_cores.round() as u32).max(1);
    let mut table = BTreeMap::new();
    let mut stations = Vec::new();
    for (name, ops) in ROUTE_GROUPS {
        let busy = groups.get(name).copied().unwrap_or_default();
        let share = busy.nanos as f64 / total_busy;
        let demand_s = busy.mean_s();
        let busy_fit = lognormal_moments(demand_s, busy.scv());
        let mut by_op = BTreeMap::new();
        // E[S_g]: the group's service times weighted by how often the fleet called them.
        let (mut weighted, mut calls) = (0.0, 0u64);
        for op in *ops {
            let name = op.name();
            let count = operations.get(name).map_or(0, |m| m.count);
            let mean = match service_by_op.get(name) {
                Some(fit) => {
                    by_op.insert(name.to_string(), fit.clone());
                    fit.0.mean() * 1e-6
                }
                None => demand_s,
            };
            weighted += mean * count as f64;
            calls += count;
        }
        let service_s = if calls == 0 {
            demand_s
        } else {
            weighted / calls as f64
        };
        let workers = if demand_s > 0.0 {
            (share * usable_cores * service_s / (client_factor * demand_s)).round()
        } else {
            0.0
        };
        let workers =
            (workers.min(f64::from(fleetsim_scenario::MAX_STATION_SIZE)) as u32).max(min_workers);
        if busy.count > 0 {
            table.insert(
                name.to_string(),
                GroupDemand {
                    requests: busy.count,
                    mean_s: demand_s,
                    scv: busy.scv(),
                    share,
                },
            );
        }
        stations.push(ProfileStation {
            name: name.to_string(),
            workers,
            queue_limit: None,
            shed: None,
            ops: Some(ops.iter().map(|o| o.name().to_string()).collect()),
            service: busy_fit,
            service_by_op: by_op,
        });
    }
    let demand = Demand {
        cores,
        capacity_per_s: usable_cores / (client_factor * mean_demand),
        cores_obtained: shared.map(|s| s.cores_obtained),
        fixed_cores: shared.map(|s| s.fixed_cores),
        cpu_per_request_s: shared.map(|s| s.cpu_per_request_s),
        client_factor,
        groups: table,
    };
    (demand, stations)
}

/// A log-normal with the given median and 90th percentile (seconds), in µs, σ capped at 1.5;
/// a constant when the two coincide.
pub fn lognormal_fit(p50_s: f64, p90_s: f64) -> DurationDist {
    let p50 = (p50_s * 1e6).max(1.0);
    let p90 = (p90_s * 1e6).max(p50);
    let sigma = ((p90 / p50).ln() / Z90).min(MAX_SIGMA);
    if sigma <= 1e-9 || !sigma.is_finite() {
        return DurationDist(Shape::Constant(p50.round()));
    }
    DurationDist(Shape::LogNormal {
        mu: p50.ln(),
        sigma,
    })
}

/// The target's client, its PAT and collection URL, and the embedded emulator kept alive for
/// it (dropped = stopped).
pub(crate) struct Connected {
    pub(crate) client: Arc<HttpClient>,
    pub(crate) pat: String,
    pub(crate) collection: codec::Url,
    /// The embedded emulator the probes run against (in this process), kept alive.
    pub(crate) emulator: Option<server::RunningEmulator>,
}

/// A client of the scenario's target, or of an embedded emulator started for the ramp.
pub(crate) async fn connect(
    scenario: &Scenario,
    opts: &CalibrateOptions,
) -> Result<Connected, CalibrateError> {
    let (url, pat, tls, emulator) = match &scenario.target {
        None => {
            let pat = setup::generate_pat().map_err(CalibrateError::Probe)?;
            let config = setup::server_config(scenario, &pat);
            let mut eo = EmulatorOptions::new(([127, 0, 0, 1], 0).into(), config);
            eo.seed = scenario.run.seed;
            eo.max_connections =
                (opts.max_concurrency as usize * 2 + 64).max(server::DEFAULT_MAX_CONNECTIONS);
            let running = server::start(eo).await?;
            (running.base_url.clone(), pat, None, Some(running))
        }
        Some(t) => {
            let pat = setup::read_pat(&t.pat).map_err(CalibrateError::Probe)?;
            let tls = if t.url.starts_with("https://") {
                Some(setup::tls_trust(&t.tls).map_err(CalibrateError::Probe)?)
            } else {
                None
            };
            (t.url.clone(), pat, tls, None)
        }
    };
    let mut co = ClientOptions::new(Target::parse(&url)?);
    co.tls = tls;
    co.request_timeout = Duration::from_secs(10);
    let client = HttpClient::new(co).await?;
    let collection = codec::url::parse(&client.options().target.url())
        .map_err(|e| CalibrateError::Options(format!("{}: {}", e.url, e.reason)))?;
    Ok(Connected {
        client,
        pat,
        collection,
        emulator,
    })
}

/// The registration ramp (`pool_lookup`); returns the saturation figures and the
/// single-client round-trip fit.
async fn saturate(
    scenario: &Scenario,
    opts: &CalibrateOptions,
) -> Result<(Saturation, DurationDist), CalibrateError> {
    let connected = connect(scenario, opts).await?;
    let request = Request {
        credential: fleet::pat_credential(&connected.pat),
        call: ApiRequest::ListPools {
            pool_name: Some(scenario.pool_name().to_string()),
        },
    };
    let target = Arc::new(RampTarget {
        client: Arc::clone(&connected.client),
        collection: connected.collection.clone(),
        probe: Probe::Fixed(codec::encode_request(
            &request,
            &connected.client.options().target.base_path,
        )),
        measure_cores: connected.emulator.is_some(),
        clients: Default::default(),
    });
    let ramp = ramp::ramp(&target, opts.step, opts.max_concurrency)
        .await
        .map_err(|e| {
            CalibrateError::Probe(format!(
                "{}: {e} (check the PAT and the pool)",
                PROBE.name()
            ))
        })?;
    drop(connected);
    Ok((ramp.saturation(PROBE.name()), ramp.fit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lognormal_fit_keeps_the_median_and_p90() {
        // Goal: the fitted distribution has the measured median (e^mu) and 90th percentile;
        // equal quantiles give a constant instead of a degenerate log-normal.
        let DurationDist(Shape::LogNormal { mu, sigma }) = lognormal_fit(0.001, 0.003) else {
            panic!("expected a log-normal");
        };
        assert!((mu.exp() - 1000.0).abs() < 1e-6);
        assert!(((mu + Z90 * sigma).exp() - 3000.0).abs() < 1e-6);
        assert_eq!(
            lognormal_fit(0.002, 0.002),
            DurationDist(Shape::Constant(2000.0))
        );
    }

    #[test]
    fn every_operation_is_in_exactly_one_route_group() {
        // Goal: a demand profile routes every operation the DES can send to one station, and
        // the emulator's agent-facing routes all land in a group.
        for op in Operation::ALL {
            let homes = ROUTE_GROUPS
                .iter()
                .filter(|(_, ops)| ops.contains(op))
                .count();
            assert_eq!(homes, 1, "{op:?} is in {homes} groups");
        }
        assert_eq!(route_group("get_message"), Some("poll"));
        assert_eq!(route_group("update_job_request"), Some("job"));
        assert_eq!(route_group("feed"), Some("timeline"));
        assert_eq!(route_group("token_refresh"), Some("token"));
        assert_eq!(route_group("add_agent"), Some("registration"));
        assert_eq!(route_group("admin_stats"), None);
        assert_eq!(route_group(crate::server::metrics::UNROUTED), None);
    }

    #[test]
    fn ramped_groups_get_a_station_each_and_the_rest_stay_with_server() {
        // Goal: each ramped group's station has its ramp's workers (utilisation law, at
        // least 1), its group's operations, the ramp's fit as its service and as the time of
        // the operation it sent, and the fleet run's round trips for its other operations; a
        // group that was not ramped has no station, and `server` (every other operation)
        // comes last; with every group ramped there is no `server`.
        let saturation = |probe: &str, x: f64, s: f64| Saturation {
            probe: probe.into(),
            low_load_latency_s: s,
            throughput_per_s: x,
            concurrency: 4,
            busy_workers: x * s,
            ramp: Vec::new(),
        };
        let fit = |us: f64| DurationDist(Shape::Constant(us));
        let mut routes = RouteRamps::default();
        // 3,000/s at 1 ms → 3 workers; 500/s at 0.4 ms → 0.2, still 1 worker.
        routes.ramped.insert(
            "poll",
            (saturation("session_create", 3000.0, 0.001), fit(1000.0)),
        );
        routes.ramped.insert(
            "registration",
            (saturation("pool_lookup", 500.0, 0.0004), fit(400.0)),
        );
        routes.unramped.insert("token", "refused".into());
        let server = ProfileStation {
            name: "server".into(),
            workers: 2,
            queue_limit: None,
            shed: None,
            ops: None,
            service: fit(300.0),
            service_by_op: BTreeMap::from([
                ("session_create".to_string(), fit(5000.0)),
                ("session_delete".to_string(), fit(700.0)),
                ("token_exchange".to_string(), fit(900.0)),
            ]),
        };
        let stations = ramp_stations(&routes, server.clone());
        let names: Vec<_> = stations.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["poll", "registration", "server"]);
        let poll = &stations[0];
        assert_eq!(poll.workers, 3);
        assert_eq!(poll.service, fit(1000.0));
        assert_eq!(poll.service_by_op["session_create"], fit(1000.0));
        assert_eq!(poll.service_by_op["session_delete"], fit(700.0));
        assert!(!poll.service_by_op.contains_key("token_exchange"));
        assert!(
            poll.ops
                .as_ref()
                .unwrap()
                .contains(&"keep_alive".to_string())
        );
        assert_eq!(stations[1].workers, 1);
        assert_eq!(stations[2], server);

        for (name, _) in ROUTE_GROUPS {
            routes
                .ramped
                .entry(name)
                .or_insert_with(|| (saturation("pool_lookup", 100.0, 0.01), fit(10_000.0)));
        }
        let all = ramp_stations(&routes, server);
        assert_eq!(all.len(), ROUTE_GROUPS.len());
        assert!(all.iter().all(|s| s.name != "server" && s.ops.is_some()));
    }

    #[test]
    fn the_moment_fit_keeps_mean_and_spread() {
        // Goal: the busy-time fit has the measured mean and SCV; no spread gives a constant.
        let DurationDist(Shape::LogNormal { mu, sigma }) = lognormal_moments(0.0001, 1.0) else {
            panic!("expected a log-normal");
        };
        let mean = (mu + sigma * sigma / 2.0).exp();
        assert!((mean - 100.0).abs() < 1e-9);
        assert!(((sigma * sigma).exp() - 1.0 - 1.0).abs() < 1e-9);
        assert_eq!(
            lognormal_moments(0.0001, 0.0),
            DurationDist(Shape::Constant(100.0))
        );
    }

    #[test]
    fn demand_stations_saturate_where_the_demand_law_says() {
        // Goal: each group's station serves its operations with the low-load round trip but
        // has as many workers as make it saturate at share · cores / demand; a group with
        // little demand still gets every core; the demand table states the capacity.
        let busy = |count: u64, each_us: u64| BusyTotals {
            count,
            nanos: count * each_us * 1000,
            nanos_sq: u128::from(count) * u128::from(each_us * 1000).pow(2),
        };
        // timeline: 3,000 calls of 100 µs (0.3 s, 3/4 of the busy time); poll: 1,000 of 100 µs.
        let groups = BTreeMap::from([("timeline", busy(3000, 100)), ("poll", busy(1000, 100))]);
        let measured = |count| MeasuredOp {
            count,
            mean_s: 0.002,
            p50_s: 0.002,
            p90_s: 0.002,
            p99_s: 0.002,
        };
        let operations = BTreeMap::from([
            ("feed_post".to_string(), measured(3000)),
            ("poll_message".to_string(), measured(1000)),
        ]);
        let by_op = BTreeMap::from([(
            "feed_post".to_string(),
            DurationDist(Shape::Constant(2000.0)),
        )]);
        let (demand, stations) = demand_stations(&groups, &operations, &by_op, 2, None);
        assert_eq!(demand.cores, 2);
        assert!((demand.capacity_per_s - 20_000.0).abs() < 1e-6);
        assert!((demand.groups["timeline"].share - 0.75).abs() < 1e-12);
        let names: Vec<_> = stations.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["poll", "job", "timeline", "token", "registration"]);
        let timeline = &stations[2];
        // 0.75 · 2 cores · 2 ms / 100 µs = 30 workers → 30 / 2 ms = 15,000/s = 0.75 · 20,000.
        assert_eq!(timeline.workers, 30);
        assert_eq!(
            timeline.service_by_op["feed_post"],
            DurationDist(Shape::Constant(2000.0))
        );
        assert!(
            timeline
                .ops
                .as_ref()
                .unwrap()
                .contains(&"log_append".to_string())
        );
        // Polls are served for their busy time (their round trip is a hold): E[S] = D, so the
        // group gets max(0.25 · 2, 2) = 2 workers.
        let poll = &stations[0];
        assert_eq!(poll.workers, 2);
        assert_eq!(poll.service, DurationDist(Shape::Constant(100.0)));
        assert!(poll.service_by_op.is_empty());
        // A group the run never called keeps every core and no demand row.
        assert_eq!(stations[3].workers, 2);
        assert!(!demand.groups.contains_key("token"));
        assert_eq!(demand.client_factor, 1.0);
        assert_eq!(demand.cores_obtained, None);

        // Goal: where the clients share the process, the same groups are charged the
        // process's CPU per request on the cores it obtained. Mean demand 100 µs, process CPU
        // 200 µs a request → k = 2; 1.25 cores obtained, 0.05 of them used whatever the load →
        // capacity 1.2 / 200 µs = 6,000/s, and timeline
        // gets 0.75 · 1.2 · 2 ms / (2 · 100 µs) = 9 workers → 9 / 2 ms = 4,500/s = 0.75 · 6,000.
        let shared = SharedCpu {
            cores_obtained: 1.25,
            cpu_per_request_s: 0.0002,
            fixed_cores: 0.05,
        };
        let (demand, stations) = demand_stations(&groups, &operations, &by_op, 2, Some(shared));
        assert!((demand.client_factor - 2.0).abs() < 1e-9);
        assert!((demand.capacity_per_s - 6_000.0).abs() < 1e-6);
        assert_eq!(demand.cores_obtained, Some(1.25));
        assert_eq!(demand.fixed_cores, Some(0.05));
        assert_eq!(demand.cpu_per_request_s, Some(0.0002));
        assert_eq!(stations[2].workers, 9);
        // Below one worker's worth, a group keeps the cores obtained, rounded (1).
        assert_eq!(stations[0].workers, 1);
    }

    #[test]
    fn the_process_cost_is_the_line_through_two_loads() {
        // Goal: the CPU per request is the marginal cost between the two runs, the intercept
        // is the fixed use, and the capacity is where the line meets the cores obtained.
        let low = Load {
            cores: 0.1,
            requests_per_s: 500.0,
        };
        let high = Load {
            cores: 0.28,
            requests_per_s: 2_000.0,
        };
        let fit = SharedCpu::fit(1.0, low, Some(high)).unwrap();
        assert!((fit.cpu_per_request_s - 0.00012).abs() < 1e-12, "{fit:?}");
        assert!((fit.fixed_cores - 0.04).abs() < 1e-9, "{fit:?}");
        assert!((fit.capacity_per_s() - 8_000.0).abs() < 1e-6, "{fit:?}");
        // One run: its average cost, nothing fixed.
        let one = SharedCpu::fit(1.0, low, None).unwrap();
        assert!((one.cpu_per_request_s - 0.0002).abs() < 1e-12);
        assert_eq!(one.fixed_cores, 0.0);
        // A busier run that cost less in all (noise) gives no slope: the busier average.
        let cheaper = Load {
            cores: 0.09,
            requests_per_s: 2_000.0,
        };
        let flat = SharedCpu::fit(1.0, low, Some(cheaper)).unwrap();
        assert!((flat.cpu_per_request_s - 0.1 / 2_000.0).abs() < 1e-12);
        // Nothing measured: no model.
        assert_eq!(SharedCpu::fit(0.0, low, None), None);
    }

    #[test]
    fn bad_options_are_refused_before_any_io() {
        // Goal: nonsense sizes are typed errors, not panics or endless ramps.
        let zero = CalibrateOptions {
            agents: 0,
            ..Default::default()
        };
        assert!(matches!(
            low_load_scenario(&zero),
            Err(CalibrateError::Options(_))
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let wide = CalibrateOptions {
            max_concurrency: MAX_CONCURRENCY + 1,
            ..Default::default()
        };
        assert!(matches!(
            rt.block_on(calibrate(&wide)),
            Err(CalibrateError::Options(_))
        ));
    }

    #[test]
    fn calibrating_the_embedded_emulator_gives_a_usable_profile() {
        // Goal: a short calibration of the embedded emulator yields a profile that passes its
        // own checks, names every operation the fleet used, and states a saturation ramp that
        // starts at one client with answers.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = CalibrateOptions {
            agents: 3,
            duration: Duration::from_secs(4),
            step: Duration::from_millis(150),
            max_concurrency: 4,
            ..Default::default()
        };
        let cal = rt.block_on(calibrate(&opts)).expect("calibrates");
        let p = &cal.profile;
        p.check().expect("a valid profile");
        assert_eq!(p.saturation.ramp[0].concurrency, 1);
        assert!(p.saturation.throughput_per_s > 0.0);
        assert!(p.saturation.low_load_latency_s > 0.0);
        // The embedded emulator reports its busy time: one station per route group, each
        // operation's round trip in its group's station, the polls' hold in none.
        let demand = p
            .demand
            .as_ref()
            .expect("the emulator's busy time was read");
        for group in ["poll", "timeline", "token", "registration"] {
            let d = &demand.groups[group];
            assert!(d.requests > 0 && d.mean_s > 0.0, "{group}: {d:?}");
        }
        assert!(demand.capacity_per_s > 0.0);
        // Clients and emulator share this process: its cores and CPU per request were
        // measured, and they set the capacity.
        let cores = demand
            .cores_obtained
            .expect("the ramp measured the process's cores");
        let cpu = demand
            .cpu_per_request_s
            .expect("the fleet run measured CPU per request");
        assert!(
            cores > 0.0 && cores <= f64::from(demand.cores),
            "{demand:?}"
        );
        assert!(cpu > 0.0 && demand.client_factor >= 1.0, "{demand:?}");
        let fixed = demand
            .fixed_cores
            .expect("two runs measured the fixed part");
        assert!((0.0..cores).contains(&fixed), "{demand:?}");
        assert!(
            (demand.capacity_per_s - (cores - fixed).max(0.01) / cpu).abs()
                < 1e-6 * demand.capacity_per_s
        );
        assert!(p.saturation.ramp.iter().all(|s| s.process_cores.is_some()));
        let station = |op: &str| {
            p.stations
                .iter()
                .find(|s| s.ops.as_ref().is_some_and(|o| o.iter().any(|n| n == op)))
                .unwrap_or_else(|| panic!("no station serves {op}"))
        };
        for (op, group) in [
            ("register", "registration"),
            ("token_exchange", "token"),
            ("session_create", "poll"),
            ("feed_post", "timeline"),
        ] {
            assert!(p.operations.contains_key(op), "{op} missing: {p:?}");
            assert_eq!(station(op).name, group);
            assert!(station(op).service_by_op.contains_key(op));
            assert!(station(op).workers >= 1);
        }
        for held in ["poll_empty", "poll_message", "keep_alive"] {
            assert!(
                !station(held).service_by_op.contains_key(held),
                "{held} is a hold"
            );
        }
        // The file is stable: what is read back writes the same text.
        let text = p.to_toml("test").unwrap();
        let again = Profile::from_toml(&text).unwrap().to_toml("test").unwrap();
        assert_eq!(again, text);
    }
}
