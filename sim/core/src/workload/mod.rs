//! The workload: who queues which jobs when. A sans-IO state machine beside `Agent` and
//! `Server`, driven by both drivers through the same `handle_*`/`poll_*` contract, so a live
//! run and its virtual twin queue the same jobs and cancel the same ones at the same times.
//!
//! It owns the arrival process (`Arrivals`, `Jobs` stream 0), the job draws (`JobModel`, `Jobs`
//! stream 1: the job, then whether it is canceled), the cancel times (`Jobs` stream 2: 20–80 %
//! into the job's duration), batching, the pool lookup, and the counts of what it queued and how
//! its calls ended ([`WorkloadStats`]).
//!
//! Sources ([`Source`]):
//! - `Emulator`: jobs go to fleetsim's admin extension (`QueueJobs`), canceled ones through its
//!   cancel route (`CancelJob`).
//! - `Pipelines`: each arrival queues a run through the Pipelines Runs REST API (`RunPipeline`)
//!   of a pipeline picked by weight (`Jobs` stream 3), then follows the run (`GetPipelineRun`
//!   every [`FOLLOW_EVERY`], at most [`MAX_FOLLOWED_RUNS`] at once) until it completes, counting
//!   its result; a run drawn as canceled is canceled through the Build API (`UpdateBuild`,
//!   `status: cancelling`; a run id is a build id). The server turns each run into job requests; their pickups are measured on the
//!   server's clock (`server_pickup`).
//! - `Server`: someone else queues jobs; the workload sends nothing at all.
//!
//! One connection, calls in sequence: at most one call is in flight. Arrivals that fall due
//! while a call is in flight wait and go out together in the next call (at most
//! [`MAX_BATCH`] per call), each still reported at its own intended time, so a slow server shows
//! up as longer pickup latency instead of vanishing (no coordinated omission). Due cancels go
//! before due arrivals.
//!
//! Cancellation: a job drawn as canceled is canceled at its intended queue time plus 20–80 % of
//! its duration. An active job gets a `JobCancellation` on its agent's session (the agent
//! reports it); a job still queued is finished as canceled by the server at once, and the
//! workload reports that job's `Event::JobFinished` itself (agent [`GENERATOR_AGENT`]). A cancel
//! that arrives after the job finished (`JobNotFound`) is counted, not an error.
//!
//! This module does no IO, reads no clock and uses no global RNG: time is an argument, requests
//! leave as typed values through [`Workload::poll_transmit`].

mod arrivals;
mod model;
mod server_times;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

pub use arrivals::Arrivals;
pub use model::{Arrival, JobModel, MAX_LOG_LINES_PER_STEP, MAX_STEPS_PER_JOB, ProfilePoint};
pub use server_times::server_pickup;

use crate::SimTime;
use crate::api::{ApiRequest, ApiResponse, Credential, ErrorKind, Request};
use crate::event::{Event, Outcome, TransportError};
use crate::job::{QueueJobsRequest, SyntheticJob};
use crate::ops::Operation;
use crate::proto::{
    BuildStatus, BuildUpdate, PipelineRun, RunPipelineParameters, RunResult, RunState, TaskResult,
};
use crate::rng::{self, Rng, StreamKind};
use crate::shard::Shard;

/// The `agent` field of the workload's own events (`Event::Op` of its queue calls, and the
/// `JobFinished` of a job canceled before an agent took it).
pub const GENERATOR_AGENT: u32 = u32::MAX;
/// Jobs per queue call at most.
pub const MAX_BATCH: usize = 1_000;
/// Pause between attempts to find the pool id.
pub const POOL_RETRY: Duration = Duration::from_secs(1);
/// Cancels waiting for their time at most; beyond it a canceled job runs to its end (counted in
/// `cancels_unsent`).
pub const MAX_PENDING_CANCELS: usize = 1_000_000;
/// How often a followed pipeline run is asked for its state.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(10);
/// Pipeline runs followed at once at most; arrivals past it are not queued (`runs_unsent`).
pub const MAX_FOLLOWED_RUNS: usize = 10_000;
/// A canceled job is canceled this far into its duration at the earliest…
const CANCEL_FROM: f64 = 0.2;
/// …and this much later at the latest (as a fraction of its duration).
const CANCEL_SPREAD: f64 = 0.6;

/// Identifies one call of the workload; the driver hands it back with the answer.
pub type CallId = u64;

/// Where the jobs come from.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Source {
    /// fleetsim's emulator admin extension: `QueueJobs` and `CancelJob`.
    Emulator,
    /// Runs queued through the Pipelines Runs REST API, over these pipelines by weight.
    Pipelines(Vec<PipelineTarget>),
    /// Someone else queues jobs; the workload sends nothing.
    Server,
}

impl Source {
    /// The scenario's name for it (`[jobs] source`).
    pub fn name(&self) -> &'static str {
        match self {
            Source::Emulator => "emulator",
            Source::Pipelines(_) => "pipelines",
            Source::Server => "server",
        }
    }
}

/// One pipeline a `pipelines` source runs (`[[jobs.pipelines]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineTarget {
    /// The pipeline's id (the definition id).
    pub id: u32,
    /// The project it lives in (name or id).
    pub project: String,
    /// Relative weight among the source's pipelines (≥ 1).
    pub weight: u32,
    /// The branch to run (`refs/heads/main`); `None`: the pipeline's default branch.
    pub branch: Option<String>,
}

/// Everything a workload needs to know.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Where jobs come from.
    pub source: Source,
    /// When jobs arrive.
    pub arrival: Arrival,
    /// What each job is.
    pub jobs: JobModel,
    /// The pool the jobs go to, looked up by name.
    pub pool_name: String,
    /// The credential of every call (the PAT, as Basic).
    pub credential: Credential,
    /// Jobs arrive before this much run time has passed.
    pub duration: Duration,
    /// Which arrivals this process queues: arrival k (0-based) when `shard.has_job(k)`. Every
    /// shard draws every arrival and its job (see [`Workload`]), so the shards together queue
    /// exactly the unsharded jobs. [`Shard::WHOLE`] queues them all.
    pub shard: Shard,
}

/// What the workload asks its driver to do.
#[must_use]
#[derive(Clone, Debug, PartialEq)]
pub enum WorkloadOutput {
    /// Send `request` and report its answer with `id` through [`Workload::handle_response`] or
    /// [`Workload::handle_failure`]. Never two in flight at once.
    Send {
        id: CallId,
        op: Operation,
        request: Request,
    },
}

/// Why the workload wants to wake up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadTimer {
    /// Retry the pool lookup.
    PoolRetry,
    /// The next job arrival is due.
    Arrival,
    /// The next cancel is due.
    Cancel,
    /// A followed pipeline run is due for a state check.
    FollowRun,
}

/// What the workload did, for the run outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    /// Jobs the server accepted.
    pub queued: u64,
    /// Jobs whose queue call failed (not counted as queued; the error is in the report).
    pub refused: u64,
    /// Jobs that were due but not sent because the run stopped first.
    pub unsent: u64,
    /// Cancel calls sent (one per job drawn as canceled whose time came within the run).
    pub cancels_sent: u64,
    /// Of those, jobs still queued: the server finished them as canceled at once.
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
    /// Pipeline runs: what the `pipelines` source queued and how the runs ended.
    pub runs: RunStats,
}

/// What a `pipelines` source did with its runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Runs the server accepted.
    pub queued: u64,
    /// Run requests that failed (the error is in the report under `queue_jobs`).
    pub refused: u64,
    /// Arrivals not queued: the followed-runs bound was reached, or the run stopped first.
    pub unsent: u64,
    /// Runs seen completed…
    pub completed: u64,
    /// …of which succeeded,
    pub succeeded: u64,
    /// …failed,
    pub failed: u64,
    /// …canceled,
    pub canceled: u64,
    /// …or ended with a result this client does not know.
    pub other: u64,
    /// Runs still not completed when the run ended.
    pub unfinished: u64,
    /// State checks that failed (the run is asked again later).
    pub follow_errors: u64,
    /// Cancels sent (`PATCH …/build/builds/{runId}` with `status: cancelling`)…
    pub cancels_sent: u64,
    /// …of which the server took (the run was canceling or already completed),
    pub cancels_delivered: u64,
    /// …or that failed.
    pub cancel_errors: u64,
    /// Cancels whose time fell after the run's end.
    pub cancels_unsent: u64,
}

/// What the call in flight is for.
#[derive(Clone, Debug)]
enum Purpose {
    PoolLookup,
    /// Jobs at these intended times, each with its cancel delay if drawn as canceled.
    Queue(Vec<(SimTime, Option<Duration>)>),
    Cancel(u64),
    /// A pipeline run of `pipelines[index]`, with its cancel delay if drawn as canceled.
    RunPipeline(usize, Option<Duration>),
    /// A cancel of a pipeline run.
    CancelRun,
    /// A state check of a followed run.
    FollowRun(FollowedRun),
}

/// A pipeline run being followed to its end.
#[derive(Clone, Debug)]
struct FollowedRun {
    /// When to ask next.
    at: SimTime,
    /// Index into the source's pipelines.
    pipeline: usize,
    run_id: u64,
}

#[derive(Clone, Debug)]
struct InFlight {
    id: CallId,
    purpose: Purpose,
    /// When the call was due (its latency counts from here).
    intended: SimTime,
}

/// The workload state machine.
///
/// # Drain contract
/// After constructing it and after every `handle_*` call or [`Workload::stop`], the driver
/// drains [`Workload::poll_transmit`] until it returns `None` (sending each call), drains
/// [`Workload::poll_event`] into its recorder, and then asks [`Workload::poll_timeout`] for the
/// next wake-up; at that time (or later) it calls [`Workload::handle_timeout`]. Each answer goes
/// back with the `CallId` it was sent with. Once [`Workload::is_done`] is true (after `stop` and
/// the last answer), nothing more will come out.
pub struct Workload {
    config: WorkloadConfig,
    arrivals: Arrivals,
    /// The number of the next arrival `arrivals` hands out (0-based, over the whole run's
    /// sequence, whichever shard queues it).
    arrival_seq: u64,
    /// Draws the jobs themselves (the arrival times have their own stream).
    job_rng: Rng,
    /// Draws when into a canceled job its cancel comes (its own stream, so the job stream
    /// stays aligned however many jobs are canceled).
    cancel_rng: Rng,
    pool_id: Option<u32>,
    /// When the next pool lookup may go out (`None`: no lookup wanted).
    pool_retry_at: Option<SimTime>,
    inflight: Option<InFlight>,
    next_id: CallId,
    /// Min-heap of (cancel time, request id).
    cancels: BinaryHeap<Reverse<(SimTime, u64)>>,
    /// Picks the pipeline of each run by weight (its own stream).
    pick_rng: Rng,
    /// Min-heap of (cancel time, run id, pipeline index) of runs drawn as canceled.
    run_cancels: BinaryHeap<Reverse<(SimTime, u64, usize)>>,
    /// Followed runs in check order (every run waits the same `FOLLOW_EVERY`, so FIFO is
    /// time order).
    followed: VecDeque<FollowedRun>,
    stopped: bool,
    outbox: VecDeque<WorkloadOutput>,
    events: VecDeque<Event>,
    stats: WorkloadStats,
}

impl Workload {
    /// A workload for `config`, its streams derived from `seed` (the run's seed).
    pub fn new(config: WorkloadConfig, seed: u64) -> Workload {
        // A server source queues nothing itself, whatever the arrival process says (the
        // scenario refuses that combination; this keeps the machine honest on its own).
        let arrival = match config.source {
            Source::Server => &Arrival::None,
            Source::Emulator | Source::Pipelines(_) => &config.arrival,
        };
        let arrivals = Arrivals::new(
            arrival,
            rng::stream(seed, StreamKind::Jobs, 0),
            config.duration,
        );
        // Nothing to queue, nothing to look up: a run without jobs sends nothing at all.
        let wants_pool = config.source == Source::Emulator && arrivals.peek().is_some();
        let mut w = Workload {
            config,
            arrivals,
            arrival_seq: 0,
            job_rng: rng::stream(seed, StreamKind::Jobs, 1),
            cancel_rng: rng::stream(seed, StreamKind::Jobs, 2),
            pool_id: None,
            pool_retry_at: wants_pool.then_some(SimTime::ZERO),
            inflight: None,
            next_id: 0,
            cancels: BinaryHeap::new(),
            pick_rng: rng::stream(seed, StreamKind::Jobs, 3),
            followed: VecDeque::new(),
            run_cancels: BinaryHeap::new(),
            stopped: false,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: WorkloadStats::default(),
        };
        w.skip_foreign();
        // Only this shard's arrivals decide whether the pool is wanted.
        if w.arrivals.peek().is_none() {
            w.pool_retry_at = None;
        }
        w.advance(SimTime::ZERO);
        w
    }

    /// Time passed: send whatever is due.
    pub fn handle_timeout(&mut self, now: SimTime) {
        self.advance(now);
    }

    /// The answer to call `id`.
    pub fn handle_response(&mut self, now: SimTime, id: CallId, resp: ApiResponse) {
        self.settle(now, id, Ok(resp));
    }

    /// Call `id` failed without an answer (`Outcome::Transport` or `Outcome::Timeout`).
    pub fn handle_failure(&mut self, now: SimTime, id: CallId, outcome: Outcome) {
        self.settle(now, id, Err(outcome));
    }

    /// Call `id` failed on the way (the agent's vocabulary; see [`Workload::handle_failure`]).
    pub fn handle_transport_error(&mut self, now: SimTime, id: CallId, err: TransportError) {
        self.handle_failure(now, id, Outcome::Transport(err));
    }

    /// One call ended, answered or not: hand the result to what the call was for.
    fn settle(&mut self, now: SimTime, id: CallId, result: Result<ApiResponse, Outcome>) {
        let Some(call) = self.take_inflight(id) else {
            return;
        };
        match call.purpose {
            Purpose::PoolLookup => match result {
                Ok(resp) => self.pool_found(now, resp),
                Err(_) => self.pool_retry_at = Some(now + POOL_RETRY),
            },
            Purpose::Queue(due) => self.queued(now, call.intended, &due, result),
            Purpose::Cancel(request_id) => self.canceled(now, request_id, result),
            Purpose::RunPipeline(index, cancel) => {
                self.run_queued(now, call.intended, (index, cancel), result);
            }
            Purpose::CancelRun => self.run_canceled(result),
            Purpose::FollowRun(run) => self.run_checked(now, run, result),
        }
        self.advance(now);
    }

    /// The run is over: nothing new goes out. Arrivals already due but not sent count as
    /// `unsent`, waiting cancels as `cancels_unsent`. A call in flight may still be answered.
    pub fn stop(&mut self, now: SimTime) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.pool_retry_at = None;
        let now_d = now.saturating_since(SimTime::ZERO);
        // Counted, never stepped through: at an absurd rate the due arrivals have no end.
        let first = self.arrival_seq;
        let due = self.arrivals.skip_through(now_d);
        self.arrival_seq = first.saturating_add(due);
        // Other shards' arrivals are those shards' unsent.
        let unsent = self.config.shard.jobs_among(first, due);
        if matches!(self.config.source, Source::Pipelines(_)) {
            self.stats.runs.unsent = self.stats.runs.unsent.saturating_add(unsent);
        } else {
            self.stats.unsent = self.stats.unsent.saturating_add(unsent);
        }
        self.stats.cancels_unsent += self.cancels.len() as u64;
        self.cancels.clear();
        self.stats.runs.unfinished += self.followed.len() as u64;
        self.followed.clear();
        self.stats.runs.cancels_unsent += self.run_cancels.len() as u64;
        self.run_cancels.clear();
    }

    /// The next call to send.
    pub fn poll_transmit(&mut self) -> Option<WorkloadOutput> {
        self.outbox.pop_front()
    }

    /// The next telemetry event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Workload::handle_timeout`] next, and why; `None` while a call is in flight
    /// (its answer comes first) or when nothing is left to do.
    pub fn poll_timeout(&self) -> Option<(SimTime, WorkloadTimer)> {
        if self.inflight.is_some() || self.stopped {
            return None;
        }
        if let Some(at) = self.pool_retry_at {
            return Some((at, WorkloadTimer::PoolRetry));
        }
        let cancel = self
            .cancels
            .peek()
            .map(|Reverse((at, _))| *at)
            .into_iter()
            .chain(self.run_cancels.peek().map(|Reverse((at, ..))| *at))
            .min()
            .map(|at| (at, WorkloadTimer::Cancel));
        let arrival = self
            .arrivals
            .peek()
            .map(|d| (SimTime::ZERO + d, WorkloadTimer::Arrival));
        let follow = self
            .followed
            .front()
            .map(|f| (f.at, WorkloadTimer::FollowRun));
        // On a tie the order is `advance`'s: cancel, arrival, state check.
        [cancel, arrival, follow]
            .into_iter()
            .flatten()
            .reduce(|best, next| if next.0 < best.0 { next } else { best })
    }

    /// Nothing in flight and nothing left to send: the driver may stop driving.
    pub fn is_done(&self) -> bool {
        self.inflight.is_none()
            && self.outbox.is_empty()
            && (self.stopped || (self.poll_timeout().is_none()))
    }

    /// What the workload did so far.
    pub fn stats(&self) -> WorkloadStats {
        self.stats
    }

    /// The pool the jobs go to, once looked up.
    pub fn pool_id(&self) -> Option<u32> {
        self.pool_id
    }

    /// If no call is in flight, start the next due one: the pool lookup, a due cancel, or the
    /// due arrivals as one batch (a pipeline run each, for the `pipelines` source), then a due
    /// state check of a followed run.
    fn advance(&mut self, now: SimTime) {
        if self.inflight.is_some() || self.stopped {
            return;
        }
        if let Source::Pipelines(pipelines) = &self.config.source {
            let pipelines = pipelines.clone();
            self.advance_pipelines(now, &pipelines);
            return;
        }
        if let Some(at) = self.pool_retry_at {
            if at <= now {
                self.pool_retry_at = None;
                let call = ApiRequest::ListPools {
                    pool_name: Some(self.config.pool_name.clone()),
                };
                self.send(now, Purpose::PoolLookup, Operation::PoolLookup, call);
            }
            return;
        }
        let Some(pool_id) = self.pool_id else {
            return;
        };
        if let Some(&Reverse((at, request_id))) = self.cancels.peek()
            && at <= now
        {
            self.cancels.pop();
            self.stats.cancels_sent += 1;
            let call = ApiRequest::CancelJob {
                pool_id,
                request_id,
            };
            self.send(at, Purpose::Cancel(request_id), Operation::QueueJobs, call);
            return;
        }
        let now_d = now.saturating_since(SimTime::ZERO);
        let mut due = Vec::new();
        let mut jobs = Vec::new();
        while due.len() < MAX_BATCH && self.arrivals.peek().is_some_and(|t| t <= now_d) {
            let Some(t) = self.take_arrival() else {
                break;
            };
            let (job, cancel) = self.draw();
            due.push((SimTime::ZERO + t, cancel));
            jobs.push(job);
            self.skip_foreign();
        }
        let Some(&(intended, _)) = due.first() else {
            return;
        };
        let call = ApiRequest::QueueJobs {
            pool_id,
            request: QueueJobsRequest {
                count: 0,
                template: None,
                jobs,
            },
        };
        self.send(intended, Purpose::Queue(due), Operation::QueueJobs, call);
    }

    /// The `pipelines` source's step: queue a due arrival as a run, else check a due run.
    fn advance_pipelines(&mut self, now: SimTime, pipelines: &[PipelineTarget]) {
        if let Some(&Reverse((at, run_id, index))) = self.run_cancels.peek()
            && at <= now
            && let Some(p) = pipelines.get(index)
        {
            self.run_cancels.pop();
            self.stats.runs.cancels_sent += 1;
            let call = ApiRequest::UpdateBuild {
                project: p.project.clone(),
                build_id: run_id,
                update: BuildUpdate {
                    status: Some(BuildStatus::Cancelling),
                },
            };
            self.send(at, Purpose::CancelRun, Operation::QueueJobs, call);
            return;
        }
        let now_d = now.saturating_since(SimTime::ZERO);
        // At most a batch's worth of arrivals per wake-up, queued or counted: the rest wait for
        // the next one (due at once), so the driver sees its stop signal between batches.
        for _ in 0..MAX_BATCH {
            if self.arrivals.peek().is_none_or(|t| t > now_d) {
                break;
            }
            let Some(t) = self.take_arrival() else {
                break;
            };
            // Drawn before the bound is checked, so the streams advance once per arrival
            // whatever the server did: what other shards draw for their arrivals.
            let index = pick_weighted(pipelines, &mut self.pick_rng);
            let cancel = self.draw_run_cancel();
            self.skip_foreign();
            if self.followed.len() >= MAX_FOLLOWED_RUNS {
                self.stats.runs.unsent += 1;
                continue;
            }
            let Some(p) = pipelines.get(index) else {
                return;
            };
            let resources = p.branch.as_ref().map(
                |branch| serde_json::json!({ "repositories": { "self": { "refName": branch } } }),
            );
            let call = ApiRequest::RunPipeline {
                project: p.project.clone(),
                pipeline_id: p.id,
                params: RunPipelineParameters {
                    resources,
                    ..RunPipelineParameters::default()
                },
            };
            let intended = SimTime::ZERO + t;
            let purpose = Purpose::RunPipeline(index, cancel);
            self.send(intended, purpose, Operation::QueueJobs, call);
            return;
        }
        if let Some(front) = self.followed.front()
            && front.at <= now
            && let Some(run) = self.followed.pop_front()
            && let Some(p) = pipelines.get(run.pipeline)
        {
            let call = ApiRequest::GetPipelineRun {
                project: p.project.clone(),
                pipeline_id: p.id,
                run_id: run.run_id,
            };
            let at = run.at;
            self.send(at, Purpose::FollowRun(run), Operation::QueueJobs, call);
        }
    }

    /// The answer to a run request: follow the run, and time the call as the workload's
    /// queue call.
    fn run_queued(
        &mut self,
        now: SimTime,
        intended: SimTime,
        (pipeline, cancel): (usize, Option<Duration>),
        result: Result<ApiResponse, Outcome>,
    ) {
        let outcome = match result {
            Ok(ApiResponse::PipelineRun(run)) => {
                self.stats.runs.queued += 1;
                if let Some(delay) = cancel {
                    if self.run_cancels.len() < MAX_PENDING_CANCELS {
                        self.run_cancels
                            .push(Reverse((intended + delay, run.id, pipeline)));
                    } else {
                        self.stats.runs.cancels_unsent += 1;
                    }
                }
                self.follow_or_count(now, pipeline, &run);
                Outcome::Ok
            }
            Ok(ApiResponse::Error(e)) => {
                self.stats.runs.refused += 1;
                Outcome::Api(e.kind)
            }
            Ok(_) => {
                self.stats.runs.refused += 1;
                Outcome::Protocol
            }
            Err(outcome) => {
                self.stats.runs.refused += 1;
                outcome
            }
        };
        self.events.push_back(Event::Op {
            agent: GENERATOR_AGENT,
            op: Operation::QueueJobs,
            intended,
            done: now,
            outcome,
        });
    }

    /// Whether a run is drawn as canceled, and how long after its intended queue time: the
    /// cancel decision from `Jobs` stream 1 (as for synthetic jobs), the time 20–80 % into a
    /// length drawn from `jobs.duration` (the scenario's estimate of a run's length) on stream 2.
    fn draw_run_cancel(&mut self) -> Option<Duration> {
        run_cancel(&self.config.jobs, (&mut self.job_rng, &mut self.cancel_rng))
    }

    /// The answer to a run cancel: the server took it (the run is canceling, or had already
    /// completed), or it failed.
    fn run_canceled(&mut self, result: Result<ApiResponse, Outcome>) {
        match result {
            Ok(ApiResponse::Build(_)) => self.stats.runs.cancels_delivered += 1,
            _ => self.stats.runs.cancel_errors += 1,
        }
    }

    /// The answer to a state check: count a completed run, follow the others again.
    fn run_checked(
        &mut self,
        now: SimTime,
        run: FollowedRun,
        result: Result<ApiResponse, Outcome>,
    ) {
        match result {
            Ok(ApiResponse::PipelineRun(state)) => self.follow_or_count(now, run.pipeline, &state),
            _ => {
                self.stats.runs.follow_errors += 1;
                self.followed.push_back(FollowedRun {
                    at: now + FOLLOW_EVERY,
                    ..run
                });
            }
        }
    }

    fn follow_or_count(&mut self, now: SimTime, pipeline: usize, run: &PipelineRun) {
        if run.state != RunState::Completed {
            self.followed.push_back(FollowedRun {
                at: now + FOLLOW_EVERY,
                pipeline,
                run_id: run.id,
            });
            return;
        }
        let r = &mut self.stats.runs;
        r.completed += 1;
        match run.result {
            Some(RunResult::Succeeded) => r.succeeded += 1,
            Some(RunResult::Failed) => r.failed += 1,
            Some(RunResult::Canceled) => r.canceled += 1,
            Some(RunResult::Unknown) | None => r.other += 1,
        }
    }

    /// The next arrival, numbered; the caller then makes its draws and calls
    /// [`Workload::skip_foreign`].
    fn take_arrival(&mut self) -> Option<Duration> {
        let t = self.arrivals.next_arrival()?;
        self.arrival_seq += 1;
        Some(t)
    }

    /// Pass over the arrivals other shards queue, up to this shard's next one, making each
    /// one's draws exactly as the shard that queues it does (job, cancel decision, cancel time;
    /// pipeline pick and run cancel for `pipelines`), so every stream stays where the unsharded
    /// run has it and this shard's jobs are the unsharded run's jobs. Eager, so `peek` (the
    /// wake-up time, `is_done`) shows this shard's next arrival. A no-op for the whole run.
    fn skip_foreign(&mut self) {
        while self.arrivals.peek().is_some() && !self.config.shard.has_job(self.arrival_seq) {
            let _ = self.arrivals.next_arrival();
            self.arrival_seq += 1;
            match &self.config.source {
                Source::Pipelines(pipelines) => {
                    let _ = pick_weighted(pipelines, &mut self.pick_rng);
                    let rngs = (&mut self.job_rng, &mut self.cancel_rng);
                    let _ = run_cancel(&self.config.jobs, rngs);
                }
                Source::Emulator | Source::Server => {
                    let _ = self.draw();
                }
            }
        }
    }

    /// One job and, when it is drawn as canceled, how long after its queue time the cancel
    /// comes. The order of draws is the contract that keeps both drivers' jobs identical.
    fn draw(&mut self) -> (SyntheticJob, Option<Duration>) {
        let job = self.config.jobs.sample_job(&mut self.job_rng);
        let cancel = self.config.jobs.sample_cancel(&mut self.job_rng);
        let delay = cancel.then(|| cancel_delay(&job, &mut self.cancel_rng));
        (job, delay)
    }

    fn send(&mut self, intended: SimTime, purpose: Purpose, op: Operation, call: ApiRequest) {
        self.next_id += 1;
        let id = self.next_id;
        self.inflight = Some(InFlight {
            id,
            purpose,
            intended,
        });
        let request = Request {
            credential: self.config.credential.clone(),
            call,
        };
        self.outbox
            .push_back(WorkloadOutput::Send { id, op, request });
    }

    fn take_inflight(&mut self, id: CallId) -> Option<InFlight> {
        if self.inflight.as_ref().is_some_and(|c| c.id == id) {
            self.inflight.take()
        } else {
            None
        }
    }

    fn pool_found(&mut self, now: SimTime, resp: ApiResponse) {
        let name = &self.config.pool_name;
        let found = match resp {
            ApiResponse::Pools(list) => list
                .value
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(name))
                .map(|p| p.id),
            _ => None,
        };
        match found {
            Some(id) => {
                self.pool_id = Some(id);
                self.stats.pool_id = Some(id);
            }
            None => self.pool_retry_at = Some(now + POOL_RETRY),
        }
    }

    /// The answer to a queue call: report each accepted job at its intended time and schedule
    /// the cancels of those drawn as canceled.
    fn queued(
        &mut self,
        now: SimTime,
        intended: SimTime,
        due: &[(SimTime, Option<Duration>)],
        result: Result<ApiResponse, Outcome>,
    ) {
        let outcome = match result {
            Ok(ApiResponse::QueuedJobs(queued)) => {
                for (&(at, delay), job) in due.iter().zip(&queued.value) {
                    self.events.push_back(Event::JobQueued {
                        request_id: job.request_id,
                        at,
                    });
                    if let Some(delay) = delay {
                        if self.cancels.len() < MAX_PENDING_CANCELS {
                            self.cancels.push(Reverse((at + delay, job.request_id)));
                        } else {
                            self.stats.cancels_unsent += 1;
                        }
                    }
                }
                let accepted = queued.value.len().min(due.len()) as u64;
                self.stats.queued += accepted;
                self.stats.refused += due.len() as u64 - accepted;
                Outcome::Ok
            }
            Ok(ApiResponse::Error(e)) => {
                self.stats.refused += due.len() as u64;
                Outcome::Api(e.kind)
            }
            Ok(_) => {
                self.stats.refused += due.len() as u64;
                Outcome::Protocol
            }
            Err(outcome) => {
                self.stats.refused += due.len() as u64;
                outcome
            }
        };
        self.events.push_back(Event::Op {
            agent: GENERATOR_AGENT,
            op: Operation::QueueJobs,
            intended,
            done: now,
            outcome,
        });
    }

    /// The answer to a cancel call: count what the server did with the job.
    fn canceled(&mut self, now: SimTime, request_id: u64, result: Result<ApiResponse, Outcome>) {
        match result {
            Ok(ApiResponse::JobRequest(job)) if job.result == Some(TaskResult::Canceled) => {
                // Finished by the server without ever reaching an agent: nobody else will
                // report this job's end.
                self.stats.canceled_queued += 1;
                self.events.push_back(Event::JobFinished {
                    agent: GENERATOR_AGENT,
                    request_id,
                    result: TaskResult::Canceled,
                    at: now,
                });
            }
            Ok(ApiResponse::JobRequest(_)) => self.stats.cancels_delivered += 1,
            Ok(ApiResponse::Error(e)) if e.kind == ErrorKind::JobNotFound => {
                self.stats.cancels_too_late += 1;
            }
            Ok(_) | Err(_) => self.stats.cancel_errors += 1,
        }
    }
}

/// See [`Workload::draw_run_cancel`]: `rngs` are `Jobs` streams 1 and 2.
fn run_cancel(jobs: &JobModel, (job_rng, cancel_rng): (&mut Rng, &mut Rng)) -> Option<Duration> {
    if !jobs.sample_cancel(job_rng) {
        return None;
    }
    let length = jobs.duration.sample(cancel_rng);
    let fraction = CANCEL_FROM + CANCEL_SPREAD * model::unit(cancel_rng);
    Some(Duration::from_millis(
        ((length.as_millis() as f64 * fraction).round() as u64).max(1),
    ))
}

/// The index of a pipeline drawn by weight.
fn pick_weighted(pipelines: &[PipelineTarget], rng: &mut Rng) -> usize {
    let total: u64 = pipelines.iter().map(|p| u64::from(p.weight)).sum();
    let mut x = (model::unit(rng) * total as f64) as u64;
    for (i, p) in pipelines.iter().enumerate() {
        if x < u64::from(p.weight) {
            return i;
        }
        x -= u64::from(p.weight);
    }
    pipelines.len().saturating_sub(1)
}

/// How long after its intended queue time a canceled job is canceled: 20–80 % of its duration
/// (at least a millisecond), drawn from `rng`.
fn cancel_delay(job: &SyntheticJob, rng: &mut Rng) -> Duration {
    let total_ms: u64 = job.steps.iter().map(|s| s.duration_ms).sum();
    let u = model::unit(rng);
    let ms = (total_ms as f64 * (CANCEL_FROM + CANCEL_SPREAD * u)).round() as u64;
    Duration::from_millis(ms.max(1))
}

#[cfg(test)]
mod tests;
