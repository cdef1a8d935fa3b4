//! The comparison page (`fleetsim compare BASE.json CUR.json --html diff.html`): the gate's
//! table with regressed rows highlighted, then each figure of the baseline (dashed) and the
//! current run (solid) on one chart, charts of regressed metrics framed red and first among
//! the operations. One self-contained page like the run report (see `charts`); it never
//! writes files.

use std::fmt::Write as _;

use crate::charts;
use crate::compare::{Comparison, Verdict};
use crate::html::{HINT, page_end, page_head};
use crate::junit::escape;
use crate::report::{Mode, Report};
use crate::summary::format_seconds;
use crate::thresholds::{self, MetricKind};

/// Render the comparison of `current` against `baseline` (as `cmp` judged it) as a page.
pub fn render_compare_html(baseline: &Report, current: &Report, cmp: &Comparison) -> String {
    let title = format!(
        "fleetsim compare · {} → {}",
        baseline.run.scenario, current.run.scenario
    );
    let mut out = page_head(&title);
    runs_table(&mut out, baseline, current);
    let limit = thresholds::format_value(MetricKind::Ratio, cmp.max_regression);
    let failing = cmp.deltas.iter().filter(|d| d.fails).count();
    let _ = writeln!(
        out,
        "<h2 class=\"{}\">{} · max regression {}</h2>",
        if cmp.passed { "pass" } else { "fail" },
        if cmp.passed {
            "PASS".to_string()
        } else {
            format!("FAIL: {failing} regressed")
        },
        escape(&limit)
    );
    deltas_table(&mut out, cmp);
    let charts = charts::compare_charts(baseline, current, cmp);
    if !charts.is_empty() {
        out.push_str("<h2>Over time</h2>\n");
        out.push_str(HINT);
        charts::write_blocks(&mut out, &charts);
    }
    page_end(&mut out, &charts);
    out
}

fn runs_table(out: &mut String, b: &Report, c: &Report) {
    type Row = (&'static str, fn(&Report) -> String);
    let rows: [Row; 5] = [
        ("scenario", |r| r.run.scenario.clone()),
        ("mode · seed", |r| {
            let m = match r.run.mode {
                Mode::Live => "live",
                Mode::Virtual => "virtual",
            };
            format!("{m} · {}", r.run.seed)
        }),
        ("started at", |r| {
            r.run.started_at.clone().unwrap_or_default()
        }),
        ("run time", |r| format_seconds(r.run.duration_s)),
        ("requests · jobs started", |r| {
            format!("{} · {}", r.requests.count, r.jobs.started)
        }),
    ];
    out.push_str("<table class=\"kv\">\n<tr><th></th><th>baseline</th><th>current</th></tr>\n");
    for (name, f) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(&f(b)),
            escape(&f(c))
        );
    }
    out.push_str("</table>\n");
}

fn deltas_table(out: &mut String, cmp: &Comparison) {
    out.push_str(
        "<table class=\"deltas\">\n<tr><th>metric</th><th>baseline</th><th>current</th>\
         <th>change</th><th>verdict</th></tr>\n",
    );
    for d in &cmp.deltas {
        let kind = thresholds::kind_of(&d.metric).unwrap_or(MetricKind::Count);
        let value = |v: Option<f64>| {
            v.map_or_else(|| "-".to_string(), |v| thresholds::format_value(kind, v))
        };
        let change = d
            .change
            .map_or_else(|| "-".to_string(), |c| format!("{:+.1}%", c * 100.0));
        let (class, verdict) = match d.verdict {
            Verdict::Improved => ("improved", "improved"),
            Verdict::Unchanged => ("unchanged", "ok"),
            Verdict::Regressed => ("regressed", "REGRESSED"),
            Verdict::Missing => ("missing", "missing"),
        };
        let class = if d.fails && d.verdict != Verdict::Regressed {
            "regressed"
        } else {
            class
        };
        let mark = if d.fails { '✗' } else { '✓' };
        let _ = writeln!(
            out,
            "<tr class=\"{class}\" data-metric=\"{}\"><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{mark} {verdict}</td></tr>",
            escape(&d.metric),
            escape(&d.metric),
            escape(&value(d.baseline)),
            escape(&value(d.current)),
            escape(&change)
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::compare;
    use crate::{Recorder, RunMeta};
    use fleetsim_core::SimTime;
    use fleetsim_core::event::{Event, Outcome};
    use fleetsim_core::ops::Operation;

    /// A minute of calls whose latency is `ms` and of jobs picked up after `pickup_ms`.
    fn run(ms: u64, pickup_ms: u64) -> Report {
        let mut rec = Recorder::new();
        for i in 0..600u64 {
            let intended = SimTime::from_millis(i * 100);
            let done = intended + std::time::Duration::from_millis(ms);
            let op = Operation::FeedPost;
            rec.record(&Event::Op {
                agent: 0,
                op,
                intended,
                done,
                outcome: Outcome::Ok,
            });
            if i % 10 == 0 {
                let picked = intended + std::time::Duration::from_millis(pickup_ms);
                rec.record(&Event::JobQueued {
                    request_id: i,
                    at: intended,
                });
                rec.record(&Event::JobPickedUp {
                    agent: 0,
                    request_id: i,
                    at: picked,
                });
            }
        }
        let run = RunMeta {
            scenario: "a&b".to_string(),
            duration_s: 60.0,
            ..RunMeta::default()
        };
        Report::from_recorder(&rec, run)
    }

    // Goal: the page marks the regressed rows and frames the regressed metrics' charts red,
    // and leaves the rest unmarked.
    #[test]
    fn regressions_are_highlighted() {
        let (base, cur) = (run(20, 500), run(40, 500));
        let cmp = compare(&base, &cur, 0.1);
        let html = render_compare_html(&base, &cur, &cmp);
        assert!(html.contains("FAIL: 1 regressed"), "{html}");
        assert!(html.contains("<tr class=\"regressed\" data-metric=\"operations.feed_post.p99\">"));
        assert!(html.contains("<tr class=\"unchanged\" data-metric=\"job_pickup.p99\">"));
        assert_eq!(
            html.matches("<section class=\"chart half regressed\">")
                .count(),
            1
        );
        assert!(html.contains("<h3>feed_post<span class=\"badge\">regressed</span></h3>"));
        assert!(html.contains("fleetsim compare · a&amp;b → a&amp;b"));
        let same = compare(&base, &base, 0.1);
        let html = render_compare_html(&base, &base, &same);
        assert!(html.contains(">PASS · max regression"));
        for marked in ["class=\"regressed\"", " regressed\">", "class=\"badge\""] {
            assert!(
                !html.contains(marked),
                "nothing marked when nothing regressed"
            );
        }
    }
}
