//! Admin job cancellation (an emulator extension): a queued job finishes as canceled at once; an
//! active one gets an encrypted `JobCancellation` on its agent's session and ends through the
//! agent's completion; an agent that never answers loses the job to the lease path, which
//! finishes it as canceled instead of requeueing it; only an admin PAT may cancel.

mod server_support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fleetsim_core::api::{ApiRequest, ApiResponse, ErrorKind};
use fleetsim_core::codec;
use fleetsim_core::crypto;
use fleetsim_core::proto::{
    EVENT_JOB_COMPLETED, JobCancelMessage, JobEvent, MESSAGE_JOB_CANCELLATION, TaskAgentMessage,
    TaskResult,
};
use fleetsim_core::server::{ALL_SCOPES, PatConfig, ServerConfig};
use fleetsim_core::wire::Method;
use server_support::*;

fn cancel(request_id: u64) -> ApiRequest {
    ApiRequest::CancelJob {
        pool_id: 1,
        request_id,
    }
}

/// Decrypt a `JobCancellation` with the session key.
fn open_cancel(agent: &TestAgent, message: &TaskAgentMessage) -> JobCancelMessage {
    assert_eq!(message.message_type, MESSAGE_JOB_CANCELLATION);
    let key = agent.session_key.expect("real crypto session");
    let iv: [u8; 16] = STANDARD.decode(&message.iv).unwrap().try_into().unwrap();
    let body = STANDARD.decode(&message.body).unwrap();
    let plain = crypto::aes256_cbc_decrypt(&key, &iv, &body).expect("AES-CBC decrypt");
    serde_json::from_slice(&plain).expect("JobCancellation JSON")
}

// Goal: a queued job (no agent online) finishes as canceled at once, is never assigned when an
// agent arrives, and a second cancel is a 404 that changes nothing.
#[test]
fn cancel_queued_job_finishes_it_without_an_agent() {
    let mut h = Harness::new(config());
    let queued = queue(&mut h, vec![simple_job(1, 0, &[])]);
    let id = queued[0].request_id;
    let ApiResponse::JobRequest(view) = h.call(pat(), cancel(id)) else {
        panic!("cancel answer")
    };
    assert_eq!(view.state.as_deref(), Some("completed"));
    assert_eq!(view.result, Some(TaskResult::Canceled));
    let stats = h.server.stats();
    assert_eq!(
        (stats.jobs_queued, stats.jobs_completed, stats.jobs_canceled),
        (0, 1, 1)
    );
    let a = online_agent(&mut h, "late", &[]);
    let (_, answer) = h.send(bearer(&a.token), get_message(&a, None));
    assert_eq!(answer, None, "the canceled job never reaches an agent");
    h.expect_error(pat(), cancel(id), ErrorKind::JobNotFound);
    h.expect_error(pat(), cancel(999), ErrorKind::JobNotFound);
    assert_eq!(
        h.server.stats().jobs_canceled,
        1,
        "a refused cancel changes nothing"
    );
}

// Goal: canceling a running job answers the agent's parked poll with an encrypted
// JobCancellation {jobId, timeout}; the job shows "canceling", then ends canceled through the
// agent's JobCompleted event, and the agent is idle again.
#[test]
fn cancel_running_job_wakes_the_poll_and_ends_canceled() {
    let mut c = config();
    c.job_cancel_timeout = Duration::from_secs(90);
    let mut h = Harness::new(c);
    let a = online_agent(&mut h, "runner", &[]);
    queue(&mut h, vec![simple_job(3, 1, &[])]);
    let job_message = take_message(&mut h, &a);
    let job = open_job(&a, &job_message);
    let ack = delete_message(&a, job_message.message_id);
    assert_eq!(h.call(bearer(&a.token), ack), ApiResponse::NoContent);
    let (poll, answer) = h.send(
        bearer(&a.token),
        get_message(&a, Some(job_message.message_id)),
    );
    assert_eq!(answer, None);

    let ApiResponse::JobRequest(view) = h.call(pat(), cancel(job.request_id)) else {
        panic!("cancel answer")
    };
    assert_eq!(view.state.as_deref(), Some("canceling"));
    let Some(ApiResponse::Message(m)) = h.released_for(poll).cloned() else {
        panic!("the parked poll was not woken: {:?}", h.released)
    };
    assert!(!m.iv.is_empty(), "encrypted like any message");
    let body = open_cancel(&a, &m);
    assert_eq!(
        (body.job_id.as_str(), body.timeout.as_str()),
        (job.job_id.as_str(), "00:01:30")
    );
    // A repeat cancel sends no second message.
    assert!(matches!(
        h.call(pat(), cancel(job.request_id)),
        ApiResponse::JobRequest(_)
    ));
    let (again, answer) = h.send(bearer(&a.token), get_message(&a, Some(m.message_id)));
    assert_eq!(answer, None, "one cancellation per job");
    let ack = delete_message(&a, m.message_id);
    assert_eq!(h.call(bearer(&a.token), ack), ApiResponse::NoContent);

    let done = ApiRequest::PostEvent {
        plan: plan_scope(&job),
        event: JobEvent {
            name: EVENT_JOB_COMPLETED.into(),
            job_id: job.job_id.clone(),
            request_id: job.request_id,
            result: Some(TaskResult::Canceled),
        },
    };
    assert_eq!(h.call(bearer(&job_token(&job)), done), ApiResponse::Ok);
    let view = h.server.job_request(job.request_id).unwrap();
    assert_eq!(
        (view.state.as_deref(), view.result),
        (Some("completed"), Some(TaskResult::Canceled))
    );
    let stats = h.server.stats();
    assert_eq!(
        (
            stats.jobs_completed,
            stats.jobs_canceled,
            stats.jobs_assigned
        ),
        (1, 1, 0)
    );
    h.server.handle_disconnect(h.now, again);
}

// Goal: an agent that never answers a cancellation loses the job to the lease path, which
// finishes it as canceled (never requeued to another agent) and ends the agent's session.
#[test]
fn unanswered_cancel_finishes_on_lease_expiry_without_requeue() {
    let mut c = config();
    c.lease_duration = Duration::from_secs(600);
    c.lease_grace = Duration::from_secs(60);
    c.session_idle_timeout = Duration::from_secs(3600);
    let mut h = Harness::new(c);
    let a = online_agent(&mut h, "wedged", &[]);
    queue(&mut h, vec![simple_job(1, 0, &[])]);
    let job_message = take_message(&mut h, &a);
    let job = open_job(&a, &job_message);
    let ack = delete_message(&a, job_message.message_id);
    assert_eq!(h.call(bearer(&a.token), ack), ApiResponse::NoContent);
    assert!(matches!(
        h.call(pat(), cancel(job.request_id)),
        ApiResponse::JobRequest(_)
    ));
    let b = online_agent(&mut h, "bystander", &[]);
    h.advance(Duration::from_secs(661));
    let stats = h.server.stats();
    assert_eq!(
        (stats.jobs_requeued, stats.jobs_queued, stats.jobs_canceled),
        (0, 0, 1)
    );
    let view = h.server.job_request(job.request_id).unwrap();
    assert_eq!(view.result, Some(TaskResult::Canceled));
    h.expect_error(
        bearer(&a.token),
        get_message(&a, None),
        ErrorKind::SessionExpired,
    );
    let (_, answer) = h.send(bearer(&b.token), get_message(&b, None));
    assert_eq!(answer, None, "nothing was handed to another agent");
}

// Goal: only a PAT with fleetsim.admin may cancel: no credential or an unknown PAT is 401, a
// PAT without the scope or a listener token is 403, and no refusal changes the job.
#[test]
fn cancel_needs_the_admin_scope() {
    let mut c = config();
    c.pats.push(PatConfig {
        token: "manage-only".into(),
        scopes: vec![ALL_SCOPES[1].to_string()],
        expires_at_unix_s: None,
    });
    let mut h = Harness::new(c);
    let a = online_agent(&mut h, "holder", &[]);
    let queued = queue(&mut h, vec![simple_job(1, 0, &[])]);
    let id = queued[0].request_id;
    let manage = fleetsim_core::api::Credential::Basic {
        user: "u".into(),
        password: "manage-only".into(),
    };
    let unknown = fleetsim_core::api::Credential::Basic {
        user: "u".into(),
        password: "nope".into(),
    };
    h.expect_error(manage, cancel(id), ErrorKind::AccessDenied);
    h.expect_error(bearer(&a.token), cancel(id), ErrorKind::AccessDenied);
    h.expect_error(unknown, cancel(id), ErrorKind::Unauthorized);
    h.expect_error(
        fleetsim_core::api::Credential::Anonymous,
        cancel(id),
        ErrorKind::Unauthorized,
    );
    let other_pool = ApiRequest::CancelJob {
        pool_id: 7,
        request_id: id,
    };
    h.expect_error(pat(), other_pool, ErrorKind::PoolNotFound);
    let view = h.server.job_request(id).unwrap();
    assert_eq!(view.state.as_deref(), Some("assigned"));
    assert_eq!(h.server.stats().jobs_canceled, 0);
}

// Goal: the codec maps DELETE …/jobrequests/{id} to CancelJob and back, labels the route, and
// other methods on the collection stay 405.
#[test]
fn cancel_route_round_trips_through_the_codec() {
    let req = fleetsim_core::api::Request {
        credential: pat(),
        call: cancel(42),
    };
    let wire = codec::encode_request(&req, "/org");
    assert_eq!(wire.method, Method::Delete);
    assert_eq!(
        wire.path,
        "/org/_apis/distributedtask/pools/1/jobrequests/42"
    );
    assert_eq!(codec::decode_request(&wire, 1024), Ok(req.clone()));
    assert_eq!(codec::route_label(&req.call), "cancel_job");
    let mut put = wire.clone();
    put.method = Method::Put;
    let err = codec::decode_request(&put, 1024).unwrap_err();
    assert_eq!(err.kind, ErrorKind::MethodNotAllowed);
    let mut bad = wire;
    bad.path = "/_apis/distributedtask/pools/1/jobrequests/x".into();
    let err = codec::decode_request(&bad, 1024).unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert_eq!(
        ServerConfig::default().job_cancel_timeout,
        Duration::from_secs(60),
        "the default grace is \"00:01:00\""
    );
}
