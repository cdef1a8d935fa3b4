//! The closed-loop saturation ramp every calibration probe runs: after one uncounted warm-up
//! step, 1, 2, 4, … clients, each on its own keep-alive connection, send their probe back to
//! back for a step each, until throughput rises by less than 5 % twice in a row or the ceiling
//! is reached. The single-client step gives the low-load service time (its mean, and a
//! log-normal fitted on its median and 90th percentile); the best step gives X_max.
//!
//! What a client sends is a [`Probe`]: one fixed request, or a call that must differ each time
//! (a token exchange needs a fresh assertion id; a session must be created before it is
//! deleted). Requests are encoded by `fleetsim_core::codec` and their answers decoded by it;
//! this module only sends and times them.

use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::api::{ApiRequest, ApiResponse, Endpoint, Request};
use fleetsim_core::codec::{self, Url};
use fleetsim_core::crypto::{self, PrivateKey};
use fleetsim_core::dist::DurationDist;
use fleetsim_core::rng::{self, Rng, StreamKind};
use fleetsim_core::wire::WireRequest;
use fleetsim_scenario::profile::{RampStep, Saturation};
use tokio::time::Instant;

use super::{MAX_SAMPLES, lognormal_fit, process_cpu};
use crate::client::{Connection, HttpClient};

/// What one closed-loop client sends each turn.
pub(crate) enum Probe {
    /// The same request every time (pool lookup, lock renewal, timeline update), encoded
    /// once.
    Fixed(WireRequest),
    /// A token exchange with a fresh client assertion each time (the server refuses a replayed
    /// `jti`), signed with the registered agent's key; client `i` uses `calls[i % len]`.
    Token(Vec<TokenCall>),
    /// Create a session, then delete the session created: client `i` uses `calls[i % len]`
    /// (one agent per client: an agent holds one session at a time).
    Session(Vec<SessionCall>),
}

/// One registered agent's token exchange, as its agent sent it.
#[derive(Clone)]
pub(crate) struct TokenCall {
    /// The exchange the agent sent (its assertion is replaced on every call).
    pub(crate) request: Request,
    pub(crate) endpoint: Endpoint,
    /// The agent's private key.
    pub(crate) key: Arc<PrivateKey>,
    /// The claims of the agent's own assertion (iss, sub, aud; times and jti are renewed).
    pub(crate) claims: crypto::jwt::Claims,
    /// Salt of the assertion ids (as the agent's `jti_salt`).
    pub(crate) salt: u128,
}

/// One registered agent's session create, as its agent sent it.
#[derive(Clone)]
pub(crate) struct SessionCall {
    pub(crate) create: Request,
    pub(crate) endpoint: Endpoint,
    pub(crate) pool_id: u32,
}

/// Where a probe goes: the client of the probe's origin and the collection URL its endpoints
/// resolve against.
pub(crate) struct RampTarget {
    pub(crate) client: Arc<HttpClient>,
    pub(crate) collection: Url,
    pub(crate) probe: Probe,
    /// Record the process's cores per step (the server runs in this process).
    pub(crate) measure_cores: bool,
    /// Clients started so far: each client's assertion ids come from a stream of its own, so
    /// no two clients of the whole ramp ever send the same jti.
    pub(crate) clients: std::sync::atomic::AtomicU64,
}

/// One request of a turn: when it was sent, when its answer came, and the HTTP status (or the
/// transport failure).
struct Exchange {
    sent: Instant,
    done: Instant,
    status: Result<u16, String>,
}

impl Exchange {
    fn ok(&self) -> bool {
        matches!(self.status, Ok(s) if (200..300).contains(&s))
    }
}

impl RampTarget {
    /// One turn of client `slot`: one request, or two for a session.
    async fn turn(&self, slot: u32, rng: &mut Rng, conn: &mut Connection) -> Vec<Exchange> {
        match &self.probe {
            Probe::Fixed(wire) => vec![exchange(conn, wire).await.0],
            Probe::Token(calls) => {
                let call = &calls[slot as usize % calls.len()];
                match self.token_request(call, rng) {
                    Ok(wire) => vec![exchange(conn, &wire).await.0],
                    Err(e) => vec![failed(e)],
                }
            }
            Probe::Session(calls) => {
                let call = &calls[slot as usize % calls.len()];
                let wire = match self.resolve(&call.create, &call.endpoint) {
                    Ok(wire) => wire,
                    Err(e) => return vec![failed(e)],
                };
                let (created, answer) = exchange(conn, &wire).await;
                let session_id = match answer.map(|a| codec::decode_response(&call.create.call, &a))
                {
                    Some(ApiResponse::Session(s)) if created.ok() => s.session_id,
                    _ => return vec![created],
                };
                let delete = Request {
                    credential: call.create.credential.clone(),
                    call: ApiRequest::DeleteSession {
                        pool_id: call.pool_id,
                        session_id,
                    },
                };
                match self.resolve(&delete, &call.endpoint) {
                    Ok(wire) => vec![created, exchange(conn, &wire).await.0],
                    Err(e) => vec![created, failed(e)],
                }
            }
        }
    }

    /// The token exchange of `call` with a fresh assertion: new jti, nbf now, exp 5 min later
    /// (as the agent mints them).
    fn token_request(&self, call: &TokenCall, rng: &mut Rng) -> Result<WireRequest, String> {
        let nbf = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = crypto::jwt::Claims {
            nbf,
            exp: nbf + (call.claims.exp.saturating_sub(call.claims.nbf)).max(60),
            jti: rng::salted_uuid(rng, call.salt).to_string(),
            ..call.claims.clone()
        };
        let assertion = crypto::jwt::sign(&call.key, &claims);
        let ApiRequest::Token(fleetsim_core::api::TokenGrant::ClientCredentials {
            client_assertion_type,
            ..
        }) = &call.request.call
        else {
            return Err("the captured token request is not a client-credentials grant".into());
        };
        let request = Request {
            credential: call.request.credential.clone(),
            call: ApiRequest::Token(fleetsim_core::api::TokenGrant::ClientCredentials {
                client_assertion_type: client_assertion_type.clone(),
                client_assertion: assertion,
            }),
        };
        self.resolve(&request, &call.endpoint)
    }

    /// The assertion-id stream of the next client.
    fn client_rng(&self) -> Rng {
        let n = self
            .clients
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rng::stream(JTI_SEED, StreamKind::Agent, n)
    }

    fn resolve(&self, request: &Request, endpoint: &Endpoint) -> Result<WireRequest, String> {
        codec::resolve(request, endpoint, &self.collection)
            .map(|(_, wire)| wire)
            .map_err(|e| format!("{}: {}", e.url, e.reason))
    }
}

async fn exchange(
    conn: &mut Connection,
    wire: &WireRequest,
) -> (Exchange, Option<fleetsim_core::wire::WireResponse>) {
    let sent = Instant::now();
    let result = conn.send(wire).await;
    let done = Instant::now();
    match result {
        Ok(r) => (
            Exchange {
                sent,
                done,
                status: Ok(r.status),
            },
            Some(r),
        ),
        Err(e) => (
            Exchange {
                sent,
                done,
                status: Err(e.to_string()),
            },
            None,
        ),
    }
}

fn failed(reason: String) -> Exchange {
    let now = Instant::now();
    Exchange {
        sent: now,
        done: now,
        status: Err(reason),
    }
}

/// What a ramp measured.
pub(crate) struct Ramp {
    pub(crate) steps: Vec<RampStep>,
    /// Mean single-client round trip (E[S]).
    pub(crate) low_load_latency_s: f64,
    /// Log-normal on the single-client step's median and 90th percentile.
    pub(crate) fit: DurationDist,
}

impl Ramp {
    /// The saturation figures of this ramp of `probe` (an operation's report name).
    pub(crate) fn saturation(&self, probe: &str) -> Saturation {
        let top = self
            .steps
            .iter()
            .max_by(|a, b| a.throughput_per_s.total_cmp(&b.throughput_per_s));
        let (throughput_per_s, concurrency) =
            top.map_or((0.0, 1), |t| (t.throughput_per_s, t.concurrency));
        Saturation {
            probe: probe.to_string(),
            low_load_latency_s: self.low_load_latency_s,
            throughput_per_s,
            concurrency,
            busy_workers: throughput_per_s * self.low_load_latency_s,
            ramp: self.steps.clone(),
        }
    }
}

/// Seed of the assertion-id streams (any fixed value: the salt makes them unique per run).
const JTI_SEED: u64 = 0x6a74_6931;

/// The ramp of `target` with steps of `step`, up to `ceiling` clients. `Err` when the first
/// turn, or the whole single-client step, got no successful answer (with what it got).
pub(crate) async fn ramp(
    target: &Arc<RampTarget>,
    step: Duration,
    ceiling: u32,
) -> Result<Ramp, String> {
    // One turn first: a wrong credential fails here with its status, not as a flat ramp.
    let mut first = target.client.connection(0);
    let mut rng = target.client_rng();
    let turn = target.turn(0, &mut rng, &mut first).await;
    if let Some(bad) = turn.iter().find(|e| !e.ok()) {
        return Err(match &bad.status {
            Ok(status) => format!("answered HTTP {status}"),
            Err(e) => e.clone(),
        });
    }
    drop(first);
    // One uncounted single-client step first: connections, caches and the allocator warm up,
    // so the single-client step that yields E[S] measures the steady state.
    if let (warm, _, Some(refusal)) = ramp_step(target, 1, step).await {
        return Err(format!(
            "refused in the warm-up step ({} failed calls, first: {refusal})",
            warm.errors
        ));
    }
    let mut steps = Vec::new();
    let mut low_load = None;
    let (mut best, mut flat) = (0.0f64, 0u32);
    let mut k = 1u32;
    loop {
        let (s, mut samples, refusal) = ramp_step(target, k, step).await;
        // A target that refuses calls (a rate limit, a bound) is past what this probe can
        // measure: the ramp ends at the step before, or the group is not ramped at all.
        if let Some(refusal) = refusal {
            if k == 1 {
                return Err(format!(
                    "refused in the single-client step ({} failed calls, first: {refusal})",
                    s.errors
                ));
            }
            steps.push(s);
            break;
        }
        if k == 1 {
            if samples.is_empty() {
                return Err("no successful answer in the single-client step".into());
            }
            samples.sort_unstable();
            let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64();
            low_load = Some((s.mean_latency_s, lognormal_fit(q(0.5), q(0.9))));
        }
        // Throughput must rise by 5% to count as still climbing; two flat steps end the ramp.
        if s.throughput_per_s > best * 1.05 {
            flat = 0;
        } else {
            flat += 1;
        }
        best = best.max(s.throughput_per_s);
        steps.push(s);
        if flat >= 2 || k >= ceiling {
            break;
        }
        k = (k * 2).min(ceiling);
    }
    let (low_load_latency_s, fit) = low_load.ok_or("the ramp ran no step")?;
    Ok(Ramp {
        steps,
        low_load_latency_s,
        fit,
    })
}

/// One step: `k` closed-loop clients for `length`; the first fifth warms up and is not counted.
/// Returns the step, its round trips and, when more than 1 % of its calls failed, the first
/// failure (an HTTP status or a transport error).
async fn ramp_step(
    target: &Arc<RampTarget>,
    k: u32,
    length: Duration,
) -> (RampStep, Vec<Duration>, Option<String>) {
    let start = Instant::now();
    let cpu_at_start = process_cpu();
    let counted_from = start + length / 5;
    let end = start + length;
    let per_task = MAX_SAMPLES / k as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..k {
        let mut conn = target.client.connection(u64::from(slot) + 1);
        let target = Arc::clone(target);
        tasks.spawn(async move {
            let mut rng = target.client_rng();
            let (mut ok, mut errors, mut total) = (0u64, 0u64, Duration::ZERO);
            let (mut samples, mut refusal) = (Vec::new(), None);
            while Instant::now() < end {
                for e in target.turn(slot, &mut rng, &mut conn).await {
                    if e.sent < counted_from {
                        continue;
                    }
                    if e.ok() {
                        ok += 1;
                        let rtt = e.done - e.sent;
                        total += rtt;
                        if samples.len() < per_task {
                            samples.push(rtt);
                        }
                    } else {
                        errors += 1;
                        refusal.get_or_insert_with(|| match &e.status {
                            Ok(status) => format!("HTTP {status}"),
                            Err(e) => e.clone(),
                        });
                    }
                }
            }
            (ok, errors, total, samples, refusal)
        });
    }
    let (mut ok, mut errors, mut total, mut samples) = (0u64, 0u64, Duration::ZERO, Vec::new());
    let mut refusal = None;
    while let Some(joined) = tasks.join_next().await {
        if let Ok((o, e, t, s, r)) = joined {
            ok += o;
            errors += e;
            total += t;
            samples.extend(s);
            refusal = refusal.or(r);
        }
    }
    let refusal = refusal.filter(|_| errors * 100 > ok + errors);
    // The window ends when the last answer arrives, which may be after `end`.
    let finished = Instant::now();
    let window = (finished.max(end) - counted_from).as_secs_f64();
    // Only where this process holds the server too: a remote target's cores are not ours.
    let process_cores = target.measure_cores.then(|| {
        process_cpu().saturating_sub(cpu_at_start).as_secs_f64()
            / (finished - start).as_secs_f64().max(1e-9)
    });
    let step = RampStep {
        concurrency: k,
        throughput_per_s: ok as f64 / window.max(1e-9),
        mean_latency_s: if ok == 0 {
            0.0
        } else {
            total.as_secs_f64() / ok as f64
        },
        errors,
        process_cores,
    };
    (step, samples, refusal)
}
