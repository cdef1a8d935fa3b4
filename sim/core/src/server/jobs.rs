//! The job queue: admin queueing of synthetic jobs, FIFO assignment to idle agents whose
//! capabilities meet the demands (agents with a long poll parked first, so the job is picked
//! up at once), the job message, leases and their renewal, requeue on lease loss, admin
//! cancellation, and completion.
//!
//! A job is never lost: it is queued, or active on exactly one agent, or finished. Lease loss
//! (no renewal by `lockedUntil` + `lease_grace`) counts as agent loss: the job goes back to its
//! old place in the queue, its tokens stop working, and the agent's session ends (its next poll
//! learns the session expired, so a live-but-wedged agent re-registers cleanly instead of
//! holding a ghost job).
//!
//! Cancellation (an emulator extension) never requeues: a queued job finishes as canceled at
//! once and never reaches an agent; an active one gets one `JobCancellation` message on its
//! agent's session and ends through the agent's own completion. Any path that would requeue a
//! job whose cancel was asked for (lease loss, agent deleted, session ended before delivery)
//! finishes it as canceled instead. The server never picks a result for a job an agent is
//! still running: what the agent reports is kept, even `succeeded` when it finished before it
//! saw the cancellation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;

use super::auth::Need;
use super::matching::DemandSetId;
use super::plans::PlanStore;
use super::{Server, Timer};
use crate::SimTime;
use crate::api::{ApiError, ApiResponse, Credential, ErrorKind};
use crate::event::CryptoOp;
use crate::job::{QueueJobsRequest, QueueJobsResponse, SyntheticJob, inputs};
use crate::mask::LeakScanner;
use crate::proto::{
    ACCESS_TOKEN_PARAMETER, AgentJobRequestMessage, EMPTY_GUID, EndpointAuthorization,
    JobCancelMessage, JobRequestUpdate, JobResources, JobStep, ListOf, MESSAGE_JOB_CANCELLATION,
    MESSAGE_JOB_REQUEST, MaskHint, PlanReference, SYNTHETIC_TASK_NAME, SYSTEM_VSS_CONNECTION,
    ServiceEndpoint, TaskAgentJobRequest, TaskAgentMessage, TaskAgentReference, TaskReference,
    TaskResult, TimelineReference, VariableValue,
};

/// The id the job message gives the synthetic task (a fixed GUID, like a real task's).
pub const SYNTHETIC_TASK_ID: &str = "6c1b7bb5-6e3b-4c1b-9c4e-f1ee751f0001";
/// Prefix of every generated secret value; the job's regex mask hint matches it.
pub const SECRET_PREFIX: &str = "fss_";
/// Random characters after [`SECRET_PREFIX`].
const SECRET_LEN: usize = 28;
/// The regex mask hint sent with every job.
pub const SECRET_MASK_REGEX: &str = "fss_[A-Za-z0-9]{28}";

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum JobState {
    Queued,
    /// Assigned to `agent`. `message_id` is `Some` until the agent deletes (acknowledges) the
    /// job message; `renewed` once it renewed the lease.
    Active {
        agent: u64,
        message_id: Option<u64>,
        renewed: bool,
    },
    Finished,
}

/// How far an admin cancellation of an active job has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum CancelState {
    /// Nobody asked to cancel the job.
    NotRequested,
    /// Asked for. `message_id` is the `JobCancellation` waiting on the agent's session; `None`
    /// while the agent has no session (or its session ended before it acknowledged the
    /// message): the message is sent again when the agent opens a session.
    Requested { message_id: Option<u64> },
    /// The agent deleted (acknowledged) the `JobCancellation`; the job ends when it reports.
    Acknowledged,
}

/// One job request. Serialised as a durable record (`server::durable`); what is rebuilt from
/// the rest on restore is skipped.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Job {
    pub pool_id: u32,
    pub job_id: String,
    pub plan_id: String,
    pub timeline_id: String,
    pub spec: SyntheticJob,
    /// Secret variable values (from the server RNG; stable across requeues).
    pub secrets: Vec<String>,
    pub state: JobState,
    pub lock_token: String,
    pub locked_until: Option<SimTime>,
    pub queue_time: SimTime,
    pub assign_time: Option<SimTime>,
    pub receive_time: Option<SimTime>,
    pub finish_time: Option<SimTime>,
    pub result: Option<TaskResult>,
    pub requeue_count: u32,
    /// Whether an admin asked to cancel the job while it was active.
    pub cancel: CancelState,
    /// Job tokens that still work: the newest, plus rotated ones within their grace.
    pub tokens: Vec<String>,
    /// Built at assignment from the secrets and the job token.
    #[serde(skip)]
    pub scanner: Option<LeakScanner>,
    pub plan: PlanStore,
    /// The agent it was last assigned to (id, name), kept after it finished so the job-request
    /// list shows who ran it; cleared on requeue.
    pub reserved: Option<(u64, String)>,
    /// Set when the job belongs to a pipeline run (`server::pipelines`); `None` for synthetic
    /// jobs.
    pub pipeline: Option<super::pipelines::RunJob>,
    /// Its interned demand set while it is queued with demands (`server::matching`).
    #[serde(skip)]
    pub demand_set: Option<DemandSetId>,
}

impl Job {
    /// The agent it is assigned to, if active.
    pub fn agent(&self) -> Option<u64> {
        match self.state {
            JobState::Active { agent, .. } => Some(agent),
            _ => None,
        }
    }
    /// Active and its lease renewed at least once.
    pub fn renewed(&self) -> bool {
        matches!(self.state, JobState::Active { renewed: true, .. })
    }
    /// An admin asked to cancel it: it must never go back to the queue.
    pub fn cancel_requested(&self) -> bool {
        self.cancel != CancelState::NotRequested
    }
    /// Active, but the agent neither acknowledged the message nor renewed the lease.
    pub fn undelivered(&self) -> bool {
        matches!(
            self.state,
            JobState::Active {
                message_id: Some(_),
                renewed: false,
                ..
            }
        )
    }
}

/// A demand is `name` or `name -equals value`, at most 256 bytes.
pub(crate) fn demand_is_valid(demand: &str) -> bool {
    let name = demand
        .split_once(" -equals ")
        .map_or(demand, |(n, _)| n)
        .trim();
    !name.is_empty() && !name.contains(char::is_whitespace) && demand.len() <= 256
}

pub(super) fn check_demand(demand: &str) -> Result<(), ApiError> {
    if demand_is_valid(demand) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::BadRequest,
            format!(
                "demand {:?} is not `name` or `name -equals value`",
                crate::codec::text::truncate(demand, 64)
            ),
        ))
    }
}

fn job_not_found(request_id: u64, why: &str) -> ApiError {
    ApiError::new(
        ErrorKind::JobNotFound,
        format!("job request {request_id} {why}"),
    )
}

impl Server {
    // -----------------------------------------------------------------------------------------
    // Admin
    // -----------------------------------------------------------------------------------------

    pub(super) fn queue_jobs(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        request: QueueJobsRequest,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Admin)?;
        self.pool_exists(pool_id)?;
        self.check_queue_request(&request)?;
        let mut ids = Vec::with_capacity(request.len());
        for spec in request.expand() {
            ids.push(self.new_job(now, pool_id, spec.clone()));
        }
        self.dispatch(now);
        let value: Vec<TaskAgentJobRequest> = ids.iter().map(|&id| self.job_view(id)).collect();
        Ok(ApiResponse::QueuedJobs(QueueJobsResponse {
            count: value.len(),
            value,
        }))
    }

    fn check_queue_request(&self, request: &QueueJobsRequest) -> Result<(), ApiError> {
        let limits = &self.cfg.limits;
        let bad = |m: String| ApiError::new(ErrorKind::BadRequest, m);
        let n = request.len();
        if n == 0 {
            return Err(bad(
                "the request queues no job: give count + template, or jobs".into(),
            ));
        }
        if n > limits.max_jobs_per_request {
            return Err(bad(format!(
                "at most {} jobs per request",
                limits.max_jobs_per_request
            )));
        }
        for job in request.template.iter().chain(request.jobs.iter()) {
            if job.steps.len() > limits.max_steps_per_job {
                return Err(bad(format!(
                    "at most {} steps per job",
                    limits.max_steps_per_job
                )));
            }
            if job.secrets as usize > limits.max_secrets_per_job {
                return Err(bad(format!(
                    "at most {} secrets per job",
                    limits.max_secrets_per_job
                )));
            }
            if job.demands.len() > limits.max_demands_per_job {
                return Err(bad(format!(
                    "at most {} demands per job",
                    limits.max_demands_per_job
                )));
            }
            job.demands.iter().try_for_each(|d| check_demand(d))?;
        }
        if self.queue.len() + n > limits.max_queued_jobs {
            return Err(Self::throttled("queued jobs", limits.max_queued_jobs));
        }
        Ok(())
    }

    pub(super) fn new_job(&mut self, now: SimTime, pool_id: u32, spec: SyntheticJob) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        let secrets = (0..spec.secrets).map(|_| self.secret_value()).collect();
        let job = Job {
            pool_id,
            job_id: self.new_uuid(),
            plan_id: self.new_uuid(),
            timeline_id: self.new_uuid(),
            spec,
            secrets,
            state: JobState::Queued,
            lock_token: EMPTY_GUID.to_string(),
            locked_until: None,
            queue_time: now,
            assign_time: None,
            receive_time: None,
            finish_time: None,
            result: None,
            requeue_count: 0,
            cancel: CancelState::NotRequested,
            tokens: Vec::new(),
            scanner: None,
            plan: PlanStore::default(),
            reserved: None,
            pipeline: None,
            demand_set: None,
        };
        self.plans.insert(job.plan_id.clone(), id);
        self.jobs.insert(id, job);
        self.journal.job(id);
        self.enqueue(id);
        self.dispatch_pending = true;
        id
    }

    /// Put a job in the queue, its demand set interned so matching it costs one lookup.
    pub(super) fn enqueue(&mut self, request_id: u64) {
        self.queue.insert(request_id);
        let Some(job) = self.jobs.get(&request_id) else {
            return;
        };
        if job.spec.demands.is_empty() || job.demand_set.is_some() {
            return;
        }
        let pool = job.pool_id;
        let demands = super::matching::demand_set(&job.spec.demands);
        let agents = self
            .agents
            .values()
            .filter(|a| a.pool_id == pool)
            .map(|a| &a.caps);
        let set = self.demand_index.intern(pool, demands, agents);
        self.demand_index.add_queued(set);
        if let Some(job) = self.jobs.get_mut(&request_id) {
            job.demand_set = Some(set);
        }
    }

    /// Take a job off the queue (assigned or canceled), releasing its demand set.
    fn dequeue(&mut self, request_id: u64) {
        self.queue.remove(&request_id);
        if let Some(set) = self
            .jobs
            .get_mut(&request_id)
            .and_then(|j| j.demand_set.take())
        {
            self.demand_index.remove_queued(set);
        }
    }

    fn secret_value(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut s = String::with_capacity(SECRET_PREFIX.len() + SECRET_LEN);
        s.push_str(SECRET_PREFIX);
        for _ in 0..SECRET_LEN {
            s.push(ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char);
        }
        s
    }

    /// Every job request of the pool (the kept finished ones included), with the server's
    /// times. A PAT with agent-pools read (as on the real service) or the admin scope may list.
    pub(super) fn list_job_requests(
        &self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Read)
            .or_else(|e| self.require_pat(now, cred, Need::Admin).map_err(|_| e))?;
        self.pool_exists(pool_id)?;
        let value = self
            .jobs
            .iter()
            .filter(|(_, j)| j.pool_id == pool_id)
            .map(|(&id, _)| self.job_view(id))
            .collect();
        Ok(ApiResponse::JobRequests(ListOf::new(value)))
    }

    /// Queued, and no registered agent of its pool has the capabilities it demands: one
    /// lookup of its demand set's supporter count, no agent is looked at.
    pub(super) fn is_unmatched(&self, request_id: u64) -> bool {
        self.jobs.get(&request_id).is_some_and(|job| {
            job.state == JobState::Queued
                && job
                    .demand_set
                    .is_some_and(|set| self.demand_index.unmet(set))
        })
    }

    /// Whether `agent` meets the demands of queued job `job` (no demands: every agent does).
    fn meets(&self, agent: &super::agents::AgentRecord, job: &Job) -> bool {
        job.demand_set
            .is_none_or(|set| self.demand_index.meets(&agent.caps, set))
    }

    /// The job request as the API shows it.
    pub(super) fn job_view(&self, request_id: u64) -> TaskAgentJobRequest {
        let Some(job) = self.jobs.get(&request_id) else {
            return TaskAgentJobRequest {
                request_id,
                ..TaskAgentJobRequest::default()
            };
        };
        let state = match &job.state {
            JobState::Queued if self.is_unmatched(request_id) => "unmatched",
            JobState::Queued => "queued",
            JobState::Active { .. } if job.cancel_requested() => "canceling",
            JobState::Active { renewed: false, .. } => "assigned",
            JobState::Active { renewed: true, .. } => "running",
            JobState::Finished => "completed",
        };
        let reserved_agent = job.reserved.as_ref().map(|(id, name)| {
            let version = self.agents.get(id).map(|a| a.agent.version.clone());
            TaskAgentReference {
                id: *id,
                name: name.clone(),
                version: version.unwrap_or_default(),
                ..TaskAgentReference::default()
            }
        });
        let (definition, owner) = self.run_refs(job);
        TaskAgentJobRequest {
            request_id,
            queue_time: Some(self.wall(job.queue_time)),
            assign_time: job.assign_time.map(|t| self.wall(t)),
            receive_time: job.receive_time.map(|t| self.wall(t)),
            locked_until: job.locked_until.map(|t| self.wall(t)),
            finish_time: job.finish_time.map(|t| self.wall(t)),
            result: job.result,
            plan_id: Some(job.plan_id.clone()),
            job_id: Some(job.job_id.clone()),
            pool_id: Some(job.pool_id),
            demands: job.spec.demands.clone(),
            state: Some(state.to_string()),
            requeue_count: Some(job.requeue_count),
            reserved_agent,
            plan_type: Some("Build".to_string()),
            definition,
            owner,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Assignment
    // -----------------------------------------------------------------------------------------

    /// Assign queued jobs, oldest first, to idle agents that meet their demands: first to
    /// those with long polls parked (most parked polls first, then lowest id), which receive
    /// the job at once, then to idle agents between polls (lowest id first), whose job waits
    /// for their next poll. Runs after every input when something changed.
    pub(super) fn dispatch(&mut self, now: SimTime) {
        if !self.dispatch_pending {
            return;
        }
        self.dispatch_pending = false;
        let mut cursor = 0u64;
        // (pool, demand set) pairs no idle agent fits in this pass. The idle agents only get
        // fewer while it runs (an assigned agent leaves them), so a later job of the same pair
        // would not fit either: it is skipped without a second scan of the idle agents.
        let mut no_fit: BTreeSet<(u32, Option<DemandSetId>)> = BTreeSet::new();
        while self.idle.values().any(|s| !s.is_empty()) {
            let Some(&request_id) = self.queue.range(cursor..).next() else {
                break;
            };
            cursor = request_id + 1;
            let job = &self.jobs[&request_id];
            let pair = (job.pool_id, job.demand_set);
            if no_fit.contains(&pair) || job.demand_set.is_some_and(|s| self.demand_index.unmet(s))
            {
                continue;
            }
            let fits = |a: &u64| {
                self.has_message_room(*a) && self.agents.get(a).is_some_and(|r| self.meets(r, job))
            };
            let pool = job.pool_id;
            let parked = self
                .ready
                .range((pool, Reverse(u32::MAX))..=(pool, Reverse(1)))
                .find_map(|(_, set)| set.iter().find(fits));
            let pick = parked.or_else(|| {
                self.idle
                    .get(&job.pool_id)
                    .and_then(|set| set.iter().find(fits))
            });
            match pick {
                Some(agent_id) => self.assign(now, request_id, agent_id),
                None => {
                    no_fit.insert(pair);
                }
            }
        }
    }

    fn assign(&mut self, now: SimTime, request_id: u64, agent_id: u64) {
        let lock_token = self.new_uuid();
        let locked_until = now + self.cfg.lease_duration;
        let message_id = self.next_message_id;
        self.next_message_id += 1;
        self.dequeue(request_id);
        self.journal.job(request_id);
        self.journal.agent(agent_id);
        if let Some(job) = self.jobs.get_mut(&request_id) {
            job.state = JobState::Active {
                agent: agent_id,
                message_id: Some(message_id),
                renewed: false,
            };
            job.lock_token = lock_token;
            job.locked_until = Some(locked_until);
            job.assign_time = Some(now);
            job.receive_time = None;
        }
        let token = self.mint_job_token(now, request_id);
        if let Some(job) = self.jobs.get_mut(&request_id) {
            let values = job
                .secrets
                .iter()
                .map(String::as_str)
                .chain([token.as_str()]);
            job.scanner = Some(LeakScanner::new(values));
        }
        if let Some(rec) = self.agents.get_mut(&agent_id) {
            rec.assigned = Some(request_id);
            let reserved = Some((agent_id, rec.agent.name.clone()));
            if let Some(job) = self.jobs.get_mut(&request_id) {
                job.reserved = reserved;
            }
        }
        self.refresh_idle(agent_id);
        self.set_timer(
            locked_until + self.cfg.lease_grace,
            Timer::LeaseExpiry(request_id),
        );
        let message = self.job_message(request_id, &token, locked_until);
        let body = match self.jobs.get(&request_id).and_then(|j| j.pipeline.clone()) {
            Some(run_job) => self.pipeline_job_body(message, &run_job),
            // Plain structs of strings and integers: serialisation cannot fail.
            None => serde_json::to_string(&message).unwrap_or_default(),
        };
        let message = self.seal_message(agent_id, message_id, MESSAGE_JOB_REQUEST, &body);
        self.push_message(agent_id, message);
    }

    /// The `AgentJobRequestMessage` for an assigned job.
    fn job_message(
        &self,
        request_id: u64,
        token: &str,
        locked_until: SimTime,
    ) -> AgentJobRequestMessage {
        let job = &self.jobs[&request_id];
        let mut variables = BTreeMap::new();
        let plain = |v: &str| VariableValue {
            value: v.to_string(),
            ..VariableValue::default()
        };
        variables.insert("system.jobId".to_string(), plain(&job.job_id));
        // The real service names its kind; the agent keeps SystemVssConnection.url as given
        // only for `Hosted` (JobRunner.cs), and moves it onto its configured URL otherwise.
        let server_type = if self.cfg.layout.is_hosted() {
            "Hosted"
        } else {
            "OnPremises"
        };
        variables.insert("system.servertype".to_string(), plain(server_type));
        variables.insert("system.planId".to_string(), plain(&job.plan_id));
        variables.insert("system.timelineId".to_string(), plain(&job.timeline_id));
        variables.insert(
            "system.teamProjectId".to_string(),
            plain(&self.scope_identifier),
        );
        variables.insert(
            "system.collectionUri".to_string(),
            plain(&format!("{}/", self.public_url)),
        );
        variables.insert(
            "system.accessToken".to_string(),
            VariableValue {
                value: token.to_string(),
                is_secret: true,
                is_read_only: true,
            },
        );
        for (i, secret) in job.secrets.iter().enumerate() {
            variables.insert(
                format!("fleetsim.secret{i}"),
                VariableValue {
                    value: secret.clone(),
                    is_secret: true,
                    is_read_only: false,
                },
            );
        }
        let last = job.spec.steps.len().saturating_sub(1);
        let steps = job
            .spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let mut inputs = BTreeMap::new();
                inputs.insert(
                    inputs::DURATION_MS.to_string(),
                    step.duration_ms.to_string(),
                );
                inputs.insert(inputs::LOG_LINES.to_string(), step.log_lines.to_string());
                inputs.insert(
                    inputs::SECRET_LINES.to_string(),
                    step.secret_lines.to_string(),
                );
                inputs.insert(
                    inputs::ARTIFACT_BYTES.to_string(),
                    step.artifact_bytes.to_string(),
                );
                if job.spec.fail && i == last {
                    inputs.insert(inputs::FAIL.to_string(), "true".to_string());
                }
                JobStep {
                    kind: "task".to_string(),
                    reference: TaskReference {
                        id: SYNTHETIC_TASK_ID.to_string(),
                        name: SYNTHETIC_TASK_NAME.to_string(),
                        version: "1.0.0".to_string(),
                    },
                    inputs,
                    id: format!("{}{:012x}", &job.job_id[..24], i),
                    name: format!("step{}", i + 1),
                    display_name: format!("Synthetic step {}", i + 1),
                    condition: "succeeded()".to_string(),
                }
            })
            .collect();
        let endpoint = ServiceEndpoint {
            name: SYSTEM_VSS_CONNECTION.to_string(),
            url: format!("{}/", self.plan_url),
            authorization: EndpointAuthorization {
                scheme: "OAuth".to_string(),
                parameters: BTreeMap::from([(
                    ACCESS_TOKEN_PARAMETER.to_string(),
                    token.to_string(),
                )]),
            },
            data: BTreeMap::from([("ServerId".to_string(), self.instance_id.clone())]),
        };
        AgentJobRequestMessage {
            message_type: MESSAGE_JOB_REQUEST.to_string(),
            plan: PlanReference {
                scope_identifier: self.scope_identifier.clone(),
                plan_type: "Build".to_string(),
                plan_id: job.plan_id.clone(),
                version: 9,
            },
            timeline: TimelineReference {
                id: job.timeline_id.clone(),
                change_id: 1,
            },
            job_id: job.job_id.clone(),
            job_display_name: format!("Synthetic job {request_id}"),
            job_name: format!("job_{request_id}"),
            request_id,
            lock_token: job.lock_token.clone(),
            locked_until: Some(self.wall(locked_until)),
            resources: JobResources {
                endpoints: vec![endpoint],
            },
            variables,
            mask: vec![MaskHint {
                kind: "regex".to_string(),
                value: SECRET_MASK_REGEX.to_string(),
            }],
            steps,
        }
    }

    /// Encrypt a message body under the session key with a fresh IV (real crypto), or send it
    /// as plain JSON (modelled crypto, or a session without a key).
    fn seal_message(
        &mut self,
        agent_id: u64,
        message_id: u64,
        message_type: &str,
        body: &str,
    ) -> TaskAgentMessage {
        let bytes = body.len() as u64;
        match self.session_key(agent_id) {
            Some(key) if self.real_crypto() => {
                let iv: [u8; 16] = self.random_bytes();
                let (cipher, nanos) = self
                    .meter
                    .measure(|| crate::crypto::aes256_cbc_encrypt(&key, &iv, body.as_bytes()));
                self.crypto_event(CryptoOp::AesEncrypt, bytes, nanos);
                TaskAgentMessage {
                    message_id,
                    message_type: message_type.to_string(),
                    iv: STANDARD.encode(iv),
                    body: STANDARD.encode(cipher),
                }
            }
            _ => {
                self.crypto_event(CryptoOp::AesEncrypt, bytes, 0);
                TaskAgentMessage {
                    message_id,
                    message_type: message_type.to_string(),
                    iv: String::new(),
                    body: body.to_string(),
                }
            }
        }
    }

    /// The agent deleted message `message_id`: if it was this job's message, the job is
    /// delivered; if it was the job's `JobCancellation`, the cancellation is.
    pub(super) fn job_message_acknowledged(
        &mut self,
        now: SimTime,
        request_id: u64,
        message_id: u64,
    ) {
        self.journal.job(request_id);
        let Some(job) = self.jobs.get_mut(&request_id) else {
            return;
        };
        if let JobState::Active {
            message_id: pending @ Some(_),
            ..
        } = &mut job.state
            && *pending == Some(message_id)
        {
            *pending = None;
            job.receive_time.get_or_insert(now);
        }
        if job.cancel
            == (CancelState::Requested {
                message_id: Some(message_id),
            })
        {
            job.cancel = CancelState::Acknowledged;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Cancellation
    // -----------------------------------------------------------------------------------------

    /// Admin cancel (extension). Queued: finished as canceled now. Active: a `JobCancellation`
    /// goes to the agent's session (once; a repeat is answered without a second message).
    /// Finished or unknown: 404 `JobNotFound`, as the agent-facing job-request routes answer,
    /// and nothing changes.
    pub(super) fn cancel_job(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        request_id: u64,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Admin)?;
        self.pool_exists(pool_id)?;
        let job = self
            .jobs
            .get(&request_id)
            .filter(|j| j.pool_id == pool_id)
            .ok_or_else(|| job_not_found(request_id, "does not exist in this pool"))?;
        if job.state == JobState::Finished {
            return Err(job_not_found(
                request_id,
                "has already finished; only a queued or active job can be canceled",
            ));
        }
        self.cancel_request(now, request_id);
        Ok(ApiResponse::JobRequest(Box::new(self.job_view(request_id))))
    }

    /// Cancel one job request. Queued: finished as canceled now. Active: a `JobCancellation`
    /// goes to the agent's session (once). Finished or unknown: nothing happens.
    pub(super) fn cancel_request(&mut self, now: SimTime, request_id: u64) {
        self.journal.job(request_id);
        let Some(job) = self.jobs.get_mut(&request_id) else {
            return;
        };
        match job.state {
            JobState::Finished => {}
            JobState::Queued => {
                self.dequeue(request_id);
                self.close(now, request_id, TaskResult::Canceled);
            }
            JobState::Active { .. } => {
                if !job.cancel_requested() {
                    job.cancel = CancelState::Requested { message_id: None };
                    self.send_cancellation(request_id);
                }
            }
        }
    }

    /// Queue the `JobCancellation` of a job whose cancel is requested but not on any session,
    /// if its agent has a session now. Like a job message it wakes a parked poll. It skips the
    /// `max_messages_per_session` check on purpose: an agent holds one job and a job has one
    /// cancellation, so a session holds at most one message past that bound, and refusing it
    /// would leave the job running for good.
    pub(super) fn send_cancellation(&mut self, request_id: u64) {
        let Some(job) = self.jobs.get(&request_id) else {
            return;
        };
        let (Some(agent_id), CancelState::Requested { message_id: None }) =
            (job.agent(), job.cancel)
        else {
            return;
        };
        if self
            .agents
            .get(&agent_id)
            .is_none_or(|a| a.session.is_none())
        {
            return;
        }
        let body = JobCancelMessage {
            job_id: job.job_id.clone(),
            timeout: timespan(self.cfg.job_cancel_timeout),
        };
        // Two strings: serialisation cannot fail.
        let body = serde_json::to_string(&body).unwrap_or_default();
        let message_id = self.next_message_id;
        self.next_message_id += 1;
        let message = self.seal_message(agent_id, message_id, MESSAGE_JOB_CANCELLATION, &body);
        self.journal.job(request_id);
        if let Some(job) = self.jobs.get_mut(&request_id) {
            job.cancel = CancelState::Requested {
                message_id: Some(message_id),
            };
        }
        self.push_message(agent_id, message);
    }

    /// The agent's session ended with the job's `JobCancellation` still on it: the message is
    /// gone with the session, so send it again on the agent's next session.
    pub(super) fn cancellation_lost(&mut self, request_id: u64) {
        self.journal.job(request_id);
        if let Some(job) = self.jobs.get_mut(&request_id)
            && let CancelState::Requested { message_id } = &mut job.cancel
        {
            *message_id = None;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Leases and completion
    // -----------------------------------------------------------------------------------------

    pub(super) fn update_job_request(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        request_id: u64,
        lock_token: &str,
        update: JobRequestUpdate,
    ) -> Result<ApiResponse, ApiError> {
        let agent_id = self.listener_agent(now, cred)?;
        self.pool_exists(pool_id)?;
        let job = self
            .jobs
            .get(&request_id)
            .filter(|j| j.pool_id == pool_id)
            .ok_or_else(|| job_not_found(request_id, "does not exist in this pool"))?;
        if job.agent() != Some(agent_id) {
            return Err(job_not_found(
                request_id,
                "is not assigned to this agent (finished, or its lease expired and it was requeued)",
            ));
        }
        if lock_token != EMPTY_GUID && lock_token != job.lock_token {
            return Err(job_not_found(request_id, "has a different lock token"));
        }
        if update.request_id != 0 && update.request_id != request_id {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                "the body's requestId differs from the path's",
            ));
        }
        match update.result {
            Some(result) => self.finish(now, request_id, result),
            None => self.renew(now, request_id),
        }
        Ok(ApiResponse::JobRequest(Box::new(self.job_view(request_id))))
    }

    fn renew(&mut self, now: SimTime, request_id: u64) {
        let until = now + self.cfg.lease_duration;
        let grace = self.cfg.lease_grace;
        let Some(job) = self.jobs.get_mut(&request_id) else {
            return;
        };
        let old = job.locked_until.replace(until);
        let first = job.receive_time.is_none() || !job.renewed();
        job.receive_time.get_or_insert(now);
        if let JobState::Active { renewed, .. } = &mut job.state {
            *renewed = true;
        }
        // The first renewal changes what the job is (running); later ones only move the
        // lease, written once it moved half a lease past the stored one.
        if first {
            self.journal.job(request_id);
        } else {
            let half = self.cfg.lease_duration / 2;
            self.journal.lease_moved(request_id, until, half);
        }
        if let Some(old) = old {
            self.clear_timer(old + grace, Timer::LeaseExpiry(request_id));
        }
        self.set_timer(until + grace, Timer::LeaseExpiry(request_id));
    }

    /// End an active job with `result`: tokens revoked, lease dropped, agent idle again.
    pub(super) fn finish(&mut self, now: SimTime, request_id: u64, result: TaskResult) {
        let Some(agent_id) = self.jobs.get(&request_id).and_then(Job::agent) else {
            return;
        };
        self.release_from_agent(request_id, agent_id);
        self.journal.agent(agent_id);
        if let Some(rec) = self.agents.get_mut(&agent_id) {
            rec.last_completed = Some(request_id);
        }
        self.revoke_job_tokens(request_id);
        self.close(now, request_id, result);
    }

    /// Record a job (already off the queue and off any agent) as finished with `result`, and
    /// forget the oldest finished jobs past `max_finished_jobs` or while the plans of finished
    /// jobs hold more than `max_finished_plan_bytes`.
    fn close(&mut self, now: SimTime, request_id: u64, result: TaskResult) {
        let mut run_job = None;
        self.journal.job(request_id);
        if let Some(job) = self.jobs.get_mut(&request_id) {
            job.state = JobState::Finished;
            job.result = Some(result);
            job.finish_time = Some(now);
            job.scanner = None;
            run_job = job.pipeline.clone();
            self.finished_plan_bytes += job.plan.stored_bytes;
        }
        if let Some(run_job) = run_job {
            self.run_job_closed(now, &run_job, result);
        }
        self.counters.jobs_completed += 1;
        if result == TaskResult::Canceled {
            self.counters.jobs_canceled += 1;
        }
        self.finished.push_back(request_id);
        let limits = &self.cfg.limits;
        while self.finished.len() > limits.max_finished_jobs
            || self.finished_plan_bytes > limits.max_finished_plan_bytes
        {
            let Some(old) = self.finished.pop_front() else {
                break;
            };
            self.journal.job(old);
            if let Some(job) = self.jobs.remove(&old) {
                self.plans.remove(&job.plan_id);
                self.finished_plan_bytes = self
                    .finished_plan_bytes
                    .saturating_sub(job.plan.stored_bytes);
            }
        }
    }

    /// Put an active job back in the queue (lease loss, agent deleted, session ended before
    /// delivery). Its old place in the FIFO is kept. A job whose cancel was asked for is
    /// finished as canceled instead: nobody wants it run again.
    pub(super) fn requeue(&mut self, now: SimTime, request_id: u64) {
        let Some(job) = self.jobs.get(&request_id) else {
            return;
        };
        let Some(agent_id) = job.agent() else {
            return;
        };
        if job.cancel_requested() {
            self.finish(now, request_id, TaskResult::Canceled);
            return;
        }
        self.release_from_agent(request_id, agent_id);
        self.revoke_job_tokens(request_id);
        self.journal.job(request_id);
        if let Some(job) = self.jobs.get_mut(&request_id) {
            job.state = JobState::Queued;
            job.locked_until = None;
            job.assign_time = None;
            job.receive_time = None;
            job.requeue_count += 1;
            job.scanner = None;
            job.reserved = None;
            job.cancel = CancelState::NotRequested;
        }
        self.enqueue(request_id);
        self.counters.jobs_requeued += 1;
        self.dispatch_pending = true;
    }

    /// Detach an active job from its agent: lease timer, undelivered job or cancellation
    /// message, assignment.
    fn release_from_agent(&mut self, request_id: u64, agent_id: u64) {
        let Some(job) = self.jobs.get(&request_id) else {
            return;
        };
        let (locked_until, state) = (job.locked_until, job.state.clone());
        let job_message = match state {
            JobState::Active { message_id, .. } => message_id,
            _ => None,
        };
        let cancel_message = match job.cancel {
            CancelState::Requested { message_id } => message_id,
            _ => None,
        };
        if let Some(until) = locked_until {
            self.clear_timer(until + self.cfg.lease_grace, Timer::LeaseExpiry(request_id));
        }
        if let Some(session) = self
            .agents
            .get_mut(&agent_id)
            .and_then(|a| a.session.as_mut())
        {
            let stale = [job_message, cancel_message];
            session
                .messages
                .retain(|m| !stale.contains(&Some(m.message_id)));
        }
        self.journal.agent(agent_id);
        if let Some(rec) = self.agents.get_mut(&agent_id)
            && rec.assigned == Some(request_id)
        {
            rec.assigned = None;
        }
        self.refresh_idle(agent_id);
    }

    /// The lease timer fired: requeue, and treat the agent as lost (its session ends).
    pub(super) fn lease_expired(&mut self, now: SimTime, request_id: u64) {
        let Some(job) = self.jobs.get(&request_id) else {
            return;
        };
        let (Some(agent_id), Some(until)) = (job.agent(), job.locked_until) else {
            return;
        };
        if until + self.cfg.lease_grace > now {
            return;
        }
        self.requeue(now, request_id);
        self.end_session(now, agent_id, crate::api::ErrorKind::SessionExpired);
    }
}

/// A duration as .NET writes a `TimeSpan` (`"hh:mm:ss"`, `"d.hh:mm:ss"` past a day), the
/// format of a `JobCancellation`'s `timeout`. Fractions of a second are dropped.
fn timespan(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{days}.{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the cancellation timeout is written as the real agent parses a TimeSpan.
    #[test]
    fn timespan_is_dotnet_format() {
        assert_eq!(timespan(Duration::from_secs(60)), "00:01:00");
        assert_eq!(timespan(Duration::ZERO), "00:00:00");
        assert_eq!(timespan(Duration::from_millis(3_723_900)), "01:02:03");
        assert_eq!(timespan(Duration::from_secs(90_061)), "1.01:01:01");
    }

    // Goal: a demand is `name` or `name -equals value`, nothing else.
    #[test]
    fn demands_are_checked() {
        assert!(check_demand("Agent.OS -equals Linux").is_ok());
        assert!(check_demand("two words").is_err());
        assert!(check_demand("").is_err());
    }
}
