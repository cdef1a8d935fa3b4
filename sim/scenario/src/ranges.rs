//! The allowed range of every number a scenario file holds, in one table. The loader checks
//! each value against it before deserializing (a value out of range is reported at the value and
//! left out, so its default stands in while checking goes on), and the message for a value of
//! the wrong type says what to write from the same entry. `docs/SCENARIOS.md` lists the same
//! limits, and a test checks that it names every one.
//!
//! Each bound is one a real run can meet: rates a server could see, counts the emulator or a
//! real agent would use. Durations are bounded where they are parsed (`crate::leaf`,
//! [`MAX_DURATION`]); fractions by their type (0 to 1). Cross-field rules (distinct_keys ≤
//! agents, warmup < duration) stay in `crate::validate`. This module reads no other field.

use std::time::Duration;

use fleetsim_core::server::MAX_JOBS_PER_RUN;
use fleetsim_core::workload::MAX_LOG_LINES_PER_STEP;

use crate::doc::Seg;
use crate::validate::{MAX_AGENTS, MAX_STATION_SIZE};

/// Jobs per second at most, for any arrival process: far beyond what one Azure DevOps
/// organisation queues, and what keeps the arrival process's work per wake-up bounded.
pub const MAX_RATE_PER_S: f64 = 100_000.0;
/// Jobs in one burst at most.
pub const MAX_BURST_SIZE: u32 = 1_000_000;
/// Any duration in a scenario at most (a run, a timer, a fault): 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);
/// Lines per second a step prints at most.
pub const MAX_LOG_LINES_PER_S: f64 = 100_000.0;
/// Bytes one job or step attaches at most (4 GiB).
pub const MAX_ARTIFACT_BYTES: u64 = 4 << 30;

/// How a number is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An integer.
    Whole,
    /// Any number, integer or float.
    Number,
    /// A byte count: an integer, or a string with a unit ("64KiB").
    Bytes,
    /// A duration, a string with a unit ("10s"), counted in seconds.
    Duration,
}

/// One key's allowed values.
#[derive(Clone, Copy, Debug)]
pub struct NumRange {
    /// The key path; `[]` stands for any list index, `*` for any table key.
    pub key: &'static str,
    /// How it is written.
    pub kind: Kind,
    /// The least value allowed.
    pub min: f64,
    /// The greatest value allowed.
    pub max: f64,
    /// What the number counts, for messages ("jobs per second"); may be empty.
    pub unit: &'static str,
}

const fn whole(key: &'static str, min: u64, max: u64, unit: &'static str) -> NumRange {
    NumRange {
        key,
        kind: Kind::Whole,
        min: min as f64,
        max: max as f64,
        unit,
    }
}

const fn number(key: &'static str, max: f64, unit: &'static str) -> NumRange {
    NumRange {
        key,
        kind: Kind::Number,
        min: 0.0,
        max,
        unit,
    }
}

const fn bytes(key: &'static str, min: u64, max: u64) -> NumRange {
    NumRange {
        key,
        kind: Kind::Bytes,
        min: min as f64,
        max: max as f64,
        unit: "bytes",
    }
}

const fn seconds(key: &'static str, min: f64, max: f64) -> NumRange {
    NumRange {
        key,
        kind: Kind::Duration,
        min,
        max,
        unit: "seconds",
    }
}

/// The embedded emulator's connection deadlines, in seconds: from a tenth of a second (tests
/// of clients that stall) to an hour (beyond, a stalled client holds its slot for longer than
/// any run needs).
const DEADLINE_MIN_S: f64 = 0.1;
const DEADLINE_MAX_S: f64 = 3_600.0;

const U32: u64 = u32::MAX as u64;
const U64: u64 = u64::MAX;

/// Every number of a scenario file, in the order `docs/SCENARIOS.md` documents them.
pub const RANGES: &[NumRange] = &[
    whole("run.seed", 0, U64, ""),
    whole("fleet.agents", 1, MAX_AGENTS as u64, "agents"),
    whole("fleet.distinct_keys", 1, MAX_AGENTS as u64, "keys"),
    whole("agent.error_backoff_first_count", 0, 1_000, "errors"),
    whole("agent.first_renew_tries", 1, 1_000, "tries"),
    whole("agent.feed_batch_lines_max", 1, 100_000, "lines"),
    whole("agent.feed_batches_per_tick_max", 1, 1_000, "batches"),
    whole("agent.line_chars_max", 1, 1 << 20, "characters"),
    bytes("agent.log_page_bytes_max", 1, 1 << 30),
    whole("agent.completion_tries", 1, 1_000, "tries"),
    bytes("agent.artifact_bytes_max", 0, MAX_ARTIFACT_BYTES),
    whole("agent.auth_retries_max", 0, 100, "re-mints"),
    number("jobs.rate_per_s", MAX_RATE_PER_S, "jobs per second"),
    whole("jobs.arrival.bursts.size", 1, MAX_BURST_SIZE as u64, "jobs"),
    number(
        "jobs.log_lines_per_s",
        MAX_LOG_LINES_PER_S,
        "lines per second",
    ),
    whole("jobs.secret_lines", 0, MAX_LOG_LINES_PER_STEP, "lines"),
    whole("jobs.pipelines[].id", 1, U32, ""),
    whole("jobs.pipelines[].weight", 1, 1_000_000, ""),
    number(
        "jobs.tasks.*.log_lines_per_s",
        MAX_LOG_LINES_PER_S,
        "lines per second",
    ),
    whole(
        "jobs.tasks.*.secret_lines",
        0,
        MAX_LOG_LINES_PER_STEP,
        "lines",
    ),
    whole("server.limits.max_agents", 1, MAX_AGENTS as u64, "agents"),
    whole(
        "server.limits.max_sessions",
        1,
        MAX_AGENTS as u64,
        "sessions",
    ),
    whole("server.limits.max_queued_jobs", 1, 100_000_000, "jobs"),
    whole(
        "server.limits.max_parked_polls",
        1,
        4 * MAX_AGENTS as u64,
        "polls",
    ),
    bytes("server.limits.max_body_bytes", 1 << 10, 1 << 30),
    whole(
        "server.limits.max_connections",
        1,
        2 * MAX_AGENTS as u64,
        "connections",
    ),
    seconds(
        "server.deadlines.head_timeout",
        DEADLINE_MIN_S,
        DEADLINE_MAX_S,
    ),
    seconds(
        "server.deadlines.body_timeout",
        DEADLINE_MIN_S,
        DEADLINE_MAX_S,
    ),
    seconds(
        "server.deadlines.keep_alive_timeout",
        DEADLINE_MIN_S,
        DEADLINE_MAX_S,
    ),
    whole(
        "server.stations[].workers",
        1,
        MAX_STATION_SIZE as u64,
        "workers",
    ),
    whole(
        "server.stations[].queue_limit",
        0,
        MAX_STATION_SIZE as u64,
        "requests",
    ),
    whole("server.pipelines[].id", 1, U32, ""),
    whole(
        "server.pipelines[].jobs",
        1,
        MAX_JOBS_PER_RUN as u64,
        "jobs",
    ),
];

/// The entry for `path`, if the value there is a number with a range.
pub fn lookup(path: &[Seg]) -> Option<&'static NumRange> {
    RANGES.iter().find(|r| matches(r.key, path))
}

/// Whether key pattern `key` (`a.b[].c`, `a.*.c`) names `path`.
fn matches(key: &str, path: &[Seg]) -> bool {
    let mut segs = path.iter();
    for part in key.split('.') {
        let (name, lists) = match part.find('[') {
            Some(i) => (&part[..i], part[i..].matches("[]").count()),
            None => (part, 0),
        };
        match segs.next() {
            Some(Seg::Key(k)) if name == "*" || k.as_str() == name => {}
            _ => return false,
        }
        for _ in 0..lists {
            if !matches!(segs.next(), Some(Seg::Index(_))) {
                return false;
            }
        }
    }
    segs.next().is_none()
}

impl NumRange {
    /// "a whole number ≥ 1" (the kind and its least value), what a type error expects.
    pub fn expected(&self) -> String {
        let what = match self.kind {
            Kind::Whole => "a whole number",
            Kind::Number => "a number",
            Kind::Bytes => "a byte count such as 4096 or \"64KiB\",",
            Kind::Duration => "a duration such as \"10s\", in seconds",
        };
        format!("{what} ≥ {}", show_bound(self.min))
    }

    /// "(at most 10000000 agents)" after a type error, or "" when the type's own bound is all.
    pub fn at_most(&self) -> String {
        if self.max >= U32 as f64 && self.kind == Kind::Whole {
            return String::new();
        }
        let unit = self.unit_text();
        format!(" (at most {}{unit})", show_bound(self.max))
    }

    /// The complaint for `value` outside the range, or `None` inside it.
    pub fn check(&self, value: f64) -> Option<String> {
        if value >= self.min && value <= self.max {
            return None;
        }
        Some(format!(
            "must be between {} and {}{}, found {}",
            show_bound(self.min),
            show_bound(self.max),
            self.unit_text(),
            show(value)
        ))
    }

    fn unit_text(&self) -> String {
        match self.unit {
            "" => String::new(),
            u => format!(" {u}"),
        }
    }
}

/// A value as users write it: integers without a fraction, floats as Rust prints them
/// (`1e308`).
fn show(v: f64) -> String {
    if v.abs() >= 1e16 {
        format!("{v:e}")
    } else if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A bound as written: as [`show`], except u64::MAX, which does not survive f64.
fn show_bound(v: f64) -> String {
    if v >= U64 as f64 {
        U64.to_string()
    } else {
        show(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: key patterns match list indices and table keys where they say, and nothing else.
    #[test]
    fn patterns_match_paths() {
        let k = |s: &str| Seg::Key(s.to_string());
        let path = [k("server"), k("stations"), Seg::Index(3), k("workers")];
        assert_eq!(
            lookup(&path).map(|r| r.key),
            Some("server.stations[].workers")
        );
        let task = [k("jobs"), k("tasks"), k("Checkout"), k("secret_lines")];
        assert_eq!(
            lookup(&task).map(|r| r.key),
            Some("jobs.tasks.*.secret_lines")
        );
        assert!(lookup(&[k("fleet")]).is_none());
        assert!(lookup(&[k("fleet"), k("agents"), k("x")]).is_none());
        let id = [k("jobs"), k("pipelines"), Seg::Index(0), k("id")];
        assert_eq!(lookup(&id).map(|r| r.key), Some("jobs.pipelines[].id"));
    }

    // Goal: docs/SCENARIOS.md lists every range exactly as the loader checks it, so the docs
    // cannot drift from the table.
    #[test]
    fn scenarios_md_lists_every_range() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/SCENARIOS.md");
        let doc = std::fs::read_to_string(path).expect("docs/SCENARIOS.md");
        let missing: Vec<String> = RANGES
            .iter()
            .map(|r| {
                let (min, max) = (show_bound(r.min), show_bound(r.max));
                format!("| `{}` | {min} to {max}{} |", r.key, r.unit_text())
            })
            .filter(|row| !doc.contains(row.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "add to docs/SCENARIOS.md:\n{}",
            missing.join("\n")
        );
    }

    // Goal: the messages say the range with its unit and show numbers as written.
    #[test]
    fn messages_name_the_range() {
        let rate = lookup(&[Seg::Key("jobs".into()), Seg::Key("rate_per_s".into())]).unwrap();
        assert_eq!(
            rate.check(1e308).unwrap(),
            "must be between 0 and 100000 jobs per second, found 1e308"
        );
        assert!(rate.check(2.5).is_none());
        let agents = lookup(&[Seg::Key("fleet".into()), Seg::Key("agents".into())]).unwrap();
        assert_eq!(agents.expected(), "a whole number ≥ 1");
        assert_eq!(agents.at_most(), " (at most 10000000 agents)");
        assert_eq!(
            agents.check(0.0).unwrap(),
            "must be between 1 and 10000000 agents, found 0"
        );
    }
}
