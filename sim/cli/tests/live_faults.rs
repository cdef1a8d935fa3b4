//! `[[faults]]` in live runs (`fleetsim run`), one test per kind, each a short run of the real
//! binary against its embedded emulator asserting the fault's effect in the report; and the
//! refusals: what a run cannot apply stops it at start with exit 2, never runs without it.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{Serve, fleetsim, scratch, text};

/// A small live scenario: `agents` agents, jobs at 2/s, short agent back-offs and poll gaps so a
/// run of a few seconds shows recovery, and `faults` (TOML `[[faults]]` tables) appended.
fn scenario(dir: &Path, agents: u32, duration_s: u32, faults: &str) -> PathBuf {
    let path = dir.join("faults.toml");
    let body = format!(
        r#"[run]
name = "live-faults"
duration = "{duration_s}s"
seed = 11

[fleet]
agents = {agents}
ramp_up = "500ms"

[agent]
error_backoff_first = {{ dist = "constant", value = "300ms" }}
error_backoff_later = {{ dist = "constant", value = "300ms" }}
session_retry = "500ms"
empty_poll_gap = {{ dist = "constant", value = "100ms" }}

[jobs]
rate_per_s = 2.0
duration = {{ dist = "constant", value = "200ms" }}

[server]
long_poll_hold = "1s"
{faults}"#
    );
    std::fs::write(&path, body).expect("write scenario");
    path
}

/// Run `scenario` live with extra `args`; the report when it exited 0.
fn run(dir: &Path, scenario: &Path, args: &[&str]) -> Value {
    let out_json = dir.join("report.json");
    let mut all = vec![
        "run",
        scenario.to_str().unwrap(),
        "--quiet",
        "--out",
        out_json.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = fleetsim(&all);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_str(&std::fs::read_to_string(out_json).expect("report")).expect("json")
}

/// The report's one fault of `kind`.
fn fault<'a>(report: &'a Value, kind: &str) -> &'a Value {
    let faults = report["faults"].as_array().expect("a faults list");
    let mut of_kind = faults.iter().filter(|f| f["kind"] == kind);
    let f = of_kind
        .next()
        .unwrap_or_else(|| panic!("no {kind} in {faults:?}"));
    assert!(of_kind.next().is_none(), "one {kind}: {faults:?}");
    f
}

/// Calls of `op` in the report (0 when never called).
fn calls(report: &Value, op: &str) -> u64 {
    report["operations"][op]["count"].as_u64().unwrap_or(0)
}

/// Jobs picked up in the report's seconds `from..` (run time).
fn started_from(report: &Value, from_s: u64) -> u64 {
    report["timeseries"]
        .as_array()
        .expect("timeseries")
        .iter()
        .filter(|p| p["t_s"].as_u64().unwrap() >= from_s)
        .map(|p| p["jobs_started"].as_u64().unwrap())
        .sum()
}

// Goal: a crash with a duration kills the chosen agents (no goodbye) and brings them back after
// it as new incarnations that register with --replace; jobs run again afterwards and none is
// lost.
#[test]
fn agent_crash_kills_and_replaces_the_chosen_agents() {
    let dir = scratch("live-faults", "crash");
    let s = scenario(
        &dir,
        3,
        8,
        "\n[[faults]]\nkind = \"agent_crash\"\nat = \"2s\"\nduration = \"2s\"\nagents = [0, 2]\n",
    );
    let report = run(&dir, &s, &[]);
    let f = fault(&report, "agent_crash");
    assert_eq!(f["agents"], 2, "{f}");
    assert!((f["start_s"].as_f64().unwrap() - 2.0).abs() < 0.5, "{f}");
    assert!((f["end_s"].as_f64().unwrap() - 4.0).abs() < 0.5, "{f}");
    // Both crashed agents came back registering with --replace (the replace call of the
    // real agent's configure --replace), the untouched one did not.
    assert_eq!(
        calls(&report, "replace_agent"),
        2,
        "{}",
        report["operations"]
    );
    assert!(started_from(&report, 5) > 0, "jobs ran after the crash");
    assert_eq!(report["jobs"]["lost"], 0);
}

// Goal: a partition cuts the chosen agent off — its calls fail to connect during the window —
// and it recovers after: calls succeed again and jobs run on.
#[test]
fn partition_fails_connects_in_the_window_and_recovers_after() {
    let dir = scratch("live-faults", "partition");
    let s = scenario(
        &dir,
        2,
        8,
        "\n[[faults]]\nkind = \"partition\"\nat = \"2s\"\nduration = \"2s\"\nagents = [1]\n",
    );
    let report = run(&dir, &s, &[]);
    let f = fault(&report, "partition");
    assert_eq!(f["agents"], 1, "{f}");
    let connect = report["errors"]["by_kind"]["connect"].as_u64().unwrap_or(0);
    assert!(
        connect > 0,
        "connect errors in the window: {}",
        report["errors"]
    );
    // Errors only inside the window (and the back-off just after it).
    let late_errors: u64 = report["timeseries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["t_s"].as_u64().unwrap() >= 6)
        .map(|p| p["errors"].as_u64().unwrap())
        .sum();
    assert_eq!(late_errors, 0, "{}", report["timeseries"]);
    assert!(started_from(&report, 5) > 0, "jobs ran after the partition");
    assert_eq!(report["jobs"]["lost"], 0);
}

// Goal: a stall stops the emulator (a child process, SIGSTOP) for its duration: jobs queued
// meanwhile wait, so the pickup latency's maximum spans most of the stall; after SIGCONT the
// fleet works on (jobs picked up after it, none lost).
#[test]
fn server_stall_stops_the_emulator_and_pickups_wait_it_out() {
    let dir = scratch("live-faults", "stall");
    // 7 s after the stall: on a loaded machine (the whole suite on 2 cores) the first pickups
    // after SIGCONT can take a few seconds; a 9 s run made that a race.
    let s = scenario(
        &dir,
        2,
        12,
        "\n[[faults]]\nkind = \"server_stall\"\nat = \"2s\"\nduration = \"3s\"\n",
    );
    let report = run(&dir, &s, &[]);
    let f = fault(&report, "server_stall");
    assert!((f["end_s"].as_f64().unwrap() - 5.0).abs() < 0.5, "{f}");
    let max = report["job_pickup"]["latency_s"]["max"].as_f64().unwrap();
    assert!(max >= 2.0, "pickups waited out the stall: max {max}");
    assert!(started_from(&report, 6) > 0, "jobs ran after the stall");
    assert_eq!(report["jobs"]["lost"], 0);
}

// Goal: a token-expiry storm expires every agent's listener token on the emulator: each agent
// meets 401 once and exchanges a new assertion for a new token (two exchanges per agent in
// the run, one at start), and jobs run on.
#[test]
fn token_expiry_storm_makes_every_agent_fetch_a_new_token() {
    let dir = scratch("live-faults", "storm");
    let s = scenario(
        &dir,
        3,
        7,
        "\n[[faults]]\nkind = \"token_expiry_storm\"\nat = \"2s\"\n",
    );
    let report = run(&dir, &s, &[]);
    let f = fault(&report, "token_expiry_storm");
    assert_eq!(f["agents"], 3, "{f}");
    assert_eq!(
        calls(&report, "token_exchange"),
        6,
        "{}",
        report["operations"]
    );
    assert_eq!(
        report["errors"]["by_kind"]["unauthorized"], 3,
        "{}",
        report["errors"]
    );
    assert!(started_from(&report, 4) > 0, "jobs ran after the storm");
    assert_eq!(report["jobs"]["lost"], 0);
}

// Goal: against a target fleetsim does not control, faults that need the emulator are refused
// at start (exit 2) with the fault and the reason named; nothing runs.
#[test]
fn foreign_target_refuses_server_faults() {
    let dir = scratch("live-faults", "foreign");
    let serve = Serve::start("faults-pat");
    for kind in ["server_stall", "token_expiry_storm"] {
        let duration = if kind == "server_stall" {
            "duration = \"1s\"\n"
        } else {
            ""
        };
        let s = scenario(
            &dir,
            1,
            4,
            &format!("\n[[faults]]\nkind = \"{kind}\"\nat = \"1s\"\n{duration}"),
        );
        let out = std::process::Command::new(support::BIN)
            .args([
                "run",
                s.to_str().unwrap(),
                "--quiet",
                "--target",
                &serve.url,
            ])
            .env("FLEETSIM_PAT", "faults-pat")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kind}: {}", text(&out));
        assert!(stderr.contains(&format!("{kind} at 1s")), "{stderr}");
        assert!(stderr.contains("does not control"), "{stderr}");
    }
}

// Goal: a run split over processes refuses server faults at start (exit 2), saying each shard
// would apply them again (a `--shard` run needs a `--target`, refused as foreign above).
#[test]
fn split_runs_refuse_server_faults() {
    let dir = scratch("live-faults", "processes");
    let s = scenario(
        &dir,
        2,
        4,
        "\n[[faults]]\nkind = \"server_stall\"\nat = \"1s\"\nduration = \"1s\"\n",
    );
    let out = fleetsim(&["run", s.to_str().unwrap(), "--quiet", "--processes", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr.contains("server_stall at 1s"), "{stderr}");
    assert!(stderr.contains("split over 2 processes"), "{stderr}");
}

// Goal: agent faults are chosen by agent index, so a run split over processes applies them in
// each shard to its own agents, and the merged report lists each fault once with every
// shard's agents counted.
#[test]
fn split_runs_apply_agent_faults_per_shard_and_merge_them() {
    let dir = scratch("live-faults", "processes-crash");
    let s = scenario(
        &dir,
        2,
        6,
        "\n[[faults]]\nkind = \"agent_crash\"\nat = \"2s\"\nduration = \"1s\"\nagents = [0, 1]\n",
    );
    let report = run(&dir, &s, &["--processes", "2"]);
    let f = fault(&report, "agent_crash");
    assert_eq!(f["agents"], 2, "one fault, both shards' agents: {f}");
    assert_eq!(
        calls(&report, "replace_agent"),
        2,
        "{}",
        report["operations"]
    );
}

/// The emulator's process: the one child of the run's process (`fleetsim run` starts its
/// emulator as a child for a scenario with server faults), waited for up to 10 s.
fn emulator_pid(run: u32) -> u32 {
    let children = format!("/proc/{run}/task/{run}/children");
    for _ in 0..100 {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next() {
            return pid.parse().expect("a pid");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the run started no emulator process");
}

// Goal: a server restart kills the child emulator (SIGKILL) under load and starts it again on
// its port with its state dir: no job is lost or run twice, every agent is back online
// afterwards (new sessions, tokens re-minted as needed), jobs run on, and the emulator serving
// at the end is a new process.
#[test]
fn server_restart_loses_nothing_and_every_agent_comes_back() {
    let dir = scratch("live-faults", "restart");
    let s = scenario(
        &dir,
        3,
        12,
        "\n[[faults]]\nkind = \"server_restart\"\nat = \"3s\"\nduration = \"1s\"\n",
    );
    let out_json = dir.join("report.json");
    let child = std::process::Command::new(support::BIN)
        .args(["run", s.to_str().unwrap(), "--out"])
        .arg(&out_json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let first = emulator_pid(child.id());
    let out = child.wait_with_output().expect("run ends");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: u32 = stdout
        .split("embedded emulator in child process ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no emulator process in the summary: {stdout}"));
    assert_ne!(
        first, last,
        "a new emulator process serves after the restart"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out_json).expect("report")).expect("json");
    let f = fault(&report, "server_restart");
    let down = f["end_s"].as_f64().unwrap() - f["start_s"].as_f64().unwrap();
    assert!(down >= 1.0, "down for its duration at least: {f}");
    let jobs = &report["jobs"];
    assert_eq!(jobs["lost"], 0, "{jobs}");
    // Run twice: a second pickup of one job finds no queued half (unmatched), and more jobs
    // start than were queued.
    assert_eq!(
        report["job_pickup"]["unmatched"], 0,
        "{}",
        report["job_pickup"]
    );
    assert!(
        jobs["started"].as_u64() <= jobs["queued"].as_u64(),
        "{jobs}"
    );
    assert!(started_from(&report, 6) > 0, "jobs ran after the restart");
    // Every agent online (idle or busy, none offline or registering) in the run's last
    // seconds.
    let series = report["timeseries"].as_array().unwrap();
    for p in series
        .iter()
        .filter(|p| (8..11).contains(&p["t_s"].as_u64().unwrap()))
    {
        let a = &p["agents"];
        assert_eq!(a[1].as_u64().unwrap() + a[2].as_u64().unwrap(), 3, "{p}");
    }
}
