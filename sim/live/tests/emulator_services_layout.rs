//! The emulator in the layout of Azure DevOps Services, over the wire: the token service on a
//! second listener (the registration's `authorizationUrl` names it; the main listener answers
//! the token route with a typed 404), the collection under `/org` (nothing served outside it),
//! the plan hub on a third listener on another loopback host (`127.0.0.2`, named in the job's
//! `SystemVssConnection.url`; the main listener refuses plan-hub routes), and `expires_in`
//! typed as a JSON string.
//!
//! Loopback only (127.0.0.0/8), port 0, real crypto. No sleeps: every step awaits its answer.

mod emulator_support;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, ErrorKind, Request, TokenGrant};
use fleetsim_core::codec;
use fleetsim_core::crypto::{self, PrivateKey, jwt};
use fleetsim_core::job::{QueueJobsRequest, SyntheticJob, SyntheticStep};
use fleetsim_core::proto::*;
use fleetsim_core::server::{Layout, ServerConfig};
use fleetsim_core::wire::WireResponse;
use fleetsim_live::server::{self, EmulatorOptions, RunningEmulator};

use emulator_support::{Target, expect_error};

const PAT: &str = "services-layout-pat";
const ORG: &str = "/org";

fn pat() -> Credential {
    Credential::Basic {
        user: String::new(),
        password: PAT.into(),
    }
}

fn services_layout() -> Layout {
    Layout {
        token_listen: Some("127.0.0.1:0".parse().unwrap()),
        collection_path: Some(ORG.into()),
        plan_listen: Some("127.0.0.2:0".parse().unwrap()),
        expires_in_as_string: true,
        ..Layout::default()
    }
}

async fn start(layout: Layout) -> RunningEmulator {
    let mut config = ServerConfig::with_env_pat(PAT);
    config.layout = layout;
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    server::start(EmulatorOptions::new(listen, config))
        .await
        .expect("emulator starts")
}

/// `host:port` of an `http://host:port/...` URL.
fn authority(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("http://").expect("http URL");
    rest.split('/').next().unwrap().parse().expect("host:port")
}

/// Send `call` under `base_path` to `target`; the raw answer.
async fn send(
    target: &Target,
    base_path: &str,
    cred: &Credential,
    call: ApiRequest,
) -> WireResponse {
    let request = Request {
        credential: cred.clone(),
        call,
    };
    target
        .send(&codec::encode_request(&request, base_path))
        .await
}

/// Send and decode.
async fn call(
    target: &Target,
    base_path: &str,
    cred: &Credential,
    call: ApiRequest,
) -> ApiResponse {
    let wire = send(target, base_path, cred, call.clone()).await;
    codec::decode_response(&call, &wire)
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// Goal: with the Services layout on, every part lives where Services puts it: the token only on
// the token listener (JWT audience = that URL, `expires_in` a string), routes only under /org,
// the job's SystemVssConnection.url on another host, whose plan hub answers the job token while
// the main listener refuses plan-hub routes.
#[tokio::test]
async fn each_part_is_served_where_services_serves_it() {
    let emulator = start(services_layout()).await;
    let main = Target::plain(emulator.local_addr);
    let token_url = emulator.token_url.clone().expect("token listener URL");
    let plan_url = emulator.plan_url.clone().expect("plan listener URL");
    let token_host = Target::plain(authority(&token_url));
    let plan_host = Target::plain(authority(&plan_url));
    assert_ne!(authority(&token_url), emulator.local_addr);
    assert_eq!(authority(&plan_url).ip().to_string(), "127.0.0.2");
    assert!(token_url.ends_with(codec::TOKEN_PATH), "{token_url}");
    assert!(plan_url.ends_with(ORG), "{plan_url}");

    // The collection path: connectionData under /org names it; outside /org nothing is served.
    let ApiResponse::ConnectionData(cd) =
        call(&main, ORG, &pat(), ApiRequest::ConnectionData).await
    else {
        panic!("connectionData under /org")
    };
    let mapping = &cd.location_service_data.access_mappings[0].access_point;
    assert_eq!(mapping, &format!("{}{ORG}", emulator.base_url));
    // Services says so: the real agent uses authorizationUrl as given only on a hosted server.
    assert_eq!(cd.deployment_type, "hosted");
    let outside = call(&main, "", &pat(), ApiRequest::ConnectionData).await;
    assert_eq!(expect_error(&outside), ErrorKind::RouteNotFound);

    // Registration names the token listener.
    let key = PrivateKey::generate(2048).expect("RSA key");
    let agent = TaskAgent {
        name: "services-agent".into(),
        version: "4.260.0".into(),
        authorization: Some(TaskAgentAuthorization {
            public_key: Some(key.public_key().to_wire()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ApiResponse::Agent(registered) = call(
        &main,
        ORG,
        &pat(),
        ApiRequest::AddAgent {
            pool_id: 1,
            agent: Box::new(agent),
        },
    )
    .await
    else {
        panic!("registration")
    };
    let auth = registered.authorization.expect("authorization");
    assert_eq!(auth.authorization_url.as_deref(), Some(token_url.as_str()));
    let client_id = auth.client_id.expect("clientId");

    // The token: refused on the main listener (where a client posting to {target}/_apis/… goes),
    // served on the token listener with the JWT audience = authorizationUrl.
    let now = unix_now_s();
    let assertion = |jti: &str| {
        let claims = jwt::Claims {
            iss: client_id.clone(),
            sub: client_id.clone(),
            aud: token_url.clone(),
            nbf: now - 5,
            exp: now + 300,
            jti: jti.into(),
        };
        ApiRequest::Token(TokenGrant::ClientCredentials {
            client_assertion_type: codec::JWT_BEARER_ASSERTION_TYPE.into(),
            client_assertion: jwt::sign(&key, &claims),
        })
    };
    let anonymous = Credential::Anonymous;
    let refused = send(&main, ORG, &anonymous, assertion("on-main")).await;
    assert_eq!(refused.status, 404);
    assert_eq!(
        codec::decode_error(&refused).kind,
        ErrorKind::RouteNotFound,
        "typed body"
    );
    let answer = send(&token_host, "", &anonymous, assertion("on-token-host")).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert!(
        body["expires_in"].is_string(),
        "expires_in typed as a string: {body}"
    );
    let bearer = Credential::Bearer(body["access_token"].as_str().unwrap().to_string());

    // A job: its SystemVssConnection names the plan host.
    let session = TaskAgentSession {
        session_id: EMPTY_GUID.into(),
        owner_name: "services-agent".into(),
        agent: TaskAgentReference {
            id: registered.id,
            name: "services-agent".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let ApiResponse::Session(session) = call(
        &main,
        ORG,
        &bearer,
        ApiRequest::CreateSession {
            pool_id: 1,
            session,
        },
    )
    .await
    else {
        panic!("session")
    };
    let wrapped = session.encryption_key.expect("session key");
    let aes: [u8; 32] = key
        .decrypt_oaep_sha1(&B64.decode(wrapped.value).unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let job = SyntheticJob {
        steps: vec![SyntheticStep {
            duration_ms: 10,
            ..Default::default()
        }],
        ..Default::default()
    };
    let queue = ApiRequest::QueueJobs {
        pool_id: 1,
        request: QueueJobsRequest {
            count: 1,
            template: Some(job),
            jobs: Vec::new(),
        },
    };
    assert!(matches!(
        call(&main, ORG, &pat(), queue).await,
        ApiResponse::QueuedJobs(_)
    ));
    let poll = ApiRequest::GetMessage {
        pool_id: 1,
        session_id: session.session_id.clone(),
        last_message_id: None,
    };
    let ApiResponse::Message(message) = call(&main, ORG, &bearer, poll).await else {
        panic!("job message")
    };
    let iv: [u8; 16] = B64.decode(&message.iv).unwrap().try_into().unwrap();
    let plain = crypto::aes256_cbc_decrypt(&aes, &iv, &B64.decode(&message.body).unwrap()).unwrap();
    let job: AgentJobRequestMessage = serde_json::from_slice(&plain).expect("job JSON");
    let endpoint = job
        .resources
        .endpoints
        .iter()
        .find(|e| e.name == SYSTEM_VSS_CONNECTION)
        .expect("SystemVssConnection");
    assert_eq!(endpoint.url, format!("{plan_url}/"));
    // …and only for a `Hosted` server does the real agent keep SystemVssConnection.url as given.
    assert_eq!(
        job.variables
            .get("system.servertype")
            .map(|v| v.value.as_str()),
        Some("Hosted")
    );
    let job_token =
        Credential::Bearer(endpoint.authorization.parameters[ACCESS_TOKEN_PARAMETER].clone());

    // Plan hub: refused on the main listener, served on the plan host under /org.
    let event = ApiRequest::PostEvent {
        plan: fleetsim_core::api::PlanScope {
            scope_identifier: job.plan.scope_identifier.clone(),
            hub: job.plan.plan_type.clone(),
            plan_id: job.plan.plan_id.clone(),
        },
        event: JobEvent {
            name: EVENT_JOB_COMPLETED.into(),
            job_id: job.job_id.clone(),
            request_id: job.request_id,
            result: Some(TaskResult::Succeeded),
        },
    };
    let on_main = call(&main, ORG, &job_token, event.clone()).await;
    assert_eq!(expect_error(&on_main), ErrorKind::RouteNotFound);
    assert_eq!(
        call(&plan_host, ORG, &job_token, event).await,
        ApiResponse::Ok,
        "the plan host serves the plan hub"
    );
    let stats = emulator.handle.shutdown().await;
    assert_eq!(stats.jobs_completed, 1, "{stats:?}");
}

// Goal: the token listener serves nothing but the token route (typed 404 otherwise).
#[tokio::test]
async fn the_token_listener_serves_only_tokens() {
    let emulator = start(services_layout()).await;
    let token_host = Target::plain(authority(emulator.token_url.as_deref().unwrap()));
    for base in ["", ORG] {
        let answer = call(&token_host, base, &pat(), ApiRequest::ConnectionData).await;
        assert_eq!(expect_error(&answer), ErrorKind::RouteNotFound, "{base}");
    }
}
