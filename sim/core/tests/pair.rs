//! Whole-protocol tests: virtual agents against the real `server::Server` in virtual time.
//!
//! `Pair` is a quinn-style harness: typed requests cross a fake network with a fixed one-way
//! latency, the clock jumps to the next deadline (a network delivery, a server timer or an agent
//! timer), and a step cap turns a livelock into a failure instead of a hang. Nothing here reads
//! a clock or sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::agent::{Agent, AgentConfig, AgentOutput, CallId, RegisterMode};
use fleetsim_core::api::{ApiError, ApiRequest, ApiResponse, Credential, Request};
use fleetsim_core::codec;
use fleetsim_core::crypto::{CryptoMode, PrivateKey};
use fleetsim_core::event::{Event, Outcome};
use fleetsim_core::job::{QueueJobsRequest, SyntheticJob, SyntheticStep};
use fleetsim_core::ops::Operation;
use fleetsim_core::proto::TaskResult;
use fleetsim_core::rng::{self, StreamKind};
use fleetsim_core::server::{ALL_SCOPES, Handled, PatConfig, Server, ServerConfig, ServerOutput};

/// The PAT every test registers (and queues jobs) with.
const PAT: &str = "pair-pat";
/// Wall time of `SimTime::ZERO`.
const EPOCH_UNIX_MS: u64 = 1_767_225_600_000;
/// One-way network latency.
const LATENCY: Duration = Duration::from_millis(5);
/// Steps before a run is declared a livelock.
const STEP_CAP: u64 = 5_000_000;

/// One RSA key for every real-crypto agent in this file (key generation is slow).
fn shared_key() -> Arc<PrivateKey> {
    static KEY: OnceLock<Arc<PrivateKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(PrivateKey::generate(2048).expect("keygen")))
        .clone()
}

/// A message on the fake network (payloads boxed: requests and answers differ in size).
#[derive(Debug)]
enum Packet {
    ToServer {
        agent: usize,
        call: CallId,
        request: Box<Request>,
    },
    ToAgent {
        agent: usize,
        call: CallId,
        response: Box<ApiResponse>,
    },
}

/// Agents and one server on a virtual clock.
struct Pair {
    server: Server,
    agents: Vec<Agent>,
    now: SimTime,
    /// Deliveries ordered by (time, sequence).
    net: BTreeMap<(SimTime, u64), Packet>,
    seq: u64,
    /// Server request id → the agent call it carries (parked polls answer later).
    at_server: BTreeMap<u64, (usize, CallId)>,
    /// Calls the agents cancelled; their packets are dropped.
    cancelled: BTreeSet<(usize, CallId)>,
    next_request: u64,
    /// Every agent event, in order.
    events: Vec<Event>,
    steps: u64,
    /// Send every request and answer through the HTTP codec (the live driver's path), keeping
    /// each call's request to decode its answer.
    through_codec: Option<BTreeMap<(usize, CallId), ApiRequest>>,
}

impl Pair {
    fn new(server_config: ServerConfig, seed: u64) -> Pair {
        let server = Server::new(server_config, seed, EPOCH_UNIX_MS).expect("server config");
        Pair {
            server,
            agents: Vec::new(),
            now: SimTime::ZERO,
            net: BTreeMap::new(),
            seq: 0,
            at_server: BTreeMap::new(),
            cancelled: BTreeSet::new(),
            next_request: 1,
            events: Vec::new(),
            steps: 0,
            through_codec: None,
        }
    }

    /// Like `new`, but every message crosses the codec as HTTP-shaped bytes.
    fn with_codec(server_config: ServerConfig, seed: u64) -> Pair {
        Pair {
            through_codec: Some(BTreeMap::new()),
            ..Pair::new(server_config, seed)
        }
    }

    /// A request as the server receives it: through the codec when enabled.
    fn arrive(
        &mut self,
        agent: usize,
        call: CallId,
        request: Request,
    ) -> Result<Request, ApiError> {
        let Some(calls) = self.through_codec.as_mut() else {
            return Ok(request);
        };
        let wire = codec::encode_request(&request, "/DefaultCollection");
        calls.insert((agent, call), request.call);
        codec::decode_request(&wire, 64 * 1024 * 1024)
    }

    /// Send an answer back to an agent: through the codec when enabled.
    fn reply(&mut self, agent: usize, call: CallId, response: ApiResponse) {
        let response = match self
            .through_codec
            .as_mut()
            .and_then(|c| c.remove(&(agent, call)))
        {
            Some(request) => {
                let ctx = codec::ResponseContext {
                    public_url: "http://emu".into(),
                    ..Default::default()
                };
                codec::decode_response(&request, &codec::encode_response(&response, &ctx))
            }
            None => response,
        };
        self.send(Packet::ToAgent {
            agent,
            call,
            response: Box::new(response),
        });
    }

    /// Add agent `index` starting now, with real crypto when `config` says so.
    fn add_agent(&mut self, index: u32, config: Arc<AgentConfig>, seed: u64) -> usize {
        let key = (config.crypto_mode == CryptoMode::Real).then(shared_key);
        let rng = rng::stream(seed, StreamKind::Agent, u64::from(index));
        self.agents
            .push(Agent::new(index, config, key, rng, self.now, EPOCH_UNIX_MS));
        let a = self.agents.len() - 1;
        self.drain_agent(a);
        a
    }

    /// Queue jobs through the admin API (answered at once, no network).
    fn queue_jobs(&mut self, jobs: Vec<SyntheticJob>) {
        let request = Request {
            credential: Credential::Basic {
                user: "admin".into(),
                password: PAT.into(),
            },
            call: ApiRequest::QueueJobs {
                pool_id: 1,
                request: QueueJobsRequest {
                    count: 0,
                    template: None,
                    jobs,
                },
            },
        };
        let id = self.request_id();
        match self.server.handle_request(self.now, id, request) {
            Handled::Respond(ApiResponse::QueuedJobs(_)) => {}
            other => panic!("queueing jobs failed: {other:?}"),
        }
        self.drain_server();
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    fn send(&mut self, packet: Packet) {
        self.seq += 1;
        self.net.insert((self.now + LATENCY, self.seq), packet);
    }

    fn drain_agent(&mut self, a: usize) {
        while let Some(out) = self.agents[a].poll_transmit() {
            match out {
                AgentOutput::Send { id, request, .. } => self.send(Packet::ToServer {
                    agent: a,
                    call: id,
                    request,
                }),
                AgentOutput::Cancel { id, .. } => {
                    self.cancelled.insert((a, id));
                    let parked = self.at_server.iter().find(|(_, v)| **v == (a, id));
                    if let Some((&rid, _)) = parked {
                        self.at_server.remove(&rid);
                        self.server.handle_disconnect(self.now, rid);
                        self.drain_server();
                    }
                }
            }
        }
        while let Some(ev) = self.agents[a].poll_event() {
            self.events.push(ev);
        }
    }

    fn drain_server(&mut self) {
        while let Some(ServerOutput::Respond { id, response }) = self.server.poll_output() {
            if let Some((agent, call)) = self.at_server.remove(&id) {
                self.send(Packet::ToAgent {
                    agent,
                    call,
                    response: Box::new(response),
                });
            }
        }
        while self.server.poll_event().is_some() {}
    }

    /// The next deadline of anything in the pair.
    fn next_deadline(&self) -> Option<SimTime> {
        let net = self.net.keys().next().map(|k| k.0);
        let server = self.server.poll_timeout();
        let agents = self
            .agents
            .iter()
            .filter_map(|a| a.poll_timeout().map(|t| t.0))
            .min();
        [net, server, agents].into_iter().flatten().min()
    }

    /// Run until `until` (or until nothing is left to do).
    fn run_until(&mut self, until: SimTime) {
        while let Some(at) = self.next_deadline().filter(|&t| t <= until) {
            self.steps += 1;
            assert!(
                self.steps < STEP_CAP,
                "step cap reached at {}: livelock",
                self.now
            );
            self.now = self.now.max(at);
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Run until `done` holds, failing past `limit`.
    fn run_until_true(&mut self, limit: SimTime, mut done: impl FnMut(&Pair) -> bool) {
        while !done(self) {
            let at = self
                .next_deadline()
                .expect("the pair went quiet before the goal");
            assert!(at <= limit, "goal not reached by {limit}");
            self.steps += 1;
            assert!(
                self.steps < STEP_CAP,
                "step cap reached at {}: livelock",
                self.now
            );
            self.now = self.now.max(at);
            self.step();
        }
    }

    /// Everything due at `now`: deliveries first, then server and agent timers.
    fn step(&mut self) {
        let now = self.now;
        while let Some(entry) = self.net.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Packet::ToServer {
                    agent,
                    call,
                    request,
                } => {
                    if self.cancelled.contains(&(agent, call)) {
                        continue;
                    }
                    let request = match self.arrive(agent, call, *request) {
                        Ok(request) => request,
                        Err(refused) => {
                            self.reply(agent, call, ApiResponse::Error(refused));
                            continue;
                        }
                    };
                    let rid = self.request_id();
                    match self.server.handle_request(now, rid, request) {
                        Handled::Respond(response) => self.reply(agent, call, response),
                        Handled::Parked => {
                            self.at_server.insert(rid, (agent, call));
                        }
                    }
                    self.drain_server();
                }
                Packet::ToAgent {
                    agent,
                    call,
                    response,
                } => {
                    self.agents[agent].handle_response(now, call, *response);
                    self.drain_agent(agent);
                }
            }
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
            self.drain_server();
        }
        for a in 0..self.agents.len() {
            if self.agents[a].poll_timeout().is_some_and(|(t, _)| t <= now) {
                self.agents[a].handle_timeout(now);
                self.drain_agent(a);
            }
        }
    }

    fn ops(&self, agent: u32, op: Operation) -> Vec<(SimTime, SimTime, Outcome)> {
        self.events
            .iter()
            .filter_map(|e| match *e {
                Event::Op {
                    agent: a,
                    op: o,
                    intended,
                    done,
                    outcome,
                } if a == agent && o == op => Some((intended, done, outcome)),
                _ => None,
            })
            .collect()
    }

    fn finished(&self) -> Vec<(u32, u64, TaskResult)> {
        self.events
            .iter()
            .filter_map(|e| match *e {
                Event::JobFinished {
                    agent,
                    request_id,
                    result,
                    ..
                } => Some((agent, request_id, result)),
                _ => None,
            })
            .collect()
    }
}

fn server_config(crypto_mode: CryptoMode) -> ServerConfig {
    ServerConfig {
        pats: vec![PatConfig {
            token: PAT.into(),
            scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
            expires_at_unix_s: None,
        }],
        crypto_mode,
        ..ServerConfig::default()
    }
}

fn agent_config(crypto_mode: CryptoMode) -> AgentConfig {
    AgentConfig {
        pat: PAT.into(),
        crypto_mode,
        ..AgentConfig::default()
    }
}

fn step(duration_ms: u64, log_lines: u32, secret_lines: u32, artifact_bytes: u64) -> SyntheticStep {
    SyntheticStep {
        duration_ms,
        log_lines,
        secret_lines,
        artifact_bytes,
    }
}

fn job(steps: Vec<SyntheticStep>, secrets: u32, fail: bool) -> SyntheticJob {
    SyntheticJob {
        steps,
        secrets,
        fail,
        demands: vec![],
    }
}

/// FNV-1a over the debug form of every event: a trace hash that is stable across runs.
fn trace_hash(events: &[Event]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for e in events {
        for b in format!("{e:?}").bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

// Goal: with real crypto (RS256 assertion, OAEP session key, AES-CBC messages) a job runs end to
// end: picked up, every step's records, logs, feed and artifact, completion; the server counts
// it completed and no secret reached its stored logs.
#[test]
fn full_job_runs_to_completion_with_real_crypto() {
    let mut pair = Pair::new(server_config(CryptoMode::Real), 1);
    pair.add_agent(0, Arc::new(agent_config(CryptoMode::Real)), 1);
    pair.run_until(SimTime::from_secs(5));
    pair.queue_jobs(vec![job(
        vec![step(8_000, 300, 30, 4096), step(3_000, 50, 5, 0)],
        2,
        false,
    )]);
    pair.run_until_true(SimTime::from_secs(300), |p| !p.finished().is_empty());
    assert_eq!(
        pair.finished(),
        vec![(0, pair.finished()[0].1, TaskResult::Succeeded)]
    );
    for op in [
        Operation::PollMessage,
        Operation::MessageAck,
        Operation::LockRenew,
        Operation::TimelineUpdate,
        Operation::LogCreate,
        Operation::FeedPost,
        Operation::LogAppend,
        Operation::AttachmentUpload,
        Operation::JobCompleted,
    ] {
        let calls = pair.ops(0, op);
        assert!(!calls.is_empty(), "{op:?} never happened");
        assert!(
            calls.iter().all(|c| c.2 == Outcome::Ok),
            "{op:?} failed: {calls:?}"
        );
    }
    let stats = pair.server.stats();
    assert_eq!(stats.jobs_completed, 1);
    assert_eq!(
        stats.leaked_secrets, 0,
        "a secret reached the server's logs"
    );
    assert!(
        pair.events
            .iter()
            .any(|e| matches!(e, Event::SecretsMasked { .. }))
    );
}

// Goal: the same job with every request and answer crossing the HTTP codec (the live driver's
// path): the agent's typed calls survive encoding, routing and decoding both ways.
#[test]
fn full_job_runs_through_the_http_codec() {
    let mut pair = Pair::with_codec(server_config(CryptoMode::Real), 10);
    pair.add_agent(0, Arc::new(agent_config(CryptoMode::Real)), 10);
    pair.run_until(SimTime::from_secs(5));
    pair.queue_jobs(vec![job(
        vec![step(6_000, 200, 20, 2048), step(2_000, 20, 2, 0)],
        2,
        true,
    )]);
    pair.run_until_true(SimTime::from_secs(300), |p| !p.finished().is_empty());
    assert_eq!(
        pair.finished()[0].2,
        TaskResult::Failed,
        "the job's fail flag survives the codec"
    );
    let failed_ops: Vec<_> = pair
        .events
        .iter()
        .filter(|e| matches!(e, Event::Op { outcome, op, .. } if !outcome.is_ok() && *op != Operation::AuthChallenge))
        .collect();
    assert!(failed_ops.is_empty(), "{failed_ops:?}");
    assert!(pair.ops(0, Operation::AuthChallenge).len() == 1);
    let stats = pair.server.stats();
    assert_eq!((stats.jobs_completed, stats.leaked_secrets), (1, 0));
}

// Goal: the emulator's leak counter is a real detector: with masking off the same job leaks.
#[test]
fn secrets_leak_to_the_server_only_when_masking_is_off() {
    let run = |mask_secrets: bool| {
        let mut pair = Pair::new(server_config(CryptoMode::Modelled), 2);
        let config = AgentConfig {
            mask_secrets,
            ..agent_config(CryptoMode::Modelled)
        };
        pair.add_agent(0, Arc::new(config), 2);
        pair.run_until(SimTime::from_secs(5));
        pair.queue_jobs(vec![job(vec![step(5_000, 200, 40, 0)], 3, false)]);
        pair.run_until_true(SimTime::from_secs(300), |p| !p.finished().is_empty());
        pair.server.stats().leaked_secrets
    };
    assert_eq!(run(true), 0);
    assert!(run(false) >= 40, "unmasked secret lines must be counted");
}

// Goal: during a long job the lease is renewed every 60 s (counted, as the real agent counts,
// from the previous renewal's answer: 60 s plus one round trip), and the job finishes without
// being requeued.
#[test]
fn lease_is_renewed_every_sixty_seconds_on_a_long_job() {
    let mut pair = Pair::new(server_config(CryptoMode::Modelled), 3);
    pair.add_agent(0, Arc::new(agent_config(CryptoMode::Modelled)), 3);
    pair.run_until(SimTime::from_secs(5));
    pair.queue_jobs(vec![job(vec![step(12 * 60_000, 100, 0, 0)], 0, false)]);
    pair.run_until_true(SimTime::from_secs(1_200), |p| !p.finished().is_empty());
    let renews = pair.ops(0, Operation::LockRenew);
    assert!(
        renews.len() >= 12,
        "{} renewals in 12 minutes",
        renews.len()
    );
    for w in renews.windows(2) {
        assert_eq!(
            w[1].0 - w[0].0,
            Duration::from_secs(60) + 2 * LATENCY,
            "renewal spacing"
        );
    }
    assert!(renews.iter().all(|r| r.2 == Outcome::Ok));
    assert_eq!(pair.server.stats().jobs_requeued, 0);
}

// Goal: against the server's 50 s hold, every empty poll is followed by a 5–15 s gap before the
// next poll is intended.
#[test]
fn empty_poll_is_followed_by_a_five_to_fifteen_second_gap() {
    let mut pair = Pair::new(server_config(CryptoMode::Modelled), 4);
    pair.add_agent(0, Arc::new(agent_config(CryptoMode::Modelled)), 4);
    pair.run_until(SimTime::from_secs(1_800));
    let mut polls: Vec<(SimTime, SimTime, bool)> = pair
        .events
        .iter()
        .filter_map(|e| match *e {
            Event::Op {
                op: Operation::PollEmpty,
                intended,
                done,
                ..
            } => Some((intended, done, true)),
            Event::Op {
                op: Operation::PollMessage,
                intended,
                done,
                ..
            } => Some((intended, done, false)),
            _ => None,
        })
        .collect();
    polls.sort();
    assert!(polls.len() >= 25, "{} polls in 30 minutes", polls.len());
    for w in polls.windows(2) {
        assert!(w[0].2, "every poll ends empty with no jobs queued");
        let gap = (w[1].0 - w[0].1).as_secs_f64();
        assert!(
            (5.0..=15.0).contains(&gap),
            "gap {gap} s after an empty poll"
        );
        let held = (w[0].1 - w[0].0).as_secs_f64();
        assert!(
            (49.9..50.1).contains(&held),
            "the server held the poll {held} s"
        );
    }
}

// Goal: a listener token that expires mid-run gets a 401; the agent re-mints (a fresh
// assertion and token exchange) and carries on without stopping.
#[test]
fn expired_listener_token_is_re_minted_mid_run() {
    let config = ServerConfig {
        listener_token_ttl: Duration::from_secs(120),
        ..server_config(CryptoMode::Real)
    };
    let mut pair = Pair::new(config, 5);
    pair.add_agent(0, Arc::new(agent_config(CryptoMode::Real)), 5);
    pair.run_until(SimTime::from_secs(600));
    let exchanges = pair.ops(0, Operation::TokenExchange);
    assert!(
        exchanges.len() >= 3,
        "{} token exchanges in 10 min with a 2 min TTL",
        exchanges.len()
    );
    assert!(exchanges.iter().all(|e| e.2 == Outcome::Ok));
    let unauthorized = pair.events.iter().any(|e| {
        matches!(
            e,
            Event::Op {
                outcome: Outcome::Api(fleetsim_core::api::ErrorKind::Unauthorized),
                ..
            }
        )
    });
    assert!(unauthorized, "the expired token met a 401");
    assert!(!pair.agents[0].is_stopped());
    let late_polls = pair
        .ops(0, Operation::PollEmpty)
        .into_iter()
        .filter(|p| p.1 > SimTime::from_secs(500));
    assert!(late_polls.count() > 0, "still polling after the re-mints");
}

// Goal: a second listener for the same agent meets 409 SessionConflict and retries 30 s after
// each conflict; once the first deletes its session, the retry succeeds.
#[test]
fn session_conflict_is_retried_until_the_other_session_ends() {
    let creates_ok = |pair: &Pair, agent: u32| {
        let ok = pair
            .ops(agent, Operation::SessionCreate)
            .into_iter()
            .filter(|o| o.2 == Outcome::Ok);
        ok.count()
    };
    let mut pair = Pair::new(server_config(CryptoMode::Modelled), 6);
    // Two agents with one name ("dup-10") but different indexes, so their events differ.
    let first = AgentConfig {
        name_prefix: "dup-".into(),
        ..agent_config(CryptoMode::Modelled)
    };
    let second = AgentConfig {
        name_prefix: "dup-1".into(),
        register_mode: RegisterMode::Replace,
        ..agent_config(CryptoMode::Modelled)
    };
    pair.add_agent(10, Arc::new(first), 6);
    pair.run_until(SimTime::from_secs(10));
    pair.add_agent(0, Arc::new(second), 6);
    pair.run_until(SimTime::from_secs(100));
    assert_eq!(
        creates_ok(&pair, 0),
        0,
        "the name's session is held by the first listener"
    );
    let conflict = Outcome::Api(fleetsim_core::api::ErrorKind::SessionConflict);
    let creates = pair.ops(0, Operation::SessionCreate);
    let conflicts: Vec<_> = creates
        .iter()
        .filter(|c| c.2 == conflict)
        .map(|c| c.0)
        .collect();
    assert!(conflicts.len() >= 3, "{creates:?}");
    for w in conflicts.windows(2) {
        assert_eq!(w[1] - w[0], Duration::from_secs(30) + 2 * LATENCY);
    }
    pair.agents[0].shutdown(pair.now);
    pair.drain_agent(0);
    pair.run_until(SimTime::from_secs(160));
    assert!(pair.agents[0].is_stopped());
    let created = creates_ok(&pair, 0);
    assert_eq!(
        created, 1,
        "the second listener got its session after the first left"
    );
    assert!(!pair.agents[1].is_stopped());
}

// Goal: with a short job-token TTL the agent rotates the token before it expires, keeps working
// with the new one (no 401 on the plan hub), and the job completes.
#[test]
fn job_token_rotation_before_expiry_keeps_the_job_working() {
    let server = ServerConfig {
        job_token_ttl: Duration::from_secs(60),
        job_token_rotation_grace: Duration::from_secs(5),
        ..server_config(CryptoMode::Modelled)
    };
    let mut pair = Pair::new(server, 8);
    let config = AgentConfig {
        job_token_ttl_hint: Some(Duration::from_secs(60)),
        job_token_rotate_before: Some(Duration::from_secs(15)),
        ..agent_config(CryptoMode::Modelled)
    };
    pair.add_agent(0, Arc::new(config), 8);
    pair.run_until(SimTime::from_secs(5));
    pair.queue_jobs(vec![job(vec![step(200_000, 400, 10, 1024)], 1, false)]);
    pair.run_until_true(SimTime::from_secs(600), |p| !p.finished().is_empty());
    let rotations = pair
        .events
        .iter()
        .filter(|e| matches!(e, Event::TokenRotated { .. }))
        .count();
    assert!(
        rotations >= 3,
        "{rotations} rotations over a 200 s job with a 60 s token"
    );
    assert_eq!(pair.server.stats().tokens_rotated, rotations as u64);
    let failed_plan_calls = pair.events.iter().filter(|e| {
        matches!(e, Event::Op { op: Operation::FeedPost | Operation::LogAppend | Operation::TimelineUpdate | Operation::JobCompleted, outcome, .. } if !outcome.is_ok())
    });
    assert_eq!(failed_plan_calls.count(), 0);
    assert_eq!(pair.finished()[0].2, TaskResult::Succeeded);
}

// Goal: a failing step fails the job, and several agents share a queue without losing a job.
#[test]
fn several_agents_complete_every_job_and_failures_are_reported() {
    let mut pair = Pair::new(server_config(CryptoMode::Modelled), 9);
    let config = Arc::new(agent_config(CryptoMode::Modelled));
    for i in 0..4 {
        pair.add_agent(i, config.clone(), 9);
    }
    pair.run_until(SimTime::from_secs(5));
    let mut jobs: Vec<_> = (0..8)
        .map(|_| job(vec![step(4_000, 20, 2, 0)], 1, false))
        .collect();
    jobs.push(job(vec![step(2_000, 10, 0, 0)], 0, true));
    pair.queue_jobs(jobs);
    pair.run_until_true(SimTime::from_secs(900), |p| p.finished().len() == 9);
    let failed = pair
        .finished()
        .iter()
        .filter(|f| f.2 == TaskResult::Failed)
        .count();
    assert_eq!(failed, 1);
    assert_eq!(pair.server.stats().jobs_completed, 9);
    assert_eq!(pair.server.stats().leaked_secrets, 0);
}

// Goal: the same seed gives the same event sequence (hash), a different seed a different one.
#[test]
fn same_seed_gives_the_same_event_trace() {
    let run = |seed: u64| {
        let mut pair = Pair::new(server_config(CryptoMode::Modelled), seed);
        let config = Arc::new(agent_config(CryptoMode::Modelled));
        for i in 0..3 {
            pair.add_agent(i, config.clone(), seed);
        }
        pair.run_until(SimTime::from_secs(5));
        pair.queue_jobs(
            (0..4)
                .map(|_| job(vec![step(3_000, 30, 3, 100)], 1, false))
                .collect(),
        );
        pair.run_until(SimTime::from_secs(400));
        assert_eq!(pair.finished().len(), 4);
        trace_hash(&pair.events)
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}
