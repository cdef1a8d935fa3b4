//! Thresholds: `"job_pickup.p99" = "< 2s"` from a scenario, parsed against the catalogue of known
//! metric names and evaluated against a finished `Report`.
//!
//! A misspelt metric is an error that names the closest known metric, never a silent pass. A
//! metric with no data (a latency percentile of an operation that never succeeded) fails: a gate
//! that passes on missing data hides a broken run.
//!
//! The catalogue (all values in base units: seconds, ratios 0–1, plain counts):
//! - `job_pickup.{p50,p90,p95,p99,max,mean}` (seconds), `job_pickup.count`
//! - `operations.<op>.{p50,p90,p95,p99,max,mean}` (seconds),
//!   `operations.<op>.{count,errors,rate_per_s,error_rate}`
//! - `errors.{count,rate}`, `requests.{count,rate_per_s}`
//! - `jobs.{queued,started,succeeded,failed,canceled,requeued,lost}`
//! - `crypto.<side>.<op>.{ops,ops_per_s,mb_per_s}`
//! - `emulator.leaked_secrets`
//!
//! Conditions are `<op> <value>` with `<op>` one of `<`, `<=`, `>`, `>=`, `==`, `!=` and the
//! value a duration (`500ms`, `2s`, `1m`; durations only), a percentage (`0.1%`; ratios only) or
//! a plain number (counts and rates; ratios as a fraction; `0` for anything).
//!
//! This module never reads files or scenario syntax: the scenario crate hands it two strings.

use std::fmt;

use fleetsim_core::dist::parse_duration;
use fleetsim_core::event::CryptoOp;
use fleetsim_core::ops::Operation;
use serde::{Deserialize, Serialize};

use crate::names;
use crate::report::Report;

/// Latency statistics a threshold can name, for pickup and per operation.
const LATENCY_STATS: &[&str] = &["p50", "p90", "p95", "p99", "max", "mean"];
/// Counter and rate statistics per operation.
const OPERATION_STATS: &[&str] = &["count", "errors", "rate_per_s", "error_rate"];
/// Job counters.
const JOB_FIELDS: &[&str] = &[
    "queued",
    "started",
    "succeeded",
    "failed",
    "canceled",
    "abandoned",
    "requeued",
    "lost",
];
/// Crypto statistics per side and operation.
const CRYPTO_STATS: &[&str] = &["ops", "ops_per_s", "mb_per_s"];

/// What a metric measures, which decides the units its conditions may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Seconds; conditions use durations (`2s`) or `0`.
    Duration,
    /// A fraction 0–1; conditions use `%` or a plain fraction.
    Ratio,
    /// A count of things; plain numbers only.
    Count,
    /// A rate per second (or MB/s); plain numbers only.
    Rate,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Operator {
    /// Operators longest first, so `<=` is not read as `<` followed by `=`.
    const TABLE: &'static [(&'static str, Operator)] = &[
        ("<=", Operator::Le),
        (">=", Operator::Ge),
        ("==", Operator::Eq),
        ("!=", Operator::Ne),
        ("<", Operator::Lt),
        (">", Operator::Gt),
    ];

    fn holds(self, observed: f64, limit: f64) -> bool {
        // Equality on floats is meant for counts (`jobs.lost == 0`), which are exact integers.
        match self {
            Operator::Lt => observed < limit,
            Operator::Le => observed <= limit,
            Operator::Gt => observed > limit,
            Operator::Ge => observed >= limit,
            Operator::Eq => observed == limit,
            Operator::Ne => observed != limit,
        }
    }

    fn symbol(self) -> &'static str {
        Operator::TABLE
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(s, _)| *s)
            .unwrap_or("?")
    }
}

/// A validated threshold: a known metric, an operator and a limit in the metric's base unit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    /// The metric name as the scenario wrote it (a name from `known_metrics`).
    pub metric: String,
    /// The condition as the scenario wrote it, trimmed (`< 2s`).
    pub condition: String,
    /// The operator.
    pub operator: Operator,
    /// The limit in base units (seconds, ratio 0–1, count, per second).
    pub limit: f64,
    /// What the metric measures.
    pub kind: MetricKind,
}

/// The outcome of checking one threshold against a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The metric name.
    pub metric: String,
    /// The condition as written.
    pub condition: String,
    /// The observed value in base units; `None` when the run produced no data for it.
    pub observed: Option<f64>,
    /// Whether the condition held (false when there was no data).
    pub passed: bool,
}

/// Parse and validate one threshold. The error is a sentence for a person, naming the closest
/// known metric for a misspelt name.
pub fn parse(metric: &str, condition: &str) -> Result<Threshold, String> {
    let metric = metric.trim();
    let Some(kind) = kind_of(metric) else {
        return Err(unknown_metric_message(metric));
    };
    let condition = condition.trim();
    let (operator, value_text) = split_operator(condition).ok_or_else(|| {
        format!(
            "invalid condition {condition:?} for `{metric}`: expected an operator \
             (<, <=, >, >=, ==, !=) and a value, e.g. {:?}",
            example_condition(kind)
        )
    })?;
    let limit = parse_value(metric, kind, value_text.trim())?;
    Ok(Threshold {
        metric: metric.to_string(),
        condition: condition.to_string(),
        operator,
        limit,
        kind,
    })
}

/// Every metric name a threshold may use, in catalogue order.
pub fn known_metrics() -> Vec<String> {
    let mut out = Vec::new();
    for s in LATENCY_STATS.iter().chain(&["count"]) {
        out.push(format!("{}.{s}", names::JOB_PICKUP));
    }
    for op in Operation::ALL {
        for s in LATENCY_STATS.iter().chain(OPERATION_STATS) {
            out.push(format!("operations.{}.{s}", op.name()));
        }
    }
    out.extend(
        [
            "errors.count",
            "errors.rate",
            "requests.count",
            "requests.rate_per_s",
        ]
        .map(String::from),
    );
    out.extend(JOB_FIELDS.iter().map(|f| format!("jobs.{f}")));
    for &side in names::SIDES {
        for op in CryptoOp::ALL {
            for s in CRYPTO_STATS {
                out.push(format!(
                    "crypto.{}.{}.{s}",
                    names::side_name(side),
                    op.name()
                ));
            }
        }
    }
    out.push("emulator.leaked_secrets".to_string());
    out
}

/// What a known metric measures; `None` for an unknown name.
pub fn kind_of(metric: &str) -> Option<MetricKind> {
    let parts: Vec<&str> = metric.split('.').collect();
    let latency_or = |stat: &str, other: &[&str], kind: MetricKind| {
        if LATENCY_STATS.contains(&stat) {
            Some(MetricKind::Duration)
        } else if other.contains(&stat) {
            Some(kind)
        } else {
            None
        }
    };
    match parts.as_slice() {
        [p, stat] if *p == names::JOB_PICKUP => latency_or(stat, &["count"], MetricKind::Count),
        ["operations", op, stat] if Operation::from_name(op).is_some() => match *stat {
            "count" | "errors" => Some(MetricKind::Count),
            "rate_per_s" => Some(MetricKind::Rate),
            "error_rate" => Some(MetricKind::Ratio),
            s => latency_or(s, &[], MetricKind::Count),
        },
        ["errors", "count"] | ["requests", "count"] => Some(MetricKind::Count),
        ["errors", "rate"] => Some(MetricKind::Ratio),
        ["requests", "rate_per_s"] => Some(MetricKind::Rate),
        ["jobs", field] if JOB_FIELDS.contains(field) => Some(MetricKind::Count),
        ["crypto", side, op, stat]
            if names::side_from_name(side).is_some()
                && names::crypto_op_from_name(op).is_some() =>
        {
            match *stat {
                "ops" => Some(MetricKind::Count),
                "ops_per_s" | "mb_per_s" => Some(MetricKind::Rate),
                _ => None,
            }
        }
        ["emulator", "leaked_secrets"] => Some(MetricKind::Count),
        _ => None,
    }
}

impl Threshold {
    /// Check the threshold against a report.
    pub fn evaluate(&self, report: &Report) -> ThresholdResult {
        let observed = report.metric_value(&self.metric);
        let passed = observed.is_some_and(|v| self.operator.holds(v, self.limit));
        ThresholdResult {
            metric: self.metric.clone(),
            condition: self.condition.clone(),
            observed,
            passed,
        }
    }
}

impl fmt::Display for Threshold {
    /// `job_pickup.p99 < 2s`, with the limit in canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = format_value(self.kind, self.limit);
        write!(f, "{} {} {limit}", self.metric, self.operator.symbol())
    }
}

/// Render a value of this kind for people: `1.234s`, `0.05%`, `12`, `3.5/s`.
pub fn format_value(kind: MetricKind, value: f64) -> String {
    match kind {
        MetricKind::Duration => crate::summary::format_seconds(value),
        MetricKind::Ratio => format!("{}%", trim_float(value * 100.0)),
        MetricKind::Count => trim_float(value),
        MetricKind::Rate => format!("{}/s", rate_text(value)),
    }
}

/// A rate with about three significant figures: `33.3`, `1250`, `0.125`.
fn rate_text(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        trim_float_to(v, 1)
    } else {
        trim_float_to(v, 3)
    }
}

fn trim_float_to(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A float with at most 4 decimals and no trailing zeros: `12`, `0.05`, `3.1416`.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn split_operator(condition: &str) -> Option<(Operator, &str)> {
    let (symbol, comparison) = Operator::TABLE
        .iter()
        .find(|(symbol, _)| condition.starts_with(symbol))?;
    let rest = &condition[symbol.len()..];
    // `<< 2s` or `=< 2s` would otherwise read as an odd value; refuse a second operator sign.
    if rest.trim_start().starts_with(['<', '>', '=', '!']) || rest.trim().is_empty() {
        return None;
    }
    Some((*comparison, rest))
}

fn parse_value(metric: &str, kind: MetricKind, text: &str) -> Result<f64, String> {
    let value = if let Some(number) = text.strip_suffix('%') {
        if kind != MetricKind::Ratio {
            return Err(format!(
                "`{metric}` is {}: a percentage does not apply (e.g. {:?})",
                kind_phrase(kind),
                example_condition(kind)
            ));
        }
        parse_number(metric, number.trim())? / 100.0
    } else if text.contains(|c: char| c.is_alphabetic()) {
        if kind != MetricKind::Duration {
            return Err(format!(
                "`{metric}` is {}: a duration does not apply (e.g. {:?})",
                kind_phrase(kind),
                example_condition(kind)
            ));
        }
        parse_duration(text)
            .map_err(|e| format!("`{metric}`: {e}"))?
            .as_secs_f64()
    } else {
        let number = parse_number(metric, text)?;
        if kind == MetricKind::Duration && number != 0.0 {
            return Err(format!(
                "`{metric}` is a duration: give a unit (us, ms, s, m, h), e.g. \"< {text}s\""
            ));
        }
        number
    };
    if value < 0.0 {
        return Err(format!(
            "`{metric}`: the limit must not be negative, got {text:?}"
        ));
    }
    Ok(value)
}

fn parse_number(metric: &str, text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("`{metric}`: {text:?} is not a number")),
    }
}

fn kind_phrase(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Duration => "a duration",
        MetricKind::Ratio => "a ratio",
        MetricKind::Count => "a count",
        MetricKind::Rate => "a rate per second",
    }
}

fn example_condition(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Duration => "< 2s",
        MetricKind::Ratio => "< 0.1%",
        MetricKind::Count => "== 0",
        MetricKind::Rate => "> 100",
    }
}

fn unknown_metric_message(metric: &str) -> String {
    // Report keys nest latencies under `latency_s`; threshold names do not. Someone copying a
    // key from report.json should get the threshold name, not the nearest spelling.
    let unnested = metric.replace(".latency_s.", ".");
    let closest = if kind_of(&unnested).is_some() {
        Some(unnested)
    } else {
        known_metrics()
            .into_iter()
            .min_by_key(|k| edit_distance(metric, k))
    };
    match closest {
        Some(c) => format!("unknown threshold metric `{metric}`; did you mean `{c}`?"),
        None => format!("unknown threshold metric `{metric}`"),
    }
}

/// Levenshtein distance over chars; inputs are short metric names, so O(n·m) is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the conditions scenario files write parse to the right operator and base-unit limit.
    #[test]
    fn good_conditions_parse_to_base_units() {
        let table: &[(&str, &str, Operator, f64)] = &[
            ("job_pickup.p99", "< 2s", Operator::Lt, 2.0),
            ("job_pickup.p50", "<= 500ms", Operator::Le, 0.5),
            ("job_pickup.max", "<1m", Operator::Lt, 60.0),
            ("jobs.lost", "== 0", Operator::Eq, 0.0),
            ("errors.rate", "< 0.1%", Operator::Lt, 0.001),
            ("errors.rate", "< 0.001", Operator::Lt, 0.001),
            ("requests.rate_per_s", "> 100", Operator::Gt, 100.0),
            (
                "operations.poll_message.p99",
                ">= 250us",
                Operator::Ge,
                0.000_25,
            ),
            (
                "operations.token_exchange.errors",
                "!= 3",
                Operator::Ne,
                3.0,
            ),
            (
                "operations.register.error_rate",
                "<= 5 %",
                Operator::Le,
                0.05,
            ),
            (
                "crypto.agents.oaep_unwrap.ops_per_s",
                "> 50",
                Operator::Gt,
                50.0,
            ),
            ("emulator.leaked_secrets", "== 0", Operator::Eq, 0.0),
            ("job_pickup.p95", "< 0", Operator::Lt, 0.0),
        ];
        for &(metric, condition, operator, limit) in table {
            let t =
                parse(metric, condition).unwrap_or_else(|e| panic!("{metric} {condition}: {e}"));
            assert_eq!(t.operator, operator, "{metric} {condition}");
            assert!(
                (t.limit - limit).abs() < 1e-12,
                "{metric} {condition}: {}",
                t.limit
            );
        }
    }

    // Goal: every bad threshold is refused with a message that says what to write instead.
    #[test]
    fn bad_thresholds_are_refused_with_messages() {
        let table: &[(&str, &str, &str)] = &[
            (
                "job_pikcup.p99",
                "< 2s",
                "unknown threshold metric `job_pikcup.p99`; did you mean `job_pickup.p99`?",
            ),
            (
                "operations.poll_mesage.p99",
                "< 2s",
                "did you mean `operations.poll_message.p99`?",
            ),
            ("jobs.lsot", "== 0", "did you mean `jobs.lost`?"),
            (
                "job_pickup.latency_s.p99",
                "< 2s",
                "did you mean `job_pickup.p99`?",
            ),
            (
                "operations.register.latency_s.max",
                "< 2s",
                "`operations.register.max`?",
            ),
            (
                "job_pickup.p99",
                "2s",
                "invalid condition \"2s\" for `job_pickup.p99`: expected an operator",
            ),
            ("job_pickup.p99", "<< 2s", "expected an operator"),
            ("job_pickup.p99", "<", "expected an operator"),
            (
                "job_pickup.p99",
                "< 2",
                "`job_pickup.p99` is a duration: give a unit",
            ),
            ("job_pickup.p99", "< 2 parsecs", "unknown unit"),
            (
                "job_pickup.p99",
                "< 5%",
                "`job_pickup.p99` is a duration: a percentage does not apply",
            ),
            (
                "jobs.lost",
                "< 2s",
                "`jobs.lost` is a count: a duration does not apply",
            ),
            ("jobs.lost", "< -1", "must not be negative"),
            ("errors.rate", "< abc%", "\"abc\" is not a number"),
        ];
        for &(metric, condition, expected) in table {
            let err = parse(metric, condition).expect_err(metric);
            assert!(err.contains(expected), "{metric} {condition}: {err}");
        }
    }

    // Goal: every catalogued name parses (the catalogue and `kind_of` agree) and names are unique.
    #[test]
    fn known_metrics_all_parse() {
        let known = known_metrics();
        for m in &known {
            assert!(kind_of(m).is_some(), "{m}");
        }
        let mut sorted = known.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), known.len());
    }

    // Goal: a threshold renders canonically whatever spacing the scenario used.
    #[test]
    fn threshold_displays_canonically() {
        assert_eq!(
            parse("job_pickup.p99", "<2000ms").expect("ok").to_string(),
            "job_pickup.p99 < 2s"
        );
        assert_eq!(
            parse("errors.rate", "<0.1%").expect("ok").to_string(),
            "errors.rate < 0.1%"
        );
    }
}
