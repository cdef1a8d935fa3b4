//! The regression gate: `fleetsim compare BASELINE.json CURRENT.json --max-regression 10%`.
//!
//! It compares the headline figures of two reports — job pickup p50/p99, each operation's p99,
//! request throughput and the error rate — and calls a metric regressed when it got worse by
//! more than the allowed fraction. Relative change uses a small floor under the baseline
//! (1 ms, 0.1 %, 1 request/s) so a baseline of zero does not turn one stray error into an
//! infinite regression.
//!
//! It only reads two `Report`s and renders text; it never opens files.

use std::fmt::Write as _;

use fleetsim_core::ops::Operation;
use serde::Serialize;

use crate::report::Report;
use crate::thresholds::{self, MetricKind};

/// Operations need this many successful calls on both sides before their p99 is compared; a
/// p99 of a handful of samples is noise, not a regression.
pub const MIN_SAMPLES: u64 = 20;

/// Which direction is better for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Latencies and error rates.
    Lower,
    /// Throughput.
    Higher,
}

/// What the gate concluded for one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Better by more than the allowed fraction.
    Improved,
    /// Within the allowed fraction either way.
    Unchanged,
    /// Worse by more than the allowed fraction (fails the gate).
    Regressed,
    /// Data on one side only; fails the gate only for job pickup (the headline).
    Missing,
}

/// One compared metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delta {
    /// A threshold-style metric name (`job_pickup.p99`, `operations.poll_message.p99`).
    pub metric: String,
    /// Baseline value in base units.
    pub baseline: Option<f64>,
    /// Current value in base units.
    pub current: Option<f64>,
    /// Relative change, positive when the value grew (`0.2` = +20 %).
    pub change: Option<f64>,
    /// Which direction is better.
    pub better: Better,
    /// The conclusion.
    pub verdict: Verdict,
    /// Whether this delta fails the gate.
    pub fails: bool,
}

/// The result of comparing two reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// The allowed regression as a fraction (`0.1` = 10 %).
    pub max_regression: f64,
    /// Every compared metric, headline first.
    pub deltas: Vec<Delta>,
    /// True when no delta fails the gate.
    pub passed: bool,
}

/// Compare `current` against `baseline`, allowing `max_regression` (a fraction, `0.1` = 10 %).
pub fn compare(baseline: &Report, current: &Report, max_regression: f64) -> Comparison {
    let mut metrics: Vec<(String, Better, bool)> = vec![
        ("job_pickup.p50".to_string(), Better::Lower, true),
        ("job_pickup.p99".to_string(), Better::Lower, true),
        ("requests.rate_per_s".to_string(), Better::Higher, false),
        ("errors.rate".to_string(), Better::Lower, false),
    ];
    for op in Operation::ALL {
        // An empty long poll's duration is the server's hold time, not latency.
        if *op == Operation::PollEmpty {
            continue;
        }
        let samples = |r: &Report| r.operations.get(op.name()).map_or(0, |o| o.latency_s.count);
        if samples(baseline) >= MIN_SAMPLES && samples(current) >= MIN_SAMPLES {
            metrics.push((
                format!("operations.{}.p99", op.name()),
                Better::Lower,
                false,
            ));
        }
    }
    let deltas: Vec<Delta> = metrics
        .into_iter()
        .map(|(metric, better, headline)| {
            let (b, c) = (
                baseline.metric_value(&metric),
                current.metric_value(&metric),
            );
            delta(metric, b, c, better, headline, max_regression)
        })
        .collect();
    let passed = deltas.iter().all(|d| !d.fails);
    Comparison {
        max_regression,
        deltas,
        passed,
    }
}

fn delta(
    metric: String,
    baseline: Option<f64>,
    current: Option<f64>,
    better: Better,
    headline: bool,
    max_regression: f64,
) -> Delta {
    let (change, verdict) = match (baseline, current) {
        (Some(b), Some(c)) => {
            let floor = floor_for(thresholds::kind_of(&metric).unwrap_or(MetricKind::Count));
            let change = (c - b) / b.abs().max(floor);
            let worse = match better {
                Better::Lower => change,
                Better::Higher => -change,
            };
            let verdict = if worse > max_regression {
                Verdict::Regressed
            } else if worse < -max_regression {
                Verdict::Improved
            } else {
                Verdict::Unchanged
            };
            (Some(change), verdict)
        }
        (None, None) => (None, Verdict::Unchanged),
        _ => (None, Verdict::Missing),
    };
    // Job pickup vanishing from the current run (no job picked up) is the worst regression.
    let fails = verdict == Verdict::Regressed
        || (verdict == Verdict::Missing && headline && current.is_none());
    Delta {
        metric,
        baseline,
        current,
        change,
        better,
        verdict,
        fails,
    }
}

/// The smallest baseline a relative change divides by, per kind.
fn floor_for(kind: MetricKind) -> f64 {
    match kind {
        MetricKind::Duration => 0.001,
        MetricKind::Ratio => 0.001,
        MetricKind::Count | MetricKind::Rate => 1.0,
    }
}

/// Parse `--max-regression`: `10%` or a fraction `0.1`.
pub fn parse_max_regression(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 0.01),
        None => (t, 1.0),
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * scale),
        _ => Err(format!(
            "invalid max regression {text:?}: write a percentage such as \"10%\""
        )),
    }
}

impl Comparison {
    /// Render the comparison as a fixed-layout text table with a final verdict line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let limit = thresholds::format_value(MetricKind::Ratio, self.max_regression);
        let _ = writeln!(out, "fleetsim compare · max regression {limit}");
        let _ = writeln!(
            out,
            "  {:<36}{:>12}{:>12}{:>10}  verdict",
            "metric", "baseline", "current", "change"
        );
        for d in &self.deltas {
            let kind = thresholds::kind_of(&d.metric).unwrap_or(MetricKind::Count);
            let value = |v: Option<f64>| {
                v.map_or_else(|| "-".to_string(), |v| thresholds::format_value(kind, v))
            };
            let change = d
                .change
                .map_or_else(|| "-".to_string(), |c| format!("{:+.1}%", c * 100.0));
            let verdict = match d.verdict {
                Verdict::Improved => "improved",
                Verdict::Unchanged => "ok",
                Verdict::Regressed => "REGRESSED",
                Verdict::Missing => "missing",
            };
            let mark = if d.fails { '✗' } else { '✓' };
            let _ = writeln!(
                out,
                "  {:<36}{:>12}{:>12}{:>10}  {mark} {verdict}",
                d.metric,
                value(d.baseline),
                value(d.current),
                change
            );
        }
        let failing = self.deltas.iter().filter(|d| d.fails).count();
        if self.passed {
            let _ = writeln!(out, "verdict: PASS");
        } else {
            let _ = writeln!(out, "verdict: FAIL ({failing} regressed)");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{LatencySummary, OperationReport};

    fn latency(p50: f64, p99: f64, count: u64) -> LatencySummary {
        LatencySummary {
            count,
            mean: p50,
            p50,
            p90: p99,
            p95: p99,
            p99,
            max: p99,
        }
    }

    /// A report with the compared figures, every latency scaled by `factor`.
    fn report(factor: f64) -> Report {
        let mut r = Report::default();
        r.job_pickup.latency_s = latency(0.1 * factor, 1.0 * factor, 1_000);
        r.requests.rate_per_s = 500.0;
        r.errors.rate = 0.0;
        let op = OperationReport {
            count: 1_000,
            latency_s: latency(0.01 * factor, 0.05 * factor, 1_000),
            ..OperationReport::default()
        };
        r.operations.insert("poll_message".to_string(), op);
        r
    }

    // Goal: a 20 % slowdown fails a 10 % gate; a 5 % slowdown passes it.
    #[test]
    fn twenty_percent_regression_fails_ten_percent_gate() {
        let baseline = report(1.0);
        let worse = compare(&baseline, &report(1.2), 0.10);
        assert!(!worse.passed);
        let regressed: Vec<&str> = worse
            .deltas
            .iter()
            .filter(|d| d.verdict == Verdict::Regressed)
            .map(|d| d.metric.as_str())
            .collect();
        assert_eq!(
            regressed,
            [
                "job_pickup.p50",
                "job_pickup.p99",
                "operations.poll_message.p99"
            ]
        );
        let slight = compare(&baseline, &report(1.05), 0.10);
        assert!(slight.passed, "{}", slight.render());
        let better = compare(&baseline, &report(0.5), 0.10);
        assert!(better.passed);
        assert_eq!(better.deltas[0].verdict, Verdict::Improved);
    }

    // Goal: throughput regresses when it falls; the error rate's zero baseline does not divide
    // by zero; a run that picked up no job fails the gate.
    #[test]
    fn throughput_errors_and_missing_pickup_are_judged() {
        let baseline = report(1.0);
        let mut current = report(1.0);
        current.requests.rate_per_s = 400.0;
        current.errors.rate = 0.000_05;
        let c = compare(&baseline, &current, 0.10);
        let verdict = |m: &str| c.deltas.iter().find(|d| d.metric == m).expect(m).verdict;
        assert_eq!(verdict("requests.rate_per_s"), Verdict::Regressed);
        assert_eq!(
            verdict("errors.rate"),
            Verdict::Unchanged,
            "5e-5 is within 10% of the floor"
        );
        current = report(1.0);
        current.job_pickup.latency_s = LatencySummary::default();
        let c = compare(&baseline, &current, 0.10);
        assert!(!c.passed);
        assert_eq!(c.deltas[1].verdict, Verdict::Missing);
    }

    // Goal: the text rendering shows each metric with its values and the overall verdict.
    #[test]
    fn comparison_renders_as_text() {
        let text = compare(&report(1.0), &report(1.2), 0.10).render();
        let expected = concat!(
            "fleetsim compare · max regression 10%\n",
            "  metric                                  baseline     current    change",
            "  verdict\n",
            "  job_pickup.p50                             100ms       120ms    +20.0%",
            "  ✗ REGRESSED\n",
            "  job_pickup.p99                                1s        1.2s    +20.0%",
            "  ✗ REGRESSED\n",
            "  requests.rate_per_s                        500/s       500/s     +0.0%  ✓ ok\n",
            "  errors.rate                                   0%          0%     +0.0%  ✓ ok\n",
            "  operations.poll_message.p99                 50ms        60ms    +20.0%",
            "  ✗ REGRESSED\n",
            "verdict: FAIL (3 regressed)\n",
        );
        assert_eq!(text, expected);
    }

    // Goal: --max-regression accepts a percentage or a fraction and refuses nonsense.
    #[test]
    fn max_regression_parses_percent_and_fraction() {
        assert_eq!(parse_max_regression("10%"), Ok(0.1));
        assert_eq!(parse_max_regression("0.25"), Ok(0.25));
        assert!(parse_max_regression("ten").is_err());
        assert!(parse_max_regression("-5%").is_err());
    }
}
