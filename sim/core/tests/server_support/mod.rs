//! Shared fixtures for the `server_*` tests: a harness that drives `Server` on a virtual clock
//! with every request and answer going through the codec (so each test also exercises the wire
//! format), and a small test agent doing the real crypto (RS256 assertion, OAEP unwrap,
//! AES-CBC decrypt).
#![allow(dead_code)] // Each test binary uses a different subset.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fleetsim_core::SimTime;
use fleetsim_core::api::{
    ApiError, ApiRequest, ApiResponse, Credential, ErrorKind, PlanScope, Request, TokenGrant,
};
use fleetsim_core::codec::{self, JWT_BEARER_ASSERTION_TYPE, ResponseContext};
use fleetsim_core::crypto::{self, PrivateKey, jwt};
use fleetsim_core::event::Event;
use fleetsim_core::job::{QueueJobsRequest, SyntheticJob, SyntheticStep};
use fleetsim_core::proto::{
    ACCESS_TOKEN_PARAMETER, AgentJobRequestMessage, JobRequestUpdate, SYSTEM_VSS_CONNECTION,
    TaskAgent, TaskAgentAuthorization, TaskAgentJobRequest, TaskAgentMessage, TaskAgentReference,
    TaskAgentSession, TaskResult,
};
use fleetsim_core::server::durable::{Change, StoredRecord, Table};
use fleetsim_core::server::{Handled, RequestId, Server, ServerConfig, ServerOutput};

/// The PAT every test config accepts, with every scope.
pub const PAT: &str = "fleetsim-test-pat";
/// Wall time of `SimTime::ZERO` (2026-11-25T21:22:00Z).
pub const EPOCH_MS: u64 = 1_795_641_720_000;
/// The emulator's public URL in tests.
pub const PUBLIC_URL: &str = "http://emulator.test/org";
/// A step cap so a livelocked timer loop fails instead of hanging.
const STEP_CAP: usize = 100_000;

/// One RSA-2048 key per test binary: generation is the slow part and every agent may share it.
pub fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).expect("keygen"))
}

/// A second key, for wrong-key tests.
pub fn other_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).expect("keygen"))
}

/// Defaults plus [`PAT`] and [`PUBLIC_URL`].
pub fn config() -> ServerConfig {
    ServerConfig {
        public_url: Some(PUBLIC_URL.into()),
        ..ServerConfig::with_env_pat(PAT)
    }
}

pub fn pat() -> Credential {
    Credential::Basic {
        user: "VstsAgent".into(),
        password: PAT.into(),
    }
}

pub fn bearer(token: &str) -> Credential {
    Credential::Bearer(token.to_string())
}

/// The server on a virtual clock. Every call is encoded to the wire and decoded back on both
/// sides, as the live front and client do.
pub struct Harness {
    pub server: Server,
    pub now: SimTime,
    next_id: RequestId,
    /// Answers released for parked requests, in release order.
    pub released: Vec<(RequestId, ApiResponse)>,
    /// Telemetry drained from the server.
    pub events: Vec<Event>,
    /// The call of each parked request, to decode its answer.
    parked_calls: Vec<(RequestId, ApiRequest)>,
    ctx: ResponseContext,
    max_body: usize,
}

impl Harness {
    pub fn new(config: ServerConfig) -> Harness {
        let max_body = config.limits.max_body_bytes;
        let ctx = ResponseContext {
            public_url: config.public_url(),
            ..Default::default()
        };
        let server = Server::new(config, 42, EPOCH_MS).expect("valid config");
        Harness {
            server,
            now: SimTime::ZERO,
            next_id: 1,
            released: Vec::new(),
            events: Vec::new(),
            parked_calls: Vec::new(),
            ctx,
            max_body,
        }
    }

    /// Send a request; returns its id and either the answer or `None` when it was parked.
    pub fn send(
        &mut self,
        credential: Credential,
        call: ApiRequest,
    ) -> (RequestId, Option<ApiResponse>) {
        let id = self.next_id;
        self.next_id += 1;
        let wire = codec::encode_request(
            &Request {
                credential,
                call: call.clone(),
            },
            "/org",
        );
        let handled = match codec::decode_request(&wire, self.max_body) {
            Ok(req) => {
                assert_eq!(req.call, call, "the codec must round-trip every call");
                self.server.handle_request(self.now, id, req)
            }
            Err(e) => Handled::Respond(ApiResponse::Error(e)),
        };
        let answer = match handled {
            Handled::Respond(r) => Some(self.through_wire(&call, &r)),
            Handled::Parked => {
                self.parked_calls.push((id, call));
                None
            }
        };
        self.drain();
        (id, answer)
    }

    /// Send a request that must be answered at once.
    pub fn call(&mut self, credential: Credential, call: ApiRequest) -> ApiResponse {
        match self.send(credential, call.clone()) {
            (_, Some(r)) => r,
            (id, None) => panic!("request {id} ({call:?}) was parked"),
        }
    }

    /// Expect an error of `kind`.
    pub fn expect_error(
        &mut self,
        credential: Credential,
        call: ApiRequest,
        kind: ErrorKind,
    ) -> ApiError {
        match self.call(credential, call.clone()) {
            ApiResponse::Error(e) if e.kind == kind => e,
            other => panic!("{call:?}: expected {kind:?}, got {other:?}"),
        }
    }

    fn through_wire(&self, call: &ApiRequest, resp: &ApiResponse) -> ApiResponse {
        let wire = codec::encode_response(resp, &self.ctx);
        if wire.status == 401 {
            let challenge = wire
                .header("www-authenticate")
                .expect("401 carries a challenge");
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
        let back = codec::decode_response(call, &wire);
        assert_eq!(&back, resp, "the codec must round-trip every answer");
        back
    }

    /// Drain the server's outputs (the drain contract) into `released`.
    fn drain(&mut self) {
        while let Some(ServerOutput::Respond { id, response }) = self.server.poll_output() {
            let index = self.parked_calls.iter().position(|(p, _)| *p == id);
            let call = index.map(|i| self.parked_calls.remove(i).1);
            let response = match call {
                Some(call) => self.through_wire(&call, &response),
                None => response,
            };
            self.released.push((id, response));
        }
        while let Some(event) = self.server.poll_event() {
            self.events.push(event);
        }
    }

    /// Advance the clock by `d`, firing every timer due on the way, in order.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..STEP_CAP {
            match self.server.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    self.server.handle_timeout(self.now);
                    self.drain();
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        panic!("timer loop did not settle within {STEP_CAP} steps");
    }

    /// The answer released for parked request `id`, if any.
    pub fn released_for(&self, id: RequestId) -> Option<&ApiResponse> {
        self.released.iter().find(|(r, _)| *r == id).map(|(_, a)| a)
    }

    /// Wall Unix seconds now.
    pub fn now_s(&self) -> u64 {
        (EPOCH_MS + self.now.as_micros() / 1000) / 1000
    }
}

/// A registered agent as the tests drive it.
#[derive(Clone, Debug)]
pub struct TestAgent {
    pub id: u64,
    pub pool_id: u32,
    pub name: String,
    pub client_id: String,
    pub authorization_url: String,
    pub token: String,
    pub session_id: String,
    pub session_key: Option<[u8; 32]>,
}

/// The registration body the real agent posts.
pub fn agent_body(name: &str, capabilities: &[(&str, &str)]) -> TaskAgent {
    TaskAgent {
        name: name.to_string(),
        version: "4.260.0".into(),
        os_description: Some("Linux".into()),
        provisioning_state: Some("Provisioned".into()),
        system_capabilities: capabilities
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        authorization: Some(TaskAgentAuthorization {
            public_key: Some(key().public_key().to_wire()),
            ..TaskAgentAuthorization::default()
        }),
        ..TaskAgent::default()
    }
}

/// Register `name` in pool 1.
pub fn register(h: &mut Harness, name: &str, capabilities: &[(&str, &str)]) -> TestAgent {
    let body = agent_body(name, capabilities);
    let agent = match h.call(
        pat(),
        ApiRequest::AddAgent {
            pool_id: 1,
            agent: Box::new(body),
        },
    ) {
        ApiResponse::Agent(a) => a,
        other => panic!("register {name}: {other:?}"),
    };
    let auth = agent.authorization.expect("authorization in the answer");
    TestAgent {
        id: agent.id,
        pool_id: 1,
        name: name.to_string(),
        client_id: auth.client_id.expect("clientId"),
        authorization_url: auth.authorization_url.expect("authorizationUrl"),
        token: String::new(),
        session_id: String::new(),
        session_key: None,
    }
}

/// A fresh assertion as the real agent makes it (nbf = now, exp = now + 5 min, new jti).
pub fn assertion(h: &Harness, agent: &TestAgent, jti: &str) -> String {
    assertion_lasting(h, agent, jti, 300)
}

/// An assertion for `agent` valid from now for `lifetime_s` seconds.
pub fn assertion_lasting(h: &Harness, agent: &TestAgent, jti: &str, lifetime_s: u64) -> String {
    let now_s = h.now_s();
    let claims = jwt::Claims {
        iss: agent.client_id.clone(),
        sub: agent.client_id.clone(),
        aud: agent.authorization_url.clone(),
        nbf: now_s,
        exp: now_s + lifetime_s,
        jti: jti.to_string(),
    };
    jwt::sign(key(), &claims)
}

pub fn client_credentials(assertion: String) -> ApiRequest {
    ApiRequest::Token(TokenGrant::ClientCredentials {
        client_assertion_type: JWT_BEARER_ASSERTION_TYPE.to_string(),
        client_assertion: assertion,
    })
}

/// Exchange a fresh assertion for a listener token.
pub fn fetch_token(h: &mut Harness, agent: &mut TestAgent) {
    let jti = format!("jti-{}-{}", agent.id, h.now.as_micros());
    let grant = client_credentials(assertion(h, agent, &jti));
    match h.call(Credential::Anonymous, grant) {
        ApiResponse::Token(t) => agent.token = t.access_token,
        other => panic!("token for {}: {other:?}", agent.name),
    }
}

/// Create a session and unwrap its key as the real agent does (OAEP-SHA1).
pub fn open_session(h: &mut Harness, agent: &mut TestAgent) {
    let session = TaskAgentSession {
        session_id: fleetsim_core::proto::EMPTY_GUID.into(),
        owner_name: "test-host".into(),
        agent: TaskAgentReference {
            id: agent.id,
            name: agent.name.clone(),
            ..Default::default()
        },
        ..TaskAgentSession::default()
    };
    let call = ApiRequest::CreateSession {
        pool_id: agent.pool_id,
        session,
    };
    match h.call(bearer(&agent.token), call) {
        ApiResponse::Session(s) => {
            agent.session_id = s.session_id;
            agent.session_key = s.encryption_key.map(|k| {
                assert!(k.encrypted, "real crypto wraps the key");
                let wrapped = STANDARD.decode(k.value).expect("base64 key");
                let raw = key().decrypt_oaep_sha1(&wrapped).expect("OAEP unwrap");
                raw.try_into().expect("a 32-byte AES key")
            });
        }
        other => panic!("session for {}: {other:?}", agent.name),
    }
}

/// Register, fetch a token and open a session.
pub fn online_agent(h: &mut Harness, name: &str, capabilities: &[(&str, &str)]) -> TestAgent {
    let mut agent = register(h, name, capabilities);
    fetch_token(h, &mut agent);
    open_session(h, &mut agent);
    agent
}

/// Modelled crypto: the agent has no key and signs nothing; the server checks the claims only.
pub fn online_agent_modelled(h: &mut Harness, name: &str) -> TestAgent {
    let mut agent = register(h, name, &[]);
    let now_s = h.now_s();
    let claims = jwt::Claims {
        iss: agent.client_id.clone(),
        sub: agent.client_id.clone(),
        aud: agent.authorization_url.clone(),
        nbf: now_s,
        exp: now_s + 300,
        // One jti per agent: the replay set refuses a repeat.
        jti: format!("modelled-{}", agent.id),
    };
    let unsigned = format!(
        "{}.{}.",
        base64_url(br#"{"typ":"JWT","alg":"none"}"#),
        base64_url(&serde_json::to_vec(&claims).unwrap())
    );
    match h.call(Credential::Anonymous, client_credentials(unsigned)) {
        ApiResponse::Token(t) => agent.token = t.access_token,
        other => panic!("modelled token: {other:?}"),
    }
    open_session(h, &mut agent);
    assert_eq!(
        agent.session_key, None,
        "modelled crypto sends no session key"
    );
    agent
}

fn base64_url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn get_message(agent: &TestAgent, last: Option<u64>) -> ApiRequest {
    ApiRequest::GetMessage {
        pool_id: agent.pool_id,
        session_id: agent.session_id.clone(),
        last_message_id: last,
    }
}

pub fn delete_message(agent: &TestAgent, message_id: u64) -> ApiRequest {
    ApiRequest::DeleteMessage {
        pool_id: agent.pool_id,
        message_id,
        session_id: agent.session_id.clone(),
    }
}

/// Decrypt a job message with the session key (or read it plain without one).
pub fn open_job(agent: &TestAgent, message: &TaskAgentMessage) -> AgentJobRequestMessage {
    let plain = match agent.session_key {
        Some(key) if !message.iv.is_empty() => {
            let iv: [u8; 16] = STANDARD.decode(&message.iv).unwrap().try_into().unwrap();
            let body = STANDARD.decode(&message.body).unwrap();
            crypto::aes256_cbc_decrypt(&key, &iv, &body).expect("AES-CBC decrypt")
        }
        _ => message.body.clone().into_bytes(),
    };
    serde_json::from_slice(&plain).expect("job message JSON")
}

/// The job token of a job message.
pub fn job_token(job: &AgentJobRequestMessage) -> String {
    let endpoint = job
        .resources
        .endpoints
        .iter()
        .find(|e| e.name == SYSTEM_VSS_CONNECTION)
        .unwrap();
    endpoint.authorization.parameters[ACCESS_TOKEN_PARAMETER].clone()
}

/// The plan-hub scope of a job message.
pub fn plan_scope(job: &AgentJobRequestMessage) -> PlanScope {
    PlanScope {
        scope_identifier: job.plan.scope_identifier.clone(),
        hub: job.plan.plan_type.clone(),
        plan_id: job.plan.plan_id.clone(),
    }
}

/// A job of `steps` one-second steps.
pub fn simple_job(steps: usize, secrets: u32, demands: &[&str]) -> SyntheticJob {
    SyntheticJob {
        steps: (0..steps)
            .map(|_| SyntheticStep {
                duration_ms: 1000,
                log_lines: 3,
                ..Default::default()
            })
            .collect(),
        secrets,
        fail: false,
        demands: demands.iter().map(|d| d.to_string()).collect(),
    }
}

/// Queue `jobs` in pool 1 with the admin PAT.
pub fn queue(h: &mut Harness, jobs: Vec<SyntheticJob>) -> Vec<TaskAgentJobRequest> {
    let request = QueueJobsRequest {
        count: 0,
        template: None,
        jobs,
    };
    match h.call(
        pat(),
        ApiRequest::QueueJobs {
            pool_id: 1,
            request,
        },
    ) {
        ApiResponse::QueuedJobs(q) => q.value,
        other => panic!("queue: {other:?}"),
    }
}

/// Poll until a message arrives (answered at once; the test queued work first).
pub fn take_message(h: &mut Harness, agent: &TestAgent) -> TaskAgentMessage {
    match h.call(bearer(&agent.token), get_message(agent, None)) {
        ApiResponse::Message(m) => m,
        other => panic!("expected a message for {}: {other:?}", agent.name),
    }
}

/// Report job `request_id` finished (succeeded) as its agent does, holding `lock_token`.
pub fn finish(h: &mut Harness, agent: &TestAgent, request_id: u64, lock_token: &str) {
    let call = ApiRequest::UpdateJobRequest {
        pool_id: 1,
        request_id,
        lock_token: lock_token.into(),
        update: JobRequestUpdate {
            request_id,
            finish_time: Some(codec::iso8601_utc(0)),
            result: Some(TaskResult::Succeeded),
        },
    };
    assert!(matches!(
        h.call(bearer(&agent.token), call),
        ApiResponse::JobRequest(_)
    ));
}

/// A durable store in memory: the records a `Server` with durability on wrote, as the live
/// store keeps them (last write of a key wins, a delete removes it).
#[derive(Default)]
pub struct MemoryStore {
    pub records: std::collections::BTreeMap<(Table, u64), Vec<u8>>,
    /// Changes written so far, per table.
    pub writes: std::collections::BTreeMap<Table, usize>,
}

impl MemoryStore {
    /// Drain every change the server has and apply it.
    pub fn sync(&mut self, server: &mut Server) {
        while let Some(Change { table, key, value }) = server.poll_durable() {
            *self.writes.entry(table).or_default() += 1;
            match value {
                Some(v) => self.records.insert((table, key), v),
                None => self.records.remove(&(table, key)),
            };
        }
    }

    /// The records as `Server::restore` takes them.
    pub fn load(&self) -> Vec<StoredRecord> {
        self.records
            .iter()
            .map(|(&(table, key), value)| StoredRecord {
                table,
                key,
                value: value.clone(),
            })
            .collect()
    }
}

impl Harness {
    /// A harness whose server writes durable records (seed 42, as `new`).
    pub fn durable(config: ServerConfig) -> Harness {
        let mut h = Harness::new(config);
        h.server.enable_durable(42);
        h
    }

    /// Crash and restart: everything written to `store` so far survives, the rest is lost;
    /// the server comes back `down` later with `config`. Panics if the records are refused.
    pub fn restart(&mut self, store: &mut MemoryStore, config: ServerConfig, down: Duration) {
        let now_unix_ms = EPOCH_MS + (self.now + down).as_micros() / 1000;
        let restored =
            Server::restore(config, 42, now_unix_ms, store.load()).expect("records restore");
        self.server = restored.server;
        self.now = restored.now;
        self.parked_calls.clear();
        store.sync(&mut self.server);
    }
}
