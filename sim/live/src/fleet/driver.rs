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
//! This module makes no protocol decisions: requests are encoded and answers decoded with
//! `fleetsim_core::codec`; what to send and when is the agent's business.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::agent::{Agent, AgentOutput, CallId, Connection};
use fleetsim_core::api::{ApiResponse, Request};
use fleetsim_core::codec;
use fleetsim_core::event::Event;
use fleetsim_core::ops::AgentState;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::{self, ClientError, HttpClient, Pool};

/// How agents reach the target.
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    /// Each agent opens its own connections (listener, keep-alive, job), like the real agent.
    PerAgent(Arc<HttpClient>),
    /// Agents share a bounded pool.
    Pooled(Arc<Pool>),
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

/// A call's end: the decoded answer or the transport failure, and the connection back.
struct CallDone {
    id: CallId,
    result: Result<ApiResponse, ClientError>,
    conn: Option<client::Connection>,
}

type CallFuture = Pin<Box<dyn Future<Output = CallDone> + Send>>;

/// One of the agent's three connections.
enum Slot {
    /// No call in flight; the connection (kept open between calls) if there is one.
    Idle(Option<client::Connection>),
    /// Call `id` in flight.
    Busy { id: CallId, call: CallFuture },
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

/// Everything one agent's task owns.
pub(crate) struct AgentTask {
    pub(crate) agent: Agent,
    pub(crate) clock: Clock,
    pub(crate) transport: Transport,
    /// The target's collection path (`""` or `/DefaultCollection`), shared by the fleet.
    pub(crate) base_path: Arc<str>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) stop: watch::Receiver<bool>,
    /// After the stop signal, how long the agent may take to delete its session.
    pub(crate) drain: Duration,
    /// Close the keep-alive connection after each keep-alive call (descriptor budget).
    pub(crate) close_keepalive: bool,
}

impl AgentTask {
    /// Drive the agent until it stops (after the stop signal and its graceful shutdown) or the
    /// drain deadline passes.
    pub(crate) async fn run(mut self) {
        let mut slots = [Slot::Idle(None), Slot::Idle(None), Slot::Idle(None)];
        let mut drain_deadline: Option<Instant> = None;
        if *self.stop.borrow_and_update() {
            self.agent.shutdown(self.clock.now());
            drain_deadline = Some(Instant::now() + self.drain);
        }
        loop {
            self.drain_outputs(&mut slots);
            if !self.drain_events().await {
                return;
            }
            if self.agent.is_stopped() && slots.iter().all(Slot::is_idle) {
                return;
            }
            let wake = self.agent.poll_timeout().map(|(at, _)| at);
            // Without a timer the sleep branch is disabled; its instant only has to exist.
            let sleep_at = wake.map_or_else(
                || Instant::now() + Duration::from_secs(86_400),
                |t| self.clock.instant(t),
            );
            let drain_at = drain_deadline.unwrap_or(sleep_at);
            tokio::select! {
                (index, done) = poll_fn(|cx| poll_calls(&mut slots, cx)) => {
                    let keep = !(self.close_keepalive && index == KEEPALIVE_SLOT);
                    slots[index] = Slot::Idle(done.conn.filter(|_| keep));
                    let now = self.clock.now();
                    match done.result {
                        Ok(resp) => self.agent.handle_response(now, done.id, resp),
                        Err(e) => self.agent.handle_transport_error(now, done.id, e.transport()),
                    }
                }
                () = tokio::time::sleep_until(sleep_at), if wake.is_some() => {
                    // Never hand the agent a time before the deadline it asked for.
                    let now = self.clock.now().max(wake.unwrap_or(SimTime::ZERO));
                    self.agent.handle_timeout(now);
                }
                changed = self.stop.changed(), if drain_deadline.is_none() => {
                    // A dropped sender means the run is gone: stop the same way.
                    if changed.is_err() || *self.stop.borrow_and_update() {
                        drain_deadline = Some(Instant::now() + self.drain);
                        self.agent.shutdown(self.clock.now());
                    }
                }
                () = tokio::time::sleep_until(drain_at), if drain_deadline.is_some() => return,
            }
        }
    }

    /// Start every call the agent asks for and drop every call it cancels. Then, when the agent
    /// has no job, close its job connection: the real agent's job calls come from a worker
    /// process that exits with the job, taking its connections along.
    fn drain_outputs(&mut self, slots: &mut [Slot; 3]) {
        self.start_and_cancel(slots);
        if self.agent.state() != AgentState::Busy
            && let Slot::Idle(conn @ Some(_)) = &mut slots[JOB_SLOT]
        {
            *conn = None;
        }
    }

    fn start_and_cancel(&mut self, slots: &mut [Slot; 3]) {
        while let Some(out) = self.agent.poll_transmit() {
            match out {
                AgentOutput::Send {
                    id, conn, request, ..
                } => {
                    let index = slot_index(conn);
                    let kept = match std::mem::replace(&mut slots[index], Slot::Idle(None)) {
                        Slot::Idle(kept) => kept,
                        // The agent promises one call per connection; if that ever breaks, the
                        // older call is dropped rather than two sharing a socket.
                        Slot::Busy { .. } => None,
                    };
                    let call = self.start_call(kept, index, id, request);
                    slots[index] = Slot::Busy { id, call };
                }
                AgentOutput::Cancel { id, conn } => {
                    let index = slot_index(conn);
                    if matches!(&slots[index], Slot::Busy { id: busy, .. } if *busy == id) {
                        // Dropping the future drops its connection: the server sees the client go.
                        slots[index] = Slot::Idle(None);
                    }
                }
            }
        }
    }

    /// Hand the agent's events to the recorder. `false` when the recorder is gone (the run is
    /// being torn down).
    async fn drain_events(&mut self) -> bool {
        while let Some(ev) = self.agent.poll_event() {
            if self.events.send(ev).await.is_err() {
                return false;
            }
        }
        true
    }

    fn start_call(
        &self,
        kept: Option<client::Connection>,
        index: usize,
        id: CallId,
        request: Request,
    ) -> CallFuture {
        let base_path = Arc::clone(&self.base_path);
        match &self.transport {
            Transport::PerAgent(http) => {
                let slot = u64::from(self.agent.index()) * 3 + index as u64;
                let mut conn = kept.unwrap_or_else(|| http.connection(slot));
                Box::pin(async move {
                    let wire = codec::encode_request(&request, &base_path);
                    let result = conn
                        .send(&wire)
                        .await
                        .map(|w| codec::decode_response(&request.call, &w));
                    CallDone {
                        id,
                        result,
                        conn: Some(conn),
                    }
                })
            }
            Transport::Pooled(pool) => {
                let pool = Arc::clone(pool);
                Box::pin(async move {
                    let wire = codec::encode_request(&request, &base_path);
                    let result = pool
                        .send(&wire)
                        .await
                        .map(|w| codec::decode_response(&request.call, &w));
                    CallDone {
                        id,
                        result,
                        conn: None,
                    }
                })
            }
        }
    }
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
