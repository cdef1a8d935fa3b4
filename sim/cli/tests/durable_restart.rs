//! `fleetsim serve --state-dir` killed with SIGKILL under a running fleet and started again on
//! the same address: the fleet's run finishes with no job lost and none run twice, and every
//! agent comes back online (a new session each, as the real agent does after a server restart).
//! Fails without durable state: the restarted emulator knows no agent, no job and no token.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Serve, free_port, get, scratch};

const PAT: &str = "durable-restart-pat";
const AGENTS: u64 = 4;

fn scenario(dir: &Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("restart.toml");
    let body = format!(
        r#"[run]
name = "restart"
duration = "20s"
seed = 3

[fleet]
agents = {AGENTS}
name_prefix = "restart-"

[target]
url = "{url}"
pat_env = "RESTART_TEST_PAT"

# The real agent waits 15-30 s after a failed call; the test waits a second so the downtime
# fits in a short run.
[agent]
error_backoff_first = {{ dist = "uniform", min = "500ms", max = "1s" }}
session_retry = "1s"

[jobs]
source = "emulator"
rate_per_s = 3.0
duration = {{ dist = "constant", value = "1s" }}
log_lines_per_s = 5
"#
    );
    std::fs::write(&path, body).expect("write scenario");
    path
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The emulator's counters (`GET /_apis/fleetsim/stats`).
fn stats(url: &str) -> serde_json::Value {
    let (status, body) = get(url, "/_apis/fleetsim/stats", PAT);
    assert_eq!(status, 200, "{body}");
    json(&body)
}

/// Poll the counters until `done` holds; panics with the last reading after `within`.
fn wait_for(url: &str, within: Duration, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let now = stats(url);
        if done(&now) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}: {now}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// Goal: kill -9 of the emulator mid-run and a restart on the same port with the same state
// dir lose no job, run none twice, and bring every agent back online.
#[test]
fn a_killed_emulator_restarts_with_its_state_and_the_run_loses_nothing() {
    let dir = scratch("durable", "restart");
    let state = dir.join("state");
    let addr = format!("127.0.0.1:{}", free_port());
    let args = [
        "--listen",
        addr.as_str(),
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--seed",
        "9",
    ];
    let first = Serve::start_with(PAT, &args);
    let url = first.url.clone();
    let out = dir.join("report.json");
    let run = Command::new(BIN)
        .arg("run")
        .arg(scenario(&dir, &url))
        .args(["--quiet", "--out"])
        .arg(&out)
        .env("RESTART_TEST_PAT", PAT)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fleetsim run starts");

    // Mid-run: agents online, jobs finished and others running.
    wait_for(&url, Duration::from_secs(60), "jobs completed", |s| {
        s["jobsCompleted"].as_u64() >= Some(3) && s["agentsOnline"].as_u64() == Some(AGENTS)
    });
    let before = stats(&url);
    drop(first); // SIGKILL
    std::thread::sleep(Duration::from_secs(1));
    let second = Serve::start_with(PAT, &args);
    assert_eq!(second.url, url, "same address");
    let after = stats(&url);
    assert_eq!(after["agents"], before["agents"], "registrations kept");
    assert!(
        after["jobsCompleted"].as_u64() >= before["jobsCompleted"].as_u64(),
        "finished jobs kept: {before} then {after}"
    );
    // Every agent hears its session expired and opens a new one.
    wait_for(&url, Duration::from_secs(30), "agents back online", |s| {
        s["agentsOnline"].as_u64() == Some(AGENTS)
    });

    let output = run.wait_with_output().expect("run ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report = json(&std::fs::read_to_string(&out).expect("report written"));
    let jobs = &report["jobs"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(u64::MAX);
    assert_eq!(n(&jobs["lost"]), 0, "no job lost: {jobs}");
    assert_eq!(n(&jobs["failed"]), 0, "{jobs}");
    // Every start ended once: succeeded, or abandoned because the run ended under it, and
    // those are exactly the jobs the emulator still has running. A job run twice would add a
    // start whose agent lost it mid-run (abandoned, yet not running at the end).
    let (status, body) = get(&url, "/_apis/distributedtask/pools/1/jobrequests", PAT);
    assert_eq!(status, 200, "{body}");
    let list = json(&body);
    let in_state = |want: &[&str]| {
        list["value"]
            .as_array()
            .expect("job list")
            .iter()
            .filter(|j| want.contains(&j["state"].as_str().unwrap_or("")))
            .count() as u64
    };
    assert_eq!(
        n(&jobs["started"]),
        n(&jobs["succeeded"]) + n(&jobs["abandoned"]),
        "{jobs}"
    );
    assert_eq!(
        n(&jobs["abandoned"]),
        in_state(&["running", "canceling"]),
        "{jobs}"
    );
    // The state dir was fresh: every completion the emulator counts is one of this run's.
    assert_eq!(in_state(&["completed"]), n(&jobs["succeeded"]), "{jobs}");
    assert!(n(&jobs["succeeded"]) > before["jobsCompleted"].as_u64().unwrap_or(0));
    drop(second);
}

// Goal: a state dir written with another seed is refused at start (exit 2) with the fix, and
// is left as it was: the right seed still opens it.
#[test]
fn a_state_dir_of_another_seed_is_refused() {
    let dir = scratch("durable", "seed");
    let state = dir.join("state");
    let state = state.to_str().expect("utf-8 path");
    let first = Serve::start_with(PAT, &["--listen", "127.0.0.1:0", "--state-dir", state]);
    drop(first);
    let serve = |seed: &str| {
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir", state])
            .args(["--seed", seed])
            .env("FLEETSIM_PAT", PAT)
            .output()
            .expect("fleetsim serve runs")
    };
    let refused = serve("5");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("seed 1") && stderr.contains("--seed 1"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("seed 5").count(), 1, "said once: {stderr}");
    let again = Serve::start_with(PAT, &["--listen", "127.0.0.1:0", "--state-dir", state]);
    assert_eq!(stats(&again.url)["agents"], 0);
}
