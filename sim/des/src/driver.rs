//! The virtual-time driver: N sans-IO `Agent`s and one `Server` state machine, moved through a
//! virtual network and the server's capacity model by the next-event engine.
//!
//! A call's life: the agent emits `Send` → the network delays (or loses) it → it arrives at the
//! station serving its operation (waits for a worker, or is shed with 429/503 when the queue is
//! full) → after its service time the server state machine handles it → the answer (or, for a
//! parked long poll, the answer the server releases later) goes back through the network → the
//! agent handles it. Jobs come from the core's `Workload` machine (the same one live mode
//! drives): its calls (pool lookup, queue and cancel) are the operator's side. A queue call
//! (`queue_jobs`) takes the agents' path — network, station, server, network — when a station
//! names `queue_jobs` in its `ops` (a calibration profile does: the live generator's call costs
//! the server a request like any other, and a job is there for an agent only once the server has
//! handled it); otherwise, and always for the pool lookup, the call reaches the server state
//! machine directly, with no station and no network. Partitions cut agents, never the operator.
//! While the server is stalled or down the operator's next call waits, and arrivals that fall
//! due meanwhile go out in the next call at their own intended times. Faults act on agents, the
//! network and the server at their scheduled times.
//!
//! The driver makes no protocol decisions: it never looks inside a request or an answer except
//! to route it by operation. It reads the wall clock only to report `engine.wall_s`. Everything
//! else is a function of the scenario and its seed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetsim_core::SimTime;
use fleetsim_core::agent::{Agent, AgentConfig, AgentOutput, CallId, Connection, RegisterMode};
use fleetsim_core::api::{ApiError, ApiRequest, ApiResponse, Credential, Request};
use fleetsim_core::event::{Event, Outcome, TransportError};
use fleetsim_core::ops::{AgentState, Operation};
use fleetsim_core::proto::TaskAgentJobRequest;
use fleetsim_core::rng::{self, Rng, StreamKind};
use fleetsim_core::server::{Handled, RequestId, Server, ServerOutput};
use fleetsim_core::workload::{CallId as WorkloadCallId, Workload, WorkloadOutput};
use fleetsim_metrics::recorder::Recorder;
use fleetsim_metrics::report::{EngineStats, Mode, Report, RunMeta};
use fleetsim_scenario::Scenario;

use crate::engine::{Engine, EngineError, Model, Scheduler, SimEvent};
use crate::invariants::{InvariantChecker, InvariantReport};
use crate::network::{Network, Partition, Transit};
use crate::queue::EventSet;
use crate::setup::{self, CryptoCharge};
use crate::station::{Admission, Routes, Station, StationStats};
use crate::stats::{BatchMeans, JobWatch, LittleStats};
use fleetsim_core::faults::{self, FaultKind, ScheduledFault};

/// The wall time `SimTime::ZERO` stands for: 2026-01-01T00:00:00Z. Fixed, so JWT times and
/// record timestamps are part of the deterministic run.
pub const VIRTUAL_EPOCH_UNIX_MS: u64 = 1_767_225_600_000;

/// A refused connection or unreachable host is noticed after this long (virtual TCP connect
/// failure), so a partitioned agent's retries are paced by its own back-off, not by zero-delay
/// failures.
pub const CONNECT_FAILURE_DELAY: Duration = Duration::from_millis(100);

/// The agent id the workload's `QueueJobs` calls are recorded under (as in live mode).
pub use fleetsim_core::workload::GENERATOR_AGENT;

/// Events per agent per virtual hour the default step budget allows (a busy agent with live
/// logs makes ~20 events/s; an idle one a few per minute), plus a fixed floor.
const BUDGET_PER_AGENT_HOUR: u64 = 200_000;
const BUDGET_FLOOR: u64 = 5_000_000;
const BUDGET_PER_JOB: u64 = 1_000;

/// Options of one virtual run beyond the scenario.
#[derive(Clone, Debug, Default)]
pub struct SimOptions {
    /// Stop with an error after this many events; `None` derives a generous bound from the
    /// fleet size and run length.
    pub step_budget: Option<u64>,
}

/// What a virtual run produced.
#[derive(Clone, Debug)]
pub struct SimOutcome {
    /// The same report live mode writes, with `engine`, `trace_hash` and `emulator` filled in.
    pub report: Report,
    /// The trace hash as a number (the report carries it as hex text).
    pub trace_hash: u64,
    /// Per station: name, workers, counters, mean utilisation.
    pub stations: Vec<StationSummary>,
    /// The invariant checks.
    pub invariants: InvariantReport,
    /// Batch means of job pickup latency over the measured period: the confidence interval
    /// of `job_pickup.latency_s.mean`.
    pub pickup_batches: BatchMeans,
    /// Little's-law and utilisation-law time-averages over the measured period.
    pub little: LittleStats,
    /// What the run could not do as asked (empty today; kept for faults or settings virtual
    /// time may not implement).
    pub notes: Vec<String>,
}

/// One station's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StationSummary {
    /// The station's name from the scenario.
    pub name: String,
    /// Parallel workers (`None`: unlimited).
    pub workers: Option<u32>,
    /// Mean busy workers / workers over the measured run (0 for unlimited stations).
    pub utilisation: f64,
    /// Time-average number of waiting requests.
    pub mean_queue: f64,
    /// Mean wait before service, seconds.
    pub mean_wait_s: f64,
    /// Requests that reached the station.
    pub arrivals: u64,
    /// Requests refused with 429/503 because the queue was full.
    pub shed: u64,
    /// Longest queue seen.
    pub queue_max: u64,
}

/// Why a virtual run could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DesError {
    /// The server state machine refused its configuration.
    #[error("server configuration: {0}")]
    Server(#[from] fleetsim_core::server::ConfigError),
    /// The engine stopped early (step budget).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The scenario asks for something virtual time does not do.
    #[error("not supported in virtual time: {0}")]
    Unsupported(String),
}

/// Run `scenario` in virtual time.
pub fn simulate(scenario: &Scenario, opts: &SimOptions) -> Result<SimOutcome, DesError> {
    run(scenario, opts, None)
}

/// A callback that sees every telemetry event of a virtual run as it happens, in virtual-time
/// order (a Prometheus exporter, say). It cannot change the run.
pub type EventTap = Box<dyn FnMut(&Event)>;

/// `simulate`, handing every event to `tap` too. The same seed gives the same run and report
/// with or without a tap.
pub fn simulate_observed(
    scenario: &Scenario,
    opts: &SimOptions,
    tap: EventTap,
) -> Result<SimOutcome, DesError> {
    run(scenario, opts, Some(tap))
}

fn run(
    scenario: &Scenario,
    opts: &SimOptions,
    tap: Option<EventTap>,
) -> Result<SimOutcome, DesError> {
    if scenario.server.crypto.mode == fleetsim_scenario::CryptoMode::Real {
        return Err(DesError::Unsupported(
            "server.crypto.mode = \"real\" (virtual runs model crypto cost; use live mode to \
             measure real crypto)"
                .into(),
        ));
    }
    if scenario.server.layout != fleetsim_core::server::Layout::default() {
        return Err(DesError::Unsupported(
            "server.layout (listeners, paths and URLs exist only on the wire; use live mode)"
                .into(),
        ));
    }
    if scenario.server.deadlines != fleetsim_scenario::ServerDeadlines::default() {
        return Err(DesError::Unsupported(
            "server.deadlines (connection deadlines exist only on the wire; use live mode)".into(),
        ));
    }
    if scenario.jobs.source == fleetsim_core::workload::Source::Server {
        // In virtual time there is no "someone else" to queue the jobs the fleet would serve.
        return Err(DesError::Unsupported(
            "[jobs] source = \"server\" (jobs queued by someone else do not exist in virtual \
             time; model their load with source = \"emulator\" and an arrival rate, or with \
             source = \"pipelines\")"
                .into(),
        ));
    }
    let wall = Instant::now();
    let mut sim = Sim::new(scenario)?;
    sim.tap = tap;
    let mut engine: Engine<Ev> = Engine::new();
    sim.seed_events(engine.scheduler());
    let end = SimTime::ZERO + scenario.run.duration;
    let hours = scenario.run.duration.as_secs_f64() / 3600.0;
    let budget = opts
        .step_budget
        .unwrap_or_else(|| default_budget(scenario, hours));
    let stats = engine.run(&mut sim, end, budget)?;
    let wall_s = wall.elapsed().as_secs_f64();
    Ok(sim.finish(scenario, stats.events, stats.trace_hash, wall_s))
}

/// A generous bound on a run's events: per agent-hour, per job (a job costs a few dozen events
/// however few agents run it), and a floor. Only a livelock or a far bigger run reaches it.
fn default_budget(s: &Scenario, hours: f64) -> u64 {
    let agent_hours = f64::from(s.fleet.agents) * hours.max(0.01);
    let peak_rate = match &s.jobs.arrival {
        fleetsim_scenario::Arrival::Profile(points) => {
            points.iter().map(|p| p.rate_per_s).fold(0.0, f64::max)
        }
        other => other.rate_at(Duration::ZERO),
    };
    let jobs = peak_rate * hours * 3600.0;
    let budget = BUDGET_FLOOR as f64
        + agent_hours * BUDGET_PER_AGENT_HOUR as f64
        + jobs * BUDGET_PER_JOB as f64;
    budget.min(u64::MAX as f64) as u64
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// What happens at an instant. `agent` names the agent (or is 0 for server-side events), `arg`
/// a call slot, a timer generation or a fault index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ev {
    kind: Kind,
    agent: u32,
    arg: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// An agent is created (ramp-up) or restarted after a crash.
    AgentStart,
    /// An agent's timer (`arg` = generation; stale generations are dropped).
    AgentTimer,
    /// A request reaches the server front (`arg` = call slot).
    Arrive,
    /// A worker finishes a request; the server state machine handles it.
    ServiceDone,
    /// An answer reaches its agent.
    Deliver,
    /// The server's timer (`arg` = generation).
    ServerTimer,
    /// The workload's timer (`arg` = generation): an arrival or a cancel is due.
    WorkloadTimer,
    /// Fault `arg` starts.
    FaultStart,
    /// Fault `arg` ends.
    FaultEnd,
}

impl SimEvent for Ev {
    #[inline]
    fn trace_key(&self) -> (u8, u32) {
        (self.kind as u8, self.agent)
    }
}

fn ev(kind: Kind, agent: u32, arg: u32) -> Ev {
    Ev { kind, agent, arg }
}

// ---------------------------------------------------------------------------------------------
// Calls in flight
// ---------------------------------------------------------------------------------------------

const NIL: u32 = u32::MAX;

/// One request on its way: through the network, a station, the server, and back.
struct Call {
    /// Bumped when the slot is freed, so a stale server id never matches a new call.
    generation: u32,
    agent: u32,
    /// The agent incarnation that sent it; answers to a crashed incarnation are dropped.
    incarnation: u32,
    id: CallId,
    conn: Connection,
    op: Operation,
    /// Boxed, as is the reply: a `Request` or `ApiResponse` is ~700 bytes inline and every
    /// agent keeps two or three call slots, so inline payloads cost ~4 KB per agent.
    request: Option<Box<Request>>,
    reply: Option<Box<Result<ApiResponse, TransportError>>>,
    /// Held by the server as a long poll.
    parked: bool,
    /// The agent gave up on it (cancel or crash); the answer is dropped.
    abandoned: bool,
    station: Option<usize>,
    in_use: bool,
}

/// A slab of calls; ids handed to the server are `(generation << 32) | slot`.
#[derive(Default)]
struct Calls {
    slots: Vec<Call>,
    free: Vec<u32>,
}

impl Calls {
    fn alloc(
        &mut self,
        agent: u32,
        incarnation: u32,
        id: CallId,
        conn: Connection,
        op: Operation,
        request: Box<Request>,
    ) -> u32 {
        let fresh = |generation| Call {
            generation,
            agent,
            incarnation,
            id,
            conn,
            op,
            request: Some(request),
            reply: None,
            parked: false,
            abandoned: false,
            station: None,
            in_use: true,
        };
        match self.free.pop() {
            Some(slot) => {
                let generation = self.slots[slot as usize].generation;
                self.slots[slot as usize] = fresh(generation);
                slot
            }
            None => {
                self.slots.push(fresh(0));
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, slot: u32) {
        let c = &mut self.slots[slot as usize];
        c.generation = c.generation.wrapping_add(1);
        c.in_use = false;
        c.request = None;
        c.reply = None;
        self.free.push(slot);
    }

    fn server_id(&self, slot: u32) -> RequestId {
        (u64::from(self.slots[slot as usize].generation) << 32) | u64::from(slot)
    }

    /// The slot a server id names, if that call is still the same one.
    fn slot_of(&self, id: RequestId) -> Option<u32> {
        let slot = (id & 0xFFFF_FFFF) as u32;
        let c = self.slots.get(slot as usize)?;
        (c.in_use && u64::from(c.generation) == id >> 32).then_some(slot)
    }

    fn get(&mut self, slot: u32) -> &mut Call {
        &mut self.slots[slot as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------

/// The driver's per-agent record: the state machine plus timer bookkeeping (lazy cancellation).
struct AgentSlot {
    agent: Option<Box<Agent>>,
    /// Time of the scheduled timer event (µs), `u64::MAX` if none.
    timer_at: u64,
    /// Generation of the live timer event.
    timer_gen: u32,
    /// Bumped on each crash.
    incarnation: u32,
    /// The call slot in flight per connection (`NIL` = none).
    calls: [u32; 3],
}

fn conn_index(c: Connection) -> usize {
    match c {
        Connection::Listener => 0,
        Connection::KeepAlive => 1,
        Connection::Job => 2,
    }
}

/// Drops measurements from before the warm-up (operations that started and jobs queued before
/// it); agent states and crypto counts are always kept so the gauges stay consistent.
struct Warmup {
    until: SimTime,
    early_jobs: HashSet<u64>,
}

impl Warmup {
    fn keep(&mut self, ev: &Event) -> bool {
        if self.until == SimTime::ZERO {
            return true;
        }
        match *ev {
            Event::Op { intended, .. } => intended >= self.until,
            Event::JobQueued { request_id, at } => {
                if at < self.until {
                    self.early_jobs.insert(request_id);
                }
                at >= self.until
            }
            Event::JobPickedUp { request_id, .. } | Event::JobFinished { request_id, .. } => {
                !self.early_jobs.contains(&request_id)
            }
            _ => true,
        }
    }
}

/// The whole virtual world.
struct Sim<'s> {
    scenario: &'s Scenario,
    seed: u64,
    config: Arc<AgentConfig>,
    /// Crashed agents come back as `config.sh --replace` would.
    restart_config: Arc<AgentConfig>,
    agents: Vec<AgentSlot>,
    server: Server,
    server_timer_at: u64,
    server_timer_gen: u32,
    calls: Calls,
    stations: Vec<Station>,
    routes: Routes,
    charges: Vec<CryptoCharge>,
    network: Network,
    service_rng: Rng,
    /// Who queues and cancels which jobs when (the core machine live mode drives too).
    workload: Workload,
    workload_timer_at: u64,
    workload_timer_gen: u32,
    /// The workload's call, held while the server is stalled or down.
    workload_held: Option<(WorkloadCallId, Operation, Request)>,
    pool_id: u32,
    admin_seq: u64,
    faults: Vec<ScheduledFault>,
    /// The server processes nothing before this time (stall).
    stalled_until: SimTime,
    /// The server refuses connections before this time (restart).
    down_until: SimTime,
    recorder: Recorder,
    checker: InvariantChecker,
    warmup: Warmup,
    watch: JobWatch,
    /// Every event, warm-up included, for a live exporter (`simulate --metrics-addr`).
    tap: Option<EventTap>,
    notes: Vec<String>,
}

impl<'s> Sim<'s> {
    fn new(s: &'s Scenario) -> Result<Self, DesError> {
        let seed = s.run.seed;
        let config = Arc::new(setup::agent_config(s));
        let restart_config = Arc::new(AgentConfig {
            register_mode: RegisterMode::Replace,
            ..(*config).clone()
        });
        let server_config = setup::server_config(s);
        let lease = server_config.lease_duration;
        let server = Server::new(server_config, seed, VIRTUAL_EPOCH_UNIX_MS)?;
        let (specs, routes) = setup::stations(s);
        let charges = Operation::ALL
            .iter()
            .map(|&op| setup::crypto_charge(s, op))
            .collect();
        let mut network =
            Network::new(setup::network(s), rng::stream(seed, StreamKind::Network, 0));
        let faults = faults::schedule(s.run.seed, &s.faults);
        for f in faults.iter().filter(|f| f.kind == FaultKind::Partition) {
            let end = f.end.unwrap_or(SimTime::NEVER);
            network.add_partition(Partition {
                start: f.start,
                end,
                select: f.select.clone(),
            });
        }
        let agents = (0..s.fleet.agents)
            .map(|_| AgentSlot {
                agent: None,
                timer_at: u64::MAX,
                timer_gen: 0,
                incarnation: 0,
                calls: [NIL; 3],
            })
            .collect();
        let mut recorder = Recorder::new();
        recorder.set_fleet_size(u64::from(s.fleet.agents));
        Ok(Sim {
            scenario: s,
            seed,
            config,
            restart_config,
            agents,
            server,
            server_timer_at: u64::MAX,
            server_timer_gen: 0,
            calls: Calls::default(),
            stations: specs.into_iter().map(Station::new).collect(),
            routes,
            charges,
            network,
            service_rng: rng::stream(seed, StreamKind::Server, 1),
            workload: Workload::new(s.workload_config(admin_credential()), seed),
            workload_timer_at: u64::MAX,
            workload_timer_gen: 0,
            workload_held: None,
            pool_id: setup::pool_id(s),
            admin_seq: 0,
            faults,
            stalled_until: SimTime::ZERO,
            down_until: SimTime::ZERO,
            recorder,
            checker: InvariantChecker::new(lease, s.agent.mask_secrets),
            warmup: Warmup {
                until: SimTime::ZERO + s.run.warmup,
                early_jobs: HashSet::new(),
            },
            watch: JobWatch::new(SimTime::ZERO + s.run.warmup, SimTime::ZERO + s.run.duration),
            tap: None,
            notes: Vec::new(),
        })
    }

    /// Agent starts spread evenly over the ramp-up, the first job arrival, the faults.
    fn seed_events<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>) {
        let n = u64::from(self.scenario.fleet.agents);
        let ramp = self.scenario.fleet.ramp_up.as_micros() as u64;
        for a in 0..self.scenario.fleet.agents {
            let at = SimTime::from_micros(ramp * u64::from(a) / n.max(1));
            s.at(at, ev(Kind::AgentStart, a, 0));
        }
        self.drain_workload(s);
        for (i, f) in self.faults.iter().enumerate() {
            s.at(f.start, ev(Kind::FaultStart, 0, i as u32));
            if let Some(end) = f.end {
                s.at(end, ev(Kind::FaultEnd, 0, i as u32));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Telemetry
    // -----------------------------------------------------------------------------------------

    fn record(&mut self, ev: &Event) {
        if let Some(tap) = &mut self.tap {
            tap(ev);
        }
        self.checker.observe(ev);
        self.watch.observe(ev);
        if self.warmup.keep(ev) {
            self.recorder.record(ev);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Agents
    // -----------------------------------------------------------------------------------------

    fn start_agent<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, a: u32) {
        let slot = &mut self.agents[a as usize];
        let config = if slot.incarnation == 0 {
            self.config.clone()
        } else {
            self.restart_config.clone()
        };
        // Each incarnation draws from its own stream, so a crash does not shift other agents.
        let stream = u64::from(a) | (u64::from(slot.incarnation) << 32);
        let rng = rng::stream(self.seed, StreamKind::Agent, stream);
        slot.agent = Some(Box::new(Agent::new(
            a,
            config,
            None,
            rng,
            s.now(),
            VIRTUAL_EPOCH_UNIX_MS,
        )));
        self.drain_agent(s, a);
    }

    /// The drain contract: send every output, record every event, re-arm the timer.
    fn drain_agent<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, a: u32) {
        // Held out of its slot while its outputs are sent (sending reads only the slot's
        // bookkeeping, never the agent), so each output moves once, straight into its call.
        let Some(mut agent) = self.agents[a as usize].agent.take() else {
            return;
        };
        while let Some(out) = agent.poll_transmit() {
            match out {
                // The endpoint is not read: the modelled server is the whole service (its
                // token service, collection and plan hub alike), so every origin a call names
                // reaches the same server model; only the live driver opens per-origin
                // connections.
                AgentOutput::Send {
                    id,
                    conn,
                    op,
                    request,
                    endpoint: _,
                } => self.send(s, a, id, conn, op, request),
                AgentOutput::Cancel { id, conn } => self.cancel(s.now(), a, id, conn),
            }
        }
        while let Some(e) = agent.poll_event() {
            self.record(&e);
        }
        self.agents[a as usize].agent = Some(agent);
        self.arm_agent_timer(s, a);
    }

    /// Lazy cancellation: only an earlier deadline schedules a new event (with a new
    /// generation); a later one lets the old event fire, which then re-arms.
    fn arm_agent_timer<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, a: u32) {
        let slot = &mut self.agents[a as usize];
        let Some(agent) = slot.agent.as_ref() else {
            return;
        };
        if let Some((at, _)) = agent.poll_timeout() {
            let at = at.max(s.now()).as_micros();
            if at < slot.timer_at {
                slot.timer_gen = slot.timer_gen.wrapping_add(1);
                slot.timer_at = at;
                s.at(
                    SimTime::from_micros(at),
                    ev(Kind::AgentTimer, a, slot.timer_gen),
                );
            }
        }
    }

    fn agent_timer<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, a: u32, generation: u32) {
        let now = s.now();
        let slot = &mut self.agents[a as usize];
        if generation != slot.timer_gen || slot.timer_at == u64::MAX {
            return;
        }
        slot.timer_at = u64::MAX;
        let Some(agent) = slot.agent.as_mut() else {
            return;
        };
        if agent.poll_timeout().is_some_and(|(at, _)| at <= now) {
            agent.handle_timeout(now);
        }
        self.drain_agent(s, a);
    }

    fn send<Q: EventSet<Ev>>(
        &mut self,
        s: &mut Scheduler<Ev, Q>,
        a: u32,
        id: CallId,
        conn: Connection,
        op: Operation,
        request: Box<Request>,
    ) {
        let incarnation = self.agents[a as usize].incarnation;
        let slot = self.calls.alloc(a, incarnation, id, conn, op, request);
        self.agents[a as usize].calls[conn_index(conn)] = slot;
        // The agent signs or unwraps before the request leaves (modelled crypto).
        let prep = self.charges[op as usize].agent;
        match self.transit(s.now(), a) {
            Transit::Deliver(d) => s.after(prep + d, ev(Kind::Arrive, a, slot)),
            Transit::Lost(d) => {
                self.calls.get(slot).reply = Some(Box::new(Err(TransportError::Lost)));
                s.after(prep + d, ev(Kind::Deliver, a, slot));
            }
            Transit::Unreachable => {
                self.calls.get(slot).reply = Some(Box::new(Err(TransportError::Connect)));
                s.after(CONNECT_FAILURE_DELAY, ev(Kind::Deliver, a, slot));
            }
        }
    }

    /// The agent gave up on a call: a parked poll is withdrawn from the server (the client
    /// closed its connection); anything else finishes its trip and is dropped on delivery.
    fn cancel(&mut self, now: SimTime, a: u32, id: CallId, conn: Connection) {
        let slot = self.agents[a as usize].calls[conn_index(conn)];
        if slot == NIL || self.calls.get(slot).id != id {
            return;
        }
        self.agents[a as usize].calls[conn_index(conn)] = NIL;
        self.abandon(now, slot);
    }

    fn abandon(&mut self, now: SimTime, slot: u32) {
        let call = self.calls.get(slot);
        call.abandoned = true;
        if call.parked {
            let id = self.calls.server_id(slot);
            self.server.handle_disconnect(now, id);
            self.calls.release(slot);
        }
    }

    fn deliver<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, a: u32, slot: u32) {
        if a == GENERATOR_AGENT {
            return self.deliver_operator(s, slot);
        }
        let call = self.calls.get(slot);
        let (id, conn, abandoned, incarnation) =
            (call.id, call.conn, call.abandoned, call.incarnation);
        let reply = call.reply.take();
        self.calls.release(slot);
        let agent_slot = &mut self.agents[a as usize];
        if abandoned || incarnation != agent_slot.incarnation {
            return;
        }
        if agent_slot.calls[conn_index(conn)] == slot {
            agent_slot.calls[conn_index(conn)] = NIL;
        }
        let Some(agent) = agent_slot.agent.as_mut() else {
            return;
        };
        match reply.map(|r| *r) {
            Some(Ok(resp)) => agent.handle_response(s.now(), id, resp),
            Some(Err(e)) => agent.handle_transport_error(s.now(), id, e),
            None => agent.handle_transport_error(s.now(), id, TransportError::Reset),
        }
        self.drain_agent(s, a);
    }

    // -----------------------------------------------------------------------------------------
    // Server front and stations
    // -----------------------------------------------------------------------------------------

    fn arrive<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, slot: u32) {
        let now = s.now();
        if now < self.down_until {
            self.reply(s, slot, Err(TransportError::Connect));
            return;
        }
        let op = self.calls.get(slot).op;
        match self.routes.station(op) {
            None => {
                let d = self.charges[op as usize].server;
                s.after(d, ev(Kind::ServiceDone, self.calls.get(slot).agent, slot));
            }
            Some(i) => {
                self.calls.get(slot).station = Some(i);
                match self.stations[i].arrive(now, slot) {
                    Admission::Start => self.start_service(s, i, slot),
                    Admission::Queued => {}
                    Admission::Shed(kind) => {
                        let msg =
                            format!("shed by station {}: queue full", self.stations[i].spec.name);
                        self.calls.get(slot).station = None;
                        self.reply(s, slot, Ok(ApiResponse::Error(ApiError::new(kind, msg))));
                    }
                }
            }
        }
    }

    fn start_service<Q: EventSet<Ev>>(
        &mut self,
        s: &mut Scheduler<Ev, Q>,
        station: usize,
        slot: u32,
    ) {
        let call = self.calls.get(slot);
        let (op, agent) = (call.op, call.agent);
        let service = self.stations[station]
            .spec
            .service_for(op)
            .sample(&mut self.service_rng);
        let d = service + self.charges[op as usize].server;
        s.after(d, ev(Kind::ServiceDone, agent, slot));
    }

    fn service_done<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, slot: u32) {
        let now = s.now();
        if now < self.stalled_until {
            // A stalled server holds its workers; the request completes when it resumes.
            let agent = self.calls.get(slot).agent;
            s.at(self.stalled_until, ev(Kind::ServiceDone, agent, slot));
            return;
        }
        if let Some(i) = self.calls.get(slot).station.take()
            && let Some(next) = self.stations[i].finish(now)
        {
            self.start_service(s, i, next);
        }
        if now < self.down_until {
            self.reply(s, slot, Err(TransportError::Reset));
            return;
        }
        let id = self.calls.server_id(slot);
        let Some(request) = self.calls.get(slot).request.take() else {
            return;
        };
        match self.server.handle_request(now, id, *request) {
            Handled::Respond(resp) => self.reply(s, slot, Ok(resp)),
            // Operator routes never park; if one did, the call fails as far as the workload
            // can tell (as on the direct path).
            Handled::Parked if self.calls.get(slot).agent == GENERATOR_AGENT => {
                self.server.handle_disconnect(now, id);
                self.reply(s, slot, Err(TransportError::Reset));
            }
            Handled::Parked => {
                let call = self.calls.get(slot);
                call.parked = true;
                if call.abandoned {
                    // Cancelled while queued: the client is already gone.
                    self.server.handle_disconnect(now, id);
                    self.calls.release(slot);
                }
            }
        }
        self.drain_server(s);
    }

    /// Send an answer back through the network.
    fn reply<Q: EventSet<Ev>>(
        &mut self,
        s: &mut Scheduler<Ev, Q>,
        slot: u32,
        reply: Result<ApiResponse, TransportError>,
    ) {
        let call = self.calls.get(slot);
        let agent = call.agent;
        call.parked = false;
        let (reply, delay) = match self.transit(s.now(), agent) {
            Transit::Deliver(d) => (reply, d),
            Transit::Lost(d) => (Err(TransportError::Lost), d),
            Transit::Unreachable => (Err(TransportError::Reset), Duration::ZERO),
        };
        self.calls.get(slot).reply = Some(Box::new(reply));
        s.after(delay, ev(Kind::Deliver, agent, slot));
    }

    fn drain_server<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>) {
        while let Some(ServerOutput::Respond { id, response }) = self.server.poll_output() {
            if let Some(slot) = self.calls.slot_of(id) {
                self.reply(s, slot, Ok(response));
            }
        }
        while let Some(e) = self.server.poll_event() {
            self.record(&e);
        }
        if let Some(at) = self.server.poll_timeout() {
            let at = at.max(s.now()).as_micros();
            if at < self.server_timer_at {
                self.server_timer_gen = self.server_timer_gen.wrapping_add(1);
                self.server_timer_at = at;
                s.at(
                    SimTime::from_micros(at),
                    ev(Kind::ServerTimer, 0, self.server_timer_gen),
                );
            }
        }
    }

    fn server_timer<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, generation: u32) {
        if generation != self.server_timer_gen || self.server_timer_at == u64::MAX {
            return;
        }
        self.server_timer_at = u64::MAX;
        let now = s.now();
        if now < self.stalled_until.max(self.down_until) {
            // Nothing moves inside a stopped server; its timers run when it resumes.
            self.server_timer_gen = self.server_timer_gen.wrapping_add(1);
            self.server_timer_at = self.stalled_until.max(self.down_until).as_micros();
            let at = SimTime::from_micros(self.server_timer_at);
            s.at(at, ev(Kind::ServerTimer, 0, self.server_timer_gen));
            return;
        }
        self.server.handle_timeout(now);
        self.drain_server(s);
    }

    // -----------------------------------------------------------------------------------------
    // Jobs
    // -----------------------------------------------------------------------------------------

    /// The workload's drain contract: hand each call to the server (or hold it while the server
    /// is stalled or down), feed the answer back, record every event, re-arm the timer.
    fn drain_workload<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>) {
        let now = s.now();
        let mut served = false;
        loop {
            if self.workload_held.is_none()
                && let Some(WorkloadOutput::Send { id, op, request }) =
                    self.workload.poll_transmit()
            {
                self.workload_held = Some((id, op, request));
            }
            if now < self.stalled_until.max(self.down_until) {
                break;
            }
            let Some((id, op, request)) = self.workload_held.take() else {
                break;
            };
            if op == Operation::QueueJobs && self.routes.station(op).is_some() {
                // Answered through `deliver`; the workload sends nothing more meanwhile.
                self.send_operator(s, id, op, Box::new(request));
                continue;
            }
            self.admin_seq += 1;
            served = true;
            match self
                .server
                .handle_request(now, admin_id(self.admin_seq), request)
            {
                Handled::Respond(resp) => self.workload.handle_response(now, id, resp),
                // Admin routes never park; if one did, the call failed as far as the workload
                // can tell.
                _ => self.workload.handle_failure(now, id, Outcome::Protocol),
            }
        }
        while let Some(e) = self.workload.poll_event() {
            self.record(&e);
        }
        if served {
            self.drain_server(s);
        }
        if let Some((at, _)) = self.workload.poll_timeout() {
            let at = at.max(now).as_micros();
            if at < self.workload_timer_at {
                self.workload_timer_gen = self.workload_timer_gen.wrapping_add(1);
                self.workload_timer_at = at;
                s.at(
                    SimTime::from_micros(at),
                    ev(Kind::WorkloadTimer, 0, self.workload_timer_gen),
                );
            }
        }
    }

    /// The operator's call on the agents' path (see the module note); its answer comes back
    /// through [`Sim::deliver`] as [`GENERATOR_AGENT`]'s.
    fn send_operator<Q: EventSet<Ev>>(
        &mut self,
        s: &mut Scheduler<Ev, Q>,
        id: WorkloadCallId,
        op: Operation,
        request: Box<Request>,
    ) {
        let slot = self
            .calls
            .alloc(GENERATOR_AGENT, 0, id, Connection::Job, op, request);
        match self.transit(s.now(), GENERATOR_AGENT) {
            Transit::Deliver(d) => s.after(d, ev(Kind::Arrive, GENERATOR_AGENT, slot)),
            Transit::Lost(d) => {
                self.calls.get(slot).reply = Some(Box::new(Err(TransportError::Lost)));
                s.after(d, ev(Kind::Deliver, GENERATOR_AGENT, slot));
            }
            Transit::Unreachable => unreachable!("partitions never cut the operator"),
        }
    }

    /// The operator's answer (or failure) reaches the workload.
    fn deliver_operator<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, slot: u32) {
        let now = s.now();
        let call = self.calls.get(slot);
        let id = call.id;
        let reply = call.reply.take();
        self.calls.release(slot);
        match reply.map(|r| *r) {
            Some(Ok(resp)) => self.workload.handle_response(now, id, resp),
            Some(Err(e)) => self.workload.handle_transport_error(now, id, e),
            None => self
                .workload
                .handle_transport_error(now, id, TransportError::Reset),
        }
        self.drain_workload(s);
    }

    /// The network's verdict on one message of `agent` (or of the operator, whom partitions
    /// never cut: they model agents' networks).
    fn transit(&mut self, now: SimTime, agent: u32) -> Transit {
        if agent == GENERATOR_AGENT {
            self.network.transit_uncut()
        } else {
            self.network.transit(now, agent)
        }
    }

    fn workload_timer<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, generation: u32) {
        if generation != self.workload_timer_gen || self.workload_timer_at == u64::MAX {
            return;
        }
        self.workload_timer_at = u64::MAX;
        let now = s.now();
        if self
            .workload
            .poll_timeout()
            .is_some_and(|(at, _)| at <= now)
        {
            self.workload.handle_timeout(now);
        }
        self.drain_workload(s);
    }

    // -----------------------------------------------------------------------------------------
    // Faults
    // -----------------------------------------------------------------------------------------

    fn fault_start<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, i: usize) {
        let f = self.faults[i].clone();
        let now = s.now();
        // The report lists every fault, as a live run's does (same schedule, same agents).
        let agents = if f.kind.server_side() {
            0
        } else {
            (0..self.agents.len() as u32)
                .filter(|&a| f.select.contains(a))
                .count() as u32
        };
        self.record(&Event::Fault {
            kind: f.kind,
            start: now,
            end: f.end,
            agents,
        });
        match f.kind {
            FaultKind::AgentCrash => {
                for a in 0..self.agents.len() as u32 {
                    if f.select.contains(a) {
                        self.crash(now, a);
                    }
                }
            }
            // Partitions live in the network model from the start.
            FaultKind::Partition => {}
            FaultKind::ServerStall => {
                self.stalled_until = self.stalled_until.max(f.end.unwrap_or(now));
            }
            FaultKind::ServerRestart => self.restart_server(s, f.end.unwrap_or(now)),
            FaultKind::TokenExpiryStorm => {
                // Agent names are `{name_prefix}{index}`: the core selects by the index.
                let prefix = self.config.name_prefix.clone();
                self.server
                    .expire_listener_tokens(now, |name| f.select.contains_name(&prefix, name));
            }
        }
    }

    fn fault_end<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, i: usize) {
        let f = self.faults[i].clone();
        match f.kind {
            FaultKind::AgentCrash => {
                for a in 0..self.agents.len() as u32 {
                    if f.select.contains(a) && self.agents[a as usize].agent.is_none() {
                        self.start_agent(s, a);
                    }
                }
            }
            FaultKind::ServerStall | FaultKind::ServerRestart => {
                if s.now() >= self.stalled_until.max(self.down_until) {
                    self.drain_workload(s);
                    self.server_timer_at = u64::MAX;
                    self.drain_server(s);
                }
            }
            FaultKind::Partition | FaultKind::TokenExpiryStorm => {}
        }
    }

    /// Agent `a` dies: no goodbye, its connections drop (the server sees parked polls go), its
    /// state machine is gone; the job it ran keeps its lease until the server requeues it.
    fn crash(&mut self, now: SimTime, a: u32) {
        let slot = &mut self.agents[a as usize];
        let Some(agent) = slot.agent.take() else {
            return;
        };
        slot.incarnation += 1;
        slot.timer_gen = slot.timer_gen.wrapping_add(1);
        slot.timer_at = u64::MAX;
        let calls = std::mem::replace(&mut slot.calls, [NIL; 3]);
        for c in calls.into_iter().filter(|&c| c != NIL) {
            self.abandon(now, c);
        }
        let from = agent.state();
        if from != AgentState::Offline {
            self.record(&Event::AgentState {
                agent: a,
                from,
                to: AgentState::Offline,
                at: now,
            });
        }
        self.checker.agent_crashed(a);
    }

    /// The server restarts: every parked poll and every queued request is dropped with a
    /// connection reset, and connections are refused until `up_at`. Registrations, jobs and
    /// leases survive (they live in the service's database).
    fn restart_server<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, up_at: SimTime) {
        let now = s.now();
        self.down_until = self.down_until.max(up_at);
        let parked: Vec<u32> = (0..self.calls.slots.len() as u32)
            .filter(|&i| self.calls.slots[i as usize].in_use && self.calls.slots[i as usize].parked)
            .collect();
        for slot in parked {
            let id = self.calls.server_id(slot);
            self.server.handle_disconnect(now, id);
            self.reply(s, slot, Err(TransportError::Reset));
        }
        for i in 0..self.stations.len() {
            for slot in self.stations[i].drain_waiting(now) {
                self.calls.get(slot).station = None;
                self.reply(s, slot, Err(TransportError::Reset));
            }
        }
        self.drain_server(s);
    }

    // -----------------------------------------------------------------------------------------
    // The end
    // -----------------------------------------------------------------------------------------

    fn finish(mut self, s: &Scenario, events: u64, trace_hash: u64, wall_s: f64) -> SimOutcome {
        let end = SimTime::ZERO + s.run.duration;
        let measured = s.run.duration.saturating_sub(s.run.warmup);
        // Cancels due after the end are never sent (counted, as in live mode).
        self.workload.stop(end);
        let stats = self.server.stats();
        let jobs = self.list_jobs(end);
        let invariants = self.checker.finish(&jobs, stats.leaked_secrets);
        self.recorder.set_server_stats(stats.clone());
        self.recorder.set_jobs_lost(invariants.jobs_lost);
        // Jobs the workload did not queue (pipeline runs' jobs): pickup on the server's clock.
        for job in &jobs {
            if let Some(latency) = fleetsim_core::workload::server_pickup(job) {
                self.recorder.record_server_pickup(job.request_id, latency);
            }
        }
        if let fleetsim_core::workload::Source::Pipelines(_) = s.jobs.source {
            self.recorder.set_runs(self.workload.stats().runs.into());
        }
        let meta = RunMeta {
            mode: Mode::Virtual,
            seed: s.run.seed,
            wall_s,
            scenario: s.run.name.clone(),
            started_at: None,
            duration_s: measured.as_secs_f64(),
            ..RunMeta::default()
        };
        let mut report = Report::from_recorder(&self.recorder, meta);
        report.engine = Some(EngineStats {
            events,
            events_per_s: if wall_s > 0.0 {
                events as f64 / wall_s
            } else {
                0.0
            },
            virtual_s: s.run.duration.as_secs_f64(),
            wall_s,
        });
        report.trace_hash = Some(format!("{trace_hash:016x}"));
        report.emulator = Some(stats);
        report.evaluate_thresholds(&s.thresholds);
        let elapsed = end - SimTime::ZERO;
        let stations = self
            .stations
            .iter_mut()
            .map(|st| {
                st.advance(end);
                summarise(st.spec.name.clone(), st.spec.workers, st.stats(), elapsed)
            })
            .collect();
        let little = self.watch.little(end);
        let pickup_batches = self.watch.batches;
        SimOutcome {
            report,
            trace_hash,
            stations,
            invariants,
            pickup_batches,
            little,
            notes: self.notes,
        }
    }

    /// The server's job listing, through its admin route.
    fn list_jobs(&mut self, now: SimTime) -> Vec<TaskAgentJobRequest> {
        self.admin_seq += 1;
        let request = Request {
            credential: admin_credential(),
            call: ApiRequest::ListJobRequests {
                pool_id: self.pool_id,
            },
        };
        match self
            .server
            .handle_request(now, admin_id(self.admin_seq), request)
        {
            Handled::Respond(ApiResponse::JobRequests(list)) => list.value,
            _ => Vec::new(),
        }
    }
}

fn summarise(
    name: String,
    workers: Option<u32>,
    st: &StationStats,
    elapsed: Duration,
) -> StationSummary {
    StationSummary {
        name,
        workers,
        utilisation: workers.map_or(0.0, |w| st.mean_busy(elapsed) / f64::from(w.max(1))),
        mean_queue: st.mean_queue(elapsed),
        mean_wait_s: st.mean_wait_s(),
        arrivals: st.arrivals,
        shed: st.shed,
        queue_max: st.queue_max,
    }
}

/// The operator's credential for admin routes.
fn admin_credential() -> Credential {
    Credential::Basic {
        user: "fleetsim".into(),
        password: setup::VIRTUAL_PAT.into(),
    }
}

/// Admin requests use ids with the top bit set, apart from every call slot's id.
fn admin_id(seq: u64) -> RequestId {
    (1 << 63) | seq
}

impl Model<Ev> for Sim<'_> {
    fn handle<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, e: Ev) {
        match e.kind {
            Kind::AgentStart => self.start_agent(s, e.agent),
            Kind::AgentTimer => self.agent_timer(s, e.agent, e.arg),
            Kind::Arrive => self.arrive(s, e.arg),
            Kind::ServiceDone => self.service_done(s, e.arg),
            Kind::Deliver => self.deliver(s, e.agent, e.arg),
            Kind::ServerTimer => self.server_timer(s, e.arg),
            Kind::WorkloadTimer => self.workload_timer(s, e.arg),
            Kind::FaultStart => self.fault_start(s, e.arg as usize),
            Kind::FaultEnd => self.fault_end(s, e.arg as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_small() {
        // Goal: the event set holds 12-byte events (des.md: keep them 16–24 bytes with time).
        assert_eq!(std::mem::size_of::<Ev>(), 12);
    }

    #[test]
    fn server_ids_reject_reused_slots() {
        // Goal: a parked poll's id stops matching once its slot is reused by another call.
        let mut calls = Calls::default();
        let req = Request {
            credential: Credential::Anonymous,
            call: ApiRequest::ConnectionData,
        };
        let a = calls.alloc(
            0,
            0,
            1,
            Connection::Listener,
            Operation::ConnectionData,
            Box::new(req.clone()),
        );
        let id = calls.server_id(a);
        assert_eq!(calls.slot_of(id), Some(a));
        calls.release(a);
        let b = calls.alloc(
            0,
            0,
            2,
            Connection::Listener,
            Operation::ConnectionData,
            Box::new(req),
        );
        assert_eq!(a, b);
        assert_eq!(calls.slot_of(id), None);
        assert_eq!(calls.slot_of(calls.server_id(b)), Some(b));
        assert_eq!(calls.slot_of(admin_id(1)), None);
    }
}
