//! The complete protocol walk against the server core, with real crypto and every request and
//! answer passing through the codec: discovery → registration → 401 challenge → token →
//! session → long poll → job → lease renewal → plan hub → completion → session delete.

mod server_support;

use std::time::Duration;

use fleetsim_core::api::{AgentInclude, ApiRequest, ApiResponse, Credential, ErrorKind};
use fleetsim_core::codec::iso8601_utc;
use fleetsim_core::job::inputs;
use fleetsim_core::proto::{
    AgentStatus, EMPTY_GUID, EVENT_JOB_COMPLETED, JobEvent, JobRequestUpdate, ListOf,
    MESSAGE_JOB_REQUEST, SYNTHETIC_TASK_NAME, TaskLogCreate, TaskResult, TimelineRecord,
    TimelineRecordFeedLinesWrapper, TimelineRecordState,
};
use server_support::*;

// Goal: one agent goes through every step of the real protocol and the job completes, with
// the state visible through the API at each step.
#[test]
fn full_walk_from_discovery_to_completion() {
    let mut h = Harness::new(config());

    // Discovery, as config.sh and the REST clients do it.
    let ApiResponse::ConnectionData(cd) = h.call(pat(), ApiRequest::ConnectionData) else {
        panic!("connectionData")
    };
    assert_eq!(cd.deployment_type, "onPremises");
    assert_eq!(
        cd.location_service_data.access_mappings[0].access_point,
        PUBLIC_URL
    );
    assert_eq!(
        cd.location_service_data.default_access_mapping_moniker,
        "PublicAccessMapping"
    );
    let ApiResponse::Locations(all) = h.call(pat(), ApiRequest::Options { area: None }) else {
        panic!("options")
    };
    assert!(
        all.value
            .iter()
            .any(|l| l.id == "e298ef32-5878-4cab-993c-043836571f42")
    );
    let location = ApiRequest::Options {
        area: Some("Location".into()),
    };
    let ApiResponse::Locations(loc) = h.call(pat(), location) else {
        panic!("options Location")
    };
    assert_eq!(loc.value[0].resource_name, "ResourceAreas");
    let areas = ApiRequest::ResourceAreas {
        area_id: Some("a85b8835".into()),
    };
    assert_eq!(h.call(pat(), areas), ApiResponse::NoResourceAreas);
    let pools = ApiRequest::ListPools {
        pool_name: Some("default".into()),
    };
    let ApiResponse::Pools(pools) = h.call(pat(), pools) else {
        panic!("pools")
    };
    assert_eq!((pools.count, pools.value[0].id), (1, 1));
    let lookup = ApiRequest::ListAgents {
        pool_id: 1,
        agent_name: Some("walker".into()),
    };
    assert_eq!(
        h.call(pat(), lookup.clone()),
        ApiResponse::Agents(ListOf::new(vec![]))
    );

    // Registration.
    let mut agent = register(&mut h, "walker", &[("Agent.OS", "Linux")]);
    assert_eq!(
        agent.authorization_url,
        format!("{PUBLIC_URL}/_apis/oauth2/token")
    );
    let ApiResponse::Agents(found) = h.call(pat(), lookup) else {
        panic!("lookup")
    };
    assert_eq!(found.value[0].id, agent.id);
    assert_eq!(found.value[0].status, Some(AgentStatus::Offline));

    // The listener's first call is anonymous and must be challenged.
    h.expect_error(
        Credential::Anonymous,
        ApiRequest::ConnectionData,
        ErrorKind::Unauthorized,
    );
    fetch_token(&mut h, &mut agent);
    assert!(matches!(
        h.call(bearer(&agent.token), ApiRequest::ConnectionData),
        ApiResponse::ConnectionData(_)
    ));

    // Session with an OAEP-wrapped AES key; the agent shows online.
    open_session(&mut h, &mut agent);
    assert!(agent.session_key.is_some());
    let get = ApiRequest::GetAgentWith {
        pool_id: 1,
        agent_id: agent.id,
        include: AgentInclude {
            assigned_request: true,
            ..AgentInclude::default()
        },
    };
    let ApiResponse::Agent(a) = h.call(pat(), get.clone()) else {
        panic!("get agent")
    };
    assert_eq!(a.status, Some(AgentStatus::Online));

    // An idle long poll is parked; queueing a job wakes it with the job message at once.
    let (poll, answer) = h.send(bearer(&agent.token), get_message(&agent, None));
    assert_eq!(answer, None, "no job yet: the poll is held");
    h.advance(Duration::from_secs(3));
    let queued = queue(&mut h, vec![simple_job(2, 2, &[])]);
    let request_id = queued[0].request_id;
    let Some(ApiResponse::Message(message)) = h.released_for(poll).cloned() else {
        panic!("the parked poll was not woken: {:?}", h.released)
    };
    assert_eq!(message.message_type, MESSAGE_JOB_REQUEST);
    assert!(!message.iv.is_empty(), "real crypto encrypts the body");
    let job = open_job(&agent, &message);
    assert_eq!(job.request_id, request_id);
    assert_eq!(
        (job.plan.plan_type.as_str(), job.plan.version),
        ("Build", 9)
    );
    assert_eq!(job.steps.len(), 2);
    assert_eq!(job.steps[0].reference.name, SYNTHETIC_TASK_NAME);
    assert_eq!(job.steps[0].inputs[inputs::DURATION_MS], "1000");
    let secrets: Vec<_> = job.variables.values().filter(|v| v.is_secret).collect();
    assert_eq!(secrets.len(), 3, "two job secrets plus system.accessToken");
    assert_eq!(job.mask[0].kind, "regex");
    let token = job_token(&job);
    let plan = plan_scope(&job);

    // Acknowledge, then renew the lease: lockedUntil = now + 10 min.
    let ack = delete_message(&agent, message.message_id);
    assert_eq!(h.call(bearer(&agent.token), ack), ApiResponse::NoContent);
    let renew = ApiRequest::UpdateJobRequest {
        pool_id: 1,
        request_id,
        lock_token: EMPTY_GUID.into(),
        update: JobRequestUpdate {
            request_id,
            ..Default::default()
        },
    };
    let ApiResponse::JobRequest(lease) = h.call(bearer(&agent.token), renew) else {
        panic!("renew")
    };
    let expected = iso8601_utc(EPOCH_MS + h.now.as_micros() / 1000 + 600_000);
    assert_eq!(lease.locked_until.as_deref(), Some(expected.as_str()));
    assert_eq!(lease.state.as_deref(), Some("running"));
    let ApiResponse::Agent(a) = h.call(pat(), get.clone()) else {
        panic!("get agent")
    };
    assert_eq!(a.assigned_request.map(|r| r.request_id), Some(request_id));

    // The worker's plan-hub traffic with the job token.
    let job_cred = bearer(&token);
    let record = TimelineRecord {
        id: job.steps[0].id.clone(),
        name: Some("step1".into()),
        state: Some(TimelineRecordState::InProgress),
        ..Default::default()
    };
    let patch = ApiRequest::UpdateTimelineRecords {
        plan: plan.clone(),
        timeline_id: job.timeline.id.clone(),
        records: ListOf::new(vec![record.clone()]),
    };
    assert!(
        matches!(h.call(job_cred.clone(), patch), ApiResponse::TimelineRecords(r) if r.count == 1)
    );
    let feed = ApiRequest::AppendFeed {
        plan: plan.clone(),
        timeline_id: job.timeline.id.clone(),
        record_id: record.id.clone(),
        feed: TimelineRecordFeedLinesWrapper {
            step_id: record.id.clone(),
            value: vec!["compiling".into(), "linking".into()],
            count: 2,
            start_line: Some(1),
        },
    };
    assert_eq!(h.call(job_cred.clone(), feed), ApiResponse::Ok);
    let create = ApiRequest::CreateLog {
        plan: plan.clone(),
        log: TaskLogCreate {
            path: format!("logs\\{}", record.id),
        },
    };
    let ApiResponse::Log(log) = h.call(job_cred.clone(), create) else {
        panic!("log create")
    };
    let append = ApiRequest::AppendLog {
        plan: plan.clone(),
        log_id: log.id,
        content: b"line 1\nline 2\n".to_vec(),
    };
    let ApiResponse::Log(log) = h.call(job_cred.clone(), append) else {
        panic!("log append")
    };
    assert_eq!(log.line_count, 2);
    assert_eq!(
        h.server.log_content(request_id, log.id),
        Some(&b"line 1\nline 2\n"[..])
    );
    let attach = ApiRequest::PutAttachment {
        plan: plan.clone(),
        timeline_id: job.timeline.id.clone(),
        record_id: record.id.clone(),
        kind: "DistributedTask.Core.Summary".into(),
        name: "summary.md".into(),
        content: vec![b'x'; 100],
    };
    assert!(matches!(
        h.call(job_cred.clone(), attach),
        ApiResponse::Attachment(_)
    ));
    assert_eq!(
        h.server.stats().leaked_secrets,
        0,
        "clean lines leak nothing"
    );

    // Completion through the plan event ends the job and revokes its token.
    let done = ApiRequest::PostEvent {
        plan: plan.clone(),
        event: JobEvent {
            name: EVENT_JOB_COMPLETED.into(),
            job_id: job.job_id.clone(),
            request_id,
            result: Some(TaskResult::Succeeded),
        },
    };
    assert_eq!(h.call(job_cred.clone(), done.clone()), ApiResponse::Ok);
    h.expect_error(job_cred, done, ErrorKind::Unauthorized);
    let list = ApiRequest::ListJobRequests { pool_id: 1 };
    let ApiResponse::JobRequests(jobs) = h.call(pat(), list) else {
        panic!("list")
    };
    assert_eq!(jobs.value[0].state.as_deref(), Some("completed"));
    assert_eq!(jobs.value[0].result, Some(TaskResult::Succeeded));
    let stats = h.server.stats();
    assert_eq!(
        (stats.jobs_completed, stats.jobs_assigned, stats.jobs_queued),
        (1, 0, 0)
    );

    // Graceful exit: the session goes, the agent is offline.
    let delete = ApiRequest::DeleteSession {
        pool_id: 1,
        session_id: agent.session_id.clone(),
    };
    assert_eq!(h.call(bearer(&agent.token), delete), ApiResponse::NoContent);
    let ApiResponse::Agent(a) = h.call(pat(), get) else {
        panic!("get agent")
    };
    assert_eq!(a.status, Some(AgentStatus::Offline));
    assert_eq!(h.server.stats().sessions, 0);
}

// Goal: the legacy finish path (job-request PATCH with result + finishTime) also ends the job,
// and a second agent then gets the next job.
#[test]
fn job_request_patch_with_result_finishes_the_job() {
    let mut h = Harness::new(config());
    let agent = online_agent(&mut h, "finisher", &[]);
    let queued = queue(&mut h, vec![simple_job(1, 0, &[]), simple_job(1, 0, &[])]);
    let message = take_message(&mut h, &agent);
    let job = open_job(&agent, &message);
    assert_eq!(job.request_id, queued[0].request_id);
    let finish = ApiRequest::UpdateJobRequest {
        pool_id: 1,
        request_id: job.request_id,
        lock_token: job.lock_token.clone(),
        update: JobRequestUpdate {
            request_id: job.request_id,
            finish_time: Some(iso8601_utc(EPOCH_MS)),
            result: Some(TaskResult::Failed),
        },
    };
    let ApiResponse::JobRequest(done) = h.call(bearer(&agent.token), finish) else {
        panic!("finish")
    };
    assert_eq!(
        (done.result, done.state.as_deref()),
        (Some(TaskResult::Failed), Some("completed"))
    );
    // The finished job's message was never acknowledged; it is gone anyway, and the next job
    // is what the agent sees now.
    let next = open_job(&agent, &take_message(&mut h, &agent));
    assert_eq!(next.request_id, queued[1].request_id);
}

/// A fake monotonic clock: every reading is 1 µs after the previous one.
fn fake_clock_ns() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NOW_NS: AtomicU64 = AtomicU64::new(0);
    NOW_NS.fetch_add(1_000, Ordering::Relaxed)
}

// Goal: the emulator reports its crypto work (JWT verify, OAEP wrap, AES encrypt) as events on
// the emulator side, timed with the meter the driver injects.
#[test]
fn crypto_work_is_reported_with_the_injected_meter() {
    use fleetsim_core::crypto::Meter;
    use fleetsim_core::event::{CryptoOp, Event, Side};
    let mut h = Harness::new(config());
    h.server.set_meter(Meter::new(fake_clock_ns));
    let agent = online_agent(&mut h, "metered", &[]);
    queue(&mut h, vec![simple_job(1, 0, &[])]);
    take_message(&mut h, &agent);
    let ops: Vec<(CryptoOp, u64)> = h
        .events
        .iter()
        .map(|e| match e {
            Event::Crypto {
                side: Side::Emulator,
                op,
                count: 1,
                nanos,
                ..
            } => (*op, *nanos),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    let kinds: Vec<CryptoOp> = ops.iter().map(|(op, _)| *op).collect();
    assert_eq!(
        kinds,
        [
            CryptoOp::Rs256Verify,
            CryptoOp::OaepWrap,
            CryptoOp::AesEncrypt
        ]
    );
    assert!(ops.iter().all(|(_, nanos)| *nanos == 1_000), "{ops:?}");
}
