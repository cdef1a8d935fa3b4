//! The HTML report (`--html FILE.html`): one self-contained page, readable offline, with the
//! summary tables and interactive charts over time (zoom, hover, synced cursors) drawn by the
//! inlined uPlot from the report's timeline (see `charts`).
//!
//! It renders a `Report` to a `String`: no external references (the library, its style and the
//! chart data are inline), and every text from the report is escaped. It never writes files.

use std::fmt::Write as _;

use fleetsim_core::ops::Operation;

use crate::charts;
use crate::junit::escape;
use crate::names;
use crate::report::{Mode, Report};
use crate::summary::format_seconds;
use crate::thresholds::{self, MetricKind};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;\
max-width:1100px}h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #ddd;\
text-align:right}td:first-child,th:first-child{text-align:left}\
.pass{color:#1a7f37}.fail{color:#cf222e}.hint{color:#57606a}\
.legend span{margin-right:14px}.kv td{text-align:left}h3{font-size:14px;margin:16px 0 0}\
tr.regressed td{background:#ffebe9;color:#cf222e;font-weight:600}tr.improved td{color:#1a7f37}";

/// Render the report as a self-contained HTML page.
pub fn render_html(report: &Report) -> String {
    let title = format!("fleetsim · {}", report.run.scenario);
    let mut out = page_head(&title);
    run_section(&mut out, report);
    thresholds_section(&mut out, report);
    let charts = charts::run_charts(report);
    if !charts.is_empty() {
        out.push_str("<h2>Over time</h2>\n");
        out.push_str(HINT);
        charts::write_blocks(&mut out, &charts);
        pickup_thresholds(&mut out, report);
    }
    operations_section(&mut out, report);
    crypto_section(&mut out, report);
    page_end(&mut out, &charts);
    out
}

/// How to use the charts, above them.
pub(crate) const HINT: &str = "<p class=\"hint\">Drag across a chart to zoom (every time \
chart follows), double-click to zoom out; hover to read the values.</p>\n";

/// The page up to its first heading, with the page's and the charts' style.
pub(crate) fn page_head(title: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}{}</style></head><body>\n<h1>{}</h1>\n",
        escape(title),
        charts::style(),
        escape(title)
    );
    out
}

/// The scripts that draw `charts` and the end of the page.
pub(crate) fn page_end(out: &mut String, charts: &[charts::Chart]) {
    if !charts.is_empty() {
        out.push_str(&charts::scripts(charts));
    }
    out.push_str("</body></html>\n");
}

fn run_section(out: &mut String, r: &Report) {
    let mode = match r.run.mode {
        Mode::Live => "live",
        Mode::Virtual => "virtual",
    };
    let p = &r.job_pickup.latency_s;
    let j = &r.jobs;
    let mut rows = vec![
        ("mode", mode.to_string()),
        ("seed", r.run.seed.to_string()),
        ("run time", format_seconds(r.run.duration_s)),
        ("wall time", format_seconds(r.run.wall_s)),
        (
            "requests",
            format!("{} ({:.1}/s)", r.requests.count, r.requests.rate_per_s),
        ),
        (
            "errors",
            format!("{} ({})", r.errors.count, percent(r.errors.rate)),
        ),
        (
            "job pickup",
            if p.count == 0 {
                "no samples".to_string()
            } else {
                format!(
                    "p50 {} · p90 {} · p99 {} · max {} (n={})",
                    format_seconds(p.p50),
                    format_seconds(p.p90),
                    format_seconds(p.p99),
                    format_seconds(p.max),
                    p.count
                )
            },
        ),
        (
            "jobs",
            format!(
                "queued {} · started {} · succeeded {} · failed {} · canceled {} · abandoned {} · requeued {} \
                 · lost {}",
                j.queued,
                j.started,
                j.succeeded,
                j.failed,
                j.canceled,
                j.abandoned,
                j.requeued,
                j.lost
            ),
        ),
    ];
    if let Some(started) = &r.run.started_at {
        rows.insert(2, ("started at", started.clone()));
    }
    if let Some(h) = &r.trace_hash {
        rows.push(("trace hash", h.clone()));
    }
    out.push_str("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        );
    }
    out.push_str("</table>\n");
}

fn thresholds_section(out: &mut String, r: &Report) {
    if r.thresholds.is_empty() {
        return;
    }
    out.push_str("<h2>Thresholds</h2>\n<table>\n");
    for t in &r.thresholds {
        let kind = thresholds::kind_of(&t.metric).unwrap_or(MetricKind::Count);
        let observed = t.observed.map_or_else(
            || "no data".to_string(),
            |v| thresholds::format_value(kind, v),
        );
        let (class, mark) = if t.passed {
            ("pass", "✓")
        } else {
            ("fail", "✗")
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"{class}\">{mark} {} {}</td><td>{}</td></tr>",
            escape(&t.metric),
            escape(&t.condition),
            escape(&observed)
        );
    }
    out.push_str("</table>\n");
}

/// The pickup thresholds, under the charts.
fn pickup_thresholds(out: &mut String, r: &Report) {
    let limits: Vec<String> = r
        .thresholds
        .iter()
        .filter(|t| t.metric.starts_with(names::JOB_PICKUP))
        .map(|t| format!("{} {}", t.metric, t.condition))
        .collect();
    if !limits.is_empty() {
        let _ = writeln!(
            out,
            "<div class=\"legend\">thresholds: {}</div>",
            escape(&limits.join(", "))
        );
    }
}

fn operations_section(out: &mut String, r: &Report) {
    out.push_str(
        "<h2>Operations</h2>\n<table>\n<tr><th>operation</th><th>count</th><th>rate/s</th>\
         <th>p50</th><th>p90</th><th>p99</th><th>max</th><th>errors</th></tr>\n",
    );
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
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            op.name(),
            o.count,
            o.rate_per_s,
            lat(l.p50),
            lat(l.p90),
            lat(l.p99),
            lat(l.max),
            o.errors
        );
    }
    out.push_str("</table>\n");
    if !r.errors.by_kind.is_empty() {
        out.push_str("<h2>Errors by kind</h2>\n<table>\n");
        for (kind, n) in &r.errors.by_kind {
            let _ = writeln!(out, "<tr><td>{}</td><td>{n}</td></tr>", escape(kind));
        }
        out.push_str("</table>\n");
    }
}

fn crypto_section(out: &mut String, r: &Report) {
    if r.crypto.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Crypto</h2>\n<table>\n<tr><th>side · op</th><th>ops</th><th>ops/s</th>\
         <th>MB/s</th></tr>\n",
    );
    let rate = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for (side, ops) in &r.crypto {
        for (op, c) in ops {
            let _ = writeln!(
                out,
                "<tr><td>{} · {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(side),
                escape(op),
                c.ops,
                rate(c.ops_per_s),
                rate(c.mb_per_s)
            );
        }
    }
    out.push_str("</table>\n");
}

fn percent(ratio: f64) -> String {
    thresholds::format_value(MetricKind::Ratio, ratio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recorder;
    use crate::report::RunMeta;
    use fleetsim_core::SimTime;
    use fleetsim_core::event::{Event, Outcome};

    fn report(seconds: u64) -> Report {
        let mut rec = Recorder::new();
        rec.set_fleet_size(2);
        for i in 0..seconds {
            let (intended, done) = (SimTime::from_secs(i), SimTime::from_secs(i) + ms(30));
            let op = Operation::PollMessage;
            rec.record(&Event::Op {
                agent: 0,
                op,
                intended,
                done,
                outcome: Outcome::Ok,
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
        let run = RunMeta {
            scenario: "<script>alert(1)</script>".to_string(),
            ..RunMeta::default()
        };
        let mut report = Report::from_recorder(&rec, run);
        report.evaluate_thresholds(&[thresholds::parse("job_pickup.p99", "< 2s").expect("ok")]);
        report
    }

    fn ms(v: u64) -> std::time::Duration {
        std::time::Duration::from_millis(v)
    }

    // Goal: the page is self-contained (its only scripts are the inlined library, the chart
    // data and the page script; no src or href to anywhere), escapes report text, and has one
    // chart block per view: requests, pickup over time, pickup distribution, agents, jobs, and
    // one per operation.
    #[test]
    fn html_is_self_contained_and_escaped() {
        let html = render_html(&report(30));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(
            html.matches("<script").count(),
            3,
            "library, data, page script"
        );
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            !html.contains("alert(1)</script>"),
            "report text must be escaped"
        );
        for external in [" src=", " href=", "@import", "url("] {
            assert!(!html.contains(external), "external reference {external:?}");
        }
        assert_eq!(html.matches("<section class=\"chart").count(), 6);
        assert!(html.contains("Job pickup latency distribution"));
        assert!(html.contains("<h3>poll_message</h3>"));
        assert!(html.contains("✓ job_pickup.p99 &lt; 2s"));
        assert!(html.contains("<td>poll_message</td><td>30</td>"));
    }

    // Goal: a report written before timelines existed still renders its charts from the
    // per-second series.
    #[test]
    fn reports_without_a_timeline_still_chart() {
        let mut old = report(30);
        old.timeline = None;
        let html = render_html(&old);
        assert!(html.contains("Job pickup latency over time"));
        assert!(html.contains("Active agents by state"));
        assert!(
            !html.contains("<h3>poll_message</h3>"),
            "no per-operation timeline"
        );
    }
}
