//! Where the agent sends each call (the token exchange, the listener, the worker's plan-hub
//! calls) and how it treats the messages it does not act on, against scripted servers shaped
//! like Azure DevOps Services (token service on another host, plan hub on another host) and
//! like an on-premises server. The reference is the real agent's source, not fleetsim's emulator.

use super::*;

const AUTH_URL: &str = "https://vssps.example.com:4443/tenant-1/oauth2/token";
const PLAN_URL: &str = "https://pipelines.example.com/org-1/";

/// `happy`, with the registration naming `AUTH_URL` and connectionData saying `deployment`.
fn services(deployment: &'static str) -> impl FnMut(SimTime, &Request) -> Option<ApiResponse> {
    move |now, req| match &req.call {
        ApiRequest::ConnectionData if req.credential != Credential::Anonymous => {
            let mut data = connection_data();
            data.deployment_type = deployment.into();
            Some(ApiResponse::ConnectionData(data))
        }
        ApiRequest::AddAgent { .. } => {
            let Some(ApiResponse::Agent(mut agent)) = happy(now, req) else {
                unreachable!()
            };
            if let Some(auth) = agent.authorization.as_mut() {
                auth.authorization_url = Some(AUTH_URL.into());
            }
            Some(ApiResponse::Agent(agent))
        }
        ApiRequest::GetMessage { .. } => None,
        _ => happy(now, req),
    }
}

/// The claims of a modelled (unsigned) assertion.
fn claims_of(assertion: &str) -> crypto::jwt::Claims {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = assertion.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

fn sent_with(rig: &Rig, op: Operation) -> Vec<&Sent> {
    rig.sent.iter().filter(|s| s.op == op).collect()
}

// Goal: against Services (deploymentType hosted) the client-credentials grant is POSTed to the
// registration's authorizationUrl exactly as given (another host, port and path), the JWT
// audience is that URL, and every listener call stays on the target's collection.
#[test]
fn hosted_token_exchange_goes_to_the_authorization_url_as_given() {
    let mut rig = Rig::new(modelled());
    rig.run_until(SimTime::from_secs(1), &mut services("hosted"));
    let mints = sent_with(&rig, Operation::TokenExchange);
    assert_eq!(mints.len(), 1);
    assert_eq!(mints[0].endpoint, Endpoint::Exact(AUTH_URL.into()));
    let ApiRequest::Token(TokenGrant::ClientCredentials {
        client_assertion, ..
    }) = &mints[0].request.call
    else {
        panic!("not a client-credentials grant")
    };
    assert_eq!(claims_of(client_assertion).aud, AUTH_URL);
    for s in rig.sent.iter().filter(|s| s.op != Operation::TokenExchange) {
        assert_eq!(s.endpoint, Endpoint::Collection, "{:?}", s.op);
    }
    assert!(
        rig.pending_on(Connection::Listener)
            .is_some_and(|p| p.op == Operation::PollMessage)
    );
}

// Goal: against an on-premises server the token goes to authorizationUrl's path on the
// configured server's scheme://host:port (the real agent's oauthEndpointUrl rewrite), while the
// audience stays authorizationUrl as given.
#[test]
fn on_premises_token_exchange_keeps_the_path_on_the_target_origin() {
    let mut rig = Rig::new(modelled());
    rig.run_until(SimTime::from_secs(1), &mut services("onPremises"));
    let mint = sent_with(&rig, Operation::TokenExchange)[0];
    assert_eq!(mint.endpoint, Endpoint::ExactOnTarget(AUTH_URL.into()));
    let ApiRequest::Token(TokenGrant::ClientCredentials {
        client_assertion, ..
    }) = &mint.request.call
    else {
        panic!("not a client-credentials grant")
    };
    assert_eq!(claims_of(client_assertion).aud, AUTH_URL);
    let target = crate::codec::url::parse("http://10.1.2.3:8080/tfs/DefaultCollection").unwrap();
    let (origin, wire) = crate::codec::resolve(&mint.request, &mint.endpoint, &target).unwrap();
    assert_eq!(origin, target.origin);
    assert_eq!(wire.path, "/tenant-1/oauth2/token");
}

/// A job message whose SystemVssConnection names `url`, with `system.servertype` = `server_type`.
fn job_at(url: &str, server_type: Option<&str>) -> AgentJobRequestMessage {
    let mut msg = job_message(2_000, 20, 0, false);
    msg.resources.endpoints[0].url = url.into();
    if let Some(t) = server_type {
        msg.variables.insert(
            "System.ServerType".into(),
            VariableValue {
                value: t.into(),
                ..Default::default()
            },
        );
    }
    msg
}

/// Run one job on a listening rig and return the calls on the job connection.
fn run_job(msg: &AgentJobRequestMessage, config: AgentConfig) -> Rig {
    let mut rig = listening(config);
    answer_poll(&mut rig, job_delivery(msg));
    rig.run_until(SimTime::from_secs(120), &mut holding);
    assert!(
        rig.events.iter().any(|e| matches!(
            e,
            Event::JobFinished {
                result: TaskResult::Succeeded,
                ..
            }
        )),
        "the job completes"
    );
    rig
}

// Goal: a hosted job's plan-hub calls (timeline, feed, logs, attachments, events) and its
// job-token rotation go to SystemVssConnection.url as given, while lock renewals stay on the
// listener's server.
#[test]
fn hosted_plan_hub_calls_go_to_the_system_vss_connection_url() {
    let config = AgentConfig {
        job_token_rotate_before: Some(Duration::from_secs(1)),
        job_token_ttl_hint: Some(Duration::from_secs(2)),
        ..modelled()
    };
    let rig = run_job(&job_at(PLAN_URL, Some("Hosted")), config);
    let job_calls: Vec<&Sent> = rig
        .sent
        .iter()
        .filter(|s| s.conn == Connection::Job)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for s in &job_calls {
        seen.insert(format!("{:?}", s.op));
        let want = match s.op {
            Operation::LockRenew => Endpoint::Collection,
            _ => Endpoint::Base(PLAN_URL.into()),
        };
        assert_eq!(s.endpoint, want, "{:?}", s.op);
    }
    for op in [
        Operation::LockRenew,
        Operation::TimelineUpdate,
        Operation::FeedPost,
        Operation::LogCreate,
        Operation::LogAppend,
        Operation::AttachmentUpload,
        Operation::JobCompleted,
        Operation::TokenRotate,
    ] {
        assert!(
            seen.contains(&format!("{op:?}")),
            "{op:?} missing: {seen:?}"
        );
    }
}

// Goal: without `system.servertype` (or with OnPremises) the plan-hub URL keeps its path on the
// target's origin, and a message without a usable URL falls back to the target's collection.
#[test]
fn on_premises_and_missing_plan_urls_use_the_target_origin() {
    for (msg, want) in [
        (
            job_at(PLAN_URL, None),
            Endpoint::BaseOnTarget(PLAN_URL.into()),
        ),
        (
            job_at(PLAN_URL, Some("onpremises")),
            Endpoint::BaseOnTarget(PLAN_URL.into()),
        ),
        (job_at("", Some("Hosted")), Endpoint::Collection),
        (job_at("not a url", Some("Hosted")), Endpoint::Collection),
    ] {
        let rig = run_job(&msg, modelled());
        let feed = sent_with(&rig, Operation::FeedPost);
        assert!(!feed.is_empty());
        assert!(feed.iter().all(|s| s.endpoint == want), "{want:?}");
    }
}

/// A plaintext message of `kind` with `body`.
fn message(id: u64, kind: &str, body: &str) -> ApiResponse {
    ApiResponse::Message(TaskAgentMessage {
        message_id: id,
        message_type: kind.into(),
        iv: String::new(),
        body: body.into(),
    })
}

fn acked(rig: &Rig, id: u64) -> bool {
    rig.sent.iter().any(|s| {
        matches!(s.request.call, ApiRequest::DeleteMessage { message_id, .. } if message_id == id)
    })
}

// Goal: messages the fleet does not act on (AgentRefresh, JobMetadataUpdate, unknown types) are
// deleted like every other, as the real listener's `finally` does, and the agent polls on.
#[test]
fn messages_not_acted_on_are_acknowledged_and_skipped() {
    let mut rig = listening(modelled());
    for (id, kind, body) in [
        (
            21,
            "AgentRefresh",
            r#"{"agentId":7,"targetVersion":"4.999.0"}"#,
        ),
        (
            22,
            "JobMetadataUpdate",
            r#"{"jobId":"job-1","postLinesFrequencyMillis":500}"#,
        ),
        (23, "SomethingNew", "not even json"),
    ] {
        answer_poll(&mut rig, message(id, kind, body));
        rig.run_until(rig.now + Duration::from_secs(1), &mut holding);
        assert!(acked(&rig, id), "{kind} is acknowledged");
        assert_eq!(rig.agent.state(), AgentState::Idle, "{kind}");
        assert!(
            rig.pending_on(Connection::Listener)
                .is_some_and(|p| p.op == Operation::PollMessage)
        );
    }
    let errors = rig
        .events
        .iter()
        .filter(|e| matches!(e, Event::Op { outcome, .. } if !outcome.is_ok()));
    assert_eq!(errors.count(), 0, "skipping a message is not an error");
}

// Goal: a JobMetadataUpdate or AgentRefresh arriving mid-job is acknowledged and leaves the job
// running to its normal end.
#[test]
fn metadata_and_refresh_mid_job_do_not_disturb_the_job() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, job_delivery(&job_message(10_000, 50, 0, false)));
    rig.run_until(rig.now + Duration::from_secs(2), &mut holding);
    assert_eq!(rig.agent.state(), AgentState::Busy);
    answer_poll(
        &mut rig,
        message(2, "JobMetadataUpdate", r#"{"jobId":"job-1"}"#),
    );
    rig.run_until(rig.now + Duration::from_secs(1), &mut holding);
    answer_poll(
        &mut rig,
        message(3, "AgentRefresh", r#"{"targetVersion":"9"}"#),
    );
    assert_eq!(rig.agent.state(), AgentState::Busy, "the job runs on");
    rig.run_until(SimTime::from_secs(120), &mut holding);
    assert!(acked(&rig, 2) && acked(&rig, 3));
    let finished: Vec<_> = rig
        .events
        .iter()
        .filter_map(|e| match e {
            Event::JobFinished { result, .. } => Some(*result),
            _ => None,
        })
        .collect();
    assert_eq!(finished, vec![TaskResult::Succeeded]);
}

// Goal: a job message that cannot be parsed is acknowledged (never redelivered forever) and
// reported: its poll is recorded as a protocol error, and no job is picked up.
#[test]
fn unreadable_job_message_is_acknowledged_and_reported() {
    let mut rig = listening(modelled());
    answer_poll(
        &mut rig,
        message(31, proto::MESSAGE_JOB_REQUEST, r#"{"plan": 17}"#),
    );
    rig.run_until(rig.now + Duration::from_secs(1), &mut holding);
    assert!(acked(&rig, 31));
    let protocol = rig.events.iter().any(|e| {
        matches!(
            e,
            Event::Op {
                op: Operation::PollMessage,
                outcome: Outcome::Protocol,
                ..
            }
        )
    });
    assert!(protocol, "the unreadable message is an error event");
    assert!(
        !rig.events
            .iter()
            .any(|e| matches!(e, Event::JobPickedUp { .. }))
    );
    assert_eq!(rig.agent.state(), AgentState::Idle);
}

// Goal: a job message shaped like the real service's (unknown fields, nulls where the service
// writes them, a non-task step without a reference, a lower-case message type) starts a job.
#[test]
fn real_shaped_job_message_with_nulls_and_unknown_fields_is_read() {
    let body = r#"{
      "messageType": "PipelineAgentJobRequest",
      "plan": {"scopeIdentifier": "p", "planType": "Build", "planId": "plan-9", "version": 9,
               "planGroup": null, "artifactUri": "vstfs:///Build/Build/1"},
      "timeline": {"id": "tl", "changeId": null, "location": null},
      "jobId": "job-9", "jobDisplayName": null, "jobName": "__default", "requestId": 99,
      "lockToken": null, "lockedUntil": null, "jobContainer": null, "jobServiceContainers": null,
      "environmentVariables": {}, "workspace": {}, "fileTable": [],
      "resources": {"endpoints": [{"name": "SystemVssConnection", "url": "https://x/o/",
          "authorization": {"scheme": "OAuth", "parameters": {"AccessToken": "jt", "Other": null}},
          "data": {"ServerId": null}, "isShared": false, "isReady": true, "id": "00000000-0000-0000-0000-000000000000"}],
          "repositories": [], "containers": []},
      "variables": {"system.servertype": {"value": "Hosted"}, "nullable": {"value": null, "isSecret": null}},
      "mask": [{"type": "regex", "value": "x+"}],
      "steps": [
        {"type": "task", "reference": {"id": "d9bafed4", "name": "CmdLine", "version": "2.250.1", "contributionIdentifier": null},
         "inputs": {"script": "echo hi", "workingDirectory": null}, "id": "s1", "name": "CmdLine",
         "displayName": "Run a script", "condition": null, "continueOnError": false, "enabled": true},
        {"type": "action", "id": "s2", "name": "x", "displayName": null}
      ],
      "defaults": null, "contextData": {}
    }"#;
    let msg: AgentJobRequestMessage = serde_json::from_str(body).expect("lenient parse");
    assert_eq!((msg.request_id, msg.steps.len()), (99, 2));
    assert_eq!(
        msg.resources.endpoints[0].authorization.parameters["Other"],
        ""
    );
    let mut rig = listening(modelled());
    answer_poll(&mut rig, message(41, "pipelineagentjobrequest", body));
    assert!(
        rig.events
            .iter()
            .any(|e| matches!(e, Event::JobPickedUp { request_id: 99, .. }))
    );
    assert_eq!(rig.agent.state(), AgentState::Busy);
}
