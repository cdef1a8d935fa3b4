//! Durable state (`server::durable`): the records a durable server writes rebuild it after a
//! crash; an acknowledged job is neither lost nor run twice; a job whose lease outlived the
//! downtime keeps its agent, one whose lease ran out is requeued; renewals write once per half
//! lease; a state dir of another format or seed is refused.

mod server_support;

use std::time::Duration;

use fleetsim_core::api::{ApiRequest, ApiResponse, ErrorKind};
use fleetsim_core::proto::{
    AgentJobRequestMessage, EMPTY_GUID, JobRequestUpdate, TaskAgentJobRequest, TaskLogCreate,
};
use fleetsim_core::server::ServerConfig;
use fleetsim_core::server::durable::{FORMAT_VERSION, META_KEY, RestoreError, Table};
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

fn leased(lease_s: u64) -> ServerConfig {
    let mut c = config();
    c.lease_duration = Duration::from_secs(lease_s);
    c.lease_grace = Duration::from_secs(lease_s / 10);
    c.session_idle_timeout = Duration::from_secs(24 * 3600);
    c
}

fn job_requests(h: &mut Harness) -> Vec<TaskAgentJobRequest> {
    match h.call(pat(), ApiRequest::ListJobRequests { pool_id: 1 }) {
        ApiResponse::JobRequests(list) => list.value,
        other => panic!("job list: {other:?}"),
    }
}

/// Take the agent's job message, acknowledge it and renew the lease once: the job is running.
fn start_job(h: &mut Harness, agent: &TestAgent) -> AgentJobRequestMessage {
    let message = take_message(h, agent);
    let job = open_job(agent, &message);
    let ack = delete_message(agent, message.message_id);
    assert_eq!(h.call(bearer(&agent.token), ack), ApiResponse::NoContent);
    assert!(matches!(
        h.call(bearer(&agent.token), renew(&job)),
        ApiResponse::JobRequest(_)
    ));
    job
}

/// After a restart the agent's poll hears its session expired; it opens a new one with the
/// token it holds, as the real agent does.
fn reconnect(h: &mut Harness, agent: &mut TestAgent) {
    h.expect_error(
        bearer(&agent.token),
        get_message(agent, None),
        ErrorKind::SessionExpired,
    );
    open_session(h, agent);
}

// Goal: what a durable server wrote rebuilds it: pools, agents (with their listener tokens),
// queued, unmatched and finished jobs with their plans, counters and the server's identity.
#[test]
fn restore_round_trips_the_durable_state() {
    let mut h = Harness::durable(config());
    let mut store = MemoryStore::default();
    let mut a = online_agent(&mut h, "alpha", &[("Agent.OS", "Linux")]);
    register(&mut h, "beta", &[]);
    queue(&mut h, vec![simple_job(1, 1, &[])]);
    let job = start_job(&mut h, &a);
    let cred = bearer(&job_token(&job));
    let create = ApiRequest::CreateLog {
        plan: plan_scope(&job),
        log: TaskLogCreate {
            path: "logs\\1".into(),
        },
    };
    let ApiResponse::Log(log) = h.call(cred.clone(), create) else {
        panic!("log")
    };
    let append = ApiRequest::AppendLog {
        plan: plan_scope(&job),
        log_id: log.id,
        content: b"step one\n".to_vec(),
    };
    assert!(matches!(h.call(cred, append), ApiResponse::Log(_)));
    finish(&mut h, &a, job.request_id, &job.lock_token);
    queue(
        &mut h,
        vec![simple_job(1, 0, &["Agent.OS -equals Windows_NT"]); 2],
    );
    store.sync(&mut h.server);
    let before = h.server.stats();
    let jobs_before = job_requests(&mut h);
    let ApiResponse::ConnectionData(conn_before) = h.call(pat(), ApiRequest::ConnectionData) else {
        panic!("connectionData")
    };

    h.restart(&mut store, config(), Duration::from_secs(5));

    let after = h.server.stats();
    assert_eq!(
        (after.agents, after.jobs_queued, after.jobs_unmatched),
        (2, 2, 2)
    );
    assert_eq!(
        (
            after.jobs_completed,
            after.tokens_issued,
            after.jobs_requeued
        ),
        (
            before.jobs_completed,
            before.tokens_issued,
            before.jobs_requeued
        )
    );
    assert_eq!(
        (after.sessions, after.agents_online),
        (0, 0),
        "sessions end"
    );
    assert_eq!(
        job_requests(&mut h),
        jobs_before,
        "every job request as it was"
    );
    assert_eq!(
        h.server.log_content(job.request_id, log.id),
        Some(&b"step one\n"[..])
    );
    let ApiResponse::ConnectionData(conn_after) = h.call(pat(), ApiRequest::ConnectionData) else {
        panic!("connectionData")
    };
    assert_eq!(conn_after.instance_id, conn_before.instance_id);
    // The listener token survived; the session did not.
    reconnect(&mut h, &mut a);
    assert_eq!(h.server.stats().agents_online, 1);
    // Ids go on from where they were.
    let next = queue(&mut h, vec![simple_job(1, 0, &[])]);
    assert_eq!(next[0].request_id, jobs_before.len() as u64 + 1);
}

// Goal: a job whose agent acknowledged it stays with that agent across a crash and is
// finished once; a job assigned but never acknowledged (its message died with the session)
// goes to an agent exactly once, after the restart. No job is lost or handed out twice.
#[test]
fn an_acknowledged_job_is_never_lost_nor_run_twice() {
    let mut h = Harness::durable(leased(600));
    let mut store = MemoryStore::default();
    let mut a = online_agent(&mut h, "a", &[]);
    let mut b = online_agent(&mut h, "b", &[]);
    let queued = queue(&mut h, vec![simple_job(1, 0, &[]); 2]);
    let job_a = start_job(&mut h, &a);
    assert_eq!(job_a.request_id, queued[0].request_id);
    // b was assigned the second job but never read it.
    assert_eq!(h.server.stats().jobs_assigned, 2);
    store.sync(&mut h.server);

    h.restart(&mut store, leased(600), Duration::from_secs(10));

    let jobs = job_requests(&mut h);
    assert_eq!(jobs[0].state.as_deref(), Some("running"), "lease kept");
    assert_eq!(jobs[0].reserved_agent.as_ref().map(|r| r.id), Some(a.id));
    assert_eq!(jobs[1].state.as_deref(), Some("queued"), "unread: requeued");
    reconnect(&mut h, &mut a);
    reconnect(&mut h, &mut b);
    // b gets the requeued job; a, busy with its own, gets nothing.
    let job_b = start_job(&mut h, &b);
    assert_eq!(job_b.request_id, queued[1].request_id);
    let (_, answer) = h.send(bearer(&a.token), get_message(&a, None));
    assert_eq!(answer, None, "a's poll is held: no second job");
    // a's lease, lock and job token still work.
    assert!(matches!(
        h.call(bearer(&a.token), renew(&job_a)),
        ApiResponse::JobRequest(_)
    ));
    let feed = ApiRequest::CreateLog {
        plan: plan_scope(&job_a),
        log: TaskLogCreate { path: "l".into() },
    };
    assert!(matches!(
        h.call(bearer(&job_token(&job_a)), feed),
        ApiResponse::Log(_)
    ));
    finish(&mut h, &a, job_a.request_id, &job_a.lock_token);
    finish(&mut h, &b, job_b.request_id, &job_b.lock_token);
    let stats = h.server.stats();
    assert_eq!(
        (stats.jobs_completed, stats.jobs_queued, stats.jobs_assigned),
        (2, 0, 0)
    );
    let jobs = job_requests(&mut h);
    assert_eq!(jobs[0].requeue_count, Some(0), "a's job never left a");
    assert_eq!(jobs[1].reserved_agent.as_ref().map(|r| r.id), Some(b.id));
}

// Goal: a lease still valid when the server comes back is kept; one that ran out (plus grace)
// while it was down requeues the job at once, and the old holder is cut off.
#[test]
fn a_lease_is_kept_or_requeued_by_the_downtime() {
    for (down_s, kept) in [(30, true), (120, false)] {
        let mut h = Harness::durable(leased(60));
        let mut store = MemoryStore::default();
        let mut a = online_agent(&mut h, "a", &[]);
        queue(&mut h, vec![simple_job(1, 0, &[])]);
        let job = start_job(&mut h, &a);
        store.sync(&mut h.server);

        h.restart(&mut store, leased(60), Duration::from_secs(down_s));

        let stats = h.server.stats();
        let jobs = job_requests(&mut h);
        if kept {
            reconnect(&mut h, &mut a);
            assert_eq!((stats.jobs_assigned, stats.jobs_requeued), (1, 0));
            assert_eq!(jobs[0].state.as_deref(), Some("running"));
            assert!(matches!(
                h.call(bearer(&a.token), renew(&job)),
                ApiResponse::JobRequest(_)
            ));
        } else {
            assert_eq!((stats.jobs_queued, stats.jobs_requeued), (1, 1));
            assert_eq!(jobs[0].requeue_count, Some(1));
            h.expect_error(bearer(&a.token), renew(&job), ErrorKind::JobNotFound);
            reconnect(&mut h, &mut a);
            // The job goes to the next agent to ask (here a again, as a new assignment).
            let again = open_job(&a, &take_message(&mut h, &a));
            assert_eq!(again.request_id, job.request_id);
            assert_ne!(again.lock_token, job.lock_token, "a new assignment");
        }
    }
}

// Goal: a renewing fleet does not write a record per renewal: a lease renewal is written only
// once it moved half a lease past the stored one. A server without durability writes nothing.
#[test]
fn renewals_are_written_once_per_half_lease() {
    let mut h = Harness::durable(leased(600));
    let mut store = MemoryStore::default();
    let a = online_agent(&mut h, "a", &[]);
    queue(&mut h, vec![simple_job(1, 0, &[])]);
    let job = start_job(&mut h, &a);
    store.sync(&mut h.server);
    let written = store.writes[&Table::Jobs];
    for _ in 0..4 {
        h.advance(Duration::from_secs(60));
        assert!(matches!(
            h.call(bearer(&a.token), renew(&job)),
            ApiResponse::JobRequest(_)
        ));
        store.sync(&mut h.server);
    }
    assert_eq!(store.writes[&Table::Jobs], written, "4 minutes: no write");
    h.advance(Duration::from_secs(61));
    assert!(matches!(
        h.call(bearer(&a.token), renew(&job)),
        ApiResponse::JobRequest(_)
    ));
    store.sync(&mut h.server);
    assert_eq!(store.writes[&Table::Jobs], written + 1, "past half a lease");

    let mut plain = Harness::new(config());
    online_agent(&mut plain, "a", &[]);
    queue(&mut plain, vec![simple_job(1, 0, &[])]);
    assert_eq!(plain.server.poll_durable(), None);
}

// Goal: records written with another seed or another format are refused with the reason, not
// half-restored.
#[test]
fn another_seed_or_format_is_refused() {
    let mut h = Harness::durable(config());
    let mut store = MemoryStore::default();
    online_agent(&mut h, "a", &[]);
    store.sync(&mut h.server);
    let refused = |store: &MemoryStore, seed| {
        fleetsim_core::server::Server::restore(config(), seed, EPOCH_MS, store.load()).err()
    };
    assert_eq!(
        refused(&store, 7),
        Some(RestoreError::Seed { found: 42, want: 7 })
    );
    let meta = store.records.get_mut(&(Table::Meta, META_KEY)).unwrap();
    let text = String::from_utf8(meta.clone()).unwrap();
    let tag = format!("\"format\":{FORMAT_VERSION}");
    assert!(text.contains(&tag), "{text}");
    *meta = text.replace(&tag, "\"format\":999").into_bytes();
    assert_eq!(
        refused(&store, 42),
        Some(RestoreError::Format { found: 999 })
    );
    assert!(
        RestoreError::Format { found: 999 }
            .to_string()
            .contains("--state-dir")
    );
}
