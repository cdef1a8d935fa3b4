//! Per-route saturation ramps against a target that is not fleetsim's embedded emulator: one
//! ramp per route group (`ROUTE_GROUPS`), each sending a request of that group as the real
//! agent sends it, so the profile gets one station per group with its own workers and
//! service-time distribution.
//!
//! The requests are the agent's own: calibration agents (the core's `Agent`, driven here with
//! real crypto until they have sent what is needed) register, fetch their token and open
//! their session; one of them is given a job (queued through the emulator's admin extension,
//! with a demand only it meets) and runs it until it has renewed its lock and updated its
//! timeline. The first request of each operation each agent sent is kept and replayed:
//!
//! | group | what a client sends each turn |
//! |---|---|
//! | registration | `pool_lookup` (the ramp of `calibrate`'s first measurement) |
//! | token | the agent's client-credentials exchange, with a fresh assertion (new jti) |
//! | poll | the agent's session create, then the delete of that session (not a held poll) |
//! | job | the holder's lock renewal of its job |
//! | timeline | the holder's timeline-record update on its job's plan, with the job token |
//!
//! A group that cannot be ramped (no job reached the holder, a route refused) is named with
//! its reason; its operations stay with the single `server` station. At the end the held job
//! is cancelled, the agents stopped and deleted.
//!
//! This module decides nothing about the protocol: the agents decide what to send and the
//! codec encodes it; the module keeps copies, replays them and times the answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::agent::{Agent, AgentConfig, AgentOutput, CallId, RegisterMode};
use fleetsim_core::api::{ApiRequest, ApiResponse, Endpoint, Request, TokenGrant};
use fleetsim_core::codec;
use fleetsim_core::crypto::{self, PrivateKey};
use fleetsim_core::dist::DurationDist;
use fleetsim_core::job::{QueueJobsRequest, SyntheticJob, SyntheticStep};
use fleetsim_core::ops::{AgentState, Operation};
use fleetsim_core::rng::{self, StreamKind};
use fleetsim_scenario::Scenario;
use fleetsim_scenario::profile::Saturation;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::ramp::{self, Probe, RampTarget, SessionCall, TokenCall};
use super::{CalibrateOptions, Connected};
use crate::client::{ClientError, HttpClient};
use crate::fleet::driver::Clock;
use crate::fleet::origins::{Origins, Route};
use crate::fleet::{self, setup};
use crate::keycache::KeyCache;

/// What the per-route ramps found: each ramped group's saturation and single-client fit, and
/// each group that could not be ramped with the reason.
#[derive(Debug, Default)]
pub struct RouteRamps {
    pub ramped: BTreeMap<&'static str, (Saturation, DurationDist)>,
    pub unramped: BTreeMap<&'static str, String>,
}

/// The operation each group's ramp sends (report names, for the profile).
fn probe_op(group: &str) -> Operation {
    match group {
        "poll" => Operation::SessionCreate,
        "job" => Operation::LockRenew,
        "timeline" => Operation::TimelineUpdate,
        "token" => Operation::TokenExchange,
        _ => super::PROBE,
    }
}

/// How long a calibration agent may take to reach what it is driven to (registration, token,
/// session; the holder: its job's first renewal and timeline update).
const SETUP_LIMIT: Duration = Duration::from_secs(30);

/// How long stopping an agent (session delete) may take.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Name prefix of the calibration agents (apart from the fleet run's `calibrate-` agents).
const NAME_PREFIX: &str = "fleetsim-calibrate-route-";

/// Capability only the job holder has, so the calibration job goes to it and to no other
/// agent of the pool.
const HOLDER_CAPABILITY: &str = "fleetsim.calibrate.holder";

/// One ramp per route group but registration (`registration` is the ramp already run: its
/// saturation and fit are passed in).
pub async fn ramp_routes(
    scenario: &Scenario,
    opts: &CalibrateOptions,
    connected: &Connected,
    registration: (Saturation, DurationDist),
) -> RouteRamps {
    let mut out = RouteRamps::default();
    out.ramped.insert("registration", registration);
    let mut agents = match Agents::start(scenario, opts, connected).await {
        Ok(agents) => agents,
        Err(reason) => {
            for group in ["poll", "job", "timeline", "token"] {
                out.unramped.insert(
                    group,
                    format!("no calibration agent could register: {reason}"),
                );
            }
            return out;
        }
    };
    let listeners = agents.listeners().await;
    let held = agents.hold_job().await;
    for (group, plan) in plans(
        &listeners,
        &held,
        opts.max_concurrency,
        &connected.collection,
    ) {
        let result = match plan {
            Ok(plan) => agents.ramp(plan, connected, opts.step).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => {
                out.ramped
                    .insert(group, (r.saturation(probe_op(group).name()), r.fit));
            }
            Err(e) => {
                out.unramped
                    .insert(group, format!("{}: {e}", probe_op(group).name()));
            }
        }
    }
    agents.clean_up().await;
    out
}

/// A group's ramp as planned: what each client sends, how many clients at most, and one
/// request of the probe (with its endpoint) to find the origin it goes to.
struct Plan {
    probe: Probe,
    ceiling: u32,
    origin_of: (Request, Endpoint),
}

/// Each group's plan (poll, token, job, timeline), or why it cannot be ramped.
fn plans(
    listeners: &[Captured],
    held: &Result<Held, String>,
    max_concurrency: u32,
    collection: &codec::Url,
) -> Vec<(&'static str, Result<Plan, String>)> {
    let sessions: Vec<SessionCall> = listeners.iter().filter_map(|l| l.session.clone()).collect();
    let tokens: Vec<TokenCall> = listeners.iter().filter_map(|l| l.token.clone()).collect();
    let poll = match sessions.first() {
        None => Err(first_error(
            listeners,
            "no calibration agent opened a session",
        )),
        Some(first) => Ok(Plan {
            origin_of: (first.create.clone(), first.endpoint.clone()),
            // One agent per client: an agent holds one session at a time.
            ceiling: (sessions.len() as u32).min(max_concurrency),
            probe: Probe::Session(sessions),
        }),
    };
    let token = match tokens.first() {
        None => Err(first_error(
            listeners,
            "no calibration agent obtained a token",
        )),
        Some(first) => Ok(Plan {
            origin_of: (first.request.clone(), first.endpoint.clone()),
            ceiling: max_concurrency,
            probe: Probe::Token(tokens),
        }),
    };
    let held_call = |op: Operation| -> Result<Plan, String> {
        let held = held.as_ref().map_err(Clone::clone)?;
        let (request, endpoint) = held
            .sent
            .get(&op)
            .ok_or_else(|| format!("the job holder sent no {} on its job", op.name()))?;
        let (_, wire) = codec::resolve(request, endpoint, collection)
            .map_err(|e| format!("{}: {}", e.url, e.reason))?;
        Ok(Plan {
            probe: Probe::Fixed(wire),
            ceiling: max_concurrency,
            origin_of: (request.clone(), endpoint.clone()),
        })
    };
    vec![
        ("poll", poll),
        ("token", token),
        ("job", held_call(Operation::LockRenew)),
        ("timeline", held_call(Operation::TimelineUpdate)),
    ]
}

/// The first listener's failure, or `otherwise`.
fn first_error(listeners: &[Captured], otherwise: &str) -> String {
    listeners
        .iter()
        .find_map(|l| l.error.clone())
        .unwrap_or_else(|| otherwise.to_string())
}

/// What one listener agent left to replay.
#[derive(Default)]
struct Captured {
    session: Option<SessionCall>,
    token: Option<TokenCall>,
    error: Option<String>,
}

/// The calibration agents: their configuration, key, clients and the ids to delete at the end.
struct Agents {
    config: Arc<AgentConfig>,
    key: Arc<PrivateKey>,
    origins: Arc<Origins>,
    clock: Clock,
    pat: String,
    pool_id: Option<u32>,
    count: u32,
    seed: u64,
    /// Agent ids registered (deleted at the end).
    registered: Vec<u64>,
    /// The holder, driven again at the end to give its job back and stop.
    holder: Option<Driven>,
    /// The held job's request id (cancelled at the end).
    held_request: Option<u64>,
}

/// The job holder's captured calls.
struct Held {
    sent: BTreeMap<Operation, (Request, Endpoint)>,
}

impl Agents {
    async fn start(
        scenario: &Scenario,
        opts: &CalibrateOptions,
        connected: &Connected,
    ) -> Result<Agents, String> {
        let mut config = setup::agent_config(scenario, connected.pat.clone());
        config.name_prefix = NAME_PREFIX.to_string();
        // A calibration agent left over from an interrupted run is taken over, not refused.
        config.register_mode = RegisterMode::Replace;
        let dir = scenario
            .fleet
            .key_cache_dir
            .clone()
            .unwrap_or_else(KeyCache::default_dir);
        let keys = KeyCache::open(dir)
            .map_err(|e| e.to_string())?
            .load_or_generate(scenario.fleet.key_bits.bits(), 1, 1, None)
            .await
            .map_err(|e| e.to_string())?;
        let http = &connected.client;
        let origins =
            Origins::new(http, Route::Direct(Arc::clone(http)), None).map_err(|e| e.to_string())?;
        Ok(Agents {
            config: Arc::new(config),
            key: keys.key_for(0),
            origins: Arc::new(origins),
            clock: Clock::new(Instant::now()),
            pat: connected.pat.clone(),
            pool_id: None,
            count: opts.max_concurrency,
            seed: opts.seed,
            registered: Vec::new(),
            holder: None,
            held_request: None,
        })
    }

    fn agent(&self, index: u32, config: &Arc<AgentConfig>) -> Driven {
        Driven::new(Agent::new(
            index,
            Arc::clone(config),
            Some(Arc::clone(&self.key)),
            rng::stream(self.seed, StreamKind::Agent, u64::from(index)),
            self.clock.now(),
            unix_ms_at(self.clock),
        ))
    }

    /// `count` agents, driven at once until each has its session, then stopped (their session
    /// deleted): what they sent to get there is kept.
    async fn listeners(&mut self) -> Vec<Captured> {
        let mut tasks = JoinSet::new();
        for index in 0..self.count {
            let mut d = self.agent(index, &Arc::clone(&self.config));
            let origins = Arc::clone(&self.origins);
            let clock = self.clock;
            tasks.spawn(async move {
                let reached = d
                    .drive(&origins, clock, SETUP_LIMIT, |d| {
                        d.answered(Operation::SessionCreate)
                    })
                    .await;
                d.stop(&origins, clock).await;
                (d, reached)
            });
        }
        let salt = self.config.jti_salt;
        let mut captured = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((d, reached)) = joined else { continue };
            self.note(&d);
            captured.push(Captured {
                session: d.sent.get(&Operation::SessionCreate).and_then(|(r, e)| {
                    let ApiRequest::CreateSession { pool_id, .. } = &r.call else {
                        return None;
                    };
                    Some(SessionCall {
                        create: r.clone(),
                        endpoint: e.clone(),
                        pool_id: *pool_id,
                    })
                }),
                token: d.token_call(&self.key, salt),
                error: reached.err(),
            });
        }
        captured
    }

    /// One more agent, with a capability no other has, driven to its session; then one job
    /// demanding that capability is queued, and the agent runs it until it has renewed its
    /// lock and updated its timeline. It stays holding the job (not driven) while the ramps
    /// run.
    async fn hold_job(&mut self) -> Result<Held, String> {
        let nonce = format!("{:032x}", self.config.jti_salt);
        let mut config = (*self.config).clone();
        config
            .capabilities
            .insert(HOLDER_CAPABILITY.to_string(), nonce.clone());
        let config = Arc::new(config);
        let mut d = self.agent(self.count, &config);
        let origins = Arc::clone(&self.origins);
        let reached = d
            .drive(&origins, self.clock, SETUP_LIMIT, |d| {
                d.answered(Operation::SessionCreate)
            })
            .await;
        self.note(&d);
        let result = match reached {
            Ok(()) => self.queue_and_run(&mut d, &nonce).await,
            Err(e) => Err(format!("the job holder opened no session: {e}")),
        };
        self.holder = Some(d);
        result
    }

    async fn queue_and_run(&mut self, d: &mut Driven, nonce: &str) -> Result<Held, String> {
        let pool_id = self.pool_id.ok_or("the job holder has no pool")?;
        let job = SyntheticJob {
            // Long enough to outlast the ramps; cancelled at the end.
            steps: vec![SyntheticStep {
                duration_ms: 3_600_000,
                log_lines: 3_600,
                ..Default::default()
            }],
            demands: vec![format!("{HOLDER_CAPABILITY} -equals {nonce}")],
            ..Default::default()
        };
        let queue = Request {
            credential: fleet::pat_credential(&self.pat),
            call: ApiRequest::QueueJobs {
                pool_id,
                request: QueueJobsRequest {
                    jobs: vec![job],
                    ..Default::default()
                },
            },
        };
        match self.call(&queue).await {
            Ok(ApiResponse::QueuedJobs(_)) => {}
            Ok(ApiResponse::Error(e)) => {
                return Err(format!(
                    "the target has no job source for calibration (queue_jobs, fleetsim's admin \
                     extension, refused: {})",
                    e.message
                ));
            }
            Ok(other) => return Err(format!("queue_jobs answered {other:?}")),
            Err(e) => return Err(format!("queue_jobs: {e}")),
        }
        let origins = Arc::clone(&self.origins);
        let reached = d
            .drive(&origins, self.clock, SETUP_LIMIT, |d| {
                d.answered(Operation::LockRenew) && d.answered(Operation::TimelineUpdate)
            })
            .await;
        if let Some((r, _)) = d.sent.get(&Operation::LockRenew)
            && let ApiRequest::UpdateJobRequest { request_id, .. } = &r.call
        {
            self.held_request = Some(*request_id);
        }
        reached.map_err(|e| format!("no job reached the calibration agent: {e}"))?;
        Ok(Held {
            sent: d.sent.clone(),
        })
    }

    /// Remember the agent's id and pool, for the job and the clean-up.
    fn note(&mut self, d: &Driven) {
        if let Some(id) = d.agent_id {
            self.registered.push(id);
        }
        if self.pool_id.is_none() {
            self.pool_id = d.pool_id;
        }
    }

    /// Run `plan`'s ramp on a client of the origin its requests go to (a token exchange or
    /// a plan hub may be on another host than the target).
    async fn ramp(
        &self,
        plan: Plan,
        connected: &Connected,
        step: Duration,
    ) -> Result<ramp::Ramp, String> {
        let (request, endpoint) = &plan.origin_of;
        let (origin, _) = codec::resolve(request, endpoint, self.origins.target())
            .map_err(|e| format!("{}: {}", e.url, e.reason))?;
        let index = self.origins.index(&origin).map_err(|e| e.to_string())?;
        let target = Arc::new(RampTarget {
            client: self.route_client(index).await?,
            collection: connected.collection.clone(),
            probe: plan.probe,
            measure_cores: false,
            clients: Default::default(),
        });
        ramp::ramp(&target, step, plan.ceiling.max(1)).await
    }

    async fn route_client(&self, index: u8) -> Result<Arc<HttpClient>, String> {
        direct(self.origins.route(index).await.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    }

    /// One call with the PAT on the target (admin and clean-up calls).
    async fn call(&self, request: &Request) -> Result<ApiResponse, ClientError> {
        let http = self
            .route_client(0)
            .await
            .map_err(ClientError::BadRequest)?;
        let wire = codec::encode_request(request, &http.options().target.base_path);
        let answer = http.connection(u64::MAX).send(&wire).await?;
        Ok(codec::decode_response(&request.call, &answer))
    }

    /// Cancel the held job, stop the holder, delete every calibration agent.
    async fn clean_up(mut self) {
        let Some(pool_id) = self.pool_id else { return };
        if let Some(request_id) = self.held_request {
            let cancel = Request {
                credential: fleet::pat_credential(&self.pat),
                call: ApiRequest::CancelJob {
                    pool_id,
                    request_id,
                },
            };
            let _ = self.call(&cancel).await;
        }
        if let Some(mut d) = self.holder.take() {
            d.stop(&self.origins, self.clock).await;
        }
        for agent_id in std::mem::take(&mut self.registered) {
            let delete = Request {
                credential: fleet::pat_credential(&self.pat),
                call: ApiRequest::DeleteAgent { pool_id, agent_id },
            };
            let _ = self.call(&delete).await;
        }
    }
}

/// Wall time of run time zero, in Unix milliseconds (for JWT times).
fn unix_ms_at(clock: Clock) -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now_ms.saturating_sub(clock.now().as_micros() / 1000)
}

/// One agent and its calls in flight, driven by its drain contract until a condition holds:
/// every call it asks for goes out at once on a connection of its own, every answer and timer
/// goes back. The first request of each operation is kept.
struct Driven {
    agent: Agent,
    sent: BTreeMap<Operation, (Request, Endpoint)>,
    /// Operations answered with a success at least once.
    ok: Vec<Operation>,
    agent_id: Option<u64>,
    pool_id: Option<u32>,
    calls: JoinSet<(CallId, Operation, Result<ApiResponse, ClientError>)>,
    aborts: HashMap<CallId, AbortHandle>,
}

impl Driven {
    fn new(agent: Agent) -> Driven {
        Driven {
            agent,
            sent: BTreeMap::new(),
            ok: Vec::new(),
            agent_id: None,
            pool_id: None,
            calls: JoinSet::new(),
            aborts: HashMap::new(),
        }
    }

    fn answered(&self, op: Operation) -> bool {
        self.ok.contains(&op)
    }

    /// Drive until `done` holds (`Ok`) or `limit` passes (`Err` naming the agent's last
    /// failed call, if any).
    async fn drive(
        &mut self,
        origins: &Arc<Origins>,
        clock: Clock,
        limit: Duration,
        done: impl Fn(&Driven) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last_error = None;
        loop {
            self.drain(origins);
            if done(self) {
                return Ok(());
            }
            if self.agent.is_stopped() && self.calls.is_empty() {
                return Err(last_error.unwrap_or_else(|| "the agent stopped".into()));
            }
            let wake = self
                .agent
                .poll_timeout()
                .map(|(at, _)| clock.instant(at))
                .unwrap_or(deadline)
                .min(deadline);
            tokio::select! {
                Some(joined) = self.calls.join_next() => {
                    let Ok((id, op, result)) = joined else { continue };
                    self.aborts.remove(&id);
                    let now = clock.now();
                    match result {
                        Ok(resp) => {
                            match &resp {
                                ApiResponse::Error(e) => {
                                    last_error = Some(format!("{} refused: {}", op.name(), e.message));
                                }
                                ApiResponse::Agent(a) if matches!(op, Operation::Register | Operation::ReplaceAgent) => {
                                    self.agent_id = Some(a.id);
                                    self.ok.push(op);
                                }
                                _ => self.ok.push(op),
                            }
                            self.agent.handle_response(now, id, resp);
                        }
                        Err(e) => {
                            last_error = Some(format!("{}: {e}", op.name()));
                            self.agent.handle_transport_error(now, id, e.transport());
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return Err(last_error.unwrap_or_else(|| format!("not reached within {}s", limit.as_secs())));
                    }
                    let now = clock.now();
                    self.agent.handle_timeout(now);
                }
            }
        }
    }

    /// Start every call the agent asks for, drop every call it cancels, discard its events
    /// (the calibration agents are not part of any report).
    fn drain(&mut self, origins: &Arc<Origins>) {
        while let Some(out) = self.agent.poll_transmit() {
            match out {
                AgentOutput::Send {
                    id,
                    op,
                    request,
                    endpoint,
                    ..
                } => {
                    if let ApiRequest::CreateSession { pool_id, .. } = &request.call {
                        self.pool_id = Some(*pool_id);
                    }
                    self.sent
                        .entry(op)
                        .or_insert_with(|| ((*request).clone(), endpoint.clone()));
                    let origins = Arc::clone(origins);
                    let abort = self
                        .calls
                        .spawn(async move { (id, op, send(&origins, &request, &endpoint).await) });
                    self.aborts.insert(id, abort);
                }
                AgentOutput::Cancel { id, .. } => {
                    if let Some(abort) = self.aborts.remove(&id) {
                        abort.abort();
                    }
                }
            }
        }
        while self.agent.poll_event().is_some() {}
    }

    /// Shut the agent down (it deletes its session) and drive it until it has stopped.
    async fn stop(&mut self, origins: &Arc<Origins>, clock: Clock) {
        if self.agent.state() == AgentState::Offline && self.agent.is_stopped() {
            return;
        }
        self.agent.shutdown(clock.now());
        let _ = self
            .drive(origins, clock, STOP_LIMIT, |d| {
                d.agent.is_stopped() && d.calls.is_empty()
            })
            .await;
        self.calls.abort_all();
    }

    /// The agent's token exchange with what it takes to mint more like it.
    fn token_call(&self, key: &Arc<PrivateKey>, salt: u128) -> Option<TokenCall> {
        let (request, endpoint) = self.sent.get(&Operation::TokenExchange)?;
        let ApiRequest::Token(TokenGrant::ClientCredentials {
            client_assertion, ..
        }) = &request.call
        else {
            return None;
        };
        let claims = crypto::jwt::peek_claims(client_assertion).ok()?;
        Some(TokenCall {
            request: request.clone(),
            endpoint: endpoint.clone(),
            key: Arc::clone(key),
            claims,
            salt,
        })
    }
}

/// One call: resolved to its origin by the codec, sent on a new connection, decoded.
async fn send(
    origins: &Origins,
    request: &Request,
    endpoint: &Endpoint,
) -> Result<ApiResponse, ClientError> {
    let (origin, wire) = codec::resolve(request, endpoint, origins.target()).map_err(|e| {
        ClientError::BadTarget {
            url: e.url,
            reason: e.reason.to_string(),
        }
    })?;
    let index = origins.index(&origin)?;
    let http = direct(origins.route(index).await?)?;
    let answer = http.connection(0).send(&wire).await?;
    Ok(codec::decode_response(&request.call, &answer))
}

/// The client of a route: the calibration's registry is built with direct routes only.
fn direct(route: Route) -> Result<Arc<HttpClient>, ClientError> {
    match route {
        Route::Direct(http) => Ok(http),
        Route::Pooled(_) => Err(ClientError::BadRequest(
            "calibration agents use direct connections".into(),
        )),
    }
}
