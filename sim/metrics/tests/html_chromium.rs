//! The HTML pages in a real browser: render a sample report (and a comparison of two), load
//! it in headless Chromium (`chromium-headless-shell`, observability.md §4) from a file URL
//! with `#selftest`, so the page's script hovers and zooms its own charts and writes what
//! happened into `<pre id="selftest">`; check from the DOM Chromium dumps that every chart is a
//! uPlot with its series, that hovering shows values on every time chart (synced cursors),
//! that a drag zooms all of them, and that the browser logged no script or load error; then
//! save screenshots for the README (docs/img/report.png, docs/img/compare.png).
//!
//! Without the browser the test prints why and passes, unless `CI` is set: CI installs it, so
//! there a missing browser is a failure.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::api::ErrorKind;
use fleetsim_core::event::{Event, Outcome};
use fleetsim_core::ops::{AgentState, Operation};
use fleetsim_core::proto::TaskResult;
use fleetsim_metrics::report::RunMeta;
use fleetsim_metrics::{Recorder, Report, compare, render_compare_html, render_html, thresholds};
use serde_json::Value;

const BROWSER: &str = "chromium-headless-shell";
/// Series of each chart the sample report draws: requests and errors, pickup p50/p95/p99 over
/// time, the pickup distribution, agents by state, jobs, errors by kind (throttled), then p50/
/// p95/p99 of each operation (poll_message, feed_post).
const REPORT_SERIES: [u64; 8] = [2, 3, 1, 4, 3, 1, 3, 3];
/// Series of each chart of the comparison page, baseline and current each: the regressed
/// feed_post p99 first, then pickup p50/p99, requests, errors, busy/idle agents, poll_message
/// p99, the pickup distribution.
const COMPARE_SERIES: [u64; 7] = [2, 4, 2, 2, 4, 2, 2];
/// Agents in the sample run.
const AGENTS: usize = 20;

/// Flags from observability.md §4: no sandbox (root in CI), no GPU, no network chatter, fixed
/// scale, browser log on stderr (to catch script errors), and a virtual-time budget so anything
/// deferred would run before the capture.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--enable-logging=stderr",
    "--virtual-time-budget=2000",
];

/// Collects the sample run's events with their times, remembering each agent's state so state
/// changes are consistent; the recorder then gets them in time order, as from a real run.
struct Fleet {
    events: Vec<(SimTime, Event)>,
    state: [AgentState; AGENTS],
}

impl Fleet {
    fn record(&mut self, at: SimTime, ev: Event) {
        self.events.push((at, ev));
    }

    fn move_to(&mut self, agent: usize, to: AgentState, at: SimTime) {
        let from = std::mem::replace(&mut self.state[agent], to);
        let agent = agent as u32;
        self.record(
            at,
            Event::AgentState {
                agent,
                from,
                to,
                at,
            },
        );
    }
}

/// A two-minute run of 20 agents: a ramp-up, steady calls, jobs whose pickup slows down mid
/// run, a burst of throttled calls, and thresholds (one failing) to show. `feed_slowdown`
/// scales feed_post latency (a regression for the comparison page).
fn sample_report(feed_slowdown: u64) -> Report {
    let mut fleet = Fleet {
        events: Vec::new(),
        state: [AgentState::Offline; AGENTS],
    };
    let t = SimTime::from_millis;
    for agent in 0..AGENTS {
        let at = agent as u64 * 250;
        fleet.move_to(agent, AgentState::Registering, t(at));
        fleet.move_to(agent, AgentState::Idle, t(at + 400));
    }
    for s in 0..120u64 {
        let slow_phase = (50..70).contains(&s);
        for k in 0..8u64 {
            let intended = t(s * 1_000 + k * 120);
            let mut base_ms = if slow_phase { 180 } else { 20 };
            let outcome = if (80..84).contains(&s) && k < 3 {
                Outcome::Api(ErrorKind::Throttled)
            } else {
                Outcome::Ok
            };
            let op = if k % 2 == 0 {
                Operation::PollMessage
            } else {
                base_ms *= feed_slowdown;
                Operation::FeedPost
            };
            let done = intended + Duration::from_millis(base_ms + (s * 7 + k * 13) % 40);
            let agent = (k as usize % AGENTS) as u32;
            let ev = Event::Op {
                agent,
                op,
                intended,
                done,
                outcome,
            };
            fleet.record(done, ev);
        }
        if s % 2 == 0 && s >= 5 {
            let agent = (s as usize / 2) % AGENTS;
            let wait_ms = 300 + (s % 17) * 150 + if slow_phase { 6_000 } else { 0 };
            let picked = t(s * 1_000 + wait_ms);
            let queued = t(s * 1_000);
            let request_id = s;
            fleet.record(
                queued,
                Event::JobQueued {
                    request_id,
                    at: queued,
                },
            );
            let ev = Event::JobPickedUp {
                agent: agent as u32,
                request_id,
                at: picked,
            };
            fleet.record(picked, ev);
            fleet.move_to(agent, AgentState::Busy, picked);
            let result = if s % 10 == 0 {
                TaskResult::Failed
            } else {
                TaskResult::Succeeded
            };
            let end = picked + Duration::from_secs(15);
            let ev = Event::JobFinished {
                agent: agent as u32,
                request_id,
                result,
                at: end,
            };
            fleet.record(end, ev);
            fleet.move_to(agent, AgentState::Idle, end);
        }
    }
    let run = RunMeta {
        scenario: "html-report-sample".to_string(),
        seed: 1,
        duration_s: 120.0,
        wall_s: 121.5,
        ..RunMeta::default()
    };
    let mut rec = Recorder::new();
    rec.set_fleet_size(AGENTS as u64);
    // A stable sort keeps each agent's same-instant state changes in their causal order.
    fleet.events.sort_by_key(|(at, _)| *at);
    for (_, ev) in &fleet.events {
        rec.record(ev);
    }
    let mut report = Report::from_recorder(&rec, run);
    let limits = [
        thresholds::parse("job_pickup.p99", "< 5s").expect("threshold"),
        thresholds::parse("errors.rate", "< 5%").expect("threshold"),
    ];
    report.evaluate_thresholds(&limits);
    report
}

fn browser_available() -> bool {
    Command::new(BROWSER)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_browser(extra: &[&str], url: &str) -> Output {
    Command::new(BROWSER)
        .args(FLAGS)
        .args(extra)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("{BROWSER} did not run: {e}"))
}

/// Load `page` with `#selftest`, check the browser logged no error, and return what the page's
/// self test wrote: chart and series counts, hover, sync and zoom results.
fn self_test(page: &Path) -> Value {
    let url = format!("file://{}#selftest", page.display());
    let dump = run_browser(&["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dump.stdout);
    let log = String::from_utf8_lossy(&dump.stderr);
    assert!(dump.status.success(), "{BROWSER} failed: {log}");
    for bad in ["Uncaught", "net::ERR_", "CONSOLE"] {
        assert!(!log.contains(bad), "browser reported {bad}: {log}");
    }
    let json = dom
        .rsplit_once("<pre id=\"selftest\">")
        .and_then(|(_, rest)| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("the page wrote no self test: {dom}"));
    let json = json
        .replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("self test {json}: {e}"))
}

/// Check the self test: every chart a uPlot with the expected series and points, hovering
/// the first time chart showed values on it and moved every time chart's cursor, and a drag
/// zoomed it and every other time chart to the same range.
fn check_charts(result: &Value, series: &[u64]) {
    let counts: Vec<u64> = result["series"]
        .as_array()
        .expect("series counts")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(counts, series, "series per chart: {result}");
    let points = result["points"].as_array().expect("points");
    assert!(
        points.iter().all(|p| p.as_u64().is_some_and(|n| n >= 2)),
        "every chart has data: {result}"
    );
    assert_eq!(result["hover"], true, "hover shows values: {result}");
    assert_eq!(
        result["synced"], true,
        "every time chart follows the cursor: {result}"
    );
    assert_eq!(
        result["zoomed"], true,
        "a drag zooms every time chart: {result}"
    );
}

/// Save a screenshot of `page` to `dir/name` and to docs/img/`name` (the README shows it).
fn screenshot(page: &Path, dir: &Path, name: &str, height: u32) {
    let url = format!("file://{}", page.display());
    let shot = dir.join(name);
    let shot_arg = format!("--screenshot={}", shot.display());
    let size = format!("--window-size=1140,{height}");
    let out = run_browser(&[&shot_arg, &size], &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // A blank page of this size compresses to a few KB; charts and tables make it far larger.
    assert!(
        png.len() > 40_000,
        "screenshot too small to hold charts: {} bytes",
        png.len()
    );
    let readme_shot = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/img")
        .join(name);
    std::fs::write(&readme_shot, &png).expect("save the screenshot under docs/img");
}

/// Whether the browser is there; without it, skip (fail under CI, which installs it).
fn have_browser() -> bool {
    if browser_available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{BROWSER} is missing in CI (.ci/run installs chromium-headless-shell)"
    );
    println!("SKIPPED: {BROWSER} is not installed (apt-get install chromium-headless-shell)");
    false
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

// Goal: the report renders in a real browser offline, every chart is drawn with its series,
// hover and zoom work (cursors and ranges shared by the time charts), nothing errors, and the
// screenshot the README shows is produced by this very test.
#[test]
fn html_report_draws_its_charts_in_headless_chromium() {
    if !have_browser() {
        return;
    }
    let dir = scratch("html");
    let page = dir.join("report.html");
    std::fs::write(&page, render_html(&sample_report(1))).expect("write report");
    let result = self_test(&page);
    assert_eq!(result["charts"], REPORT_SERIES.len(), "{result}");
    check_charts(&result, &REPORT_SERIES);
    screenshot(&page, &dir, "report.png", 2_500);
    let _ = std::fs::remove_dir_all(&dir);
}

// Goal: the comparison page draws the baseline beside the current run in a real browser, with
// the regressed metric's row and chart marked, hover and zoom working; its screenshot is the
// README's.
#[test]
fn compare_page_draws_baseline_and_current_in_headless_chromium() {
    if !have_browser() {
        return;
    }
    let dir = scratch("compare");
    let (base, cur) = (sample_report(1), sample_report(3));
    let cmp = compare(&base, &cur, 0.1);
    assert!(!cmp.passed, "feed_post 3× slower regresses");
    let page = dir.join("compare.html");
    std::fs::write(&page, render_compare_html(&base, &cur, &cmp)).expect("write page");
    let html = std::fs::read_to_string(&page).expect("page");
    assert!(html.contains("<tr class=\"regressed\" data-metric=\"operations.feed_post.p99\">"));
    assert!(html.contains("<h3>feed_post<span class=\"badge\">regressed</span></h3>"));
    let result = self_test(&page);
    check_charts(&result, &COMPARE_SERIES);
    screenshot(&page, &dir, "compare.png", 1_500);
    let _ = std::fs::remove_dir_all(&dir);
}

// Goal: the capacity plan's page (curves against the varied value, interval bands, the
// threshold line) draws in a real browser offline with hover and zoom on its value charts;
// its screenshot is the README's.
#[test]
fn plan_page_draws_its_capacity_curves_in_headless_chromium() {
    use fleetsim_metrics::curve::{Curve, CurveBand, CurvePage, CurveUnit, render_curve_page};
    if !have_browser() {
        return;
    }
    let x: Vec<f64> = vec![1000.0, 1250.0, 1500.0, 1750.0, 2000.0];
    let band = |label: &str, mean: &[f64], half: f64| CurveBand {
        label: label.into(),
        mean: mean.iter().map(|&m| Some(m)).collect(),
        lo: mean.iter().map(|&m| Some((m - half).max(0.0))).collect(),
        hi: mean.iter().map(|&m| Some(m + half)).collect(),
    };
    let page = CurvePage {
        title: "fleetsim plan · fleet.agents".into(),
        lines: vec!["largest passing fleet.agents = 1500 (fails at 1750)".into()],
        x_name: "fleet.agents".into(),
        x: x.clone(),
        curves: vec![
            Curve {
                title: "Job pickup latency".into(),
                note: String::new(),
                unit: CurveUnit::Seconds,
                bands: vec![
                    band("pickup p50", &[0.1, 0.2, 0.4, 1.5, 4.0], 0.1),
                    band("pickup p99", &[0.5, 1.2, 3.1, 7.5, 16.0], 0.8),
                ],
                threshold: Some(("job_pickup.p99 < 5s".into(), 5.0)),
            },
            Curve {
                title: "Server station utilisation".into(),
                note: String::new(),
                unit: CurveUnit::Ratio,
                bands: vec![band("server", &[0.5, 0.62, 0.75, 0.88, 0.97], 0.02)],
                threshold: None,
            },
        ],
        table: vec![vec!["fleet.agents".into()], vec!["1000".into()]],
    };
    let dir = scratch("plan");
    let file = dir.join("plan.html");
    std::fs::write(&file, render_curve_page(&page)).expect("write page");
    let result = self_test(&file);
    // Pickup: two bands of three lines and the threshold; utilisation: one band.
    check_charts(&result, &[7, 3]);
    screenshot(&file, &dir, "plan.png", 900);
    let _ = std::fs::remove_dir_all(&dir);
}
