//! Chart data for the HTML pages: a report's figures over time as columns, turned into chart
//! specifications (JSON) that the inlined uPlot draws with zoom, hover and synced cursors.
//!
//! Why uPlot (1.6.32, MIT, vendored in `assets/uplot/`): the pages must stay one offline file,
//! and the charts need zoom, hover read-outs and cursors synced across charts. Hand-written SVG
//! gives none of that without writing a chart library; Chart.js (~200 KB) and ECharts (~1 MB)
//! would make a report page mostly library. uPlot is 51 KB minified, draws 100,000s of points
//! on a canvas, and has those three features built in.
//!
//! Nothing here reads files: the library is compiled in with `include_str!`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fleetsim_core::ops::{AgentState, Operation};
use serde::Serialize;

use crate::compare::{Comparison, Verdict};
use crate::junit::escape;
use crate::names;
use crate::report::{Report, decode_histogram};
use crate::timeline::LatencyTimeline;

/// uPlot's minified script and style, and its licence (shipped in the page's comment).
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");
/// The page script (`assets/charts.js`): one uPlot per chart spec, shared cursor and zoom, and
/// the `#selftest` hook the Chromium tests read.
const PAGE_JS: &str = include_str!("../assets/charts.js");

/// How a chart's values read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Unit {
    /// Seconds (latencies).
    Seconds,
    /// Per second (rates).
    PerSecond,
    /// Plain counts (agents).
    Count,
    /// A share 0–1.
    Ratio,
}

/// A line over time, or bars over bins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// x is run seconds; cursors sync and zoom together across the page.
    Time,
    /// x is a bin index labelled by `x_labels`.
    Bars,
    /// x is a plain number (a plan's varied value): zoom and hover, no shared cursor.
    Value,
}

/// One series of a chart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) color: &'static str,
    pub(crate) values: Vec<Option<f64>>,
    /// Drawn dashed (the baseline on a comparison page).
    pub(crate) dash: bool,
    /// Bar width as a share of the bin (bars only).
    pub(crate) size: f64,
}

/// One chart: what the page script needs to draw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Chart {
    pub(crate) id: String,
    #[serde(skip)]
    pub(crate) title: String,
    /// Shown under the title (what is drawn, which side is dashed).
    #[serde(skip)]
    pub(crate) note: String,
    pub(crate) unit: Unit,
    pub(crate) kind: Kind,
    pub(crate) x: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) x_labels: Vec<String>,
    pub(crate) series: Vec<Series>,
    /// Drawn with a red frame: a metric the comparison calls regressed.
    pub(crate) regressed: bool,
    /// Half width, two to a row (per-operation charts).
    #[serde(skip)]
    pub(crate) half: bool,
    /// Shaded areas between two series, `[upper, lower]` indices into `series` (an
    /// interval band).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) bands: Vec<[usize; 2]>,
    /// The x axis' name in the hover read-out (`Value` charts).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) x_name: String,
}

pub(crate) const BLUE: &str = "#0969da";
pub(crate) const RED: &str = "#cf222e";
pub(crate) const GREEN: &str = "#1a7f37";
const YELLOW: &str = "#bf8700";
pub(crate) const PURPLE: &str = "#8250df";
const GREY: &str = "#6e7781";
const PALETTE: [&str; 8] = [RED, YELLOW, PURPLE, BLUE, GREEN, GREY, "#e16f24", "#1b7c83"];
const AGENT_COLORS: [&str; 4] = [YELLOW, BLUE, GREEN, GREY];
const PERCENTILES: [(&str, &str); 3] = [("p50", GREEN), ("p95", BLUE), ("p99", YELLOW)];

/// One compared line: name, colour, the baseline's and the current run's values.
type Pair<'a> = (
    &'a str,
    &'static str,
    &'a Vec<Option<f64>>,
    &'a Vec<Option<f64>>,
);

/// A report's figures over time: x is each interval's start in run seconds.
struct Frame {
    x: Vec<f64>,
    requests: Vec<Option<f64>>,
    errors: Vec<Option<f64>>,
    queued: Vec<Option<f64>>,
    started: Vec<Option<f64>>,
    finished: Vec<Option<f64>>,
    /// Agents by state, `AgentState::ALL` order.
    agents: Vec<Vec<Option<f64>>>,
    /// Pickup p50, p95, p99 (p95 is empty for reports without a timeline).
    pickup: [Vec<Option<f64>>; 3],
    /// Errors per second by kind.
    errors_by_kind: Vec<(String, Vec<Option<f64>>)>,
    /// Per operation (report order): p50, p95, p99.
    operations: Vec<(&'static str, [Vec<Option<f64>>; 3])>,
}

impl Frame {
    /// From the report's timeline, or, for reports written before timelines, from its
    /// per-second series (requests, jobs, agents, pickup p50/p99 only).
    fn of(r: &Report) -> Frame {
        // A timeline this build would not read back (ragged columns, unknown names: a
        // hand-edited file) is not drawn; the per-second series still is.
        let Some(t) = r
            .timeline
            .as_ref()
            .filter(|t| crate::timeline::Timeline::from_report(t).is_ok())
        else {
            return Frame::of_series(r);
        };
        let width = t.interval_s.max(1) as f64;
        let rate = |col: &[u64]| col.iter().map(|&n| Some(n as f64 / width)).collect();
        let latency = |l: &LatencyTimeline| [l.p50_s.clone(), l.p95_s.clone(), l.p99_s.clone()];
        let errors: Vec<u64> = (0..t.requests.len())
            .map(|i| t.errors_by_kind.values().map(|c| c[i]).sum())
            .collect();
        Frame {
            x: (0..t.requests.len()).map(|i| i as f64 * width).collect(),
            requests: rate(&t.requests),
            errors: rate(&errors),
            queued: rate(&t.jobs_queued),
            started: rate(&t.jobs_started),
            finished: rate(&t.jobs_finished),
            agents: AgentState::ALL
                .iter()
                .map(|s| {
                    let col = t.agents.get(s.name()).map_or(&[][..], Vec::as_slice);
                    col.iter().map(|&n| Some(n as f64)).collect()
                })
                .collect(),
            pickup: latency(&t.job_pickup),
            errors_by_kind: t
                .errors_by_kind
                .iter()
                .map(|(k, c)| (k.clone(), rate(c)))
                .collect(),
            operations: Operation::ALL
                .iter()
                .filter_map(|op| {
                    let o = t.operations.get(op.name())?;
                    Some((op.name(), latency(&o.latency)))
                })
                .collect(),
        }
    }

    fn of_series(r: &Report) -> Frame {
        let s = &r.timeseries;
        let col = |f: &dyn Fn(&crate::report::TimePoint) -> Option<f64>| s.iter().map(f).collect();
        Frame {
            x: s.iter().map(|p| p.t_s as f64).collect(),
            requests: col(&|p| Some(p.requests as f64)),
            errors: col(&|p| Some(p.errors as f64)),
            queued: col(&|p| Some(p.jobs_queued as f64)),
            started: col(&|p| Some(p.jobs_started as f64)),
            finished: col(&|p| Some(p.jobs_finished as f64)),
            agents: (0..AgentState::ALL.len())
                .map(|i| col(&|p| Some(p.agents[i] as f64)))
                .collect(),
            pickup: [
                col(&|p| p.pickup_p50_s),
                Vec::new(),
                col(&|p| p.pickup_p99_s),
            ],
            errors_by_kind: Vec::new(),
            operations: Vec::new(),
        }
    }
}

pub(crate) fn series(
    label: impl Into<String>,
    color: &'static str,
    values: Vec<Option<f64>>,
) -> Series {
    Series {
        label: label.into(),
        color,
        values,
        dash: false,
        size: 0.0,
    }
}

fn time_chart(title: &str, unit: Unit, x: Vec<f64>, series: Vec<Series>) -> Chart {
    Chart {
        id: String::new(),
        title: title.to_string(),
        note: String::new(),
        unit,
        kind: Kind::Time,
        x,
        x_labels: Vec::new(),
        series: series
            .into_iter()
            .filter(|s| !s.values.is_empty())
            .collect(),
        regressed: false,
        half: false,
        bands: Vec::new(),
        x_name: String::new(),
    }
}

/// The charts of one run's page.
pub(crate) fn run_charts(r: &Report) -> Vec<Chart> {
    let f = Frame::of(r);
    let mut charts = Vec::new();
    if f.x.is_empty() {
        return charts;
    }
    let mut add = |mut c: Chart| {
        c.id = format!("chart-{}", charts.len());
        charts.push(c);
    };
    add(time_chart(
        "Requests and errors",
        Unit::PerSecond,
        f.x.clone(),
        vec![
            series("requests/s", BLUE, f.requests.clone()),
            series("errors/s", RED, f.errors.clone()),
        ],
    ));
    let pickup = PERCENTILES
        .iter()
        .zip(&f.pickup)
        .map(|(&(name, color), v)| series(name, color, v.clone()))
        .collect();
    add(time_chart(
        "Job pickup latency over time",
        Unit::Seconds,
        f.x.clone(),
        pickup,
    ));
    if let Some(c) = pickup_histogram_chart(&[(r, "jobs", BLUE, false)]) {
        add(c);
    }
    add(time_chart(
        "Active agents by state",
        Unit::Count,
        f.x.clone(),
        AgentState::ALL
            .iter()
            .zip(&f.agents)
            .zip(AGENT_COLORS)
            .map(|((s, v), color)| series(s.name(), color, v.clone()))
            .collect(),
    ));
    add(time_chart(
        "Jobs",
        Unit::PerSecond,
        f.x.clone(),
        vec![
            series("queued/s", PURPLE, f.queued.clone()),
            series("started/s", BLUE, f.started.clone()),
            series("finished/s", GREEN, f.finished.clone()),
        ],
    ));
    if !f.errors_by_kind.is_empty() {
        let kinds = f
            .errors_by_kind
            .iter()
            .zip(PALETTE.iter().cycle())
            .map(|((k, v), &color)| series(format!("{k}/s"), color, v.clone()))
            .collect();
        add(time_chart(
            "Errors by kind",
            Unit::PerSecond,
            f.x.clone(),
            kinds,
        ));
    }
    for (op, pcts) in &f.operations {
        let lines = PERCENTILES
            .iter()
            .zip(pcts)
            .map(|(&(name, color), v)| series(name, color, v.clone()))
            .collect();
        let mut c = time_chart(op, Unit::Seconds, f.x.clone(), lines);
        c.half = true;
        c.note = "successful calls, latency from the intended start".to_string();
        add(c);
    }
    charts
}

/// The share of jobs per Prometheus pickup bin (so the page and the dashboards bin alike), from
/// each report's exact HDR histogram; `None` when no report has a pickup sample.
fn pickup_histogram_chart(sides: &[(&Report, &str, &'static str, bool)]) -> Option<Chart> {
    let bounds = names::PROM_PICKUP_BUCKETS_S;
    let mut labels: Vec<String> = bounds
        .iter()
        .map(|&b| format!("≤{}", crate::summary::format_seconds(b)))
        .collect();
    labels.push(format!(
        ">{}",
        crate::summary::format_seconds(bounds[bounds.len() - 1])
    ));
    let mut out = Vec::new();
    for (i, &(r, label, color, dash)) in sides.iter().enumerate() {
        let Ok(h) = decode_histogram(names::JOB_PICKUP, &r.histograms.job_pickup) else {
            continue;
        };
        if h.is_empty() {
            continue;
        }
        let mut counts = vec![0u64; bounds.len() + 1];
        for v in h.iter_recorded() {
            let s = v.value_iterated_to() as f64 / 1e6;
            let bin = bounds.iter().position(|&b| s <= b).unwrap_or(bounds.len());
            counts[bin] += v.count_since_last_iteration();
        }
        let total = h.len() as f64;
        let mut s = series(
            label,
            color,
            counts.iter().map(|&n| Some(n as f64 / total)).collect(),
        );
        s.dash = dash;
        // Side by side bars would need offsets; nested widths keep both readable instead.
        s.size = if i == 0 { 0.8 } else { 0.45 };
        out.push(s);
    }
    if out.is_empty() {
        return None;
    }
    Some(Chart {
        id: String::new(),
        title: "Job pickup latency distribution".to_string(),
        note: "share of picked-up jobs per bin (the Prometheus pickup buckets)".to_string(),
        unit: Unit::Ratio,
        kind: Kind::Bars,
        x: (0..labels.len()).map(|i| i as f64).collect(),
        x_labels: labels,
        series: out,
        regressed: false,
        half: false,
        bands: Vec::new(),
        x_name: String::new(),
    })
}

/// Put columns with their own x (run seconds) on their union, `None` where a column has no
/// point; lines span the gaps.
fn on_union(parts: &[(&[f64], &[Option<f64>])]) -> (Vec<f64>, Vec<Vec<Option<f64>>>) {
    let key = |x: f64| x.round() as u64;
    let mut xs: Vec<u64> = parts
        .iter()
        .flat_map(|(x, _)| x.iter().map(|&v| key(v)))
        .collect();
    xs.sort_unstable();
    xs.dedup();
    let index: BTreeMap<u64, usize> = xs.iter().enumerate().map(|(i, &x)| (x, i)).collect();
    let columns = parts
        .iter()
        .map(|(x, v)| {
            let mut col = vec![None; xs.len()];
            for (&xi, &vi) in x.iter().zip(*v) {
                col[index[&key(xi)]] = vi;
            }
            col
        })
        .collect();
    (xs.into_iter().map(|x| x as f64).collect(), columns)
}

/// The charts of a comparison page: each figure of the baseline (dashed) and the current run
/// (solid) on one chart, a chart framed red when its metric regressed, regressed charts
/// first.
pub(crate) fn compare_charts(base: &Report, cur: &Report, cmp: &Comparison) -> Vec<Chart> {
    let (b, c) = (Frame::of(base), Frame::of(cur));
    let regressed = |metrics: &[&str]| {
        cmp.deltas
            .iter()
            .any(|d| d.verdict == Verdict::Regressed && metrics.contains(&d.metric.as_str()))
    };
    let mut charts = Vec::new();
    let mut pair = |title: &str, unit: Unit, lines: Vec<Pair>, metrics: &[&str], half: bool| {
        let mut parts = Vec::new();
        for (_, _, bv, cv) in &lines {
            if !bv.is_empty() {
                parts.push((b.x.as_slice(), bv.as_slice()));
            }
            if !cv.is_empty() {
                parts.push((c.x.as_slice(), cv.as_slice()));
            }
        }
        if parts.is_empty() {
            return;
        }
        let (x, mut cols) = on_union(&parts);
        let mut out = Vec::new();
        let mut cols = cols.drain(..);
        for (name, color, bv, cv) in lines {
            if !bv.is_empty() {
                let mut s = series(
                    format!("{name} baseline"),
                    color,
                    cols.next().unwrap_or_default(),
                );
                s.dash = true;
                out.push(s);
            }
            if !cv.is_empty() {
                out.push(series(
                    format!("{name} current"),
                    color,
                    cols.next().unwrap_or_default(),
                ));
            }
        }
        let mut chart = time_chart(title, unit, x, out);
        chart.regressed = regressed(metrics);
        chart.half = half;
        chart.note = "baseline dashed, current solid".to_string();
        charts.push(chart);
    };
    pair(
        "Job pickup latency over time",
        Unit::Seconds,
        vec![
            ("p50", GREEN, &b.pickup[0], &c.pickup[0]),
            ("p99", YELLOW, &b.pickup[2], &c.pickup[2]),
        ],
        &["job_pickup.p50", "job_pickup.p99"],
        false,
    );
    pair(
        "Requests",
        Unit::PerSecond,
        vec![("requests/s", BLUE, &b.requests, &c.requests)],
        &["requests.rate_per_s"],
        false,
    );
    pair(
        "Errors",
        Unit::PerSecond,
        vec![("errors/s", RED, &b.errors, &c.errors)],
        &["errors.rate"],
        false,
    );
    let busy = crate::recorder::state_index(AgentState::Busy);
    let idle = crate::recorder::state_index(AgentState::Idle);
    pair(
        "Active agents",
        Unit::Count,
        vec![
            ("busy", GREEN, &b.agents[busy], &c.agents[busy]),
            ("idle", BLUE, &b.agents[idle], &c.agents[idle]),
        ],
        &[],
        false,
    );
    let empty = Vec::new();
    // Operations the gate compared, regressed ones first.
    let mut ops: Vec<(&str, bool)> = cmp
        .deltas
        .iter()
        .filter_map(|d| {
            let op = d.metric.strip_prefix("operations.")?.strip_suffix(".p99")?;
            Some((op, d.verdict == Verdict::Regressed))
        })
        .collect();
    ops.sort_by_key(|&(_, r)| !r);
    for (op, _) in ops {
        let find = |f: &Frame| {
            f.operations
                .iter()
                .find(|(n, _)| *n == op)
                .map(|(_, p)| p.clone())
        };
        let (bp, cp) = (find(&b), find(&c));
        let (bp, cp) = (bp.unwrap_or_default(), cp.unwrap_or_default());
        let metric = format!("operations.{op}.p99");
        pair(
            op,
            Unit::Seconds,
            vec![(
                "p99",
                YELLOW,
                bp.get(2).unwrap_or(&empty),
                cp.get(2).unwrap_or(&empty),
            )],
            &[metric.as_str()],
            true,
        );
    }
    let sides = [
        (base, "baseline", GREY, true),
        (cur, "current", BLUE, false),
    ];
    if let Some(mut h) = pickup_histogram_chart(&sides) {
        h.id = format!("chart-{}", charts.len());
        h.regressed = regressed(&["job_pickup.p50", "job_pickup.p99"]);
        h.note =
            "share of picked-up jobs per bin: baseline wide grey, current narrow blue".to_string();
        charts.push(h);
    }
    // Regressions first: the reader opens the page to see them.
    charts.sort_by_key(|c| !c.regressed);
    for (i, c) in charts.iter_mut().enumerate() {
        c.id = format!("chart-{i}");
    }
    charts
}

/// The `<style>` for the chart blocks (uPlot's own and the page's).
pub(crate) fn style() -> String {
    format!(
        "{UPLOT_CSS}\n.charts{{display:flex;flex-wrap:wrap;gap:8px 16px}}\
         .chart{{flex:1 1 100%;min-width:0;box-sizing:border-box;border:1px solid transparent;padding:2px 4px}}\
         .chart.half{{flex:1 1 calc(50% - 16px)}}.chart.regressed{{border-color:#cf222e;\
         background:#fff5f5}}.chart .note{{color:#57606a;font-size:12px}}.badge{{color:#fff;\
         background:#cf222e;border-radius:4px;padding:0 6px;font-size:12px;margin-left:8px}}\
         .plot{{min-height:240px}}"
    )
}

/// Write the chart blocks: a heading, a note and an empty `div` the script draws into.
pub(crate) fn write_blocks(out: &mut String, charts: &[Chart]) {
    out.push_str("<div class=\"charts\">\n");
    for c in charts {
        let class = match (c.half, c.regressed) {
            (false, false) => "chart",
            (true, false) => "chart half",
            (false, true) => "chart regressed",
            (true, true) => "chart half regressed",
        };
        let badge = if c.regressed {
            "<span class=\"badge\">regressed</span>"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<section class=\"{class}\"><h3>{}{badge}</h3><div class=\"note\">{}</div>\
             <div class=\"plot\" id=\"{}\"></div></section>",
            escape(&c.title),
            escape(&c.note),
            escape(&c.id)
        );
    }
    out.push_str("</div>\n");
}

/// The scripts that draw `charts`: uPlot, the chart data as JSON, the page script.
pub(crate) fn scripts(charts: &[Chart]) -> String {
    let data = serde_json::to_string(charts).unwrap_or_else(|_| "[]".to_string());
    // "</" cannot appear inside a script element; "<\/" is the same JSON string.
    let data = data.replace("</", "<\\/");
    format!(
        "<script>{UPLOT_JS}</script>\n<script type=\"application/json\" id=\"fleetsim-charts\">\
         {data}</script>\n<script>{PAGE_JS}</script>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: columns with different x land on one axis, gaps as `None`, in time order.
    #[test]
    fn columns_meet_on_the_union_of_their_times() {
        let (x, cols) = on_union(&[
            (&[0.0, 2.0, 4.0], &[Some(1.0), Some(2.0), Some(3.0)]),
            (&[0.0, 1.0], &[Some(9.0), None]),
        ]);
        assert_eq!(x, [0.0, 1.0, 2.0, 4.0]);
        assert_eq!(cols[0], [Some(1.0), None, Some(2.0), Some(3.0)]);
        assert_eq!(cols[1], [Some(9.0), None, None, None]);
    }

    // Goal: a report whose timeline does not read back (ragged columns) is drawn from its
    // per-second series instead of handing the page columns of different lengths.
    #[test]
    fn a_broken_timeline_falls_back_to_the_series() {
        let mut rec = crate::Recorder::new();
        for s in 0..5 {
            rec.record(&fleetsim_core::event::Event::JobQueued {
                request_id: s,
                at: fleetsim_core::SimTime::from_secs(s),
            });
        }
        let mut r = Report::from_recorder(&rec, crate::RunMeta::default());
        assert_eq!(run_charts(&r)[0].x.len(), 5);
        r.timeline.as_mut().expect("timeline").requests.push(1);
        r.timeseries.truncate(3);
        let charts = run_charts(&r);
        assert!(
            charts
                .iter()
                .all(|c| c.kind == Kind::Bars || c.x.len() == 3)
        );
    }

    // Goal: the chart data cannot close its script element, whatever a label holds.
    #[test]
    fn chart_data_cannot_end_its_script() {
        let mut c = time_chart("t", Unit::Count, vec![0.0], Vec::new());
        c.series.push(series("</script><b>", BLUE, vec![Some(1.0)]));
        let page = scripts(&[c]);
        let data = page
            .split("id=\"fleetsim-charts\">")
            .nth(1)
            .and_then(|rest| rest.split("</script>").next())
            .expect("data block");
        assert!(data.contains("<\\/script><b>"), "{data}");
    }
}
