//! The workload, driven in real time: one tokio task that moves the core `Workload`'s calls
//! (queue jobs, cancel jobs, look up the pool) onto one HTTP connection and its answers, timers
//! and events back.
//!
//! The loop is the workload's drain contract and nothing more: after every input, drain
//! `poll_transmit` (at most one call is in flight: the machine promises it), drain `poll_event`
//! (to the recorder), then wait for whichever comes first — the call's answer, the workload's
//! next timer, or the run's stop signal. What to queue, when, in which batches, and when to
//! cancel is the workload's business (`fleetsim_core::workload`); the virtual-time driver drives
//! the same machine, so both queue the same jobs and cancel the same ones for a seed.
//!
//! At the stop signal the workload is told to stop (due but unsent arrivals and waiting cancels
//! are counted); a call still in flight is awaited, within the run's drain allowance (the
//! caller's timeout).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::api::{ApiResponse, Request};
use fleetsim_core::codec;
use fleetsim_core::event::Event;
use fleetsim_core::workload::{CallId, Workload, WorkloadOutput, WorkloadStats};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::driver::Clock;
use crate::client::{self, ClientError, HttpClient};

/// A call's end: its id, the decoded answer or the transport failure, and the connection back.
type CallDone = (CallId, Result<ApiResponse, ClientError>, client::Connection);
type CallFuture = Pin<Box<dyn Future<Output = CallDone> + Send>>;

/// Everything the workload task owns.
pub(crate) struct WorkloadTask {
    pub(crate) workload: Workload,
    /// Where the workload's one connection comes from…
    pub(crate) http: Arc<HttpClient>,
    /// …and its slot (past the agents').
    pub(crate) slot: u64,
    /// The target's collection path (`""` or `/DefaultCollection`).
    pub(crate) base_path: Arc<str>,
    pub(crate) clock: Clock,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl WorkloadTask {
    /// Drive the workload until it has nothing left to do, or the run stops and its last call
    /// is answered.
    pub(crate) async fn run(mut self) -> WorkloadStats {
        let mut conn: Option<client::Connection> = None;
        let mut call: Option<CallFuture> = None;
        let mut stopped = false;
        if *self.stop.borrow_and_update() {
            stopped = true;
            self.workload.stop(self.clock.now());
        }
        loop {
            while let Some(WorkloadOutput::Send { id, request, .. }) = self.workload.poll_transmit()
            {
                // The workload promises one call at a time; were it ever broken, the older call
                // would be dropped (with its connection), never share a socket.
                let c = conn
                    .take()
                    .unwrap_or_else(|| self.http.connection(self.slot));
                call = Some(start_call(c, id, request, Arc::clone(&self.base_path)));
            }
            while let Some(ev) = self.workload.poll_event() {
                if self.events.send(ev).await.is_err() {
                    return self.workload.stats();
                }
            }
            if call.is_none() && (stopped || self.workload.is_done()) {
                return self.workload.stats();
            }
            let wake = self.workload.poll_timeout().map(|(at, _)| at);
            // Without a timer the sleep branch is disabled; its instant only has to exist.
            let sleep_at = wake.map_or_else(
                || Instant::now() + Duration::from_secs(86_400),
                |t| self.clock.instant(t),
            );
            tokio::select! {
                (id, result, c) = poll_fn(|cx| match call.as_mut() {
                    Some(f) => f.as_mut().poll(cx),
                    None => Poll::Pending,
                }) => {
                    call = None;
                    conn = Some(c);
                    let now = self.clock.now();
                    match result {
                        Ok(resp) => self.workload.handle_response(now, id, resp),
                        Err(e) => self.workload.handle_failure(now, id, e.outcome()),
                    }
                }
                () = tokio::time::sleep_until(sleep_at), if wake.is_some() && !stopped => {
                    // Never hand the workload a time before the deadline it asked for.
                    let now = self.clock.now().max(wake.unwrap_or(SimTime::ZERO));
                    self.workload.handle_timeout(now);
                }
                changed = self.stop.changed(), if !stopped => {
                    // A dropped sender means the run is gone: stop the same way.
                    if changed.is_err() || *self.stop.borrow_and_update() {
                        stopped = true;
                        self.workload.stop(self.clock.now());
                    }
                }
            }
        }
    }
}

fn start_call(
    mut conn: client::Connection,
    id: CallId,
    request: Request,
    base_path: Arc<str>,
) -> CallFuture {
    Box::pin(async move {
        let wire = codec::encode_request(&request, &base_path);
        let result = conn
            .send(&wire)
            .await
            .map(|w| codec::decode_response(&request.call, &w));
        (id, result, conn)
    })
}
