//! Pools, agents, sessions, per-session message queues and parked long polls.
//!
//! An agent is online exactly while it holds a session. A session lives until it is deleted,
//! its agent is deleted or replaced, its agent loses a job lease, or it sees no poll for
//! `session_idle_timeout` with none parked. When it ends, parked polls are answered with a
//! typed error and a job message it never acknowledged goes back to the queue.
//!
//! Messages stay queued until `DELETE …/messages/{id}`: a `GET` only shows them. `lastMessageId`
//! is a cursor (only later messages are shown), so the keep-alive GET, which throws its answer
//! away, never loses a job. The emulator never sends `AgentRefresh` (no agent self-updates) and
//! never dequeues a message on a GET.

use std::cmp::Reverse;
use std::collections::VecDeque;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::auth::Need;
use super::config::Limits;
use super::jobs::check_demand;
use super::matching::{CapSet, demand_set};
use super::{Handled, RequestId, Server, ServerOutput, Timer, too_large};
use crate::SimTime;
use crate::api::{AgentInclude, AgentQuery, ApiError, ApiResponse, Credential, ErrorKind};
use crate::crypto::PublicKey;
use crate::event::CryptoOp;
use crate::proto::{
    AgentStatus, ListOf, TaskAgent, TaskAgentAuthorization, TaskAgentMessage, TaskAgentSession,
    TaskAgentSessionKey, TaskAgentUpdate,
};

/// Longest base64 `exponent` or `modulus` of a registration key stored: an RSA-4096 modulus
/// is 684 characters. Real crypto parses the key anyway; modelled crypto stores it unparsed.
const PUBLIC_KEY_PART_MAX: usize = 1024;

/// One registered agent. Serialised as a durable record (`server::durable`) without what is
/// rebuilt on restore (folded capabilities, parsed key, rank) or is not durable (the session).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct AgentRecord {
    pub pool_id: u32,
    /// As registered (the response adds status, authorization and assigned request).
    pub agent: TaskAgent,
    /// Its capabilities folded for matching, rebuilt whenever they change
    /// (`server::matching`).
    #[serde(skip)]
    pub caps: CapSet,
    pub client_id: String,
    /// Parsed once at registration (real crypto); `None` in modelled mode.
    #[serde(skip)]
    pub public_key: Option<PublicKey>,
    pub enabled: bool,
    pub created_on: String,
    #[serde(skip)]
    pub session: Option<Session>,
    /// The job request it holds, if any.
    pub assigned: Option<u64>,
    /// The last job request it finished, if any (`includeLastCompletedRequest`).
    pub last_completed: Option<u64>,
    pub listener_tokens: VecDeque<String>,
    /// Its rank in `Server::ready` (the parked polls counted when it entered), 0 when absent.
    #[serde(skip)]
    pub ready_rank: u32,
}

/// One live session.
pub(super) struct Session {
    pub id: String,
    /// The AES-256 session key; `None` in modelled mode (message bodies are plain JSON).
    pub key: Option<[u8; 32]>,
    pub messages: VecDeque<TaskAgentMessage>,
    /// Parked polls, ascending (at most `max_parked_polls_per_session`, so a short `Vec`
    /// that keeps its allocation across polls beats a tree that allocates on every park).
    pub parked: Vec<RequestId>,
    /// When the idle timer fires unless the session is touched again.
    pub idle_deadline: SimTime,
    /// When its `SessionIdle` timer is armed (at or before `idle_deadline`). A touch only
    /// moves the deadline; the timer re-arms itself when it fires early, so a poll costs no
    /// timer-set update (two tree walks per poll at a million sessions otherwise).
    pub idle_timer: SimTime,
}

/// A held `GET messages`.
pub(super) struct ParkedPoll {
    pub agent: u64,
    pub last_message_id: Option<u64>,
    pub deadline: SimTime,
}

/// The registered agents, indexed by id. Ids are handed out in sequence from 1 and never
/// reused, so a `Vec` slot per id gives one-probe lookups (a `BTreeMap` walk costs several
/// cache misses per lookup at a million agents, and every request does a few), and iteration
/// is id order, as the `BTreeMap` it replaces. Records are boxed so a deleted agent's slot
/// costs 8 bytes and the table grows by copying pointers, not ~1 KB records.
#[derive(Default)]
pub(super) struct AgentTable {
    slots: Vec<Option<Box<AgentRecord>>>,
    len: usize,
}

impl AgentTable {
    fn index(id: u64) -> Option<usize> {
        usize::try_from(id.checked_sub(1)?).ok()
    }

    /// The record of agent `id`, if registered.
    pub fn get(&self, id: &u64) -> Option<&AgentRecord> {
        self.slots.get(Self::index(*id)?)?.as_deref()
    }

    /// The record of agent `id`, if registered, for changing.
    pub fn get_mut(&mut self, id: &u64) -> Option<&mut AgentRecord> {
        self.slots.get_mut(Self::index(*id)?)?.as_deref_mut()
    }

    /// Store agent `id` (replacing a record with the same id).
    pub fn insert(&mut self, id: u64, record: AgentRecord) {
        let Some(i) = Self::index(id) else {
            return;
        };
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        if self.slots[i].replace(Box::new(record)).is_none() {
            self.len += 1;
        }
    }

    /// Forget agent `id`, returning its record.
    pub fn remove(&mut self, id: &u64) -> Option<AgentRecord> {
        let record = self.slots.get_mut(Self::index(*id)?)?.take()?;
        self.len -= 1;
        Some(*record)
    }

    /// Registered agents.
    pub fn len(&self) -> usize {
        self.len
    }

    /// (id, record) in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &AgentRecord)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i as u64 + 1, r.as_deref()?)))
    }

    /// Records in id order.
    pub fn values(&self) -> impl Iterator<Item = &AgentRecord> {
        self.slots.iter().filter_map(|r| r.as_deref())
    }
}

impl std::ops::Index<&u64> for AgentTable {
    type Output = AgentRecord;

    /// Callers index only ids they just found registered; a missing id is a server bug.
    fn index(&self, id: &u64) -> &AgentRecord {
        self.get(id).expect("agent id checked before indexing")
    }
}

fn agent_not_found(pool_id: u32, agent_id: u64) -> ApiError {
    ApiError::new(
        ErrorKind::AgentNotFound,
        format!("agent {agent_id} is not registered in pool {pool_id}; configure the agent again"),
    )
}

fn session_expired(session_id: &str) -> ApiError {
    ApiError::new(
        ErrorKind::SessionExpired,
        format!(
            "session {} does not exist or has expired; create a new session",
            crate::codec::text::truncate(session_id, 64)
        ),
    )
}

impl Server {
    // -----------------------------------------------------------------------------------------
    // Pools and agents
    // -----------------------------------------------------------------------------------------

    /// `GET …/agents`: by name (one probe) or the whole pool, filtered by demands, each shown
    /// with what `query.include` asks for.
    pub(super) fn query_agents(
        &self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        query: AgentQuery,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat_or_listener(now, cred, Need::Read)?;
        self.pool_exists(pool_id)?;
        query.demands.iter().try_for_each(|d| check_demand(d))?;
        let demands = demand_set(&query.demands);
        let ids: Vec<u64> = match &query.agent_name {
            Some(name) => self
                .agent_names
                .get(&(pool_id, name.to_ascii_lowercase()))
                .copied()
                .into_iter()
                .collect(),
            None => self
                .agents
                .iter()
                .filter(|(_, a)| a.pool_id == pool_id)
                .map(|(id, _)| id)
                .collect(),
        };
        let agents = ids
            .into_iter()
            .filter(|id| self.agents[id].caps.meets_all(&demands))
            .map(|id| self.agent_view_with(id, &query.include))
            .collect();
        Ok(ApiResponse::Agents(ListOf::new(agents)))
    }

    pub(super) fn get_agent(
        &self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        agent_id: u64,
        include: &AgentInclude,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat_or_listener(now, cred, Need::Read)?;
        self.pool_exists(pool_id)?;
        self.agent_in_pool(pool_id, agent_id)?;
        Ok(ApiResponse::Agent(Box::new(
            self.agent_view_with(agent_id, include),
        )))
    }

    pub(super) fn add_agent(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        agent: TaskAgent,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Manage)?;
        self.pool_exists(pool_id)?;
        let agent = stored_agent(agent);
        check_agent(&self.cfg.limits, &agent)?;
        if let Some(&existing) = self
            .agent_names
            .get(&(pool_id, agent.name.to_ascii_lowercase()))
        {
            return Err(ApiError::new(
                ErrorKind::AgentExists,
                format!(
                    "an agent named {:?} already exists in pool {pool_id} (id {existing}); \
                     replace it (--replace) or pick another name",
                    agent.name
                ),
            ));
        }
        if self.agents.len() >= self.cfg.limits.max_agents {
            return Err(Self::throttled("agents", self.cfg.limits.max_agents));
        }
        let public_key = self.parse_public_key(&agent)?;
        let id = self.next_agent_id;
        self.next_agent_id += 1;
        let client_id = self.new_uuid();
        let caps = CapSet::of(&agent);
        let record = AgentRecord {
            pool_id,
            enabled: agent.enabled.unwrap_or(true),
            agent: TaskAgent {
                id,
                enabled: None,
                ..agent
            },
            caps,
            client_id: client_id.clone(),
            public_key,
            created_on: self.wall(now),
            session: None,
            assigned: None,
            last_completed: None,
            listener_tokens: VecDeque::new(),
            ready_rank: 0,
        };
        self.agent_names
            .insert((pool_id, record.agent.name.to_ascii_lowercase()), id);
        self.clients.insert(client_id, id);
        self.agents.insert(id, record);
        self.journal.agent(id);
        let caps = self.agents.get(&id).map(|r| &r.caps);
        self.demand_index.agent_changed(pool_id, None, caps);
        *self.pool_sizes.entry(pool_id).or_default() += 1;
        Ok(ApiResponse::Agent(Box::new(self.agent_view(id))))
    }

    /// PUT: keep id, client id and user capabilities; take the new key, version, OS and system
    /// capabilities. The old install's tokens and session end (it is being replaced).
    pub(super) fn replace_agent(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        agent_id: u64,
        agent: TaskAgent,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Manage)?;
        self.pool_exists(pool_id)?;
        self.agent_in_pool(pool_id, agent_id)?;
        let new_key = self.free_name(pool_id, agent_id, &agent.name)?;
        let kept = &self.agents[&agent_id];
        let enabled = agent.enabled.unwrap_or(kept.enabled);
        let agent = TaskAgent {
            id: agent_id,
            enabled: None,
            user_capabilities: kept.agent.user_capabilities.clone(),
            ..stored_agent(agent)
        };
        check_agent(&self.cfg.limits, &agent)?;
        let public_key = self.parse_public_key(&agent)?;
        self.end_session(now, agent_id, ErrorKind::SessionExpired);
        self.revoke_listener_tokens(agent_id);
        self.journal.agent(agent_id);
        let rec = self
            .agents
            .get_mut(&agent_id)
            .ok_or_else(|| agent_not_found(pool_id, agent_id))?;
        let old_key = (pool_id, rec.agent.name.to_ascii_lowercase());
        rec.public_key = public_key;
        rec.enabled = enabled;
        rec.agent = agent;
        self.agent_names.remove(&old_key);
        self.agent_names.insert(new_key, agent_id);
        self.capabilities_changed(agent_id);
        self.refresh_idle(agent_id);
        Ok(ApiResponse::Agent(Box::new(self.agent_view(agent_id))))
    }

    /// PATCH: change what the body names, keep the rest. `enabled: false` takes the agent out
    /// of the idle index, so dispatch skips it at no cost; a job it already holds runs on (the
    /// real service does not stop a running job when its agent is disabled). Session and
    /// tokens are untouched: a disabled agent stays online and keeps polling.
    pub(super) fn update_agent(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        agent_id: u64,
        update: TaskAgentUpdate,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Manage)?;
        self.pool_exists(pool_id)?;
        self.agent_in_pool(pool_id, agent_id)?;
        if let Some(id) = update.id.filter(|&id| id != 0 && id != agent_id) {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("the body names agent {id}, the path agent {agent_id}"),
            ));
        }
        let new_key = match &update.name {
            Some(name) => Some(self.free_name(pool_id, agent_id, name)?),
            None => None,
        };
        let caps_change =
            update.system_capabilities.is_some() || update.user_capabilities.is_some();
        // The agent as it would be stored, checked whole before anything changes.
        let mut a = self.agents[&agent_id].agent.clone();
        if let Some(name) = update.name {
            a.name = name;
        }
        a.version = update.version.unwrap_or(std::mem::take(&mut a.version));
        a.os_description = update.os_description.or(a.os_description.take());
        a.max_parallelism = update.max_parallelism.unwrap_or(a.max_parallelism);
        if let Some(caps) = update.system_capabilities {
            a.system_capabilities = caps;
        }
        if let Some(caps) = update.user_capabilities {
            a.user_capabilities = caps;
        }
        check_agent(&self.cfg.limits, &a)?;
        self.journal.agent(agent_id);
        let rec = self
            .agents
            .get_mut(&agent_id)
            .ok_or_else(|| agent_not_found(pool_id, agent_id))?;
        let old_key = (pool_id, rec.agent.name.to_ascii_lowercase());
        rec.agent = a;
        if let Some(enabled) = update.enabled {
            rec.enabled = enabled;
        }
        if let Some(new_key) = new_key {
            self.agent_names.remove(&old_key);
            self.agent_names.insert(new_key, agent_id);
        }
        if caps_change {
            self.capabilities_changed(agent_id);
        }
        self.refresh_idle(agent_id);
        // Capabilities may now meet a waiting job's demands.
        self.dispatch_pending = true;
        Ok(ApiResponse::Agent(Box::new(self.agent_view(agent_id))))
    }

    /// The agent's capabilities changed: fold them again and move the agent between the
    /// supporters of its pool's demand sets.
    fn capabilities_changed(&mut self, agent_id: u64) {
        self.journal.agent(agent_id);
        let Some(rec) = self.agents.get_mut(&agent_id) else {
            return;
        };
        let old = std::mem::replace(&mut rec.caps, CapSet::of(&rec.agent));
        let pool_id = rec.pool_id;
        let new = self.agents.get(&agent_id).map(|r| &r.caps);
        self.demand_index.agent_changed(pool_id, Some(&old), new);
    }

    /// The name key `name` would take in `pool_id`, checked: valid, and not another agent's.
    fn free_name(
        &self,
        pool_id: u32,
        agent_id: u64,
        name: &str,
    ) -> Result<(u32, String), ApiError> {
        check_agent_name(&self.cfg.limits, name)?;
        let key = (pool_id, name.to_ascii_lowercase());
        match self.agent_names.get(&key) {
            Some(&other) if other != agent_id => Err(ApiError::new(
                ErrorKind::AgentExists,
                format!("another agent (id {other}) is already named {name:?}"),
            )),
            _ => Ok(key),
        }
    }

    /// DELETE: the agent's job goes back to the queue, its session ends, its tokens stop.
    pub(super) fn delete_agent(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        agent_id: u64,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Manage)?;
        self.pool_exists(pool_id)?;
        self.agent_in_pool(pool_id, agent_id)?;
        if let Some(request) = self.agents[&agent_id].assigned {
            self.requeue(now, request);
        }
        self.end_session(now, agent_id, ErrorKind::AccessTokenExpired);
        self.revoke_listener_tokens(agent_id);
        self.journal.agent(agent_id);
        if let Some(rec) = self.agents.remove(&agent_id) {
            self.demand_index
                .agent_changed(rec.pool_id, Some(&rec.caps), None);
            if let Some(set) = self.ready.get_mut(&(rec.pool_id, Reverse(rec.ready_rank))) {
                set.remove(agent_id);
            }
            self.agent_names
                .remove(&(rec.pool_id, rec.agent.name.to_ascii_lowercase()));
            self.clients.remove(&rec.client_id);
            if let Some(size) = self.pool_sizes.get_mut(&rec.pool_id) {
                *size = size.saturating_sub(1);
            }
        }
        if let Some(idle) = self.idle.get_mut(&pool_id) {
            idle.remove(agent_id);
        }
        Ok(ApiResponse::NoContent)
    }

    fn agent_in_pool(&self, pool_id: u32, agent_id: u64) -> Result<(), ApiError> {
        match self.agents.get(&agent_id) {
            Some(a) if a.pool_id == pool_id => Ok(()),
            _ => Err(agent_not_found(pool_id, agent_id)),
        }
    }

    /// The registration's public key: required and validated with real crypto; carried but not
    /// parsed in modelled mode (a virtual agent has no key).
    pub(super) fn parse_public_key(
        &self,
        agent: &TaskAgent,
    ) -> Result<Option<PublicKey>, ApiError> {
        if !self.real_crypto() {
            return Ok(None);
        }
        let wire = agent
            .authorization
            .as_ref()
            .and_then(|a| a.public_key.as_ref())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::BadRequest,
                    "authorization.publicKey {exponent, modulus} is required (an RSA-2048 key)",
                )
            })?;
        PublicKey::from_wire(wire).map(Some).map_err(|e| {
            ApiError::new(
                ErrorKind::BadRequest,
                format!("authorization.publicKey: {e}"),
            )
        })
    }

    /// The agent as the API shows it.
    pub(super) fn agent_view(&self, agent_id: u64) -> TaskAgent {
        let Some(rec) = self.agents.get(&agent_id) else {
            return TaskAgent::default();
        };
        let mut view = rec.agent.clone();
        view.id = agent_id;
        view.enabled = Some(rec.enabled);
        view.status = Some(if rec.session.is_some() {
            AgentStatus::Online
        } else {
            AgentStatus::Offline
        });
        view.created_on = Some(rec.created_on.clone());
        view.authorization = Some(TaskAgentAuthorization {
            authorization_url: Some(self.authorization_url.clone()),
            client_id: Some(rec.client_id.clone()),
            public_key: rec
                .agent
                .authorization
                .as_ref()
                .and_then(|a| a.public_key.clone()),
        });
        view.assigned_request = rec.assigned.map(|r| self.job_view(r));
        view.last_completed_request = rec.last_completed.map(|r| self.job_view(r));
        view
    }

    /// The agent as a `GET` shows it: capabilities, assigned and last completed request only
    /// when asked for (Microsoft's `include*` options, all off by default).
    fn agent_view_with(&self, agent_id: u64, include: &AgentInclude) -> TaskAgent {
        let mut view = self.agent_view(agent_id);
        if !include.capabilities {
            view.system_capabilities.clear();
            view.user_capabilities.clear();
        }
        if !include.assigned_request {
            view.assigned_request = None;
        }
        if !include.last_completed_request {
            view.last_completed_request = None;
        }
        view
    }

    /// Keep the idle and ready indexes in step with the agent's state (called after every
    /// change to enabled, session, assignment or the session's parked polls).
    pub(super) fn refresh_idle(&mut self, agent_id: u64) {
        let Some(rec) = self.agents.get_mut(&agent_id) else {
            return;
        };
        let idle = rec.enabled && rec.session.is_some() && rec.assigned.is_none();
        let parked = rec.session.as_ref().map_or(0, |s| s.parked.len() as u32);
        let rank = if idle { parked } else { 0 };
        let (pool_id, old_rank) = (rec.pool_id, std::mem::replace(&mut rec.ready_rank, rank));
        if old_rank != rank {
            if old_rank > 0
                && let Some(set) = self.ready.get_mut(&(pool_id, Reverse(old_rank)))
            {
                set.remove(agent_id);
            }
            if rank > 0 {
                self.ready
                    .entry((pool_id, Reverse(rank)))
                    .or_default()
                    .insert(agent_id);
            }
        }
        let set = self.idle.entry(pool_id).or_default();
        if idle {
            if set.insert(agent_id) {
                self.dispatch_pending = true;
            }
        } else {
            set.remove(agent_id);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Sessions
    // -----------------------------------------------------------------------------------------

    pub(super) fn create_session(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        session: TaskAgentSession,
    ) -> Result<ApiResponse, ApiError> {
        let agent_id = self.listener_agent(now, cred)?;
        self.pool_exists(pool_id)?;
        self.agent_in_pool(pool_id, agent_id)?;
        if session.agent.id != 0 && session.agent.id != agent_id {
            return Err(ApiError::new(
                ErrorKind::AccessDenied,
                format!(
                    "the token belongs to agent {agent_id}, the session names agent {}",
                    session.agent.id
                ),
            ));
        }
        if self.agents[&agent_id].session.is_some() {
            return Err(ApiError::new(
                ErrorKind::SessionConflict,
                format!(
                    "agent {agent_id} already has a live session; stop the other listener or \
                     wait for that session to expire"
                ),
            ));
        }
        if self.sessions.len() >= self.cfg.limits.max_sessions {
            return Err(Self::throttled("sessions", self.cfg.limits.max_sessions));
        }
        let (key, encryption_key) = self.new_session_key(agent_id)?;
        let session_id = self.new_uuid();
        let idle_deadline = now + self.cfg.session_idle_timeout;
        self.journal.agent(agent_id);
        let rec = self
            .agents
            .get_mut(&agent_id)
            .ok_or_else(|| agent_not_found(pool_id, agent_id))?;
        rec.session = Some(Session {
            id: session_id.clone(),
            key,
            messages: VecDeque::new(),
            parked: Vec::new(),
            idle_deadline,
            idle_timer: idle_deadline,
        });
        self.sessions
            .insert(super::fasthash::InlineKey::new(&session_id), agent_id);
        self.set_timer(idle_deadline, Timer::SessionIdle(agent_id));
        self.refresh_idle(agent_id);
        // A job still running from before, canceled while the agent had no session.
        if let Some(request) = self.agents[&agent_id].assigned {
            self.send_cancellation(request);
        }
        Ok(ApiResponse::Session(TaskAgentSession {
            session_id,
            encryption_key,
            ..session
        }))
    }

    /// A fresh AES-256 key: OAEP-SHA1-wrapped to the agent's key with real crypto; with
    /// modelled crypto no key at all (the agent then reads plain message bodies), the wrap
    /// counted as modelled work.
    fn new_session_key(
        &mut self,
        agent_id: u64,
    ) -> Result<(Option<[u8; 32]>, Option<TaskAgentSessionKey>), ApiError> {
        if !self.real_crypto() {
            self.crypto_event(CryptoOp::OaepWrap, 32, 0);
            return Ok((None, None));
        }
        let Some(public) = self
            .agents
            .get(&agent_id)
            .and_then(|a| a.public_key.clone())
        else {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                "the agent has no registered key",
            ));
        };
        let key: [u8; 32] = self.random_bytes();
        let (wrapped, nanos) = self.meter.measure(|| public.encrypt_oaep_sha1(&key));
        self.crypto_event(CryptoOp::OaepWrap, 32, nanos);
        let wrapped = wrapped.map_err(|e| {
            ApiError::new(
                ErrorKind::Unavailable,
                format!("wrapping the session key failed: {e}"),
            )
        })?;
        Ok((
            Some(key),
            Some(TaskAgentSessionKey {
                encrypted: true,
                value: STANDARD.encode(wrapped),
            }),
        ))
    }

    pub(super) fn delete_session(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        session_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let agent_id = self.owned_session(now, cred, pool_id, session_id)?;
        self.end_session(now, agent_id, ErrorKind::SessionExpired);
        Ok(ApiResponse::NoContent)
    }

    /// The agent that owns `session_id`, checked against the caller's listener token.
    fn owned_session(
        &self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        session_id: &str,
    ) -> Result<u64, ApiError> {
        let caller = self.listener_agent(now, cred)?;
        self.pool_exists(pool_id)?;
        let Some(&owner) = self.sessions.get(session_id.as_bytes()) else {
            return Err(session_expired(session_id));
        };
        if owner != caller {
            return Err(ApiError::new(
                ErrorKind::AccessDenied,
                "this session belongs to another agent",
            ));
        }
        self.agent_in_pool(pool_id, owner)?;
        Ok(owner)
    }

    /// End an agent's session (if any): answer its parked polls with `answer`, requeue a job
    /// whose message it never acknowledged, take it out of the idle set.
    pub(super) fn end_session(&mut self, now: SimTime, agent_id: u64, answer: ErrorKind) {
        let Some(session) = self
            .agents
            .get_mut(&agent_id)
            .and_then(|a| a.session.take())
        else {
            return;
        };
        self.sessions.remove(session.id.as_bytes());
        self.clear_timer(session.idle_timer, Timer::SessionIdle(agent_id));
        for id in session.parked {
            if let Some(poll) = self.parked.remove(&id) {
                self.clear_timer(poll.deadline, Timer::PollHold(id));
                let message = match answer {
                    ErrorKind::AccessTokenExpired => {
                        "the agent was deleted or replaced".to_string()
                    }
                    _ => "the session ended; create a new session".to_string(),
                };
                let response = ApiResponse::Error(ApiError::new(answer, message));
                self.outputs
                    .push_back(ServerOutput::Respond { id, response });
            }
        }
        if let Some(request) = self.agents[&agent_id].assigned {
            // Its messages went with the session: a cancellation must be sent again.
            self.cancellation_lost(request);
            if self.jobs.get(&request).is_some_and(|j| j.undelivered()) {
                self.requeue(now, request);
            }
        }
        self.refresh_idle(agent_id);
    }

    /// A poll, an acknowledgement or a released poll counts as life: push the idle deadline.
    fn touch_session(&mut self, now: SimTime, agent_id: u64) {
        let deadline = now + self.cfg.session_idle_timeout;
        let Some(session) = self
            .agents
            .get_mut(&agent_id)
            .and_then(|a| a.session.as_mut())
        else {
            return;
        };
        session.idle_deadline = deadline;
        // Only a deadline earlier than the armed timer (a clock that stepped back) re-arms now;
        // a later one is picked up when the timer fires.
        if deadline < session.idle_timer {
            let old = std::mem::replace(&mut session.idle_timer, deadline);
            self.clear_timer(old, Timer::SessionIdle(agent_id));
            self.set_timer(deadline, Timer::SessionIdle(agent_id));
        }
    }

    /// The idle timer fired (it was taken off the timer set): re-arm it at the deadline if
    /// the session was touched since, else expire the session unless a poll is parked on it.
    pub(super) fn session_idle(&mut self, now: SimTime, agent_id: u64) {
        let parked = match self.agents.get(&agent_id).and_then(|a| a.session.as_ref()) {
            None => return,
            Some(s) if s.idle_deadline > now => {
                self.arm_idle_timer(agent_id);
                return;
            }
            Some(s) => !s.parked.is_empty(),
        };
        if parked {
            self.touch_session(now, agent_id);
            self.arm_idle_timer(agent_id);
        } else {
            self.end_session(now, agent_id, ErrorKind::SessionExpired);
        }
    }

    /// Arm the session's idle timer at its deadline (its previous timer already fired).
    fn arm_idle_timer(&mut self, agent_id: u64) {
        let Some(session) = self
            .agents
            .get_mut(&agent_id)
            .and_then(|a| a.session.as_mut())
        else {
            return;
        };
        session.idle_timer = session.idle_deadline;
        let at = session.idle_deadline;
        self.set_timer(at, Timer::SessionIdle(agent_id));
    }

    // -----------------------------------------------------------------------------------------
    // Messages
    // -----------------------------------------------------------------------------------------

    pub(super) fn get_message(
        &mut self,
        now: SimTime,
        cred: &Credential,
        id: RequestId,
        pool_id: u32,
        session_id: &str,
        last_message_id: Option<u64>,
    ) -> Result<Handled, ApiError> {
        let agent_id = self.owned_session(now, cred, pool_id, session_id)?;
        if let Some(message) = self.visible_message(agent_id, last_message_id) {
            self.touch_session(now, agent_id);
            return Ok(Handled::Respond(ApiResponse::Message(message)));
        }
        if self.cfg.long_poll_hold.is_zero() {
            self.touch_session(now, agent_id);
            return Ok(Handled::Respond(ApiResponse::NoMessage));
        }
        let limits = &self.cfg.limits;
        let session_parked = self.agents[&agent_id]
            .session
            .as_ref()
            .map_or(0, |s| s.parked.len());
        if self.parked.len() >= limits.max_parked_polls {
            return Err(Self::throttled(
                "parked long polls",
                limits.max_parked_polls,
            ));
        }
        if session_parked >= limits.max_parked_polls_per_session {
            return Err(Self::throttled(
                "parked long polls for this session",
                limits.max_parked_polls_per_session,
            ));
        }
        if self.parked.contains_key(&id) {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "request id already parked (driver bug)",
            ));
        }
        self.touch_session(now, agent_id);
        let deadline = now + self.cfg.long_poll_hold;
        self.parked.insert(
            id,
            ParkedPoll {
                agent: agent_id,
                last_message_id,
                deadline,
            },
        );
        if let Some(session) = self
            .agents
            .get_mut(&agent_id)
            .and_then(|a| a.session.as_mut())
            && let Err(at) = session.parked.binary_search(&id)
        {
            session.parked.insert(at, id);
        }
        self.refresh_idle(agent_id);
        self.set_timer(deadline, Timer::PollHold(id));
        Ok(Handled::Parked)
    }

    /// The first message after the cursor. A cursor at or past any id this server issued is
    /// stale (the agent kept it across an emulator restart) and is ignored, so new messages
    /// are not hidden behind it.
    fn visible_message(&self, agent_id: u64, cursor: Option<u64>) -> Option<TaskAgentMessage> {
        let cursor = cursor.filter(|&c| c < self.next_message_id);
        let session = self.agents.get(&agent_id)?.session.as_ref()?;
        session
            .messages
            .iter()
            .find(|m| cursor.is_none_or(|c| m.message_id > c))
            .cloned()
    }

    pub(super) fn delete_message(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        message_id: u64,
        session_id: &str,
    ) -> Result<ApiResponse, ApiError> {
        let agent_id = self.owned_session(now, cred, pool_id, session_id)?;
        self.touch_session(now, agent_id);
        if let Some(session) = self
            .agents
            .get_mut(&agent_id)
            .and_then(|a| a.session.as_mut())
        {
            session.messages.retain(|m| m.message_id != message_id);
        }
        if let Some(request) = self.agents[&agent_id].assigned {
            self.job_message_acknowledged(now, request, message_id);
        }
        Ok(ApiResponse::NoContent)
    }

    /// Queue a message for an agent's session and wake the polls that can see it.
    pub(super) fn push_message(&mut self, agent_id: u64, message: TaskAgentMessage) {
        let Some(session) = self
            .agents
            .get_mut(&agent_id)
            .and_then(|a| a.session.as_mut())
        else {
            return;
        };
        session.messages.push_back(message);
        let waiting: Vec<RequestId> = session.parked.to_vec();
        for id in waiting {
            let cursor = self.parked.get(&id).and_then(|p| p.last_message_id);
            if let Some(message) = self.visible_message(agent_id, cursor)
                && let Some(poll) = self.parked.remove(&id)
            {
                self.clear_timer(poll.deadline, Timer::PollHold(id));
                if let Some(s) = self
                    .agents
                    .get_mut(&agent_id)
                    .and_then(|a| a.session.as_mut())
                {
                    s.parked.retain(|&p| p != id);
                }
                let response = ApiResponse::Message(message);
                self.outputs
                    .push_back(ServerOutput::Respond { id, response });
            }
        }
        self.refresh_idle(agent_id);
    }

    /// Whether the agent's session has room for one more message.
    pub(super) fn has_message_room(&self, agent_id: u64) -> bool {
        self.agents
            .get(&agent_id)
            .and_then(|a| a.session.as_ref())
            .is_some_and(|s| s.messages.len() < self.cfg.limits.max_messages_per_session)
    }

    /// A parked poll's hold ended with nothing to deliver.
    pub(super) fn poll_hold_ended(&mut self, now: SimTime, id: RequestId) {
        if let Some(poll) = self.parked.remove(&id) {
            self.unpark_from_session(now, poll.agent, id);
            self.outputs.push_back(ServerOutput::Respond {
                id,
                response: ApiResponse::NoMessage,
            });
        }
    }

    /// Forget a parked poll on its session and count its end as life.
    pub(super) fn unpark_from_session(&mut self, now: SimTime, agent_id: u64, id: RequestId) {
        if let Some(session) = self
            .agents
            .get_mut(&agent_id)
            .and_then(|a| a.session.as_mut())
        {
            session.parked.retain(|&p| p != id);
        }
        self.refresh_idle(agent_id);
        self.touch_session(now, agent_id);
    }

    /// The session key of an agent's live session (`None`: plaintext bodies).
    pub(super) fn session_key(&self, agent_id: u64) -> Option<[u8; 32]> {
        self.agents.get(&agent_id)?.session.as_ref()?.key
    }
}

fn check_agent_name(limits: &Limits, name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "name is empty; give the agent a name",
        ));
    }
    let chars = name.chars().count();
    let max = limits.max_agent_name_chars;
    if chars > max {
        return Err(too_large(
            "name",
            chars,
            "characters",
            max,
            "max_agent_name_chars",
        ));
    }
    Ok(())
}

/// What of a client's `TaskAgent` body is stored: the fields the server shows from its own
/// state (status, createdOn, the requests, the authorization's URL and client id) are dropped,
/// so a body cannot park arbitrary data in them.
fn stored_agent(agent: TaskAgent) -> TaskAgent {
    TaskAgent {
        status: None,
        created_on: None,
        assigned_request: None,
        last_completed_request: None,
        authorization: agent.authorization.map(|a| TaskAgentAuthorization {
            public_key: a.public_key,
            ..TaskAgentAuthorization::default()
        }),
        ..agent
    }
}

/// Every stored field of an agent within `limits` (each refusal names the field and limit).
fn check_agent(limits: &Limits, agent: &TaskAgent) -> Result<(), ApiError> {
    check_agent_name(limits, &agent.name)?;
    let max = limits.max_agent_field_bytes;
    let fields = [
        ("version", Some(agent.version.as_str())),
        ("osDescription", agent.os_description.as_deref()),
        ("provisioningState", agent.provisioning_state.as_deref()),
    ];
    for (field, value) in fields {
        let len = value.map_or(0, str::len);
        if len > max {
            return Err(too_large(field, len, "bytes", max, "max_agent_field_bytes"));
        }
    }
    if let Some(key) = agent
        .authorization
        .as_ref()
        .and_then(|a| a.public_key.as_ref())
    {
        let len = key.modulus.len().max(key.exponent.len());
        if len > PUBLIC_KEY_PART_MAX {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!(
                    "authorization.publicKey is {len} characters long; an RSA key of at most 4096 \
                     bits is at most {PUBLIC_KEY_PART_MAX}"
                ),
            ));
        }
    }
    let maps = [
        ("systemCapabilities", &agent.system_capabilities),
        ("userCapabilities", &agent.user_capabilities),
    ];
    let mut bytes = 0usize;
    for (field, map) in maps {
        if map.len() > limits.max_capabilities {
            return Err(too_large(
                field,
                map.len(),
                "entries",
                limits.max_capabilities,
                "max_capabilities",
            ));
        }
        bytes += map.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    }
    if bytes > limits.max_capability_bytes {
        return Err(too_large(
            "systemCapabilities and userCapabilities together",
            bytes,
            "bytes",
            limits.max_capability_bytes,
            "max_capability_bytes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    // Goal: agent names must be present and bounded in characters, not bytes.
    #[test]
    fn agent_names_are_checked() {
        let limits = Limits::default();
        let max = limits.max_agent_name_chars;
        assert!(check_agent_name(&limits, "agent-1").is_ok());
        assert!(check_agent_name(&limits, " ").is_err());
        assert!(check_agent_name(&limits, &"é".repeat(max)).is_ok());
        let err = check_agent_name(&limits, &"x".repeat(max + 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(
            err.message.contains("name") && err.message.contains("max_agent_name_chars"),
            "{}",
            err.message
        );
    }

    // Goal: every stored agent field is bounded, and each refusal names its field.
    #[test]
    fn agent_fields_are_bounded() {
        let limits = Limits {
            max_capabilities: 2,
            max_capability_bytes: 10,
            max_agent_field_bytes: 8,
            ..Limits::default()
        };
        let base = TaskAgent {
            name: "a".into(),
            ..TaskAgent::default()
        };
        let refused = |agent: TaskAgent, field: &str| {
            let err = check_agent(&limits, &agent).unwrap_err();
            assert!(err.message.starts_with(field), "{field}: {}", err.message);
        };
        assert!(check_agent(&limits, &base).is_ok());
        let caps = |n: usize, len: usize| {
            (0..n)
                .map(|i| (format!("{i}"), "v".repeat(len)))
                .collect::<BTreeMap<_, _>>()
        };
        refused(
            TaskAgent {
                version: "1.2.3.4.5.6".into(),
                ..base.clone()
            },
            "version",
        );
        refused(
            TaskAgent {
                system_capabilities: caps(3, 0),
                ..base.clone()
            },
            "systemCapabilities",
        );
        refused(
            TaskAgent {
                system_capabilities: caps(1, 5),
                user_capabilities: caps(1, 5),
                ..base.clone()
            },
            "systemCapabilities and userCapabilities",
        );
    }
}
