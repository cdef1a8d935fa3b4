//! Size limits on everything the emulator stores (agent names, versions, capability maps,
//! timeline records, feed lines, log paths, attachment names, the plans finished jobs leave
//! behind), each refused with a typed 400 that names the field and the limit, and the JWT replay
//! set bounded by the assertion lifetime and per agent.

mod server_support;

use std::collections::BTreeMap;
use std::time::Duration;

use fleetsim_core::api::{ApiError, ApiRequest, ApiResponse, Credential, ErrorKind};
use fleetsim_core::proto::{
    AgentJobRequestMessage, EVENT_JOB_COMPLETED, JobEvent, ListOf, TaskAgentUpdate, TaskLogCreate,
    TaskResult, TimelineRecord, TimelineRecordFeedLinesWrapper,
};
use server_support::*;

/// A 400 whose message starts with `field` and names the server.toml key `key`.
fn assert_names(err: &ApiError, field: &str, key: &str) {
    assert_eq!(err.kind, ErrorKind::BadRequest, "{}", err.message);
    assert!(
        err.message.starts_with(field) && err.message.contains(&format!("limits.{key}")),
        "{field} / {key}: {}",
        err.message
    );
}

// Goal: a registration carrying 8 MiB of capabilities (the issue's 12 × 8 MiB = +152 MiB kept)
// is refused with a 400 that names the field and the limit, and nothing is stored; so are a
// replace and a PATCH that would store too much.
#[test]
fn an_agent_with_8_mib_of_capabilities_is_refused_and_nothing_is_kept() {
    let mut h = Harness::new(config());
    let huge = "x".repeat(8 * 1024 * 1024);
    let add = ApiRequest::AddAgent {
        pool_id: 1,
        agent: Box::new(agent_body("bloat", &[("PATH", &huge)])),
    };
    let err = h.expect_error(pat(), add, ErrorKind::BadRequest);
    assert_names(
        &err,
        "systemCapabilities and userCapabilities",
        "max_capability_bytes",
    );
    assert_eq!(h.server.stats().agents, 0);

    let a = register(&mut h, "fine", &[("docker", "")]);
    let replace = ApiRequest::ReplaceAgent {
        pool_id: 1,
        agent_id: a.id,
        agent: Box::new(agent_body("fine", &[("PATH", &huge)])),
    };
    h.expect_error(pat(), replace, ErrorKind::BadRequest);
    let many: BTreeMap<String, String> = (0..2000)
        .map(|i| (format!("cap{i}"), String::new()))
        .collect();
    let patch = ApiRequest::UpdateAgent {
        pool_id: 1,
        agent_id: a.id,
        update: TaskAgentUpdate {
            user_capabilities: Some(many),
            ..TaskAgentUpdate::default()
        },
    };
    let err = h.expect_error(pat(), patch, ErrorKind::BadRequest);
    assert_names(&err, "userCapabilities", "max_capabilities");
    let ApiResponse::Agents(list) = h.call(
        pat(),
        ApiRequest::QueryAgents {
            pool_id: 1,
            query: fleetsim_core::api::AgentQuery {
                include: fleetsim_core::api::AgentInclude {
                    capabilities: true,
                    ..Default::default()
                },
                ..Default::default()
            },
        },
    ) else {
        panic!("agents")
    };
    let kept = &list.value[0];
    assert_eq!(kept.system_capabilities.len(), 1, "unchanged");
    assert!(kept.user_capabilities.is_empty(), "unchanged");
}

// Goal: an agent name, version or OS description past its limit is a 400 naming the field;
// the limits come from server.toml.
#[test]
fn agent_name_and_version_beyond_their_limits_are_refused() {
    let mut c = config();
    c.limits.max_agent_name_chars = 64;
    c.limits.max_agent_field_bytes = 32;
    let mut h = Harness::new(c);
    let add = |name: &str, version: &str| {
        let mut agent = agent_body(name, &[]);
        agent.version = version.to_string();
        ApiRequest::AddAgent {
            pool_id: 1,
            agent: Box::new(agent),
        }
    };
    let err = h.expect_error(
        pat(),
        add(&"n".repeat(65), "4.260.0"),
        ErrorKind::BadRequest,
    );
    assert_names(&err, "name", "max_agent_name_chars");
    let err = h.expect_error(pat(), add("ok", &"9".repeat(33)), ErrorKind::BadRequest);
    assert_names(&err, "version", "max_agent_field_bytes");
    assert!(matches!(
        h.call(pat(), add(&"n".repeat(64), "4.260.0")),
        ApiResponse::Agent(_)
    ));
    let a = register(&mut h, "patched", &[]);
    let patch = ApiRequest::UpdateAgent {
        pool_id: 1,
        agent_id: a.id,
        update: TaskAgentUpdate {
            os_description: Some("L".repeat(33)),
            ..TaskAgentUpdate::default()
        },
    };
    let err = h.expect_error(pat(), patch, ErrorKind::BadRequest);
    assert_names(&err, "osDescription", "max_agent_field_bytes");
}

/// An agent running one job: its job message.
fn running_job(h: &mut Harness, name: &str) -> AgentJobRequestMessage {
    let a = online_agent(h, name, &[]);
    queue(h, vec![simple_job(1, 0, &[])]);
    open_job(&a, &take_message(h, &a))
}

fn records(job: &AgentJobRequestMessage, records: Vec<TimelineRecord>) -> ApiRequest {
    ApiRequest::UpdateTimelineRecords {
        plan: plan_scope(job),
        timeline_id: job.timeline.id.clone(),
        records: ListOf::new(records),
    }
}

fn record(id: &str, name_bytes: usize) -> TimelineRecord {
    TimelineRecord {
        id: id.to_string(),
        name: Some("r".repeat(name_bytes)),
        ..TimelineRecord::default()
    }
}

fn complete(job: &AgentJobRequestMessage) -> ApiRequest {
    ApiRequest::PostEvent {
        plan: plan_scope(job),
        event: JobEvent {
            name: EVENT_JOB_COMPLETED.into(),
            job_id: job.job_id.clone(),
            request_id: job.request_id,
            result: Some(TaskResult::Succeeded),
        },
    }
}

// Goal: timeline records are bounded in bytes per plan (a 400 naming them, nothing stored) and
// count against the plan's byte budget as logs do: log content that no longer fits beside
// the records is not stored.
#[test]
fn timeline_records_count_against_the_plan_budget() {
    let mut c = config();
    c.limits.max_plan_bytes = 10_000;
    c.limits.max_record_bytes_per_plan = 8_000;
    let mut h = Harness::new(c);
    let job = running_job(&mut h, "recorder");
    let cred = bearer(&job_token(&job));
    let err = h.expect_error(
        cred.clone(),
        records(&job, vec![record("a", 5_000), record("b", 5_000)]),
        ErrorKind::BadRequest,
    );
    assert_names(&err, "the timeline records", "max_record_bytes_per_plan");
    assert_eq!(h.server.timeline_record(job.request_id, "a"), None);
    assert!(matches!(
        h.call(cred.clone(), records(&job, vec![record("a", 5_000)])),
        ApiResponse::TimelineRecords(_)
    ));
    // A PATCH of the same record replaces its bytes rather than adding to them.
    assert!(matches!(
        h.call(cred.clone(), records(&job, vec![record("a", 5_000)])),
        ApiResponse::TimelineRecords(_)
    ));
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
        content: vec![b'x'; 6_000],
    };
    assert!(matches!(h.call(cred, append), ApiResponse::Log(_)));
    assert_eq!(
        h.server.log_content(job.request_id, log.id),
        Some(&[][..]),
        "5 KB of records + 6 KB of log exceed the plan's 10 KB: the log is counted, not stored"
    );
}

// Goal: what finished jobs leave behind is bounded in bytes: past `max_finished_plan_bytes`
// the oldest finished jobs and their plans are forgotten, the newest kept.
#[test]
fn finished_plans_share_one_byte_budget() {
    let mut c = config();
    c.limits.max_finished_plan_bytes = 170_000;
    let mut h = Harness::new(c);
    let a = online_agent(&mut h, "worker", &[]);
    let mut done = Vec::new();
    for _ in 0..5 {
        queue(&mut h, vec![simple_job(1, 0, &[])]);
        let m = take_message(&mut h, &a);
        let job = open_job(&a, &m);
        let cred = bearer(&job_token(&job));
        let many: Vec<TimelineRecord> = (0..6).map(|i| record(&format!("r{i}"), 9_000)).collect();
        assert!(matches!(
            h.call(cred.clone(), records(&job, many)),
            ApiResponse::TimelineRecords(_)
        ));
        assert_eq!(h.call(cred, complete(&job)), ApiResponse::Ok);
        assert_eq!(
            h.call(bearer(&a.token), delete_message(&a, m.message_id)),
            ApiResponse::NoContent
        );
        done.push(job.request_id);
    }
    // Each plan keeps ~54 KB of records: three fit in 170 KB, the two oldest are forgotten.
    assert_eq!(h.server.job_request(done[0]), None);
    assert_eq!(h.server.job_request(done[1]), None);
    for &kept in &done[2..] {
        assert!(h.server.timeline_record(kept, "r0").is_some(), "{kept}");
    }
}

// Goal: a feed line, a log path and an attachment name past their limits are 400s naming the
// field; empty feed lines still cost bytes, so batches of them cannot grow a plan without
// bound.
#[test]
fn feed_lines_log_paths_and_attachment_names_are_bounded() {
    let mut c = config();
    c.limits.max_plan_bytes = 64_000;
    let mut h = Harness::new(c);
    let job = running_job(&mut h, "talker");
    let cred = bearer(&job_token(&job));
    let feed = |lines: Vec<String>| ApiRequest::AppendFeed {
        plan: plan_scope(&job),
        timeline_id: job.timeline.id.clone(),
        record_id: job.steps[0].id.clone(),
        feed: TimelineRecordFeedLinesWrapper {
            step_id: job.steps[0].id.clone(),
            count: lines.len(),
            value: lines,
            start_line: None,
        },
    };
    let err = h.expect_error(
        cred.clone(),
        feed(vec!["y".repeat(4097)]),
        ErrorKind::BadRequest,
    );
    assert_names(&err, "feed line 0", "max_feed_line_bytes");
    for _ in 0..3 {
        assert_eq!(
            h.call(cred.clone(), feed(vec![String::new(); 1000])),
            ApiResponse::Ok
        );
    }
    let stored = h
        .server
        .feed_lines(job.request_id)
        .map_or(0, <[String]>::len);
    assert!(
        stored <= 1000,
        "3,000 empty lines in a 64 KB plan: {stored} stored"
    );
    let create = ApiRequest::CreateLog {
        plan: plan_scope(&job),
        log: TaskLogCreate {
            path: "p".repeat(1025),
        },
    };
    let err = h.expect_error(cred.clone(), create, ErrorKind::BadRequest);
    assert_names(&err, "path", "max_plan_name_bytes");
    let attach = ApiRequest::PutAttachment {
        plan: plan_scope(&job),
        timeline_id: job.timeline.id.clone(),
        record_id: job.steps[0].id.clone(),
        kind: "DistributedTask.Core.Summary".into(),
        name: "n".repeat(1025),
        content: b"summary".to_vec(),
    };
    let err = h.expect_error(cred, attach, ErrorKind::BadRequest);
    assert_names(&err, "name", "max_plan_name_bytes");
    assert!(h.server.attachments(job.request_id).is_empty());
}

// Goal: an assertion that expires in 50 years is refused at the token endpoint with the OAuth
// error body (invalid_client) naming the limit, and its jti is not remembered: the real
// agent's 5-minute assertion with the same jti is then accepted.
#[test]
fn an_assertion_valid_for_50_years_is_refused() {
    let mut h = Harness::new(config());
    let a = register(&mut h, "patient", &[]);
    let fifty_years = 50 * 365 * 24 * 3600;
    let long = client_credentials(assertion_lasting(&h, &a, "jti-long", fifty_years));
    let err = h.expect_error(Credential::Anonymous, long, ErrorKind::OAuthInvalidClient);
    assert!(err.message.contains("at most 600 s"), "{}", err.message);
    let real = client_credentials(assertion(&h, &a, "jti-long"));
    assert!(matches!(
        h.call(Credential::Anonymous, real),
        ApiResponse::Token(_)
    ));
}

// Goal: one agent flooding the token endpoint with fresh jtis fills only its own share of the
// replay set: it gets 429 past `max_jtis_per_agent`, while another agent's exchange still
// succeeds; once its assertions expire, the flooding agent can exchange again.
#[test]
fn one_agent_flooding_jtis_does_not_affect_another() {
    let mut c = config();
    c.limits.max_remembered_jtis = 10;
    c.limits.max_jtis_per_agent = 4;
    let mut h = Harness::new(c);
    let flood = register(&mut h, "flood", &[]);
    let mut other = register(&mut h, "other", &[]);
    for i in 0..4 {
        let grant = client_credentials(assertion(&h, &flood, &format!("f{i}")));
        assert!(matches!(
            h.call(Credential::Anonymous, grant),
            ApiResponse::Token(_)
        ));
    }
    for i in 4..12 {
        let grant = client_credentials(assertion(&h, &flood, &format!("f{i}")));
        h.expect_error(Credential::Anonymous, grant, ErrorKind::Throttled);
    }
    fetch_token(&mut h, &mut other);
    assert!(!other.token.is_empty());
    // exp (300 s) + jwt_skew (300 s) later, the flood's ids are forgotten.
    h.advance(Duration::from_secs(601));
    let grant = client_credentials(assertion(&h, &flood, "f-later"));
    assert!(matches!(
        h.call(Credential::Anonymous, grant),
        ApiResponse::Token(_)
    ));
}
