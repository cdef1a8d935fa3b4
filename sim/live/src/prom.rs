//! The Prometheus endpoint (`--metrics-addr`): `install` puts a `metrics-exporter-prometheus`
//! recorder in place as the process's global `metrics` recorder and serves its text exposition
//! at `GET /metrics` on exactly the address asked for; `PromSink` turns the fleet's typed
//! `Event`s into counters, gauges and histograms; `EmulatorSink` copies the emulator's counters
//! (`EmulatorStats` and the front's `FrontSnapshot`) into theirs.
//!
//! Every name, help text and label set comes from `fleetsim_metrics::names` (the one module that
//! names metrics); label values come only from bounded enums and fixed tables (operations,
//! outcome labels, agent states, crypto operations, route templates, the statuses the codec
//! emits). Every series also carries the process's `shard` label (`names::PROM_SHARD_LABEL`),
//! set once as the exporter's global label, so no call site names it and none can forget it;
//! its values are the shard indices `0..MAX_SHARDS`, `"0"` for an unsharded process. Every
//! `_seconds` histogram gets explicit buckets, so nothing renders as a summary (summaries
//! cannot be aggregated or fed to `histogram_quantile`).
//!
//! Decision: the endpoint is a small hyper listener of our own over the exporter's
//! `PrometheusHandle`, not the exporter's `http-listener`. Ours reports the address it bound
//! (port 0 works, as in tests), stops when the `PromHandle` is dropped or its linger ends, and
//! bounds its connections; the exporter's listener can do none of these.
//!
//! This module never decides anything about the protocol and never reads the core's state
//! itself: drivers hand it events and counters.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetsim_core::SimTime;
use fleetsim_core::api::EmulatorStats;
use fleetsim_core::event::{CryptoOp, Event, Side};
use fleetsim_core::ops::{AgentState, Operation};
use fleetsim_core::proto::TaskResult;
use fleetsim_core::shard::{MAX_SHARDS, Shard};
use fleetsim_metrics::names::{self, PromMetric};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics::{Counter, Gauge, Histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::server::{EmulatorHandle, FrontSnapshot};

/// Scrape connections served at once; further connections wait in the accept backlog.
const MAX_SCRAPE_CONNECTIONS: usize = 16;
/// How often histogram samples are folded into their buckets between scrapes. The exporter
/// queues every raw sample until then, so this bounds that memory to one second of samples
/// (a virtual-time run can record millions a second).
const UPKEEP_EVERY: Duration = Duration::from_secs(1);
/// Half-joined job pickups (a `JobQueued` without its `JobPickedUp`, or the reverse) kept at
/// most, per side; beyond it the pickup is not timed (the report's recorder still times it).
const PENDING_PICKUPS_MAX: usize = 100_000;
/// How often `observe_emulator` copies the emulator's counters: well under any scrape interval.
pub const EMULATOR_EVERY: Duration = Duration::from_millis(500);
/// The exposition format's content type (text format 0.0.4).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the process exporting metrics is; the `role` label of `fleetsim_build_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `fleetsim run`: live virtual agents.
    Fleet,
    /// `fleetsim serve`: the emulator.
    Emulator,
    /// `fleetsim simulate`: virtual time; run-time metrics are virtual seconds.
    Simulate,
}

impl Role {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Role::Fleet => "fleet",
            Role::Emulator => "emulator",
            Role::Simulate => "simulate",
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PromError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("a metrics recorder is already installed in this process")]
    AlreadyInstalled,
    #[error("the metrics endpoint needs a tokio runtime")]
    NoRuntime,
    /// A shard outside `0..count` or a count outside `1..=MAX_SHARDS` (the label's bound).
    #[error("shard {0} is not a shard of a run (I/N with I < N <= {MAX_SHARDS})")]
    Shard(Shard),
}

/// The running endpoint. Dropping it stops serving at once; `linger` keeps serving a while
/// first, so the final values of a run get scraped.
#[derive(Debug)]
pub struct PromHandle {
    addr: SocketAddr,
    handle: PrometheusHandle,
    server: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

impl PromHandle {
    /// Keep serving for `duration` or until `stop` completes, whichever is first, then stop.
    /// The metrics keep their final values meanwhile.
    pub async fn linger(self, duration: Duration, stop: impl Future<Output = ()>) {
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = stop => {}
        }
    }

    /// The bound address (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/metrics`, for log lines and summaries.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    /// The exposition text a scrape would get now.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

impl Drop for PromHandle {
    fn drop(&mut self) {
        self.server.abort();
        self.upkeep.abort();
    }
}

/// Install the global recorder for `role` in `shard` (`Shard::WHOLE` for an unsharded run,
/// `serve` and `simulate`) and serve `GET /metrics` on `addr` (bound exactly there; port 0
/// picks a free port, see `PromHandle::local_addr`). Needs a tokio runtime; may be called once
/// per process. Every series carries `shard="<index>"`, every catalogue metric gets its help
/// text, and `fleetsim_build_info{shard,version,role}` is set to 1.
pub fn install(addr: SocketAddr, role: Role, shard: Shard) -> Result<PromHandle, PromError> {
    // Checked before binding, so a refused shard leaves no listener behind.
    let b = builder(shard)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| PromError::NoRuntime)?;
    let bind_err = |source| PromError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let local = std_listener.local_addr().map_err(bind_err)?;
    let listener = {
        let _enter = runtime.enter();
        TcpListener::from_std(std_listener).map_err(bind_err)?
    };

    let recorder = b.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| PromError::AlreadyInstalled)?;
    describe_all();
    set_build_info(role);

    let server = runtime.spawn(serve(listener, handle.clone()));
    let upkeep_handle = handle.clone();
    let upkeep = runtime.spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            upkeep_handle.run_upkeep();
        }
    });
    Ok(PromHandle {
        addr: local,
        handle,
        server,
        upkeep,
    })
}

/// The exporter configuration every fleetsim endpoint uses: names exactly as the catalogue
/// spells them (no suffixes added), buckets for every histogram, and `shard="<index>"` on every
/// series. A shard outside `0..count` or a count above `MAX_SHARDS` is refused: the label's
/// values are bounded by `MAX_SHARDS`, and `Shard`'s fields are public, so the bound is
/// checked here rather than trusted.
pub fn builder(shard: Shard) -> Result<PrometheusBuilder, PromError> {
    Shard::new(shard.index, shard.count).map_err(|_| PromError::Shard(shard))?;
    // No recommended naming: it would append `_total` and units to names that already end in
    // them. Units are never passed to `describe_*`, so no suffix is added either.
    let mut b = PrometheusBuilder::new()
        .with_recommended_naming(false)
        .add_global_label(names::PROM_SHARD_LABEL, shard.index.to_string());
    // Catalogue histograms get their own bounds; the default bounds make sure a histogram
    // added later without an entry still renders as a histogram, never as a summary.
    b = b
        .set_buckets(names::PROM_LATENCY_BUCKETS_S)
        .expect("the latency bounds are a non-empty constant");
    for m in names::prometheus_all().filter(|m| m.kind == "histogram") {
        b = b
            .set_buckets_for_metric(Matcher::Full(m.name.to_string()), buckets_for(m))
            .expect("bucket bounds are non-empty constants");
    }
    Ok(b)
}

/// The bucket bounds of a catalogue histogram.
pub fn buckets_for(m: &PromMetric) -> &'static [f64] {
    if m.name == names::PROM_JOB_PICKUP.name {
        names::PROM_PICKUP_BUCKETS_S
    } else {
        names::PROM_LATENCY_BUCKETS_S
    }
}

/// Register the help text of every catalogue metric with the current recorder.
pub fn describe_all() {
    for m in names::prometheus_all() {
        match m.kind {
            "counter" => metrics::describe_counter!(m.name, m.help),
            "gauge" => metrics::describe_gauge!(m.name, m.help),
            _ => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Set `fleetsim_build_info{version,role}` to 1 in the current recorder (the `shard` label is
/// the recorder's global label).
pub fn set_build_info(role: Role) {
    metrics::gauge!(
        names::PROM_BUILD_INFO.name,
        "version" => env!("CARGO_PKG_VERSION"),
        "role" => role.name()
    )
    .set(1.0);
}

/// Accept scrapes until the task is aborted.
async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPE_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off briefly instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, handle.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// `GET /metrics` renders; anything else is 404 or 405.
async fn answer(
    req: hyper::Request<Incoming>,
    handle: PrometheusHandle,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/metrics") => (200, CONTENT_TYPE, handle.render()),
        (_, "/metrics") => (405, "text/plain", "use GET\n".to_string()),
        _ => (404, "text/plain", "metrics are at /metrics\n".to_string()),
    };
    let response = hyper::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default();
    Ok(response)
}

/// Fleet-side exporter: counters, gauges and histograms fed from the run's `Event`s. Handles are
/// registered with the recorder current when `new` runs (the global one after `install`); a
/// series that can only appear later (an error outcome, an operation's latency) is registered
/// on first use, from bounded label sets.
///
/// Crypto events of `Side::Emulator` are not counted here: the emulator's own exporter
/// (`EmulatorSink`) publishes them live from the front's counters, and the fleet only learns
/// them at the end of a run, so counting both in one process would double them.
pub struct PromSink {
    /// Per operation (`Operation::ALL` order): outcome label index (0 = ok, 1 + error index) →
    /// counter.
    operations: Vec<BTreeMap<usize, Counter>>,
    /// Per operation: latency of successful calls.
    latency: Vec<Option<Histogram>>,
    pickup: Histogram,
    /// queued, started, succeeded, failed, canceled.
    jobs: [Counter; 5],
    /// `AgentState::ALL` order.
    agents: Vec<Gauge>,
    /// Per `CryptoOp::ALL`: operations, bytes, busy seconds (agents' side).
    crypto: Vec<CryptoSeries>,
    secrets_masked: Counter,
    token_rotations: Counter,
    /// `fleetsim_faults_total{kind}`, in `FaultKind::ALL` order.
    faults: [Counter; fleetsim_core::faults::FaultKind::ALL.len()],
    elapsed: Gauge,
    latest: SimTime,
    /// Half-joined pickups by job request id (a HashMap: looked up by key only, never iterated).
    queued_at: HashMap<u64, SimTime>,
    picked_at: HashMap<u64, SimTime>,
}

/// Job lifecycle label values of `fleetsim_jobs_total`, in `PromSink::jobs` order.
const JOB_EVENTS: [&str; 5] = ["queued", "started", "succeeded", "failed", "canceled"];

impl PromSink {
    /// A sink for a fleet of `agents` agents, all counted offline until their first state
    /// change (as the recorder does), so the by-state gauge never goes negative.
    pub fn new(agents: u32) -> PromSink {
        let ops = Operation::ALL.len();
        let mut operations = vec![BTreeMap::new(); ops];
        // Pre-register the success series so rates exist from the first scrape.
        for (slot, &op) in operations.iter_mut().zip(Operation::ALL) {
            slot.insert(0, operations_counter(op, "ok"));
        }
        let jobs = JOB_EVENTS.map(|e| metrics::counter!(names::PROM_JOBS.name, "event" => e));
        let agents_by_state: Vec<Gauge> = AgentState::ALL
            .iter()
            .map(|s| metrics::gauge!(names::PROM_AGENTS.name, "state" => s.name()))
            .collect();
        agents_by_state[state_index(AgentState::Offline)].set(f64::from(agents));
        let crypto = CryptoOp::ALL
            .iter()
            .map(|&op| crypto_counters(Side::Agents, op))
            .collect();
        // Every fault kind's series exists from the start at 0, so "no faults" reads as a zero
        // rate on the dashboard rather than a missing series (five fixed labels).
        let faults = fleetsim_core::faults::FaultKind::ALL
            .map(|k| metrics::counter!(names::PROM_FAULTS.name, "kind" => k.name()));
        PromSink {
            faults,
            operations,
            latency: vec![None; ops],
            pickup: metrics::histogram!(names::PROM_JOB_PICKUP.name),
            jobs,
            agents: agents_by_state,
            crypto,
            secrets_masked: metrics::counter!(names::PROM_SECRETS_MASKED.name),
            token_rotations: metrics::counter!(names::PROM_TOKENS_ROTATED.name),
            elapsed: metrics::gauge!(names::PROM_RUN_ELAPSED.name),
            latest: SimTime::ZERO,
            queued_at: HashMap::new(),
            picked_at: HashMap::new(),
        }
    }

    /// Fold one event in. Cheap: no allocation except the first time a series appears or a
    /// pickup half waits for its other half.
    pub fn observe(&mut self, ev: &Event) {
        match *ev {
            Event::Op {
                op,
                intended,
                done,
                outcome,
                ..
            } => {
                self.advance(done);
                let label = names::error_label_index(outcome).map_or(0, |i| i + 1);
                let i = op_index(op);
                self.operations[i]
                    .entry(label)
                    .or_insert_with(|| operations_counter(op, outcome_label(label)))
                    .increment(1);
                if outcome.is_ok() {
                    let latency = self.latency[i].get_or_insert_with(|| {
                        metrics::histogram!(
                            names::PROM_OPERATION_DURATION.name,
                            "operation" => op.name()
                        )
                    });
                    latency.record(done.saturating_since(intended).as_secs_f64());
                }
            }
            Event::JobQueued { request_id, at } => {
                self.advance(at);
                self.jobs[0].increment(1);
                match self.picked_at.remove(&request_id) {
                    Some(picked) => self
                        .pickup
                        .record(picked.saturating_since(at).as_secs_f64()),
                    None => hold(&mut self.queued_at, request_id, at),
                }
            }
            Event::JobPickedUp { request_id, at, .. } => {
                self.advance(at);
                self.jobs[1].increment(1);
                match self.queued_at.remove(&request_id) {
                    Some(queued) => self
                        .pickup
                        .record(at.saturating_since(queued).as_secs_f64()),
                    None => hold(&mut self.picked_at, request_id, at),
                }
            }
            Event::JobFinished { result, at, .. } => {
                self.advance(at);
                self.jobs[result_index(result)].increment(1);
            }
            Event::AgentState { from, to, at, .. } => {
                self.advance(at);
                self.agents[state_index(from)].decrement(1.0);
                self.agents[state_index(to)].increment(1.0);
            }
            Event::TokenRotated { at, .. } => {
                self.advance(at);
                self.token_rotations.increment(1);
            }
            Event::SecretsMasked { count, .. } => self.secrets_masked.increment(u64::from(count)),
            Event::Fault { kind, start, .. } => {
                self.advance(start);
                if let Some(i) = fleetsim_core::faults::FaultKind::ALL
                    .iter()
                    .position(|&k| k == kind)
                {
                    self.faults[i].increment(1);
                }
            }
            Event::Crypto {
                side: Side::Agents,
                op,
                count,
                bytes,
                nanos,
            } => {
                let series = &self.crypto[crypto_index(op)];
                series.ops.increment(u64::from(count));
                series.bytes.increment(bytes);
                series.busy.increment(nanos as f64 / 1e9);
            }
            Event::Crypto {
                side: Side::Emulator,
                ..
            } => {}
        }
    }

    /// Move the run-time gauge forward to `at` (events arrive slightly out of order).
    fn advance(&mut self, at: SimTime) {
        if at > self.latest && at != SimTime::NEVER {
            self.latest = at;
            self.elapsed.set(at.as_secs_f64());
        }
    }
}

/// Emulator-side exporter: copies `EmulatorStats` and the front's `FrontSnapshot` into gauges
/// and counters (counters are set to the emulator's running totals, never incremented here).
pub struct EmulatorSink {
    /// (route, status) → counter; bounded by the route table times the codec's statuses.
    requests: BTreeMap<(&'static str, u16), Counter>,
    /// Route → seconds served (a gauge set to the front's running total, like crypto busy
    /// time); bounded by the route table.
    route_busy: BTreeMap<&'static str, Gauge>,
    /// Per `CryptoOp::ALL`: operations, bytes, busy seconds (emulator side).
    crypto: Vec<CryptoSeries>,
    shed: Counter,
    parked_polls: Gauge,
    queued_jobs: Gauge,
    unmatched_jobs: Gauge,
    assigned_jobs: Gauge,
    leases: Gauge,
    agents: Gauge,
    sessions: Gauge,
    jobs_completed: Counter,
    requeues: Counter,
    leaked_secrets: Counter,
    tokens_issued: Counter,
    tokens_rotated: Counter,
    connections: Gauge,
    accepted: Counter,
    rejected: Counter,
    timed_out: Counter,
    tls_failures: Counter,
}

impl Default for EmulatorSink {
    fn default() -> Self {
        EmulatorSink::new()
    }
}

impl EmulatorSink {
    /// Register every emulator series (at 0) with the current recorder, so each panel has data
    /// from the first scrape.
    pub fn new() -> EmulatorSink {
        use names::*;
        let c = |m: PromMetric| metrics::counter!(m.name);
        let g = |m: PromMetric| metrics::gauge!(m.name);
        EmulatorSink {
            requests: BTreeMap::new(),
            route_busy: BTreeMap::new(),
            crypto: CryptoOp::ALL
                .iter()
                .map(|&op| crypto_counters(Side::Emulator, op))
                .collect(),
            shed: c(PROM_EMU_SHED),
            parked_polls: g(PROM_EMU_PARKED_POLLS),
            queued_jobs: g(PROM_EMU_QUEUED_JOBS),
            unmatched_jobs: g(PROM_EMU_UNMATCHED_JOBS),
            assigned_jobs: g(PROM_EMU_ASSIGNED_JOBS),
            leases: g(PROM_EMU_LEASES),
            agents: g(PROM_EMU_AGENTS),
            sessions: g(PROM_EMU_SESSIONS),
            jobs_completed: c(PROM_EMU_JOBS_COMPLETED),
            requeues: c(PROM_EMU_REQUEUES),
            leaked_secrets: c(PROM_EMU_LEAKED_SECRETS),
            tokens_issued: c(PROM_EMU_TOKENS_ISSUED),
            tokens_rotated: c(PROM_EMU_TOKENS_ROTATED),
            connections: g(PROM_EMU_CONNECTIONS),
            accepted: c(PROM_EMU_CONNECTIONS_ACCEPTED),
            rejected: c(PROM_EMU_CONNECTIONS_REJECTED),
            timed_out: c(PROM_EMU_CONNECTIONS_TIMED_OUT),
            tls_failures: c(PROM_EMU_TLS_FAILURES),
        }
    }

    /// Copy the emulator's counters now.
    pub fn observe(&mut self, stats: &EmulatorStats, front: &FrontSnapshot) {
        self.parked_polls.set(stats.parked_polls as f64);
        self.queued_jobs.set(stats.jobs_queued as f64);
        self.unmatched_jobs.set(stats.jobs_unmatched as f64);
        self.assigned_jobs.set(stats.jobs_assigned as f64);
        self.leases.set(stats.leases_active as f64);
        self.agents.set(stats.agents as f64);
        self.sessions.set(stats.sessions as f64);
        self.jobs_completed.absolute(stats.jobs_completed);
        self.requeues.absolute(stats.jobs_requeued);
        self.leaked_secrets.absolute(stats.leaked_secrets);
        self.tokens_issued.absolute(stats.tokens_issued);
        self.tokens_rotated.absolute(stats.tokens_rotated);

        let mut shed = 0;
        for row in &front.requests {
            if matches!(row.status, 429 | 503) {
                shed += row.count;
            }
            self.requests
                .entry((row.route, row.status))
                .or_insert_with(|| {
                    metrics::counter!(
                        names::PROM_EMU_REQUESTS.name,
                        "route" => row.route,
                        "status" => status_label(row.status)
                    )
                })
                .absolute(row.count);
        }
        self.shed.absolute(shed);
        for (route, totals) in &front.busy {
            self.route_busy
                .entry(route)
                .or_insert_with(
                    || metrics::gauge!(names::PROM_EMU_ROUTE_BUSY.name, "route" => *route),
                )
                .set(totals.nanos as f64 / 1e9);
        }
        for (op, totals) in &front.crypto {
            let series = &self.crypto[crypto_index(*op)];
            series.ops.absolute(totals.count);
            series.bytes.absolute(totals.bytes);
            series.busy.set(totals.nanos as f64 / 1e9);
        }
        self.connections.set(front.connections_open as f64);
        self.accepted.absolute(front.connections_accepted);
        self.rejected.absolute(front.connections_rejected);
        self.timed_out.absolute(front.connections_timed_out);
        self.tls_failures.absolute(front.tls_handshake_failures);
    }
}

/// Copy `handle`'s counters into a new `EmulatorSink` every `every`, forever: race it against
/// the shutdown future. Register the series first, so call it after `install`.
pub async fn observe_emulator(handle: &EmulatorHandle, every: Duration) {
    let mut sink = EmulatorSink::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        sink.observe(&handle.stats(), &handle.front_metrics());
    }
}

fn operations_counter(op: Operation, outcome: &'static str) -> Counter {
    metrics::counter!(
        names::PROM_OPERATIONS.name,
        "operation" => op.name(),
        "outcome" => outcome
    )
}

/// The outcome label of an `operations` slot (0 = ok, else 1 + error label index).
fn outcome_label(slot: usize) -> &'static str {
    match slot {
        0 => "ok",
        i => names::error_label(i - 1),
    }
}

/// The three series of one (side, crypto operation).
struct CryptoSeries {
    ops: Counter,
    bytes: Counter,
    /// Fractional seconds, hence a gauge that only goes up (see `names::PROM_CRYPTO_SECONDS`).
    busy: Gauge,
}

fn crypto_counters(side: Side, op: CryptoOp) -> CryptoSeries {
    let labels = || {
        vec![
            Label::from_static_parts("side", names::side_name(side)),
            Label::from_static_parts("op", op.name()),
        ]
    };
    CryptoSeries {
        ops: metrics::counter!(names::PROM_CRYPTO_OPS.name, labels()),
        bytes: metrics::counter!(names::PROM_CRYPTO_BYTES.name, labels()),
        busy: metrics::gauge!(names::PROM_CRYPTO_SECONDS.name, labels()),
    }
}

/// The status label: the codec emits a handful of codes, so the set stays bounded; anything
/// outside 100..=599 collapses to one value.
fn status_label(status: u16) -> &'static str {
    const CODES: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (413, "413"),
        (429, "429"),
        (500, "500"),
        (503, "503"),
    ];
    CODES.iter().find(|(c, _)| *c == status).map_or(
        match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        },
        |(_, l)| l,
    )
}

fn hold(map: &mut HashMap<u64, SimTime>, request_id: u64, at: SimTime) {
    if map.len() < PENDING_PICKUPS_MAX {
        map.insert(request_id, at);
    }
}

fn op_index(op: Operation) -> usize {
    Operation::ALL.iter().position(|&o| o == op).unwrap_or(0)
}

fn state_index(state: AgentState) -> usize {
    AgentState::ALL
        .iter()
        .position(|&s| s == state)
        .unwrap_or(0)
}

fn crypto_index(op: CryptoOp) -> usize {
    CryptoOp::ALL.iter().position(|&o| o == op).unwrap_or(0)
}

fn result_index(result: TaskResult) -> usize {
    match result {
        TaskResult::Succeeded | TaskResult::SucceededWithIssues | TaskResult::Skipped => 2,
        TaskResult::Failed | TaskResult::Abandoned => 3,
        TaskResult::Canceled => 4,
    }
}

#[cfg(test)]
mod tests {
    use fleetsim_core::api::ErrorKind;
    use fleetsim_core::event::Outcome;
    use metrics_exporter_prometheus::PrometheusRecorder;

    use super::*;
    use crate::server::metrics::{CryptoTotals, RouteCount};

    /// A local recorder configured like `install`'s, with help texts and build info.
    fn recorder(role: Role) -> PrometheusRecorder {
        recorder_in(role, Shard::WHOLE)
    }

    fn recorder_in(role: Role, shard: Shard) -> PrometheusRecorder {
        let recorder = builder(shard).expect("a valid shard").build_recorder();
        metrics::with_local_recorder(&recorder, || {
            describe_all();
            set_build_info(role);
        });
        recorder
    }

    /// A short fleet story: two agents come up, one job is queued, picked up and finished, one
    /// call fails, crypto and rotation happen.
    fn fleet_events() -> Vec<Event> {
        let t = SimTime::from_millis;
        let op = |op, intended, done, outcome| Event::Op {
            agent: 0,
            op,
            intended: t(intended),
            done: t(done),
            outcome,
        };
        let mv = |agent, from, to, at| Event::AgentState {
            agent,
            from,
            to,
            at: t(at),
        };
        vec![
            mv(0, AgentState::Offline, AgentState::Registering, 0),
            mv(1, AgentState::Offline, AgentState::Registering, 5),
            op(Operation::Register, 0, 40, Outcome::Ok),
            op(Operation::TokenExchange, 40, 43, Outcome::Ok),
            op(
                Operation::SessionCreate,
                43,
                50,
                Outcome::Api(ErrorKind::Throttled),
            ),
            mv(0, AgentState::Registering, AgentState::Idle, 60),
            // The pickup arrives before its queue event: the join must work both ways.
            Event::JobPickedUp {
                agent: 0,
                request_id: 7,
                at: t(2_600),
            },
            Event::JobQueued {
                request_id: 7,
                at: t(100),
            },
            mv(0, AgentState::Idle, AgentState::Busy, 2_600),
            Event::Crypto {
                side: Side::Agents,
                op: CryptoOp::OaepUnwrap,
                count: 2,
                bytes: 64,
                nanos: 1_500_000,
            },
            Event::Crypto {
                side: Side::Emulator,
                op: CryptoOp::OaepWrap,
                count: 9,
                bytes: 9,
                nanos: 9,
            },
            Event::TokenRotated {
                agent: 0,
                at: t(3_000),
            },
            Event::SecretsMasked { agent: 0, count: 3 },
            Event::Fault {
                kind: fleetsim_core::faults::FaultKind::Partition,
                start: t(4_000),
                end: Some(t(5_000)),
                agents: 2,
            },
            Event::JobFinished {
                agent: 0,
                request_id: 7,
                result: TaskResult::Failed,
                at: t(9_000),
            },
        ]
    }

    fn emulator_inputs() -> (EmulatorStats, FrontSnapshot) {
        let stats = EmulatorStats {
            agents: 2,
            sessions: 1,
            parked_polls: 1,
            jobs_queued: 3,
            jobs_requeued: 1,
            ..EmulatorStats::default()
        };
        let front = FrontSnapshot {
            requests: vec![
                RouteCount {
                    route: "get_message",
                    status: 202,
                    count: 10,
                },
                RouteCount {
                    route: "create_session",
                    status: 503,
                    count: 2,
                },
                RouteCount {
                    route: "token",
                    status: 429,
                    count: 1,
                },
            ],
            crypto: vec![(
                CryptoOp::OaepWrap,
                CryptoTotals {
                    count: 4,
                    bytes: 128,
                    nanos: 2_000_000,
                },
            )],
            busy: vec![(
                "feed",
                crate::server::BusyTotals {
                    count: 3,
                    nanos: 1_500_000,
                    nanos_sq: 0,
                },
            )],
            connections_accepted: 5,
            connections_open: 2,
            ..FrontSnapshot::default()
        };
        (stats, front)
    }

    /// The value of the one sample line starting with `series` (name and labels as rendered).
    fn sample(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    fn render_fleet() -> String {
        let rec = recorder(Role::Fleet);
        metrics::with_local_recorder(&rec, || {
            let mut sink = PromSink::new(2);
            for ev in fleet_events() {
                sink.observe(&ev);
            }
        });
        rec.handle().render()
    }

    // Goal: fleet events become the catalogue's series with the right values: outcomes by
    // label, latency and pickup as real histograms (buckets, never a summary), agents by state
    // net of transitions, jobs by result, crypto of the agents' side only.
    #[test]
    fn fleet_events_become_catalogue_series() {
        let text = render_fleet();
        let ops = |op: &str, outcome: &str| {
            sample(
                &text,
                &format!(
                    "fleetsim_operations_total{{shard=\"0\",operation=\"{op}\",outcome=\"{outcome}\"}}"
                ),
            )
        };
        assert_eq!(ops("register", "ok"), 1.0);
        assert_eq!(ops("session_create", "throttled"), 1.0);
        assert_eq!(
            ops("poll_message", "ok"),
            0.0,
            "success series exist from the start"
        );
        assert!(!text.contains("quantile="), "no summaries:\n{text}");
        let pickup_le_5 = "fleetsim_job_pickup_duration_seconds_bucket{shard=\"0\",le=\"5\"}";
        assert_eq!(sample(&text, pickup_le_5), 1.0, "2.5 s pickup is under 5 s");
        let pickup_le_1 = "fleetsim_job_pickup_duration_seconds_bucket{shard=\"0\",le=\"1\"}";
        assert_eq!(sample(&text, pickup_le_1), 0.0);
        let reg = "fleetsim_operation_duration_seconds_bucket{shard=\"0\",operation=\"register\",le=\"0.05\"}";
        assert_eq!(sample(&text, reg), 1.0);
        let state = |s: &str| {
            sample(
                &text,
                &format!("fleetsim_agents{{shard=\"0\",state=\"{s}\"}}"),
            )
        };
        assert_eq!(
            (state("offline"), state("registering"), state("busy")),
            (0.0, 1.0, 1.0)
        );
        let jobs = |e: &str| {
            sample(
                &text,
                &format!("fleetsim_jobs_total{{shard=\"0\",event=\"{e}\"}}"),
            )
        };
        assert_eq!(
            (jobs("queued"), jobs("started"), jobs("failed")),
            (1.0, 1.0, 1.0)
        );
        let agents_unwrap =
            "fleetsim_crypto_operations_total{shard=\"0\",side=\"agents\",op=\"oaep_unwrap\"}";
        assert_eq!(sample(&text, agents_unwrap), 2.0);
        assert!(
            !text.contains("side=\"emulator\""),
            "emulator crypto is the emulator's to export"
        );
        let busy = "fleetsim_crypto_busy_seconds{shard=\"0\",side=\"agents\",op=\"oaep_unwrap\"}";
        assert!((sample(&text, busy) - 0.0015).abs() < 1e-9);
        assert_eq!(
            sample(&text, "fleetsim_token_rotations_total{shard=\"0\"}"),
            1.0
        );
        assert_eq!(
            sample(&text, "fleetsim_secrets_masked_total{shard=\"0\"}"),
            3.0
        );
        assert_eq!(
            sample(
                &text,
                "fleetsim_faults_total{shard=\"0\",kind=\"partition\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(&text, "fleetsim_run_elapsed_seconds{shard=\"0\"}"),
            9.0
        );
        let info = "fleetsim_build_info{shard=\"0\",version=\"";
        assert!(
            text.contains(info) && text.contains("role=\"fleet\"}"),
            "{text}"
        );
    }

    // Goal: the emulator's counters are copied, not added up, so repeated observation of the
    // same totals leaves them unchanged; shed requests are the 429 and 503 answers.
    #[test]
    fn emulator_counters_are_copied_not_accumulated() {
        let rec = recorder(Role::Emulator);
        let (stats, front) = emulator_inputs();
        metrics::with_local_recorder(&rec, || {
            let mut sink = EmulatorSink::new();
            sink.observe(&stats, &front);
            sink.observe(&stats, &front);
        });
        let text = rec.handle().render();
        let polls =
            "fleetsim_emulator_requests_total{shard=\"0\",route=\"get_message\",status=\"202\"}";
        assert_eq!(sample(&text, polls), 10.0);
        assert_eq!(
            sample(&text, "fleetsim_emulator_shed_requests_total{shard=\"0\"}"),
            3.0
        );
        assert_eq!(
            sample(&text, "fleetsim_emulator_queued_jobs{shard=\"0\"}"),
            3.0
        );
        assert_eq!(
            sample(&text, "fleetsim_emulator_job_requeues_total{shard=\"0\"}"),
            1.0
        );
        assert_eq!(
            sample(&text, "fleetsim_emulator_leaked_secrets_total{shard=\"0\"}"),
            0.0
        );
        assert_eq!(
            sample(&text, "fleetsim_emulator_open_connections{shard=\"0\"}"),
            2.0
        );
        let wrap =
            "fleetsim_crypto_operations_total{shard=\"0\",side=\"emulator\",op=\"oaep_wrap\"}";
        assert_eq!(sample(&text, wrap), 4.0);
        // Busy time per route, for calibrating against a `fleetsim serve` from outside.
        let busy = "fleetsim_emulator_route_busy_seconds{shard=\"0\",route=\"feed\"}";
        assert!((sample(&text, busy) - 0.0015).abs() < 1e-12);
    }

    // Goal: every exported metric carries the catalogue's help text, and every catalogue
    // metric a role exports shows up in its render (so dashboards can rely on the names).
    #[test]
    fn renders_carry_help_for_every_catalogue_metric() {
        let fleet = render_fleet();
        let rec = recorder(Role::Emulator);
        let (stats, front) = emulator_inputs();
        metrics::with_local_recorder(&rec, || EmulatorSink::new().observe(&stats, &front));
        let emulator = rec.handle().render();
        let expected = [
            (&fleet, names::PROMETHEUS),
            (&emulator, names::PROMETHEUS_EMULATOR),
        ];
        for (text, catalogue) in expected {
            for m in catalogue.iter().chain([&names::PROM_BUILD_INFO]) {
                let help = format!("# HELP {} {}", m.name, m.help);
                assert!(text.contains(&help), "missing {help}");
                assert!(
                    text.contains(&format!("# TYPE {} {}", m.name, m.kind)),
                    "{}",
                    m.name
                );
            }
        }
    }

    // Goal: `promtool check metrics` (Prometheus' own linter) accepts both renders: naming,
    // help texts, histogram shape. Runs when promtool is installed (scripts/ci/observability.sh
    // runs the same lint unconditionally against live endpoints).
    #[test]
    fn promtool_accepts_both_renders() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let rec = recorder(Role::Emulator);
        let (stats, front) = emulator_inputs();
        metrics::with_local_recorder(&rec, || EmulatorSink::new().observe(&stats, &front));
        for text in [render_fleet(), rec.handle().render()] {
            let child = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let Ok(mut child) = child else {
                eprintln!("promtool not installed: skipping the lint (apt-get install prometheus)");
                return;
            };
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // Goal: every series a shard exports carries its index as the `shard` label (build info
    // included), so Prometheus keeps the shards' series apart and dashboards can sum them.
    #[test]
    fn every_series_carries_the_shard_label() {
        let shard = Shard::new(2, 3).unwrap();
        for role in [Role::Fleet, Role::Emulator] {
            let rec = recorder_in(role, shard);
            let (stats, front) = emulator_inputs();
            metrics::with_local_recorder(&rec, || {
                let mut sink = PromSink::new(2);
                for ev in fleet_events() {
                    sink.observe(&ev);
                }
                EmulatorSink::new().observe(&stats, &front);
            });
            let text = rec.handle().render();
            let samples: Vec<&str> = text
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            assert!(samples.len() > 100, "{text}");
            for line in samples {
                assert!(line.contains("{shard=\"2\""), "no shard label: {line}");
            }
            assert!(text.contains("fleetsim_build_info{shard=\"2\",version="));
        }
    }

    // Goal: the label's values stay bounded: a shard outside its count, or a count above
    // MAX_SHARDS, is refused rather than exported.
    #[test]
    fn out_of_range_shards_are_refused() {
        let bad = [
            Shard { index: 3, count: 3 },
            Shard { index: 0, count: 0 },
            Shard {
                index: 0,
                count: MAX_SHARDS + 1,
            },
        ];
        for shard in bad {
            assert!(
                matches!(builder(shard), Err(PromError::Shard(s)) if s == shard),
                "{shard}"
            );
        }
        let last = Shard::new(MAX_SHARDS - 1, MAX_SHARDS).unwrap();
        assert!(builder(last).is_ok());
    }

    // Goal: status labels stay a bounded set whatever a peer sends.
    #[test]
    fn status_labels_are_bounded() {
        assert_eq!(status_label(202), "202");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(9_999), "other");
    }
}
