//! The one place the emulator's sans-IO `Server` meets real time: a `parking_lot` mutex around
//! the state machine, the map of parked long polls waiting for their answers, and the timer
//! task that wakes the core at `poll_timeout()`.
//!
//! Decision: a mutex, not a task behind a channel. Every core call is short synchronous work
//! (the heaviest is one RSA public-key operation), so handlers lock, call, drain and unlock
//! without a channel hop and a second task wake-up per request; the lock is never held across
//! an `.await`. The core is single-threaded either way, so both designs serialise the same
//! work; the mutex is simpler and has less per-request overhead. (Only the mutex variant was
//! built and measured; see `examples/emulator_bench.rs`.)
//!
//! The drain contract of `Server` is kept in one function (`Core::drain`): after every
//! `handle_*`, drain `poll_output` (routing released polls to their waiting handlers by
//! `RequestId`), drain `poll_event`, then read `poll_timeout` and re-arm the timer if it moved
//! earlier.
//!
//! This module makes no protocol decision, with one documented exception at shutdown: parked
//! polls are answered `NoMessage` (202, "nothing arrived, poll again"), which is what the core
//! would answer at the end of their hold.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetsim_core::SimTime;
use fleetsim_core::api::{ApiError, ApiResponse, EmulatorStats, ErrorKind, Request};
use fleetsim_core::crypto::Meter;
use fleetsim_core::event::Event;
use fleetsim_core::server::durable::StoredRecord;
use fleetsim_core::server::{Handled, RequestId, Server, ServerConfig, ServerOutput};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use super::ServeError;
use super::metrics::FrontMetrics;
use super::store::{Committer, Store};

/// Shortest time the timer sleeps; keeps a core that keeps answering "now" from spinning.
const MIN_TIMER_SLEEP: Duration = Duration::from_millis(1);

/// The shared core: state machine, parked-poll waiters and the clock mapping.
pub(crate) struct Core {
    state: Mutex<CoreState>,
    /// Wakes the timer task when the core's next deadline moved earlier.
    rearm: Notify,
    /// `base` is this instant: the core's run time when this process built it (zero, or the
    /// run time a restored core resumes at).
    start: Instant,
    base: SimTime,
    metrics: Arc<FrontMetrics>,
    /// With `--state-dir`: the group committer every answer waits for.
    store: Option<Arc<Committer>>,
}

struct CoreState {
    server: Server,
    /// Parked long polls: where to send each one's answer. A HashMap is fine here: it is only
    /// looked up by key, and drained in any order at shutdown.
    waiters: HashMap<RequestId, oneshot::Sender<(ApiResponse, u64)>>,
    next_id: RequestId,
    /// The deadline the timer task currently sleeps until (`None` = no deadline).
    armed: Option<SimTime>,
    /// Set once shutdown begins: polls the core would park are answered at once.
    shutting_down: bool,
}

/// What a handler does with a dispatched request.
// Returned once per request and matched at once, never stored: boxing the answer would only add
// an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Dispatch {
    /// The answer is ready.
    Ready(ApiResponse),
    /// A long poll is parked; await its answer.
    Parked(ParkedPoll),
}

/// A parked long poll. Dropping it before the answer arrives (the client went away and hyper
/// dropped the handler) tells the core through `handle_disconnect`.
pub(crate) struct ParkedPoll {
    core: Arc<Core>,
    id: RequestId,
    rx: oneshot::Receiver<(ApiResponse, u64)>,
    answered: bool,
}

impl Core {
    /// Build the core at the current instant; `epoch_unix_ms` anchors `SimTime::ZERO` to the
    /// wall clock for the timestamps the protocol shows. With a `state`, the core is restored
    /// from its records (keeping their epoch) and writes its changes through the store.
    pub(crate) fn new(
        config: ServerConfig,
        seed: u64,
        metrics: Arc<FrontMetrics>,
        state: Option<(Store, Vec<StoredRecord>)>,
    ) -> Result<Arc<Core>, ServeError> {
        let now_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (mut server, base, store) = match state {
            None => (Server::new(config, seed, now_unix_ms)?, SimTime::ZERO, None),
            Some((store, records)) => {
                let restored = Server::restore(config, seed, now_unix_ms, records)?;
                let committer = Committer::start(store);
                (restored.server, restored.now, Some(committer))
            }
        };
        server.set_meter(Meter::new(monotonic_ns));
        let core = Arc::new(Core {
            state: Mutex::new(CoreState {
                server,
                waiters: HashMap::new(),
                next_id: 1,
                armed: None,
                shutting_down: false,
            }),
            rearm: Notify::new(),
            start: Instant::now(),
            base,
            metrics,
            store,
        });
        Ok(core)
    }

    /// With a state dir: write what the start produced (the server's own record, what a
    /// restore changed: requeues, expired leases) and wait for it, so that once the emulator
    /// listens its state dir holds its seed and format.
    pub(crate) async fn initial_commit(&self) -> Result<(), String> {
        let upto = self.drain(&mut self.state.lock());
        match &self.store {
            Some(store) => store.durable(upto).await,
            None => Ok(()),
        }
    }

    /// Run time now.
    pub(crate) fn now(&self) -> SimTime {
        self.base + self.start.elapsed()
    }

    /// Hand one decoded request to the core; the answer is ready when the state it shows is
    /// durable (with a state dir).
    pub(crate) async fn dispatch(self: &Arc<Self>, request: Request) -> Dispatch {
        let (dispatch, upto) = self.dispatch_now(request);
        match dispatch {
            Dispatch::Ready(response) => Dispatch::Ready(self.when_durable(response, upto).await),
            parked => parked,
        }
    }

    fn dispatch_now(self: &Arc<Self>, request: Request) -> (Dispatch, u64) {
        let now = self.now();
        let mut st = self.state.lock();
        let id = st.next_id;
        st.next_id += 1;
        let dispatch = match st.server.handle_request(now, id, request) {
            Handled::Respond(response) => Dispatch::Ready(response),
            Handled::Parked if st.shutting_down => {
                st.server.handle_disconnect(now, id);
                Dispatch::Ready(ApiResponse::NoMessage)
            }
            Handled::Parked => {
                // Registered before draining, so an answer released by this same call finds it.
                let (tx, rx) = oneshot::channel();
                st.waiters.insert(id, tx);
                Dispatch::Parked(ParkedPoll {
                    core: self.clone(),
                    id,
                    rx,
                    answered: false,
                })
            }
        };
        let upto = self.drain(&mut st);
        (dispatch, upto)
    }

    /// `response` once batch `upto` is on disk; a 503 naming the cause if the store broke.
    async fn when_durable(&self, response: ApiResponse, upto: u64) -> ApiResponse {
        let Some(store) = &self.store else {
            return response;
        };
        match store.durable(upto).await {
            Ok(()) => response,
            Err(why) => ApiResponse::Error(ApiError::new(
                ErrorKind::Unavailable,
                format!("the emulator cannot write its state dir ({why}); restart it"),
            )),
        }
    }

    /// Stop the state writer after committing what is pending (shutdown). Blocks.
    pub(crate) fn stop_store(&self) {
        if let Some(store) = &self.store {
            store.stop();
        }
    }

    /// The core's verdict on a request head alone (`Server::check_head`), asked before the
    /// body is read.
    pub(crate) fn check_head(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<(), ApiError> {
        let now = self.now();
        self.state
            .lock()
            .server
            .check_head(now, path, authorization)
    }

    /// The core's counters.
    pub(crate) fn stats(&self) -> EmulatorStats {
        self.state.lock().server.stats()
    }

    /// Begin shutdown: answer every parked poll with `NoMessage` and answer future ones at
    /// once, so graceful connection shutdown never waits for a 50 s hold.
    pub(crate) fn release_parked(&self) {
        let now = self.now();
        let mut st = self.state.lock();
        st.shutting_down = true;
        let waiters: Vec<_> = st.waiters.drain().collect();
        for (id, tx) in waiters {
            st.server.handle_disconnect(now, id);
            // The handler may be gone already; nothing to do then.
            let _ = tx.send((ApiResponse::NoMessage, 0));
        }
        self.drain(&mut st);
    }

    /// The timer task: sleep until the core's next deadline (or until re-armed), then call
    /// `handle_timeout`. Ends when `stop` turns true.
    pub(crate) async fn run_timer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let deadline = {
                let mut st = self.state.lock();
                st.armed = st.server.poll_timeout();
                st.armed
            };
            let wake_at = deadline.map(|t| {
                let at = self.start + (t - self.base);
                at.max(Instant::now() + MIN_TIMER_SLEEP)
            });
            tokio::select! {
                _ = sleep_until_opt(wake_at) => self.fire_timeout(),
                _ = self.rearm.notified() => {}
                _ = stop.changed() => {
                    if let Some(store) = &self.store {
                        store.request_stop();
                    }
                    return;
                }
            }
        }
    }

    fn fire_timeout(&self) {
        let now = self.now();
        let mut st = self.state.lock();
        st.server.handle_timeout(now);
        self.drain(&mut st);
    }

    /// The drain contract: durable changes to the open batch, outputs to their waiters
    /// (each with the batch to wait for), events to the metrics, then re-arm. Returns the
    /// batch an answer produced now must wait for (0: none).
    fn drain(&self, st: &mut CoreState) -> u64 {
        let upto = match &self.store {
            Some(store) => store.append(std::iter::from_fn(|| st.server.poll_durable())),
            None => 0,
        };
        while let Some(output) = st.server.poll_output() {
            match output {
                ServerOutput::Respond { id, response } => {
                    if let Some(tx) = st.waiters.remove(&id) {
                        // A dropped receiver means the client left; its drop guard reports it.
                        let _ = tx.send((response, upto));
                    }
                }
            }
        }
        while let Some(event) = st.server.poll_event() {
            if let Event::Crypto {
                op,
                count,
                bytes,
                nanos,
                ..
            } = event
            {
                self.metrics.record_crypto(op, count, bytes, nanos);
            }
        }
        let next = st.server.poll_timeout();
        if next.is_some_and(|t| st.armed.is_none_or(|armed| t < armed)) {
            st.armed = next;
            self.rearm.notify_one();
        }
        upto
    }

    fn disconnect(&self, id: RequestId) {
        let now = self.now();
        let mut st = self.state.lock();
        if st.waiters.remove(&id).is_some() {
            st.server.handle_disconnect(now, id);
            self.drain(&mut st);
        }
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl ParkedPoll {
    /// Wait for the core (or shutdown) to answer this poll.
    pub(crate) async fn answer(mut self) -> ApiResponse {
        let response = (&mut self.rx).await;
        self.answered = true;
        match response {
            Ok((response, upto)) => self.core.when_durable(response, upto).await,
            Err(_) => {
                // Only reachable if the waiter map dropped the sender without answering, which no
                // path does; answer as an overloaded server would rather than panic.
                ApiResponse::Error(ApiError::new(
                    ErrorKind::Unavailable,
                    "the emulator is stopping",
                ))
            }
        }
    }
}

impl Drop for ParkedPoll {
    fn drop(&mut self) {
        if !self.answered {
            self.core.disconnect(self.id);
        }
    }
}

/// Monotonic nanoseconds since the first call: the crypto meter's clock (a plain `fn`, as
/// `Meter` wants).
fn monotonic_ns() -> u64 {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
