//! Capacity planning: run one scenario across values of one key (`--vary KEY=V1,V2,…`) and
//! tabulate what matters for the decision — pickup p50/p99, utilisation per station, error rate,
//! the thresholds verdict — as a table, CSV or an SVG chart; or search for the largest value
//! that still meets the thresholds (`--find-max KEY`).
//!
//! Every point is an ordinary `simulate` run of the scenario with `KEY=value` added to the
//! overrides, so it is as deterministic as a single run; points run on `threads` worker threads
//! (one per core), and results come back in the order of the values. This module never reads
//! files itself: the caller passes a loader (usually `fleetsim_scenario::load(path, overrides)`).
//!
//! A sweep splits across machines by point (`shards`: point j on shard j mod N); merging the
//! shards' results gives the rows one machine would have computed.

mod shards;

use std::fmt::Write as _;
use std::sync::Mutex;

use fleetsim_scenario::Scenario;

use crate::driver::{SimOptions, SimOutcome, simulate};

pub use shards::{PLAN_SCHEMA_VERSION, PlanMergeError, PlanPoint, PlanShard, merge_plan_shards};

/// One point of a sweep.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanRow {
    /// The value of the varied key, as given.
    pub value: String,
    /// `job_pickup.latency_s.p50`.
    pub pickup_p50_s: f64,
    /// `job_pickup.latency_s.p99`.
    pub pickup_p99_s: f64,
    /// Failed calls / all calls.
    pub error_rate: f64,
    /// `jobs.succeeded`.
    pub jobs_succeeded: u64,
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
    /// The run's trace hash, so a point can be replayed and compared.
    pub trace_hash: String,
}

impl PlanRow {
    fn from_outcome(value: String, o: &SimOutcome) -> PlanRow {
        let r = &o.report;
        PlanRow {
            value,
            pickup_p50_s: r.job_pickup.latency_s.p50,
            pickup_p99_s: r.job_pickup.latency_s.p99,
            error_rate: r.errors.rate,
            jobs_succeeded: r.jobs.succeeded,
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
    #[error("{key}={value}: {source}")]
    Run {
        key: String,
        value: String,
        source: crate::driver::DesError,
    },
    /// `--find-max` needs a numeric bracket whose low end passes.
    #[error("find-max {key}: {message}")]
    Search { key: String, message: String },
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

fn run_point(loader: &dyn Loader, key: &str, value: &str) -> Result<PlanRow, PlanError> {
    let set = format!("{key}={value}");
    let scenario = loader.load(&[set]).map_err(|message| PlanError::Scenario {
        key: key.into(),
        value: value.into(),
        message,
    })?;
    let out = simulate(&scenario, &SimOptions::default()).map_err(|source| PlanError::Run {
        key: key.into(),
        value: value.into(),
        source,
    })?;
    Ok(PlanRow::from_outcome(value.to_string(), &out))
}

/// Run the scenario once per value of `key`, on up to `threads` threads; rows in value order.
pub fn sweep(
    loader: &dyn Loader,
    key: &str,
    values: &[String],
    threads: usize,
) -> Result<Vec<PlanRow>, PlanError> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<PlanRow, PlanError>>>> =
        Mutex::new((0..values.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, values.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(value) = values.get(i) else { break };
                    let row = run_point(loader, key, value);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(row);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results
        .into_iter()
        .map(|r| r.expect("every value was run"))
        .collect()
}

/// The result of a `--find-max` search.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FindMax {
    /// The largest value tried that passed.
    pub best: f64,
    /// The smallest value tried that failed (`None`: the high end passed too).
    pub first_failing: Option<f64>,
    /// Every point run, in the order it was run.
    pub tried: Vec<PlanRow>,
}

/// Bisect `key` between `low` (must pass) and `high` for the largest passing value, assuming
/// more is worse (monotone verdict). Integer keys (`integer`) stop when the bracket closes to 1;
/// others at 1% of `high`. At most `max_runs` simulations, one at a time.
pub fn find_max(
    loader: &dyn Loader,
    key: &str,
    low: f64,
    high: f64,
    integer: bool,
    max_runs: usize,
) -> Result<FindMax, PlanError> {
    find_max_parallel(loader, key, low, high, integer, max_runs, 1)
}

/// [`find_max`] on `threads` threads: both ends run together, then every round runs `threads`
/// points spread evenly inside the bracket at once, so with two cores the bracket shrinks
/// threefold per round instead of twofold. With `threads == 1` it is plain bisection.
///
/// The verdict is assumed monotone (more is worse). Should a round contradict that (a point
/// passes above one that failed), the lowest failing point bounds the answer: the search never
/// reports a value above a point it saw fail.
pub fn find_max_parallel(
    loader: &dyn Loader,
    key: &str,
    low: f64,
    high: f64,
    integer: bool,
    max_runs: usize,
    threads: usize,
) -> Result<FindMax, PlanError> {
    let fmt = |v: f64| {
        if integer {
            format!("{}", v.round() as i64)
        } else {
            format!("{v}")
        }
    };
    let search = |message: &str| PlanError::Search {
        key: key.into(),
        message: message.into(),
    };
    if !low.is_finite() || !high.is_finite() || low >= high {
        return Err(search("needs two finite values, low < high"));
    }
    if integer && (low.fract() != 0.0 || high.fract() != 0.0) {
        return Err(search("an integer search needs whole-number ends"));
    }
    let threads = threads.max(1);
    let max_runs = max_runs.max(2);
    let ends = sweep(loader, key, &[fmt(low), fmt(high)], threads)?;
    let (low_passed, high_passed) = (ends[0].passed, ends[1].passed);
    let mut tried = ends;
    if !low_passed {
        return Err(search(&format!(
            "the low end {} already fails the thresholds",
            fmt(low)
        )));
    }
    if high_passed {
        return Ok(FindMax {
            best: high,
            first_failing: None,
            tried,
        });
    }
    let (mut good, mut bad) = (low, high);
    let tolerance = if integer { 1.0 } else { 0.01 * high.abs() };
    while bad - good > tolerance && tried.len() < max_runs {
        let k = threads.min(max_runs - tried.len());
        let mut points: Vec<f64> = (1..=k)
            .map(|i| good + (bad - good) * i as f64 / (k + 1) as f64)
            .map(|p| if integer { p.floor() } else { round_sig(p, 4) })
            .filter(|&p| p > good && p < bad)
            .collect();
        points.dedup();
        if points.is_empty() {
            break;
        }
        let values: Vec<String> = points.iter().map(|&p| fmt(p)).collect();
        let rows = sweep(loader, key, &values, threads)?;
        // Ascending order: everything below the first failure that passed raises `good`.
        for (&p, row) in points.iter().zip(&rows) {
            if !row.passed {
                bad = p;
                break;
            }
            good = p;
        }
        tried.extend(rows);
    }
    Ok(FindMax {
        best: good,
        first_failing: Some(bad),
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
    for (n, _) in rows.iter().flat_map(|r| &r.utilisation) {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

fn utilisation_of(row: &PlanRow, name: &str) -> Option<f64> {
    row.utilisation
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, u)| *u)
}

fn wait_of(row: &PlanRow, name: &str) -> Option<f64> {
    row.station_wait_s
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, w)| *w)
}

/// A fixed-width table for terminals.
pub fn render_table(key: &str, rows: &[PlanRow]) -> String {
    let names = station_names(rows);
    let mut out = format!(
        "{key:>14}  {:>10}  {:>10}  {:>8}  {:>7}",
        "pickup p50", "pickup p99", "errors", "verdict"
    );
    for n in &names {
        let _ = write!(
            out,
            "  {:>10}  {:>10}",
            format!("util {n}"),
            format!("wait {n}")
        );
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "{:>14}  {:>9.3}s  {:>9.3}s  {:>7.3}%  {:>7}",
            r.value,
            r.pickup_p50_s,
            r.pickup_p99_s,
            r.error_rate * 100.0,
            if r.passed { "pass" } else { "FAIL" }
        );
        for n in &names {
            match utilisation_of(r, n) {
                Some(u) => {
                    let _ = write!(out, "  {:>9.1}%", u * 100.0);
                }
                None => out.push_str("           -"),
            }
            match wait_of(r, n) {
                Some(w) => {
                    let _ = write!(out, "  {w:>9.4}s");
                }
                None => out.push_str("           -"),
            }
        }
        out.push('\n');
    }
    out
}

/// CSV with a header row; station utilisations as `util_<name>` columns.
pub fn render_csv(key: &str, rows: &[PlanRow]) -> String {
    let names = station_names(rows);
    let mut out = format!(
        "{},pickup_p50_s,pickup_p99_s,error_rate,jobs_succeeded,jobs_lost,passed,trace_hash",
        csv_field(key)
    );
    for n in &names {
        let _ = write!(out, ",{}", csv_field(&format!("util_{n}")));
    }
    for n in &names {
        let _ = write!(out, ",{}", csv_field(&format!("wait_s_{n}")));
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{}",
            csv_field(&r.value),
            r.pickup_p50_s,
            r.pickup_p99_s,
            r.error_rate,
            r.jobs_succeeded,
            r.jobs_lost,
            r.passed,
            r.trace_hash
        );
        for n in &names {
            let _ = write!(
                out,
                ",{}",
                utilisation_of(r, n).map_or(String::new(), |u| u.to_string())
            );
        }
        for n in &names {
            let _ = write!(
                out,
                ",{}",
                wait_of(r, n).map_or(String::new(), |w| w.to_string())
            );
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

/// An SVG line chart of pickup p50 and p99 against the varied value (points in row order,
/// evenly spaced; failing points marked red).
pub fn render_svg(key: &str, rows: &[PlanRow]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 360.0;
    const PAD: f64 = 48.0;
    let max_y = rows
        .iter()
        .map(|r| r.pickup_p99_s)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let n = rows.len().max(2) as f64;
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / (n - 1.0);
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * v / max_y;
    let line = |f: fn(&PlanRow) -> f64| -> String {
        rows.iter()
            .enumerate()
            .map(|(i, r)| format!("{:.1},{:.1}", x(i), y(f(r))))
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
         <text x=\"{r}\" y=\"36\" text-anchor=\"end\" fill=\"#d62728\">pickup p99</text>\n",
        b = H - PAD,
        r = W - PAD,
        cx = W / 2.0,
        t = H - 12.0,
        k = xml_escape(key),
        top = max_y,
        p50 = line(|r| r.pickup_p50_s),
        p99 = line(|r| r.pickup_p99_s),
    );
    for (i, r) in rows.iter().enumerate() {
        let colour = if r.passed { "black" } else { "red" };
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(i),
            y(r.pickup_p99_s),
            x(i),
            H - PAD + 16.0,
            xml_escape(&r.value)
        );
    }
    svg.push_str("</svg>\n");
    svg
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

    #[test]
    fn sweep_keeps_value_order_and_more_load_waits_longer() {
        // Goal: rows come back in the order of the values whatever thread ran them, and the
        // table, CSV and SVG render every row.
        let values: Vec<String> = ["0.02", "0.08"].map(String::from).to_vec();
        let rows = sweep(&loader, "jobs.rate_per_s", &values, 2).expect("sweep runs");
        assert_eq!(
            rows.iter().map(|r| r.value.as_str()).collect::<Vec<_>>(),
            ["0.02", "0.08"]
        );
        assert!(rows[1].pickup_p99_s >= rows[0].pickup_p99_s, "{rows:?}");
        assert!(rows[0].passed);
        let csv = render_csv("jobs.rate_per_s", &rows);
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.starts_with("jobs.rate_per_s,pickup_p50_s"));
        assert!(render_table("jobs.rate_per_s", &rows).contains("pass"));
        let svg = render_svg("jobs.rate_per_s", &rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2);
    }

    #[test]
    fn find_max_brackets_the_threshold() {
        // Goal: bisection on the job rate of a 4-agent fleet (p99 pickup < 20 s) returns a
        // passing value with a failing one above it, within the run budget.
        let m = find_max(&loader, "jobs.rate_per_s", 0.01, 0.2, false, 8).expect("search runs");
        assert!(m.tried.len() <= 8);
        let fail = m
            .first_failing
            .expect("0.2 jobs/s overloads 4 agents (ρ = 2)");
        assert!(m.best < fail && m.best >= 0.01, "{m:?}");
        let best = m
            .tried
            .iter()
            .find(|r| r.value.parse::<f64>().ok() == Some(m.best));
        assert!(best.is_some_and(|r| r.passed));
    }

    #[test]
    fn parallel_find_max_agrees_with_the_bracket_and_stays_in_budget() {
        // Goal: two points per round still bracket the answer (a passing value below a failing
        // one, every reported value actually run with that verdict), within the run budget.
        let m = find_max_parallel(&loader, "jobs.rate_per_s", 0.01, 0.2, false, 6, 2)
            .expect("search runs");
        assert!(m.tried.len() <= 6, "{m:?}");
        let verdict = |v: f64| {
            m.tried
                .iter()
                .find(|r| r.value.parse::<f64>().ok() == Some(v))
                .map(|r| r.passed)
        };
        assert_eq!(verdict(m.best), Some(true), "{m:?}");
        let f = m.first_failing.expect("0.2 jobs/s overloads 4 agents");
        assert!(f > m.best);
        assert_eq!(verdict(f), Some(false), "{m:?}");
    }

    #[test]
    fn find_max_refuses_an_empty_or_fractional_integer_bracket() {
        // Goal: nonsense brackets are typed errors before any run.
        for (lo, hi, int) in [(5.0, 5.0, false), (8.0, 2.0, true), (1.5, 4.0, true)] {
            let err = find_max_parallel(&loader, "fleet.agents", lo, hi, int, 4, 2).unwrap_err();
            assert!(matches!(err, PlanError::Search { .. }), "{err}");
        }
    }

    #[test]
    fn station_utilisation_and_wait_reach_every_output() {
        // Goal: a station's utilisation and queue wait show in the table and the CSV (the wait
        // is where a saturated server shows first).
        let row = PlanRow {
            value: "10".into(),
            pickup_p50_s: 0.0,
            pickup_p99_s: 0.5,
            error_rate: 0.0,
            jobs_succeeded: 3,
            jobs_lost: 0,
            utilisation: vec![("web".into(), 0.5)],
            station_wait_s: vec![("web".into(), 0.25)],
            passed: true,
            trace_hash: "h".into(),
        };
        let csv = render_csv("fleet.agents", std::slice::from_ref(&row));
        let mut lines = csv.lines();
        assert!(
            lines.next().unwrap().ends_with(",util_web,wait_s_web"),
            "{csv}"
        );
        assert!(lines.next().unwrap().ends_with(",0.5,0.25"), "{csv}");
        let table = render_table("fleet.agents", &[row]);
        assert!(
            table.contains("util web") && table.contains("wait web"),
            "{table}"
        );
        assert!(
            table.contains("50.0%") && table.contains("0.2500s"),
            "{table}"
        );
    }

    #[test]
    fn a_bad_value_names_the_key() {
        // Goal: a value the scenario rejects comes back as an error naming KEY=VALUE.
        let err = sweep(&loader, "fleet.agents", &["-3".to_string()], 1).unwrap_err();
        assert!(err.to_string().starts_with("fleet.agents=-3"), "{err}");
    }
}
