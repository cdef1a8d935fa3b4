//! The emulator over the wire: loopback, port 0, real crypto, plain HTTP and HTTPS. Each test
//! starts its own emulator and talks to it with the small client in `emulator_support`, which
//! goes through the same codec the fleet uses.
//!
//! No test sleeps to synchronise: long-poll tests use short configured holds, await answers,
//! or wait for a counter to reach a value (`wait_for_parked`).

mod emulator_support;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use fleetsim_core::api::{
    ApiRequest, ApiResponse, Credential, EmulatorStats, ErrorKind, PlanScope, TokenGrant,
};
use fleetsim_core::crypto::{self, PrivateKey, jwt};
use fleetsim_core::event::CryptoOp;
use fleetsim_core::job::{QueueJobsRequest, SyntheticJob, SyntheticStep};
use fleetsim_core::proto::*;
use fleetsim_core::server::ServerConfig;
use fleetsim_core::wire::{Method, WireRequest};
use fleetsim_live::server::{self, EmulatorOptions, RunningEmulator, TlsMode};

use emulator_support::{Target, expect_error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The PAT every test emulator accepts, with every scope.
const PAT: &str = "fleetsim-test-pat";
/// Longest any test waits for a condition before failing instead of hanging.
const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// One RSA-2048 key for the whole binary: generating one per test would dominate run time.
fn agent_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).expect("RSA key generation"))
}

fn pat() -> Credential {
    Credential::Basic {
        user: "fleetsim".into(),
        password: PAT.into(),
    }
}

fn config(hold: Duration) -> ServerConfig {
    let mut config = ServerConfig::with_env_pat(PAT);
    config.long_poll_hold = hold;
    config
}

async fn start(config: ServerConfig, tls: TlsMode) -> RunningEmulator {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut opts = EmulatorOptions::new(listen, config);
    opts.tls = tls;
    opts.seed = 7;
    server::start(opts).await.expect("emulator starts")
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Wait until the emulator holds `n` parked polls (a condition, not a guessed delay).
async fn wait_for_parked(emulator: &RunningEmulator, n: u64) {
    wait_for_stats(emulator, |s| s.parked_polls == n).await;
}

async fn wait_for_stats(emulator: &RunningEmulator, ok: impl Fn(&EmulatorStats) -> bool) {
    let started = Instant::now();
    while !ok(&emulator.handle.stats()) {
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "condition not reached: {:?}",
            emulator.handle.stats()
        );
        tokio::task::yield_now().await;
    }
}

/// A registered agent with a listener token and a live session.
struct Agent {
    id: u64,
    bearer: Credential,
    session_id: String,
    session_key: [u8; 32],
}

/// Register an agent named `name`, exchange a JWT for a listener token and open a session.
async fn register_and_connect(target: &Target, name: &str) -> Agent {
    let key = agent_key();
    let agent = TaskAgent {
        name: name.into(),
        version: "4.260.0".into(),
        authorization: Some(TaskAgentAuthorization {
            public_key: Some(key.public_key().to_wire()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ApiResponse::Agent(registered) = target
        .call(
            &pat(),
            ApiRequest::AddAgent {
                pool_id: 1,
                agent: Box::new(agent),
            },
        )
        .await
    else {
        panic!("registration failed")
    };
    let auth = registered
        .authorization
        .expect("authorization in the registration answer");
    let client_id = auth.client_id.expect("clientId");
    let token_url = auth.authorization_url.expect("authorizationUrl");

    let now = unix_now_s();
    let claims = jwt::Claims {
        iss: client_id.clone(),
        sub: client_id,
        aud: token_url,
        nbf: now - 5,
        exp: now + 300,
        jti: format!("jti-{name}"),
    };
    let grant = TokenGrant::ClientCredentials {
        client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        client_assertion: jwt::sign(key, &claims),
    };
    let ApiResponse::Token(token) = target
        .call(&Credential::Anonymous, ApiRequest::Token(grant))
        .await
    else {
        panic!("token exchange failed")
    };
    assert!(token.token_type.eq_ignore_ascii_case("bearer"), "{token:?}");
    let bearer = Credential::Bearer(token.access_token);

    let session = TaskAgentSession {
        session_id: EMPTY_GUID.into(),
        owner_name: name.into(),
        agent: TaskAgentReference {
            id: registered.id,
            name: name.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let ApiResponse::Session(session) = target
        .call(
            &bearer,
            ApiRequest::CreateSession {
                pool_id: 1,
                session,
            },
        )
        .await
    else {
        panic!("session creation failed")
    };
    let wrapped = session.encryption_key.expect("encryptionKey");
    assert!(wrapped.encrypted, "live mode wraps the session key");
    let raw = key
        .decrypt_oaep_sha1(&B64.decode(wrapped.value).unwrap())
        .expect("OAEP unwrap");
    let session_key: [u8; 32] = raw.try_into().expect("AES-256 key");
    Agent {
        id: registered.id,
        bearer,
        session_id: session.session_id,
        session_key,
    }
}

fn get_message(agent: &Agent) -> ApiRequest {
    ApiRequest::GetMessage {
        pool_id: 1,
        session_id: agent.session_id.clone(),
        last_message_id: None,
    }
}

fn one_job() -> QueueJobsRequest {
    let step = SyntheticStep {
        duration_ms: 10,
        log_lines: 2,
        ..Default::default()
    };
    let job = SyntheticJob {
        steps: vec![step],
        secrets: 1,
        ..Default::default()
    };
    QueueJobsRequest {
        count: 1,
        template: Some(job),
        jobs: Vec::new(),
    }
}

/// Decrypt a job message with the session key.
fn open_job(agent: &Agent, message: &TaskAgentMessage) -> AgentJobRequestMessage {
    assert_eq!(message.message_type, MESSAGE_JOB_REQUEST);
    let iv: [u8; 16] = B64
        .decode(&message.iv)
        .unwrap()
        .try_into()
        .expect("16-byte IV");
    let body = B64.decode(&message.body).unwrap();
    let plain = crypto::aes256_cbc_decrypt(&agent.session_key, &iv, &body).expect("AES decrypt");
    serde_json::from_slice(&plain).expect("job message JSON")
}

/// The whole protocol from discovery to completion; shared by the HTTP and HTTPS tests.
async fn walk(target: &Target, emulator: &RunningEmulator) {
    // Discovery with the PAT, as `config.sh` does it.
    let ApiResponse::ConnectionData(cd) = target.call(&pat(), ApiRequest::ConnectionData).await
    else {
        panic!("connectionData failed")
    };
    assert_eq!(cd.deployment_type, "onPremises");
    let ApiResponse::Locations(locations) = target
        .call(&pat(), ApiRequest::Options { area: None })
        .await
    else {
        panic!("OPTIONS _apis/ failed")
    };
    assert!(locations.count > 0 && locations.count == locations.value.len());
    let ApiResponse::Pools(pools) = target
        .call(
            &pat(),
            ApiRequest::ListPools {
                pool_name: Some("Default".into()),
            },
        )
        .await
    else {
        panic!("pool lookup failed")
    };
    assert_eq!(pools.value[0].id, 1);

    // Registration, token exchange and session.
    let agent = register_and_connect(target, "walker").await;

    // An anonymous listener call is challenged for a bearer token.
    let mut anon = fleetsim_core::codec::encode_request(
        &fleetsim_core::api::Request {
            credential: Credential::Anonymous,
            call: get_message(&agent),
        },
        "",
    );
    anon.authorization = None;
    let challenge = target.send(&anon).await;
    assert_eq!(challenge.status, 401);
    let challenge_header = challenge.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge_header.starts_with("Bearer"),
        "{challenge_header:?}"
    );

    // Poll (parked), queue a job as admin, and the poll wakes with it.
    let poll = {
        let (target, bearer, call) = (target.clone(), agent.bearer.clone(), get_message(&agent));
        tokio::spawn(async move { target.call(&bearer, call).await })
    };
    wait_for_parked(emulator, 1).await;
    let ApiResponse::QueuedJobs(queued) = target
        .call(
            &pat(),
            ApiRequest::QueueJobs {
                pool_id: 1,
                request: one_job(),
            },
        )
        .await
    else {
        panic!("queueing failed")
    };
    assert_eq!(queued.count, 1);
    let ApiResponse::Message(message) = poll.await.unwrap() else {
        panic!("no job message")
    };
    let job = open_job(&agent, &message);
    assert_eq!(job.request_id, queued.value[0].request_id);
    let endpoint = job
        .resources
        .endpoints
        .iter()
        .find(|e| e.name == SYSTEM_VSS_CONNECTION)
        .expect("SystemVssConnection");
    let job_token =
        Credential::Bearer(endpoint.authorization.parameters[ACCESS_TOKEN_PARAMETER].clone());
    assert!(
        job.variables.values().any(|v| v.is_secret),
        "the job carries a secret"
    );

    // Acknowledge the message, renew the lease.
    let ack = ApiRequest::DeleteMessage {
        pool_id: 1,
        message_id: message.message_id,
        session_id: agent.session_id.clone(),
    };
    assert_eq!(
        target.call(&agent.bearer, ack).await,
        ApiResponse::NoContent
    );
    let renew = ApiRequest::UpdateJobRequest {
        pool_id: 1,
        request_id: job.request_id,
        lock_token: EMPTY_GUID.into(),
        update: JobRequestUpdate {
            request_id: job.request_id,
            ..Default::default()
        },
    };
    let ApiResponse::JobRequest(lease) = target.call(&agent.bearer, renew).await else {
        panic!("lease renewal failed")
    };
    assert!(lease.locked_until.is_some());

    // The plan hub with the job token: timeline, feed, log, then the completion event.
    let plan = PlanScope {
        scope_identifier: job.plan.scope_identifier.clone(),
        hub: job.plan.plan_type.to_ascii_lowercase(),
        plan_id: job.plan.plan_id.clone(),
    };
    let record = TimelineRecord {
        id: job.job_id.clone(),
        state: Some(TimelineRecordState::InProgress),
        ..Default::default()
    };
    let records = ApiRequest::UpdateTimelineRecords {
        plan: plan.clone(),
        timeline_id: job.timeline.id.clone(),
        records: ListOf::new(vec![record]),
    };
    assert!(matches!(
        target.call(&job_token, records).await,
        ApiResponse::TimelineRecords(_)
    ));
    let feed = ApiRequest::AppendFeed {
        plan: plan.clone(),
        timeline_id: job.timeline.id.clone(),
        record_id: job.job_id.clone(),
        feed: TimelineRecordFeedLinesWrapper {
            step_id: job.job_id.clone(),
            value: vec!["building".into(), "done".into()],
            count: 2,
            start_line: Some(1),
        },
    };
    assert_eq!(target.call(&job_token, feed).await, ApiResponse::Ok);
    let create = ApiRequest::CreateLog {
        plan: plan.clone(),
        log: TaskLogCreate {
            path: format!("logs\\{}", job.job_id),
        },
    };
    let ApiResponse::Log(log) = target.call(&job_token, create).await else {
        panic!("log create")
    };
    let append = ApiRequest::AppendLog {
        plan: plan.clone(),
        log_id: log.id,
        content: b"line 1\nline 2\n".to_vec(),
    };
    assert!(!matches!(
        target.call(&job_token, append).await,
        ApiResponse::Error(_)
    ));
    let attach = ApiRequest::PutAttachment {
        plan: plan.clone(),
        timeline_id: job.timeline.id.clone(),
        record_id: job.job_id.clone(),
        kind: "summary".into(),
        name: "report.md".into(),
        content: b"# all good\n".to_vec(),
    };
    let ApiResponse::Attachment(attachment) = target.call(&job_token, attach).await else {
        panic!("attachment upload failed")
    };
    assert_eq!(attachment.name, "report.md");
    let done = JobEvent {
        name: EVENT_JOB_COMPLETED.into(),
        job_id: job.job_id.clone(),
        request_id: job.request_id,
        result: Some(TaskResult::Succeeded),
    };
    assert_eq!(
        target
            .call(&job_token, ApiRequest::PostEvent { plan, event: done })
            .await,
        ApiResponse::Ok
    );

    // The job is complete, its token revoked, and the counters agree.
    let stats = emulator.handle.stats();
    assert_eq!(
        (stats.jobs_completed, stats.leaked_secrets, stats.agents),
        (1, 0, 1),
        "{stats:?}"
    );
    let ApiResponse::Stats(over_wire) = target.call(&pat(), ApiRequest::AdminStats).await else {
        panic!("admin stats")
    };
    assert_eq!(over_wire.jobs_completed, 1);
    let close = ApiRequest::DeleteSession {
        pool_id: 1,
        session_id: agent.session_id.clone(),
    };
    assert_eq!(
        target.call(&agent.bearer, close).await,
        ApiResponse::NoContent
    );
    let _ = agent.id;
}

// Goal: a complete agent walk over plain HTTP, from discovery to job completion, with real
// crypto on both sides and the 401 Bearer challenge on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_walk_over_http() {
    let emulator = start(config(Duration::from_secs(30)), TlsMode::Plain).await;
    assert!(
        emulator.base_url.starts_with("http://127.0.0.1:"),
        "{}",
        emulator.base_url
    );
    walk(&Target::plain(emulator.local_addr), &emulator).await;
    let metrics = emulator.handle.front_metrics();
    assert!(metrics.requests_with_status(401) >= 1, "{metrics:?}");
    // The core's crypto events reach the front's counters, timed by the real meter.
    let wraps = metrics
        .crypto
        .iter()
        .find(|(op, _)| *op == CryptoOp::OaepWrap);
    assert!(
        wraps.is_some_and(|(_, t)| t.count >= 1 && t.nanos > 0),
        "{metrics:?}"
    );
    emulator.handle.shutdown().await;
}

// Goal: the same walk over HTTPS with a self-signed certificate the client trusts from the
// file the emulator wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_walk_over_https_with_self_signed_cert() {
    let dir = std::env::temp_dir().join(format!("fleetsim-emulator-tls-{}", std::process::id()));
    let emulator = start(
        config(Duration::from_secs(30)),
        TlsMode::SelfSigned { dir: dir.clone() },
    )
    .await;
    assert!(
        emulator.base_url.starts_with("https://127.0.0.1:"),
        "{}",
        emulator.base_url
    );
    let cert = emulator.cert_path.clone().expect("self-signed cert path");
    walk(&Target::https(emulator.local_addr, &cert), &emulator).await;
    // Plain HTTP on the TLS port fails the handshake: closed and counted, nothing else.
    let mut tcp = tokio::net::TcpStream::connect(emulator.local_addr)
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink).await;
    let started = Instant::now();
    while emulator.handle.front_metrics().tls_handshake_failures != 1 {
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "handshake failure not counted"
        );
        tokio::task::yield_now().await;
    }
    emulator.handle.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

// Goal: a held poll ends with 202 and an empty body when its (short) hold runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_times_out_with_202() {
    let hold = Duration::from_millis(300);
    let emulator = start(config(hold), TlsMode::Plain).await;
    let target = Target::plain(emulator.local_addr);
    let agent = register_and_connect(&target, "idle").await;
    let started = Instant::now();
    let answer = target.call(&agent.bearer, get_message(&agent)).await;
    assert_eq!(answer, ApiResponse::NoMessage);
    assert!(
        started.elapsed() >= hold,
        "answered before the hold ran out"
    );
    assert_eq!(emulator.handle.stats().parked_polls, 0);
    emulator.handle.shutdown().await;
}

// Goal: a parked poll whose client goes away is released in the core (no leaked waiter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnected_poll_is_released() {
    let emulator = start(config(Duration::from_secs(30)), TlsMode::Plain).await;
    let target = Target::plain(emulator.local_addr);
    let agent = register_and_connect(&target, "leaver").await;
    let poll = {
        let (target, bearer, call) = (target.clone(), agent.bearer.clone(), get_message(&agent));
        tokio::spawn(async move { target.call(&bearer, call).await })
    };
    wait_for_parked(&emulator, 1).await;
    poll.abort(); // Drops the client connection mid-poll.
    wait_for_parked(&emulator, 0).await;
    emulator.handle.shutdown().await;
}

// Goal: graceful shutdown answers a parked poll (202) instead of cutting it off, and returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_parked_poll() {
    let emulator = start(config(Duration::from_secs(60)), TlsMode::Plain).await;
    let target = Target::plain(emulator.local_addr);
    let agent = register_and_connect(&target, "stayer").await;
    let poll = {
        let (target, bearer, call) = (target.clone(), agent.bearer.clone(), get_message(&agent));
        tokio::spawn(async move { target.call(&bearer, call).await })
    };
    wait_for_parked(&emulator, 1).await;
    let started = Instant::now();
    let RunningEmulator {
        handle, local_addr, ..
    } = emulator;
    handle.shutdown().await;
    assert_eq!(poll.await.unwrap(), ApiResponse::NoMessage);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown waited for the hold"
    );
    assert!(
        tokio::net::TcpStream::connect(local_addr).await.is_err(),
        "still accepting"
    );
}

/// A raw request with a body.
fn raw(method: Method, path: &str, body: &[u8]) -> WireRequest {
    let mut wire = WireRequest::new(method, path, "");
    wire.content_type = Some("application/json".into());
    wire.authorization = Some(format!("Basic {}", B64.encode(format!("u:{PAT}"))));
    wire.body = body.to_vec();
    wire
}

/// Assert a WrappedException with `status` and return its `typeKey`.
fn assert_wrapped(response: &fleetsim_core::wire::WireResponse, status: u16, what: &str) -> String {
    assert_eq!(
        response.status,
        status,
        "{what}: {:?}",
        String::from_utf8_lossy(&response.body)
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e})"));
    body["typeKey"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no typeKey in {body}"))
        .to_string()
}

// Goal: bad input on every JSON route is a typed WrappedException (413, 400, 404, 405), never a
// panic or a dropped connection, and the server keeps serving afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_route_gets_wrapped_errors() {
    let mut config = config(Duration::from_secs(30));
    config.limits.max_body_bytes = 4096;
    let emulator = start(config, TlsMode::Plain).await;
    let target = Target::plain(emulator.local_addr);
    let plan = "/00000000-0000-0000-0000-000000000001/_apis/distributedtask/hubs/build/plans/p1";
    let json_routes: Vec<(Method, String)> = vec![
        (Method::Post, "/_apis/distributedtask/pools/1/agents".into()),
        (
            Method::Put,
            "/_apis/distributedtask/pools/1/agents/1".into(),
        ),
        (
            Method::Post,
            "/_apis/distributedtask/pools/1/sessions".into(),
        ),
        (
            Method::Patch,
            "/_apis/distributedtask/pools/1/jobrequests/1".into(),
        ),
        (
            Method::Post,
            "/_apis/distributedtask/pools/1/jobrequests".into(),
        ),
        (Method::Patch, format!("{plan}/timelines/t1/records")),
        (Method::Post, format!("{plan}/timelines/t1/records/r1/feed")),
        (Method::Post, format!("{plan}/logs")),
        (Method::Post, format!("{plan}/events")),
    ];
    let big = vec![b'x'; 64 * 1024];
    for (method, path) in &json_routes {
        let what = format!("{} {path}", method.as_str());
        let mut conn = target.connect().await;
        let key = assert_wrapped(
            &conn.send(&raw(*method, path, b"{not json")).await,
            400,
            &what,
        );
        assert!(!key.is_empty());
        let typed_wrong = raw(*method, path, br#"{"name": 5, "count": "x", "value": 3}"#);
        assert_wrapped(&conn.send(&typed_wrong).await, 400, &what);
        let key = assert_wrapped(&target.send(&raw(*method, path, &big)).await, 413, &what);
        assert_eq!(key, ErrorKind::PayloadTooLarge.type_key());
    }
    let key = assert_wrapped(
        &target
            .send(&raw(Method::Get, "/_apis/distributedtask/nope/1", b""))
            .await,
        404,
        "404",
    );
    assert_eq!(key, ErrorKind::RouteNotFound.type_key());
    let wrong = raw(Method::Delete, "/_apis/connectionData", b"");
    let key = assert_wrapped(&target.send(&wrong).await, 405, "405");
    assert_eq!(key, ErrorKind::MethodNotAllowed.type_key());
    // The token endpoint answers malformed grants in OAuth's own error shape.
    let mut token = raw(Method::Post, "/_apis/oauth2/token", b"grant_type=%zz&&=");
    token.content_type = Some("application/x-www-form-urlencoded".into());
    token.authorization = None;
    let answer = target.send(&token).await;
    assert_eq!(
        answer.status,
        400,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert!(body["error"].is_string(), "{body}");
    // Bad query values are 400s too.
    let mut poll = raw(Method::Get, "/_apis/distributedtask/pools/1/messages", b"");
    poll.query = "sessionId=s&lastMessageId=not-a-number".into();
    assert_wrapped(&target.send(&poll).await, 400, "bad lastMessageId");
    // Garbage paths and methods: always a 4xx answer, never a 5xx or a closed connection.
    for path in [
        "/",
        "//",
        "/_apis/distributedtask/pools/x/agents",
        "/%ff%fe",
        "/_apis/../../etc",
    ] {
        for method in [Method::Get, Method::Post, Method::Other] {
            let answer = target.send(&raw(method, path, b"\0\xff")).await;
            assert!(
                (400..500).contains(&answer.status),
                "{path}: {}",
                answer.status
            );
        }
    }
    // Nothing above changed state, and the server still serves.
    assert_eq!(emulator.handle.stats().agents, 0);
    let agent = register_and_connect(&target, "after-bad-input").await;
    assert!(!agent.session_id.is_empty());
    let unknown = target
        .call(&Credential::Bearer("forged".into()), get_message(&agent))
        .await;
    assert_eq!(expect_error(&unknown), ErrorKind::Unauthorized);
    emulator.handle.shutdown().await;
}

// Goal: at the connection bound a new connection waits `connection_wait` for a slot and is then
// closed unserved (counted), and a slot freed by a closing client is handed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_bound_are_closed_after_the_wait() {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut opts = EmulatorOptions::new(listen, config(Duration::from_secs(30)));
    opts.max_connections = 1;
    opts.connection_wait = Duration::from_millis(200);
    let emulator = server::start(opts).await.unwrap();
    let target = Target::plain(emulator.local_addr);
    let discovery = raw(Method::Get, "/_apis/connectionData", b"");

    let mut first = target.connect().await;
    assert_eq!(first.send(&discovery).await.status, 200);
    let mut second = target.connect().await;
    assert!(
        second.try_send(&discovery).await.is_err(),
        "served over the bound"
    );
    assert_eq!(emulator.handle.front_metrics().connections_rejected, 1);

    drop(first);
    let mut third = target.connect().await;
    assert_eq!(
        third.send(&discovery).await.status,
        200,
        "the freed slot was not reused"
    );
    emulator.handle.shutdown().await;
}

// Goal: the auto builder serves HTTP/2 as well as HTTP/1.1 on the same port (prior knowledge
// on plain TCP), through the same codec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_served() {
    let emulator = start(config(Duration::from_secs(30)), TlsMode::Plain).await;
    let target = Target::plain(emulator.local_addr);
    let answer = target
        .send_h2(&raw(Method::Get, "/_apis/connectionData", b""))
        .await;
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let data: ConnectionData = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(data.deployment_type, "onPremises");
    emulator.handle.shutdown().await;
}

/// One HTTP/1.1 exchange written and read as bytes, as `curl` would do it: returns the status
/// and the body (the emulator closes the connection after `Connection: close`).
async fn curl(addr: SocketAddr, method: &str, path_and_query: &str, body: &str) -> (u16, Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = B64.encode(format!("curl:{PAT}"));
    let request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = text[..head_end].to_ascii_lowercase();
    let mut body = answer[head_end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

/// The payload of a chunked body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size_text = std::str::from_utf8(&raw[..line_end]).expect("size");
        let size = usize::from_str_radix(size_text.trim(), 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 4 + size..];
    }
}

// Goal: a REST client (raw HTTP, as curl sends it) queues a pipeline run under a collection
// path, follows it with GET, and the run's job reaches a connected agent as a
// PipelineAgentJobRequest with the pipeline's task steps; an unknown pipeline is a 404
// PipelineNotFoundException.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_run_over_raw_http() {
    let mut config = config(Duration::from_secs(30));
    config.pipelines = vec![fleetsim_core::server::PipelineConfig {
        id: 3,
        name: "ci".into(),
        project: "Demo".into(),
        pool: "Default".into(),
        jobs: 1,
        steps: vec!["Checkout".into(), "Bash".into()],
        demands: Vec::new(),
        folder: None,
    }];
    let emulator = start(config, TlsMode::Plain).await;
    let target = Target::plain(emulator.local_addr);
    let agent = register_and_connect(&target, "pipeline-agent").await;

    let body = r#"{"resources":{"repositories":{"self":{"refName":"refs/heads/main"}}},"variables":{"who":{"value":"curl","isSecret":false}}}"#;
    let runs = "/DefaultCollection/Demo/_apis/pipelines/3/runs";
    let (status, answer) = curl(
        emulator.local_addr,
        "POST",
        &format!("{runs}?api-version=7.1"),
        body,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let run: PipelineRun = serde_json::from_slice(&answer).expect("Run JSON");
    assert_eq!(run.state, RunState::InProgress);
    assert_eq!(run.pipeline.id, 3);

    let (status, answer) = curl(
        emulator.local_addr,
        "GET",
        &format!("{runs}/{}?api-version=7.1", run.id),
        "",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(json["id"], run.id);
    assert_eq!(json["state"], "inProgress");
    assert_eq!(json["pipeline"]["name"], "ci");

    let ApiResponse::Message(message) = target.call(&agent.bearer, get_message(&agent)).await
    else {
        panic!("no job message")
    };
    let job = open_job(&agent, &message);
    let names: Vec<_> = job
        .steps
        .iter()
        .map(|s| s.reference.name.as_str())
        .collect();
    assert_eq!(names, ["Checkout", "Bash"]);
    assert_eq!(job.variables["who"].value, "curl");

    let (status, answer) = curl(
        emulator.local_addr,
        "GET",
        "/DefaultCollection/Demo/_apis/pipelines/99/runs/1?api-version=7.1",
        "",
    )
    .await;
    let error = fleetsim_core::wire::WireResponse::json(status, answer);
    assert_eq!(
        assert_wrapped(&error, 404, "unknown pipeline"),
        "PipelineNotFoundException"
    );
    emulator.handle.shutdown().await;
}
