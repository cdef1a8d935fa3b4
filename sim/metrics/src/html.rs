//! The HTML report (`--html FILE.html`): one self-contained page, readable offline, with the
//! summary tables and charts over time drawn as inline SVG from the report's time series.
//!
//! It renders a `Report` to a `String`: no scripts, no web fonts, no external references, and
//! every text from the report is escaped. It never writes files.

use std::fmt::Write as _;

use fleetsim_core::ops::{AgentState, Operation};

use crate::junit::escape;
use crate::names;
use crate::report::{Mode, Report, TimePoint, decode_histogram};
use crate::summary::format_seconds;
use crate::thresholds::{self, MetricKind};

/// Charts draw at most this many points; longer runs are folded into wider buckets.
const MAX_CHART_POINTS: usize = 1_200;
const CHART_W: f64 = 760.0;
const CHART_H: f64 = 180.0;
const MARGIN_L: f64 = 64.0;
const MARGIN_B: f64 = 24.0;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;\
max-width:900px}h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #ddd;\
text-align:right}td:first-child,th:first-child{text-align:left}\
.pass{color:#1a7f37}.fail{color:#cf222e}svg{display:block;margin:6px 0}\
.legend span{margin-right:14px}.kv td{text-align:left}h3{font-size:14px;margin:16px 0 0}";

/// A line on a chart: its name, colour and one value per (bucketed) point.
struct Line {
    name: &'static str,
    color: &'static str,
    values: Vec<Option<f64>>,
}

/// Render the report as a self-contained HTML page.
pub fn render_html(report: &Report) -> String {
    let mut out = String::new();
    let title = format!("fleetsim · {}", report.run.scenario);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    run_section(&mut out, report);
    thresholds_section(&mut out, report);
    charts_section(&mut out, report);
    pickup_distribution_section(&mut out, report);
    operations_section(&mut out, report);
    crypto_section(&mut out, report);
    out.push_str("</body></html>\n");
    out
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

fn charts_section(out: &mut String, r: &Report) {
    if r.timeseries.is_empty() {
        return;
    }
    let buckets = bucket(&r.timeseries);
    let seconds = r.timeseries.len() as f64;
    let rate = |f: fn(&[&TimePoint]) -> u64| -> Vec<Option<f64>> {
        buckets
            .iter()
            .map(|b| Some(f(b) as f64 / b.len() as f64))
            .collect()
    };
    let worst = |f: fn(&TimePoint) -> Option<f64>| -> Vec<Option<f64>> {
        buckets
            .iter()
            .map(|b| b.iter().filter_map(|p| f(p)).reduce(f64::max))
            .collect()
    };
    out.push_str("<h2>Over time</h2>\n");
    let requests = vec![
        Line {
            name: "requests/s",
            color: "#0969da",
            values: rate(|b| sum(b, |p| p.requests)),
        },
        Line {
            name: "errors/s",
            color: "#cf222e",
            values: rate(|b| sum(b, |p| p.errors)),
        },
    ];
    chart(out, "Requests", &requests, seconds, |v| format!("{v:.0}/s"));
    let pickup = vec![
        Line {
            name: "p50",
            color: "#1a7f37",
            values: worst(|p| p.pickup_p50_s),
        },
        Line {
            name: "p99",
            color: "#bf8700",
            values: worst(|p| p.pickup_p99_s),
        },
    ];
    chart(out, "Job pickup latency", &pickup, seconds, format_seconds);
    let jobs = vec![
        Line {
            name: "queued/s",
            color: "#8250df",
            values: rate(|b| sum(b, |p| p.jobs_queued)),
        },
        Line {
            name: "started/s",
            color: "#0969da",
            values: rate(|b| sum(b, |p| p.jobs_started)),
        },
        Line {
            name: "finished/s",
            color: "#1a7f37",
            values: rate(|b| sum(b, |p| p.jobs_finished)),
        },
    ];
    chart(out, "Jobs", &jobs, seconds, |v| format!("{v:.1}/s"));
    const COLORS: [&str; 4] = ["#bf8700", "#0969da", "#1a7f37", "#6e7781"];
    let agents: Vec<Line> = AgentState::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| Line {
            name: s.name(),
            color: COLORS[i],
            // The state at the end of each bucket.
            values: buckets
                .iter()
                .map(|b| b.last().map(|p| p.agents[i] as f64))
                .collect(),
        })
        .collect();
    chart(out, "Agents by state", &agents, seconds, |v| {
        format!("{v:.0}")
    });
}

/// The job pickup latency distribution as a bar chart over the Prometheus pickup buckets (so the
/// report and the dashboards bin alike), decoded from the report's exact HDR histogram. Pickup
/// thresholds are listed under the chart.
fn pickup_distribution_section(out: &mut String, r: &Report) {
    let Ok(h) = decode_histogram(names::JOB_PICKUP, &r.histograms.job_pickup) else {
        return;
    };
    if h.is_empty() {
        return;
    }
    // Bins: (previous bound, bound] in seconds; the last bin is everything above the top bound.
    let bounds = names::PROM_PICKUP_BUCKETS_S;
    let mut counts = vec![0u64; bounds.len() + 1];
    for v in h.iter_recorded() {
        let s = v.value_iterated_to() as f64 / 1e6;
        let bin = bounds.iter().position(|&b| s <= b).unwrap_or(bounds.len());
        counts[bin] += v.count_since_last_iteration();
    }
    let total: u64 = counts.iter().sum();
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let (plot_w, plot_h) = (CHART_W - MARGIN_L - 8.0, CHART_H - MARGIN_B - 8.0);
    let bar_w = plot_w / counts.len() as f64;
    out.push_str("<h3>Job pickup latency distribution</h3>\n");
    let _ = writeln!(
        out,
        "<svg width=\"{CHART_W}\" height=\"{CHART_H}\" viewBox=\"0 0 {CHART_W} {CHART_H}\" \
         role=\"img\" aria-label=\"Job pickup latency distribution\">"
    );
    for (i, &n) in counts.iter().enumerate() {
        let x = MARGIN_L + bar_w * i as f64;
        let height = plot_h * n as f64 / top;
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" \
             fill=\"#0969da\"><title>{n} jobs</title></rect>",
            x + 1.0,
            8.0 + plot_h - height,
            bar_w - 2.0
        );
        let label = match bounds.get(i) {
            Some(&b) => format!("≤{}", format_seconds(b)),
            None => format!(">{}", format_seconds(bounds[bounds.len() - 1])),
        };
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x + bar_w / 2.0,
            CHART_H - 6.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"20\" font-size=\"11\" text-anchor=\"start\">{} jobs, tallest bin \
         {}</text>\n</svg>",
        MARGIN_L + 6.0,
        total,
        top
    );
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

/// Fold the per-second series into at most `MAX_CHART_POINTS` buckets of equal width.
fn bucket(series: &[TimePoint]) -> Vec<Vec<&TimePoint>> {
    let width = series.len().div_ceil(MAX_CHART_POINTS).max(1);
    series.chunks(width).map(|c| c.iter().collect()).collect()
}

fn sum(points: &[&TimePoint], f: fn(&TimePoint) -> u64) -> u64 {
    points.iter().map(|p| f(p)).sum()
}

/// One SVG line chart with a zero-based y axis, labelled at 0 and its maximum.
fn chart(out: &mut String, title: &str, lines: &[Line], seconds: f64, label: fn(f64) -> String) {
    let n = lines.iter().map(|l| l.values.len()).max().unwrap_or(0);
    let y_max = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .copied()
        .fold(0.0, f64::max);
    let y_top = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let (plot_w, plot_h) = (CHART_W - MARGIN_L - 8.0, CHART_H - MARGIN_B - 8.0);
    let x = |i: usize| MARGIN_L + plot_w * i as f64 / (n.max(2) - 1) as f64;
    let y = |v: f64| 8.0 + plot_h * (1.0 - v / y_top);
    let _ = writeln!(
        out,
        "<h3>{}</h3>\n<svg width=\"{CHART_W}\" height=\"{CHART_H}\" viewBox=\"0 0 {CHART_W} \
         {CHART_H}\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    let _ = writeln!(
        out,
        "<line x1=\"{MARGIN_L}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\
         <line x1=\"{MARGIN_L}\" y1=\"8\" x2=\"{MARGIN_L}\" y2=\"{:.1}\" stroke=\"#888\"/>",
        y(0.0),
        CHART_W - 8.0,
        y(0.0),
        y(0.0)
    );
    let text = |out: &mut String, tx: f64, ty: f64, anchor: &str, s: &str| {
        let _ = writeln!(
            out,
            "<text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"{anchor}\">{}</text>",
            escape(s)
        );
    };
    text(out, MARGIN_L - 4.0, y(0.0), "end", &label(0.0));
    text(out, MARGIN_L - 4.0, y(y_max) + 4.0, "end", &label(y_max));
    text(out, MARGIN_L, CHART_H - 6.0, "start", "0s");
    text(
        out,
        CHART_W - 8.0,
        CHART_H - 6.0,
        "end",
        &format_seconds(seconds),
    );
    for line in lines {
        // A gap (no data) splits the line, so missing intervals are not drawn as zero.
        let mut segment: Vec<String> = Vec::new();
        let flush = |segment: &mut Vec<String>, out: &mut String| {
            // A lone point between gaps (sparse samples such as pickups) would draw nothing as
            // a polyline: draw it as a dot.
            if let [point] = segment.as_slice()
                && let Some((cx, cy)) = point.split_once(',')
            {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"2\" fill=\"{}\"/>",
                    line.color
                );
                segment.clear();
            } else if !segment.is_empty() {
                let _ = writeln!(
                    out,
                    "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>",
                    line.color,
                    segment.join(" ")
                );
                segment.clear();
            }
        };
        for (i, v) in line.values.iter().enumerate() {
            match v {
                Some(v) => segment.push(format!("{:.1},{:.1}", x(i), y(*v))),
                None => flush(&mut segment, out),
            }
        }
        flush(&mut segment, out);
    }
    out.push_str("</svg>\n<div class=\"legend\">");
    for line in lines {
        let _ = write!(
            out,
            "<span style=\"color:{}\">■ {}</span>",
            line.color,
            escape(line.name)
        );
    }
    out.push_str("</div>\n");
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

    // Goal: the page is self-contained (no script, no external reference), escapes report text,
    // and draws one chart per time-series view.
    #[test]
    fn html_is_self_contained_and_escaped() {
        let html = render_html(&report(30));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"), "report text must be escaped");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external refs"
        );
        // Four charts over time and the pickup distribution.
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(html.contains("Job pickup latency distribution"));
        assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
        assert!(html.contains("✓ job_pickup.p99 &lt; 2s"));
        assert!(html.contains("<td>poll_message</td><td>30</td>"));
    }

    // Goal: long runs fold into a bounded number of chart points.
    #[test]
    fn long_series_are_bucketed() {
        let report = report(2_500);
        let buckets = bucket(&report.timeseries);
        assert!(buckets.len() <= MAX_CHART_POINTS, "{}", buckets.len());
        assert_eq!(
            buckets.iter().map(Vec::len).sum::<usize>(),
            report.timeseries.len()
        );
    }
}
