//! Unit tests of the agent against a scripted fake server: the call sequence, every timer of
//! protocol.md §10, auth re-minting, masking before send, and the bounded size of an idle agent.
//! The whole-protocol tests against the real server core live in `tests/pair.rs`.

use std::collections::BTreeMap;

use super::*;
use crate::proto::{
    ConnectionData, Identity as WireIdentity, JobResources, JobStep, LocationServiceData, MaskHint,
    PlanReference, ServiceEndpoint, TaskAgentJobRequest, TaskAgentPool, TaskLog, TaskReference,
    TaskResult, TimelineReference, TokenResponse, VariableValue,
};
use crate::rng::StreamKind;

const STEP_CAP: usize = 100_000;
const SECRET: &str = "hunter2-very-secret";

/// One call the agent sent.
#[derive(Clone, Debug)]
struct Sent {
    id: CallId,
    conn: Connection,
    op: Operation,
    at: SimTime,
    request: Request,
    endpoint: Endpoint,
}

/// A fake server's answer: `None` leaves the call pending (a long poll is then held and
/// answered `NoMessage` after the rig's `hold`, as the real server does after ~50 s).
type Fake = dyn FnMut(SimTime, &Request) -> Option<ApiResponse>;

/// How long the rig's server holds an unanswered long poll.
const HOLD: Duration = Duration::from_secs(50);

/// The agent on a virtual clock with a scripted server that answers instantly.
struct Rig {
    agent: Agent,
    now: SimTime,
    pending: Vec<Sent>,
    sent: Vec<Sent>,
    cancelled: Vec<CallId>,
    events: Vec<Event>,
    /// Unanswered long polls end empty after this; `None` holds them forever.
    hold: Option<Duration>,
}

impl Rig {
    fn new(config: AgentConfig) -> Rig {
        Rig::with_key(config, None)
    }

    fn with_key(config: AgentConfig, key: Option<Arc<PrivateKey>>) -> Rig {
        let rng = rng::stream(42, StreamKind::Agent, 0);
        let agent = Agent::new(
            0,
            Arc::new(config),
            key,
            rng,
            SimTime::ZERO,
            1_700_000_000_000,
        );
        let mut rig = Rig {
            agent,
            now: SimTime::ZERO,
            pending: vec![],
            sent: vec![],
            cancelled: vec![],
            events: vec![],
            hold: Some(HOLD),
        };
        rig.drain();
        rig
    }

    fn drain(&mut self) {
        while let Some(out) = self.agent.poll_transmit() {
            match out {
                AgentOutput::Send {
                    id,
                    conn,
                    op,
                    request,
                    endpoint,
                } => {
                    assert!(
                        !self.pending.iter().any(|p| p.conn == conn),
                        "two calls in flight on {conn:?}"
                    );
                    let s = Sent {
                        id,
                        conn,
                        op,
                        at: self.now,
                        request: *request,
                        endpoint,
                    };
                    self.sent.push(s.clone());
                    self.pending.push(s);
                }
                AgentOutput::Cancel { id, .. } => {
                    self.pending.retain(|p| p.id != id);
                    self.cancelled.push(id);
                }
            }
        }
        while let Some(ev) = self.agent.poll_event() {
            self.events.push(ev);
        }
    }

    /// Answer pending calls with `fake` until it answers none, then fire timers up to `until`.
    fn run_until(&mut self, until: SimTime, fake: &mut Fake) {
        for _ in 0..STEP_CAP {
            if let Some(i) = (0..self.pending.len())
                .find_map(|i| fake(self.now, &self.pending[i].request).map(|r| (i, r)))
            {
                let (i, resp) = i;
                let call = self.pending.remove(i);
                self.agent.handle_response(self.now, call.id, resp);
                self.drain();
                continue;
            }
            let held = self.hold.and_then(|hold| {
                let polls = self
                    .pending
                    .iter()
                    .filter(|p| matches!(p.request.call, ApiRequest::GetMessage { .. }));
                polls.map(|p| (p.at + hold, p.id)).min()
            });
            let timer = self.agent.poll_timeout().map(|(at, _)| at);
            match (held, timer) {
                (Some((at, id)), t) if at <= until && t.is_none_or(|t| at < t) => {
                    self.now = self.now.max(at);
                    self.pending.retain(|p| p.id != id);
                    self.agent
                        .handle_response(self.now, id, ApiResponse::NoMessage);
                    self.drain();
                }
                (_, Some(at)) if at <= until => {
                    self.now = self.now.max(at);
                    self.agent.handle_timeout(self.now);
                    self.drain();
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
        let tail: Vec<_> = self
            .sent
            .iter()
            .rev()
            .take(8)
            .map(|s| (s.op, s.conn))
            .collect();
        panic!("step cap reached: livelock at {}: {tail:?}", self.now);
    }

    fn ops(&self) -> Vec<Operation> {
        self.sent.iter().map(|s| s.op).collect()
    }

    fn sent_times(&self, op: Operation) -> Vec<SimTime> {
        self.sent
            .iter()
            .filter(|s| s.op == op)
            .map(|s| s.at)
            .collect()
    }

    fn pending_on(&self, conn: Connection) -> Option<&Sent> {
        self.pending.iter().find(|p| p.conn == conn)
    }
}

fn modelled() -> AgentConfig {
    AgentConfig {
        crypto_mode: CryptoMode::Modelled,
        pat: "pat-1".into(),
        ..AgentConfig::default()
    }
}

fn error(kind: ErrorKind) -> ApiResponse {
    ApiResponse::Error(crate::api::ApiError::new(kind, "scripted"))
}

fn connection_data() -> ConnectionData {
    let id = WireIdentity {
        id: "u".into(),
        provider_display_name: "u".into(),
        is_active: true,
    };
    ConnectionData {
        authenticated_user: id.clone(),
        authorized_user: id,
        instance_id: "i".into(),
        deployment_id: "d".into(),
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

/// A well-behaved server: registration, tokens, sessions; polls end empty at once; every
/// job call succeeds.
fn happy(_now: SimTime, req: &Request) -> Option<ApiResponse> {
    let anonymous = req.credential == Credential::Anonymous;
    Some(match &req.call {
        ApiRequest::ConnectionData if anonymous => error(ErrorKind::Unauthorized),
        ApiRequest::ConnectionData => ApiResponse::ConnectionData(connection_data()),
        ApiRequest::ListPools { .. } => {
            ApiResponse::Pools(proto::ListOf::new(vec![TaskAgentPool {
                id: 1,
                name: "Default".into(),
                is_hosted: false,
                pool_type: "automation".into(),
                size: 0,
            }]))
        }
        ApiRequest::ListAgents { .. } => ApiResponse::Agents(proto::ListOf::new(vec![])),
        ApiRequest::AddAgent { agent, .. } | ApiRequest::ReplaceAgent { agent, .. } => {
            let mut agent = agent.clone();
            agent.id = 7;
            let auth = agent.authorization.get_or_insert_with(Default::default);
            auth.client_id = Some("client-7".into());
            auth.authorization_url = Some("http://emu/_apis/oauth2/token".into());
            ApiResponse::Agent(agent)
        }
        ApiRequest::Token(_) => ApiResponse::Token(TokenResponse {
            access_token: "listener-token".into(),
            token_type: "Bearer".into(),
            expires_in: 3600,
            scope: String::new(),
            refresh_token: None,
        }),
        _ if anonymous => error(ErrorKind::Unauthorized),
        ApiRequest::CreateSession { session, .. } => {
            let mut s = session.clone();
            s.session_id = "session-1".into();
            ApiResponse::Session(s)
        }
        ApiRequest::GetMessage { .. } => ApiResponse::NoMessage,
        ApiRequest::DeleteMessage { .. } | ApiRequest::DeleteSession { .. } => {
            ApiResponse::NoContent
        }
        ApiRequest::UpdateJobRequest { request_id, .. } => {
            ApiResponse::JobRequest(Box::new(TaskAgentJobRequest {
                request_id: *request_id,
                ..Default::default()
            }))
        }
        ApiRequest::CreateLog { log, .. } => ApiResponse::Log(TaskLog {
            id: 5,
            path: log.path.clone(),
            line_count: 0,
            location: String::new(),
            created_on: None,
        }),
        _ => ApiResponse::Ok,
    })
}

/// `happy`, but long polls are held (never answered) so time can pass without polling.
fn holding(now: SimTime, req: &Request) -> Option<ApiResponse> {
    match req.call {
        ApiRequest::GetMessage { .. } => None,
        _ => happy(now, req),
    }
}

/// A job message with one synthetic step.
fn job_message(
    duration_ms: u64,
    lines: u32,
    secret_lines: u32,
    fail: bool,
) -> AgentJobRequestMessage {
    let mut inputs = BTreeMap::new();
    inputs.insert(
        crate::job::inputs::DURATION_MS.to_string(),
        duration_ms.to_string(),
    );
    inputs.insert(crate::job::inputs::LOG_LINES.to_string(), lines.to_string());
    inputs.insert(
        crate::job::inputs::SECRET_LINES.to_string(),
        secret_lines.to_string(),
    );
    inputs.insert(
        crate::job::inputs::ARTIFACT_BYTES.to_string(),
        "2048".to_string(),
    );
    if fail {
        inputs.insert(crate::job::inputs::FAIL.to_string(), "true".to_string());
    }
    let mut variables = BTreeMap::new();
    variables.insert(
        "db.password".to_string(),
        VariableValue {
            value: SECRET.into(),
            is_secret: true,
            is_read_only: false,
        },
    );
    let mut parameters = BTreeMap::new();
    parameters.insert(
        proto::ACCESS_TOKEN_PARAMETER.to_string(),
        "job-token-1".to_string(),
    );
    AgentJobRequestMessage {
        message_type: proto::MESSAGE_JOB_REQUEST.into(),
        plan: PlanReference {
            scope_identifier: "scope".into(),
            plan_type: "Build".into(),
            plan_id: "plan-1".into(),
            version: 9,
        },
        timeline: TimelineReference {
            id: "timeline-1".into(),
            change_id: 0,
        },
        job_id: "job-1".into(),
        job_display_name: "job".into(),
        job_name: "job".into(),
        request_id: 11,
        lock_token: String::new(),
        locked_until: None,
        resources: JobResources {
            endpoints: vec![ServiceEndpoint {
                name: proto::SYSTEM_VSS_CONNECTION.into(),
                url: "http://emu".into(),
                authorization: proto::EndpointAuthorization {
                    scheme: "OAuth".into(),
                    parameters,
                },
                data: BTreeMap::new(),
            }],
        },
        variables,
        mask: vec![MaskHint {
            kind: "value".into(),
            value: "hint-secret".into(),
        }],
        steps: vec![JobStep {
            kind: "task".into(),
            reference: TaskReference {
                id: "t".into(),
                name: proto::SYNTHETIC_TASK_NAME.into(),
                version: "1.0.0".into(),
            },
            inputs,
            id: "step-1".into(),
            name: "step".into(),
            display_name: "Step 1".into(),
            condition: String::new(),
        }],
    }
}

/// The job message as a plaintext long-poll answer.
fn job_delivery(msg: &AgentJobRequestMessage) -> ApiResponse {
    ApiResponse::Message(TaskAgentMessage {
        message_id: 1,
        message_type: proto::MESSAGE_JOB_REQUEST.into(),
        iv: String::new(),
        body: serde_json::to_string(msg).unwrap(),
    })
}

/// A rig registered and listening (its first long poll is pending).
fn listening(config: AgentConfig) -> Rig {
    let mut rig = Rig::new(config);
    rig.run_until(SimTime::from_secs(1), &mut holding);
    assert!(
        rig.pending_on(Connection::Listener)
            .is_some_and(|p| p.op == Operation::PollMessage)
    );
    rig
}

/// Answer the pending listener poll with `resp`.
fn answer_poll(rig: &mut Rig, resp: ApiResponse) {
    let poll = rig
        .pending_on(Connection::Listener)
        .expect("a pending poll")
        .clone();
    rig.pending.retain(|p| p.id != poll.id);
    rig.agent.handle_response(rig.now, poll.id, resp);
    rig.drain();
}

// Goal: registration follows config.sh (connectionData, pool, agent lookup, register with the
// PAT as Basic "VstsAgent"), then the listener's first call goes out anonymously, meets the 401
// challenge, mints a token and retries with Bearer before creating the session.
#[test]
fn registration_then_anonymous_challenge_then_bearer_session() {
    let mut rig = listening(modelled());
    let ops = rig.ops();
    assert_eq!(
        &ops[..8],
        &[
            Operation::ConnectionData,
            Operation::PoolLookup,
            Operation::AgentLookup,
            Operation::Register,
            Operation::ConnectionData,
            Operation::TokenExchange,
            Operation::ConnectionData,
            Operation::SessionCreate,
        ]
    );
    let basic = Credential::Basic {
        user: "VstsAgent".into(),
        password: "pat-1".into(),
    };
    assert!(rig.sent[..4].iter().all(|s| s.request.credential == basic));
    let ApiRequest::AddAgent { agent, .. } = &rig.sent[3].request.call else {
        panic!()
    };
    assert!(
        agent
            .authorization
            .as_ref()
            .and_then(|a| a.public_key.as_ref())
            .is_some()
    );
    assert_eq!(rig.sent[4].request.credential, Credential::Anonymous);
    assert_eq!(rig.sent[5].request.credential, Credential::Anonymous);
    assert_eq!(
        rig.sent[6].request.credential,
        Credential::Bearer("listener-token".into())
    );
    let challenge = rig.events.iter().any(|e| {
        matches!(
            e,
            Event::Op {
                op: Operation::AuthChallenge,
                outcome: Outcome::Ok,
                ..
            }
        )
    });
    assert!(challenge, "the 401 challenge is recorded as AuthChallenge");
    rig.drain();
    assert_eq!(rig.agent.state(), AgentState::Idle);
}

// Goal: the assertion carries iss = sub = clientId, aud = authorizationUrl, nbf = now (wall),
// exp = nbf + 5 min, and a real key signs it verifiably.
#[test]
fn minted_assertion_has_the_real_claims_and_verifies() {
    let key = Arc::new(PrivateKey::generate(2048).unwrap());
    let config = AgentConfig {
        pat: "pat-1".into(),
        ..AgentConfig::default()
    };
    let mut rig = Rig::with_key(config, Some(key.clone()));
    rig.run_until(SimTime::from_secs(1), &mut holding);
    let token = rig
        .sent
        .iter()
        .find(|s| s.op == Operation::TokenExchange)
        .unwrap();
    let ApiRequest::Token(TokenGrant::ClientCredentials {
        client_assertion,
        client_assertion_type,
    }) = &token.request.call
    else {
        panic!("not a client-credentials grant")
    };
    assert_eq!(client_assertion_type, JWT_BEARER_ASSERTION_TYPE);
    let nbf = 1_700_000_000;
    let claims = crypto::jwt::verify(
        client_assertion,
        &key.public_key(),
        "http://emu/_apis/oauth2/token",
        nbf,
        0,
    )
    .unwrap();
    assert_eq!(
        (claims.iss.as_str(), claims.sub.as_str()),
        ("client-7", "client-7")
    );
    assert_eq!((claims.nbf, claims.exp), (nbf, nbf + 300));
    let signs = rig.events.iter().filter(|e| {
        matches!(
            e,
            Event::Crypto {
                op: CryptoOp::Rs256Sign,
                ..
            }
        )
    });
    assert_eq!(signs.count(), 1);
}

// Goal: after an empty long poll the next poll waits U(5,15) s, never less, never more.
#[test]
fn empty_poll_is_followed_by_a_five_to_fifteen_second_gap() {
    let mut rig = listening(AgentConfig {
        pacing: Pacing {
            keepalive: false,
            ..modelled().pacing
        },
        ..modelled()
    });
    let mut gaps = Vec::new();
    for _ in 0..200 {
        let before = rig.now;
        answer_poll(&mut rig, ApiResponse::NoMessage);
        let (at, timer) = rig.agent.poll_timeout().unwrap();
        assert_eq!(timer, Timer::PollGap);
        rig.run_until(at, &mut holding);
        let poll = rig.pending_on(Connection::Listener).unwrap();
        assert_eq!(poll.op, Operation::PollMessage);
        gaps.push((poll.at - before).as_secs_f64());
    }
    assert!(gaps.iter().all(|g| (5.0..=15.0).contains(g)), "{gaps:?}");
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!((9.0..11.0).contains(&mean), "mean gap {mean}");
    let empties = rig.events.iter().filter(|e| {
        matches!(
            e,
            Event::Op {
                op: Operation::PollEmpty,
                ..
            }
        )
    });
    assert_eq!(empties.count(), 200);
}

// Goal: listener errors back off U(15,30) s for the first five in a row, then U(30,60) s, and
// the agent reports itself offline while it backs off.
#[test]
fn error_backoff_is_short_for_five_errors_then_long() {
    let mut rig = listening(AgentConfig {
        pacing: Pacing {
            keepalive: false,
            ..modelled().pacing
        },
        ..modelled()
    });
    let mut delays = Vec::new();
    for _ in 0..8 {
        let start = rig.now;
        answer_poll(&mut rig, error(ErrorKind::Unavailable));
        assert_eq!(rig.agent.state(), AgentState::Offline);
        let (at, timer) = rig.agent.poll_timeout().unwrap();
        assert_eq!(timer, Timer::Backoff);
        delays.push((at - start).as_secs_f64());
        rig.run_until(at, &mut holding);
    }
    assert!(
        delays[..5].iter().all(|d| (15.0..=30.0).contains(d)),
        "{delays:?}"
    );
    assert!(
        delays[5..].iter().all(|d| (30.0..=60.0).contains(d)),
        "{delays:?}"
    );
    answer_poll(&mut rig, ApiResponse::NoMessage);
    assert_eq!(rig.agent.state(), AgentState::Idle);
}

// Goal: the keep-alive poll runs in parallel on its own connection, 30 s after each return: with
// the server holding polls 50 s, one every 80 s (as seen in the real agent's logs).
#[test]
fn keepalive_runs_thirty_seconds_after_each_return() {
    let mut rig = listening(modelled());
    rig.run_until(SimTime::from_secs(400), &mut holding);
    let kas: Vec<_> = rig
        .sent
        .iter()
        .filter(|s| s.op == Operation::KeepAlive)
        .collect();
    assert!(kas.len() >= 4, "{} keep-alives", kas.len());
    for w in kas.windows(2) {
        assert_eq!(w[1].at - w[0].at, HOLD + Duration::from_secs(30));
    }
    for ka in &kas {
        assert_eq!(ka.conn, Connection::KeepAlive);
        assert!(matches!(
            ka.request.call,
            ApiRequest::GetMessage {
                last_message_id: None,
                ..
            }
        ));
    }
    let polls = rig.sent_times(Operation::PollMessage);
    assert!(polls.len() >= 6, "the main poll goes on meanwhile");
}

// Goal: a session conflict is retried every 30 s and the agent gives up (stops) once conflicts
// have lasted 4 minutes.
#[test]
fn session_conflict_retries_every_thirty_seconds_within_budget() {
    let mut rig = Rig::new(modelled());
    let mut fake = |now: SimTime, req: &Request| match req.call {
        ApiRequest::CreateSession { .. } if req.credential != Credential::Anonymous => {
            Some(error(ErrorKind::SessionConflict))
        }
        _ => happy(now, req),
    };
    rig.run_until(SimTime::from_secs(600), &mut fake);
    let tries = rig.sent_times(Operation::SessionCreate);
    for w in tries.windows(2) {
        assert_eq!(w[1] - w[0], Duration::from_secs(30));
    }
    assert_eq!(
        tries.len(),
        9,
        "0 s, 30 s, … 240 s, then the budget is spent"
    );
    assert!(rig.agent.is_stopped());
    assert_eq!(rig.agent.state(), AgentState::Offline);
    assert!(rig.agent.poll_timeout().is_none());
}

// Goal: a 401 on a Bearer call mid-run re-mints the listener token (a fresh assertion) and
// retries the same call; more than 3 retries in a row stop the agent.
#[test]
fn unauthorized_mid_run_re_mints_then_gives_up_after_three() {
    let mut rig = listening(AgentConfig {
        pacing: Pacing {
            keepalive: false,
            ..modelled().pacing
        },
        ..modelled()
    });
    answer_poll(&mut rig, error(ErrorKind::Unauthorized));
    rig.run_until(rig.now, &mut holding);
    let mints = rig.sent_times(Operation::TokenExchange);
    assert_eq!(mints.len(), 2, "one at start, one after the 401");
    assert!(
        rig.pending_on(Connection::Listener)
            .is_some_and(|p| p.op == Operation::PollMessage)
    );
    let assertions: Vec<_> = rig
        .sent
        .iter()
        .filter_map(|s| match &s.request.call {
            ApiRequest::Token(TokenGrant::ClientCredentials {
                client_assertion, ..
            }) => Some(client_assertion.clone()),
            _ => None,
        })
        .collect();
    assert_ne!(
        assertions[0], assertions[1],
        "each mint is a fresh assertion (new jti)"
    );
    // The first 401 above was answered by retry 1; retries 2 and 3 meet 401 too, and the
    // fourth 401 in a row is final.
    for _ in 0..3 {
        assert!(!rig.agent.is_stopped());
        answer_poll(&mut rig, error(ErrorKind::Unauthorized));
        rig.run_until(rig.now, &mut holding);
    }
    assert!(
        rig.agent.is_stopped(),
        "VssUnauthorizedException after 3 auth retries"
    );
}

// Goal: a job runs end to end on the job connection: lock renewed first, record InProgress,
// log created, lines fed in ≤100-line batches, log uploaded, artifact attached, record
// Completed, JobCompleted posted with the job token; the job token is then discarded.
#[test]
fn job_runs_to_completion_with_every_plan_call() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, job_delivery(&job_message(20_000, 450, 10, false)));
    assert_eq!(rig.agent.state(), AgentState::Busy);
    rig.run_until(SimTime::from_secs(120), &mut holding);
    let job_ops: Vec<_> = rig
        .sent
        .iter()
        .filter(|s| s.conn == Connection::Job)
        .map(|s| s.op)
        .collect();
    assert_eq!(job_ops[0], Operation::LockRenew);
    for op in [
        Operation::TimelineUpdate,
        Operation::LogCreate,
        Operation::FeedPost,
        Operation::LogAppend,
        Operation::AttachmentUpload,
    ] {
        assert!(job_ops.contains(&op), "{op:?} missing from {job_ops:?}");
    }
    assert_eq!(job_ops.last(), Some(&Operation::JobCompleted));
    let mut fed = 0;
    for s in rig.sent.iter().filter(|s| s.op == Operation::FeedPost) {
        let ApiRequest::AppendFeed { feed, .. } = &s.request.call else {
            panic!()
        };
        assert!(feed.value.len() <= 100 && feed.count == feed.value.len());
        assert_eq!(
            s.request.credential,
            Credential::Bearer("job-token-1".into())
        );
        fed += feed.value.len();
    }
    assert_eq!(fed, 450);
    let finished = rig.events.iter().find_map(|e| match e {
        Event::JobFinished {
            request_id, result, ..
        } => Some((*request_id, *result)),
        _ => None,
    });
    assert_eq!(finished, Some((11, TaskResult::Succeeded)));
    assert!(
        rig.events
            .iter()
            .any(|e| matches!(e, Event::JobPickedUp { request_id: 11, .. }))
    );
    assert_eq!(rig.agent.state(), AgentState::Idle);
    assert!(
        rig.agent.job.is_none(),
        "the job token is discarded with the job"
    );
    let ack = rig.sent.iter().any(|s| {
        matches!(
            s.request.call,
            ApiRequest::DeleteMessage { message_id: 1, .. }
        )
    });
    assert!(ack, "the message is acknowledged");
}

// Goal: a job message that arrives while the previous job is still finishing (the server
// assigns the next one as soon as it has the completion, and the listener can read it before
// the completion's answer) is run after the current job, as the real agent's JobDispatcher
// does — never acknowledged and dropped, which left the server holding a job nobody ran.
#[test]
fn a_job_delivered_while_one_is_finishing_runs_next() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, job_delivery(&job_message(2_000, 5, 0, false)));
    assert_eq!(rig.agent.state(), AgentState::Busy);
    rig.run_until(rig.now + Duration::from_millis(500), &mut holding);
    let mut second = job_message(2_000, 5, 0, false);
    second.request_id = 12;
    second.job_id = "job-12".into();
    let delivery = ApiResponse::Message(TaskAgentMessage {
        message_id: 2,
        message_type: proto::MESSAGE_JOB_REQUEST.into(),
        iv: String::new(),
        body: serde_json::to_string(&second).unwrap(),
    });
    answer_poll(&mut rig, delivery);
    rig.run_until(SimTime::from_secs(120), &mut holding);
    let finished: Vec<_> = rig
        .events
        .iter()
        .filter_map(|e| match e {
            Event::JobFinished {
                request_id, result, ..
            } => Some((*request_id, *result)),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        vec![(11, TaskResult::Succeeded), (12, TaskResult::Succeeded)]
    );
    assert_eq!(rig.agent.state(), AgentState::Idle);
}

/// Every line the agent sent in feeds and log uploads.
fn sent_text(rig: &Rig) -> String {
    let mut text = String::new();
    for s in &rig.sent {
        match &s.request.call {
            ApiRequest::AppendFeed { feed, .. } => {
                text.extend(feed.value.iter().map(|l| format!("{l}\n")))
            }
            ApiRequest::AppendLog { content, .. } => {
                text.push_str(&String::from_utf8_lossy(content))
            }
            _ => {}
        }
    }
    text
}

// Goal: secret values (and their base64 form) are masked before a line leaves the agent; with
// masking off they leave in clear (which is how the emulator's leak counter is tested).
#[test]
fn secrets_are_masked_before_send_unless_masking_is_off() {
    let b64 = STANDARD.encode(SECRET);
    let mut masked = listening(modelled());
    answer_poll(
        &mut masked,
        job_delivery(&job_message(5_000, 100, 20, false)),
    );
    masked.run_until(SimTime::from_secs(60), &mut holding);
    let text = sent_text(&masked);
    assert!(text.contains("***"), "{text}");
    assert!(
        !text.contains(SECRET) && !text.contains(&b64),
        "a secret left the agent"
    );
    let count: u32 = masked
        .events
        .iter()
        .map(|e| {
            if let Event::SecretsMasked { count, .. } = e {
                *count
            } else {
                0
            }
        })
        .sum();
    assert_eq!(count, 20);

    let mut leaky = listening(AgentConfig {
        mask_secrets: false,
        ..modelled()
    });
    answer_poll(
        &mut leaky,
        job_delivery(&job_message(5_000, 100, 20, false)),
    );
    leaky.run_until(SimTime::from_secs(60), &mut holding);
    let text = sent_text(&leaky);
    assert!(text.contains(SECRET) && text.contains(&b64));
}

// Goal: under a flood of output the live console is bounded (at most 5 batches of 100 lines per
// tick, older lines dropped) while the uploaded log keeps every line.
#[test]
fn feed_is_bounded_under_a_flood_while_the_log_keeps_every_line() {
    let mut rig = listening(modelled());
    answer_poll(
        &mut rig,
        job_delivery(&job_message(2_000, 20_000, 0, false)),
    );
    rig.run_until(SimTime::from_secs(60), &mut holding);
    let mut fed = 0;
    for s in rig.sent.iter().filter(|s| s.op == Operation::FeedPost) {
        let ApiRequest::AppendFeed { feed, .. } = &s.request.call else {
            panic!()
        };
        assert!(feed.value.len() <= 100);
        fed += feed.value.len();
    }
    let logged: usize = rig
        .sent
        .iter()
        .map(|s| match &s.request.call {
            ApiRequest::AppendLog { content, .. } => {
                content.iter().filter(|&&b| b == b'\n').count()
            }
            _ => 0,
        })
        .sum();
    assert_eq!(logged, 20_000, "the log keeps every line");
    assert!(
        fed < 5_000,
        "the console dropped lines under pressure ({fed} fed)"
    );
    assert!(
        rig.events
            .iter()
            .any(|e| matches!(e, Event::JobFinished { .. }))
    );
}

// Goal: the lock is renewed every 60 s while a long job runs.
#[test]
fn lock_is_renewed_every_sixty_seconds_during_a_long_job() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, job_delivery(&job_message(300_000, 10, 0, false)));
    rig.run_until(SimTime::from_secs(400), &mut holding);
    let renews = rig.sent_times(Operation::LockRenew);
    assert!(renews.len() >= 5, "{renews:?}");
    for w in renews.windows(2) {
        assert_eq!(w[1] - w[0], Duration::from_secs(60));
    }
}

// Goal: the first renewal is tried at most 5 times, 1–10 s apart; then the job is abandoned
// without any worker call.
#[test]
fn first_renewal_is_retried_five_times_then_the_job_is_abandoned() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, job_delivery(&job_message(5_000, 10, 0, false)));
    let mut fake = |now: SimTime, req: &Request| match req.call {
        ApiRequest::UpdateJobRequest { .. } => Some(error(ErrorKind::Unavailable)),
        _ => holding(now, req),
    };
    rig.run_until(SimTime::from_secs(120), &mut fake);
    let renews = rig.sent_times(Operation::LockRenew);
    assert_eq!(renews.len(), 5);
    for w in renews.windows(2) {
        let gap = (w[1] - w[0]).as_secs_f64();
        assert!((1.0..=10.0).contains(&gap), "{gap}");
    }
    assert!(!rig.ops().contains(&Operation::TimelineUpdate));
    let result = rig.events.iter().find_map(|e| match e {
        Event::JobFinished { result, .. } => Some(*result),
        _ => None,
    });
    assert_eq!(result, Some(TaskResult::Abandoned));
}

// Goal: the completion event is tried 5 times, 5 s apart, and a failing step fails the job.
#[test]
fn completion_is_retried_five_times_five_seconds_apart() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, job_delivery(&job_message(1_000, 5, 0, true)));
    let mut fake = |now: SimTime, req: &Request| match req.call {
        ApiRequest::PostEvent { .. } => Some(error(ErrorKind::Unavailable)),
        _ => holding(now, req),
    };
    rig.run_until(SimTime::from_secs(120), &mut fake);
    let tries = rig.sent_times(Operation::JobCompleted);
    assert_eq!(tries.len(), 5);
    for w in tries.windows(2) {
        assert_eq!(w[1] - w[0], Duration::from_secs(5));
    }
    let ApiRequest::PostEvent { event, .. } = &rig
        .sent
        .iter()
        .find(|s| s.op == Operation::JobCompleted)
        .unwrap()
        .request
        .call
    else {
        panic!()
    };
    assert_eq!(event.result, Some(TaskResult::Failed));
}

// Goal: a JobCancellation ends the running step at once and reports the job canceled.
#[test]
fn cancellation_ends_the_job_as_canceled() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, job_delivery(&job_message(600_000, 100, 0, false)));
    rig.run_until(rig.now + Duration::from_secs(10), &mut holding);
    let body = serde_json::to_string(&JobCancelMessage {
        job_id: "job-1".into(),
        timeout: "00:05:00".into(),
    })
    .unwrap();
    let cancel = TaskAgentMessage {
        message_id: 2,
        message_type: proto::MESSAGE_JOB_CANCELLATION.into(),
        iv: String::new(),
        body,
    };
    answer_poll(&mut rig, ApiResponse::Message(cancel));
    rig.run_until(rig.now + Duration::from_secs(30), &mut holding);
    let result = rig.events.iter().find_map(|e| match e {
        Event::JobFinished { result, .. } => Some(*result),
        _ => None,
    });
    assert_eq!(result, Some(TaskResult::Canceled));
}

// Goal: job-token rotation happens `rotate_before` ahead of the hinted expiry, switches the
// bearer of later calls, and emits TokenRotated.
#[test]
fn job_token_is_rotated_before_expiry_and_used_afterwards() {
    let config = AgentConfig {
        job_token_ttl_hint: Some(Duration::from_secs(60)),
        job_token_rotate_before: Some(Duration::from_secs(20)),
        ..modelled()
    };
    let mut rig = listening(config);
    answer_poll(&mut rig, job_delivery(&job_message(90_000, 200, 0, false)));
    let picked = rig.now;
    let mut fake = |now: SimTime, req: &Request| match &req.call {
        ApiRequest::Token(TokenGrant::Refresh { refresh_token }) => {
            assert_eq!(refresh_token, "job-token-1");
            Some(ApiResponse::Token(TokenResponse {
                access_token: "job-token-2".into(),
                token_type: "Bearer".into(),
                expires_in: 3600,
                scope: String::new(),
                refresh_token: None,
            }))
        }
        _ => holding(now, req),
    };
    rig.run_until(SimTime::from_secs(200), &mut fake);
    let rotations = rig.sent_times(Operation::TokenRotate);
    assert_eq!(rotations.len(), 1);
    let offset = (rotations[0] - picked).as_secs_f64();
    assert!(
        (40.0..41.0).contains(&offset),
        "rotated {offset} s after pickup"
    );
    assert!(
        rig.events
            .iter()
            .any(|e| matches!(e, Event::TokenRotated { .. }))
    );
    let last = rig
        .sent
        .iter()
        .rfind(|s| s.op == Operation::JobCompleted)
        .unwrap();
    assert_eq!(
        last.request.credential,
        Credential::Bearer("job-token-2".into())
    );
}

// Goal: a call unanswered past its client timeout is cancelled (the driver is told) and treated
// as an error: the listener backs off.
#[test]
fn unanswered_call_times_out_cancels_and_backs_off() {
    let mut rig = listening(AgentConfig {
        pacing: Pacing {
            keepalive: false,
            ..modelled().pacing
        },
        ..modelled()
    });
    rig.hold = None;
    let poll = rig.pending_on(Connection::Listener).unwrap().clone();
    rig.run_until(poll.at + Duration::from_secs(100), &mut |_, _| None);
    assert!(rig.cancelled.contains(&poll.id));
    let timed_out = rig.events.iter().any(|e| {
        matches!(
            e,
            Event::Op {
                outcome: Outcome::Timeout,
                ..
            }
        )
    });
    assert!(timed_out);
    assert_eq!(rig.agent.poll_timeout().map(|t| t.1), Some(Timer::Backoff));
    // A late answer to the cancelled call is ignored.
    rig.agent
        .handle_response(rig.now, poll.id, ApiResponse::NoMessage);
    rig.drain();
    assert_eq!(rig.agent.poll_timeout().map(|t| t.1), Some(Timer::Backoff));
}

// Goal: shutdown cancels the held poll, deletes the session, then stops for good.
#[test]
fn shutdown_deletes_the_session_then_stops() {
    let mut rig = listening(modelled());
    let poll = rig.pending_on(Connection::Listener).unwrap().id;
    rig.agent.shutdown(rig.now);
    rig.drain();
    assert!(rig.cancelled.contains(&poll));
    assert!(
        rig.pending_on(Connection::Listener)
            .is_some_and(|p| p.op == Operation::SessionDelete)
    );
    rig.run_until(rig.now + Duration::from_secs(1), &mut happy);
    assert!(rig.agent.is_stopped());
    assert!(rig.agent.poll_timeout().is_none());
    assert_eq!(rig.agent.state(), AgentState::Offline);
}

// Goal: shutting down mid-job records the job as abandoned (never silently lost).
#[test]
fn shutdown_mid_job_reports_the_job_abandoned() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, job_delivery(&job_message(60_000, 10, 0, false)));
    rig.run_until(rig.now + Duration::from_secs(5), &mut holding);
    rig.agent.shutdown(rig.now);
    rig.drain();
    let result = rig.events.iter().find_map(|e| match e {
        Event::JobFinished { result, .. } => Some(*result),
        _ => None,
    });
    assert_eq!(result, Some(TaskResult::Abandoned));
}

// Goal: fatal listener errors stop the agent with a state event.
#[test]
fn agent_not_found_is_fatal() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, error(ErrorKind::AgentNotFound));
    assert!(rig.agent.is_stopped());
    let last_state = rig.events.iter().rev().find_map(|e| match e {
        Event::AgentState { to, .. } => Some(*to),
        _ => None,
    });
    assert_eq!(last_state, Some(AgentState::Offline));
}

// Goal: an expired session is replaced by a new one without re-registering.
#[test]
fn session_expired_creates_a_new_session() {
    let mut rig = listening(modelled());
    answer_poll(&mut rig, error(ErrorKind::SessionExpired));
    rig.run_until(rig.now, &mut holding);
    assert_eq!(
        rig.sent_times(Operation::SessionCreate).len(),
        2,
        "the first and the new one"
    );
    assert_eq!(rig.sent_times(Operation::Register).len(), 1);
    assert!(
        rig.pending_on(Connection::Listener)
            .is_some_and(|p| p.op == Operation::PollMessage)
    );
}

// Goal: register_mode = replace PUTs the existing agent instead of failing on the duplicate.
#[test]
fn replace_mode_puts_the_existing_agent() {
    let mut rig = Rig::new(AgentConfig {
        register_mode: RegisterMode::Replace,
        ..modelled()
    });
    let mut fake = |now: SimTime, req: &Request| match &req.call {
        ApiRequest::ListAgents { agent_name, .. } => {
            let agent = TaskAgent {
                id: 3,
                name: agent_name.clone().unwrap(),
                ..Default::default()
            };
            Some(ApiResponse::Agents(proto::ListOf::new(vec![agent])))
        }
        _ => holding(now, req),
    };
    rig.run_until(SimTime::from_secs(1), &mut fake);
    let replace = rig
        .sent
        .iter()
        .find(|s| s.op == Operation::ReplaceAgent)
        .unwrap();
    assert!(matches!(
        replace.request.call,
        ApiRequest::ReplaceAgent { agent_id: 3, .. }
    ));
    assert!(!rig.ops().contains(&Operation::Register));

    let mut dup = Rig::new(modelled());
    dup.run_until(SimTime::from_secs(1), &mut fake);
    assert!(
        dup.agent.is_stopped(),
        "a duplicate name without replace is fatal"
    );
}

// Goal: an idle agent stays small (the virtual-time driver holds up to 10^6 of them).
#[test]
fn idle_agent_is_a_few_hundred_bytes() {
    let size = std::mem::size_of::<Agent>();
    assert!(size <= 512, "Agent is {size} bytes");
    let rig = listening(modelled());
    assert_eq!(
        rig.agent.outbox.capacity(),
        0,
        "drained buffers are released"
    );
}

// Goal: the same seed gives the same calls and events; another seed gives different timing.
#[test]
fn same_seed_same_trace() {
    let run = |seed: u64| {
        let config = Arc::new(modelled());
        let agent = Agent::new(
            3,
            config,
            None,
            rng::stream(seed, StreamKind::Agent, 3),
            SimTime::ZERO,
            0,
        );
        let mut rig = Rig {
            agent,
            now: SimTime::ZERO,
            pending: vec![],
            sent: vec![],
            cancelled: vec![],
            events: vec![],
            hold: Some(HOLD),
        };
        rig.drain();
        rig.run_until(SimTime::from_secs(300), &mut happy);
        format!("{:?}", rig.events)
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

// Goal: a 2xx the call cannot use is a protocol error (recorded as such), handled like a
// failure: the agent backs off instead of trusting it.
#[test]
fn wrong_answer_shape_is_a_protocol_error() {
    let mut rig = Rig::new(modelled());
    let mut fake = |now: SimTime, req: &Request| match req.call {
        ApiRequest::ListPools { .. } => Some(ApiResponse::NoContent),
        _ => happy(now, req),
    };
    rig.run_until(SimTime::from_secs(1), &mut fake);
    let protocol = rig.events.iter().any(|e| {
        matches!(
            e,
            Event::Op {
                op: Operation::PoolLookup,
                outcome: Outcome::Protocol,
                ..
            }
        )
    });
    assert!(protocol);
    assert_eq!(rig.agent.poll_timeout().map(|t| t.1), Some(Timer::Backoff));
    assert!(!rig.agent.is_stopped());
}

// Goal: whatever a hostile or broken server answers (any error kind, wrong answer shapes,
// transport failures, garbage message bodies, silence), the agent never panics, never holds two
// calls on one connection, and always has a next deadline or a call in flight (no silent hang).
#[test]
fn random_server_behaviour_never_panics_or_wedges_the_agent() {
    use rand::Rng as _;
    let (mut calls_total, mut jobs_total) = (0, 0);
    for seed in 0..30u64 {
        let mut chaos = rng::stream(seed, StreamKind::Faults, 0);
        let config = AgentConfig {
            job_token_ttl_hint: Some(Duration::from_secs(30)),
            job_token_rotate_before: Some(Duration::from_secs(10)),
            ..modelled()
        };
        let mut rig = Rig::new(config);
        let kinds = crate::api::ALL_ERROR_KINDS;
        // Errors an agent survives, so runs go deep; fatal ones come from `kinds` rarely.
        let survivable = [
            ErrorKind::Unavailable,
            ErrorKind::Throttled,
            ErrorKind::BadRequest,
            ErrorKind::SessionExpired,
            ErrorKind::SessionConflict,
            ErrorKind::JobNotFound,
            ErrorKind::PlanNotFound,
            ErrorKind::Unauthorized,
        ];
        for _ in 0..3_000 {
            if rig.agent.is_stopped() {
                break;
            }
            if let Some(call) = rig.pending.first().cloned() {
                rig.pending.remove(0);
                let roll = chaos.random_range(0..100);
                let resp = match roll {
                    0..=49 => happy(rig.now, &call.request).unwrap_or(ApiResponse::Ok),
                    50..=59 => {
                        job_delivery(&job_message(chaos.random_range(0..20_000), 50, 5, false))
                    }
                    60..=64 => ApiResponse::Message(TaskAgentMessage {
                        message_id: chaos.random(),
                        message_type: proto::MESSAGE_JOB_REQUEST.into(),
                        iv: "!!".into(),
                        body: "{not json".into(),
                    }),
                    65..=83 => error(survivable[chaos.random_range(0..survivable.len())]),
                    84 => error(kinds[chaos.random_range(0..kinds.len())]),
                    85..=89 => ApiResponse::NoContent,
                    _ => {
                        rig.now += Duration::from_millis(chaos.random_range(0..5_000));
                        rig.agent
                            .handle_transport_error(rig.now, call.id, TransportError::Reset);
                        rig.drain();
                        continue;
                    }
                };
                rig.now += Duration::from_millis(chaos.random_range(0..2_000));
                rig.agent.handle_response(rig.now, call.id, resp);
                rig.drain();
            } else {
                let (at, _) = rig
                    .agent
                    .poll_timeout()
                    .expect("a live agent with no call in flight has a deadline");
                rig.now = rig.now.max(at);
                rig.agent.handle_timeout(rig.now);
                rig.drain();
            }
        }
        calls_total += rig.sent.len();
        jobs_total += rig
            .events
            .iter()
            .filter(|e| matches!(e, Event::JobFinished { .. }))
            .count();
    }
    // The runs went deep enough to mean something.
    assert!(
        calls_total > 10_000 && jobs_total > 50,
        "{calls_total} calls, {jobs_total} jobs"
    );
}

mod addressing;
/// Real job messages (Checkout, CmdLine, …) against the same fake server.
#[path = "tests_real_steps.rs"]
mod real_steps;
