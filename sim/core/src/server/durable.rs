//! Durable state: what the emulator must find again after a crash (`fleetsim serve
//! --state-dir`), as records a driver stores, and the rebuild of a server from them.
//!
//! The core stays sans-IO: while durability is on ([`Server::enable_durable`] or
//! [`Server::restore`]), every input marks the records it changed, and
//! [`Server::poll_durable`] turns the marks into [`Change`]s (whole-record upserts and
//! deletes) for the driver to write. A record is encoded when it is drained, not when it is
//! marked, so the many changes one request makes to a job cost one write. The driver must make
//! a batch durable before it sends the answers of the inputs that produced it (ack after
//! durable): then an answered request is never undone by a crash.
//!
//! What is durable: the server's identity (instance, deployment, project ids, the epoch),
//! pools, agents (registration, key, capabilities, client id, enabled, assignment, listener
//! tokens), job requests queued, active and finished with their plans (timeline records, logs,
//! feed, attachment sizes, within the per-plan byte budget), job tokens, pipeline runs, the id
//! sequences and the counters the admin stats show. What is not: sessions and their message
//! queues, parked polls (the real agent opens a new session when the server says its session
//! expired), and the JWT replay set (an assertion lives at most `jwt_max_lifetime`, 5
//! minutes).
//!
//! On restore, an active job whose message was never acknowledged nor its lease renewed goes
//! back to the queue (its message died with the session). Nobody runs it twice: an agent that
//! did read the message starts the job only after its first lease renewal succeeds (the real
//! agent's `JobDispatcher` waits for `firstJobRequestRenewed`; `agent::job` does the same),
//! and that renewal now fails with `JobNotFound`. One whose agent
//! acknowledged or renewed keeps its agent and lease, and its lease timer runs as before, so
//! a lease that ran out while the server was down requeues the job at once. Lease renewals
//! are written only once the lease moved half a lease past the stored one, so a renewing
//! fleet does not write a record per renewal; a restored lease is then at most half a lease
//! short, still longer than the real agent's renewal interval (60 s against a 10 minute
//! lease).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::agents::AgentRecord;
use super::auth::{TokenEntry, TokenKind};
use super::jobs::{CancelState, Job, JobState};
use super::matching::CapSet;
use super::{ConfigError, Counters, Server, ServerConfig, Timer};
use crate::SimTime;
use crate::rng::{self, StreamKind};

/// The layout of the records below. A state dir written with another version is refused.
pub const FORMAT_VERSION: u32 = 1;

/// The RNG stream index of the first restart; restart `g` draws from `RESTART_STREAM + g`, so a
/// restored server never hands out the ids, tokens and secrets its earlier lives did.
const RESTART_STREAM: u64 = 1 << 32;

/// Which table a record lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Key [`META_KEY`]: identity, pools, id sequences, counters; key [`RUNS_KEY`]: pipeline
    /// runs.
    Meta,
    /// Key: agent id.
    Agents,
    /// Key: job request id.
    Jobs,
}

/// The key of the server's own record in [`Table::Meta`].
pub const META_KEY: u64 = 0;
/// The key of the pipeline runs record in [`Table::Meta`].
pub const RUNS_KEY: u64 = 1;

/// One record write: `value` `Some` stores it (replacing), `None` deletes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub table: Table,
    pub key: u64,
    pub value: Option<Vec<u8>>,
}

/// A stored record, as [`Server::restore`] takes it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub table: Table,
    pub key: u64,
    pub value: Vec<u8>,
}

/// Why a state dir cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RestoreError {
    #[error(
        "the state dir was written with record format {found}; this fleetsim writes format \
         {FORMAT_VERSION}: use a new --state-dir (or the fleetsim that wrote it)"
    )]
    Format { found: u32 },
    #[error(
        "the state dir was written by an emulator with seed {found}, this one has seed {want}: \
         pass --seed {found} or use a new --state-dir"
    )]
    Seed { found: u64, want: u64 },
    #[error("the state dir holds an unreadable {table:?} record {key}: {reason}")]
    Corrupt {
        table: Table,
        key: u64,
        reason: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A server rebuilt from its records, and the run time it resumes at.
pub struct Restored {
    pub server: Server,
    /// Run time at `now_unix_ms`: the driver's clock continues from here (the epoch is kept,
    /// so every stored time stays valid).
    pub now: SimTime,
}

/// The server's own record.
#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    seed: u64,
    /// Lives so far (0 for the first): picks the RNG stream of the next.
    generation: u64,
    epoch_unix_ms: u64,
    instance_id: String,
    deployment_id: String,
    scope_identifier: String,
    pools: Vec<(u32, String)>,
    next_agent_id: u64,
    next_request_id: u64,
    next_message_id: u64,
    counters: Counters,
}

/// A record with the expiry of the tokens it names (the token table is rebuilt from them).
#[derive(Serialize)]
struct Out<'a, T> {
    value: &'a T,
    tokens: Vec<(&'a str, SimTime)>,
}

#[derive(Deserialize)]
struct In<T> {
    value: T,
    tokens: Vec<(String, SimTime)>,
}

/// What changed since the last drain, while durability is on.
#[derive(Default)]
pub(super) struct Journal {
    on: bool,
    seed: u64,
    generation: u64,
    meta: bool,
    runs: bool,
    agents: BTreeSet<u64>,
    jobs: BTreeSet<u64>,
    /// The `locked_until` last written per active job.
    written_until: BTreeMap<u64, SimTime>,
    /// Encoded changes not drained yet.
    ready: VecDeque<Change>,
}

impl Journal {
    pub fn job(&mut self, id: u64) {
        if self.on {
            self.jobs.insert(id);
        }
    }
    pub fn agent(&mut self, id: u64) {
        if self.on {
            self.agents.insert(id);
        }
    }
    pub fn meta(&mut self) {
        self.meta |= self.on;
    }
    pub fn runs(&mut self) {
        self.runs |= self.on;
    }
    /// A renewal moved job `id`'s lease to `until`: worth a write only past `half` a lease
    /// beyond the stored one.
    pub fn lease_moved(&mut self, id: u64, until: SimTime, half: std::time::Duration) {
        if self
            .written_until
            .get(&id)
            .is_none_or(|&stored| until >= stored + half)
        {
            self.job(id);
        }
    }
    fn dirty(&self) -> bool {
        self.meta || self.runs || !self.agents.is_empty() || !self.jobs.is_empty()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain structs, strings, maps with string keys and integers: encoding
    // cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(r: &StoredRecord) -> Result<T, RestoreError> {
    serde_json::from_slice(&r.value).map_err(|e| RestoreError::Corrupt {
        table: r.table,
        key: r.key,
        reason: e.to_string(),
    })
}

impl Server {
    /// Turn durability on for a fresh server: from now on [`Server::poll_durable`] yields the
    /// records to store, starting with the server's own. `seed` is the one it was built with
    /// (stored, so a restart with another seed is refused).
    pub fn enable_durable(&mut self, seed: u64) {
        self.journal.on = true;
        self.journal.seed = seed;
        self.journal.meta = true;
    }

    /// Whether the records changed since the last drain are all drained.
    pub fn durable_is_drained(&self) -> bool {
        !self.journal.dirty() && self.journal.ready.is_empty()
    }

    /// The next record change to store, if any. Drain it until `None` after every `handle_*`
    /// and store the batch before sending the answers those calls produced.
    pub fn poll_durable(&mut self) -> Option<Change> {
        if self.journal.ready.is_empty() && self.journal.dirty() {
            self.encode_dirty();
        }
        self.journal.ready.pop_front()
    }

    /// The Unix time of `SimTime::ZERO`.
    pub fn epoch_unix_ms(&self) -> u64 {
        self.epoch_unix_ms
    }

    fn encode_dirty(&mut self) {
        let journal = &mut self.journal;
        let mut out = std::mem::take(&mut journal.ready);
        for id in std::mem::take(&mut journal.agents) {
            let value = self.agents.get(&id).map(|rec| {
                let tokens = rec
                    .listener_tokens
                    .iter()
                    .filter_map(|t| Some((t.as_str(), self.tokens.get(t)?.expires_at)))
                    .collect();
                encode(&Out { value: rec, tokens })
            });
            out.push_back(Change {
                table: Table::Agents,
                key: id,
                value,
            });
        }
        for id in std::mem::take(&mut journal.jobs) {
            let job = self.jobs.get(&id);
            match job.and_then(|j| j.agent().and(j.locked_until)) {
                Some(until) => journal.written_until.insert(id, until),
                None => journal.written_until.remove(&id),
            };
            let value = job.map(|job| {
                let tokens = job
                    .tokens
                    .iter()
                    .filter_map(|t| Some((t.as_str(), self.tokens.get(t)?.expires_at)))
                    .collect();
                encode(&Out { value: job, tokens })
            });
            out.push_back(Change {
                table: Table::Jobs,
                key: id,
                value,
            });
        }
        if std::mem::take(&mut journal.runs) {
            out.push_back(Change {
                table: Table::Meta,
                key: RUNS_KEY,
                value: Some(encode(&self.runs)),
            });
        }
        // The server's record goes with every batch: the id sequences and counters move with
        // nearly every change, and it is small.
        journal.meta = false;
        let meta = Meta {
            format: FORMAT_VERSION,
            seed: journal.seed,
            generation: journal.generation,
            epoch_unix_ms: self.epoch_unix_ms,
            instance_id: self.instance_id.clone(),
            deployment_id: self.deployment_id.clone(),
            scope_identifier: self.scope_identifier.clone(),
            pools: self.pools.iter().map(|(k, v)| (*k, v.clone())).collect(),
            next_agent_id: self.next_agent_id,
            next_request_id: self.next_request_id,
            next_message_id: self.next_message_id,
            counters: self.counters.clone(),
        };
        out.push_back(Change {
            table: Table::Meta,
            key: META_KEY,
            value: Some(encode(&meta)),
        });
        self.journal.ready = out;
    }

    /// Rebuild a server from the records a durable server wrote (none: a fresh server whose
    /// epoch is `now_unix_ms`), with durability on. Refused when the records were written in
    /// another format or with another seed. Sessions do not come back: agents open new ones
    /// when their next poll hears their session expired. See the module doc for what happens
    /// to active jobs.
    pub fn restore(
        config: ServerConfig,
        seed: u64,
        now_unix_ms: u64,
        records: Vec<StoredRecord>,
    ) -> Result<Restored, RestoreError> {
        let meta = records
            .iter()
            .find(|r| r.table == Table::Meta && r.key == META_KEY);
        let Some(meta) = meta else {
            let mut server = Server::new(config, seed, now_unix_ms)?;
            server.enable_durable(seed);
            return Ok(Restored {
                server,
                now: SimTime::ZERO,
            });
        };
        let meta: Meta = decode(meta)?;
        if meta.format != FORMAT_VERSION {
            return Err(RestoreError::Format { found: meta.format });
        }
        if meta.seed != seed {
            return Err(RestoreError::Seed {
                found: meta.seed,
                want: seed,
            });
        }
        let mut s = Server::new(config, seed, meta.epoch_unix_ms)?;
        let generation = meta.generation + 1;
        s.rng = rng::stream(seed, StreamKind::Server, RESTART_STREAM + generation);
        s.instance_id = meta.instance_id;
        s.deployment_id = meta.deployment_id;
        s.scope_identifier = meta.scope_identifier;
        // The configured pools stay (a pool added to server.toml appears); stored ones come
        // back over them with their runtime names.
        s.pools.extend(meta.pools);
        s.next_agent_id = meta.next_agent_id;
        s.next_request_id = meta.next_request_id;
        s.next_message_id = meta.next_message_id;
        s.counters = meta.counters;
        let now = SimTime::from_micros(
            now_unix_ms
                .saturating_sub(meta.epoch_unix_ms)
                .saturating_mul(1000),
        );
        for r in &records {
            match (r.table, r.key) {
                (Table::Meta, RUNS_KEY) => s.runs = decode(r)?,
                (Table::Agents, id) => {
                    let row: In<AgentRecord> = decode(r)?;
                    s.restore_agent(id, row.value, row.tokens);
                }
                _ => {}
            }
        }
        let mut requeue = Vec::new();
        for r in records.iter().filter(|r| r.table == Table::Jobs) {
            let row: In<Job> = decode(r)?;
            if let Some(id) = s.restore_job(r.key, row.value, row.tokens) {
                requeue.push(id);
            }
        }
        // Eviction order: oldest finished first.
        let jobs = &s.jobs;
        s.finished
            .make_contiguous()
            .sort_by_key(|id| (jobs.get(id).and_then(|j| j.finish_time), *id));
        // An assignment whose job is not active on that agent (never written that way; read
        // defensively) would keep the agent from work forever.
        let stale: Vec<u64> = s
            .agents
            .iter()
            .filter(|(agent, rec)| {
                rec.assigned
                    .is_some_and(|j| s.jobs.get(&j).and_then(Job::agent) != Some(*agent))
            })
            .map(|(agent, _)| agent)
            .collect();
        for agent in stale {
            if let Some(rec) = s.agents.get_mut(&agent) {
                rec.assigned = None;
            }
        }
        s.journal = Journal {
            on: true,
            seed,
            generation,
            meta: true,
            ..Journal::default()
        };
        for (&id, job) in &s.jobs {
            if let Some(until) = job.agent().and(job.locked_until) {
                s.journal.written_until.insert(id, until);
            }
        }
        for id in requeue {
            s.requeue(now, id);
        }
        s.dispatch_pending = true;
        // Leases that ran out while the server was down requeue their jobs now.
        s.handle_timeout(now);
        Ok(Restored { server: s, now })
    }

    fn restore_agent(&mut self, id: u64, mut rec: AgentRecord, tokens: Vec<(String, SimTime)>) {
        rec.caps = CapSet::of(&rec.agent);
        // A key that parsed when the agent registered parses again.
        rec.public_key = self.parse_public_key(&rec.agent).ok().flatten();
        rec.session = None;
        rec.ready_rank = 0;
        for (token, expires_at) in tokens {
            let kind = TokenKind::Listener { agent: id };
            self.tokens.insert(token, TokenEntry { kind, expires_at });
        }
        let pool_id = rec.pool_id;
        self.agent_names
            .insert((pool_id, rec.agent.name.to_ascii_lowercase()), id);
        self.clients.insert(rec.client_id.clone(), id);
        self.agents.insert(id, rec);
        let caps = self.agents.get(&id).map(|r| &r.caps);
        self.demand_index.agent_changed(pool_id, None, caps);
        *self.pool_sizes.entry(pool_id).or_default() += 1;
    }

    /// Put job `id` back; `Some(id)` when it must go back to the queue (its message died
    /// unread with the session, or its agent is gone).
    fn restore_job(
        &mut self,
        id: u64,
        mut job: Job,
        tokens: Vec<(String, SimTime)>,
    ) -> Option<u64> {
        for (token, expires_at) in tokens {
            let kind = TokenKind::Job { request: id };
            self.tokens.insert(token, TokenEntry { kind, expires_at });
        }
        // Messages on the old sessions are gone: a cancellation waiting on one is sent again on
        // the agent's next session.
        if let CancelState::Requested { message_id } = &mut job.cancel {
            *message_id = None;
        }
        self.plans.insert(job.plan_id.clone(), id);
        let mut requeue = None;
        match &mut job.state {
            JobState::Queued => {}
            JobState::Active {
                agent,
                message_id,
                renewed,
            } => {
                let agent = *agent;
                let held = self
                    .agents
                    .get(&agent)
                    .is_some_and(|a| a.assigned == Some(id));
                if message_id.is_some() && !*renewed || !held {
                    requeue = Some(id);
                }
                *message_id = None;
                let values = job.secrets.iter().chain(job.tokens.iter());
                job.scanner = Some(crate::mask::LeakScanner::new(values.map(String::as_str)));
                if let Some(until) = job.locked_until {
                    let at = until + self.cfg.lease_grace;
                    self.set_timer(at, Timer::LeaseExpiry(id));
                }
            }
            JobState::Finished => {
                self.finished_plan_bytes += job.plan.stored_bytes;
            }
        }
        let state = job.state.clone();
        self.jobs.insert(id, job);
        match state {
            JobState::Queued => self.enqueue(id),
            JobState::Finished => self.finished.push_back(id),
            JobState::Active { .. } => {}
        }
        requeue
    }
}
