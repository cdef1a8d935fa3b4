//! The emulator's state machine: pools, agents, PATs and OAuth tokens, sessions with their
//! message queues and parked long polls, the job queue with leases, and plans (timelines, logs,
//! feeds, attachments, events) with the secret-leak scan.
//!
//! It speaks typed `api` values only; `codec` turns HTTP into those and back. Both the live
//! front (hyper) and the virtual-time driver call it the same way (see [`Server`]).
//!
//! Architecture Invariant: no IO, no clock reads, no global RNG, no `HashMap` iteration. Time is
//! the `now` argument; ids, tokens, session keys, IVs and secret values come from one seeded
//! stream (`rng::StreamKind::Server`), so a seed replays a virtual run exactly. Every table is
//! bounded (`config::Limits`); at a bound the request is refused with a typed error and nothing
//! changes. A rejected request never changes state.
//!
//! Module map: `config` (what the server is told), `auth` (PATs, tokens, JWT assertions),
//! `agents` (pools, agents, sessions, messages, long polls), `jobs` (queue, assignment, leases,
//! the job message), `plans` (the plan hub and the leak scan), `pipelines` (the Pipelines Runs
//! API: runs of configured pipelines, each a set of jobs); and the hot-path containers that
//! keep every per-request cost flat up to a million agents: `timers` (ordered timers plus a
//! FIFO lane for long-poll holds), `idset` (bitmap id sets for idle and ready agents),
//! `fasthash` (a fixed hasher for string-keyed lookup tables that are never iterated),
//! `matching` (capabilities folded once per agent, queued demand sets with supporter counts,
//! so no request costs O(agents × queued jobs)).

mod agents;
mod auth;
pub mod config;
pub mod durable;
mod fasthash;
mod idset;
mod jobs;
pub mod layout;
mod matching;
mod pipelines;
mod plans;
mod pools;
mod timers;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::RngCore as _;

use crate::SimTime;
use crate::api::{self, ApiError, ApiRequest, ApiResponse, EmulatorStats, ErrorKind, Request};
use crate::crypto::{CryptoMode, Meter};
use crate::event::{CryptoOp, Event, Side};
use crate::rng::{self, Rng, StreamKind};

pub use config::{
    ALL_SCOPES, ConfigError, DEFAULT_PIPELINE_STEPS, DEFAULT_POOL_ID, DEFAULT_POOL_NAME, Limits,
    MAX_JOBS_PER_RUN, PatConfig, PipelineConfig, PoolConfig, SCOPE_ADMIN, SCOPE_AGENTPOOLS_MANAGE,
    SCOPE_AGENTPOOLS_READ, SCOPE_BUILD_EXECUTE, SCOPE_BUILD_READ, ServerConfig,
};
pub use layout::{Layout, Listener};

/// The driver's id for one request, unique among requests the server may still answer later
/// (parked long polls).
pub type RequestId = u64;

/// What [`Server::handle_request`] did with a request.
#[must_use]
#[derive(Clone, Debug, PartialEq)]
// Returned once per request and consumed at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Handled {
    /// The answer, ready now.
    Respond(ApiResponse),
    /// A long poll is held; its answer comes later through [`Server::poll_output`].
    Parked,
}

/// Answers the server releases on its own (parked long polls).
#[must_use]
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum ServerOutput {
    /// Answer the parked request `id` with `response`.
    Respond {
        id: RequestId,
        response: ApiResponse,
    },
}

/// Why the server wants to wake up: a closed set, so a trace line reads "LeaseExpiry(7) @ …".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// A parked long poll reaches its hold time and is answered `NoMessage`.
    PollHold(RequestId),
    /// A job request's lease ran out (`lockedUntil` + grace): the job is requeued.
    LeaseExpiry(u64),
    /// A session saw no poll for `session_idle_timeout`: it expires, the agent goes offline.
    SessionIdle(u64),
}

/// The emulated Azure Pipelines agent service.
///
/// Drain contract: after any `handle_*` call, drain [`Server::poll_output`] until it returns
/// `None` (answers for parked long polls), drain [`Server::poll_event`] if telemetry is wanted,
/// then ask [`Server::poll_timeout`] for the next wake-up and call [`Server::handle_timeout`]
/// when it is reached. Calling `handle_timeout` early or late is harmless: it does what is due
/// at the `now` it is given.
pub struct Server {
    cfg: ServerConfig,
    /// `public_url` without a trailing slash.
    public_url: String,
    /// `{public_url}/_apis/oauth2/token` or the layout's token URL: the registration's
    /// `authorizationUrl` and the JWT audience.
    authorization_url: String,
    /// The plan hub's base URL, named in the job's `SystemVssConnection.url`: `public_url`, or
    /// the layout's plan listener.
    plan_url: String,
    epoch_unix_ms: u64,
    rng: Rng,
    meter: Meter,
    /// `connectionData.instanceId` and `deploymentId`.
    instance_id: String,
    deployment_id: String,
    /// The project GUID every plan's `scopeIdentifier` names.
    scope_identifier: String,
    pools: BTreeMap<u32, String>,
    agents: agents::AgentTable,
    /// (pool id, lower-case name) → agent id.
    agent_names: BTreeMap<(u32, String), u64>,
    /// OAuth client id → agent id.
    clients: fasthash::FastMap<String, u64>,
    next_agent_id: u64,
    /// session id → agent id.
    sessions: fasthash::FastMap<fasthash::InlineKey, u64>,
    /// Agents with a live session, enabled and without a job, per pool: who can take work.
    idle: BTreeMap<u32, idset::IdSet>,
    /// The idle agents of `idle` that have long polls parked right now, per (pool, parked
    /// polls, most first). A parked poll answers a job the instant it is assigned, so
    /// dispatch prefers these over agents between polls, whose job would wait for their next
    /// poll. More parked polls rank first: the real agent parks a keep-alive GET beside its
    /// main poll and discards the keep-alive's answer, so an agent with both parked is sure to
    /// take the job now, one with a single parked poll may only have the keep-alive waiting.
    ready: BTreeMap<(u32, Reverse<u32>), idset::IdSet>,
    /// Registered agents per pool, kept in step with `agents` so listing pools (every agent's
    /// configure step does) costs O(pools), not O(agents).
    pool_sizes: BTreeMap<u32, u32>,
    parked: fasthash::FastMap<RequestId, agents::ParkedPoll>,
    tokens: auth::Tokens,
    jtis: auth::JtiSet,
    jobs: BTreeMap<u64, jobs::Job>,
    /// Queued request ids; ids grow with submission, so set order is FIFO order and a requeued
    /// job gets its old place back.
    queue: BTreeSet<u64>,
    /// The demand sets of the queued jobs with their supporter counts.
    demand_index: matching::DemandIndex,
    /// plan id → request id.
    plans: fasthash::FastMap<String, u64>,
    /// Finished request ids, oldest first (evicted past `max_finished_jobs` and
    /// `max_finished_plan_bytes`).
    finished: VecDeque<u64>,
    /// Bytes the plans of the jobs in `finished` hold (their `stored_bytes`, fixed once a job
    /// finished: a finished plan takes no more writes).
    finished_plan_bytes: usize,
    next_request_id: u64,
    next_message_id: u64,
    /// Pipeline runs (the Pipelines Runs API).
    runs: pipelines::Runs,
    timers: timers::Timers,
    outputs: VecDeque<ServerOutput>,
    events: VecDeque<Event>,
    /// Set when a job or an idle agent appeared since the last dispatch.
    dispatch_pending: bool,
    counters: Counters,
    /// The durable records changed since the last drain (`server::durable`); off unless a
    /// driver turns durability on.
    journal: durable::Journal,
}

/// Monotonic counters behind [`EmulatorStats`].
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Counters {
    jobs_completed: u64,
    jobs_canceled: u64,
    jobs_requeued: u64,
    leaked_secrets: u64,
    tokens_issued: u64,
    tokens_rotated: u64,
    events_dropped: u64,
}

impl Server {
    /// A server with the built-in pool `Default` (id 1), the configured pools and PATs, and an
    /// RNG stream derived from `seed`. `epoch_unix_ms` is the wall time of `SimTime::ZERO`,
    /// used for the timestamps the protocol shows and for PAT and JWT expiry.
    pub fn new(config: ServerConfig, seed: u64, epoch_unix_ms: u64) -> Result<Server, ConfigError> {
        config.validate()?;
        let mut rng = rng::stream(seed, StreamKind::Server, 0);
        let instance_id = rng::uuid(&mut rng).to_string();
        let deployment_id = rng::uuid(&mut rng).to_string();
        let scope_identifier = rng::uuid(&mut rng).to_string();
        let mut pools = BTreeMap::new();
        pools.insert(DEFAULT_POOL_ID, DEFAULT_POOL_NAME.to_string());
        for pool in &config.pools {
            pools.insert(pool.id, pool.name.clone());
        }
        let public_url = config.public_url();
        let layout = &config.layout;
        Ok(Server {
            authorization_url: layout
                .token_url
                .clone()
                .unwrap_or_else(|| format!("{public_url}{}", crate::codec::TOKEN_PATH)),
            plan_url: layout.plan_url.as_deref().map_or_else(
                || public_url.clone(),
                |u| u.trim_end_matches('/').to_string(),
            ),
            public_url,
            epoch_unix_ms,
            rng,
            meter: Meter::off(),
            instance_id,
            deployment_id,
            scope_identifier,
            pools,
            agents: agents::AgentTable::default(),
            agent_names: BTreeMap::new(),
            clients: fasthash::FastMap::default(),
            next_agent_id: 1,
            sessions: fasthash::FastMap::default(),
            idle: BTreeMap::new(),
            ready: BTreeMap::new(),
            pool_sizes: BTreeMap::new(),
            parked: fasthash::FastMap::default(),
            tokens: auth::Tokens::default(),
            jtis: auth::JtiSet::default(),
            jobs: BTreeMap::new(),
            queue: BTreeSet::new(),
            demand_index: matching::DemandIndex::default(),
            plans: fasthash::FastMap::default(),
            finished: VecDeque::new(),
            finished_plan_bytes: 0,
            next_request_id: 1,
            next_message_id: 1,
            runs: pipelines::Runs::default(),
            timers: timers::Timers::default(),
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            dispatch_pending: false,
            counters: Counters::default(),
            journal: durable::Journal::default(),
            cfg: config,
        })
    }

    /// Time crypto operations with `meter` (the live front passes a monotonic clock).
    pub fn set_meter(&mut self, meter: Meter) {
        self.meter = meter;
    }

    // -----------------------------------------------------------------------------------------
    // Input
    // -----------------------------------------------------------------------------------------

    /// Handle one request. `id` names it if it is parked (long polls only).
    pub fn handle_request(&mut self, now: SimTime, id: RequestId, req: Request) -> Handled {
        let handled = match self.route(now, id, req) {
            Ok(handled) => handled,
            Err(err) => Handled::Respond(ApiResponse::Error(err)),
        };
        self.dispatch(now);
        handled
    }

    /// The client of parked request `id` went away: forget it (no answer is produced).
    pub fn handle_disconnect(&mut self, now: SimTime, id: RequestId) {
        if let Some(poll) = self.parked.remove(&id) {
            self.clear_timer(poll.deadline, Timer::PollHold(id));
            self.unpark_from_session(now, poll.agent, id);
        }
    }

    /// Do everything due at `now`: answer polls whose hold ended, requeue jobs whose lease ran
    /// out, expire idle sessions.
    pub fn handle_timeout(&mut self, now: SimTime) {
        while let Some((at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                // A lane entry whose poll was released (and pruned late) is skipped.
                Timer::PollHold(id) if self.parked.get(&id).is_none_or(|p| p.deadline != at) => {}
                Timer::PollHold(id) => self.poll_hold_ended(now, id),
                Timer::LeaseExpiry(request_id) => self.lease_expired(now, request_id),
                Timer::SessionIdle(agent_id) => self.session_idle(now, agent_id),
            }
            let parked = &self.parked;
            self.timers
                .prune_holds(|at, id| parked.get(&id).is_some_and(|p| p.deadline == at));
        }
        self.dispatch(now);
    }

    // -----------------------------------------------------------------------------------------
    // Output
    // -----------------------------------------------------------------------------------------

    /// The next answer for a parked request, if any.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    /// The next telemetry event (crypto work on the emulator side), if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<SimTime> {
        self.timers.first().map(|(at, _)| at)
    }

    /// The next wake-up with its reason, for traces.
    pub fn next_timer(&self) -> Option<(SimTime, Timer)> {
        self.timers.first()
    }

    // -----------------------------------------------------------------------------------------
    // Getters
    // -----------------------------------------------------------------------------------------

    /// The counters, as the admin API shows them.
    pub fn stats(&self) -> EmulatorStats {
        let active = self.jobs.values().filter(|j| j.agent().is_some());
        let (assigned, leased) =
            active.fold((0, 0), |(a, l), j| (a + 1, l + u64::from(j.renewed())));
        EmulatorStats {
            agents: self.agents.len() as u64,
            agents_online: self.sessions.len() as u64,
            sessions: self.sessions.len() as u64,
            parked_polls: self.parked.len() as u64,
            jobs_queued: self.queue.len() as u64,
            jobs_unmatched: self
                .queue
                .iter()
                .filter(|id| self.is_unmatched(**id))
                .count() as u64,
            jobs_assigned: assigned,
            jobs_completed: self.counters.jobs_completed,
            jobs_canceled: self.counters.jobs_canceled,
            jobs_requeued: self.counters.jobs_requeued,
            leases_active: leased,
            leaked_secrets: self.counters.leaked_secrets,
            tokens_issued: self.counters.tokens_issued,
            tokens_rotated: self.counters.tokens_rotated,
        }
    }

    /// Agent × demand-set evaluations done so far (registrations, capability changes, new
    /// demand sets, dispatch). Read routes (stats, job lists) do none: tests use this to prove
    /// that their cost does not grow with agents × queued jobs.
    pub fn match_checks(&self) -> u64 {
        self.demand_index.checks()
    }

    /// Telemetry events dropped because nobody drained [`Server::poll_event`].
    pub fn events_dropped(&self) -> u64 {
        self.counters.events_dropped
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// `{public_url}/_apis/oauth2/token`: the agents' `authorizationUrl` and JWT audience.
    pub fn authorization_url(&self) -> &str {
        &self.authorization_url
    }

    // -----------------------------------------------------------------------------------------
    // Routing
    // -----------------------------------------------------------------------------------------

    fn route(&mut self, now: SimTime, id: RequestId, req: Request) -> Result<Handled, ApiError> {
        use ApiRequest as A;
        let cred = req.credential;
        let respond = |r: ApiResponse| Ok(Handled::Respond(r));
        match req.call {
            A::ConnectionData => {
                self.any_credential(now, &cred)?;
                respond(ApiResponse::ConnectionData(self.connection_data()))
            }
            A::Options { area } => {
                self.any_credential(now, &cred)?;
                respond(ApiResponse::Locations(crate::codec::locations(
                    area.as_deref(),
                )))
            }
            A::ResourceAreas { .. } => {
                self.any_credential(now, &cred)?;
                respond(ApiResponse::NoResourceAreas)
            }
            A::ListPools { pool_name } => {
                let query = api::PoolQuery {
                    pool_name,
                    ..api::PoolQuery::default()
                };
                respond(self.query_pools(now, &cred, &query)?)
            }
            A::QueryPools { query } => respond(self.query_pools(now, &cred, &query)?),
            A::GetPool { pool_id, query } => respond(self.get_pool(now, &cred, pool_id, &query)?),
            A::AddPool { pool } => respond(self.add_pool(now, &cred, pool)?),
            A::UpdatePool { pool_id, pool } => {
                respond(self.update_pool(now, &cred, pool_id, pool)?)
            }
            A::DeletePool { pool_id } => respond(self.delete_pool(now, &cred, pool_id)?),
            A::ListAgents {
                pool_id,
                agent_name,
            } => {
                let query = api::AgentQuery {
                    agent_name,
                    ..api::AgentQuery::default()
                };
                respond(self.query_agents(now, &cred, pool_id, query)?)
            }
            A::QueryAgents { pool_id, query } => {
                respond(self.query_agents(now, &cred, pool_id, query)?)
            }
            A::AddAgent { pool_id, agent } => respond(self.add_agent(now, &cred, pool_id, *agent)?),
            A::GetAgent { pool_id, agent_id } => {
                let include = api::AgentInclude::default();
                respond(self.get_agent(now, &cred, pool_id, agent_id, &include)?)
            }
            A::GetAgentWith {
                pool_id,
                agent_id,
                include,
            } => respond(self.get_agent(now, &cred, pool_id, agent_id, &include)?),
            A::UpdateAgent {
                pool_id,
                agent_id,
                update,
            } => respond(self.update_agent(now, &cred, pool_id, agent_id, update)?),
            A::ReplaceAgent {
                pool_id,
                agent_id,
                agent,
            } => respond(self.replace_agent(now, &cred, pool_id, agent_id, *agent)?),
            A::DeleteAgent { pool_id, agent_id } => {
                respond(self.delete_agent(now, &cred, pool_id, agent_id)?)
            }
            A::Token(grant) => respond(self.token(now, grant)?),
            A::CreateSession { pool_id, session } => {
                respond(self.create_session(now, &cred, pool_id, session)?)
            }
            A::DeleteSession {
                pool_id,
                session_id,
            } => respond(self.delete_session(now, &cred, pool_id, &session_id)?),
            A::GetMessage {
                pool_id,
                session_id,
                last_message_id,
            } => self.get_message(now, &cred, id, pool_id, &session_id, last_message_id),
            A::DeleteMessage {
                pool_id,
                message_id,
                session_id,
            } => respond(self.delete_message(now, &cred, pool_id, message_id, &session_id)?),
            A::UpdateJobRequest {
                pool_id,
                request_id,
                lock_token,
                update,
            } => respond(self.update_job_request(
                now,
                &cred,
                pool_id,
                request_id,
                &lock_token,
                update,
            )?),
            A::QueueJobs { pool_id, request } => {
                respond(self.queue_jobs(now, &cred, pool_id, request)?)
            }
            A::ListJobRequests { pool_id } => respond(self.list_job_requests(now, &cred, pool_id)?),
            A::CancelJob {
                pool_id,
                request_id,
            } => respond(self.cancel_job(now, &cred, pool_id, request_id)?),
            A::AdminStats => {
                self.require_pat(now, &cred, auth::Need::Admin)?;
                respond(ApiResponse::Stats(self.stats()))
            }
            A::ExpireTokens(storm) => respond(self.token_expiry_storm(now, &cred, &storm)?),
            A::UpdateTimelineRecords {
                plan,
                timeline_id,
                records,
            } => respond(self.update_records(now, &cred, &plan, &timeline_id, records)?),
            A::AppendFeed {
                plan,
                timeline_id,
                record_id,
                feed,
            } => respond(self.append_feed(now, &cred, &plan, &timeline_id, &record_id, feed)?),
            A::CreateLog { plan, log } => respond(self.create_log(now, &cred, &plan, log)?),
            A::AppendLog {
                plan,
                log_id,
                content,
            } => respond(self.append_log(now, &cred, &plan, log_id, &content)?),
            A::PutAttachment {
                plan,
                timeline_id,
                record_id,
                kind,
                name,
                content,
            } => {
                let att = plans::AttachmentPut {
                    timeline_id,
                    record_id,
                    kind,
                    name,
                    content,
                };
                respond(self.put_attachment(now, &cred, &plan, att)?)
            }
            A::PostEvent { plan, event } => respond(self.post_event(now, &cred, &plan, event)?),
            A::RunPipeline {
                project,
                pipeline_id,
                params,
            } => respond(self.run_pipeline(now, &cred, &project, pipeline_id, params)?),
            A::GetPipelineRun {
                project,
                pipeline_id,
                run_id,
            } => respond(self.get_run(now, &cred, &project, pipeline_id, run_id)?),
            A::ListPipelineRuns {
                project,
                pipeline_id,
            } => respond(self.list_runs(now, &cred, &project, pipeline_id)?),
            A::UpdateBuild {
                project,
                build_id,
                update,
            } => respond(self.update_build(now, &cred, &project, build_id, update)?),
        }
    }

    fn connection_data(&self) -> crate::proto::ConnectionData {
        use crate::proto::{AccessMapping, ConnectionData, Identity, LocationServiceData};
        let identity = Identity {
            id: self.deployment_id.clone(),
            provider_display_name: "fleetsim".to_string(),
            is_active: true,
        };
        ConnectionData {
            authenticated_user: identity.clone(),
            authorized_user: identity,
            instance_id: self.instance_id.clone(),
            deployment_id: self.deployment_id.clone(),
            deployment_type: if self.cfg.layout.is_hosted() {
                "hosted"
            } else {
                "onPremises"
            }
            .to_string(),
            location_service_data: LocationServiceData {
                // The TFS service owner (the collection's service on Services and Server alike);
                // `deploymentType` is what tells clients which URL rules apply.
                service_owner: "00025394-6065-48ca-87d9-7f5672854ef7".to_string(),
                default_access_mapping_moniker: "PublicAccessMapping".to_string(),
                last_change_id: 1,
                last_change_id64: 1,
                access_mappings: vec![AccessMapping {
                    display_name: "Public Access Mapping".to_string(),
                    moniker: "PublicAccessMapping".to_string(),
                    access_point: self.public_url.clone(),
                }],
            },
        }
    }

    // -----------------------------------------------------------------------------------------
    // Shared helpers
    // -----------------------------------------------------------------------------------------

    /// Wall-clock Unix milliseconds at run time `now`.
    fn unix_ms(&self, now: SimTime) -> u64 {
        self.epoch_unix_ms.saturating_add(now.as_micros() / 1000)
    }

    /// ISO-8601 UTC at run time `now`.
    fn wall(&self, now: SimTime) -> String {
        crate::codec::iso8601_utc(self.unix_ms(now))
    }

    fn new_uuid(&mut self) -> String {
        rng::uuid(&mut self.rng).to_string()
    }

    fn random_bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut bytes = [0u8; N];
        self.rng.fill_bytes(&mut bytes);
        bytes
    }

    fn pool_exists(&self, pool_id: u32) -> Result<(), ApiError> {
        if self.pools.contains_key(&pool_id) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::PoolNotFound,
                format!(
                    "agent pool {pool_id} does not exist; GET _apis/distributedtask/pools lists the pools"
                ),
            ))
        }
    }

    fn set_timer(&mut self, at: SimTime, timer: Timer) {
        self.timers.insert(at, timer);
    }

    fn clear_timer(&mut self, at: SimTime, timer: Timer) {
        self.timers.remove(at, timer);
        if matches!(timer, Timer::PollHold(_)) {
            let parked = &self.parked;
            self.timers
                .prune_holds(|at, id| parked.get(&id).is_some_and(|p| p.deadline == at));
        }
    }

    /// Record crypto work done (`nanos` measured) or modelled (`nanos` 0).
    fn crypto_event(&mut self, op: CryptoOp, bytes: u64, nanos: u64) {
        if self.events.len() >= self.cfg.limits.max_pending_events {
            self.counters.events_dropped += 1;
            return;
        }
        self.events.push_back(Event::Crypto {
            side: Side::Emulator,
            op,
            count: 1,
            bytes,
            nanos,
        });
    }

    fn real_crypto(&self) -> bool {
        self.cfg.crypto_mode == CryptoMode::Real
    }

    fn throttled(what: &str, limit: usize) -> ApiError {
        ApiError::new(
            ErrorKind::Throttled,
            format!(
                "the emulator holds its maximum of {limit} {what}; retry later or raise limits in server.toml"
            ),
        )
    }
}

/// A 400 naming the stored field that is too large, its size, the limit and the key in
/// server.toml that sets it.
fn too_large(field: &str, size: usize, unit: &str, max: usize, key: &str) -> ApiError {
    ApiError::new(
        ErrorKind::BadRequest,
        format!(
            "{field} is {size} {unit}; at most {max} are accepted (limits.{key} in server.toml)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::{Credential, Request};

    fn admin() -> Credential {
        Credential::Basic {
            user: "u".into(),
            password: "pat".into(),
        }
    }

    // Goal: an invalid config is refused at construction, with the reason.
    #[test]
    fn new_validates_the_config() {
        let mut config = ServerConfig::with_env_pat("pat");
        config.limits.max_agents = 0;
        assert_eq!(
            Server::new(config, 1, 0).err(),
            Some(ConfigError::Zero("limits.max_agents"))
        );
    }

    // Goal: a fresh server has no timers, no output and the built-in pool; the admin stats
    // route answers the same counters as `stats()`.
    #[test]
    fn fresh_server_is_quiet() {
        let mut server = Server::new(ServerConfig::with_env_pat("pat"), 1, 0).unwrap();
        assert_eq!(server.poll_timeout(), None);
        assert_eq!(server.poll_output(), None);
        assert_eq!(server.poll_event(), None);
        let req = Request {
            credential: admin(),
            call: ApiRequest::AdminStats,
        };
        let handled = server.handle_request(SimTime::ZERO, 1, req);
        assert_eq!(
            handled,
            Handled::Respond(ApiResponse::Stats(server.stats()))
        );
        let req = Request {
            credential: admin(),
            call: ApiRequest::ListPools { pool_name: None },
        };
        let Handled::Respond(ApiResponse::Pools(pools)) =
            server.handle_request(SimTime::ZERO, 2, req)
        else {
            panic!("pools")
        };
        assert_eq!(pools.value[0].name, DEFAULT_POOL_NAME);
    }

    // Goal: the wall clock is the epoch plus run time, rendered in UTC.
    #[test]
    fn wall_time_adds_run_time_to_the_epoch() {
        let server = Server::new(ServerConfig::default(), 1, 1_000).unwrap();
        let t = SimTime::ZERO + Duration::from_millis(1_500);
        assert_eq!(server.unix_ms(t), 2_500);
        assert_eq!(server.wall(t), "1970-01-01T00:00:02.500Z");
        assert_eq!(
            server.authorization_url(),
            "http://127.0.0.1:8080/_apis/oauth2/token"
        );
    }
}
