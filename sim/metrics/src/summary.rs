//! The k6-like terminal summary printed at the end of a run: one line per operation, jobs, the
//! pickup headline, crypto throughput and thresholds with ✓/✗.
//!
//! It renders a `Report` to a `String` with a deterministic layout and no colours; it never
//! writes to a terminal itself.

use std::fmt::Write as _;

use fleetsim_core::ops::{AgentState, Operation};

use crate::report::{LatencySummary, Mode, Report};
use crate::thresholds::{self, MetricKind};

/// Render the end-of-run summary. Lines end in `\n`; the layout depends only on the report.
pub fn render_summary(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    operations(&mut out, report);
    jobs(&mut out, report);
    crypto(&mut out, report);
    thresholds_block(&mut out, report);
    incomplete_block(&mut out, report);
    out
}

fn header(out: &mut String, r: &Report) {
    let mode = match r.run.mode {
        Mode::Live => "live",
        Mode::Virtual => "virtual",
    };
    let _ = writeln!(
        out,
        "fleetsim {mode} run · scenario {} · seed {} · {} run time · {} wall",
        r.run.scenario,
        r.run.seed,
        format_seconds(r.run.duration_s),
        format_seconds(r.run.wall_s)
    );
    if let Some(shard) = r.run.shard {
        let _ = writeln!(
            out,
            "shard {shard}: this shard's part only (`fleetsim merge` joins)"
        );
    }
    if let Some(e) = &r.engine {
        let _ = writeln!(
            out,
            "engine: {} events · {:.0} events/s · {} virtual in {} wall",
            e.events,
            e.events_per_s,
            format_seconds(e.virtual_s),
            format_seconds(e.wall_s)
        );
    }
    if let Some(h) = &r.trace_hash {
        let _ = writeln!(out, "trace hash: {h}");
    }
    out.push('\n');
}

fn operations(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "  {:<20}{:>9}{:>10}{:>9}{:>9}{:>9}{:>9}  errors",
        "operation", "count", "rate/s", "p50", "p90", "p99", "max"
    );
    // Report order (the protocol's sequence), not alphabetical, so the table reads top-down.
    for op in Operation::ALL {
        let Some(o) = r.operations.get(op.name()) else {
            continue;
        };
        let l = &o.latency_s;
        let lat = |v: f64| {
            if l.count == 0 {
                "-".to_string()
            } else {
                format_seconds(v)
            }
        };
        let errors = if o.errors == 0 {
            "0".to_string()
        } else {
            format!("{} ({})", o.errors, percent(o.error_rate))
        };
        let _ = writeln!(
            out,
            "  {:<20}{:>9}{:>10.1}{:>9}{:>9}{:>9}{:>9}  {errors}",
            op.name(),
            o.count,
            o.rate_per_s,
            lat(l.p50),
            lat(l.p90),
            lat(l.p99),
            lat(l.max)
        );
    }
    let _ = writeln!(
        out,
        "  {:<20}{:>9}{:>10.1}{:>38}  {} ({})",
        "all",
        r.requests.count,
        r.requests.rate_per_s,
        "",
        r.errors.count,
        percent(r.errors.rate)
    );
    if !r.errors.by_kind.is_empty() {
        let kinds: Vec<String> = r
            .errors
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(out, "  errors by kind: {}", kinds.join(" "));
    }
    out.push('\n');
}

fn jobs(out: &mut String, r: &Report) {
    let p = &r.job_pickup;
    let _ = writeln!(out, "  job pickup  {}", latency_line(&p.latency_s));
    let _ = writeln!(
        out,
        "              {} picked up{} · {} pending · {} unmatched",
        p.latency_s.count,
        if p.server_clock > 0 {
            format!(" ({} on the server's clock)", p.server_clock)
        } else {
            String::new()
        },
        p.pending,
        p.unmatched
    );
    if let Some(runs) = &r.runs {
        let _ = writeln!(
            out,
            "  runs        queued {} · refused {} · unsent {} · completed {} (succeeded {}, failed \
             {}, canceled {}, other {}) · unfinished {} · cancels sent {} ({} failed)",
            runs.queued,
            runs.refused,
            runs.unsent,
            runs.completed,
            runs.succeeded,
            runs.failed,
            runs.canceled,
            runs.other,
            runs.unfinished,
            runs.cancels_sent,
            runs.cancel_errors
        );
    }
    let j = &r.jobs;
    let _ = writeln!(
        out,
        "  jobs        queued {} · started {} · succeeded {} · failed {} · canceled {}",
        j.queued, j.started, j.succeeded, j.failed, j.canceled
    );
    let _ = writeln!(
        out,
        "              abandoned {} · requeued {} · lost {}",
        j.abandoned, j.requeued, j.lost
    );
    let a = &r.agents;
    let states: Vec<String> = AgentState::ALL
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s.name(),
                a.by_state.get(s.name()).copied().unwrap_or(0)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "  agents      {} · peak busy {}",
        states.join(" · "),
        a.peak_busy
    );
    let _ = writeln!(
        out,
        "              tokens rotated {} · secrets masked {}",
        a.tokens_rotated, a.secrets_masked
    );
    for (i, f) in r.faults.iter().enumerate() {
        let head = if i == 0 { "  faults" } else { "" };
        let until = f.end_s.map_or(String::new(), |e| format!("–{e:.1} s"));
        let hit = if f.agents > 0 {
            format!(" · {} agents", f.agents)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{head:<14}{} at {:.1} s{until}{hit}",
            f.kind, f.start_s
        );
    }
    if let Some(e) = &r.emulator {
        let _ = writeln!(
            out,
            "  emulator    agents {} · jobs assigned {} · completed {} · leaked secrets {}",
            e.agents, e.jobs_assigned, e.jobs_completed, e.leaked_secrets
        );
        // The target's totals, when earlier runs make them differ from this run's.
        if let Some(l) = r.emulator_lifetime.as_ref().filter(|l| l.end != *e) {
            let _ = writeln!(
                out,
                "              lifetime: completed {} · leaked secrets {} (this run: the \
                 change)",
                l.end.jobs_completed, l.end.leaked_secrets
            );
        }
    }
}

fn crypto(out: &mut String, r: &Report) {
    if r.crypto.is_empty() {
        return;
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "  {:<24}{:>10}{:>14}{:>12}",
        "crypto", "ops", "ops/s", "MB/s"
    );
    for (side, ops) in &r.crypto {
        for (op, c) in ops {
            let rate = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
            let name = format!("{side} {op}");
            let _ = writeln!(
                out,
                "  {name:<24}{:>10}{:>14}{:>12}",
                c.ops,
                rate(c.ops_per_s),
                rate(c.mb_per_s)
            );
        }
    }
}

fn thresholds_block(out: &mut String, r: &Report) {
    if r.thresholds.is_empty() {
        return;
    }
    out.push('\n');
    let passed = r.thresholds.iter().filter(|t| t.passed).count();
    let _ = writeln!(out, "  thresholds  {passed}/{} passed", r.thresholds.len());
    for t in &r.thresholds {
        let mark = if t.passed { '✓' } else { '✗' };
        let kind = thresholds::kind_of(&t.metric).unwrap_or(MetricKind::Count);
        let observed = t.observed.map_or_else(
            || "no data".to_string(),
            |v| format!("observed {}", thresholds::format_value(kind, v)),
        );
        let _ = writeln!(out, "    {mark} {} {}  ({observed})", t.metric, t.condition);
    }
}

/// The phase a run never reached, last so it is the line a person reads first after the run.
fn incomplete_block(out: &mut String, r: &Report) {
    if let Some(i) = &r.incomplete {
        let _ = writeln!(
            out,
            "\n  ✗ INCOMPLETE: phase {} never happened — {}",
            i.phase.name(),
            i.reason
        );
    }
}

fn latency_line(l: &LatencySummary) -> String {
    if l.count == 0 {
        return "no samples".to_string();
    }
    format!(
        "p50 {} · p90 {} · p99 {} · max {} · mean {}",
        format_seconds(l.p50),
        format_seconds(l.p90),
        format_seconds(l.p99),
        format_seconds(l.max),
        format_seconds(l.mean)
    )
}

fn percent(ratio: f64) -> String {
    thresholds::format_value(MetricKind::Ratio, ratio)
}

/// Seconds for people, in the unit that keeps about 3 significant digits: `812µs`, `12.3ms`,
/// `1.25s`.
pub fn format_seconds(s: f64) -> String {
    if s == 0.0 {
        "0s".to_string()
    } else if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{}ms", sig(s * 1e3))
    } else if s < 60.0 {
        format!("{}s", sig(s))
    } else {
        let m = (s / 60.0).floor();
        format!("{m:.0}m{}s", sig(s - m * 60.0))
    }
}

/// Three significant figures for values in [1, 1000), trailing zeros trimmed.
fn sig(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recorder;
    use crate::report::RunMeta;
    use fleetsim_core::SimTime;
    use fleetsim_core::api::ErrorKind;
    use fleetsim_core::event::{CryptoOp, Event, Outcome, Side};

    fn report() -> Report {
        let mut rec = Recorder::new();
        let ms = SimTime::from_millis;
        for i in 0..10 {
            let outcome = if i == 9 {
                Outcome::Api(ErrorKind::Throttled)
            } else {
                Outcome::Ok
            };
            let (intended, done) = (ms(i * 1_000), ms(i * 1_000 + 10 * (i + 1)));
            let op = Operation::PollMessage;
            rec.record(&Event::Op {
                agent: 0,
                op,
                intended,
                done,
                outcome,
            });
            rec.record(&Event::JobQueued {
                request_id: i,
                at: intended,
            });
            rec.record(&Event::JobPickedUp {
                agent: 0,
                request_id: i,
                at: done,
            });
        }
        let (side, op) = (Side::Agents, CryptoOp::AesDecrypt);
        rec.record(&Event::Crypto {
            side,
            op,
            count: 10,
            bytes: 2_000_000,
            nanos: 10_000_000,
        });
        let run = RunMeta {
            seed: 7,
            scenario: "golden".to_string(),
            duration_s: 10.0,
            wall_s: 10.0,
            ..RunMeta::default()
        };
        let mut report = Report::from_recorder(&rec, run);
        report.evaluate_thresholds(&[
            thresholds::parse("job_pickup.p99", "< 50ms").expect("valid"),
            thresholds::parse("errors.rate", "< 20%").expect("valid"),
            thresholds::parse("operations.register.p99", "< 1s").expect("valid"),
        ]);
        report
    }

    // Goal: the summary's layout is stable (users and CI logs read it); a change here is a
    // deliberate change of the golden text.
    #[test]
    fn summary_matches_golden_text() {
        let text = render_summary(&report());
        let golden = concat!(
            "fleetsim live run · scenario golden · seed 7 · 10s run time · 10s wall\n",
            "\n",
            "  operation               count    rate/s      p50      p90      p99",
            "      max  errors\n",
            "  poll_message               10       1.0     50ms     90ms     90ms",
            "     90ms  1 (10%)\n",
            "  all                        10       1.0                              ",
            "          1 (10%)\n",
            "  errors by kind: throttled=1\n",
            "\n",
            "  job pickup  p50 50ms · p90 90ms · p99 100ms · max 100ms · mean 55ms\n",
            "              10 picked up · 0 pending · 0 unmatched\n",
            "  jobs        queued 10 · started 10 · succeeded 0 · failed 0 · canceled 0\n",
            "              abandoned 0 · requeued 0 · lost 0\n",
            "  agents      registering 0 · idle 0 · busy 0 · offline 0 · peak busy 0\n",
            "              tokens rotated 0 · secrets masked 0\n",
            "\n",
            "  crypto                         ops         ops/s        MB/s\n",
            "  agents aes_decrypt              10        1000.0       200.0\n",
            "\n",
            "  thresholds  1/3 passed\n",
            "    ✗ job_pickup.p99 < 50ms  (observed 100ms)\n",
            "    ✓ errors.rate < 20%  (observed 10%)\n",
            "    ✗ operations.register.p99 < 1s  (no data)\n",
        );
        assert_eq!(text, golden);
    }

    // Goal: durations render in a readable unit with about three significant figures.
    #[test]
    fn seconds_format_with_readable_units() {
        let table = [
            (0.0, "0s"),
            (0.000_812, "812µs"),
            (0.012_34, "12.3ms"),
            (0.5, "500ms"),
            (1.25, "1.25s"),
            (59.99, "60s"),
            (61.5, "1m1.5s"),
        ];
        for (s, text) in table {
            assert_eq!(format_seconds(s), text, "{s}");
        }
    }
}
