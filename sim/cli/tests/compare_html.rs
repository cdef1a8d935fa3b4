//! `fleetsim compare BASE.json CUR.json --html diff.html`: the comparison page from the real
//! binary, on reports of a real (virtual-time) run.

mod support;

use support::{fleetsim, scratch, text};

// Goal: `compare --html` writes a self-contained page with the baseline beside the current
// run (both timelines, filled by the discrete-event driver) and the regressed metric's row and
// chart highlighted, while the text gate and its exit code stay as without --html.
#[test]
fn compare_html_highlights_the_regression() {
    let dir = scratch("compare-html", "regressed");
    let base = dir.join("base.json");
    let out = fleetsim(&[
        "simulate",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scenarios/quickstart.toml"
        ),
        "--quiet",
        "--out",
        base.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&base).expect("report")).expect("json");
    let timeline = &report["timeline"];
    assert!(
        timeline["operations"]["poll_message"]["p99_s"]
            .as_array()
            .is_some_and(|v| v.iter().any(|p| p.as_f64().is_some())),
        "the virtual run fills the timeline's per-operation percentiles"
    );
    assert!(
        timeline["job_pickup"]["count"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    // The current run: the same report with polls answered three times slower at p99.
    let p99 = &mut report["operations"]["poll_message"]["latency_s"]["p99"];
    *p99 = serde_json::json!(p99.as_f64().expect("poll_message p99") * 3.0);
    let cur = dir.join("cur.json");
    std::fs::write(&cur, report.to_string()).expect("write current");
    let page = dir.join("diff.html");
    let out = fleetsim(&[
        "compare",
        base.to_str().expect("utf-8 path"),
        cur.to_str().expect("utf-8 path"),
        "--html",
        page.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("REGRESSED"), "{}", text(&out));
    let html = std::fs::read_to_string(&page).expect("the page is written");
    assert!(html.contains("FAIL: 1 regressed"));
    assert!(html.contains("<tr class=\"regressed\" data-metric=\"operations.poll_message.p99\">"));
    assert!(html.contains("<h3>poll_message<span class=\"badge\">regressed</span></h3>"));
    assert!(html.contains("uPlot"), "the chart library is inlined");
    for external in [" src=", " href="] {
        assert!(!html.contains(external), "external reference {external:?}");
    }
}
