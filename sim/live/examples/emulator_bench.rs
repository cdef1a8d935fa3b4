//! Emulator request-rate benchmark over loopback.
//!
//! Measures two paths against an emulator on 127.0.0.1 (started in-process on a free port, or
//! an already running `fleetsim serve` given with `--addr`):
//! 1. registration + token exchange: `POST agents` (PAT) then `POST oauth2/token` with a freshly
//!    signed RS256 assertion, per agent, over `--concurrency` keep-alive connections;
//! 2. the poll/ack path: `--agents` agents with sessions each loop poll → ack (DELETE message)
//!    → finish (PATCH jobrequest with a result) until `--jobs` queued jobs are done.
//!
//! Every loop is bounded in count and by `--max-secs`; only loopback addresses are accepted.
//! `--state-dir DIR` gives the in-process emulator a state dir (`serve --state-dir`: every
//! answer waits for its changes to be committed), to measure what durability costs.
//!
//! ```text
//! cargo run --release -p fleetsim-live --example emulator_bench -- \
//!     --registrations 400 --concurrency 8 --agents 32 --jobs 4000
//! ```
//!
//! Client and server share the machine (and, in-process, one tokio runtime), so the figures are
//! a floor for the emulator alone; the client's RSA signing is inside the registration figure.

#[path = "../tests/emulator_support/mod.rs"]
mod emulator_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use fleetsim_core::api::{ApiRequest, ApiResponse, Credential, TokenGrant};
use fleetsim_core::crypto::{self, PrivateKey, jwt};
use fleetsim_core::job::{QueueJobsRequest, SyntheticJob, SyntheticStep};
use fleetsim_core::proto::*;
use fleetsim_core::server::ServerConfig;
use fleetsim_live::server::{self, EmulatorOptions};

use emulator_support::{Conn, Target};

/// Jobs one admin request queues (the core's per-request bound is larger).
const QUEUE_BATCH: u32 = 1_000;

/// Command-line settings.
#[derive(Clone, Debug)]
struct Settings {
    addr: Option<SocketAddr>,
    pat: String,
    registrations: u64,
    concurrency: u64,
    agents: u64,
    jobs: u64,
    max_secs: u64,
    state_dir: Option<std::path::PathBuf>,
}

impl Settings {
    fn parse() -> Result<Settings, String> {
        let mut s = Settings {
            addr: None,
            pat: std::env::var("FLEETSIM_PAT").unwrap_or_else(|_| "fleetsim-bench-pat".into()),
            registrations: 400,
            concurrency: 8,
            agents: 32,
            jobs: 4_000,
            max_secs: 60,
            state_dir: None,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        for pair in args.chunks(2) {
            let [flag, value] = pair else {
                return Err(format!("{} needs a value", pair[0]));
            };
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|e| format!("{flag} {value}: {e}"))
            };
            match flag.as_str() {
                "--addr" => s.addr = Some(value.parse().map_err(|e| format!("--addr: {e}"))?),
                "--pat" => s.pat = value.clone(),
                "--registrations" => s.registrations = number()?,
                "--concurrency" => s.concurrency = number()?.max(1),
                "--agents" => s.agents = number()?.max(1),
                "--jobs" => s.jobs = number()?,
                "--max-secs" => s.max_secs = number()?.clamp(1, 600),
                "--state-dir" => s.state_dir = Some(value.into()),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        if let Some(addr) = s.addr
            && !addr.ip().is_loopback()
        {
            return Err(format!(
                "{addr} is not a loopback address; this benchmark only runs locally"
            ));
        }
        s.registrations = s.registrations.max(s.agents);
        Ok(s)
    }
}

/// A registered agent with a session.
struct BenchAgent {
    bearer: Credential,
    session_id: String,
    session_key: [u8; 32],
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let settings = Settings::parse()?;
    let deadline = Instant::now() + Duration::from_secs(settings.max_secs);
    let (target, running) = match settings.addr {
        Some(addr) => (Target::plain(addr), None),
        None => {
            let mut config = ServerConfig::with_env_pat(settings.pat.clone());
            config.long_poll_hold = Duration::from_secs(1);
            let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let mut opts = EmulatorOptions::new(listen, config);
            opts.state_dir = settings.state_dir.clone();
            let running = server::start(opts).await.map_err(|e| e.to_string())?;
            (Target::plain(running.local_addr), Some(running))
        }
    };
    println!("emulator at {} ({settings:?})", target.addr);
    let key = Arc::new(PrivateKey::generate(2048).map_err(|e| e.to_string())?);
    let pat = Credential::Basic {
        user: "bench".into(),
        password: settings.pat.clone(),
    };

    let agents = bench_registration(&settings, &target, &key, &pat, deadline).await?;
    bench_poll_ack(&settings, &target, &pat, agents, deadline).await?;
    if let Some(running) = running {
        let front = running.handle.front_metrics();
        let stats = running.handle.shutdown().await;
        println!("server: {stats:?}");
        println!(
            "front: {:?} connections accepted",
            front.connections_accepted
        );
    }
    Ok(())
}

/// Phase 1: registration + token exchange; returns the first `agents` agents with sessions.
async fn bench_registration(
    settings: &Settings,
    target: &Target,
    key: &Arc<PrivateKey>,
    pat: &Credential,
    deadline: Instant,
) -> Result<Vec<BenchAgent>, String> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..settings.concurrency {
        let (target, key, pat, next) = (target.clone(), key.clone(), pat.clone(), next.clone());
        let total = settings.registrations;
        workers.push(tokio::spawn(async move {
            let mut conn = target.connect().await;
            let mut tokens = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    return tokens;
                }
                tokens.push((i, register(&mut conn, &key, &pat, i).await));
            }
        }));
    }
    let mut tokens = Vec::new();
    for worker in workers {
        tokens.extend(worker.await.map_err(|e| e.to_string())?);
    }
    let secs = started.elapsed().as_secs_f64();
    let done = tokens.len() as f64;
    println!(
        "registration+token: {} agents in {secs:.2} s = {:.0} agents/s ({:.0} requests/s) over {} \
         connections",
        tokens.len(),
        done / secs,
        2.0 * done / secs,
        settings.concurrency
    );
    tokens.sort_by_key(|(i, _)| *i);
    let mut agents = Vec::new();
    let mut conn = target.connect().await;
    for (i, (agent_id, bearer)) in tokens.into_iter().take(settings.agents as usize) {
        agents.push(open_session(&mut conn, key, bearer, agent_id, i).await?);
    }
    Ok(agents)
}

/// Register agent `i` and exchange a JWT for its listener token.
async fn register(
    conn: &mut Conn,
    key: &PrivateKey,
    pat: &Credential,
    i: u64,
) -> (u64, Credential) {
    let agent = TaskAgent {
        name: format!("bench-{i}"),
        version: "4.260.0".into(),
        authorization: Some(TaskAgentAuthorization {
            public_key: Some(key.public_key().to_wire()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ApiResponse::Agent(agent) = conn
        .call(
            pat,
            ApiRequest::AddAgent {
                pool_id: 1,
                agent: Box::new(agent),
            },
        )
        .await
    else {
        panic!("registration of bench-{i} failed")
    };
    let auth = agent.authorization.expect("authorization");
    let client_id = auth.client_id.expect("clientId");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = jwt::Claims {
        iss: client_id.clone(),
        sub: client_id,
        aud: auth.authorization_url.expect("authorizationUrl"),
        nbf: now - 5,
        exp: now + 300,
        jti: format!("bench-{i}-{now}"),
    };
    let grant = TokenGrant::ClientCredentials {
        client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        client_assertion: jwt::sign(key, &claims),
    };
    let ApiResponse::Token(token) = conn
        .call(&Credential::Anonymous, ApiRequest::Token(grant))
        .await
    else {
        panic!("token exchange of bench-{i} failed")
    };
    (agent.id, Credential::Bearer(token.access_token))
}

async fn open_session(
    conn: &mut Conn,
    key: &PrivateKey,
    bearer: Credential,
    agent_id: u64,
    i: u64,
) -> Result<BenchAgent, String> {
    let session = TaskAgentSession {
        session_id: EMPTY_GUID.into(),
        owner_name: format!("bench-{i}"),
        agent: TaskAgentReference {
            id: agent_id,
            name: format!("bench-{i}"),
            ..Default::default()
        },
        ..Default::default()
    };
    let ApiResponse::Session(session) = conn
        .call(
            &bearer,
            ApiRequest::CreateSession {
                pool_id: 1,
                session,
            },
        )
        .await
    else {
        return Err(format!("session of bench-{i} failed"));
    };
    let wrapped = session.encryption_key.ok_or("no session key")?;
    let wrapped = B64.decode(wrapped.value).map_err(|e| e.to_string())?;
    let raw = key.decrypt_oaep_sha1(&wrapped).map_err(|e| e.to_string())?;
    let session_key = raw.try_into().map_err(|_| "session key is not 32 bytes")?;
    Ok(BenchAgent {
        bearer,
        session_id: session.session_id,
        session_key,
    })
}

/// Phase 2: queue `jobs`, then every agent polls, acks and finishes until all are done.
async fn bench_poll_ack(
    settings: &Settings,
    target: &Target,
    pat: &Credential,
    agents: Vec<BenchAgent>,
    deadline: Instant,
) -> Result<(), String> {
    let mut admin = target.connect().await;
    let mut left = settings.jobs;
    while left > 0 {
        let count = left.min(u64::from(QUEUE_BATCH)) as u32;
        let step = SyntheticStep {
            duration_ms: 1,
            ..Default::default()
        };
        let template = SyntheticJob {
            steps: vec![step],
            ..Default::default()
        };
        let request = QueueJobsRequest {
            count,
            template: Some(template),
            jobs: Vec::new(),
        };
        match admin
            .call(
                pat,
                ApiRequest::QueueJobs {
                    pool_id: 1,
                    request,
                },
            )
            .await
        {
            ApiResponse::QueuedJobs(_) => left -= u64::from(count),
            other => return Err(format!("queueing failed: {other:?}")),
        }
    }
    let completed = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let finished_at = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let started = Instant::now();
    let total = settings.jobs;
    let mut workers = Vec::new();
    for agent in agents {
        let (target, completed, requests, finished_at) = (
            target.clone(),
            completed.clone(),
            requests.clone(),
            finished_at.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut conn = target.connect().await;
            while completed.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                if run_one_job(&mut conn, &agent, &requests).await {
                    let done = completed.fetch_add(1, Ordering::Relaxed) + 1;
                    if done == total {
                        *finished_at.lock() = Some(Instant::now());
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())?;
    }
    let end = finished_at.lock().unwrap_or_else(Instant::now);
    let secs = (end - started).as_secs_f64();
    let jobs = completed.load(Ordering::Relaxed) as f64;
    let reqs = requests.load(Ordering::Relaxed) as f64;
    println!(
        "poll/ack: {jobs:.0} jobs in {secs:.2} s = {:.0} jobs/s, {:.0} requests/s (poll + ack + \
         finish) with {} agents",
        jobs / secs,
        reqs / secs,
        settings.agents
    );
    Ok(())
}

/// Poll once; on a job message, ack it and finish the job. True when a job was finished.
async fn run_one_job(conn: &mut Conn, agent: &BenchAgent, requests: &AtomicU64) -> bool {
    let poll = ApiRequest::GetMessage {
        pool_id: 1,
        session_id: agent.session_id.clone(),
        last_message_id: None,
    };
    let answer = conn.call(&agent.bearer, poll).await;
    requests.fetch_add(1, Ordering::Relaxed);
    let ApiResponse::Message(message) = answer else {
        return false;
    };
    let iv: [u8; 16] = B64.decode(&message.iv).unwrap().try_into().unwrap();
    let body = B64.decode(&message.body).unwrap();
    let plain = crypto::aes256_cbc_decrypt(&agent.session_key, &iv, &body).expect("decrypt");
    let job: AgentJobRequestMessage = serde_json::from_slice(&plain).expect("job JSON");
    let ack = ApiRequest::DeleteMessage {
        pool_id: 1,
        message_id: message.message_id,
        session_id: agent.session_id.clone(),
    };
    let acked = conn.call(&agent.bearer, ack).await;
    let finish = ApiRequest::UpdateJobRequest {
        pool_id: 1,
        request_id: job.request_id,
        lock_token: EMPTY_GUID.into(),
        update: JobRequestUpdate {
            request_id: job.request_id,
            finish_time: Some("2026-01-01T00:00:00Z".into()),
            result: Some(TaskResult::Succeeded),
        },
    };
    let finished = conn.call(&agent.bearer, finish).await;
    requests.fetch_add(2, Ordering::Relaxed);
    acked == ApiResponse::NoContent && matches!(finished, ApiResponse::JobRequest(_))
}
