//! The job generator: queues synthetic jobs through the emulator's admin API at the scenario's
//! arrival times and reports each as `Event::JobQueued` at its *intended* time.
//!
//! One task, one connection, calls in sequence. Arrivals that fall due while a call is in flight
//! wait and go out together in the next call (at most `MAX_BATCH` jobs per call), each still
//! stamped with its own intended time, so a slow emulator shows up as longer pickup latency
//! instead of vanishing. Jobs are drawn with `Jobs::sample_job` from the run's `Jobs` stream (the
//! virtual-time driver draws the same jobs for the same seed); `cancel_rate` is drawn to keep the
//! streams aligned, but the emulator has no cancel API yet, so live runs never cancel.
//!
//! Generator calls are recorded as `Operation::QueueJobs` with agent id [`GENERATOR_AGENT`].

use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, Request};
use fleetsim_core::codec;
use fleetsim_core::event::{Event, Outcome};
use fleetsim_core::job::QueueJobsRequest;
use fleetsim_core::ops::Operation;
use fleetsim_core::rng::Rng;
use fleetsim_scenario::Jobs;
use tokio::sync::{mpsc, watch};

use super::arrivals::Arrivals;
use super::driver::Clock;
use crate::client::{self, ClientError};

/// The `agent` field of the generator's own `Event::Op`s.
pub const GENERATOR_AGENT: u32 = u32::MAX;
/// Jobs per admin call at most.
const MAX_BATCH: usize = 1_000;
/// Pause between attempts to find the pool id.
const POOL_RETRY: Duration = Duration::from_secs(1);

/// What the generator did, for the run outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratorStats {
    /// Jobs the emulator accepted.
    pub queued: u64,
    /// Jobs whose queue call failed (not counted as queued; the error is in the report).
    pub refused: u64,
    /// Jobs that were due but not sent because the run stopped first.
    pub unsent: u64,
}

/// Everything the generator task owns.
pub(crate) struct JobGenerator {
    pub(crate) arrivals: Arrivals,
    pub(crate) jobs: Jobs,
    /// Draws the jobs themselves (the arrival times have their own stream).
    pub(crate) rng: Rng,
    pub(crate) conn: client::Connection,
    pub(crate) base_path: Arc<str>,
    pub(crate) credential: Credential,
    pub(crate) pool_name: String,
    pub(crate) clock: Clock,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl JobGenerator {
    /// Queue jobs until the arrivals run out or the run stops.
    pub(crate) async fn run(mut self) -> GeneratorStats {
        let mut stats = GeneratorStats::default();
        if self.arrivals.peek().is_none() {
            return stats;
        }
        let Some(pool_id) = self.pool_id().await else {
            return stats;
        };
        while let Some(next) = self.arrivals.peek() {
            if *self.stop.borrow() {
                break;
            }
            let at = self.clock.instant(SimTime::ZERO + next);
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                _ = self.stop.changed() => break,
            }
            if *self.stop.borrow() {
                break;
            }
            let now = self.clock.now().saturating_since(SimTime::ZERO);
            let mut due = Vec::new();
            while due.len() < MAX_BATCH && self.arrivals.peek().is_some_and(|t| t <= now) {
                if let Some(t) = self.arrivals.next_arrival() {
                    due.push(SimTime::ZERO + t);
                }
            }
            self.queue(pool_id, &due, &mut stats).await;
        }
        while self
            .arrivals
            .next_arrival()
            .is_some_and(|t| t <= self.clock.now().saturating_since(SimTime::ZERO))
        {
            stats.unsent += 1;
        }
        stats
    }

    /// The pool's id, looked up by name; retried until found or the run stops.
    async fn pool_id(&mut self) -> Option<u32> {
        loop {
            let call = ApiRequest::ListPools {
                pool_name: Some(self.pool_name.clone()),
            };
            if let Ok(ApiResponse::Pools(list)) = self.call(call).await
                && let Some(pool) = list
                    .value
                    .iter()
                    .find(|p| p.name.eq_ignore_ascii_case(&self.pool_name))
            {
                return Some(pool.id);
            }
            tokio::select! {
                () = tokio::time::sleep(POOL_RETRY) => {}
                _ = self.stop.changed() => return None,
            }
            if *self.stop.borrow() {
                return None;
            }
        }
    }

    /// Queue one job per intended time in `due` (one admin call) and report them.
    async fn queue(&mut self, pool_id: u32, due: &[SimTime], stats: &mut GeneratorStats) {
        let Some(&intended) = due.first() else { return };
        let jobs = due
            .iter()
            .map(|_| {
                let job = self.jobs.sample_job(&mut self.rng);
                // Drawn to keep the Jobs stream aligned with the virtual-time driver.
                let _cancel = self.jobs.sample_cancel(&mut self.rng);
                job
            })
            .collect();
        let request = QueueJobsRequest {
            count: 0,
            template: None,
            jobs,
        };
        let result = self.call(ApiRequest::QueueJobs { pool_id, request }).await;
        let done = self.clock.now();
        let outcome = match &result {
            Ok(ApiResponse::QueuedJobs(queued)) => {
                for (&at, job) in due.iter().zip(&queued.value) {
                    let _ = self
                        .events
                        .send(Event::JobQueued {
                            request_id: job.request_id,
                            at,
                        })
                        .await;
                }
                stats.queued += queued.value.len() as u64;
                stats.refused += due.len().saturating_sub(queued.value.len()) as u64;
                Outcome::Ok
            }
            Ok(ApiResponse::Error(e)) => {
                stats.refused += due.len() as u64;
                Outcome::Api(e.kind)
            }
            Ok(_) => {
                stats.refused += due.len() as u64;
                Outcome::Protocol
            }
            Err(e) => {
                stats.refused += due.len() as u64;
                e.outcome()
            }
        };
        let op = Event::Op {
            agent: GENERATOR_AGENT,
            op: Operation::QueueJobs,
            intended,
            done,
            outcome,
        };
        let _ = self.events.send(op).await;
    }

    async fn call(&mut self, call: ApiRequest) -> Result<ApiResponse, ClientError> {
        let request = Request {
            credential: self.credential.clone(),
            call,
        };
        let wire = codec::encode_request(&request, &self.base_path);
        let resp = self.conn.send(&wire).await?;
        Ok(codec::decode_response(&request.call, &resp))
    }
}
