//! `fleetsim calibrate`: measure a live target and derive the capacity model a simulation reads
//! (a `fleetsim_scenario::Profile`).
//!
//! Two measurements, in order:
//!
//! 1. **Saturation ramp** — closed-loop clients, each on its own keep-alive connection, send the
//!    probe operation (`pool_lookup`: PAT check plus a core lookup, what every registration
//!    starts with) back to back. After one uncounted warm-up step, concurrency doubles
//!    (1, 2, 4, …) for a fixed step each, until throughput stops rising (two steps in a row
//!    under +5%) or the ceiling is reached. The single-client mean round trip is the probe's
//!    low-load service time E[S]; the highest throughput is X_max; the utilisation law gives
//!    the workers, c = round(X_max · E[S]).
//! 2. **Low-load fleet run** — a few real agents (`fleet::run`) with short jobs for a short
//!    while, which exercises every operation of the protocol; each operation's round trip
//!    (median, 90th percentile) becomes its service time, fitted as a log-normal.
//!
//! Nothing is subtracted from a round trip: client encode, loopback and decode are inside every
//! service time, and the simulation runs with no network latency of its own (the scenario
//! default). Against the embedded emulator both measurements start their own emulator in this
//! process, so client and server share the machine's cores — as in a live run against the
//! embedded emulator, which is what a calibrated simulation is compared with.
//!
//! This module never writes files and never runs a simulation; the CLI saves the profile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::api::{ApiRequest, Request};
use fleetsim_core::codec;
use fleetsim_core::dist::{DurationDist, Shape};
use fleetsim_core::ops::Operation;
use fleetsim_metrics::Report;
use fleetsim_scenario::profile::{MeasuredOp, ProfileStation, RampStep, Saturation};
use fleetsim_scenario::{PROFILE_VERSION, Profile, Scenario};
use thiserror::Error;
use tokio::time::Instant;

use crate::client::{ClientError, ClientOptions, HttpClient, Target};
use crate::fleet::{self, FleetError, RunOptions, setup};
use crate::server::{self, EmulatorOptions, ServeError};

/// The operation the saturation ramp sends.
pub const PROBE: Operation = Operation::PoolLookup;

/// Largest concurrency the ramp may reach (a bound on tasks and connections).
pub const MAX_CONCURRENCY: u32 = 1024;

/// Round trips kept per ramp step for quantiles (a bound on memory).
const MAX_SAMPLES: usize = 200_000;

/// Below this many samples an operation's service time is its median, with no fitted tail.
pub const MIN_FIT_SAMPLES: u64 = 30;

/// Largest log-normal σ a fit may have (SCV e^σ² − 1 ≈ 8.5): one slow outlier among few
/// samples must not turn into a tail that swamps the single worker of a small server.
const MAX_SIGMA: f64 = 1.5;

/// z for the 90th percentile of a standard normal (log-normal fit on p50 and p90).
const Z90: f64 = 1.281_551_565_5;

/// What to measure and how hard.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Base URL of the target; `None` = the embedded emulator, started in-process.
    pub target: Option<String>,
    /// Name of the environment variable with the target's PAT (remote targets only).
    pub pat_env: String,
    /// Agents of the low-load fleet run.
    pub agents: u32,
    /// Length of the low-load fleet run.
    pub duration: Duration,
    /// Length of each ramp step (the first fifth is a warm-up, not counted).
    pub step: Duration,
    /// The ramp stops at this concurrency at the latest.
    pub max_concurrency: u32,
    /// Seed of the fleet run.
    pub seed: u64,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            target: None,
            pat_env: fleetsim_scenario::DEFAULT_PAT_ENV.to_string(),
            agents: 8,
            duration: Duration::from_secs(20),
            step: Duration::from_secs(1),
            max_concurrency: 64,
            seed: 1,
        }
    }
}

/// Why a calibration could not be carried out.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CalibrateError {
    /// The options make no sense (zero agents, a ceiling out of range, a bad URL).
    #[error("{0}")]
    Options(String),
    #[error("fleet run: {0}")]
    Fleet(#[from] FleetError),
    #[error("embedded emulator: {0}")]
    Emulator(#[from] ServeError),
    #[error("probe client: {0}")]
    Client(#[from] ClientError),
    /// The probe never got a successful answer (wrong PAT, wrong pool, target down).
    #[error("saturation probe: {0}")]
    Probe(String),
}

/// What a calibration produced.
#[derive(Debug)]
pub struct Calibration {
    /// The profile to save.
    pub profile: Profile,
    /// The low-load fleet run's report (per-operation round trips).
    pub fleet_report: Report,
}

/// The low-load scenario: short jobs that touch every operation, agents about half busy.
pub fn low_load_scenario(opts: &CalibrateOptions) -> Result<Scenario, CalibrateError> {
    if opts.agents == 0 || opts.agents > 10_000 {
        return Err(CalibrateError::Options(
            "--agents must be between 1 and 10000".into(),
        ));
    }
    if opts.duration < Duration::from_secs(2) {
        return Err(CalibrateError::Options(
            "--duration must be at least 2s".into(),
        ));
    }
    let secs = opts.duration.as_secs_f64();
    // Jobs of ~3 s; half the agents busy on average.
    let rate = f64::from(opts.agents) * 0.5 / 3.0;
    let mut text = format!(
        "[run]\nname = \"calibrate\"\nduration = \"{secs}s\"\nseed = {seed}\n\
         [fleet]\nagents = {agents}\nramp_up = \"{ramp}s\"\nname_prefix = \"calibrate-\"\n\
         [jobs]\nrate_per_s = {rate}\nduration = {{ dist = \"uniform\", min = \"2s\", max = \"4s\" }}\n\
         steps = 2\nlog_lines_per_s = 10\nartifact_bytes = \"4KiB\"\ntoken_ttl = \"20s\"\n\
         [agent]\njob_token_rotate_before = \"10s\"\n\
         [server]\nlong_poll_hold = \"5s\"\n",
        seed = opts.seed,
        agents = opts.agents,
        ramp = (secs / 10.0).min(2.0),
    );
    if let Some(url) = &opts.target {
        let url = serde_json::to_string(url.trim_end_matches('/'))
            .map_err(|e| CalibrateError::Options(e.to_string()))?;
        let env = serde_json::to_string(&opts.pat_env)
            .map_err(|e| CalibrateError::Options(e.to_string()))?;
        text.push_str(&format!("[target]\nurl = {url}\npat_env = {env}\n"));
    }
    fleetsim_scenario::load_str("calibrate", &text, &[])
        .map_err(|d| CalibrateError::Options(d.to_string()))
}

/// Calibrate: the saturation ramp, then the low-load fleet run; see the module docs.
pub async fn calibrate(opts: &CalibrateOptions) -> Result<Calibration, CalibrateError> {
    if opts.max_concurrency == 0 || opts.max_concurrency > MAX_CONCURRENCY {
        return Err(CalibrateError::Options(format!(
            "the ramp ceiling must be between 1 and {MAX_CONCURRENCY}"
        )));
    }
    if opts.step < Duration::from_millis(50) {
        return Err(CalibrateError::Options(
            "a ramp step must be at least 50ms".into(),
        ));
    }
    let scenario = low_load_scenario(opts)?;
    let (saturation, probe_fit) = saturate(&scenario, opts).await?;
    let outcome = fleet::run(&scenario, RunOptions::default(), std::future::pending()).await?;
    let report = outcome.report;
    let profile = build_profile(opts, saturation, probe_fit, &report);
    Ok(Calibration {
        profile,
        fleet_report: report,
    })
}

/// The profile from the two measurements.
fn build_profile(
    opts: &CalibrateOptions,
    saturation: Saturation,
    probe_fit: DurationDist,
    report: &Report,
) -> Profile {
    let mut operations = BTreeMap::new();
    let mut service_by_op = BTreeMap::new();
    for (name, op) in &report.operations {
        let l = &op.latency_s;
        if l.count == 0 || Operation::from_name(name).is_none() {
            continue;
        }
        operations.insert(
            name.clone(),
            MeasuredOp {
                count: l.count,
                mean_s: l.mean,
                p50_s: l.p50,
                p90_s: l.p90,
                p99_s: l.p99,
            },
        );
        // A poll's round trip (the long poll and the keep-alive poll) is mostly its hold,
        // which is not service time: those fall back to the station's `service` (the probe's
        // low-load fit). A handful of samples gives no tail worth fitting: the median alone.
        let is_poll = matches!(
            Operation::from_name(name),
            Some(Operation::PollMessage | Operation::PollEmpty | Operation::KeepAlive)
        );
        if !is_poll {
            let fit = if l.count >= MIN_FIT_SAMPLES {
                lognormal_fit(l.p50, l.p90)
            } else {
                lognormal_fit(l.p50, l.p50)
            };
            service_by_op.insert(name.clone(), fit);
        }
    }
    let workers = (saturation.busy_workers.round() as u32).max(1);
    Profile {
        version: PROFILE_VERSION,
        target: opts.target.clone().unwrap_or_else(|| "embedded".into()),
        saturation,
        operations,
        stations: vec![ProfileStation {
            name: "server".into(),
            workers,
            queue_limit: None,
            shed: None,
            ops: None,
            service: probe_fit,
            service_by_op,
        }],
    }
}

/// A log-normal with the given median and 90th percentile (seconds), in µs, σ capped at 1.5;
/// a constant when the two coincide.
pub fn lognormal_fit(p50_s: f64, p90_s: f64) -> DurationDist {
    let p50 = (p50_s * 1e6).max(1.0);
    let p90 = (p90_s * 1e6).max(p50);
    let sigma = ((p90 / p50).ln() / Z90).min(MAX_SIGMA);
    if sigma <= 1e-9 || !sigma.is_finite() {
        return DurationDist(Shape::Constant(p50.round()));
    }
    DurationDist(Shape::LogNormal {
        mu: p50.ln(),
        sigma,
    })
}

/// Where the probe goes, and the emulator kept alive for it (dropped = stopped).
struct ProbeTarget {
    client: Arc<HttpClient>,
    request: fleetsim_core::wire::WireRequest,
    _emulator: Option<server::RunningEmulator>,
}

async fn probe_target(
    scenario: &Scenario,
    opts: &CalibrateOptions,
) -> Result<ProbeTarget, CalibrateError> {
    let (url, pat, tls, emulator) = match &scenario.target {
        None => {
            let pat = setup::generate_pat().map_err(CalibrateError::Probe)?;
            let config = setup::server_config(scenario, &pat);
            let mut eo = EmulatorOptions::new(([127, 0, 0, 1], 0).into(), config);
            eo.seed = scenario.run.seed;
            eo.max_connections =
                (opts.max_concurrency as usize * 2 + 64).max(server::DEFAULT_MAX_CONNECTIONS);
            let running = server::start(eo).await?;
            (running.base_url.clone(), pat, None, Some(running))
        }
        Some(t) => {
            let pat = setup::read_pat(&t.pat).map_err(CalibrateError::Probe)?;
            let tls = if t.url.starts_with("https://") {
                Some(setup::tls_trust(&t.tls).map_err(CalibrateError::Probe)?)
            } else {
                None
            };
            (t.url.clone(), pat, tls, None)
        }
    };
    let mut co = ClientOptions::new(Target::parse(&url)?);
    co.tls = tls;
    co.request_timeout = Duration::from_secs(10);
    let client = HttpClient::new(co).await?;
    let request = codec::encode_request(
        &Request {
            credential: fleet::pat_credential(&pat),
            call: ApiRequest::ListPools {
                pool_name: Some(scenario.pool_name().to_string()),
            },
        },
        &client.options().target.base_path,
    );
    Ok(ProbeTarget {
        client,
        request,
        _emulator: emulator,
    })
}

/// The ramp; returns the saturation figures and the single-client round-trip fit.
async fn saturate(
    scenario: &Scenario,
    opts: &CalibrateOptions,
) -> Result<(Saturation, DurationDist), CalibrateError> {
    let probe = probe_target(scenario, opts).await?;
    // One call first: a wrong PAT or pool fails here with its status, not as a flat ramp.
    let mut first = probe.client.connection(0);
    let resp = first.send(&probe.request).await?;
    if !(200..300).contains(&resp.status) {
        return Err(CalibrateError::Probe(format!(
            "{} answered HTTP {} (check the PAT and the pool)",
            PROBE.name(),
            resp.status
        )));
    }
    drop(first);
    // One uncounted single-client step first: connections, caches and the allocator warm up,
    // so the single-client step that yields E[S] measures the steady state.
    let _ = ramp_step(&probe, 1, opts.step).await;
    let mut ramp = Vec::new();
    let mut low_load = (0.0, DurationDist::constant(Duration::ZERO));
    let (mut best, mut flat) = (0.0f64, 0u32);
    let mut k = 1u32;
    loop {
        let (step, mut samples) = ramp_step(&probe, k, opts.step).await;
        if k == 1 {
            if samples.is_empty() {
                return Err(CalibrateError::Probe(
                    "no successful answer in the single-client step".into(),
                ));
            }
            samples.sort_unstable();
            let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64();
            low_load = (step.mean_latency_s, lognormal_fit(q(0.5), q(0.9)));
        }
        // Throughput must rise by 5% to count as still climbing; two flat steps end the ramp.
        if step.throughput_per_s > best * 1.05 {
            flat = 0;
        } else {
            flat += 1;
        }
        best = best.max(step.throughput_per_s);
        ramp.push(step);
        if flat >= 2 || k >= opts.max_concurrency {
            break;
        }
        k = (k * 2).min(opts.max_concurrency);
    }
    let top = ramp
        .iter()
        .max_by(|a, b| a.throughput_per_s.total_cmp(&b.throughput_per_s))
        .cloned()
        .unwrap_or(RampStep {
            concurrency: 1,
            throughput_per_s: 0.0,
            mean_latency_s: 0.0,
            errors: 0,
        });
    let saturation = Saturation {
        probe: PROBE.name().into(),
        low_load_latency_s: low_load.0,
        throughput_per_s: top.throughput_per_s,
        concurrency: top.concurrency,
        busy_workers: top.throughput_per_s * low_load.0,
        ramp,
    };
    Ok((saturation, low_load.1))
}

/// One step: `k` closed-loop clients for `length`; the first fifth warms up and is not counted.
async fn ramp_step(probe: &ProbeTarget, k: u32, length: Duration) -> (RampStep, Vec<Duration>) {
    let start = Instant::now();
    let counted_from = start + length / 5;
    let end = start + length;
    let per_task = MAX_SAMPLES / k as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..k {
        let mut conn = probe.client.connection(u64::from(slot) + 1);
        let request = probe.request.clone();
        tasks.spawn(async move {
            let (mut ok, mut errors, mut total) = (0u64, 0u64, Duration::ZERO);
            let mut samples = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = conn.send(&request).await;
                let done = Instant::now();
                if sent < counted_from {
                    continue;
                }
                match result {
                    Ok(r) if (200..300).contains(&r.status) => {
                        ok += 1;
                        let rtt = done - sent;
                        total += rtt;
                        if samples.len() < per_task {
                            samples.push(rtt);
                        }
                    }
                    _ => errors += 1,
                }
            }
            (ok, errors, total, samples)
        });
    }
    let (mut ok, mut errors, mut total, mut samples) = (0u64, 0u64, Duration::ZERO, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        if let Ok((o, e, t, s)) = joined {
            ok += o;
            errors += e;
            total += t;
            samples.extend(s);
        }
    }
    // The window ends when the last answer arrives, which may be after `end`.
    let window = (Instant::now().max(end) - counted_from).as_secs_f64();
    let step = RampStep {
        concurrency: k,
        throughput_per_s: ok as f64 / window.max(1e-9),
        mean_latency_s: if ok == 0 {
            0.0
        } else {
            total.as_secs_f64() / ok as f64
        },
        errors,
    };
    (step, samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lognormal_fit_keeps_the_median_and_p90() {
        // Goal: the fitted distribution has the measured median (e^mu) and 90th percentile;
        // equal quantiles give a constant instead of a degenerate log-normal.
        let DurationDist(Shape::LogNormal { mu, sigma }) = lognormal_fit(0.001, 0.003) else {
            panic!("expected a log-normal");
        };
        assert!((mu.exp() - 1000.0).abs() < 1e-6);
        assert!(((mu + Z90 * sigma).exp() - 3000.0).abs() < 1e-6);
        assert_eq!(
            lognormal_fit(0.002, 0.002),
            DurationDist(Shape::Constant(2000.0))
        );
    }

    #[test]
    fn bad_options_are_refused_before_any_io() {
        // Goal: nonsense sizes are typed errors, not panics or endless ramps.
        let zero = CalibrateOptions {
            agents: 0,
            ..Default::default()
        };
        assert!(matches!(
            low_load_scenario(&zero),
            Err(CalibrateError::Options(_))
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let wide = CalibrateOptions {
            max_concurrency: MAX_CONCURRENCY + 1,
            ..Default::default()
        };
        assert!(matches!(
            rt.block_on(calibrate(&wide)),
            Err(CalibrateError::Options(_))
        ));
    }

    #[test]
    fn calibrating_the_embedded_emulator_gives_a_usable_profile() {
        // Goal: a short calibration of the embedded emulator yields a profile that passes its
        // own checks, names every operation the fleet used, and states a saturation ramp that
        // starts at one client with answers.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = CalibrateOptions {
            agents: 3,
            duration: Duration::from_secs(4),
            step: Duration::from_millis(150),
            max_concurrency: 4,
            ..Default::default()
        };
        let cal = rt.block_on(calibrate(&opts)).expect("calibrates");
        let p = &cal.profile;
        p.check().expect("a valid profile");
        assert_eq!(p.saturation.ramp[0].concurrency, 1);
        assert!(p.saturation.throughput_per_s > 0.0);
        assert!(p.saturation.low_load_latency_s > 0.0);
        assert!(p.stations[0].workers >= 1);
        for op in ["register", "token_exchange", "session_create"] {
            assert!(p.operations.contains_key(op), "{op} missing: {p:?}");
            assert!(p.stations[0].service_by_op.contains_key(op));
        }
        for held in ["poll_empty", "poll_message", "keep_alive"] {
            assert!(
                !p.stations[0].service_by_op.contains_key(held),
                "{held} is a hold"
            );
        }
        // The file is stable: what is read back writes the same text.
        let text = p.to_toml("test").unwrap();
        let again = Profile::from_toml(&text).unwrap().to_toml("test").unwrap();
        assert_eq!(again, text);
    }
}
