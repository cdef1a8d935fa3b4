//! The HTML report in a real browser: render a sample report, load it in headless Chromium
//! (`chromium-headless-shell`, observability.md §4) from a file URL, and check from the DOM
//! Chromium dumps that every chart drew (each SVG holds a non-empty line or bars) and that the
//! browser logged no script or load error; then save a screenshot for the README
//! (docs/img/report.png).
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
use fleetsim_metrics::{Recorder, Report, render_html, thresholds};

const BROWSER: &str = "chromium-headless-shell";
/// Charts the sample report draws: four over time and the pickup distribution.
const CHARTS: usize = 5;
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
/// run, a burst of throttled calls, and thresholds (one failing) to show.
fn sample_report() -> Report {
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
            let base_ms = if slow_phase { 180 } else { 20 };
            let outcome = if (80..84).contains(&s) && k < 3 {
                Outcome::Api(ErrorKind::Throttled)
            } else {
                Outcome::Ok
            };
            let op = if k % 2 == 0 {
                Operation::PollMessage
            } else {
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

/// The inner text of every `<svg …>…</svg>` in `dom`.
fn svgs(dom: &str) -> Vec<&str> {
    dom.split("<svg")
        .skip(1)
        .map(|rest| rest.split("</svg>").next().unwrap_or(""))
        .collect()
}

/// Whether one chart drew something: a polyline with at least two points or a bar with height.
fn drew(svg: &str) -> bool {
    let line = svg.split("points=\"").skip(1).any(|p| {
        p.split('"')
            .next()
            .is_some_and(|pts| pts.split_whitespace().count() >= 2)
    });
    let bar = svg.split("<rect").skip(1).any(|r| {
        r.split("height=\"")
            .nth(1)
            .and_then(|h| h.split('"').next()?.parse::<f64>().ok())
            .is_some_and(|h| h > 0.0)
    });
    line || bar
}

// Goal: the report renders in a real browser offline, every chart draws, nothing errors, and
// the screenshot the README shows is produced by this very test.
#[test]
fn html_report_draws_its_charts_in_headless_chromium() {
    if !browser_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{BROWSER} is missing in CI (.ci/run installs chromium-headless-shell)"
        );
        println!("SKIPPED: {BROWSER} is not installed (apt-get install chromium-headless-shell)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("fleetsim-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let page = dir.join("report.html");
    std::fs::write(&page, render_html(&sample_report())).expect("write report");
    let url = format!("file://{}", page.display());

    let dump = run_browser(&["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dump.stdout);
    let log = String::from_utf8_lossy(&dump.stderr);
    assert!(dump.status.success(), "{BROWSER} failed: {log}");
    assert!(
        dom.contains("html-report-sample") && dom.contains("</html>"),
        "{dom}"
    );
    let charts = svgs(&dom);
    assert_eq!(charts.len(), CHARTS, "charts in the DOM");
    for (i, svg) in charts.iter().enumerate() {
        assert!(drew(svg), "chart {i} drew nothing: {svg}");
    }
    for bad in ["Uncaught", "net::ERR_", "CONSOLE"] {
        assert!(!log.contains(bad), "browser reported {bad}: {log}");
    }

    let shot = dir.join("report.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    let out = run_browser(&[&shot_arg, "--window-size=960,2400"], &url);
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
    let readme_shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img/report.png");
    std::fs::write(&readme_shot, &png).expect("save docs/img/report.png");
    let _ = std::fs::remove_dir_all(&dir);
}
