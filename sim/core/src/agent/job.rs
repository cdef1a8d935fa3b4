//! One running job: the listener's lock renewals and the worker's plan-hub traffic, simulated
//! from the steps' `FleetsimSynthetic` inputs (`job::inputs`) or, for the steps of a real
//! pipeline (Checkout, CmdLine, …), from the agent's `StepModel` (module `steps`).
//!
//! The job's own timeline record (id = the message's `jobId`) goes InProgress when the worker
//! starts and Completed with the job's result at the end. Per step, as the real `StepsRunner`:
//! the step's condition is evaluated against the job's result so far (a step that does not run
//! prints the skip notice and completes `skipped`); its timeline record (id = the step's `id`)
//! goes InProgress, a log (`logs\{recordId}`) is created, log lines appear at an even rate over
//! the step's duration (some print a secret, masked before they leave), the live console gets
//! them in feed batches of at most 100 lines (posted to the job's record, keyed by `stepId`),
//! the log content is uploaded every second, an attachment is uploaded at the step's end and the
//! record goes Completed with the step's result; `failed` and `succeededWithIssues` merge into
//! the job's result. Then the `JobCompleted` event (5 tries, 5 s apart).
//!
//! Work is *coalesced*, not queued: each kind of call is a "want" with the time it became due,
//! so the pending work is bounded by construction and the one job connection always sends the
//! most urgent kind first.
//!
//! This module never sends anything itself: the agent asks [`JobRun::next_call`] whenever the
//! job connection is free.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;

use super::config::AgentConfig;
use super::masking::JobSecrets;
use super::steps::{self, Condition, Look, StepText};
use super::timer::{JOB_TIMERS, Timer, TimerTable, job_slot};
use crate::SimTime;
use crate::api::{
    ApiRequest, ApiResponse, Credential, Endpoint, ErrorKind, PlanScope, Request, TokenGrant,
};
use crate::event::{Event, Outcome};
use crate::job::inputs;
use crate::ops::Operation;
use crate::proto::{
    ACCESS_TOKEN_PARAMETER, AgentJobRequestMessage, EMPTY_GUID, EVENT_JOB_COMPLETED, JobEvent,
    JobRequestUpdate, ListOf, SYSTEM_VSS_CONNECTION, TaskLogCreate, TaskLogReference, TaskResult,
    TimelineRecord, TimelineRecordFeedLinesWrapper, TimelineRecordState,
};

/// Log lines one step may print at most (bounds the work of one step).
const STEP_LINES_MAX: u32 = 100_000;
/// Lines the live-console buffer holds at most; older lines are dropped, as the real agent
/// drops feed batches it cannot post.
const FEED_BUFFER_LINES_MAX: usize = 1_000;
/// Attempts of a log create before the step's log is given up.
const LOG_CREATE_TRIES: u32 = 3;
/// Pause before retrying a failed job-token rotation.
const ROTATE_RETRY: Duration = Duration::from_secs(5);

/// What the agent lends the job for one call.
pub(crate) struct JobCtx<'a> {
    pub(crate) config: &'a AgentConfig,
    pub(crate) agent: u32,
    pub(crate) pool_id: u32,
    /// The listener token (for lock renewals), `None` while a new one is being fetched.
    pub(crate) listener: Option<&'a str>,
    pub(crate) epoch_unix_ms: u64,
}

/// The kinds of job call, in send priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum JobCall {
    LockRenew,
    Rotate,
    LogCreate,
    Timeline,
    Feed,
    LogAppend,
    Attachment,
    Completion,
}

impl JobCall {
    const ALL: [JobCall; 8] = [
        JobCall::LockRenew,
        JobCall::Rotate,
        JobCall::LogCreate,
        JobCall::Timeline,
        JobCall::Feed,
        JobCall::LogAppend,
        JobCall::Attachment,
        JobCall::Completion,
    ];
}

/// A call the job wants sent now.
pub(crate) struct NextCall {
    pub(crate) call: JobCall,
    pub(crate) op: Operation,
    pub(crate) intended: SimTime,
    pub(crate) request: Request,
    /// Lock renewals and the listener's finish go to the target; the worker's calls go to the
    /// job's server (see [`job_server`]).
    pub(crate) endpoint: Endpoint,
    pub(crate) timeout: Duration,
}

/// Whether the job goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobStatus {
    Running,
    Finished { request_id: u64, result: TaskResult },
}

/// One step's simulated work: read from its inputs (synthetic) or drawn from the step model.
#[derive(Clone, Debug)]
struct StepPlan {
    record_id: String,
    name: String,
    /// What the lines look like.
    look: Look,
    /// The task's name and version (`reference`), for the header lines of a real step.
    task: String,
    version: String,
    /// See `steps::detail`.
    detail: String,
    condition: Condition,
    duration: Duration,
    log_lines: u32,
    secret_lines: u32,
    artifact_bytes: u64,
    /// How the step ends unless the job is canceled.
    result: TaskResult,
}

impl StepPlan {
    /// The step as it runs when its condition is false: the skip notice, at once.
    fn skipped(&self) -> StepPlan {
        StepPlan {
            record_id: self.record_id.clone(),
            name: self.name.clone(),
            look: Look::Skipped,
            task: self.task.clone(),
            version: self.version.clone(),
            detail: self.condition.text().to_string(),
            condition: self.condition,
            duration: Duration::ZERO,
            log_lines: steps::SKIPPED_LINES,
            secret_lines: 0,
            artifact_bytes: 0,
            result: TaskResult::Skipped,
        }
    }
}

/// Where the job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The first lock renewal has not succeeded yet; the worker does not start before it does.
    Locking { tries_left: u32 },
    /// A step runs.
    Running,
    /// The step's time is over; its lines, log and artifact are being flushed.
    Closing,
    /// All steps are done; the timeline is flushed and completion is being reported.
    Finishing,
}

/// A running job (boxed in the agent: idle agents do not pay for it).
pub(crate) struct JobRun {
    request_id: u64,
    job_id: String,
    /// The job's display name (its timeline record's name).
    job_display_name: String,
    plan: PlanScope,
    /// Where the worker's plan-hub and job-token calls go.
    server: Endpoint,
    plan_version: u32,
    timeline_id: String,
    token: String,
    token_expires: Option<SimTime>,
    secrets: JobSecrets,
    steps: Vec<StepPlan>,
    step: usize,
    stage: Stage,
    started: SimTime,
    step_started: SimTime,
    lines_done: u32,
    result: TaskResult,
    canceled: bool,
    timers: TimerTable<7>,
    /// When each `JobCall` kind became due; `SimTime::NEVER` = not wanted.
    want: [SimTime; 8],
    /// The kind of call in flight on the job connection, if any.
    sending: Option<JobCall>,
    renew_errors: u32,
    last_renew_ok: SimTime,
    records: Vec<TimelineRecord>,
    feed: VecDeque<String>,
    feed_next_line: u64,
    feed_batches_this_tick: usize,
    log: Vec<u8>,
    log_id: Option<u64>,
    log_create_tries: u32,
    artifact_pending: bool,
    completion_tries: u32,
}

impl JobRun {
    /// Take the job: the first lock renewal is due now.
    pub(crate) fn start(
        ctx: &JobCtx<'_>,
        now: SimTime,
        msg: AgentJobRequestMessage,
        rng: &mut crate::rng::Rng,
    ) -> Box<JobRun> {
        let config = &ctx.config;
        let endpoint = msg
            .resources
            .endpoints
            .iter()
            .find(|e| e.name == SYSTEM_VSS_CONNECTION);
        let token = endpoint
            .and_then(|e| e.authorization.parameters.get(ACCESS_TOKEN_PARAMETER))
            .cloned()
            .unwrap_or_default();
        let server = job_server(endpoint.map(|e| e.url.as_str()), &msg.variables);
        let token_expires = config.job_token_ttl_hint.map(|ttl| now + ttl);
        let secrets = JobSecrets::from_message(&msg, config.mask_secrets, &config.mask_regexes);
        let steps = msg
            .steps
            .iter()
            .map(|step| step_plan(step, config, rng))
            .collect();
        let mut job = Box::new(JobRun {
            request_id: msg.request_id,
            job_id: msg.job_id.clone(),
            job_display_name: msg.job_display_name.clone(),
            plan: PlanScope {
                scope_identifier: msg.plan.scope_identifier.clone(),
                hub: msg.plan.plan_type.clone(),
                plan_id: msg.plan.plan_id.clone(),
            },
            server,
            plan_version: msg.plan.version,
            timeline_id: msg.timeline.id.clone(),
            token,
            token_expires,
            secrets,
            steps,
            step: 0,
            stage: Stage::Locking {
                tries_left: config.pacing.first_renew_tries.max(1),
            },
            started: now,
            step_started: now,
            lines_done: 0,
            result: TaskResult::Succeeded,
            canceled: false,
            timers: TimerTable::new(),
            want: [SimTime::NEVER; 8],
            sending: None,
            renew_errors: 0,
            last_renew_ok: now,
            records: Vec::new(),
            feed: VecDeque::new(),
            feed_next_line: 1,
            feed_batches_this_tick: 0,
            log: Vec::new(),
            log_id: None,
            log_create_tries: 0,
            artifact_pending: false,
            completion_tries: 0,
        });
        job.want(JobCall::LockRenew, now);
        job
    }

    /// The job request's id.
    pub(crate) fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The earliest job deadline and its timer.
    pub(crate) fn earliest(&self) -> Option<(SimTime, Timer)> {
        self.timers.earliest().map(|(at, s)| (at, JOB_TIMERS[s]))
    }

    /// Clear and return one expired job deadline.
    pub(crate) fn take_expired(&mut self, now: SimTime) -> Option<(SimTime, Timer)> {
        self.timers
            .take_expired(now)
            .map(|(at, s)| (at, JOB_TIMERS[s]))
    }

    /// A job timer fired (deadline `at`, handled at `now`).
    pub(crate) fn on_timer(
        &mut self,
        ctx: &JobCtx<'_>,
        now: SimTime,
        timer: Timer,
        at: SimTime,
        rng: &mut crate::rng::Rng,
        events: &mut VecDeque<Event>,
    ) -> JobStatus {
        let config = &ctx.config;
        match timer {
            Timer::LockRenew => self.want(JobCall::LockRenew, at),
            Timer::TokenRotate => self.want(JobCall::Rotate, at),
            Timer::CompletionRetry => self.want(JobCall::Completion, at),
            Timer::TimelineFlush => {
                if !self.records.is_empty() {
                    self.want(JobCall::Timeline, at);
                }
                self.set_timer(Timer::TimelineFlush, now + config.pacing.timeline_interval);
            }
            Timer::FeedFlush => {
                self.emit_lines(ctx, now, false, rng, events);
                self.feed_batches_this_tick = 0;
                if !self.feed.is_empty() {
                    self.want(JobCall::Feed, at);
                }
                let fast = now - self.started < config.pacing.feed_fast_period;
                let period = if fast {
                    config.pacing.feed_interval_fast
                } else {
                    config.pacing.feed_interval
                };
                self.set_timer(Timer::FeedFlush, now + period);
            }
            Timer::LogFlush => {
                if !self.log.is_empty() && self.log_id.is_some() {
                    self.want(JobCall::LogAppend, at);
                }
                self.set_timer(Timer::LogFlush, now + config.pacing.log_upload_interval);
            }
            Timer::StepEnd => self.end_step(ctx, now, rng, events),
            _ => {}
        }
        self.progress(ctx, now)
    }

    /// The most urgent call due now, built with masked content; `None` if nothing is due.
    pub(crate) fn next_call(
        &mut self,
        ctx: &JobCtx<'_>,
        now: SimTime,
        _rng: &mut crate::rng::Rng,
        _events: &mut VecDeque<Event>,
    ) -> Option<NextCall> {
        if self.sending.is_some() {
            return None;
        }
        for call in JobCall::ALL {
            let since = self.want[call as usize];
            if since > now {
                continue;
            }
            if let Some(next) = self.build(ctx, call, since) {
                self.want[call as usize] = SimTime::NEVER;
                self.sending = Some(call);
                return Some(next);
            }
            if self.nothing_to_send(call) {
                // The work went away (already flushed): a stale want must not hold a step open.
                self.want[call as usize] = SimTime::NEVER;
            }
        }
        None
    }

    /// The answer to the job call `call`.
    pub(crate) fn on_reply(
        &mut self,
        ctx: &JobCtx<'_>,
        now: SimTime,
        call: JobCall,
        reply: Result<ApiResponse, Outcome>,
        rng: &mut crate::rng::Rng,
        events: &mut VecDeque<Event>,
    ) -> JobStatus {
        self.sending = None;
        match call {
            JobCall::LockRenew => {
                if let Some(status) = self.on_renew(ctx, now, reply, rng) {
                    return status;
                }
            }
            JobCall::Rotate => self.on_rotate(ctx, now, reply, events),
            JobCall::LogCreate => match reply {
                Ok(ApiResponse::Log(log)) => {
                    self.log_id = Some(log.id);
                    if let Some(step) = self.steps.get(self.step) {
                        let record = TimelineRecord {
                            id: step.record_id.clone(),
                            log: Some(TaskLogReference { id: log.id }),
                            ..Default::default()
                        };
                        self.push_record(record);
                    }
                }
                _ => {
                    self.log_create_tries += 1;
                    if self.log_create_tries < LOG_CREATE_TRIES {
                        self.want(JobCall::LogCreate, now);
                    }
                }
            },
            JobCall::Completion => {
                let give_up = matches!(
                    reply,
                    Err(Outcome::Api(
                        ErrorKind::PlanNotFound | ErrorKind::PlanSecurity
                    ))
                );
                self.completion_tries += 1;
                if reply.is_ok()
                    || give_up
                    || self.completion_tries >= ctx.config.pacing.completion_tries
                {
                    return self.finished();
                }
                self.set_timer(
                    Timer::CompletionRetry,
                    now + ctx.config.pacing.completion_retry,
                );
            }
            // Failed timeline, feed, log and attachment calls are dropped, as the real worker's
            // queue drops them; the step goes on.
            JobCall::Timeline | JobCall::Feed | JobCall::LogAppend => {}
            JobCall::Attachment => self.artifact_pending = false,
        }
        if call == JobCall::Feed && !self.feed.is_empty() {
            let closing = self.stage == Stage::Closing;
            if closing || self.feed_batches_this_tick < ctx.config.pacing.feed_batches_per_tick_max
            {
                self.want(JobCall::Feed, now);
            }
        }
        if call == JobCall::LogAppend && !self.log.is_empty() && self.stage == Stage::Closing {
            self.want(JobCall::LogAppend, now);
        }
        self.progress(ctx, now)
    }

    /// Send `call` again (its answer was a 401 that a new listener token will cure).
    pub(crate) fn redo(&mut self, call: JobCall, now: SimTime) {
        self.sending = None;
        self.want(call, now);
    }

    /// A `JobCancellation` for `job_id`: end the running step now and skip the rest.
    pub(crate) fn cancel(&mut self, ctx: &JobCtx<'_>, now: SimTime, job_id: &str) -> JobStatus {
        if job_id != self.job_id || self.canceled {
            return JobStatus::Running;
        }
        self.canceled = true;
        self.result = TaskResult::Canceled;
        match self.stage {
            Stage::Locking { .. } => {
                // The worker never started: report the cancellation right away.
                self.stage = Stage::Finishing;
                self.timers.clear(job_slot(Timer::LockRenew).unwrap_or(0));
                self.want[JobCall::LockRenew as usize] = SimTime::NEVER;
            }
            Stage::Running => self.set_timer(Timer::StepEnd, now),
            Stage::Closing | Stage::Finishing => {}
        }
        self.progress(ctx, now)
    }

    // ------------------------------------------------------------------------------------------

    fn on_renew(
        &mut self,
        ctx: &JobCtx<'_>,
        now: SimTime,
        reply: Result<ApiResponse, Outcome>,
        rng: &mut crate::rng::Rng,
    ) -> Option<JobStatus> {
        let config = &ctx.config;
        let ok = matches!(reply, Ok(ApiResponse::JobRequest(_)));
        let job_gone = matches!(
            reply,
            Err(Outcome::Api(
                ErrorKind::JobNotFound | ErrorKind::JobTokenExpired
            ))
        );
        if ok {
            self.renew_errors = 0;
            self.last_renew_ok = now;
            self.set_timer(Timer::LockRenew, now + config.pacing.lock_renew_interval);
            if let Stage::Locking { .. } = self.stage {
                self.begin(ctx, now);
            }
            return None;
        }
        match self.stage {
            Stage::Locking { tries_left } => {
                if job_gone || tries_left <= 1 {
                    // The worker never started; the server requeues the job when the lease ends.
                    return Some(self.abandon());
                }
                self.stage = Stage::Locking {
                    tries_left: tries_left - 1,
                };
                let delay = config.pacing.first_renew_retry.sample(rng);
                self.set_timer(Timer::LockRenew, now + delay);
            }
            _ => {
                if job_gone || now - self.last_renew_ok >= config.pacing.renew_give_up_after {
                    return Some(self.abandon());
                }
                self.renew_errors += 1;
                let dist = if self.renew_errors <= 5 {
                    &config.pacing.renew_retry
                } else {
                    &config.pacing.renew_retry_later
                };
                let delay = dist.sample(rng);
                self.set_timer(Timer::LockRenew, now + delay);
            }
        }
        None
    }

    fn on_rotate(
        &mut self,
        ctx: &JobCtx<'_>,
        now: SimTime,
        reply: Result<ApiResponse, Outcome>,
        events: &mut VecDeque<Event>,
    ) {
        match reply {
            Ok(ApiResponse::Token(t)) => {
                self.token = t.access_token;
                self.secrets.add_value(&self.token.clone());
                self.token_expires = Some(now + Duration::from_secs(t.expires_in));
                events.push_back(Event::TokenRotated {
                    agent: ctx.agent,
                    at: now,
                });
                self.schedule_rotation(ctx, now);
            }
            _ => {
                let still_valid = self.token_expires.is_none_or(|exp| now < exp);
                if still_valid {
                    self.set_timer(Timer::TokenRotate, now + ROTATE_RETRY);
                }
            }
        }
    }

    /// The first renewal succeeded: the worker starts the first step and its queues.
    fn begin(&mut self, ctx: &JobCtx<'_>, now: SimTime) {
        let config = &ctx.config;
        self.stage = Stage::Running;
        self.started = now;
        // The job's own record: the worker starts the job context before the first step.
        self.push_record(TimelineRecord {
            id: self.job_id.clone(),
            kind: Some("Job".to_string()),
            name: Some(self.job_display_name.clone()),
            state: Some(TimelineRecordState::InProgress),
            start_time: Some(wall(ctx, now)),
            worker_name: Some(config.agent_name(ctx.agent)),
            ..Default::default()
        });
        self.set_timer(Timer::TimelineFlush, now + config.pacing.timeline_interval);
        self.set_timer(Timer::FeedFlush, now + config.pacing.feed_interval_fast);
        self.set_timer(Timer::LogFlush, now + config.pacing.log_upload_interval);
        self.schedule_rotation(ctx, now);
        self.start_step(ctx, now);
    }

    fn schedule_rotation(&mut self, ctx: &JobCtx<'_>, now: SimTime) {
        let (Some(before), Some(expires)) =
            (ctx.config.job_token_rotate_before, self.token_expires)
        else {
            return;
        };
        let at = SimTime::from_micros(
            expires
                .as_micros()
                .saturating_sub(before.as_micros() as u64),
        );
        // Never rotate in a tight loop when the token lives shorter than the margin.
        self.set_timer(Timer::TokenRotate, at.max(now + Duration::from_secs(1)));
    }

    fn start_step(&mut self, ctx: &JobCtx<'_>, now: SimTime) {
        if self.canceled || self.step >= self.steps.len() {
            self.stage = Stage::Finishing;
            self.push_record(TimelineRecord {
                id: self.job_id.clone(),
                state: Some(TimelineRecordState::Completed),
                result: Some(self.result),
                finish_time: Some(wall(ctx, now)),
                ..Default::default()
            });
            return;
        }
        if !self.steps[self.step].condition.runs(self.result) {
            self.steps[self.step] = self.steps[self.step].skipped();
        }
        self.stage = Stage::Running;
        self.step_started = now;
        self.lines_done = 0;
        self.log_id = None;
        self.log_create_tries = 0;
        let step = &self.steps[self.step];
        let record = TimelineRecord {
            id: step.record_id.clone(),
            parent_id: Some(self.job_id.clone()),
            kind: Some("Task".to_string()),
            name: Some(step.name.clone()),
            state: Some(TimelineRecordState::InProgress),
            start_time: Some(wall(ctx, now)),
            order: Some(self.step as u32 + 1),
            worker_name: Some(ctx.config.agent_name(ctx.agent)),
            ..Default::default()
        };
        let end = now + step.duration;
        self.push_record(record);
        self.want(JobCall::LogCreate, now);
        self.set_timer(Timer::StepEnd, end);
    }

    /// The step's time is over (or it was canceled): print the rest and start flushing.
    fn end_step(
        &mut self,
        ctx: &JobCtx<'_>,
        now: SimTime,
        rng: &mut crate::rng::Rng,
        events: &mut VecDeque<Event>,
    ) {
        if self.stage != Stage::Running {
            return;
        }
        if !self.canceled {
            self.emit_lines(ctx, now, true, rng, events);
        }
        self.stage = Stage::Closing;
        let step = &self.steps[self.step];
        self.artifact_pending = step.artifact_bytes > 0 && !self.canceled;
        if self.artifact_pending {
            self.want(JobCall::Attachment, now);
        }
        if !self.feed.is_empty() {
            self.want(JobCall::Feed, now);
        }
        if !self.log.is_empty() && self.log_id.is_some() {
            self.want(JobCall::LogAppend, now);
        }
    }

    /// Move on when the current stage's work is flushed.
    fn progress(&mut self, ctx: &JobCtx<'_>, now: SimTime) -> JobStatus {
        if self.stage == Stage::Closing && self.step_flushed() {
            let step = &self.steps[self.step];
            let result = if self.canceled {
                TaskResult::Canceled
            } else {
                step.result
            };
            // As the real StepsRunner: only `failed` and `succeededWithIssues` change the job.
            if matches!(result, TaskResult::Failed | TaskResult::SucceededWithIssues) {
                self.result = steps::merge_results(self.result, result);
            }
            // A real step that printed an error or warning line counts it on its record.
            let real = step.look != Look::Synthetic;
            let count = |r: TaskResult| (real && result == r).then_some(1);
            let record = TimelineRecord {
                id: step.record_id.clone(),
                state: Some(TimelineRecordState::Completed),
                result: Some(result),
                finish_time: Some(wall(ctx, now)),
                log: self.log_id.map(|id| TaskLogReference { id }),
                error_count: count(TaskResult::Failed),
                warning_count: count(TaskResult::SucceededWithIssues),
                ..Default::default()
            };
            self.push_record(record);
            self.feed.clear();
            self.log.clear();
            self.step += 1;
            self.start_step(ctx, now);
        }
        if self.stage == Stage::Finishing
            && self.records.is_empty()
            && self.sending != Some(JobCall::Timeline)
            && self.want[JobCall::Completion as usize] == SimTime::NEVER
            && self.sending != Some(JobCall::Completion)
            && self
                .timers
                .get(job_slot(Timer::CompletionRetry).unwrap_or(0))
                .is_none()
            && self.completion_tries == 0
        {
            self.want(JobCall::Completion, now);
        }
        if self.stage == Stage::Finishing && !self.records.is_empty() {
            // Flush the last record updates without waiting for the next tick.
            self.want(JobCall::Timeline, now);
        }
        JobStatus::Running
    }

    /// Everything of the closing step has left: lines, log content, artifact.
    fn step_flushed(&self) -> bool {
        let busy = |c: JobCall| self.sending == Some(c) || self.want[c as usize] != SimTime::NEVER;
        let log_done = self.log.is_empty()
            || self.log_id.is_none() && self.log_create_tries >= LOG_CREATE_TRIES;
        self.feed.is_empty()
            && log_done
            && !self.artifact_pending
            && !busy(JobCall::Feed)
            && !busy(JobCall::LogAppend)
            && !busy(JobCall::LogCreate)
            && !busy(JobCall::Attachment)
    }

    fn finished(&self) -> JobStatus {
        JobStatus::Finished {
            request_id: self.request_id,
            result: self.result,
        }
    }

    fn abandon(&mut self) -> JobStatus {
        JobStatus::Finished {
            request_id: self.request_id,
            result: TaskResult::Abandoned,
        }
    }

    /// Print the lines due by `now` (an even rate over the step; every line left when `end`),
    /// masked, into the feed and log buffers.
    fn emit_lines(
        &mut self,
        ctx: &JobCtx<'_>,
        now: SimTime,
        end: bool,
        rng: &mut crate::rng::Rng,
        events: &mut VecDeque<Event>,
    ) {
        if self.stage != Stage::Running {
            return;
        }
        let Some(step) = self.steps.get(self.step) else {
            return;
        };
        let total = step.log_lines;
        let elapsed = (now - self.step_started).as_micros();
        let duration = step.duration.as_micros().max(1);
        let due = if end || elapsed >= duration {
            total
        } else {
            ((total as u128 * elapsed) / duration) as u32
        };
        let config = &ctx.config;
        let mut masked_total = 0u32;
        let text = StepText {
            look: step.look,
            display: &step.name,
            task: &step.task,
            version: &step.version,
            detail: &step.detail,
            result: step.result,
            total,
            secret_lines: step.secret_lines,
        };
        for k in self.lines_done..due {
            let line = match step.look {
                Look::Synthetic => synthetic_line(self.step, k, step, &self.secrets.values, rng),
                _ => text.line(k, self.secrets.printable(), rng),
            };
            let (masked, count) = self.secrets.mask(&line);
            masked_total += count;
            let cut = cut_chars(&masked, config.pacing.line_chars_max);
            if self.log.len() < config.pacing.log_page_bytes_max.saturating_mul(2) {
                self.log.extend_from_slice(cut.as_bytes());
                self.log.push(b'\n');
            }
            if self.feed.len() >= FEED_BUFFER_LINES_MAX {
                self.feed.pop_front();
                self.feed_next_line += 1;
            }
            self.feed.push_back(cut.to_string());
        }
        self.lines_done = due.max(self.lines_done);
        if masked_total > 0 {
            events.push_back(Event::SecretsMasked {
                agent: ctx.agent,
                count: masked_total,
            });
        }
    }

    /// Build the request for `call` if it can go now.
    fn build(&mut self, ctx: &JobCtx<'_>, call: JobCall, since: SimTime) -> Option<NextCall> {
        let config = &ctx.config;
        let bearer = Credential::Bearer(self.token.clone());
        let plan = self.plan.clone();
        let (op, credential, api, timeout) = match call {
            JobCall::LockRenew => {
                // The renewal uses the listener's credential; wait while it is being refreshed.
                let listener = ctx.listener?.to_string();
                let api = ApiRequest::UpdateJobRequest {
                    pool_id: ctx.pool_id,
                    request_id: self.request_id,
                    lock_token: EMPTY_GUID.to_string(),
                    update: JobRequestUpdate {
                        request_id: self.request_id,
                        ..Default::default()
                    },
                };
                (
                    Operation::LockRenew,
                    Credential::Bearer(listener),
                    api,
                    config.pacing.renew_timeout,
                )
            }
            JobCall::Rotate => {
                let grant = TokenGrant::Refresh {
                    refresh_token: self.token.clone(),
                };
                (
                    Operation::TokenRotate,
                    Credential::Anonymous,
                    ApiRequest::Token(grant),
                    config.pacing.job_call_timeout,
                )
            }
            JobCall::LogCreate => {
                let step = self.steps.get(self.step)?;
                let log = TaskLogCreate {
                    path: format!("logs\\{}", step.record_id),
                };
                (
                    Operation::LogCreate,
                    bearer,
                    ApiRequest::CreateLog { plan, log },
                    config.pacing.job_call_timeout,
                )
            }
            JobCall::Timeline => {
                if self.records.is_empty() {
                    return None;
                }
                let records = ListOf::new(std::mem::take(&mut self.records));
                let api = ApiRequest::UpdateTimelineRecords {
                    plan,
                    timeline_id: self.timeline_id.clone(),
                    records,
                };
                (
                    Operation::TimelineUpdate,
                    bearer,
                    api,
                    config.pacing.job_call_timeout,
                )
            }
            JobCall::Feed => {
                let step = self.steps.get(self.step)?;
                let n = self.feed.len().min(config.pacing.feed_batch_lines_max);
                if n == 0 {
                    return None;
                }
                let lines: Vec<String> = self.feed.drain(..n).collect();
                let feed = TimelineRecordFeedLinesWrapper {
                    step_id: step.record_id.clone(),
                    count: lines.len(),
                    value: lines,
                    start_line: Some(self.feed_next_line),
                };
                self.feed_next_line += n as u64;
                self.feed_batches_this_tick += 1;
                // The real worker posts every step's lines to the job's record, keyed by stepId.
                let api = ApiRequest::AppendFeed {
                    plan,
                    timeline_id: self.timeline_id.clone(),
                    record_id: self.job_id.clone(),
                    feed,
                };
                (
                    Operation::FeedPost,
                    bearer,
                    api,
                    config.pacing.job_call_timeout,
                )
            }
            JobCall::LogAppend => {
                let log_id = self.log_id?;
                if self.log.is_empty() {
                    return None;
                }
                let content = take_page(&mut self.log, config.pacing.log_page_bytes_max);
                (
                    Operation::LogAppend,
                    bearer,
                    ApiRequest::AppendLog {
                        plan,
                        log_id,
                        content,
                    },
                    config.pacing.job_call_timeout,
                )
            }
            JobCall::Attachment => {
                let step = self.steps.get(self.step)?;
                let bytes = step.artifact_bytes.min(config.pacing.artifact_bytes_max) as usize;
                let api = ApiRequest::PutAttachment {
                    plan,
                    timeline_id: self.timeline_id.clone(),
                    record_id: step.record_id.clone(),
                    kind: "fleetsim.artifact".to_string(),
                    name: format!("artifact-{}.bin", self.step + 1),
                    content: artifact_content(bytes),
                };
                (
                    Operation::AttachmentUpload,
                    bearer,
                    api,
                    config.pacing.job_call_timeout,
                )
            }
            JobCall::Completion => {
                let api = if self.plan_version >= 8 {
                    let event = JobEvent {
                        name: EVENT_JOB_COMPLETED.to_string(),
                        job_id: self.job_id.clone(),
                        request_id: self.request_id,
                        result: Some(self.result),
                    };
                    ApiRequest::PostEvent { plan, event }
                } else {
                    // Plans before version 8: the listener finishes the job request itself.
                    ApiRequest::UpdateJobRequest {
                        pool_id: ctx.pool_id,
                        request_id: self.request_id,
                        lock_token: EMPTY_GUID.to_string(),
                        update: JobRequestUpdate {
                            request_id: self.request_id,
                            finish_time: Some(wall(ctx, since)),
                            result: Some(self.result),
                        },
                    }
                };
                let (op, credential) = if self.plan_version >= 8 {
                    (Operation::JobCompleted, bearer)
                } else {
                    (
                        Operation::JobRequestFinish,
                        Credential::Bearer(ctx.listener?.to_string()),
                    )
                };
                (op, credential, api, config.pacing.job_call_timeout)
            }
        };
        let endpoint = match api {
            // The listener's own calls (renewal, the pre-v8 finish) go to the server it listens
            // on (JobDispatcher.cs renews through the listener's connection).
            ApiRequest::UpdateJobRequest { .. } => Endpoint::Collection,
            _ => self.server.clone(),
        };
        Some(NextCall {
            call,
            op,
            intended: since,
            endpoint,
            request: Request {
                credential,
                call: api,
            },
            timeout,
        })
    }

    /// Whether a buffer-draining call has nothing left to drain.
    fn nothing_to_send(&self, call: JobCall) -> bool {
        match call {
            JobCall::Timeline => self.records.is_empty(),
            JobCall::Feed => self.feed.is_empty(),
            JobCall::LogAppend => self.log.is_empty(),
            _ => false,
        }
    }

    fn want(&mut self, call: JobCall, at: SimTime) {
        let w = &mut self.want[call as usize];
        *w = (*w).min(at);
    }

    fn set_timer(&mut self, timer: Timer, at: SimTime) {
        if let Some(s) = job_slot(timer) {
            self.timers.set(s, at);
        }
    }

    /// Queue a record update, merged into a pending update of the same record.
    fn push_record(&mut self, record: TimelineRecord) {
        match self.records.iter_mut().find(|r| r.id == record.id) {
            Some(pending) => merge_record(pending, record),
            None => self.records.push(record),
        }
    }
}

/// The job message variable that says which kind of server sent the job.
const SERVER_TYPE_VARIABLE: &str = "system.servertype";

/// Where the worker's calls go, as the real agent decides it (JobRunner.cs and
/// JobDispatcher.cs `CreateJobServerConnectionAsync`): the `SystemVssConnection` endpoint's URL;
/// when the message's `system.servertype` variable is absent or `OnPremises`, that URL's
/// `scheme://host:port` is replaced by the configured server's (`*OnTarget`). Without a usable
/// URL the calls go to the target's collection, where fleetsim's emulator serves them.
fn job_server(
    url: Option<&str>,
    variables: &std::collections::BTreeMap<String, crate::proto::VariableValue>,
) -> Endpoint {
    let Some(url) = url.filter(|u| crate::codec::url::parse(u).is_ok()) else {
        return Endpoint::Collection;
    };
    // Variable names are case-insensitive in the real agent's dictionary.
    let server_type = variables
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(SERVER_TYPE_VARIABLE))
        .map(|(_, v)| v.value.as_str());
    let on_premises = server_type.is_none_or(|t| t.eq_ignore_ascii_case("OnPremises"));
    if on_premises {
        Endpoint::BaseOnTarget(url.into())
    } else {
        Endpoint::Base(url.into())
    }
}

/// Overlay the fields `newer` sets onto `pending`.
fn merge_record(pending: &mut TimelineRecord, newer: TimelineRecord) {
    macro_rules! take {
        ($($f:ident),*) => { $( if newer.$f.is_some() { pending.$f = newer.$f; } )* };
    }
    take!(
        parent_id,
        kind,
        name,
        state,
        result,
        start_time,
        finish_time,
        log,
        order,
        worker_name
    );
    take!(error_count, warning_count);
}

/// A step's work: a synthetic step's from its inputs, any other step's drawn from the step
/// model of its task (with `rng`; synthetic steps draw nothing, so a run of synthetic jobs
/// replays as it did before step models existed).
fn step_plan(
    step: &crate::proto::JobStep,
    config: &AgentConfig,
    rng: &mut crate::rng::Rng,
) -> StepPlan {
    let look = steps::look(step);
    let condition = Condition::parse(&step.condition);
    let mut plan = StepPlan {
        record_id: step.id.clone(),
        name: step.display_name.clone(),
        look,
        task: String::new(),
        version: String::new(),
        detail: String::new(),
        condition,
        duration: Duration::ZERO,
        log_lines: 0,
        secret_lines: 0,
        artifact_bytes: 0,
        result: TaskResult::Succeeded,
    };
    if look == Look::Synthetic {
        let num = |key: &str| -> u64 {
            step.inputs
                .get(key)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let log_lines = (num(inputs::LOG_LINES).min(STEP_LINES_MAX as u64)) as u32;
        let fail = step
            .inputs
            .get(inputs::FAIL)
            .is_some_and(|v| v.trim() == "true");
        plan.duration = Duration::from_millis(num(inputs::DURATION_MS));
        plan.log_lines = log_lines;
        plan.secret_lines = (num(inputs::SECRET_LINES) as u32).min(log_lines);
        plan.artifact_bytes = num(inputs::ARTIFACT_BYTES);
        if fail {
            plan.result = TaskResult::Failed;
        }
        return plan;
    }
    let model = config.steps.for_task(steps::model_key(step));
    let drawn = steps::draw(model, STEP_LINES_MAX, rng);
    plan.task = step.reference.name.clone();
    plan.version = step.reference.version.clone();
    plan.detail = steps::detail(step, look);
    plan.duration = drawn.duration;
    plan.log_lines = drawn.log_lines;
    plan.secret_lines = drawn.secret_lines;
    plan.artifact_bytes = drawn.attachment_bytes;
    plan.result = drawn.result;
    plan
}

/// Line `k` of step `step`: deterministic from the RNG. The secret lines are spread evenly
/// (line k prints one when ⌊(k+1)·s/n⌋ > ⌊k·s/n⌋); the 1st, 3rd, … print the value, the
/// 2nd, 4th, … its base64 form.
fn synthetic_line(
    step_index: usize,
    k: u32,
    step: &StepPlan,
    secrets: &[String],
    rng: &mut crate::rng::Rng,
) -> String {
    const VERBS: [&str; 6] = [
        "compiling",
        "linking",
        "testing",
        "fetching",
        "packing",
        "checking",
    ];
    const NOUNS: [&str; 6] = [
        "module", "crate", "bundle", "fixture", "artifact", "manifest",
    ];
    let verb = VERBS[rng.random_range(0..VERBS.len())];
    let noun = NOUNS[rng.random_range(0..NOUNS.len())];
    let n: u32 = rng.random_range(0..10_000);
    let (s, total) = (step.secret_lines as u64, step.log_lines.max(1) as u64);
    // How many secret lines are due up to and including line k.
    let ordinal = (k as u64 + 1) * s / total;
    let secret_line = !secrets.is_empty() && ordinal > k as u64 * s / total;
    if secret_line {
        let secret = &secrets[rng.random_range(0..secrets.len())];
        let shown = if !ordinal.is_multiple_of(2) {
            secret.clone()
        } else {
            STANDARD.encode(secret)
        };
        format!(
            "step {} line {}: {verb} {noun} {n} with credential {shown}",
            step_index + 1,
            k + 1
        )
    } else {
        format!("step {} line {}: {verb} {noun} {n}", step_index + 1, k + 1)
    }
}

/// The first `max` characters of `text`.
fn cut_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Take up to `max` bytes of whole lines (or a hard cut if one line is longer).
fn take_page(log: &mut Vec<u8>, max: usize) -> Vec<u8> {
    if log.len() <= max {
        return std::mem::take(log);
    }
    let cut = log[..max]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(max, |i| i + 1);
    let rest = log.split_off(cut);
    std::mem::replace(log, rest)
}

/// `n` bytes of artifact: a repeating printable pattern (content does not matter, size does).
fn artifact_content(n: usize) -> Vec<u8> {
    const PATTERN: &[u8] = b"fleetsim-artifact-";
    PATTERN.iter().copied().cycle().take(n).collect()
}

/// `now` as ISO-8601 UTC wall time.
fn wall(ctx: &JobCtx<'_>, now: SimTime) -> String {
    crate::codec::text::iso8601_utc(ctx.epoch_unix_ms + now.as_micros() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{JobStep, SYNTHETIC_TASK_NAME, TaskReference};
    use crate::rng::{self, StreamKind};

    fn synthetic(inputs: &[(&str, &str)]) -> JobStep {
        JobStep {
            kind: "task".into(),
            reference: TaskReference {
                id: "t".into(),
                name: SYNTHETIC_TASK_NAME.into(),
                version: "1.0.0".into(),
            },
            inputs: inputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            id: "step".into(),
            name: "s".into(),
            display_name: "S".into(),
            condition: String::new(),
        }
    }

    /// `step_plan` with the default config and a fixed RNG.
    fn plan_of(step: &JobStep) -> StepPlan {
        let mut rng = rng::stream(1, StreamKind::Agent, 0);
        step_plan(step, &AgentConfig::default(), &mut rng)
    }

    // Goal: step inputs from the peer are bounded and garbage reads as zero, never a panic.
    #[test]
    fn step_inputs_are_parsed_leniently_and_bounded() {
        let plan = plan_of(&synthetic(&[
            (inputs::DURATION_MS, "1500"),
            (inputs::LOG_LINES, "99999999999"),
            (inputs::SECRET_LINES, "-3"),
            (inputs::ARTIFACT_BYTES, "lots"),
            (inputs::FAIL, "true"),
        ]));
        assert_eq!(plan.duration, Duration::from_millis(1500));
        assert_eq!(plan.log_lines, STEP_LINES_MAX);
        assert_eq!((plan.secret_lines, plan.artifact_bytes), (0, 0));
        assert_eq!(plan.result, TaskResult::Failed);
    }

    // Goal: a step that is not synthetic ignores fleetsim's inputs and takes its work from the
    // step model of its task (the default model: 5–20 s at 10 lines a second).
    #[test]
    fn real_steps_draw_their_work_from_the_model() {
        let mut bash = synthetic(&[(inputs::DURATION_MS, "1500"), (inputs::FAIL, "true")]);
        bash.reference.name = "Bash".into();
        let plan = plan_of(&bash);
        assert!(
            (5..=20).contains(&plan.duration.as_secs()),
            "{:?}",
            plan.duration
        );
        assert_eq!(plan.result, TaskResult::Succeeded, "inputs do not fail it");
        let want = (plan.duration.as_secs_f64() * 10.0).round() as u32;
        assert_eq!(plan.log_lines, want);
        assert_eq!((plan.look, plan.task.as_str()), (Look::Script, "Bash"));
    }

    // Goal: secret lines are spread evenly and alternate the raw and base64 forms, so the masker
    // is exercised on both.
    #[test]
    fn secret_lines_are_spread_and_alternate_forms() {
        let step = plan_of(&synthetic(&[
            (inputs::LOG_LINES, "100"),
            (inputs::SECRET_LINES, "10"),
        ]));
        let secrets = vec!["s3cr3t-value".to_string()];
        let mut rng = rng::stream(1, StreamKind::Agent, 0);
        let lines: Vec<String> = (0..100)
            .map(|k| synthetic_line(0, k, &step, &secrets, &mut rng))
            .collect();
        let raw = lines.iter().filter(|l| l.contains("s3cr3t-value")).count();
        let b64 = lines
            .iter()
            .filter(|l| l.contains(&STANDARD.encode("s3cr3t-value")))
            .count();
        assert_eq!(raw + b64, 10);
        assert!(raw > 0 && b64 > 0);
        assert!(lines[0].starts_with("step 1 line 1: "));
    }

    // Goal: lines are cut at a character (not byte) boundary, and log pages end at whole lines.
    #[test]
    fn lines_are_cut_on_chars_and_pages_on_lines() {
        assert_eq!(cut_chars("héllo", 2), "hé");
        assert_eq!(cut_chars("short", 1024), "short");
        let mut log = b"aaaa\nbbbb\ncccc\n".to_vec();
        assert_eq!(take_page(&mut log, 12), b"aaaa\nbbbb\n");
        assert_eq!(log, b"cccc\n");
        let mut long = vec![b'x'; 20];
        assert_eq!(
            take_page(&mut long, 8).len(),
            8,
            "one over-long line is hard-cut"
        );
        assert_eq!(long.len(), 12);
        assert_eq!(artifact_content(40).len(), 40);
    }

    // Goal: queued updates of one record merge (the newest field wins), so pending timeline work
    // is bounded by the number of steps.
    #[test]
    fn record_updates_merge_per_record() {
        let mut pending = TimelineRecord {
            id: "r".into(),
            state: Some(TimelineRecordState::InProgress),
            name: Some("n".into()),
            ..Default::default()
        };
        let newer = TimelineRecord {
            id: "r".into(),
            state: Some(TimelineRecordState::Completed),
            result: Some(TaskResult::Failed),
            ..Default::default()
        };
        merge_record(&mut pending, newer);
        assert_eq!(pending.state, Some(TimelineRecordState::Completed));
        assert_eq!(pending.result, Some(TaskResult::Failed));
        assert_eq!(pending.name.as_deref(), Some("n"));
    }
}
