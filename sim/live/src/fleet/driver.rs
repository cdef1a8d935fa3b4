//! One agent, driven in real time: a tokio task that moves the core `Agent`'s calls onto HTTP
//! connections and its answers, timers and events back.
//!
//! The loop is the agent's drain contract and nothing more: after every input, drain
//! `poll_transmit` (start or cancel calls), drain `poll_event` (to the recorder), then wait for
//! whichever comes first — an answer on one of the three connections, the agent's next timer,
//! the run's stop signal, or the drain deadline after it. Each connection holds at most one call
//! (the agent guarantees it), so a call is a boxed future kept in that connection's slot and
//! polled in place: no task per call, no locks.
//!
//! Time: `SimTime` is microseconds since the run's start `Instant`; a timer that fires is handled
//! at no earlier than its deadline, so the agent never sees time run backwards.
//!
//! Origins: every call names its endpoint; `codec::resolve` gives its origin and request. Each
//! of an agent's three connection slots keeps at most one open connection, to its *home*
//! origin: the target for the listener and keep-alive slots, and for the job slot the origin of
//! the job's plan hub (`SystemVssConnection`). A call elsewhere (the token exchange at
//! `authorizationUrl`, a lock renewal while the plan hub is on another host) goes on its own
//! connection, closed after the call, while the home connection waits beside it — as the real
//! agent's OAuth token client and the listener's renewal client are separate from the worker's.
//! Clients per origin come from the fleet-wide, bounded [`Origins`] registry.
//!
//! This module makes no protocol decisions: requests are encoded and answers decoded with
//! `fleetsim_core::codec`; what to send and when is the agent's business.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::agent::{Agent, AgentConfig, AgentOutput, CallId, Connection};
use fleetsim_core::api::{ApiResponse, Endpoint, Request};
use fleetsim_core::codec;
use fleetsim_core::crypto::PrivateKey;
use fleetsim_core::event::Event;
use fleetsim_core::event::TransportError;
use fleetsim_core::ops::AgentState;
use fleetsim_core::rng::{self, StreamKind};
use fleetsim_core::wire::WireRequest;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::faults::{AgentCondition, AgentFaults};
use super::origins::{OriginIndex, Origins, Route, TARGET};
use crate::client::{self, ClientError, Encoded, HttpClient};

/// How agents reach the target and every other origin the server names.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    origins: Arc<Origins>,
}

impl Transport {
    /// Each agent opens its own connections (listener, keep-alive, job), like the real agent.
    pub(crate) fn per_agent(http: &Arc<HttpClient>) -> Result<Transport, ClientError> {
        let route = Route::Direct(Arc::clone(http));
        Ok(Transport {
            origins: Arc::new(Origins::new(http, route, None)?),
        })
    }

    /// Agents share a bounded pool of `size` connections per origin.
    pub(crate) fn pooled(http: &Arc<HttpClient>, size: usize) -> Result<Transport, ClientError> {
        let route = Route::Pooled(Arc::new(http.pool(size)));
        Ok(Transport {
            origins: Arc::new(Origins::new(http, route, Some(size))?),
        })
    }
}

/// The run's clock: `SimTime` zero is `start`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub(crate) fn new(start: Instant) -> Clock {
        Clock { start }
    }

    /// Now, as run time.
    pub(crate) fn now(&self) -> SimTime {
        SimTime::from_micros(u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The instant of run time `t`.
    pub(crate) fn instant(&self, t: SimTime) -> Instant {
        self.start + Duration::from_micros(t.as_micros())
    }
}

/// An open connection and the origin it goes to.
struct Kept {
    origin: OriginIndex,
    conn: client::Connection,
}

/// A call's end: the decoded answer or the transport failure, and the connection back.
struct CallDone {
    id: CallId,
    result: Result<ApiResponse, ClientError>,
    conn: Option<Kept>,
}

type CallFuture = Pin<Box<dyn Future<Output = CallDone> + Send>>;

/// One of the agent's three connections.
enum Slot {
    /// No call in flight; the connection to the slot's home origin, kept open between calls.
    Idle(Option<Kept>),
    /// Call `id` in flight; `parked` is the home connection while the call uses another one.
    Busy {
        id: CallId,
        call: CallFuture,
        parked: Option<Kept>,
    },
}

impl Slot {
    fn is_idle(&self) -> bool {
        matches!(self, Slot::Idle(_))
    }
}

/// Slot of the keep-alive connection.
const KEEPALIVE_SLOT: usize = 1;
/// Slot of the job connection.
const JOB_SLOT: usize = 2;

fn slot_index(conn: Connection) -> usize {
    match conn {
        Connection::Listener => 0,
        Connection::KeepAlive => KEEPALIVE_SLOT,
        Connection::Job => JOB_SLOT,
    }
}

/// What a crashed agent comes back as: a new incarnation registering with `--replace` (as a
/// reinstalled agent does), its own RNG stream per incarnation (as in virtual time), the same key.
#[derive(Clone)]
pub(crate) struct Rebirth {
    pub(crate) config: Arc<AgentConfig>,
    pub(crate) key: Option<Arc<PrivateKey>>,
    pub(crate) seed: u64,
    pub(crate) epoch_unix_ms: u64,
}

/// Everything one agent's task owns.
pub(crate) struct AgentTask {
    pub(crate) agent: Agent,
    /// This agent's crash and partition windows (`fleet::faults`).
    pub(crate) faults: AgentFaults,
    pub(crate) rebirth: Rebirth,
    pub(crate) clock: Clock,
    pub(crate) transport: Transport,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) stop: watch::Receiver<bool>,
    /// After the stop signal, how long the agent may take to delete its session.
    pub(crate) drain: Duration,
    /// Close the keep-alive connection after each keep-alive call (descriptor budget).
    pub(crate) close_keepalive: bool,
}

/// The agent's three connection slots and each one's home origin.
struct Slots {
    slots: [Slot; 3],
    home: [OriginIndex; 3],
}

impl Slots {
    /// Three idle slots without connections, each at home on the target.
    fn new() -> Slots {
        Slots {
            slots: [Slot::Idle(None), Slot::Idle(None), Slot::Idle(None)],
            home: [TARGET; 3],
        }
    }

    fn all_idle(&self) -> bool {
        self.slots.iter().all(Slot::is_idle)
    }

    /// Call `done` on slot `index` ended: keep its connection when it goes to the slot's home
    /// (unless `keep` is false), else put the parked home connection back.
    fn finish(&mut self, index: usize, done: Option<Kept>, keep: bool) {
        let parked = match std::mem::replace(&mut self.slots[index], Slot::Idle(None)) {
            Slot::Busy { parked, .. } => parked,
            Slot::Idle(kept) => kept,
        };
        let done = done.filter(|k| keep && k.origin == self.home[index]);
        self.slots[index] = Slot::Idle(done.or(parked));
    }
}

impl AgentTask {
    /// Drive the agent until it stops (after the stop signal and its graceful shutdown) or the
    /// drain deadline passes.
    // Not an `async fn`: rustc stores an async fn's argument twice in its future (the argument,
    // and the body's copy of it), ~600 bytes more in every agent's task (measured with
    // `size_of`: 2,152 bytes as an `async fn`, 1,544 as this block).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its argument twice"
    )]
    pub(crate) fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let mut slots = Slots::new();
            let mut drain_deadline: Option<Instant> = None;
            if *self.stop.borrow_and_update() {
                self.agent.shutdown(self.clock.now());
                drain_deadline = Some(Instant::now() + self.drain);
            }
            let mut condition = AgentCondition::default();
            let mut incarnation = 0u32;
            // One timer for the agent's next timer, the next fault edge and the drain deadline,
            // whichever comes first, kept across turns and moved only when that instant changes:
            // one timer entry per agent instead of three new ones per turn (memory in every
            // agent's task, and timer-wheel work on every answer).
            let timer = tokio::time::sleep_until(Instant::now());
            tokio::pin!(timer);
            loop {
                if !condition.down {
                    self.drain_outputs(&mut slots, condition.cut);
                }
                if !self.drain_events().await {
                    return;
                }
                if self.agent.is_stopped() && slots.all_idle() {
                    return;
                }
                // Fault edges stop mattering once the agent drains.
                let fault_at = self.faults.next_edge().filter(|_| drain_deadline.is_none());
                let wake = if condition.down {
                    None
                } else {
                    self.agent.poll_timeout().map(|(at, _)| at)
                };
                let first = [
                    wake.map(|t| self.clock.instant(t)),
                    fault_at.map(|t| self.clock.instant(t)),
                    drain_deadline,
                ]
                .into_iter()
                .flatten()
                .min();
                if let Some(at) = first
                    && timer.deadline() != at
                {
                    timer.as_mut().reset(at);
                }
                tokio::select! {
                    (index, done) = poll_fn(|cx| poll_calls(&mut slots.slots, cx)) => {
                        let keep = !(self.close_keepalive && index == KEEPALIVE_SLOT);
                        slots.finish(index, done.conn, keep);
                        let now = self.clock.now();
                        match done.result {
                            Ok(resp) => self.agent.handle_response(now, done.id, resp),
                            Err(e) => self.agent.handle_transport_error(now, done.id, e.transport()),
                        }
                    }
                    () = &mut timer, if first.is_some() => {
                        let passed = |at: Instant| at <= timer.deadline();
                        if drain_deadline.is_some_and(passed) {
                            return;
                        }
                        if let Some(edge) = fault_at.filter(|&t| passed(self.clock.instant(t))) {
                            // A fault edge and an agent timer at the same instant: the edge first,
                            // the timer on the next turn (its deadline has passed, so at once).
                            let next = self.faults.apply(edge);
                            let now = self.clock.now().max(edge);
                            let gone = self.change_condition(
                                &mut slots, condition, next, now, &mut incarnation,
                            );
                            condition = next;
                            if let Some(ev) = gone
                                && !self.send_event(ev).await
                            {
                                return;
                            }
                        } else if let Some(at) = wake.filter(|&t| passed(self.clock.instant(t))) {
                            // Never hand the agent a time before the deadline it asked for.
                            let now = self.clock.now().max(at);
                            self.agent.handle_timeout(now);
                        }
                    }
                    changed = self.stop.changed(), if drain_deadline.is_none() => {
                        // A dropped sender means the run is gone: stop the same way.
                        if changed.is_err() || *self.stop.borrow_and_update() {
                            if condition.down {
                                // A crashed agent has no session to delete.
                                return;
                            }
                            drain_deadline = Some(Instant::now() + self.drain);
                            self.agent.shutdown(self.clock.now());
                        }
                    }
                }
            }
        }
    }

    /// Enter or leave a crash or a partition at `now`. A crash drops the state machine and every
    /// connection without a word (the agent is Offline to the recorder); its end starts the next
    /// incarnation. A partition drops every connection: calls in flight fail as resets, and
    /// calls while it lasts fail to connect (`start_call`). Returns the crashed agent's move to
    /// Offline, for the recorder.
    #[must_use]
    fn change_condition(
        &mut self,
        slots: &mut Slots,
        from: AgentCondition,
        to: AgentCondition,
        now: SimTime,
        incarnation: &mut u32,
    ) -> Option<Event> {
        let mut gone = None;
        if to.down && !from.down {
            *slots = Slots::new();
            let state = self.agent.state();
            if state != AgentState::Offline {
                gone = Some(Event::AgentState {
                    agent: self.agent.index(),
                    from: state,
                    to: AgentState::Offline,
                    at: now,
                });
            }
        }
        if !to.down && from.down {
            *incarnation += 1;
            let index = self.agent.index();
            // Each incarnation draws from its own stream, as in virtual time.
            let stream = u64::from(index) | (u64::from(*incarnation) << 32);
            let r = &self.rebirth;
            self.agent = Agent::new(
                index,
                Arc::clone(&r.config),
                r.key.clone(),
                rng::stream(r.seed, StreamKind::Agent, stream),
                now,
                r.epoch_unix_ms,
            );
            *slots = Slots::new();
        }
        if to.cut && !from.cut && !to.down {
            let mut failed = Vec::new();
            for slot in &mut slots.slots {
                if let Slot::Busy { id, .. } = slot {
                    failed.push(*id);
                }
                *slot = Slot::Idle(None);
            }
            slots.home = [TARGET; 3];
            for id in failed {
                self.agent
                    .handle_transport_error(now, id, TransportError::Reset);
            }
        }
        gone
    }

    /// Start every call the agent asks for and drop every call it cancels. Then, when the agent
    /// has no job, close its job connection: the real agent's job calls come from a worker
    /// process that exits with the job, taking its connections along. `cut`: a partition holds
    /// this agent, so every call fails to connect.
    fn drain_outputs(&mut self, slots: &mut Slots, cut: bool) {
        self.start_and_cancel(slots, cut);
        if self.agent.state() != AgentState::Busy
            && let Slot::Idle(conn @ Some(_)) = &mut slots.slots[JOB_SLOT]
        {
            *conn = None;
            slots.home[JOB_SLOT] = TARGET;
        }
    }

    fn start_and_cancel(&mut self, slots: &mut Slots, cut: bool) {
        while let Some(out) = self.agent.poll_transmit() {
            match out {
                AgentOutput::Send {
                    id,
                    conn,
                    request,
                    endpoint,
                    ..
                } => {
                    let index = slot_index(conn);
                    let kept = match std::mem::replace(&mut slots.slots[index], Slot::Idle(None)) {
                        Slot::Idle(kept) => kept,
                        // The agent promises one call per connection; if that ever breaks, the
                        // older call is dropped rather than two sharing a socket.
                        Slot::Busy { parked, .. } => parked,
                    };
                    let (call, parked) = if cut {
                        (partitioned(id), None)
                    } else {
                        self.start_call(kept, &mut slots.home[index], index, id, *request, endpoint)
                    };
                    slots.slots[index] = Slot::Busy { id, call, parked };
                }
                AgentOutput::Cancel { id, conn } => {
                    let index = slot_index(conn);
                    if let Slot::Busy {
                        id: busy, parked, ..
                    } = &mut slots.slots[index]
                        && *busy == id
                    {
                        // Dropping the future drops its connection: the server sees the client
                        // go. A parked home connection was not part of the call and stays.
                        let parked = parked.take();
                        slots.slots[index] = Slot::Idle(parked);
                    }
                }
            }
        }
    }

    /// Hand the agent's events to the recorder. `false` when the recorder is gone (the run is
    /// being torn down).
    async fn drain_events(&mut self) -> bool {
        while let Some(ev) = self.agent.poll_event() {
            if !self.send_event(ev).await {
                return false;
            }
        }
        true
    }

    /// Hand one event to the recorder, waiting while its channel is full. `false` when the
    /// recorder is gone.
    async fn send_event(&self, ev: Event) -> bool {
        match self.events.try_send(ev) {
            Ok(()) => true,
            // The recorder is behind: wait for room. Boxed because it is rare, and the wait's
            // state (~200 bytes) would otherwise be part of every agent's task for its life.
            Err(mpsc::error::TrySendError::Full(ev)) => {
                Box::pin(self.events.send(ev)).await.is_ok()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// The future of one call, and the home connection parked beside it when the call goes
    /// elsewhere. The job slot's home follows the plan hub (`Base*` endpoints).
    fn start_call(
        &self,
        kept: Option<Kept>,
        home: &mut OriginIndex,
        index: usize,
        id: CallId,
        request: Request,
        endpoint: Endpoint,
    ) -> (CallFuture, Option<Kept>) {
        let origins = Arc::clone(&self.transport.origins);
        let resolved = codec::resolve(&request, &endpoint, origins.target())
            .map_err(|e| ClientError::BadTarget {
                url: e.url,
                reason: e.reason.to_string(),
            })
            .and_then(|(origin, wire)| Ok((origins.index(&origin)?, wire)));
        let (origin, wire) = match resolved {
            Ok(ok) => ok,
            Err(e) => return (failed(id, e, None), kept),
        };
        if index == JOB_SLOT && matches!(endpoint, Endpoint::Base(_) | Endpoint::BaseOnTarget(_)) {
            *home = origin;
        }
        let (mine, parked) = match kept {
            Some(k) if k.origin == origin => (Some(k), None),
            other => (None, other),
        };
        let slot = u64::from(self.agent.index()) * 3 + index as u64;
        // The future keeps only what decoding needs, not the request (it waits up to 50 s).
        let answer = codec::AnswerKind::of(&request.call);
        drop(request);
        let call: CallFuture = match origins.built_route(origin) {
            // The common case: the origin's client exists, so the request is encoded now and
            // the call's future holds the bytes only (not the request, nor the route look-up's
            // state, which is larger than the exchange's: ~870 of the future's bytes).
            Some(route) => match encode_for(&route, &wire) {
                Ok(bytes) => Box::pin(send(route, bytes, mine, origin, slot, id, answer)),
                // The connection stays: nothing was sent on it.
                Err(e) => failed(id, e, mine),
            },
            // The first call to a new origin builds its client (DNS, TLS set-up) first.
            None => Box::pin(async move {
                let route = match origins.route(origin).await {
                    Ok(route) => route,
                    Err(e) => {
                        return CallDone {
                            id,
                            result: Err(e),
                            conn: None,
                        };
                    }
                };
                match encode_for(&route, &wire) {
                    Ok(bytes) => {
                        // Boxed: this path is rare, and its state would add to the common one.
                        Box::pin(send(route, bytes, mine, origin, slot, id, answer)).await
                    }
                    Err(e) => CallDone {
                        id,
                        result: Err(e),
                        conn: mine,
                    },
                }
            }),
        };
        (call, parked)
    }
}

/// A call that failed before it could be sent (`conn`: the connection it would have used).
fn failed(id: CallId, e: ClientError, conn: Option<Kept>) -> CallFuture {
    let done = CallDone {
        id,
        result: Err(e),
        conn,
    };
    Box::pin(std::future::ready(done))
}

/// The request's bytes for `route`'s client; the request itself is dropped by the caller, so a
/// call waiting on a long poll holds only the bytes (kept for the one safe resend).
fn encode_for(route: &Route, wire: &WireRequest) -> Result<Encoded, ClientError> {
    match route {
        Route::Direct(http) => http.encode(wire),
        Route::Pooled(pool) => pool.client().encode(wire),
    }
}

/// Send `bytes` on the agent's own connection `mine` (when it goes to `origin`) or a new one,
/// or on the origin's pool, and decode the answer. Not an `async fn`, which would store its
/// arguments twice (see [`AgentTask::run`]): 992 bytes as one, 912 as this block.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
fn send(
    route: Route,
    bytes: Encoded,
    mine: Option<Kept>,
    origin: OriginIndex,
    slot: u64,
    id: CallId,
    answer: codec::AnswerKind,
) -> impl Future<Output = CallDone> + Send {
    async move {
        match route {
            Route::Direct(http) => {
                let mut kept = mine.unwrap_or_else(|| Kept {
                    origin,
                    conn: http.connection(slot),
                });
                drop(http);
                let result = kept.conn.send_encoded(&bytes).await;
                let result = result.map(|w| codec::decode_answer(answer, &w));
                CallDone {
                    id,
                    result,
                    conn: Some(kept),
                }
            }
            Route::Pooled(pool) => {
                let result = pool.send_encoded(&bytes).await;
                let result = result.map(|w| codec::decode_answer(answer, &w));
                CallDone {
                    id,
                    result,
                    conn: None,
                }
            }
        }
    }
}

/// A call made while a partition cuts the agent off: it fails to connect at once, as a connect
/// to an unreachable network is refused (the agent's own backoff paces the retries).
fn partitioned(id: CallId) -> CallFuture {
    let done = CallDone {
        id,
        result: Err(ClientError::Connect {
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            source: std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "cut off by a [[faults]] partition",
            ),
        }),
        conn: None,
    };
    Box::pin(std::future::ready(done))
}

/// The first finished call among the busy slots (slot order on ties), or pending.
fn poll_calls(slots: &mut [Slot; 3], cx: &mut std::task::Context<'_>) -> Poll<(usize, CallDone)> {
    for (index, slot) in slots.iter_mut().enumerate() {
        if let Slot::Busy { call, .. } = slot
            && let Poll::Ready(done) = call.as_mut().poll(cx)
        {
            return Poll::Ready((index, done));
        }
    }
    Poll::Pending
}
