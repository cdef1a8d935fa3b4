//! Job conservation under random interleavings: agents poll, acknowledge, renew and finish
//! jobs, crash (go silent for good, and a new agent takes their place), leases expire as time
//! jumps, and the admin queues and cancels jobs, in any order proptest draws. Through all of
//! it the sans-IO server must conserve jobs: at every step each queued job is waiting,
//! assigned or finished (never two, never none), the finished count never falls, and once
//! everything left is canceled and every lease has run out, every job has ended exactly once.
//!
//! Modelled crypto keeps each case cheap; the cases and steps are few enough that the whole
//! property runs in a few seconds of the suite.

mod server_support;

use std::time::Duration;

use fleetsim_core::api::{ApiRequest, ApiResponse};
use fleetsim_core::crypto::CryptoMode;
use fleetsim_core::proto::{
    AgentJobRequestMessage, EMPTY_GUID, EVENT_JOB_COMPLETED, JobEvent, JobRequestUpdate,
    MESSAGE_JOB_REQUEST, TaskResult,
};
use proptest::prelude::*;
use server_support::*;

/// Agents online at once; a crashed one is replaced, so this many are always there.
const AGENTS: usize = 3;
const LEASE: Duration = Duration::from_secs(600);
const GRACE: Duration = Duration::from_secs(60);

/// One step of a case.
#[derive(Clone, Debug)]
enum Step {
    /// The admin queues this many jobs.
    Queue(usize),
    /// Agent `i` polls once; a job it gets it acknowledges (DELETE) and holds.
    Poll(usize),
    /// Agent `i` renews the lease of the job it holds.
    Renew(usize),
    /// Agent `i` finishes the job it holds with this result.
    Finish(usize, TaskResult),
    /// Agent `i` stops talking for good; a newly registered agent takes its slot.
    Crash(usize),
    /// The admin cancels the `k`-th job queued so far (modulo their number).
    Cancel(usize),
    /// Time passes: timers fire (lease expiry, session expiry, held polls).
    Advance(Duration),
}

fn step() -> impl Strategy<Value = Step> {
    let agent = 0..AGENTS;
    let result = prop_oneof![
        Just(TaskResult::Succeeded),
        Just(TaskResult::Failed),
        Just(TaskResult::Canceled),
    ];
    let pause = prop_oneof![
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(30)),
        Just(Duration::from_secs(130)),
        Just(LEASE + GRACE + Duration::from_secs(1)),
    ];
    prop_oneof![
        2 => (1..3usize).prop_map(Step::Queue),
        4 => agent.clone().prop_map(Step::Poll),
        1 => agent.clone().prop_map(Step::Renew),
        3 => (agent.clone(), result).prop_map(|(i, r)| Step::Finish(i, r)),
        1 => agent.prop_map(Step::Crash),
        1 => (0..16usize).prop_map(Step::Cancel),
        2 => pause.prop_map(Step::Advance),
    ]
}

/// An agent as this test drives it, and the job it holds.
struct Agent {
    agent: TestAgent,
    job: Option<AgentJobRequestMessage>,
}

/// The server, its agents and every job queued so far.
struct World {
    h: Harness,
    agents: Vec<Agent>,
    jobs: Vec<u64>,
    /// Agents registered so far (names are never reused).
    registered: usize,
    finished_before: u64,
}

impl World {
    fn new() -> World {
        let mut c = config();
        c.crypto_mode = CryptoMode::Modelled;
        c.lease_duration = LEASE;
        c.lease_grace = GRACE;
        // Tokens outlive every case: expiry is not what this property is about.
        c.listener_token_ttl = Duration::from_secs(1_000_000);
        c.job_token_ttl = Duration::from_secs(1_000_000);
        let mut w = World {
            h: Harness::new(c),
            agents: Vec::new(),
            jobs: Vec::new(),
            registered: 0,
            finished_before: 0,
        };
        for _ in 0..AGENTS {
            let agent = w.new_agent();
            w.agents.push(agent);
        }
        w
    }

    fn new_agent(&mut self) -> Agent {
        self.registered += 1;
        let name = format!("agent-{}", self.registered);
        Agent {
            agent: online_agent_modelled(&mut self.h, &name),
            job: None,
        }
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Queue(n) => {
                let queued = queue(&mut self.h, (0..n).map(|_| simple_job(1, 0, &[])).collect());
                self.jobs.extend(queued.iter().map(|j| j.request_id));
            }
            Step::Poll(i) => self.poll(i),
            Step::Renew(i) => {
                if let Some(job) = &self.agents[i].job {
                    let renew = ApiRequest::UpdateJobRequest {
                        pool_id: 1,
                        request_id: job.request_id,
                        lock_token: EMPTY_GUID.into(),
                        update: JobRequestUpdate {
                            request_id: job.request_id,
                            ..Default::default()
                        },
                    };
                    // Refused once the lease is gone: the agent keeps going, as the real one
                    // does until its renewals give up.
                    let _ = self.h.call(bearer(&self.agents[i].agent.token), renew);
                }
            }
            Step::Finish(i, result) => {
                if let Some(job) = self.agents[i].job.take() {
                    let done = ApiRequest::PostEvent {
                        plan: plan_scope(&job),
                        event: JobEvent {
                            name: EVENT_JOB_COMPLETED.into(),
                            job_id: job.job_id.clone(),
                            request_id: job.request_id,
                            result: Some(result),
                        },
                    };
                    // A finish after the job was requeued or canceled may be refused; it must
                    // never end the job a second time (the conservation check says).
                    let _ = self.h.call(bearer(&job_token(&job)), done);
                }
            }
            Step::Crash(i) => self.agents[i] = self.new_agent(),
            Step::Cancel(k) => {
                if !self.jobs.is_empty() {
                    let request_id = self.jobs[k % self.jobs.len()];
                    let cancel = ApiRequest::CancelJob {
                        pool_id: 1,
                        request_id,
                    };
                    // JobNotFound once it has ended.
                    let _ = self.h.call(pat(), cancel);
                }
            }
            Step::Advance(d) => self.h.advance(d),
        }
    }

    /// One poll by agent `i`; a parked poll is given up at once (the client disconnects), which
    /// leaves any job message waiting for the next poll.
    fn poll(&mut self, i: usize) {
        let a = &self.agents[i].agent;
        match self.h.send(bearer(&a.token), get_message(a, None)) {
            (_, Some(ApiResponse::Message(m))) if m.message_type == MESSAGE_JOB_REQUEST => {
                let job = open_job(a, &m);
                let ack = delete_message(a, m.message_id);
                assert_eq!(self.h.call(bearer(&a.token), ack), ApiResponse::NoContent);
                // An agent holding a job is not offered another; a second one would be a bug.
                assert!(
                    self.agents[i].job.is_none(),
                    "agent {i} was given a second job"
                );
                self.agents[i].job = Some(job);
            }
            (_, Some(ApiResponse::Message(m))) => {
                // A cancellation: acknowledge it and finish the job as canceled later (or not).
                let ack = delete_message(a, m.message_id);
                let _ = self.h.call(bearer(&a.token), ack);
            }
            (_, Some(ApiResponse::Error(_))) => {
                // Its session expired while it was silent: the agent starts over as a new one.
                self.agents[i] = self.new_agent();
            }
            (_, Some(_)) => {}
            (id, None) => self.h.server.handle_disconnect(self.h.now, id),
        }
    }

    /// Every job queued so far is waiting, assigned or finished, and finished never falls.
    fn check_conservation(&mut self, after: &Step) {
        let s = self.h.server.stats();
        let total = self.jobs.len() as u64;
        assert_eq!(
            s.jobs_queued + s.jobs_assigned + s.jobs_completed,
            total,
            "after {after:?}: {s:?} does not account for the {total} jobs queued"
        );
        assert!(
            s.jobs_completed >= self.finished_before,
            "after {after:?}: finished fell from {} to {}",
            self.finished_before,
            s.jobs_completed
        );
        self.finished_before = s.jobs_completed;
    }

    /// Cancel what is left and let every lease run out: then every job has ended, once.
    fn settle(&mut self) {
        for &request_id in &self.jobs {
            let cancel = ApiRequest::CancelJob {
                pool_id: 1,
                request_id,
            };
            let _ = self.h.call(pat(), cancel);
        }
        self.h.advance(2 * (LEASE + GRACE));
        let s = self.h.server.stats();
        assert_eq!(
            (s.jobs_queued, s.jobs_assigned, s.jobs_completed),
            (0, 0, self.jobs.len() as u64),
            "after settling: {s:?}"
        );
        for &request_id in &self.jobs {
            let view = self
                .h
                .server
                .job_request(request_id)
                .expect("a queued job is known");
            assert_eq!(view.state.as_deref(), Some("completed"), "job {request_id}");
            assert!(
                view.result.is_some(),
                "job {request_id} ended without a result"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    })]

    // Goal: whatever the order of agent actions, crashes, lease expiries and cancels, every
    // queued job is accounted for at every step and ends exactly once.
    #[test]
    fn every_queued_job_ends_exactly_once(steps in prop::collection::vec(step(), 1..48)) {
        let mut w = World::new();
        for step in &steps {
            w.apply(step);
            w.check_conservation(step);
        }
        w.settle();
    }
}
