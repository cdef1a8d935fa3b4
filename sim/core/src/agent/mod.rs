//! The virtual agent: a sans-IO state machine that behaves like the real Azure Pipelines agent
//! (protocol.md §1–§7, timers per §10), shared by the live driver (tokio) and the virtual-time
//! driver.
//!
//! Life of an agent: registration with the PAT (connectionData, pool lookup, agent lookup,
//! register or replace), then the listener: the first listener call goes out anonymously, the
//! 401 challenge makes it mint an RS256 client assertion and exchange it for a listener token,
//! then it creates a session (unwrapping the AES session key), long-polls for messages with the
//! gap after an empty poll, runs a parallel keep-alive poll, backs off on errors, acknowledges
//! messages, and runs jobs (`job` module) on a third connection.
//!
//! Connections: the listener's calls (registration, token, session, long poll, acks) go on
//! [`Connection::Listener`], the keep-alive poll on [`Connection::KeepAlive`], and lock renewals
//! plus the worker's plan-hub calls on [`Connection::Job`]; at most one call is in flight on
//! each, and the agent keeps each call's client timeout itself (a timed-out call is cancelled
//! through [`AgentOutput::Cancel`]).
//!
//! Beyond the real agent: job-token rotation (`AgentConfig::job_token_rotate_before`), and a
//! job dropped by shutdown or a fatal error is reported as `Abandoned` so the fleet's job counts
//! always add up. Modelled crypto (no key) sends an unsigned assertion and reads plaintext
//! message bodies, counting each crypto operation with 0 ns.
//!
//! This module never does IO, never reads a clock and never uses a global RNG: time is an
//! argument, randomness comes from the agent's own seeded stream, and requests leave as typed
//! values through [`Agent::poll_transmit`].

mod config;
mod job;
mod masking;
mod steps;
mod timer;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub use config::{AgentConfig, CHECKOUT_TASK_NAME, Pacing, RegisterMode, StepModel, TaskModel};
pub use timer::{Connection, Timer};

use crate::SimTime;
use crate::api::{ApiRequest, ApiResponse, Credential, Endpoint, ErrorKind, Request, TokenGrant};
use crate::crypto::{self, CryptoMode, PrivateKey};
use crate::event::{CryptoOp, Event, Outcome, Side, TransportError};
use crate::ops::{AgentState, Operation};
use crate::proto::{
    self, AgentJobRequestMessage, EMPTY_GUID, JobCancelMessage, TaskAgent, TaskAgentAuthorization,
    TaskAgentMessage, TaskAgentPublicKey, TaskAgentReference, TaskAgentSession,
};
use crate::rng::{self, Rng};
use job::{JobCall, JobCtx, JobRun, JobStatus};
use timer::{AGENT_TIMERS, TimerTable};

/// Identifies one call of one agent; the driver hands it back with the answer.
pub type CallId = u64;

/// The `client_assertion_type` of the client-credentials grant.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The largest message body the agent decodes (base64 text); bigger bodies are a protocol error.
const MESSAGE_BODY_MAX: usize = 16 * 1024 * 1024;

/// What the agent asks its driver to do.
// `Send` is the common variant and is moved straight to the driver; boxing it would add an
// allocation per call to save bytes on the rare `Cancel`.
#[allow(clippy::large_enum_variant)]
#[must_use]
#[derive(Clone, Debug, PartialEq)]
pub enum AgentOutput {
    /// Send `request` to `endpoint` on connection `conn` and report the answer with `id`
    /// through [`Agent::handle_response`] or [`Agent::handle_transport_error`]. The agent never
    /// has two calls in flight on one connection; a driver that keeps connections per origin
    /// opens another one when `endpoint` names another origin than the connection's last call.
    Send {
        id: CallId,
        conn: Connection,
        op: Operation,
        /// Boxed: a `Request` is ~250 bytes, and outputs queue and move by value (an output is
        /// 48 bytes this way, so the agent's small output queue stays a small allocation).
        request: Box<Request>,
        /// Where the call goes ([`crate::codec::resolve`] turns it into origin and path).
        endpoint: Endpoint,
    },
    /// The agent gave up on call `id` (its client timeout, or shutdown): abort it (close the
    /// connection, or tell the server the client went away). A late answer is ignored.
    Cancel { id: CallId, conn: Connection },
}

/// What a call is for: decides how its answer is handled. Small on purpose (one per
/// connection is kept in flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Discover,
    PoolLookup,
    AgentLookup,
    Register,
    Replace,
    /// The listener's own connectionData (the call that meets the 401 challenge).
    Connect,
    Mint,
    CreateSession,
    Poll,
    Ack(u64),
    KeepAlive,
    DeleteSession,
    Job(JobCall),
}

/// A delivered message, read.
enum Inbound {
    Job(Box<AgentJobRequestMessage>),
    Cancel(JobCancelMessage),
    /// `AgentRefresh`, `JobMetadataUpdate` and unknown types: acknowledged and skipped.
    Skip,
}

/// One call waiting for its answer.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    id: CallId,
    op: Operation,
    intended: SimTime,
    purpose: Purpose,
    /// The listener-token generation the call was sent with; 0 = anonymous or not a listener
    /// credential.
    token_gen: u32,
    /// Sent without credentials, expecting the 401 challenge.
    anonymous: bool,
}

/// Where the agent is in its life.
#[derive(Clone, Debug)]
enum Phase {
    /// Waiting for `Timer::Start`.
    Starting,
    Discover,
    PoolLookup,
    AgentLookup,
    Register,
    /// Replace this existing agent (`--replace`).
    Replace(Box<TaskAgent>),
    /// The listener's first call with its OAuth credential.
    Connect,
    Session,
    Listening,
    /// Graceful shutdown: delete the session, then stop.
    Stopping,
    Stopped,
}

/// What registration produced: the agent's identity towards the server.
#[derive(Clone, Debug)]
struct Identity {
    pool_id: u32,
    agent_id: u64,
    client_id: String,
    /// The registration's `authorizationUrl`: the JWT audience, always as given.
    authorization_url: Arc<str>,
    /// Where the client-credentials grant is POSTed (the real agent's `oauthEndpointUrl`).
    token_endpoint: Endpoint,
}

/// The live session.
#[derive(Clone, Debug)]
struct Session {
    id: String,
    /// The AES-256 key; `None` = message bodies are plaintext.
    key: Option<[u8; 32]>,
    last_message_id: Option<u64>,
}

/// The listener OAuth credential shared by all connections.
#[derive(Clone, Debug, Default)]
struct Auth {
    token: Option<String>,
    /// Bumped on every new token; calls remember the generation they used.
    generation: u32,
    /// A 401 asked for a new token.
    need_mint: bool,
    /// A token exchange is in flight.
    minting: bool,
}

/// One virtual agent.
///
/// # Drain contract
/// After constructing the agent and after every `handle_*` call or [`Agent::shutdown`], the
/// driver drains [`Agent::poll_transmit`] until it returns `None` (sending or cancelling each
/// call), drains [`Agent::poll_event`] into its recorder, and then asks [`Agent::poll_timeout`]
/// for the next wake-up; at that time (or later) it calls [`Agent::handle_timeout`]. Answers go
/// back with the `CallId` they were sent with; answers to calls the agent has cancelled are
/// ignored. The agent never holds two calls in flight on one [`Connection`].
pub struct Agent {
    index: u32,
    config: Arc<AgentConfig>,
    /// `None` = modelled crypto.
    key: Option<Arc<PrivateKey>>,
    rng: Rng,
    epoch_unix_ms: u64,
    phase: Phase,
    /// The state last reported through `Event::AgentState`.
    reported: AgentState,
    identity: Option<Box<Identity>>,
    session: Option<Box<Session>>,
    auth: Auth,
    /// A message to acknowledge before the next poll.
    pending_ack: Option<u64>,
    /// `connectionData.deploymentType` said `hosted` (Azure DevOps Services) at registration.
    hosted: bool,
    inflight: [Option<InFlight>; 3],
    /// When each connection's next call became due (the `intended` of its next call).
    due: [SimTime; 3],
    /// Auth retries of the current call per connection.
    auth_retries: [u8; 3],
    timers: TimerTable<8>,
    consecutive_errors: u32,
    /// When the current run of session conflicts began.
    conflict_since: Option<SimTime>,
    next_call_id: CallId,
    job: Option<Box<JobRun>>,
    /// A job message that arrived while a job was still finishing (the server may assign the
    /// next job as soon as it has the previous one's completion, and deliver it on the listener
    /// before the completion's answer is read here). The real agent's JobDispatcher waits for
    /// the previous dispatch to finish and then runs it; so does this one.
    next_job: Option<Box<AgentJobRequestMessage>>,
    outbox: VecDeque<AgentOutput>,
    events: VecDeque<Event>,
}

impl Agent {
    /// A new agent `index` that starts at `now`. `key: None` runs modelled crypto (no RSA work;
    /// the server must run modelled too). `epoch_unix_ms` is the wall time of `SimTime::ZERO`,
    /// used only for JWT times and record timestamps.
    pub fn new(
        index: u32,
        config: Arc<AgentConfig>,
        key: Option<Arc<PrivateKey>>,
        rng: Rng,
        now: SimTime,
        epoch_unix_ms: u64,
    ) -> Agent {
        let key = if config.crypto_mode == CryptoMode::Modelled {
            None
        } else {
            key
        };
        let mut timers = TimerTable::new();
        timers.set(slot(Timer::Start), now);
        Agent {
            index,
            config,
            key,
            rng,
            epoch_unix_ms,
            phase: Phase::Starting,
            reported: AgentState::Offline,
            identity: None,
            session: None,
            auth: Auth::default(),
            pending_ack: None,
            hosted: false,
            inflight: [None; 3],
            due: [SimTime::NEVER; 3],
            auth_retries: [0; 3],
            timers,
            consecutive_errors: 0,
            conflict_since: None,
            next_call_id: 1,
            job: None,
            next_job: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The answer to call `id`.
    pub fn handle_response(&mut self, now: SimTime, id: CallId, resp: ApiResponse) {
        if let Some((conn, call)) = self.take_inflight(id) {
            self.on_reply(now, conn, call, Ok(resp));
            self.drive(now);
        }
    }

    /// Call `id` failed below the protocol (connect, reset, TLS, proxy, lost).
    pub fn handle_transport_error(&mut self, now: SimTime, id: CallId, err: TransportError) {
        if let Some((conn, call)) = self.take_inflight(id) {
            self.on_reply(now, conn, call, Err(Outcome::Transport(err)));
            self.drive(now);
        }
    }

    /// Fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: SimTime) {
        // Bounded: each pass clears one deadline, and handlers only set deadlines after `now`
        // except the immediate ones, which the table can hold once per slot.
        for _ in 0..64 {
            if let Some((at, s)) = self.timers.take_expired(now) {
                self.on_agent_timer(now, AGENT_TIMERS[s], at);
            } else if let Some((at, timer)) = self.job.as_mut().and_then(|j| j.take_expired(now)) {
                self.on_job_timer(now, timer, at);
            } else {
                break;
            }
        }
        self.drive(now);
    }

    /// Stop gracefully: give up in-flight calls and any job, delete the session, then stop.
    pub fn shutdown(&mut self, now: SimTime) {
        if matches!(self.phase, Phase::Stopping | Phase::Stopped) {
            return;
        }
        for conn in Connection::ALL {
            self.cancel(conn);
        }
        self.abandon_job(now);
        self.timers = TimerTable::new();
        self.phase = if self.session.is_some() {
            Phase::Stopping
        } else {
            Phase::Stopped
        };
        self.due[Connection::Listener.slot()] = now;
        self.drive(now);
    }

    /// The next request to send or call to cancel.
    pub fn poll_transmit(&mut self) -> Option<AgentOutput> {
        let out = self.outbox.pop_front();
        if out.is_none() && self.outbox.capacity() > 0 {
            // Requests are large; an idle agent should not keep their buffer.
            self.outbox = VecDeque::new();
        }
        out
    }

    /// The next telemetry event.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front();
        if ev.is_none() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        ev
    }

    /// The earliest deadline and why; `None` when the agent waits only for answers (or stopped).
    pub fn poll_timeout(&self) -> Option<(SimTime, Timer)> {
        let agent = self.timers.earliest().map(|(at, s)| (at, AGENT_TIMERS[s]));
        let job = self.job.as_ref().and_then(|j| j.earliest());
        match (agent, job) {
            (Some(a), Some(j)) => Some(if j.0 < a.0 { j } else { a }),
            (a, j) => a.or(j),
        }
    }

    /// What the agent is doing now.
    pub fn state(&self) -> AgentState {
        match self.phase {
            Phase::Stopped | Phase::Starting => AgentState::Offline,
            _ if self.job.is_some() => AgentState::Busy,
            Phase::Listening | Phase::Stopping
                if self.timers.get(slot(Timer::Backoff)).is_none() =>
            {
                AgentState::Idle
            }
            Phase::Listening | Phase::Stopping => AgentState::Offline,
            _ if self.timers.get(slot(Timer::Backoff)).is_some() => AgentState::Offline,
            _ => AgentState::Registering,
        }
    }

    /// Whether the agent has stopped for good (after shutdown or a fatal error).
    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// This agent's index in the fleet.
    pub fn index(&self) -> u32 {
        self.index
    }

    // ------------------------------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------------------------------

    fn on_agent_timer(&mut self, now: SimTime, timer: Timer, at: SimTime) {
        let listener = Connection::Listener.slot();
        match timer {
            Timer::Start => {
                self.phase = Phase::Discover;
                self.due[listener] = at;
            }
            Timer::PollGap | Timer::Backoff | Timer::SessionRetry => self.due[listener] = at,
            Timer::KeepAlive => self.due[Connection::KeepAlive.slot()] = at,
            Timer::CallTimeout(conn) => {
                if let Some(call) = self.inflight[conn.slot()].take() {
                    self.outbox
                        .push_back(AgentOutput::Cancel { id: call.id, conn });
                    self.on_reply(now, conn, call, Err(Outcome::Timeout));
                }
            }
            // Job timers live in the job's table.
            _ => {}
        }
    }

    fn on_job_timer(&mut self, now: SimTime, timer: Timer, at: SimTime) {
        let ctx = job_ctx(
            self.pool_id(),
            self.index,
            &self.config,
            &self.auth,
            self.epoch_unix_ms,
        );
        if let Some(job) = self.job.as_mut() {
            let status = job.on_timer(&ctx, now, timer, at, &mut self.rng, &mut self.events);
            self.after_job(now, status);
        }
    }

    // ------------------------------------------------------------------------------------------
    // Sending
    // ------------------------------------------------------------------------------------------

    /// Start whatever calls are due on free connections, then report a state change.
    fn drive(&mut self, now: SimTime) {
        self.drive_listener(now);
        self.drive_keepalive(now);
        self.drive_job(now);
        self.report_state(now);
    }

    fn drive_listener(&mut self, now: SimTime) {
        let conn = Connection::Listener;
        if self.inflight[conn.slot()].is_some() || self.try_mint(now, conn) {
            return;
        }
        let waiting = |t: Timer| self.timers.get(slot(t)).is_some();
        if waiting(Timer::Backoff) || waiting(Timer::Start) {
            return;
        }
        let pat = || Credential::Basic {
            user: "VstsAgent".into(),
            password: self.config.pat.clone(),
        };
        let (op, purpose, call, credential) = match &self.phase {
            Phase::Starting | Phase::Stopped => return,
            Phase::Discover => (
                Operation::ConnectionData,
                Purpose::Discover,
                ApiRequest::ConnectionData,
                pat(),
            ),
            Phase::PoolLookup => (
                Operation::PoolLookup,
                Purpose::PoolLookup,
                ApiRequest::ListPools {
                    pool_name: Some(self.config.pool_name.clone()),
                },
                pat(),
            ),
            Phase::AgentLookup => (
                Operation::AgentLookup,
                Purpose::AgentLookup,
                ApiRequest::ListAgents {
                    pool_id: self.pool_id(),
                    agent_name: Some(self.config.agent_name(self.index)),
                },
                pat(),
            ),
            Phase::Register => (
                Operation::Register,
                Purpose::Register,
                ApiRequest::AddAgent {
                    pool_id: self.pool_id(),
                    agent: Box::new(self.agent_body(None)),
                },
                pat(),
            ),
            Phase::Replace(existing) => {
                let agent = self.agent_body(Some(existing));
                (
                    Operation::ReplaceAgent,
                    Purpose::Replace,
                    ApiRequest::ReplaceAgent {
                        pool_id: self.pool_id(),
                        agent_id: existing.id,
                        agent: Box::new(agent),
                    },
                    pat(),
                )
            }
            Phase::Connect => {
                if self.auth.minting {
                    return;
                }
                let cred = self.listener_credential();
                (
                    Operation::ConnectionData,
                    Purpose::Connect,
                    ApiRequest::ConnectionData,
                    cred,
                )
            }
            Phase::Session => {
                if self.auth.minting || waiting(Timer::SessionRetry) {
                    return;
                }
                let call = ApiRequest::CreateSession {
                    pool_id: self.pool_id(),
                    session: self.session_body(),
                };
                (
                    Operation::SessionCreate,
                    Purpose::CreateSession,
                    call,
                    self.listener_credential(),
                )
            }
            Phase::Listening => {
                let Some(session) = &self.session else { return };
                if self.auth.minting {
                    return;
                }
                if let Some(message_id) = self.pending_ack {
                    let call = ApiRequest::DeleteMessage {
                        pool_id: self.pool_id(),
                        message_id,
                        session_id: session.id.clone(),
                    };
                    (
                        Operation::MessageAck,
                        Purpose::Ack(message_id),
                        call,
                        self.listener_credential(),
                    )
                } else {
                    if waiting(Timer::PollGap) {
                        return;
                    }
                    let call = ApiRequest::GetMessage {
                        pool_id: self.pool_id(),
                        session_id: session.id.clone(),
                        last_message_id: session.last_message_id,
                    };
                    (
                        Operation::PollMessage,
                        Purpose::Poll,
                        call,
                        self.listener_credential(),
                    )
                }
            }
            Phase::Stopping => {
                let Some(session) = self.session.take() else {
                    self.phase = Phase::Stopped;
                    return;
                };
                let call = ApiRequest::DeleteSession {
                    pool_id: self.pool_id(),
                    session_id: session.id,
                };
                let credential = self.listener_credential();
                let timeout = self.config.pacing.session_delete_timeout;
                self.send(
                    now,
                    conn,
                    Operation::SessionDelete,
                    Purpose::DeleteSession,
                    Request { credential, call },
                    Endpoint::Collection,
                    timeout,
                );
                return;
            }
        };
        let timeout = self.config.pacing.long_poll_timeout;
        let request = Request { credential, call };
        self.send(
            now,
            conn,
            op,
            purpose,
            request,
            Endpoint::Collection,
            timeout,
        );
    }

    fn drive_keepalive(&mut self, now: SimTime) {
        let conn = Connection::KeepAlive;
        let s = conn.slot();
        if self.inflight[s].is_some() || self.due[s] == SimTime::NEVER {
            return;
        }
        if !matches!(self.phase, Phase::Listening) || self.auth.minting || self.auth.token.is_none()
        {
            return;
        }
        if self.try_mint(now, conn) {
            return;
        }
        let Some(session) = &self.session else { return };
        let call = ApiRequest::GetMessage {
            pool_id: self.pool_id(),
            session_id: session.id.clone(),
            last_message_id: None,
        };
        let credential = self.listener_credential();
        let timeout = self.config.pacing.long_poll_timeout;
        self.send(
            now,
            conn,
            Operation::KeepAlive,
            Purpose::KeepAlive,
            Request { credential, call },
            Endpoint::Collection,
            timeout,
        );
    }

    fn drive_job(&mut self, now: SimTime) {
        let conn = Connection::Job;
        if self.inflight[conn.slot()].is_some() || self.job.is_none() {
            return;
        }
        if self.try_mint(now, conn) {
            return;
        }
        let ctx = job_ctx(
            self.pool_id(),
            self.index,
            &self.config,
            &self.auth,
            self.epoch_unix_ms,
        );
        let Some(job) = self.job.as_mut() else { return };
        let Some(next) = job.next_call(&ctx, now, &mut self.rng, &mut self.events) else {
            return;
        };
        let token_gen = match &next.request.credential {
            Credential::Bearer(t) if Some(t) == self.auth.token.as_ref() => self.auth.generation,
            _ => 0,
        };
        self.due[conn.slot()] = next.intended;
        let id = self.push_send(conn, next.op, next.request, next.endpoint);
        self.inflight[conn.slot()] = Some(InFlight {
            id,
            op: next.op,
            intended: next.intended,
            purpose: Purpose::Job(next.call),
            token_gen,
            anonymous: false,
        });
        self.timers
            .set(slot(Timer::CallTimeout(conn)), now + next.timeout);
    }

    /// If a new listener token is needed and none is being fetched, fetch it on `conn`.
    fn try_mint(&mut self, now: SimTime, conn: Connection) -> bool {
        if !self.auth.need_mint || self.auth.minting || self.identity.is_none() {
            return false;
        }
        if self.timers.get(slot(Timer::Backoff)).is_some() {
            return false;
        }
        let assertion = self.mint_assertion(now);
        let endpoint = self
            .identity
            .as_ref()
            .map_or(Endpoint::Collection, |i| i.token_endpoint.clone());
        let call = ApiRequest::Token(TokenGrant::ClientCredentials {
            client_assertion_type: JWT_BEARER_ASSERTION_TYPE.to_string(),
            client_assertion: assertion,
        });
        self.auth.minting = true;
        self.due[conn.slot()] = now;
        let timeout = self.config.pacing.long_poll_timeout;
        self.send(
            now,
            conn,
            Operation::TokenExchange,
            Purpose::Mint,
            Request {
                credential: Credential::Anonymous,
                call,
            },
            endpoint,
            timeout,
        );
        true
    }

    /// Queue a call to `endpoint` and remember it as in flight on `conn`.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        now: SimTime,
        conn: Connection,
        op: Operation,
        purpose: Purpose,
        request: Request,
        endpoint: Endpoint,
        timeout: Duration,
    ) {
        let s = conn.slot();
        let anonymous =
            matches!(request.credential, Credential::Anonymous) && purpose != Purpose::Mint;
        let token_gen = match &request.credential {
            Credential::Bearer(_) => self.auth.generation,
            _ => 0,
        };
        let intended = if self.due[s] == SimTime::NEVER {
            now
        } else {
            self.due[s].min(now)
        };
        self.due[s] = SimTime::NEVER;
        let id = self.push_send(conn, op, request, endpoint);
        self.inflight[s] = Some(InFlight {
            id,
            op,
            intended,
            purpose,
            token_gen,
            anonymous,
        });
        self.timers
            .set(slot(Timer::CallTimeout(conn)), now + timeout);
    }

    fn push_send(
        &mut self,
        conn: Connection,
        op: Operation,
        request: Request,
        endpoint: Endpoint,
    ) -> CallId {
        let id = self.next_call_id;
        self.next_call_id += 1;
        self.outbox.push_back(AgentOutput::Send {
            id,
            conn,
            op,
            request: Box::new(request),
            endpoint,
        });
        id
    }

    fn take_inflight(&mut self, id: CallId) -> Option<(Connection, InFlight)> {
        let conn = Connection::ALL
            .into_iter()
            .find(|c| self.inflight[c.slot()].is_some_and(|call| call.id == id))?;
        self.timers.clear(slot(Timer::CallTimeout(conn)));
        Some((conn, self.inflight[conn.slot()].take()?))
    }

    /// Give up the call in flight on `conn`, telling the driver.
    fn cancel(&mut self, conn: Connection) {
        if let Some(call) = self.inflight[conn.slot()].take() {
            self.timers.clear(slot(Timer::CallTimeout(conn)));
            self.outbox
                .push_back(AgentOutput::Cancel { id: call.id, conn });
        }
    }

    // ------------------------------------------------------------------------------------------
    // Answers
    // ------------------------------------------------------------------------------------------

    fn on_reply(
        &mut self,
        now: SimTime,
        conn: Connection,
        call: InFlight,
        reply: Result<ApiResponse, Outcome>,
    ) {
        let s = conn.slot();
        let reply = reply.and_then(|r| match r {
            ApiResponse::Error(e) => Err(Outcome::Api(e.kind)),
            ok if answers(call.purpose, &ok) => Ok(ok),
            // A 2xx the call cannot use (a confused or hostile peer): a protocol error, handled
            // like any other failure of that call.
            _ => Err(Outcome::Protocol),
        });
        // The 401 challenge to an anonymous call is the expected answer, timed as its own op.
        if call.anonymous && reply == Err(Outcome::Api(ErrorKind::Unauthorized)) {
            self.op_event(Operation::AuthChallenge, call.intended, now, Outcome::Ok);
            self.auth.need_mint = true;
            self.due[s] = now;
            self.redo(call.purpose, now);
            return;
        }
        if reply == Err(Outcome::Api(ErrorKind::Unauthorized))
            && call.purpose != Purpose::Mint
            && self.uses_listener_token(call)
        {
            self.op_event(
                call.op,
                call.intended,
                now,
                Outcome::Api(ErrorKind::Unauthorized),
            );
            self.auth_retries[s] += 1;
            if self.auth_retries[s] > self.config.pacing.auth_retries_max {
                // VssUnauthorizedException: fatal for the listener.
                self.stop(now);
                return;
            }
            // A token newer than the one this call used is simply retried; otherwise re-mint.
            if call.token_gen == self.auth.generation {
                self.auth.need_mint = true;
            }
            self.due[s] = now;
            self.redo(call.purpose, now);
            return;
        }
        if call.purpose != Purpose::Mint {
            self.auth_retries[s] = 0;
        }
        let mut outcome = match &reply {
            Ok(_) => Outcome::Ok,
            Err(o) => *o,
        };
        // A delivered message is read before the poll is recorded, so one that cannot be read
        // (decryption or JSON) makes its poll a protocol error instead of vanishing unseen.
        let mut inbound = None;
        if let (Purpose::Poll, Ok(ApiResponse::Message(message))) = (call.purpose, &reply) {
            match self.read_message(message) {
                Some(read) => inbound = Some(read),
                None => outcome = Outcome::Protocol,
            }
        }
        let op = match (call.purpose, &reply) {
            (Purpose::Poll, Ok(ApiResponse::NoMessage)) => Operation::PollEmpty,
            _ => call.op,
        };
        self.op_event(op, call.intended, now, outcome);
        if conn != Connection::KeepAlive {
            // The keep-alive's next call is due only when its timer says so.
            self.due[s] = now;
        }
        match call.purpose {
            Purpose::Discover => self.on_discover(now, reply),
            Purpose::PoolLookup => self.on_pool_lookup(now, reply),
            Purpose::AgentLookup => self.on_agent_lookup(now, reply),
            Purpose::Register | Purpose::Replace => self.on_registered(now, reply),
            Purpose::Connect => self.on_connect(now, reply),
            Purpose::Mint => self.on_token(now, reply),
            Purpose::CreateSession => self.on_session(now, reply),
            Purpose::Poll => self.on_poll(now, reply, inbound),
            Purpose::Ack(_) => self.pending_ack = None,
            Purpose::KeepAlive => self.on_keepalive(now, reply),
            Purpose::DeleteSession => self.phase = Phase::Stopped,
            Purpose::Job(jc) => {
                let ctx = job_ctx(
                    self.pool_id(),
                    self.index,
                    &self.config,
                    &self.auth,
                    self.epoch_unix_ms,
                );
                if let Some(job) = self.job.as_mut() {
                    let status =
                        job.on_reply(&ctx, now, jc, reply, &mut self.rng, &mut self.events);
                    self.after_job(now, status);
                }
            }
        }
    }

    /// Re-arm the work a call was doing so `drive` sends it again (after a 401).
    fn redo(&mut self, purpose: Purpose, now: SimTime) {
        match purpose {
            Purpose::KeepAlive => self.due[Connection::KeepAlive.slot()] = now,
            Purpose::Job(jc) => {
                if let Some(job) = self.job.as_mut() {
                    job.redo(jc, now);
                }
            }
            // Listener calls are rebuilt from the phase; an ack stays in `pending_ack`.
            _ => {}
        }
    }

    fn uses_listener_token(&self, call: InFlight) -> bool {
        !matches!(
            call.purpose,
            Purpose::Discover
                | Purpose::PoolLookup
                | Purpose::AgentLookup
                | Purpose::Register
                | Purpose::Replace
        ) && (call.token_gen > 0 || call.anonymous)
    }

    fn on_discover(&mut self, now: SimTime, reply: Result<ApiResponse, Outcome>) {
        match reply {
            Ok(ApiResponse::ConnectionData(data)) => {
                // What the real agent's configure step learns here (`DetermineDeploymentType`);
                // it decides where the token endpoint is (see `token_endpoint`).
                self.hosted = data.deployment_type.eq_ignore_ascii_case("hosted");
                self.phase = Phase::PoolLookup;
            }
            other => self.registration_error(now, other),
        }
    }

    fn on_pool_lookup(&mut self, now: SimTime, reply: Result<ApiResponse, Outcome>) {
        match reply {
            Ok(ApiResponse::Pools(pools)) => match pools.value.first() {
                Some(pool) => {
                    self.identity = Some(Box::new(Identity {
                        pool_id: pool.id,
                        agent_id: 0,
                        client_id: String::new(),
                        authorization_url: Arc::from(""),
                        token_endpoint: Endpoint::Collection,
                    }));
                    self.phase = Phase::AgentLookup;
                }
                // TaskAgentPoolNotFoundException.
                None => self.stop(now),
            },
            other => self.registration_error(now, other),
        }
    }

    fn on_agent_lookup(&mut self, now: SimTime, reply: Result<ApiResponse, Outcome>) {
        match reply {
            Ok(ApiResponse::Agents(agents)) => match agents.value.into_iter().next() {
                None => self.phase = Phase::Register,
                Some(existing) if self.config.register_mode == RegisterMode::Replace => {
                    self.phase = Phase::Replace(Box::new(existing));
                }
                // TaskAgentExistsException in unattended mode.
                Some(_) => self.stop(now),
            },
            other => self.registration_error(now, other),
        }
    }

    fn on_registered(&mut self, now: SimTime, reply: Result<ApiResponse, Outcome>) {
        match reply {
            Ok(ApiResponse::Agent(agent)) => {
                let auth = agent.authorization.unwrap_or_default();
                let (Some(client_id), Some(url)) = (auth.client_id, auth.authorization_url) else {
                    // A legacy server without OAuth: fleetsim does not emulate that path.
                    self.stop(now);
                    return;
                };
                if crate::codec::url::parse(&url).is_err() {
                    // The real agent's `new Uri(authorizationUrl)` throws: configuration fails.
                    self.stop(now);
                    return;
                }
                let url: Arc<str> = Arc::from(url);
                let hosted = self.hosted;
                if let Some(id) = self.identity.as_mut() {
                    id.agent_id = agent.id;
                    id.client_id = client_id;
                    id.token_endpoint = token_endpoint(&url, hosted);
                    id.authorization_url = url;
                }
                self.consecutive_errors = 0;
                self.phase = Phase::Connect;
            }
            Err(Outcome::Api(ErrorKind::AgentExists)) => self.stop(now),
            other => self.registration_error(now, other),
        }
    }

    /// Registration errors: a bad PAT or a missing pool is fatal, anything else backs off.
    fn registration_error(&mut self, now: SimTime, reply: Result<ApiResponse, Outcome>) {
        match reply {
            Err(Outcome::Api(
                ErrorKind::Unauthorized
                | ErrorKind::AccessDenied
                | ErrorKind::PoolNotFound
                | ErrorKind::AgentExists,
            )) => self.stop(now),
            _ => self.back_off(now),
        }
    }

    fn on_connect(&mut self, now: SimTime, reply: Result<ApiResponse, Outcome>) {
        match reply {
            Ok(ApiResponse::ConnectionData(_)) => self.phase = Phase::Session,
            Err(o) if is_fatal(o) => self.stop(now),
            _ => self.back_off(now),
        }
    }

    fn on_token(&mut self, now: SimTime, reply: Result<ApiResponse, Outcome>) {
        self.auth.minting = false;
        match reply {
            Ok(ApiResponse::Token(t)) => {
                self.auth.token = Some(t.access_token);
                self.auth.generation += 1;
                self.auth.need_mint = false;
            }
            // The token endpoint refused or failed: back off and mint again afterwards.
            _ => self.back_off(now),
        }
    }

    fn on_session(&mut self, now: SimTime, reply: Result<ApiResponse, Outcome>) {
        match reply {
            Ok(ApiResponse::Session(session)) => match self.unwrap_session_key(&session) {
                Ok(key) => {
                    let id = session.session_id;
                    self.session = Some(Box::new(Session {
                        id,
                        key,
                        last_message_id: None,
                    }));
                    self.phase = Phase::Listening;
                    self.consecutive_errors = 0;
                    self.conflict_since = None;
                    if self.config.pacing.keepalive {
                        self.timers.set(slot(Timer::KeepAlive), now);
                    }
                }
                // A key the agent cannot unwrap: a crypto-mode mismatch or a broken server.
                Err(()) => self.stop(now),
            },
            Err(Outcome::Api(ErrorKind::SessionConflict)) => {
                let since = *self.conflict_since.get_or_insert(now);
                if now - since >= self.config.pacing.session_conflict_budget {
                    self.stop(now);
                } else {
                    self.timers.set(
                        slot(Timer::SessionRetry),
                        now + self.config.pacing.session_retry,
                    );
                }
            }
            Err(o) if is_fatal(o) => self.stop(now),
            _ => self.timers.set(
                slot(Timer::SessionRetry),
                now + self.config.pacing.session_retry,
            ),
        }
    }

    fn on_poll(
        &mut self,
        now: SimTime,
        reply: Result<ApiResponse, Outcome>,
        read: Option<Inbound>,
    ) {
        match reply {
            Ok(ApiResponse::NoMessage) => {
                self.consecutive_errors = 0;
                let gap = self.config.pacing.empty_poll_gap.sample(&mut self.rng);
                self.timers.set(slot(Timer::PollGap), now + gap);
            }
            Ok(ApiResponse::Message(message)) => {
                self.consecutive_errors = 0;
                if let Some(session) = self.session.as_mut() {
                    session.last_message_id = Some(message.message_id);
                }
                // Every message is deleted, read or not, acted on or not: the real listener's
                // `finally` deletes it (Agent.cs, RunAsync), so the server never redelivers it.
                self.pending_ack = Some(message.message_id);
                if let Some(read) = read {
                    self.on_message(now, read);
                }
            }
            Err(Outcome::Api(ErrorKind::SessionExpired)) => {
                // TaskAgentSessionExpiredException: create a new session.
                self.session = None;
                self.phase = Phase::Session;
            }
            Err(o) if is_fatal(o) => self.stop(now),
            _ => self.back_off(now),
        }
    }

    fn on_keepalive(&mut self, now: SimTime, _reply: Result<ApiResponse, Outcome>) {
        // The keep-alive's answer is discarded; only its cadence matters.
        if self.config.pacing.keepalive && matches!(self.phase, Phase::Listening | Phase::Session) {
            self.timers.set(
                slot(Timer::KeepAlive),
                now + self.config.pacing.keepalive_interval,
            );
        }
    }

    /// Read a delivered message: decrypted and parsed by its type (compared case-insensitively,
    /// as the real listener does). `None` when it cannot be read; types the fleet does not act on
    /// (`AgentRefresh`, `JobMetadataUpdate`, anything unknown) read as [`Inbound::Skip`].
    fn read_message(&mut self, message: &TaskAgentMessage) -> Option<Inbound> {
        let body = self.decrypt_message(message)?;
        let kind = message.message_type.as_str();
        if kind.eq_ignore_ascii_case(proto::MESSAGE_JOB_REQUEST) {
            let job = serde_json::from_slice::<AgentJobRequestMessage>(&body).ok()?;
            Some(Inbound::Job(Box::new(job)))
        } else if kind.eq_ignore_ascii_case(proto::MESSAGE_JOB_CANCELLATION) {
            let cancel = serde_json::from_slice::<JobCancelMessage>(&body).ok()?;
            Some(Inbound::Cancel(cancel))
        } else {
            Some(Inbound::Skip)
        }
    }

    fn on_message(&mut self, now: SimTime, message: Inbound) {
        let ctx = job_ctx(
            self.pool_id(),
            self.index,
            &self.config,
            &self.auth,
            self.epoch_unix_ms,
        );
        match message {
            Inbound::Job(msg) => {
                if self.job.is_some() {
                    // maxParallelism is 1: the server sends the next job only once it has the
                    // running one's completion, so at most one waits here.
                    if self.next_job.is_none() {
                        self.next_job = Some(msg);
                    }
                    return;
                }
                self.start_job(now, msg);
            }
            Inbound::Cancel(cancel)
                if self
                    .next_job
                    .as_ref()
                    .is_some_and(|next| next.job_id == cancel.job_id) =>
            {
                // Canceled before it started: never run.
                self.next_job = None;
            }
            Inbound::Cancel(cancel) => {
                if let Some(job) = self.job.as_mut() {
                    let status = job.cancel(&ctx, now, &cancel.job_id);
                    self.after_job(now, status);
                }
            }
            // The real listener logs these (and self-updates on AgentRefresh, which a virtual
            // agent never does); a running job is not touched.
            Inbound::Skip => {}
        }
    }

    fn start_job(&mut self, now: SimTime, msg: Box<AgentJobRequestMessage>) {
        let ctx = job_ctx(
            self.pool_id(),
            self.index,
            &self.config,
            &self.auth,
            self.epoch_unix_ms,
        );
        self.events.push_back(Event::JobPickedUp {
            agent: self.index,
            request_id: msg.request_id,
            at: now,
        });
        self.job = Some(JobRun::start(&ctx, now, *msg, &mut self.rng));
    }

    fn after_job(&mut self, now: SimTime, status: JobStatus) {
        if let JobStatus::Finished { request_id, result } = status {
            self.events.push_back(Event::JobFinished {
                agent: self.index,
                request_id,
                result,
                at: now,
            });
            // Dropping the job discards the job token with it.
            self.job = None;
            self.cancel(Connection::Job);
            if let Some(next) = self.next_job.take() {
                self.start_job(now, next);
            }
        }
    }

    /// Drop a running job without reporting it to the server (shutdown or a fatal error); the
    /// server requeues it when the lease runs out. Recorded as abandoned so no job goes missing
    /// from the fleet's counts.
    fn abandon_job(&mut self, now: SimTime) {
        // A job waiting behind it was never started: the server requeues it with its lease.
        self.next_job = None;
        if let Some(job) = self.job.take() {
            self.events.push_back(Event::JobFinished {
                agent: self.index,
                request_id: job.request_id(),
                result: proto::TaskResult::Abandoned,
                at: now,
            });
        }
    }

    /// Back off after a listener error: U(15,30) s for the first errors, then U(30,60) s.
    fn back_off(&mut self, now: SimTime) {
        self.consecutive_errors = self.consecutive_errors.saturating_add(1);
        let dist = if self.consecutive_errors <= self.config.pacing.error_backoff_first_count {
            &self.config.pacing.error_backoff_first
        } else {
            &self.config.pacing.error_backoff_later
        };
        let delay = dist.sample(&mut self.rng);
        self.timers.set(slot(Timer::Backoff), now + delay);
    }

    /// Stop for good (a fatal error): nothing more is sent.
    fn stop(&mut self, now: SimTime) {
        for conn in Connection::ALL {
            self.cancel(conn);
        }
        self.abandon_job(now);
        self.timers = TimerTable::new();
        self.phase = Phase::Stopped;
        self.report_state(now);
    }

    fn report_state(&mut self, now: SimTime) {
        let state = self.state();
        if state != self.reported {
            self.events.push_back(Event::AgentState {
                agent: self.index,
                from: self.reported,
                to: state,
                at: now,
            });
            self.reported = state;
        }
    }

    fn op_event(&mut self, op: Operation, intended: SimTime, done: SimTime, outcome: Outcome) {
        self.events.push_back(Event::Op {
            agent: self.index,
            op,
            intended,
            done,
            outcome,
        });
    }

    fn crypto_event(&mut self, op: CryptoOp, bytes: u64, nanos: u64) {
        self.events.push_back(Event::Crypto {
            side: Side::Agents,
            op,
            count: 1,
            bytes,
            nanos,
        });
    }

    // ------------------------------------------------------------------------------------------
    // Building requests and crypto
    // ------------------------------------------------------------------------------------------

    fn pool_id(&self) -> u32 {
        self.identity.as_ref().map_or(0, |i| i.pool_id)
    }

    fn listener_credential(&self) -> Credential {
        match &self.auth.token {
            Some(t) => Credential::Bearer(t.clone()),
            // The real listener's first call carries no credential and meets the challenge.
            None => Credential::Anonymous,
        }
    }

    fn public_key(&self) -> TaskAgentPublicKey {
        match &self.key {
            Some(key) => key.public_key().to_wire(),
            // Modelled crypto: a fixed 2048-bit-shaped placeholder the modelled server ignores.
            None => TaskAgentPublicKey {
                exponent: "AQAB".to_string(),
                modulus: STANDARD.encode([0xC5u8; 256]),
            },
        }
    }

    fn agent_body(&self, existing: Option<&TaskAgent>) -> TaskAgent {
        let config = &self.config;
        let mut agent = existing.cloned().unwrap_or_default();
        agent.name = config.agent_name(self.index);
        agent.version = config.version.clone();
        agent.os_description = Some(config.os_description.clone());
        agent.max_parallelism = 1;
        agent.provisioning_state = Some("Provisioned".to_string());
        for (k, v) in &config.capabilities {
            agent.system_capabilities.insert(k.clone(), v.clone());
        }
        let auth = agent
            .authorization
            .get_or_insert_with(TaskAgentAuthorization::default);
        auth.public_key = Some(self.public_key());
        agent
    }

    fn session_body(&self) -> TaskAgentSession {
        let config = &self.config;
        TaskAgentSession {
            session_id: EMPTY_GUID.to_string(),
            owner_name: config.agent_name(self.index),
            agent: TaskAgentReference {
                id: self.identity.as_ref().map_or(0, |i| i.agent_id),
                name: config.agent_name(self.index),
                version: config.version.clone(),
                os_description: Some(config.os_description.clone()),
                ..Default::default()
            },
            system_capabilities: config.capabilities.clone(),
            encryption_key: None,
        }
    }

    /// A fresh client assertion: iss = sub = clientId, aud = authorizationUrl, nbf = now,
    /// exp = now + 5 min, jti from the agent's RNG salted with `jti_salt`. Modelled crypto sends
    /// it unsigned.
    fn mint_assertion(&mut self, now: SimTime) -> String {
        let (client_id, aud) = match &self.identity {
            Some(i) => (i.client_id.clone(), i.authorization_url.to_string()),
            None => (String::new(), String::new()),
        };
        let nbf = (self.epoch_unix_ms + now.as_micros() / 1000) / 1000;
        let claims = crypto::jwt::Claims {
            iss: client_id.clone(),
            sub: client_id,
            aud,
            nbf,
            exp: nbf + self.config.pacing.assertion_lifetime.as_secs(),
            jti: rng::salted_uuid(&mut self.rng, self.config.jti_salt).to_string(),
        };
        match self.key.clone() {
            Some(key) => {
                let (token, nanos) = self
                    .config
                    .meter
                    .measure(|| crypto::jwt::sign(&key, &claims));
                self.crypto_event(CryptoOp::Rs256Sign, 0, nanos);
                token
            }
            None => {
                self.crypto_event(CryptoOp::Rs256Sign, 0, 0);
                modelled_assertion(&claims)
            }
        }
    }

    /// The session's AES key: OAEP-unwrapped when `encrypted`, raw otherwise, none when absent.
    fn unwrap_session_key(&mut self, session: &TaskAgentSession) -> Result<Option<[u8; 32]>, ()> {
        let key = session
            .encryption_key
            .as_ref()
            .filter(|k| !k.value.is_empty());
        let Some(key) = key else {
            if self.key.is_none() {
                // Modelled: the server skipped the wrap; count the unwrap the real agent does.
                self.crypto_event(CryptoOp::OaepUnwrap, 256, 0);
            }
            return Ok(None);
        };
        let raw = STANDARD.decode(&key.value).map_err(|_| ())?;
        let plain = if key.encrypted {
            let private = self.key.clone().ok_or(())?;
            let (plain, nanos) = self
                .config
                .meter
                .measure(|| private.decrypt_oaep_sha1(&raw));
            self.crypto_event(CryptoOp::OaepUnwrap, raw.len() as u64, nanos);
            plain.map_err(|_| ())?
        } else {
            if self.key.is_none() {
                // Modelled: the unwrap is counted even though the server sent the key in clear.
                self.crypto_event(CryptoOp::OaepUnwrap, raw.len() as u64, 0);
            }
            raw
        };
        plain.try_into().map(Some).map_err(|_| ())
    }

    /// The message body as JSON bytes, decrypted when it is encrypted; `None` if it cannot be.
    fn decrypt_message(&mut self, message: &TaskAgentMessage) -> Option<Vec<u8>> {
        if message.body.len() > MESSAGE_BODY_MAX {
            return None;
        }
        let key = self.session.as_ref().and_then(|s| s.key);
        if message.iv.is_empty() {
            if self.key.is_none() {
                self.crypto_event(CryptoOp::AesDecrypt, message.body.len() as u64, 0);
            }
            return Some(message.body.as_bytes().to_vec());
        }
        let key = key?;
        let iv: [u8; 16] = STANDARD.decode(&message.iv).ok()?.try_into().ok()?;
        let cipher = STANDARD.decode(&message.body).ok()?;
        let (plain, nanos) = self
            .config
            .meter
            .measure(|| crypto::aes256_cbc_decrypt(&key, &iv, &cipher));
        let nanos = if self.key.is_some() { nanos } else { 0 };
        self.crypto_event(CryptoOp::AesDecrypt, cipher.len() as u64, nanos);
        plain.ok()
    }
}

/// Where the client-credentials grant goes, as the real agent decides it at configuration
/// (`ConfigurationManager.UpdateCredentialData`, read by `OAuthCredential`): the JWT audience is
/// always `authorizationUrl` as the server gave it, but the token is POSTed to the
/// `oauthEndpointUrl`, which is `authorizationUrl` itself against Azure DevOps Services
/// (`deploymentType` hosted: its token service is another host), and otherwise
/// `authorizationUrl` with the `scheme://host:port` of the URL the agent was configured with
/// (an on-premises server may name itself by a host the agent cannot reach). The core does not
/// know the target's URL, so the rewrite is data: [`Endpoint::ExactOnTarget`], applied by the
/// codec (a no-op when the origins already agree, as in the real agent's compare).
fn token_endpoint(authorization_url: &Arc<str>, hosted: bool) -> Endpoint {
    if hosted {
        Endpoint::Exact(Arc::clone(authorization_url))
    } else {
        Endpoint::ExactOnTarget(Arc::clone(authorization_url))
    }
}

/// What a job borrows from its agent for one step. Built from fields (not `&self`) so the job
/// can be borrowed mutably next to it.
fn job_ctx<'a>(
    pool_id: u32,
    agent: u32,
    config: &'a AgentConfig,
    auth: &'a Auth,
    epoch_unix_ms: u64,
) -> JobCtx<'a> {
    JobCtx {
        config,
        agent,
        pool_id,
        listener: auth.token.as_deref().filter(|_| !auth.minting),
        epoch_unix_ms,
    }
}

/// Whether `resp` is an answer `purpose` can use. Calls whose answer is not read accept any
/// success.
fn answers(purpose: Purpose, resp: &ApiResponse) -> bool {
    use ApiResponse as R;
    match purpose {
        Purpose::Discover | Purpose::Connect => matches!(resp, R::ConnectionData(_)),
        Purpose::PoolLookup => matches!(resp, R::Pools(_)),
        Purpose::AgentLookup => matches!(resp, R::Agents(_)),
        Purpose::Register | Purpose::Replace => matches!(resp, R::Agent(_)),
        Purpose::Mint | Purpose::Job(JobCall::Rotate) => matches!(resp, R::Token(_)),
        Purpose::CreateSession => matches!(resp, R::Session(_)),
        Purpose::Poll | Purpose::KeepAlive => matches!(resp, R::Message(_) | R::NoMessage),
        Purpose::Job(JobCall::LockRenew) => matches!(resp, R::JobRequest(_)),
        Purpose::Job(JobCall::LogCreate) => matches!(resp, R::Log(_)),
        Purpose::Ack(_) | Purpose::DeleteSession | Purpose::Job(_) => true,
    }
}

/// Errors that end the listener (protocol.md §4 "Fatal errors").
fn is_fatal(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Api(
            ErrorKind::AgentNotFound
                | ErrorKind::PoolNotFound
                | ErrorKind::AccessDenied
                | ErrorKind::AccessTokenExpired
        )
    )
}

/// The slot of an agent-level timer.
fn slot(timer: Timer) -> usize {
    timer::agent_slot(timer).unwrap_or(0)
}

/// An unsigned assertion for modelled crypto: the real header and claims, no signature bytes.
fn modelled_assertion(claims: &crypto::jwt::Claims) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

#[cfg(test)]
mod tests;
