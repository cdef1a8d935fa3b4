// `fleetsim run --processes N`: one scenario as N shard processes of the binary against the
// parent's emulator, started together and judged on one merged report. Proves the merged run
// queues exactly the jobs one process queues (the arrival sequence is the seed's), finishes
// about as many, loses none, runs the scenario's fleet, carries histograms, and that the
// scenario's thresholds on the merged report decide the exit code; and that impossible
// `--processes` values are refused with exit 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A fresh directory for this test's files.
fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-procs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small fleet with a few jobs a second, arriving at constant spacing so the count queued
/// in the run's length is the seed's and not the scheduler's; `threshold` is added as is.
fn scenario(dir: &Path, threshold: &str) -> PathBuf {
    let keys = std::env::temp_dir().join("fleetsim-test-keys");
    let path = dir.join("procs.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[run]
name = "procs"
duration = "20s"
seed = 7

[fleet]
agents = 16
ramp_up = "2s"
distinct_keys = 2
key_cache_dir = "{keys}"

[jobs]
rate_per_s = 2.0
arrival = "constant"
duration = {{ dist = "uniform", min = "1s", max = "2s" }}

[server]
long_poll_hold = "2s"

[thresholds]
"jobs.lost" = "== 0"
{threshold}
"#,
            keys = keys.display()
        ),
    )
    .unwrap();
    path
}

fn fleetsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn count(report: &Value, path: &[&str]) -> u64 {
    let mut v = report;
    for key in path {
        v = &v[*key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{} is a count in {report}", path.join(".")))
}

// Goal: two processes queue exactly the jobs one process queues for the same scenario and seed,
// start and finish about as many, lose none, and their merged report holds the whole fleet,
// histograms and a passing verdict (exit 0).
#[test]
fn two_processes_queue_the_same_jobs_as_one() {
    let dir = work_dir("same");
    let scenario = scenario(&dir, "");
    let s = scenario.to_str().unwrap();
    let one = dir.join("one.json");
    let two = dir.join("two.json");
    let single = fleetsim(&["run", s, "--quiet", "--out", one.to_str().unwrap()]);
    assert!(single.status.success(), "one process: {}", text(&single));
    let split = fleetsim(&[
        "run",
        s,
        "--processes",
        "2",
        "--quiet",
        "--out",
        two.to_str().unwrap(),
    ]);
    assert!(split.status.success(), "two processes: {}", text(&split));
    assert!(
        String::from_utf8_lossy(&split.stdout).contains("report →"),
        "{}",
        text(&split)
    );

    let (one, two) = (read_json(&one), read_json(&two));
    let queued = count(&one, &["jobs", "queued"]);
    assert!(queued >= 30, "the one-process run queued {queued} jobs");
    assert_eq!(
        count(&two, &["jobs", "queued"]),
        queued,
        "the arrival sequence is the seed's"
    );
    for key in ["started", "succeeded"] {
        let (a, b) = (count(&one, &["jobs", key]), count(&two, &["jobs", key]));
        assert!(
            a.abs_diff(b) <= 3,
            "jobs.{key}: one process {a}, two processes {b}"
        );
    }
    assert_eq!(count(&two, &["jobs", "lost"]), 0);
    let fleet: u64 = two["agents"]["by_state"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(fleet, 16, "the whole fleet: {}", two["agents"]);
    assert!(count(&two, &["job_pickup", "latency_s", "count"]) > 0);
    assert!(
        two["histograms"]["job_pickup"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "the merged report carries its histograms"
    );
    assert!(two["run"]["shard"].is_null(), "one run, not a shard");
    assert_eq!(two["run"]["scenario_digest"], one["run"]["scenario_digest"]);
    assert!(
        two["emulator"]["agents"].as_u64() == Some(16),
        "the emulator section is the parent's one reading: {}",
        two["emulator"]
    );
    assert_eq!(two["thresholds"][0]["passed"], Value::Bool(true));
}

// Goal: the scenario's thresholds are judged on the merged report: one that cannot pass makes
// the whole run exit 1 (not the shards' own verdicts, not 0).
#[test]
fn a_failing_threshold_on_the_merged_report_exits_1() {
    let dir = work_dir("fail");
    let scenario = scenario(&dir, "\"jobs.queued\" = \"> 100000\"");
    let out = fleetsim(&[
        "run",
        scenario.to_str().unwrap(),
        "--processes",
        "2",
        "--quiet",
        "--set",
        "run.duration=8s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 processes, merged from shard reports"),
        "{}",
        text(&out)
    );
}

// Goal: impossible process counts, and --processes with --shard, are usage errors (exit 2)
// that say what to write instead, before anything starts.
#[test]
fn impossible_process_counts_are_refused() {
    let dir = work_dir("usage");
    let scenario = scenario(&dir, "");
    let s = scenario.to_str().unwrap();
    let zero = fleetsim(&["run", s, "--processes", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", text(&zero));
    assert!(
        String::from_utf8_lossy(&zero.stderr).contains("--processes 0: give 1 to 16"),
        "{}",
        text(&zero)
    );
    let many = fleetsim(&["run", s, "--processes", "17"]);
    assert_eq!(many.status.code(), Some(2), "{}", text(&many));
    let both = fleetsim(&["run", s, "--processes", "2", "--shard", "0/2"]);
    assert_eq!(both.status.code(), Some(2), "{}", text(&both));
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("--shard"),
        "{}",
        text(&both)
    );
}
