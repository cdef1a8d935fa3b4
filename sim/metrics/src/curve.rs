//! The capacity plan's HTML page (`fleetsim plan --html FILE`): metrics against the varied
//! value, each with its 95 % interval as a shaded band and its threshold as a dashed line, and
//! the plan's table; one self-contained file drawn by the same inlined uPlot as the run report
//! (see `charts`). It renders to a `String` and never writes files; every text is escaped.

use std::fmt::Write as _;

use crate::charts::{self, BLUE, Chart, GREEN, Kind, PURPLE, RED, Unit, series};
use crate::html::{page_end, page_head};
use crate::junit::escape;

/// How a curve's values read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CurveUnit {
    /// Seconds (latencies, waits).
    Seconds,
    /// Per second (throughput).
    PerSecond,
    /// A share 0–1 (utilisation, error rate).
    Ratio,
}

/// One metric over the varied values: its mean and the ends of its interval, one entry per
/// value (`None` where a point lacks it).
#[derive(Clone, Debug, PartialEq)]
pub struct CurveBand {
    /// The metric's name (`pickup p99`).
    pub label: String,
    /// The means.
    pub mean: Vec<Option<f64>>,
    /// The intervals' lower ends.
    pub lo: Vec<Option<f64>>,
    /// The intervals' upper ends.
    pub hi: Vec<Option<f64>>,
}

/// One chart of the page.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Its heading.
    pub title: String,
    /// Shown under the heading.
    pub note: String,
    /// How its values read.
    pub unit: CurveUnit,
    /// Its metrics, each drawn as a line in a shaded band.
    pub bands: Vec<CurveBand>,
    /// A threshold drawn as a dashed horizontal line: its label and value.
    pub threshold: Option<(String, f64)>,
}

/// The whole page.
#[derive(Clone, Debug, PartialEq)]
pub struct CurvePage {
    /// The page title.
    pub title: String,
    /// Lines of text under the title (what was run, the answer).
    pub lines: Vec<String>,
    /// The varied key (the x axis).
    pub x_name: String,
    /// Its values, ascending.
    pub x: Vec<f64>,
    /// The charts.
    pub curves: Vec<Curve>,
    /// The table: a header row, then one row per point.
    pub table: Vec<Vec<String>>,
}

const COLORS: [&str; 4] = [BLUE, RED, GREEN, PURPLE];

fn chart(i: usize, x_name: &str, x: &[f64], c: &Curve) -> Chart {
    let mut all = Vec::new();
    let mut bands = Vec::new();
    for (j, b) in c.bands.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let at = all.len();
        all.push(series(format!("{} (mean)", b.label), color, b.mean.clone()));
        let mut hi = series(format!("{} 95 % high", b.label), color, b.hi.clone());
        let mut lo = series(format!("{} 95 % low", b.label), color, b.lo.clone());
        hi.dash = true;
        lo.dash = true;
        all.push(hi);
        all.push(lo);
        bands.push([at + 1, at + 2]);
    }
    if let Some((label, v)) = &c.threshold {
        let mut t = series(label.clone(), RED, vec![Some(*v); x.len()]);
        t.dash = true;
        all.push(t);
    }
    Chart {
        id: format!("curve-{i}"),
        title: c.title.clone(),
        note: c.note.clone(),
        unit: match c.unit {
            CurveUnit::Seconds => Unit::Seconds,
            CurveUnit::PerSecond => Unit::PerSecond,
            CurveUnit::Ratio => Unit::Ratio,
        },
        kind: Kind::Value,
        x: x.to_vec(),
        x_labels: Vec::new(),
        series: all,
        regressed: false,
        half: false,
        bands,
        x_name: x_name.to_string(),
    }
}

/// Render the page.
pub fn render_curve_page(page: &CurvePage) -> String {
    let mut out = page_head(&page.title);
    for line in &page.lines {
        let _ = writeln!(out, "<p>{}</p>", escape(line));
    }
    let charts: Vec<Chart> = page
        .curves
        .iter()
        .enumerate()
        .map(|(i, c)| chart(i, &page.x_name, &page.x, c))
        .collect();
    if !charts.is_empty() {
        out.push_str(
            "<h2>Capacity curves</h2>\n<p class=\"hint\">Each line is the mean over the seeds; \
             the shaded band its 95 % interval; the dashed red line the threshold. Drag to \
             zoom, double-click to zoom out, hover to read the values.</p>\n",
        );
        charts::write_blocks(&mut out, &charts);
    }
    if let Some((head, rows)) = page.table.split_first() {
        out.push_str("<h2>Points</h2>\n<table>\n<tr>");
        for h in head {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        out.push_str("</tr>\n");
        for r in rows {
            out.push_str("<tr>");
            for cell in r {
                let _ = write!(out, "<td>{}</td>", escape(cell));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    page_end(&mut out, &charts);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_every_curve_its_band_and_the_threshold() {
        // Goal: one offline page whose chart data holds the means, both interval ends and the
        // threshold line for every value, with a shaded band per metric; text is escaped.
        let page = CurvePage {
            title: "plan <x>".into(),
            lines: vec!["answer: 3".into()],
            x_name: "fleet.agents".into(),
            x: vec![1.0, 2.0],
            curves: vec![Curve {
                title: "pickup".into(),
                note: String::new(),
                unit: CurveUnit::Seconds,
                bands: vec![CurveBand {
                    label: "pickup p99".into(),
                    mean: vec![Some(1.5), Some(7.25)],
                    lo: vec![Some(1.0), Some(6.0)],
                    hi: vec![Some(2.0), Some(8.5)],
                }],
                threshold: Some(("p99 < 5s".into(), 5.0)),
            }],
            table: vec![vec!["a".into()], vec!["<b>".into()]],
        };
        let html = render_curve_page(&page);
        assert!(html.contains("plan &lt;x&gt;") && html.contains("&lt;b&gt;"));
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
        assert!(html.contains("\"kind\":\"value\""), "value axis");
        assert!(html.contains("\"bands\":[[1,2]]"), "one band");
        assert!(html.contains("\"x\":[1.0,2.0]"), "the values");
        for v in ["[1.5,7.25]", "[2.0,8.5]", "[1.0,6.0]", "[5.0,5.0]"] {
            assert!(html.contains(&format!("\"values\":{v}")), "{v}");
        }
        assert!(html.contains("uPlot") && html.trim_end().ends_with("</html>"));
    }
}
