// `fleetsim run --emulator-process`: the embedded emulator runs as a child `fleetsim serve`
// (what `run` does by itself when a fleet's connections do not fit in the descriptor limit
// twice). Proves the child starts and serves the fleet, its counters come back through the
// admin API into the report, no job is lost, and the child is gone when the run is over.

use std::path::PathBuf;
use std::process::Command;

/// A fresh directory for this test's files.
fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-cli-child-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// Goal: a short run with the emulator in a child process completes, reports the child's
// counters (agents, leaked secrets), accounts for every job, and leaves no child behind.
#[test]
fn run_with_the_emulator_in_a_child_process() {
    let dir = work_dir();
    let keys = std::env::temp_dir().join("fleetsim-test-keys");
    let scenario = dir.join("child.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"
[run]
name = "child-emulator"
duration = "6s"

[fleet]
agents = 3
ramp_up = "1s"
distinct_keys = 1
key_cache_dir = "{keys}"

[jobs]
rate_per_s = 1.0
arrival = "constant"
duration = {{ dist = "uniform", min = "1s", max = "2s" }}
secrets = 1
secret_lines = 1
cancel_rate = 0.3

[server]
long_poll_hold = "2s"

[thresholds]
"jobs.lost" = "== 0"
"emulator.leaked_secrets" = "== 0"
"#,
            keys = keys.display()
        ),
    )
    .unwrap();
    let report = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .arg("run")
        .arg(&scenario)
        .arg("--emulator-process")
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let marker = "embedded emulator in child process ";
    let pid: u32 = stdout
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("the summary names the child: {stdout}"));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the emulator child {pid} was stopped and reaped"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        json["emulator"]["agents"], 3,
        "the child's counters: {}",
        json["emulator"]
    );
    assert_eq!(json["emulator"]["leakedSecrets"], 0);
    assert!(
        json["jobs"]["queued"].as_u64().unwrap() >= 3,
        "{}",
        json["jobs"]
    );
    assert_eq!(json["jobs"]["lost"], 0, "{}", json["jobs"]);
    let _ = std::fs::remove_dir_all(&dir);
}
