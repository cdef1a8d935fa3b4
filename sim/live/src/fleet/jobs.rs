//! The job generator: queues synthetic jobs through the emulator's admin API at the scenario's
//! arrival times and reports each as `Event::JobQueued` at its *intended* time.
//!
//! One task, one connection, calls in sequence. Arrivals that fall due while a call is in flight
//! wait and go out together in the next call (at most `MAX_BATCH` jobs per call), each still
//! stamped with its own intended time, so a slow emulator shows up as longer pickup latency
//! instead of vanishing. Jobs are drawn with `Jobs::sample_job` from the run's `Jobs` stream (the
//! virtual-time driver draws the same jobs for the same seed), and so is the cancel draw.
//!
//! Cancellation: a job drawn as canceled is canceled through the emulator's admin route
//! (`DELETE …/jobrequests/{requestId}`, an emulator extension) at its intended queue time plus
//! 20–80 % of its duration, the fraction drawn from its own seeded stream (so the job stream
//! stays aligned with the virtual-time driver). An active job gets a `JobCancellation` on its
//! agent's session and the agent reports it canceled; a job still queued by then is finished
//! as canceled by the emulator at once, and the generator reports that as the job's
//! `Event::JobFinished` (agent [`GENERATOR_AGENT`]) so the report's canceled count matches the
//! emulator's. A cancel that arrives after the job finished (404) is counted, not an error: the
//! system under test did nothing wrong. Cancels due after the run ends are not sent.
//!
//! Generator calls are recorded as `Operation::QueueJobs` with agent id [`GENERATOR_AGENT`];
//! cancel calls have no operation of their own and are counted in [`GeneratorStats`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, ErrorKind, Request};
use fleetsim_core::codec;
use fleetsim_core::event::{Event, Outcome};
use fleetsim_core::job::QueueJobsRequest;
use fleetsim_core::ops::Operation;
use fleetsim_core::proto::TaskResult;
use fleetsim_core::rng::Rng;
use fleetsim_scenario::Jobs;
use rand::RngCore as _;
use tokio::sync::{mpsc, watch};

use super::driver::Clock;
use crate::client::{self, ClientError};
use fleetsim_scenario::Arrivals;

/// The `agent` field of the generator's own `Event::Op`s.
pub const GENERATOR_AGENT: u32 = u32::MAX;
/// Jobs per admin call at most.
const MAX_BATCH: usize = 1_000;
/// Pause between attempts to find the pool id.
const POOL_RETRY: Duration = Duration::from_secs(1);
/// A canceled job is canceled this far into its duration at the earliest…
const CANCEL_FROM: f64 = 0.2;
/// …and this much later at the latest (as a fraction of its duration).
const CANCEL_SPREAD: f64 = 0.6;
/// Cancels waiting for their time at most; beyond it a canceled job runs to its end (counted).
const MAX_PENDING_CANCELS: usize = 1_000_000;

/// What the generator did, for the run outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratorStats {
    /// Jobs the emulator accepted.
    pub queued: u64,
    /// Jobs whose queue call failed (not counted as queued; the error is in the report).
    pub refused: u64,
    /// Jobs that were due but not sent because the run stopped first.
    pub unsent: u64,
    /// Cancel calls sent (one per job drawn as canceled whose time came within the run).
    pub cancels_sent: u64,
    /// Of those, jobs still queued: the emulator finished them as canceled at once.
    pub canceled_queued: u64,
    /// Of those, jobs running: a `JobCancellation` went to the agent.
    pub cancels_delivered: u64,
    /// Of those, jobs that had already finished (the cancel came too late; not an error).
    pub cancels_too_late: u64,
    /// Of those, calls that failed (transport or an unexpected answer).
    pub cancel_errors: u64,
    /// Cancels whose time fell after the run's end, or that did not fit the pending bound.
    pub cancels_unsent: u64,
    /// The pool the jobs went to, once looked up.
    pub pool_id: Option<u32>,
}

/// Everything the generator task owns.
pub(crate) struct JobGenerator {
    pub(crate) arrivals: Arrivals,
    pub(crate) jobs: Jobs,
    /// Draws the jobs themselves (the arrival times have their own stream).
    pub(crate) rng: Rng,
    /// Draws when into a canceled job its cancel comes (its own stream: see the module docs).
    pub(crate) cancel_rng: Rng,
    pub(crate) conn: client::Connection,
    pub(crate) base_path: Arc<str>,
    pub(crate) credential: Credential,
    pub(crate) pool_name: String,
    pub(crate) clock: Clock,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl JobGenerator {
    /// Queue jobs (and cancel the ones drawn as canceled) until the arrivals and cancels run
    /// out or the run stops.
    pub(crate) async fn run(mut self) -> GeneratorStats {
        let mut stats = GeneratorStats::default();
        if self.arrivals.peek().is_none() {
            return stats;
        }
        let Some(pool_id) = self.pool_id().await else {
            return stats;
        };
        stats.pool_id = Some(pool_id);
        // Min-heap of (cancel time, request id).
        let mut cancels: BinaryHeap<Reverse<(SimTime, u64)>> = BinaryHeap::new();
        loop {
            let next_arrival = self.arrivals.peek().map(|d| SimTime::ZERO + d);
            let next_cancel = cancels.peek().map(|Reverse((at, _))| *at);
            let Some(next) = next_arrival.into_iter().chain(next_cancel).min() else {
                break;
            };
            if *self.stop.borrow() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(self.clock.instant(next)) => {}
                _ = self.stop.changed() => break,
            }
            if *self.stop.borrow() {
                break;
            }
            let now = self.clock.now();
            while let Some(&Reverse((at, request_id))) = cancels.peek() {
                if at > now || *self.stop.borrow() {
                    break;
                }
                cancels.pop();
                self.cancel(pool_id, request_id, &mut stats).await;
            }
            let now = self.clock.now().saturating_since(SimTime::ZERO);
            let mut due = Vec::new();
            while due.len() < MAX_BATCH && self.arrivals.peek().is_some_and(|t| t <= now) {
                if let Some(t) = self.arrivals.next_arrival() {
                    due.push(SimTime::ZERO + t);
                }
            }
            if !due.is_empty() {
                self.queue(pool_id, &due, &mut cancels, &mut stats).await;
            }
        }
        while self
            .arrivals
            .next_arrival()
            .is_some_and(|t| t <= self.clock.now().saturating_since(SimTime::ZERO))
        {
            stats.unsent += 1;
        }
        stats.cancels_unsent += cancels.len() as u64;
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

    /// Queue one job per intended time in `due` (one admin call), report them, and schedule
    /// the cancels of those drawn as canceled.
    async fn queue(
        &mut self,
        pool_id: u32,
        due: &[SimTime],
        cancels: &mut BinaryHeap<Reverse<(SimTime, u64)>>,
        stats: &mut GeneratorStats,
    ) {
        let Some(&intended) = due.first() else { return };
        let mut cancel_after = Vec::with_capacity(due.len());
        let jobs = due
            .iter()
            .map(|_| {
                let job = self.jobs.sample_job(&mut self.rng);
                let cancel = self.jobs.sample_cancel(&mut self.rng);
                cancel_after.push(cancel.then(|| cancel_delay(&job, &mut self.cancel_rng)));
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
                for ((&at, job), delay) in due.iter().zip(&queued.value).zip(&cancel_after) {
                    let _ = self
                        .events
                        .send(Event::JobQueued {
                            request_id: job.request_id,
                            at,
                        })
                        .await;
                    if let Some(delay) = delay {
                        if cancels.len() < MAX_PENDING_CANCELS {
                            cancels.push(Reverse((at + *delay, job.request_id)));
                        } else {
                            stats.cancels_unsent += 1;
                        }
                    }
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

    /// Cancel one job through the admin route and count what the emulator did with it.
    async fn cancel(&mut self, pool_id: u32, request_id: u64, stats: &mut GeneratorStats) {
        stats.cancels_sent += 1;
        let result = self
            .call(ApiRequest::CancelJob {
                pool_id,
                request_id,
            })
            .await;
        match result {
            Ok(ApiResponse::JobRequest(job)) if job.result == Some(TaskResult::Canceled) => {
                // Finished by the emulator without ever reaching an agent: nobody else will
                // report this job's end.
                stats.canceled_queued += 1;
                let finished = Event::JobFinished {
                    agent: GENERATOR_AGENT,
                    request_id,
                    result: TaskResult::Canceled,
                    at: self.clock.now(),
                };
                let _ = self.events.send(finished).await;
            }
            Ok(ApiResponse::JobRequest(_)) => stats.cancels_delivered += 1,
            Ok(ApiResponse::Error(e)) if e.kind == ErrorKind::JobNotFound => {
                stats.cancels_too_late += 1;
            }
            Ok(_) | Err(_) => stats.cancel_errors += 1,
        }
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

/// How long after its intended queue time a canceled job is canceled: 20–80 % of its duration
/// (at least a millisecond), drawn from `rng`.
fn cancel_delay(job: &fleetsim_core::job::SyntheticJob, rng: &mut Rng) -> Duration {
    let total_ms: u64 = job.steps.iter().map(|s| s.duration_ms).sum();
    // u in [0, 1) from the top 53 bits.
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let ms = (total_ms as f64 * (CANCEL_FROM + CANCEL_SPREAD * u)).round() as u64;
    Duration::from_millis(ms.max(1))
}

#[cfg(test)]
mod tests {
    use fleetsim_core::job::SyntheticStep;
    use fleetsim_core::rng::{self, StreamKind};

    use super::*;

    // Goal: a cancel lands inside the job (20–80 % of its duration), never at its start, and
    // the same seed gives the same delays.
    #[test]
    fn cancel_delay_falls_inside_the_job_and_is_seeded() {
        let step = |ms| SyntheticStep {
            duration_ms: ms,
            log_lines: 0,
            secret_lines: 0,
            artifact_bytes: 0,
        };
        let job = fleetsim_core::job::SyntheticJob {
            steps: vec![step(4_000), step(6_000)],
            secrets: 0,
            fail: false,
            demands: Vec::new(),
        };
        let draw = || {
            let mut rng = rng::stream(3, StreamKind::Jobs, 2);
            (0..200)
                .map(|_| cancel_delay(&job, &mut rng))
                .collect::<Vec<_>>()
        };
        let delays = draw();
        assert!(
            delays
                .iter()
                .all(|d| (2_000..=8_000).contains(&d.as_millis()))
        );
        assert!(delays.iter().any(|d| d.as_millis() < 4_000));
        assert!(delays.iter().any(|d| d.as_millis() > 6_000));
        assert_eq!(delays, draw());
        let empty = fleetsim_core::job::SyntheticJob {
            steps: vec![step(0)],
            ..job
        };
        assert_eq!(
            cancel_delay(&empty, &mut rng::stream(3, StreamKind::Jobs, 2)),
            Duration::from_millis(1)
        );
    }
}
