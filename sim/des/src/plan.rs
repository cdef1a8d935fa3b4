//! Capacity planning: run one scenario across values of one key (`--vary KEY=V1,V2,…`) and
//! tabulate what matters for the decision — pickup p50/p99, utilisation per station, error rate,
//! jobs/s, the thresholds verdict — as a table, CSV, an SVG chart or an HTML page; or search for
//! the largest value that still meets the thresholds (`--find-max KEY`, more is worse) or the
//! smallest (`--find-min KEY`, less is worse).
//!
//! Every point runs once per seed (`seeds`: the caller derives them from the run seed, see
//! [`seeds_from`]), each an ordinary `simulate` run of the scenario with `KEY=value` and
//! `run.seed=S` added to the overrides, so a point is as deterministic as a single run. A
//! metric is reported as the mean over the seeds with a 95 % Student-t confidence interval
//! ([`Interval`]); the verdict as the number of seeds that passed. Runs go to `threads` worker
//! threads (one per core), and results come back in the order of the values and seeds. This
//! module never reads files itself: the caller passes a loader (usually
//! `fleetsim_scenario::load(path, overrides)`).
//!
//! A sweep splits across machines by point (`shards`: point j on shard j mod N, every seed of
//! it); merging the shards' results gives the rows one machine would have computed.

mod shards;

use std::fmt::Write as _;
use std::sync::Mutex;

use fleetsim_scenario::Scenario;

use crate::driver::{SimOptions, SimOutcome, simulate};

pub use shards::{PLAN_SCHEMA_VERSION, PlanMergeError, PlanPoint, PlanShard, merge_plan_shards};

/// Most seeds per point (each one is a whole simulation).
pub const MAX_SEEDS: usize = 100;

/// The seeds of an `n`-seed plan whose run seed is `base`: `base, base+1, …` (wrapping). The
/// first is the run seed itself, so a one-seed plan is the single run it always was; adjacent
/// seeds give unrelated runs because every random stream is seeded through a 64-bit mix of the
/// run seed (`fleetsim_core::rng::stream_seed`).
pub fn seeds_from(base: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| base.wrapping_add(i)).collect()
}

/// One simulation of a point: one seed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanRun {
    /// The run seed.
    pub seed: u64,
    /// `job_pickup.latency_s.p50`.
    pub pickup_p50_s: f64,
    /// `job_pickup.latency_s.p99`.
    pub pickup_p99_s: f64,
    /// Failed calls / all calls.
    pub error_rate: f64,
    /// `jobs.succeeded`.
    pub jobs_succeeded: u64,
    /// `jobs.succeeded` per measured second (after warm-up).
    pub jobs_per_s: f64,
    /// `jobs.lost` (must be 0).
    pub jobs_lost: u64,
    /// `(station name, mean utilisation)` in scenario order.
    pub utilisation: Vec<(String, f64)>,
    /// `(station name, mean wait in its queue, s)` in scenario order: where a saturated
    /// server shows before any pickup threshold does (jobs go to parked polls, which hold no
    /// worker, so a busy server slows the agents' other calls first).
    pub station_wait_s: Vec<(String, f64)>,
    /// Every threshold passed and every invariant held.
    pub passed: bool,
    /// The run's trace hash, so a run can be replayed and compared.
    pub trace_hash: String,
}

impl PlanRun {
    fn from_outcome(seed: u64, o: &SimOutcome) -> PlanRun {
        let r = &o.report;
        PlanRun {
            seed,
            pickup_p50_s: r.job_pickup.latency_s.p50,
            pickup_p99_s: r.job_pickup.latency_s.p99,
            error_rate: r.errors.rate,
            jobs_succeeded: r.jobs.succeeded,
            jobs_per_s: if r.run.duration_s > 0.0 {
                r.jobs.succeeded as f64 / r.run.duration_s
            } else {
                0.0
            },
            jobs_lost: r.jobs.lost,
            utilisation: o
                .stations
                .iter()
                .map(|s| (s.name.clone(), s.utilisation))
                .collect(),
            station_wait_s: o
                .stations
                .iter()
                .map(|s| (s.name.clone(), s.mean_wait_s))
                .collect(),
            passed: r.thresholds_passed() && o.invariants.ok(),
            trace_hash: r.trace_hash.clone().unwrap_or_default(),
        }
    }
}

/// A mean over seeds with its 95 % confidence interval.
///
/// Why Student-t: each seed is an independent replication of the same point, so the seeds'
/// values of a metric are a sample whose mean estimates the point's true value; with the
/// handful of seeds a plan can afford (5 by default) the spread is itself estimated, and the t
/// quantile (2.776 at 4 degrees of freedom) widens the interval for that where the normal
/// quantile (1.96) would claim too much. A tail percentile of one run (p99) is not normal, but
/// the mean of several runs' p99 is close enough for a 95 % interval to be honest. With one
/// seed there is no spread to measure: `lo == hi == mean`, and `n == 1` says so.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Interval {
    /// The mean over the seeds.
    pub mean: f64,
    /// Lower end of the 95 % interval.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// How many values.
    pub n: usize,
}

impl Interval {
    /// Half the width: the `±` of `mean ± half`.
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }

    /// Whether `v` lies inside the interval (ends included).
    pub fn contains(&self, v: f64) -> bool {
        self.lo <= v && v <= self.hi
    }
}

/// The 95 % Student-t interval of the mean of `xs` (empty: all NaN).
pub fn interval(xs: &[f64]) -> Interval {
    let n = xs.len();
    if n == 0 {
        return Interval {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
            n,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Interval {
            mean,
            lo: mean,
            hi: mean,
            n,
        };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_975(n - 1) * (var / n as f64).sqrt();
    Interval {
        mean,
        lo: mean - half,
        hi: mean + half,
        n,
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95 %): the table
/// up to 30, then the Cornish-Fisher expansion around the normal quantile (within 0.001 there).
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => {
            let (z, v) = (1.959_964f64, df as f64);
            z + (z.powi(3) + z) / (4.0 * v)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        }
    }
}

/// One point of a sweep: its value and one run per seed, in seed order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanRow {
    /// The value of the varied key, as given.
    pub value: String,
    /// One run per seed, in the order of the seeds.
    pub runs: Vec<PlanRun>,
}

impl PlanRow {
    /// The interval of one metric over the seeds.
    pub fn metric(&self, f: impl Fn(&PlanRun) -> f64) -> Interval {
        interval(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    /// Pickup p50 over the seeds.
    pub fn pickup_p50(&self) -> Interval {
        self.metric(|r| r.pickup_p50_s)
    }

    /// Pickup p99 over the seeds.
    pub fn pickup_p99(&self) -> Interval {
        self.metric(|r| r.pickup_p99_s)
    }

    /// Error rate over the seeds.
    pub fn error_rate(&self) -> Interval {
        self.metric(|r| r.error_rate)
    }

    /// Jobs succeeded per measured second over the seeds.
    pub fn jobs_per_s(&self) -> Interval {
        self.metric(|r| r.jobs_per_s)
    }

    /// Jobs lost over all seeds (must be 0).
    pub fn jobs_lost(&self) -> u64 {
        self.runs.iter().map(|r| r.jobs_lost).sum()
    }

    /// Seeds that passed.
    pub fn passes(&self) -> usize {
        self.runs.iter().filter(|r| r.passed).count()
    }

    /// Every seed passed: the point's verdict (a capacity answer should hold for every seed
    /// tried, not on average).
    pub fn passed(&self) -> bool {
        self.passes() == self.runs.len()
    }

    /// Some seed passed.
    pub fn some_passed(&self) -> bool {
        self.passes() > 0
    }

    /// A station's utilisation over the seeds that have it.
    pub fn utilisation(&self, name: &str) -> Option<Interval> {
        station_interval(&self.runs, name, |r| &r.utilisation)
    }

    /// A station's mean queue wait over the seeds that have it.
    pub fn station_wait(&self, name: &str) -> Option<Interval> {
        station_interval(&self.runs, name, |r| &r.station_wait_s)
    }

    fn numeric(&self) -> f64 {
        self.value.parse::<f64>().unwrap_or(f64::NAN)
    }
}

fn station_interval(
    runs: &[PlanRun],
    name: &str,
    of: impl Fn(&PlanRun) -> &Vec<(String, f64)>,
) -> Option<Interval> {
    let xs: Vec<f64> = runs
        .iter()
        .filter_map(|r| of(r).iter().find(|(n, _)| n == name).map(|(_, v)| *v))
        .collect();
    (!xs.is_empty()).then(|| interval(&xs))
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The scenario with `KEY=value` did not load.
    #[error("{key}={value}: {message}")]
    Scenario {
        key: String,
        value: String,
        message: String,
    },
    /// A run failed.
    #[error("{key}={value} (seed {seed}): {source}")]
    Run {
        key: String,
        value: String,
        seed: u64,
        source: crate::driver::DesError,
    },
    /// A search needs a numeric bracket whose good end passes.
    #[error("{direction} {key}: {message}")]
    Search {
        direction: Direction,
        key: String,
        message: String,
    },
}

/// Loads the scenario with extra overrides (`"KEY=VALUE"`); errors are rendered diagnostics.
pub trait Loader: Sync {
    fn load(&self, overrides: &[String]) -> Result<Scenario, String>;
}

impl<F: Fn(&[String]) -> Result<Scenario, String> + Sync> Loader for F {
    fn load(&self, overrides: &[String]) -> Result<Scenario, String> {
        self(overrides)
    }
}

fn run_one(loader: &dyn Loader, key: &str, value: &str, seed: u64) -> Result<PlanRun, PlanError> {
    // The seed goes last so a `--set run.seed` cannot undo the plan's seeds.
    let sets = [format!("{key}={value}"), format!("run.seed={seed}")];
    let scenario = loader.load(&sets).map_err(|message| PlanError::Scenario {
        key: key.into(),
        value: value.into(),
        message,
    })?;
    let out = simulate(&scenario, &SimOptions::default()).map_err(|source| PlanError::Run {
        key: key.into(),
        value: value.into(),
        seed,
        source,
    })?;
    Ok(PlanRun::from_outcome(seed, &out))
}

/// Run the scenario once per value of `key` and seed, on up to `threads` threads; rows in
/// value order, each with its runs in seed order.
pub fn sweep(
    loader: &dyn Loader,
    key: &str,
    values: &[String],
    seeds: &[u64],
    threads: usize,
) -> Result<Vec<PlanRow>, PlanError> {
    let jobs: Vec<(usize, u64)> = (0..values.len())
        .flat_map(|v| seeds.iter().map(move |&s| (v, s)))
        .collect();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<PlanRun, PlanError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(&(v, seed)) = jobs.get(i) else { break };
                    let run = run_one(loader, key, &values[v], seed);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(run);
                }
            });
        }
    });
    let mut runs = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every run was run"));
    let mut rows = Vec::with_capacity(values.len());
    for value in values {
        let row_runs = runs.by_ref().take(seeds.len()).collect::<Result<_, _>>()?;
        rows.push(PlanRow {
            value: value.clone(),
            runs: row_runs,
        });
    }
    Ok(rows)
}

/// Which end of a search's bracket is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// More is worse (e.g. agents on one server): the largest passing value; the low end must
    /// pass.
    Max,
    /// Less is worse (e.g. agents for a surge): the smallest passing value; the high end must
    /// pass.
    Min,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Max => "find-max",
            Direction::Min => "find-min",
        })
    }
}

/// What to search: `key` in `[low, high]`.
#[derive(Clone, Debug)]
pub struct SearchSpec<'a> {
    /// The key.
    pub key: &'a str,
    /// Low end of the bracket.
    pub low: f64,
    /// High end.
    pub high: f64,
    /// Whole numbers only (the bracket closes to 1); otherwise to 1 % of the bracket's span.
    pub integer: bool,
    /// At most this many points (each one runs every seed).
    pub max_points: usize,
    /// Simulations at once.
    pub threads: usize,
    /// The seeds every point runs.
    pub seeds: &'a [u64],
    /// Which end is good.
    pub direction: Direction,
}

/// The result of a search.
///
/// `best` is the answer every seed agrees on. Seeds can disagree near the limit (one seed's
/// surge comes a little earlier): `some_pass` is the farthest value at which some seed still
/// passed, so the limit lies in `best ..= some_pass` (for find-max; mirrored for find-min) —
/// the range where the verdict is uncertain across seeds. `none_pass` is the nearest value
/// beyond at which no seed passed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Found {
    /// Which end was good.
    pub direction: Direction,
    /// The farthest value tried that every seed passed.
    pub best: f64,
    /// The nearest value tried beyond `best` that some seed failed (`None`: the far end
    /// passed every seed).
    pub first_failing: Option<f64>,
    /// The farthest value tried that some seed passed (≥ `best` for find-max).
    pub some_pass: f64,
    /// The nearest value tried beyond `some_pass` that no seed passed (`None`: none tried).
    pub none_pass: Option<f64>,
    /// Every point run, in the order it was run.
    pub tried: Vec<PlanRow>,
}

/// Search `spec.key` for the farthest value from the bad end that every seed passes, assuming
/// a monotone verdict. Then, with the points left in the budget, search on for the farthest
/// value that some seed passes, which bounds the answer's uncertainty.
///
/// Rounds run `threads / seeds` points at once (at least one; each point's seeds run in
/// parallel), spread evenly inside the bracket. Should a round contradict monotonicity (a
/// point passes beyond one that failed), the nearest failing point bounds the answer: the
/// search never reports a value beyond a point it saw fail.
pub fn search(loader: &dyn Loader, spec: &SearchSpec<'_>) -> Result<Found, PlanError> {
    let SearchSpec {
        key,
        low,
        high,
        integer,
        threads,
        seeds,
        direction,
        ..
    } = *spec;
    let fmt = |v: f64| {
        if integer {
            format!("{}", v.round() as i64)
        } else {
            format!("{v}")
        }
    };
    let err = |message: String| PlanError::Search {
        direction,
        key: key.into(),
        message,
    };
    if !low.is_finite() || !high.is_finite() || low >= high {
        return Err(err("needs two finite values, low < high".into()));
    }
    if integer && (low.fract() != 0.0 || high.fract() != 0.0) {
        return Err(err("an integer search needs whole-number ends".into()));
    }
    if seeds.is_empty() {
        return Err(err("needs at least one seed".into()));
    }
    let threads = threads.max(1);
    let max_points = spec.max_points.max(2);
    let (good_end, bad_end) = match direction {
        Direction::Max => (low, high),
        Direction::Min => (high, low),
    };
    let mut tried = sweep(loader, key, &[fmt(good_end), fmt(bad_end)], seeds, threads)?;
    if !tried[0].passed() {
        let end = if direction == Direction::Max {
            "low"
        } else {
            "high"
        };
        return Err(err(format!(
            "the {end} end {} already fails the thresholds ({}/{} seeds pass)",
            fmt(good_end),
            tried[0].passes(),
            seeds.len()
        )));
    }
    let tolerance = if integer { 1.0 } else { 0.01 * (high - low) };
    let per_round = (threads / seeds.len()).max(1);
    // Bisect between `good` (pred holds) and `bad` (it does not), running new points only.
    let bisect = |pred: fn(&PlanRow) -> bool,
                  mut good: f64,
                  mut bad: f64,
                  tried: &mut Vec<PlanRow>|
     -> Result<(f64, f64), PlanError> {
        while (bad - good).abs() > tolerance && tried.len() < max_points {
            let k = per_round.min(max_points - tried.len());
            // Nearest the good end first; integers round towards it so every point is new.
            let mut points: Vec<f64> = (1..=k)
                .map(|i| good + (bad - good) * i as f64 / (k + 1) as f64)
                .map(|p| match (integer, good < bad) {
                    (true, true) => p.floor(),
                    (true, false) => p.ceil(),
                    (false, _) => round_sig(p, 4),
                })
                .filter(|&p| (p - good) * (bad - p) > 0.0)
                .collect();
            points.dedup();
            if points.is_empty() {
                break;
            }
            let values: Vec<String> = points.iter().map(|&p| fmt(p)).collect();
            let rows = sweep(loader, key, &values, seeds, threads)?;
            for (&p, row) in points.iter().zip(&rows) {
                if !pred(row) {
                    bad = p;
                    break;
                }
                good = p;
            }
            tried.extend(rows);
        }
        Ok((good, bad))
    };
    let far_row = tried[1].clone();
    let (best, first_failing) = if far_row.passed() {
        (bad_end, None)
    } else {
        let (g, b) = bisect(PlanRow::passed, good_end, bad_end, &mut tried)?;
        (g, Some(b))
    };
    // The uncertain range: from the farthest point some seed passed to the nearest beyond it
    // that no seed passed.
    let toward = |a: f64, v: f64| (v - a) * (bad_end - good_end) > 0.0;
    let some_from = tried
        .iter()
        .filter(|r| r.some_passed())
        .map(PlanRow::numeric)
        .fold(best, |a, v| if toward(a, v) { v } else { a });
    let none_from = tried
        .iter()
        .filter(|r| !r.some_passed())
        .map(PlanRow::numeric)
        .filter(|&v| toward(some_from, v))
        .fold(None, |a: Option<f64>, v| match a {
            Some(a) if toward(a, v) => Some(a),
            _ => Some(v),
        });
    let (some_pass, none_pass) = match none_from {
        Some(none) if tried.len() < max_points => {
            let (g, b) = bisect(PlanRow::some_passed, some_from, none, &mut tried)?;
            (g, Some(b))
        }
        other => (some_from, other),
    };
    Ok(Found {
        direction,
        best,
        first_failing,
        some_pass,
        none_pass,
        tried,
    })
}

/// `v` rounded to `digits` significant digits, so search points print short and parse back to
/// the value that was run.
fn round_sig(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// Station names over all rows, in first-seen order.
fn station_names(rows: &[PlanRow]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (n, _) in rows
        .iter()
        .flat_map(|r| &r.runs)
        .flat_map(|r| &r.utilisation)
    {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// `mean` or `mean±half` (more than one seed), scaled, with `decimals` and a unit.
fn cell(iv: Interval, scale: f64, decimals: usize, unit: &str) -> String {
    if iv.n > 1 {
        format!(
            "{:.decimals$}±{:.decimals$}{unit}",
            iv.mean * scale,
            iv.half_width() * scale
        )
    } else {
        format!("{:.decimals$}{unit}", iv.mean * scale)
    }
}

/// The verdict of a point: `pass` (every seed), `FAIL` (none) or `k/n` seeds passed.
pub fn verdict(row: &PlanRow) -> String {
    match row.passes() {
        k if k == row.runs.len() => "pass".into(),
        0 => "FAIL".into(),
        k => format!("{k}/{}", row.runs.len()),
    }
}

/// A fixed-width table for terminals: each metric as `mean±half` of its 95 % interval over the
/// seeds (just the value with one seed).
pub fn render_table(key: &str, rows: &[PlanRow]) -> String {
    let names = station_names(rows);
    let mut out = format!(
        "{key:>14}  {:>15}  {:>15}  {:>13}  {:>13}  {:>7}",
        "pickup p50", "pickup p99", "errors", "jobs/s", "verdict"
    );
    for n in &names {
        let _ = write!(
            out,
            "  {:>13}  {:>15}",
            format!("util {n}"),
            format!("wait {n}")
        );
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "{:>14}  {:>15}  {:>15}  {:>13}  {:>13}  {:>7}",
            r.value,
            cell(r.pickup_p50(), 1.0, 3, "s"),
            cell(r.pickup_p99(), 1.0, 3, "s"),
            cell(r.error_rate(), 100.0, 3, "%"),
            cell(r.jobs_per_s(), 1.0, 3, ""),
            verdict(r)
        );
        for n in &names {
            let u = r
                .utilisation(n)
                .map_or("-".into(), |u| cell(u, 100.0, 1, "%"));
            let w = r
                .station_wait(n)
                .map_or("-".into(), |w| cell(w, 1.0, 4, "s"));
            let _ = write!(out, "  {u:>13}  {w:>15}");
        }
        out.push('\n');
    }
    out
}

/// CSV with a header row: for each metric its mean and the 95 % interval's ends
/// (`pickup_p99_s`, `pickup_p99_s_lo`, `pickup_p99_s_hi`); `passes` of `seeds` passed, and
/// `passed` when all did; station utilisations and waits as `util_<name>`, `wait_s_<name>`.
pub fn render_csv(key: &str, rows: &[PlanRow]) -> String {
    let names = station_names(rows);
    let mut out = csv_field(key);
    out.push_str(",seeds");
    let metrics = ["pickup_p50_s", "pickup_p99_s", "error_rate", "jobs_per_s"];
    for m in metrics {
        let _ = write!(out, ",{m},{m}_lo,{m}_hi");
    }
    out.push_str(",jobs_lost,passes,passed,trace_hashes");
    for prefix in ["util_", "wait_s_"] {
        for n in &names {
            let f = csv_field(&format!("{prefix}{n}"));
            let _ = write!(out, ",{f},{f}_lo,{f}_hi");
        }
    }
    out.push('\n');
    let iv = |out: &mut String, i: Option<Interval>| match i {
        Some(i) => {
            let _ = write!(out, ",{},{},{}", i.mean, i.lo, i.hi);
        }
        None => out.push_str(",,,"),
    };
    for r in rows {
        let _ = write!(out, "{},{}", csv_field(&r.value), r.runs.len());
        for i in [
            r.pickup_p50(),
            r.pickup_p99(),
            r.error_rate(),
            r.jobs_per_s(),
        ] {
            iv(&mut out, Some(i));
        }
        let hashes: Vec<&str> = r.runs.iter().map(|x| x.trace_hash.as_str()).collect();
        let _ = write!(
            out,
            ",{},{},{},{}",
            r.jobs_lost(),
            r.passes(),
            r.passed(),
            hashes.join(";")
        );
        for n in &names {
            iv(&mut out, r.utilisation(n));
        }
        for n in &names {
            iv(&mut out, r.station_wait(n));
        }
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG line chart of pickup p50 and p99 (means over the seeds) against the varied value
/// (points in row order, evenly spaced; failing points marked red, points the seeds disagree
/// on orange), with the p99's 95 % interval as an error bar.
pub fn render_svg(key: &str, rows: &[PlanRow]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 360.0;
    const PAD: f64 = 48.0;
    let max_y = rows
        .iter()
        .map(|r| r.pickup_p99().hi)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let n = rows.len().max(2) as f64;
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / (n - 1.0);
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * v.max(0.0) / max_y;
    let line = |f: fn(&PlanRow) -> Interval| -> String {
        rows.iter()
            .enumerate()
            .map(|(i, r)| format!("{:.1},{:.1}", x(i), y(f(r).mean)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{cx}\" y=\"{t}\" text-anchor=\"middle\">{k}</text>\n\
         <text x=\"12\" y=\"{PAD}\">{top:.3} s</text>\n\
         <polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{p50}\"/>\n\
         <polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"{p99}\"/>\n\
         <text x=\"{r}\" y=\"20\" text-anchor=\"end\" fill=\"#1f77b4\">pickup p50</text>\n\
         <text x=\"{r}\" y=\"36\" text-anchor=\"end\" fill=\"#d62728\">pickup p99 (95 % interval)</text>\n",
        b = H - PAD,
        r = W - PAD,
        cx = W / 2.0,
        t = H - 12.0,
        k = xml_escape(key),
        top = max_y,
        p50 = line(PlanRow::pickup_p50),
        p99 = line(PlanRow::pickup_p99),
    );
    for (i, r) in rows.iter().enumerate() {
        let p99 = r.pickup_p99();
        let colour = match r.passes() {
            k if k == r.runs.len() => "black",
            0 => "red",
            _ => "orange",
        };
        if p99.n > 1 {
            let _ = writeln!(
                svg,
                "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"#d62728\"/>",
                x(i),
                y(p99.lo),
                y(p99.hi)
            );
        }
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(i),
            y(p99.mean),
            x(i),
            H - PAD + 16.0,
            xml_escape(&r.value)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The plan's HTML page: pickup p50/p99, jobs/s, error rate and each station's utilisation
/// and queue wait against the varied value, each as its mean over the seeds in its shaded
/// 95 % interval band, with the matching threshold (from `thresholds`) as a dashed line; then
/// the table. `lines` go under the title (what ran, the answer). Points are drawn in ascending
/// order of value (by position when some value is not a number).
pub fn render_html(
    key: &str,
    rows: &[PlanRow],
    thresholds: &[fleetsim_metrics::thresholds::Threshold],
    lines: Vec<String>,
) -> String {
    use fleetsim_metrics::curve::{Curve, CurveBand, CurvePage, CurveUnit, render_curve_page};
    let numeric = rows.iter().all(|r| r.numeric().is_finite());
    let mut order: Vec<&PlanRow> = rows.iter().collect();
    if numeric {
        order.sort_by(|a, b| a.numeric().total_cmp(&b.numeric()));
    }
    let x: Vec<f64> = if numeric {
        order.iter().map(|r| r.numeric()).collect()
    } else {
        (0..order.len()).map(|i| i as f64).collect()
    };
    let band = |label: &str, f: &dyn Fn(&PlanRow) -> Option<Interval>| {
        let ivs: Vec<Option<Interval>> = order.iter().map(|r| f(r)).collect();
        CurveBand {
            label: label.to_string(),
            mean: ivs.iter().map(|i| i.map(|i| i.mean)).collect(),
            lo: ivs.iter().map(|i| i.map(|i| i.lo)).collect(),
            hi: ivs.iter().map(|i| i.map(|i| i.hi)).collect(),
        }
    };
    // The first threshold matching the earliest of `prefixes` (a p99 bound before a p50 one:
    // the tail is what usually binds).
    let threshold = |prefixes: &[&str]| {
        prefixes
            .iter()
            .find_map(|p| thresholds.iter().find(|t| t.metric.starts_with(p)))
            .map(|t| (format!("{} {}", t.metric, t.condition), t.limit))
    };
    let names = station_names(rows);
    let mut curves = vec![
        Curve {
            title: "Job pickup latency".into(),
            note: "p50 and p99 of the time from queued to picked up".into(),
            unit: CurveUnit::Seconds,
            bands: vec![
                band("pickup p50", &|r| Some(r.pickup_p50())),
                band("pickup p99", &|r| Some(r.pickup_p99())),
            ],
            threshold: threshold(&["job_pickup.p99", "job_pickup."]),
        },
        Curve {
            title: "Jobs succeeded per second".into(),
            note: "after warm-up".into(),
            unit: CurveUnit::PerSecond,
            bands: vec![band("jobs/s", &|r| Some(r.jobs_per_s()))],
            threshold: None,
        },
        Curve {
            title: "Error rate".into(),
            note: "failed calls / all calls".into(),
            unit: CurveUnit::Ratio,
            bands: vec![band("errors", &|r| Some(r.error_rate()))],
            threshold: threshold(&["errors."]),
        },
    ];
    if !names.is_empty() {
        curves.push(Curve {
            title: "Server station utilisation".into(),
            note: "mean share of the station's workers busy".into(),
            unit: CurveUnit::Ratio,
            bands: names
                .iter()
                .map(|n| band(n, &|r| r.utilisation(n)))
                .collect(),
            threshold: None,
        });
        curves.push(Curve {
            title: "Server station queue wait".into(),
            note: "mean wait for a worker: where a saturated server shows first".into(),
            unit: CurveUnit::Seconds,
            bands: names
                .iter()
                .map(|n| band(n, &|r| r.station_wait(n)))
                .collect(),
            threshold: None,
        });
    }
    let mut table = vec![
        [
            key,
            "seeds",
            "pickup p50",
            "pickup p99",
            "errors",
            "jobs/s",
            "verdict",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in &names {
        table[0].push(format!("util {n}"));
        table[0].push(format!("wait {n}"));
    }
    for r in &order {
        let mut cells = vec![
            r.value.clone(),
            r.runs.len().to_string(),
            cell(r.pickup_p50(), 1.0, 3, " s"),
            cell(r.pickup_p99(), 1.0, 3, " s"),
            cell(r.error_rate(), 100.0, 3, " %"),
            cell(r.jobs_per_s(), 1.0, 3, ""),
            verdict(r),
        ];
        for n in &names {
            cells.push(
                r.utilisation(n)
                    .map_or("-".into(), |u| cell(u, 100.0, 1, " %")),
            );
            cells.push(
                r.station_wait(n)
                    .map_or("-".into(), |w| cell(w, 1.0, 4, " s")),
            );
        }
        table.push(cells);
    }
    render_curve_page(&CurvePage {
        title: format!("fleetsim plan · {key}"),
        lines,
        x_name: key.to_string(),
        x,
        curves,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[run]
duration = "20m"
warmup = "2m"

[fleet]
agents = 4

[jobs]
rate_per_s = 0.05
duration = { dist = "exponential", mean = "40s" }
steps = 1
log_lines_per_s = 0

[agent]
empty_poll_gap = "0s"

[thresholds]
"job_pickup.p99" = "< 20s"
"#;

    fn loader(overrides: &[String]) -> Result<Scenario, String> {
        fleetsim_scenario::load_str("plan.toml", BASE, overrides).map_err(|d| d.to_string())
    }

    fn spec<'a>(key: &'a str, lo: f64, hi: f64, seeds: &'a [u64]) -> SearchSpec<'a> {
        SearchSpec {
            key,
            low: lo,
            high: hi,
            integer: lo.fract() == 0.0 && hi.fract() == 0.0,
            max_points: 8,
            threads: 2,
            seeds,
            direction: Direction::Max,
        }
    }

    fn verdict_at(found: &Found, v: f64) -> Option<usize> {
        found
            .tried
            .iter()
            .find(|r| r.value.parse::<f64>().ok() == Some(v))
            .map(PlanRow::passes)
    }

    #[test]
    fn sweep_keeps_value_and_seed_order_and_more_load_waits_longer() {
        // Goal: rows come back in the order of the values, each with one run per seed in seed
        // order, whatever thread ran them; the seeds give different runs; the table, CSV and
        // SVG render every row.
        let values: Vec<String> = ["0.02", "0.08"].map(String::from).to_vec();
        let seeds = seeds_from(7, 3);
        assert_eq!(seeds, [7, 8, 9]);
        let rows = sweep(&loader, "jobs.rate_per_s", &values, &seeds, 2).expect("sweep runs");
        assert_eq!(
            rows.iter().map(|r| r.value.as_str()).collect::<Vec<_>>(),
            ["0.02", "0.08"]
        );
        for r in &rows {
            assert_eq!(r.runs.iter().map(|x| x.seed).collect::<Vec<_>>(), seeds);
            let mut hashes: Vec<&str> = r.runs.iter().map(|x| x.trace_hash.as_str()).collect();
            hashes.dedup();
            assert_eq!(hashes.len(), 3, "every seed is its own run: {r:?}");
        }
        assert!(
            rows[1].pickup_p99().mean >= rows[0].pickup_p99().mean,
            "{rows:?}"
        );
        assert!(rows[0].passed());
        let csv = render_csv("jobs.rate_per_s", &rows);
        assert_eq!(csv.lines().count(), 3);
        assert!(
            csv.starts_with("jobs.rate_per_s,seeds,pickup_p50_s,pickup_p50_s_lo,pickup_p50_s_hi"),
            "{csv}"
        );
        let table = render_table("jobs.rate_per_s", &rows);
        assert!(table.contains("pass") && table.contains('±'), "{table}");
        let svg = render_svg("jobs.rate_per_s", &rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2);
        // With a p50 and a p99 bound on pickup, the line is the p99's (the tail binds).
        let thresholds = loader(&["thresholds.\"job_pickup.p50\"=\"< 30s\"".into()])
            .expect("loads")
            .thresholds;
        assert_eq!(thresholds.len(), 2);
        let html = render_html("jobs.rate_per_s", &rows, &thresholds, vec!["ran".into()]);
        assert!(html.contains("\"x\":[0.02,0.08]"), "the values, ascending");
        let p99 = rows[1].pickup_p99();
        assert!(html.contains(&format!("{}", p99.hi)), "the p99 band's top");
        assert!(
            html.contains("\"job_pickup.p99 < 20s\""),
            "the threshold line's label"
        );
        assert!(html.contains("[20.0,20.0]"), "the threshold line");
        assert!(!html.contains("[30.0,30.0]"), "not the p50 bound");
    }

    #[test]
    fn one_seed_is_the_single_run_it_always_was() {
        // Goal: --seeds 1 runs the scenario's own seed: same trace hash as `simulate`, and the
        // interval collapses to the value (no ± in the table).
        let rows = sweep(&loader, "fleet.agents", &["4".to_string()], &[42], 1).expect("runs");
        let alone = simulate(
            &loader(&["fleet.agents=4".into(), "run.seed=42".into()]).expect("loads"),
            &SimOptions::default(),
        )
        .expect("simulates");
        assert_eq!(
            Some(rows[0].runs[0].trace_hash.clone()),
            alone.report.trace_hash
        );
        let p99 = rows[0].pickup_p99();
        assert_eq!((p99.n, p99.lo, p99.hi), (1, p99.mean, p99.mean));
        assert!(!render_table("fleet.agents", &rows).contains('±'));
    }

    #[test]
    fn intervals_contain_the_mean_and_shrink_with_more_seeds() {
        // Goal: the 95 % interval is mean ± t(n-1)·s/√n: it contains the mean, is symmetric,
        // uses the t quantile (wider than the normal one at few seeds), and narrows as the same
        // spread is seen over more seeds.
        let few = interval(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(few.mean, 3.0);
        assert!(few.contains(few.mean));
        let s = (2.5f64).sqrt();
        assert!(
            (few.half_width() - 2.776 * s / 5f64.sqrt()).abs() < 1e-9,
            "{few:?}"
        );
        let many: Vec<f64> = (0..4).flat_map(|_| [1.0, 2.0, 3.0, 4.0, 5.0]).collect();
        let many = interval(&many);
        assert_eq!(many.mean, 3.0);
        assert!(
            many.half_width() < few.half_width() / 2.0,
            "{few:?} {many:?}"
        );
        assert_eq!(interval(&[2.0, 2.0, 2.0]).half_width(), 0.0);
        assert!((t_975(1) - 12.706).abs() < 1e-9);
        assert!((t_975(60) - 2.000).abs() < 1e-3, "{}", t_975(60));
        assert!((t_975(10_000) - 1.960).abs() < 1e-3);
        // On real runs: each point's intervals hold their means.
        let rows = sweep(
            &loader,
            "jobs.rate_per_s",
            &["0.08".into()],
            &seeds_from(1, 4),
            2,
        )
        .expect("runs");
        for iv in [
            rows[0].pickup_p50(),
            rows[0].pickup_p99(),
            rows[0].jobs_per_s(),
        ] {
            assert!(
                iv.n == 4 && iv.contains(iv.mean) && iv.lo <= iv.hi,
                "{iv:?}"
            );
        }
    }

    #[test]
    fn find_max_brackets_the_threshold() {
        // Goal: bisection on the job rate of a 4-agent fleet (p99 pickup < 20 s) returns a
        // value every seed passes with a failing one above it, within the point budget; the
        // uncertain range starts at the answer and stays below where no seed passed.
        let seeds = seeds_from(1, 2);
        let m = search(&loader, &spec("jobs.rate_per_s", 0.01, 0.2, &seeds)).expect("runs");
        assert!(m.tried.len() <= 8, "{m:?}");
        let fail = m
            .first_failing
            .expect("0.2 jobs/s overloads 4 agents (ρ = 2)");
        assert!(m.best < fail && m.best >= 0.01, "{m:?}");
        assert_eq!(verdict_at(&m, m.best), Some(2), "{m:?}");
        assert!(verdict_at(&m, fail).is_some_and(|k| k < 2), "{m:?}");
        assert!(m.some_pass >= m.best, "{m:?}");
        if let Some(none) = m.none_pass {
            assert!(
                none > m.some_pass && verdict_at(&m, none) == Some(0),
                "{m:?}"
            );
        }
        assert!(verdict_at(&m, m.some_pass).is_some_and(|k| k > 0), "{m:?}");
    }

    #[test]
    fn find_min_mirrors_find_max() {
        // Goal: with less worse (agents for a fixed job rate), the search returns the fewest
        // agents every seed passes with a failing count just below, and the uncertain range
        // lies at or below the answer.
        let seeds = seeds_from(1, 2);
        let mut s = spec("fleet.agents", 1.0, 8.0, &seeds);
        s.direction = Direction::Min;
        let m = search(&loader, &s).expect("runs");
        let fail = m
            .first_failing
            .expect("one agent cannot take 0.05 jobs/s of 40 s jobs");
        assert!(fail < m.best && m.best <= 8.0, "{m:?}");
        assert!(
            m.best - fail <= 1.0,
            "an integer bracket closes to 1: {m:?}"
        );
        assert_eq!(verdict_at(&m, m.best), Some(2), "{m:?}");
        assert!(verdict_at(&m, fail).is_some_and(|k| k < 2), "{m:?}");
        assert!(m.some_pass <= m.best, "{m:?}");
        if let Some(none) = m.none_pass {
            assert!(
                none < m.some_pass && verdict_at(&m, none) == Some(0),
                "{m:?}"
            );
        }
        // The far end failing is the error find-max gives for a failing low end.
        s.low = 1.0;
        s.high = 2.0;
        let err = search(&loader, &s).unwrap_err();
        assert!(
            err.to_string()
                .contains("find-min fleet.agents: the high end 2 already fails"),
            "{err}"
        );
    }

    #[test]
    fn a_search_refuses_an_empty_or_fractional_integer_bracket() {
        // Goal: nonsense brackets are typed errors before any run.
        for (lo, hi, int) in [(5.0, 5.0, false), (8.0, 2.0, true), (1.5, 4.0, true)] {
            let mut s = spec("fleet.agents", lo, hi, &[1]);
            s.integer = int;
            let err = search(&loader, &s).unwrap_err();
            assert!(matches!(err, PlanError::Search { .. }), "{err}");
        }
    }

    #[test]
    fn station_utilisation_and_wait_reach_every_output() {
        // Goal: a station's utilisation and queue wait show in the table and the CSV with
        // their intervals (the wait is where a saturated server shows first).
        let run = |seed: u64, u: f64, w: f64, passed: bool| PlanRun {
            seed,
            pickup_p50_s: 0.0,
            pickup_p99_s: 0.5,
            error_rate: 0.0,
            jobs_succeeded: 3,
            jobs_per_s: 0.1,
            jobs_lost: 0,
            utilisation: vec![("web".into(), u)],
            station_wait_s: vec![("web".into(), w)],
            passed,
            trace_hash: format!("h{seed}"),
        };
        let row = PlanRow {
            value: "10".into(),
            runs: vec![run(1, 0.4, 0.25, true), run(2, 0.6, 0.25, false)],
        };
        let csv = render_csv("fleet.agents", std::slice::from_ref(&row));
        let mut lines = csv.lines();
        assert!(
            lines.next().unwrap().ends_with(
                ",util_web,util_web_lo,util_web_hi,wait_s_web,wait_s_web_lo,wait_s_web_hi"
            ),
            "{csv}"
        );
        let line = lines.next().unwrap();
        assert!(line.contains(",0,1,false,h1;h2,0.5,"), "{csv}");
        assert!(line.ends_with(",0.25,0.25,0.25"), "{csv}");
        let table = render_table("fleet.agents", &[row]);
        assert!(
            table.contains("util web") && table.contains("wait web"),
            "{table}"
        );
        // 50 % ± t(1)·s/√2 = 12.706 · 0.1414 / 1.414 = 127.1 %; the verdict is 1 of 2 seeds.
        assert!(
            table.contains("50.0±127.1%") && table.contains("0.2500±0.0000s"),
            "{table}"
        );
        assert!(table.contains("1/2"), "{table}");
    }

    #[test]
    fn a_bad_value_names_the_key() {
        // Goal: a value the scenario rejects comes back as an error naming KEY=VALUE.
        let err = sweep(&loader, "fleet.agents", &["-3".to_string()], &[1], 1).unwrap_err();
        assert!(err.to_string().starts_with("fleet.agents=-3"), "{err}");
    }
}
