//! Sessions, long polls, the job queue and leases: session conflict and expiry, the long poll
//! held and woken or timed out, messages kept until deleted, FIFO assignment with demands,
//! lease expiry and requeue to another agent, the secret scan, limits, and determinism.

mod server_support;

use std::time::Duration;

use fleetsim_core::api::{ApiRequest, ApiResponse, ErrorKind};
use fleetsim_core::job::{QueueJobsRequest, SyntheticJob};
use fleetsim_core::proto::{
    AgentJobRequestMessage, AgentStatus, EMPTY_GUID, JobRequestUpdate,
    TimelineRecordFeedLinesWrapper,
};
use fleetsim_core::server::ServerConfig;
use server_support::*;

fn renew(job: &AgentJobRequestMessage) -> ApiRequest {
    ApiRequest::UpdateJobRequest {
        pool_id: 1,
        request_id: job.request_id,
        lock_token: EMPTY_GUID.into(),
        update: JobRequestUpdate {
            request_id: job.request_id,
            ..Default::default()
        },
    }
}

// Goal: a second live session for the same agent is a 409 with the type the agent branches on;
// after the first is deleted a new one succeeds.
#[test]
fn second_session_conflicts() {
    let mut h = Harness::new(config());
    let mut a = online_agent(&mut h, "solo", &[]);
    let first = a.session_id.clone();
    let session = fleetsim_core::proto::TaskAgentSession {
        session_id: EMPTY_GUID.into(),
        agent: fleetsim_core::proto::TaskAgentReference {
            id: a.id,
            ..Default::default()
        },
        ..Default::default()
    };
    let create = ApiRequest::CreateSession {
        pool_id: 1,
        session,
    };
    let e = h.expect_error(bearer(&a.token), create, ErrorKind::SessionConflict);
    assert_eq!(
        ErrorKind::SessionConflict.type_key(),
        "TaskAgentSessionConflictException"
    );
    assert!(e.message.contains("live session"), "{}", e.message);
    let delete = ApiRequest::DeleteSession {
        pool_id: 1,
        session_id: first.clone(),
    };
    assert_eq!(
        h.call(bearer(&a.token), delete.clone()),
        ApiResponse::NoContent
    );
    h.expect_error(bearer(&a.token), delete, ErrorKind::SessionExpired);
    open_session(&mut h, &mut a);
    assert_ne!(a.session_id, first);
}

// Goal: a poll is held for the configured time and then answered 202 NoMessage; a client that
// disconnects is forgotten without an answer.
#[test]
fn hold_timeout_answers_no_message() {
    let mut c = config();
    c.long_poll_hold = Duration::from_secs(50);
    let mut h = Harness::new(c);
    let a = online_agent(&mut h, "waiter", &[]);
    let (poll, answer) = h.send(bearer(&a.token), get_message(&a, None));
    assert_eq!(answer, None);
    assert_eq!(h.server.stats().parked_polls, 1);
    h.advance(Duration::from_millis(49_999));
    assert_eq!(h.released_for(poll), None, "held until the full 50 s");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.released_for(poll), Some(&ApiResponse::NoMessage));
    let (gone, _) = h.send(bearer(&a.token), get_message(&a, None));
    h.server.handle_disconnect(h.now, gone);
    h.advance(Duration::from_secs(60));
    assert_eq!(h.released_for(gone), None);
    assert_eq!(h.server.stats().parked_polls, 0);
}

// Goal: a job offered to the keep-alive GET is not lost: it stays until DELETE, and the
// lastMessageId cursor hides it from a poll that already saw it (but a stale cursor from an
// earlier emulator run hides nothing).
#[test]
fn messages_stay_until_deleted() {
    let mut h = Harness::new(config());
    let a = online_agent(&mut h, "keeper", &[]);
    queue(&mut h, vec![simple_job(1, 0, &[])]);
    let seen_by_keepalive = take_message(&mut h, &a);
    let again = take_message(&mut h, &a);
    assert_eq!(again, seen_by_keepalive, "a GET does not dequeue");
    // A cursor from before an emulator restart (past every id issued) does not hide it either.
    let stale = h.call(bearer(&a.token), get_message(&a, Some(1_000_000)));
    assert_eq!(stale, ApiResponse::Message(again.clone()));
    let (after, answer) = h.send(bearer(&a.token), get_message(&a, Some(again.message_id)));
    assert_eq!(answer, None, "the cursor hides what the agent already has");
    assert_eq!(
        h.call(bearer(&a.token), delete_message(&a, again.message_id)),
        ApiResponse::NoContent
    );
    h.advance(Duration::from_secs(50));
    assert_eq!(h.released_for(after), Some(&ApiResponse::NoMessage));
    h.advance(Duration::from_secs(5));
    let (_, answer) = h.send(bearer(&a.token), get_message(&a, None));
    assert_eq!(answer, None, "deleted messages are gone");
}

// Goal: a lease that is not renewed by lockedUntil + grace puts the job back in the queue and
// another agent gets it; the lost agent's job token and session stop working; the job is
// never lost and never held by two agents.
#[test]
fn lease_expiry_requeues_to_another_agent() {
    let mut c = config();
    c.lease_duration = Duration::from_secs(600);
    c.lease_grace = Duration::from_secs(60);
    c.session_idle_timeout = Duration::from_secs(3600);
    let mut h = Harness::new(c);
    let a = online_agent(&mut h, "flaky", &[]);
    let queued = queue(&mut h, vec![simple_job(1, 0, &[])]);
    let job = open_job(&a, &take_message(&mut h, &a));
    assert_eq!(
        h.call(bearer(&a.token), delete_message(&a, 1)),
        ApiResponse::NoContent
    );
    assert!(matches!(
        h.call(bearer(&a.token), renew(&job)),
        ApiResponse::JobRequest(_)
    ));
    let b = online_agent(&mut h, "steady", &[]);
    let (b_poll, _) = h.send(bearer(&b.token), get_message(&b, None));

    // Renewed at t; expiry at t + 600 + 60. One second before, nothing has moved.
    h.advance(Duration::from_secs(659));
    assert_eq!(
        h.released_for(b_poll),
        Some(&ApiResponse::NoMessage),
        "b idled meanwhile"
    );
    assert_eq!(h.server.stats().jobs_requeued, 0);
    // b's poll ended its hold meanwhile; park a fresh one for the handover.
    let (b_poll, _) = h.send(bearer(&b.token), get_message(&b, None));
    h.advance(Duration::from_secs(2));
    let Some(ApiResponse::Message(m)) = h.released_for(b_poll).cloned() else {
        panic!("b did not get the requeued job: {:?}", h.released)
    };
    let job_b = open_job(&b, &m);
    assert_eq!(job_b.request_id, queued[0].request_id);
    assert_eq!(job_b.plan.plan_id, job.plan.plan_id, "same plan, new agent");
    assert_ne!(job_token(&job_b), job_token(&job), "a fresh job token");
    let stats = h.server.stats();
    assert_eq!((stats.jobs_requeued, stats.jobs_assigned), (1, 1));

    // The lost agent is cut off: renewal, job token and session all fail with typed errors.
    h.expect_error(bearer(&a.token), renew(&job), ErrorKind::JobNotFound);
    let log = ApiRequest::CreateLog {
        plan: plan_scope(&job),
        log: fleetsim_core::proto::TaskLogCreate { path: "l".into() },
    };
    h.expect_error(bearer(&job_token(&job)), log, ErrorKind::Unauthorized);
    h.expect_error(
        bearer(&a.token),
        get_message(&a, None),
        ErrorKind::SessionExpired,
    );
    let list = h.server.job_request(queued[0].request_id).unwrap();
    assert_eq!(list.requeue_count, Some(1));
    assert_eq!(list.reserved_agent.map(|r| r.id), Some(b.id));
}

// Goal: an abandoned session expires (agent offline), and a job it never acknowledged goes
// back to the queue; a session with a parked poll does not expire.
#[test]
fn abandoned_session_expires_and_returns_its_job() {
    let mut c = config();
    c.session_idle_timeout = Duration::from_secs(120);
    c.long_poll_hold = Duration::from_secs(50);
    let mut h = Harness::new(c);
    let a = online_agent(&mut h, "ghost", &[]);
    // Parked polls keep the session alive past the idle timeout.
    for _ in 0..3 {
        let (_, answer) = h.send(bearer(&a.token), get_message(&a, None));
        assert_eq!(answer, None);
        h.advance(Duration::from_secs(50));
    }
    assert_eq!(h.server.stats().sessions, 1);
    queue(&mut h, vec![simple_job(1, 0, &[])]);
    assert_eq!(h.server.stats().jobs_assigned, 1);
    h.advance(Duration::from_secs(121));
    let stats = h.server.stats();
    assert_eq!((stats.sessions, stats.agents_online), (0, 0));
    assert_eq!(
        (stats.jobs_queued, stats.jobs_assigned, stats.jobs_requeued),
        (1, 0, 1)
    );
    let get = ApiRequest::GetAgent {
        pool_id: 1,
        agent_id: a.id,
    };
    let ApiResponse::Agent(view) = h.call(pat(), get) else {
        panic!("get")
    };
    assert_eq!(view.status, Some(AgentStatus::Offline));
    h.expect_error(
        bearer(&a.token),
        get_message(&a, None),
        ErrorKind::SessionExpired,
    );
}

// Goal: jobs go FIFO to agents whose capabilities meet their demands; a job no agent can run
// stays queued and is reported as unmatched until a capable agent registers.
#[test]
fn demands_route_jobs_and_unmatched_are_reported() {
    let mut h = Harness::new(config());
    let linux = online_agent(&mut h, "linux", &[("Agent.OS", "Linux")]);
    let queued = queue(
        &mut h,
        vec![
            simple_job(1, 0, &["Agent.OS -equals Windows_NT"]),
            simple_job(1, 0, &["Agent.OS"]),
        ],
    );
    assert_eq!(queued[0].state.as_deref(), Some("unmatched"));
    assert_eq!(queued[1].state.as_deref(), Some("assigned"));
    let job = open_job(&linux, &take_message(&mut h, &linux));
    assert_eq!(
        job.request_id, queued[1].request_id,
        "the Linux agent skips the Windows job"
    );
    assert_eq!(h.server.stats().jobs_unmatched, 1);
    let windows = online_agent(&mut h, "win", &[("Agent.OS", "windows_nt")]);
    let job = open_job(&windows, &take_message(&mut h, &windows));
    assert_eq!(job.request_id, queued[0].request_id);
    assert_eq!(h.server.stats().jobs_unmatched, 0);
    let bad = QueueJobsRequest {
        jobs: vec![simple_job(1, 0, &["two words here"])],
        ..Default::default()
    };
    h.expect_error(
        pat(),
        ApiRequest::QueueJobs {
            pool_id: 1,
            request: bad,
        },
        ErrorKind::BadRequest,
    );
}

// Goal: secret values and their base64 form are counted when they reach a log or the feed;
// masked text counts nothing.
#[test]
fn secret_scan_counts_leaks_in_logs_and_feed() {
    let mut h = Harness::new(config());
    let a = online_agent(&mut h, "leaky", &[]);
    queue(&mut h, vec![simple_job(1, 2, &[])]);
    let job = open_job(&a, &take_message(&mut h, &a));
    let secret = job.variables["fleetsim.secret0"].value.clone();
    assert!(job.variables["fleetsim.secret0"].is_secret);
    let cred = bearer(&job_token(&job));
    let plan = plan_scope(&job);
    let feed = |lines: Vec<String>| ApiRequest::AppendFeed {
        plan: plan.clone(),
        timeline_id: job.timeline.id.clone(),
        record_id: job.steps[0].id.clone(),
        feed: TimelineRecordFeedLinesWrapper {
            step_id: job.steps[0].id.clone(),
            count: lines.len(),
            value: lines,
            start_line: None,
        },
    };
    assert_eq!(
        h.call(cred.clone(), feed(vec!["password is ***".into()])),
        ApiResponse::Ok
    );
    assert_eq!(h.server.stats().leaked_secrets, 0);
    assert_eq!(
        h.call(cred.clone(), feed(vec![format!("password is {secret}")])),
        ApiResponse::Ok
    );
    assert_eq!(h.server.stats().leaked_secrets, 1);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&secret);
    let create = ApiRequest::CreateLog {
        plan: plan.clone(),
        log: fleetsim_core::proto::TaskLogCreate {
            path: "logs\\1".into(),
        },
    };
    let ApiResponse::Log(log) = h.call(cred.clone(), create) else {
        panic!("log")
    };
    let content = format!("token {b64}\nagain {secret}\n").into_bytes();
    let append = ApiRequest::AppendLog {
        plan,
        log_id: log.id,
        content: content.clone(),
    };
    assert!(matches!(h.call(cred, append), ApiResponse::Log(_)));
    assert_eq!(h.server.stats().leaked_secrets, 3);
    assert_eq!(
        h.server.log_content(job.request_id, log.id),
        Some(&content[..]),
        "stored as sent"
    );
}

// Goal: at every table bound the request is refused with a typed error and nothing changes.
#[test]
fn limits_refuse_without_changing_state() {
    let mut c: ServerConfig = config();
    c.limits.max_agents = 1;
    c.limits.max_queued_jobs = 2;
    c.limits.max_parked_polls_per_session = 1;
    let mut h = Harness::new(c);
    let a = online_agent(&mut h, "only", &[]);
    let add = ApiRequest::AddAgent {
        pool_id: 1,
        agent: Box::new(agent_body("second", &[])),
    };
    h.expect_error(pat(), add, ErrorKind::Throttled);
    assert_eq!(h.server.stats().agents, 1);
    let three = QueueJobsRequest {
        count: 3,
        template: Some(SyntheticJob::default()),
        ..Default::default()
    };
    let q = ApiRequest::QueueJobs {
        pool_id: 7,
        request: three.clone(),
    };
    h.expect_error(pat(), q, ErrorKind::PoolNotFound);
    h.expect_error(
        pat(),
        ApiRequest::QueueJobs {
            pool_id: 1,
            request: three,
        },
        ErrorKind::Throttled,
    );
    assert_eq!(
        h.server.stats().jobs_queued + h.server.stats().jobs_assigned,
        0
    );
    let (_, first) = h.send(bearer(&a.token), get_message(&a, None));
    assert_eq!(first, None);
    h.expect_error(
        bearer(&a.token),
        get_message(&a, None),
        ErrorKind::Throttled,
    );
    assert_eq!(h.server.stats().parked_polls, 1);
}

// Goal: the same seed and inputs give the same ids, tokens and job messages (the virtual-time
// trace depends on it).
#[test]
fn same_seed_same_run() {
    let run = || {
        let mut c = config();
        c.crypto_mode = fleetsim_core::crypto::CryptoMode::Modelled;
        let mut h = Harness::new(c);
        let a = online_agent_modelled(&mut h, "det");
        queue(&mut h, vec![simple_job(2, 3, &[])]);
        let m = take_message(&mut h, &a);
        (a.client_id, a.token, a.session_id, m)
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second);
    assert!(first.3.iv.is_empty(), "modelled crypto sends plain bodies");
}
