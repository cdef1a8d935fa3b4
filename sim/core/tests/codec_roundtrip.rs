//! The codec on every route: typed request → wire → typed request is the identity (under any
//! base path), answers round-trip with the right status codes and error bodies, and bad input
//! (unknown route, wrong method, malformed body, oversized body, random garbage) becomes a typed
//! 4xx error without a panic — including when fed on into the server.

use fleetsim_core::SimTime;
use fleetsim_core::api::{
    ALL_ERROR_KINDS, ApiError, ApiRequest, ApiResponse, Credential, EmulatorStats, ErrorKind,
    Request, TokenGrant,
};
use fleetsim_core::codec::{self, ResponseContext};
use fleetsim_core::job::QueueJobsResponse;
use fleetsim_core::proto::*;
use fleetsim_core::rng::{self, StreamKind};
use fleetsim_core::server::{Handled, Server, ServerConfig};
use fleetsim_core::wire::{Method, WireRequest, WireResponse};
use rand::Rng as _;

mod codec_support;

use codec_support::{every_call, plan};

/// Calls whose JSON body has only optional fields and ignores unknown ones (as the real
/// service's `RunPipelineParameters` and `Build` do): `{}`-like garbage is a valid body there.
fn all_optional_body(call: &ApiRequest) -> bool {
    matches!(
        call,
        ApiRequest::RunPipeline { .. } | ApiRequest::UpdateBuild { .. }
    )
}

fn credentials() -> Vec<Credential> {
    vec![
        Credential::Anonymous,
        Credential::Basic {
            user: "VstsAgent".into(),
            password: "p:a:t".into(),
        },
        Credential::Bearer("abc.def-ghi_jkl".into()),
    ]
}

// Goal: every call survives encode → decode unchanged, under any base path and credential.
#[test]
fn every_request_round_trips() {
    for base in ["", "/DefaultCollection", "org/"] {
        for call in every_call() {
            for credential in credentials() {
                let req = Request {
                    credential,
                    call: call.clone(),
                };
                let wire = codec::encode_request(&req, base);
                let back = codec::decode_request(&wire, usize::MAX)
                    .unwrap_or_else(|e| panic!("{base:?} {call:?}: {e:?} from {wire:?}"));
                assert_eq!(back, req, "{base:?}");
            }
        }
    }
}

// Goal: the paths are the real ones (what a real agent or REST client sends).
#[test]
fn requests_use_the_real_paths() {
    let wire = |call: ApiRequest| {
        codec::encode_request(
            &Request {
                credential: Credential::Anonymous,
                call,
            },
            "/org",
        )
    };
    let w = wire(ApiRequest::GetMessage {
        pool_id: 1,
        session_id: "s".into(),
        last_message_id: Some(5),
    });
    assert_eq!(
        (w.method, w.path.as_str()),
        (Method::Get, "/org/_apis/distributedtask/pools/1/messages")
    );
    assert_eq!(w.query, "sessionId=s&lastMessageId=5");
    let w = wire(ApiRequest::CreateLog {
        plan: plan(),
        log: TaskLogCreate { path: "x".into() },
    });
    assert_eq!(
        w.path,
        "/org/6f1e2a3b-0000-4000-8000-000000000001/_apis/distributedtask/hubs/Build/plans/\
         8c0e2a3b-0000-4000-8000-000000000002/logs"
    );
    let w = wire(ApiRequest::Token(TokenGrant::Refresh {
        refresh_token: "t".into(),
    }));
    assert_eq!(w.path, "/org/_apis/oauth2/token");
    assert_eq!(
        w.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    // A real agent's header and form decode as expected.
    let mut real = WireRequest::new(Method::Post, "/_apis/oauth2/token", "");
    real.body = b"grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c".to_vec();
    let req = codec::decode_request(&real, 1 << 20).unwrap();
    assert!(matches!(
        req.call,
        ApiRequest::Token(TokenGrant::ClientCredentials { .. })
    ));
    // Pipelines routes: the project is the segment before `_apis`, the version in the query.
    let w = wire(ApiRequest::RunPipeline {
        project: "My Project".into(),
        pipeline_id: 7,
        params: RunPipelineParameters::default(),
    });
    assert_eq!(
        (w.method, w.path.as_str(), w.query.as_str()),
        (
            Method::Post,
            "/org/My%20Project/_apis/pipelines/7/runs",
            "api-version=7.1"
        )
    );
    assert_eq!(w.body, b"{}");
    let w = wire(ApiRequest::UpdateBuild {
        project: "p".into(),
        build_id: 12,
        update: BuildUpdate {
            status: Some(BuildStatus::Cancelling),
        },
    });
    assert_eq!(
        (w.method, w.path.as_str()),
        (Method::Patch, "/org/p/_apis/build/builds/12")
    );
    assert_eq!(w.body, br#"{"status":"cancelling"}"#);
    // A REST client's run request decodes, an empty body is an empty RunPipelineParameters,
    // and a run route without a project is not a route.
    let mut real = WireRequest::new(
        Method::Post,
        "/DefaultCollection/Demo/_apis/pipelines/3/runs",
        "api-version=7.1",
    );
    real.body = br#"{"resources":{"repositories":{"self":{"refName":"refs/heads/main"}}},"variables":{"v":{"value":"1","isSecret":true}},"unknownField":1}"#.to_vec();
    let req = codec::decode_request(&real, 1 << 20).unwrap();
    let ApiRequest::RunPipeline {
        project,
        pipeline_id,
        params,
    } = req.call
    else {
        panic!("{:?}", req.call)
    };
    assert_eq!((project.as_str(), pipeline_id), ("Demo", 3));
    assert!(params.variables.unwrap()["v"].is_secret);
    real.body.clear();
    assert!(matches!(
        codec::decode_request(&real, 1 << 20).unwrap().call,
        ApiRequest::RunPipeline { params, .. } if params == RunPipelineParameters::default()
    ));
    let bare = WireRequest::new(Method::Get, "/_apis/pipelines/3/runs", "");
    assert_eq!(
        codec::decode_request(&bare, 0).unwrap_err().kind,
        ErrorKind::RouteNotFound
    );
    // Run states and results this client does not know read as `unknown`.
    let run: PipelineRun = serde_json::from_str(
        r#"{"id":1,"state":"postponed","result":"partiallySucceeded","pipeline":{"id":2},"extra":0}"#,
    )
    .unwrap();
    assert_eq!(
        (run.state, run.result),
        (RunState::Unknown, Some(RunResult::Unknown))
    );
    let mut get = WireRequest::new(Method::Get, "/_apis/connectionData", "connectOptions=1");
    get.authorization = Some("Basic VnN0c0FnZW50OnNlY3JldA==".into());
    let req = codec::decode_request(&get, 0).unwrap();
    assert_eq!(
        req.credential,
        Credential::Basic {
            user: "VstsAgent".into(),
            password: "secret".into()
        }
    );
}

fn every_response() -> Vec<(ApiRequest, ApiResponse)> {
    use ApiResponse as R;
    let calls = every_call();
    let find = |pred: &dyn Fn(&ApiRequest) -> bool| calls.iter().find(|c| pred(c)).unwrap().clone();
    let agent = TaskAgent {
        id: 5,
        name: "a".into(),
        status: Some(AgentStatus::Online),
        ..Default::default()
    };
    let job_request = TaskAgentJobRequest {
        request_id: 9,
        locked_until: Some("2026-11-25T21:32:00.000Z".into()),
        state: Some("running".into()),
        ..Default::default()
    };
    vec![
        (
            ApiRequest::ConnectionData,
            R::ConnectionData(connection_data()),
        ),
        (
            ApiRequest::Options { area: None },
            R::Locations(codec::locations(None)),
        ),
        (
            ApiRequest::ResourceAreas { area_id: None },
            R::NoResourceAreas,
        ),
        (
            ApiRequest::ListPools { pool_name: None },
            R::Pools(ListOf::new(vec![TaskAgentPool {
                id: 1,
                name: "Default".into(),
                is_hosted: false,
                pool_type: "automation".into(),
                size: 2,
            }])),
        ),
        (
            ApiRequest::ListAgents {
                pool_id: 1,
                agent_name: None,
            },
            R::Agents(ListOf::new(vec![agent.clone()])),
        ),
        (
            ApiRequest::GetAgent {
                pool_id: 1,
                agent_id: 5,
            },
            R::Agent(Box::new(agent)),
        ),
        (
            ApiRequest::DeleteAgent {
                pool_id: 1,
                agent_id: 5,
            },
            R::NoContent,
        ),
        (
            find(&|c| matches!(c, ApiRequest::Token(_))),
            R::Token(TokenResponse {
                access_token: "t".into(),
                token_type: "Bearer".into(),
                expires_in: 3600,
                scope: String::new(),
                refresh_token: None,
            }),
        ),
        (
            find(&|c| matches!(c, ApiRequest::CreateSession { .. })),
            R::Session(TaskAgentSession {
                session_id: "s".into(),
                encryption_key: Some(TaskAgentSessionKey {
                    encrypted: true,
                    value: "AAAA".into(),
                }),
                ..Default::default()
            }),
        ),
        (
            find(&|c| matches!(c, ApiRequest::GetMessage { .. })),
            R::Message(TaskAgentMessage {
                message_id: 1,
                message_type: MESSAGE_JOB_REQUEST.into(),
                iv: "aXY=".into(),
                body: "Ym9keQ==".into(),
            }),
        ),
        (
            find(&|c| matches!(c, ApiRequest::GetMessage { .. })),
            R::NoMessage,
        ),
        (
            find(&|c| matches!(c, ApiRequest::UpdateJobRequest { .. })),
            R::JobRequest(Box::new(job_request.clone())),
        ),
        (
            find(&|c| matches!(c, ApiRequest::QueueJobs { .. })),
            R::QueuedJobs(QueueJobsResponse {
                count: 1,
                value: vec![job_request.clone()],
            }),
        ),
        (
            ApiRequest::ListJobRequests { pool_id: 1 },
            R::JobRequests(ListOf::new(vec![job_request])),
        ),
        (
            ApiRequest::AdminStats,
            R::Stats(EmulatorStats {
                leaked_secrets: 3,
                ..Default::default()
            }),
        ),
        (
            find(&|c| matches!(c, ApiRequest::UpdateTimelineRecords { .. })),
            R::TimelineRecords(ListOf::new(vec![TimelineRecord {
                id: "r".into(),
                ..Default::default()
            }])),
        ),
        (find(&|c| matches!(c, ApiRequest::AppendFeed { .. })), R::Ok),
        (
            find(&|c| matches!(c, ApiRequest::AppendLog { .. })),
            R::Log(TaskLog {
                id: 2,
                path: "p".into(),
                line_count: 4,
                location: "u".into(),
                created_on: None,
            }),
        ),
        (
            find(&|c| matches!(c, ApiRequest::PutAttachment { .. })),
            R::Attachment(TaskAttachment {
                kind: "k".into(),
                name: "n".into(),
                record_id: "r".into(),
                timeline_id: "t".into(),
            }),
        ),
        (find(&|c| matches!(c, ApiRequest::PostEvent { .. })), R::Ok),
        (
            find(&|c| matches!(c, ApiRequest::RunPipeline { .. })),
            R::PipelineRun(pipeline_run()),
        ),
        (
            find(&|c| matches!(c, ApiRequest::GetPipelineRun { .. })),
            R::PipelineRun(PipelineRun {
                state: RunState::Completed,
                result: Some(RunResult::Canceled),
                finished_date: Some("2026-12-05T10:01:00.000Z".into()),
                ..pipeline_run()
            }),
        ),
        (
            find(&|c| matches!(c, ApiRequest::ListPipelineRuns { .. })),
            R::PipelineRuns(ListOf::new(vec![pipeline_run()])),
        ),
        (
            find(&|c| matches!(c, ApiRequest::UpdateBuild { .. })),
            R::Build(Build {
                id: 12,
                build_number: "20261205.3".into(),
                status: Some(BuildStatus::Cancelling),
                result: None,
                queue_time: Some("2026-12-05T10:00:00.000Z".into()),
                finish_time: None,
                url: Some("http://e/p/_apis/build/Builds/12".into()),
                definition: Some(DefinitionReference {
                    id: 7,
                    name: "ci".into(),
                }),
            }),
        ),
    ]
}

fn pipeline_run() -> PipelineRun {
    PipelineRun {
        id: 12,
        name: "20261205.3".into(),
        state: RunState::InProgress,
        result: None,
        created_date: Some("2026-12-05T10:00:00.000Z".into()),
        finished_date: None,
        url: Some("http://e/p/_apis/pipelines/7/runs/12".into()),
        pipeline: PipelineReference {
            id: 7,
            name: "ci".into(),
            folder: Some("\\".into()),
            revision: Some(1),
        },
    }
}

fn connection_data() -> ConnectionData {
    let identity = Identity {
        id: "i".into(),
        provider_display_name: "p".into(),
        is_active: true,
    };
    ConnectionData {
        authenticated_user: identity.clone(),
        authorized_user: identity,
        instance_id: "x".into(),
        deployment_id: "y".into(),
        deployment_type: "onPremises".into(),
        location_service_data: LocationServiceData {
            service_owner: "o".into(),
            default_access_mapping_moniker: "PublicAccessMapping".into(),
            last_change_id: 1,
            last_change_id64: 1,
            access_mappings: vec![],
        },
    }
}

// Goal: every answer survives encode → decode, with the statuses the real client expects.
#[test]
fn every_response_round_trips_with_its_status() {
    let ctx = ResponseContext {
        public_url: "http://e".into(),
        ..Default::default()
    };
    for (call, resp) in every_response() {
        let wire = codec::encode_response(&resp, &ctx);
        let expected = match resp {
            ApiResponse::NoMessage => 202,
            ApiResponse::NoContent => 204,
            _ => 200,
        };
        assert_eq!(wire.status, expected, "{resp:?}");
        assert_eq!(codec::decode_response(&call, &wire), resp);
    }
    let empty = codec::encode_response(&ApiResponse::NoResourceAreas, &ctx);
    assert_eq!(empty.body, br#"{"count":0,"value":null}"#);
}

// Goal: every error kind renders with its status and typeKey and decodes back to itself; the
// OAuth kinds use {error, error_description}; 401 carries the Bearer challenge.
#[test]
fn every_error_round_trips() {
    let ctx = ResponseContext {
        public_url: "http://e/org".into(),
        ..Default::default()
    };
    for &kind in ALL_ERROR_KINDS {
        let err = ApiError::new(kind, format!("{kind:?} happened"));
        let wire = codec::encode_response(&ApiResponse::Error(err.clone()), &ctx);
        assert_eq!(wire.status, kind.status());
        let body: serde_json::Value = serde_json::from_slice(&wire.body).unwrap();
        match kind {
            ErrorKind::OAuthInvalidClient => assert_eq!(body["error"], "invalid_client"),
            ErrorKind::OAuthInvalidGrant => assert_eq!(body["error"], "invalid_grant"),
            _ => assert_eq!(body["typeKey"], kind.type_key()),
        }
        if kind.status() == 401 {
            let challenge = wire.header("WWW-Authenticate").unwrap();
            assert_eq!(
                challenge,
                "Bearer authorization_uri=http://e/org/_apis/oauth2/token"
            );
        }
        let back = codec::decode_response(&ApiRequest::ConnectionData, &wire);
        assert_eq!(back, ApiResponse::Error(err));
    }
    // A non-2xx with no usable body is typed from its status alone.
    let bare = WireResponse::empty(502);
    assert!(matches!(
        codec::decode_response(&ApiRequest::ConnectionData, &bare),
        ApiResponse::Error(ApiError {
            kind: ErrorKind::Unavailable,
            ..
        })
    ));
    let garbled = WireResponse::json(200, b"{not json".to_vec());
    assert!(matches!(
        codec::decode_response(&ApiRequest::AdminStats, &garbled),
        ApiResponse::Error(ApiError { kind: ErrorKind::BadRequest, message }) if message.starts_with("unreadable response")
    ));
}

fn decode_err(method: Method, path: &str, query: &str, body: &[u8], max: usize) -> ErrorKind {
    let mut w = WireRequest::new(method, path, query);
    w.body = body.to_vec();
    match codec::decode_request(&w, max) {
        Ok(r) => panic!("{method:?} {path}?{query} decoded to {r:?}"),
        Err(e) => e.kind,
    }
}

// Goal: unknown routes are 404, wrong methods 405, malformed bodies and values 400, big bodies
// 413 — on every route.
#[test]
fn bad_input_on_every_route_is_a_typed_4xx() {
    let methods = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
        Method::Other,
    ];
    let encode = |call: &ApiRequest| {
        let req = Request {
            credential: Credential::Anonymous,
            call: call.clone(),
        };
        codec::encode_request(&req, "")
    };
    // Some paths serve several methods (GET lists agents, POST adds one).
    let served: Vec<(Method, String)> = every_call()
        .iter()
        .map(encode)
        .map(|w| (w.method, w.path))
        .collect();
    for call in every_call() {
        let wire = encode(&call);
        let other_methods = methods
            .iter()
            .copied()
            .filter(|m| !served.contains(&(*m, wire.path.clone())));
        for m in other_methods {
            // OPTIONS on a one-segment path is the area listing, which is a valid call.
            let one_segment = wire.path.trim_matches('/').split('/').count() == 2;
            if m == Method::Options && one_segment {
                continue;
            }
            assert_eq!(
                decode_err(m, &wire.path, &wire.query, &[], usize::MAX),
                ErrorKind::MethodNotAllowed,
                "{m:?} {}",
                wire.path
            );
        }
        if wire
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json"))
        {
            let garbage: &[&[u8]] = if all_optional_body(&call) {
                &[b"{", b"\"str\"", b"null", b"\xff\xfe"]
            } else {
                &[b"{", b"\"str\"", b"null", b"{\"name\":5}", b"\xff\xfe", b""]
            };
            for &garbage in garbage {
                assert_eq!(
                    decode_err(wire.method, &wire.path, &wire.query, garbage, usize::MAX),
                    ErrorKind::BadRequest,
                    "{call:?}"
                );
            }
        }
        if !wire.body.is_empty() {
            let kind = decode_err(
                wire.method,
                &wire.path,
                &wire.query,
                &wire.body,
                wire.body.len() - 1,
            );
            assert_eq!(kind, ErrorKind::PayloadTooLarge);
        }
    }
    assert_eq!(
        decode_err(Method::Get, "/nothing/here", "", b"", 10),
        ErrorKind::RouteNotFound
    );
    assert_eq!(
        decode_err(
            Method::Get,
            "/_apis/distributedtask/pools/1/frobs",
            "",
            b"",
            10
        ),
        ErrorKind::RouteNotFound
    );
    assert_eq!(
        decode_err(
            Method::Get,
            "/_apis/distributedtask/pools/x/agents",
            "",
            b"",
            10
        ),
        ErrorKind::BadRequest
    );
    assert_eq!(
        decode_err(
            Method::Get,
            "/_apis/distributedtask/pools/1/messages",
            "",
            b"",
            10
        ),
        ErrorKind::BadRequest
    );
    assert_eq!(
        decode_err(
            Method::Get,
            "/_apis/distributedtask/pools/1/messages",
            "sessionId=s&lastMessageId=-1",
            b"",
            10
        ),
        ErrorKind::BadRequest
    );
    assert_eq!(
        decode_err(Method::Get, "/_apis/connection%zzData", "", b"", 10),
        ErrorKind::BadRequest
    );
    assert_eq!(
        decode_err(
            Method::Post,
            "/_apis/oauth2/token",
            "",
            b"grant_type=password",
            100
        ),
        ErrorKind::OAuthInvalidGrant
    );
    assert_eq!(
        decode_err(
            Method::Post,
            "/_apis/oauth2/token",
            "",
            b"grant_type=client_credentials",
            100
        ),
        ErrorKind::OAuthInvalidGrant
    );
    let mut w = WireRequest::new(Method::Get, "/_apis/connectionData", "");
    w.authorization = Some("Negotiate abc".into());
    assert_eq!(
        codec::decode_request(&w, 0).unwrap_err().kind,
        ErrorKind::Unauthorized
    );
}

// Goal: random paths, methods, queries, headers and bodies never panic the codec or the
// server, every codec refusal is a 4xx, and a request the server refuses changes none of its
// counters (a property-style loop, seeded so a failure replays).
#[test]
fn garbage_never_panics() {
    let mut rng = rng::stream(7, StreamKind::Faults, 0);
    let config = ServerConfig {
        crypto_mode: fleetsim_core::crypto::CryptoMode::Modelled,
        ..ServerConfig::with_env_pat("pat")
    };
    let mut server = Server::new(config, 7, 0).unwrap();
    let segments = [
        "_apis",
        "distributedtask",
        "pools",
        "1",
        "0",
        "99999999999",
        "agents",
        "sessions",
        "messages",
        "jobrequests",
        "hubs",
        "Build",
        "plans",
        "timelines",
        "records",
        "feed",
        "logs",
        "attachments",
        "events",
        "oauth2",
        "token",
        "connectionData",
        "fleetsim",
        "stats",
        "%",
        "%41",
        "..",
        "ResourceAreas",
        "x",
    ];
    let methods = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
        Method::Other,
    ];
    // Half the requests start from a valid one (so they get past routing and reach the
    // server's logic), half from a random path; then one mutation.
    let valid: Vec<WireRequest> = every_call()
        .into_iter()
        .map(|call| {
            codec::encode_request(
                &Request {
                    credential: Credential::Anonymous,
                    call,
                },
                "",
            )
        })
        .collect();
    let (mut served, mut succeeded) = (0, 0);
    let random_path = |rng: &mut rng::Rng| -> String {
        let depth = rng.random_range(0..12);
        (0..depth)
            .map(|_| format!("/{}", segments[rng.random_range(0..segments.len())]))
            .collect()
    };
    for i in 0..5_000u64 {
        let mut wire = valid[rng.random_range(0..valid.len())].clone();
        if rng.random_bool(0.5) {
            wire.path = random_path(&mut rng);
        }
        match rng.random_range(0..6) {
            0 => {
                let cut = rng.random_range(0..=wire.body.len());
                wire.body.truncate(cut);
            }
            1 => {
                for b in wire.body.iter_mut() {
                    if rng.random_ratio(1, 8) {
                        *b = rng.random();
                    }
                }
            }
            2 => wire.method = methods[rng.random_range(0..methods.len())],
            3 => {
                wire.query = [
                    "",
                    "sessionId=s&lastMessageId=1",
                    "poolName=%ZZ&&=&agentName",
                    "lockToken=x",
                ][rng.random_range(0..4)]
                .to_string();
            }
            4 => {
                let mut segs: Vec<String> = wire.path.split('/').map(str::to_string).collect();
                let k = rng.random_range(0..segs.len());
                segs[k] = segments[rng.random_range(0..segments.len())].to_string();
                wire.path = segs.join("/");
            }
            _ => {}
        }
        wire.authorization = match rng.random_range(0..4) {
            0 => None,
            1 | 3 => Some("Basic cGF0OnBhdA==".into()),
            _ => Some(["Bearer junk", "Basic !!!"][rng.random_range(0..2)].into()),
        };
        match codec::decode_request(&wire, 4096) {
            Err(e) => assert!((400..500).contains(&e.kind.status()), "{e:?}"),
            Ok(req) => {
                let before = server.stats();
                let handled = server.handle_request(SimTime::from_millis(i), i, req);
                served += 1;
                match handled {
                    Handled::Respond(ApiResponse::Error(e)) => {
                        assert_eq!(server.stats(), before, "refused ({e:?}) but state changed");
                    }
                    _ => succeeded += 1,
                }
                while server.poll_output().is_some() {}
            }
        }
        server.handle_timeout(SimTime::from_millis(i));
    }
    eprintln!("garbage: {served} reached the server, {succeeded} succeeded");
    assert!(
        served > 500 && succeeded > 50,
        "the loop must exercise the server: {served}/{succeeded}"
    );
}

// Goal: answers that carry fewer fields than our emulator sends still decode. A server written
// from Microsoft's documentation answers a log append with only `id` and `lineCount`, and an
// attachment upload with whatever it echoes; the agent reads neither, so neither is an error.
#[test]
fn sparse_plan_hub_answers_from_other_servers_decode() {
    let append = ApiRequest::AppendLog {
        plan: plan(),
        log_id: 3,
        content: b"line\n".to_vec(),
    };
    let wire = WireResponse::json(200, br#"{"id":3,"lineCount":1}"#.to_vec());
    match codec::decode_response(&append, &wire) {
        ApiResponse::Log(log) => assert_eq!((log.id, log.line_count), (3, 1)),
        other => panic!("log append answer not decoded: {other:?}"),
    }
    let attach = ApiRequest::PutAttachment {
        plan: plan(),
        timeline_id: "t".into(),
        record_id: "r".into(),
        kind: "k".into(),
        name: "n".into(),
        content: b"x".to_vec(),
    };
    let wire = WireResponse::json(200, br#"{"type":"k","name":"n"}"#.to_vec());
    assert!(
        matches!(
            codec::decode_response(&attach, &wire),
            ApiResponse::Attachment(_)
        ),
        "attachment answer without record or timeline ids not decoded"
    );
}
