//! `fleetsim run --target` against a `fleetsim serve` that served other runs before: the run
//! is judged on what changed during it, not on the target's lifetime totals, which the report
//! keeps apart (`emulator_lifetime`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;

use support::{BIN, Serve};

const PAT: &str = "target-gates-pat";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-gates-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// 2 agents of their own (named after the run) against `url`, jobs that print a secret on 2 lines each, masked or not.
fn scenario(dir: &Path, name: &str, url: &str, mask: bool, thresholds: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    // One seed for both runs: live runs salt their assertion ids (`jti`), so the second run's
    // are not replays of the first's (rerun_same_seed.rs proves it on its own).
    let body = format!(
        r#"[run]
name = "{name}"
duration = "4s"
seed = 5

[fleet]
agents = 2
name_prefix = "{name}-"

[target]
url = "{url}"
pat_env = "GATES_TEST_PAT"

[agent]
mask_secrets = {mask}

[jobs]
source = "emulator"
rate_per_s = 2.0
duration = {{ dist = "constant", value = "300ms" }}
log_lines_per_s = 10
secrets = 1
secret_lines = 2

[thresholds]
{thresholds}
"#
    );
    std::fs::write(&path, body).expect("write scenario");
    path
}

fn run(scenario: &Path, out: &Path) -> Output {
    Command::new(BIN)
        .arg("run")
        .arg(scenario)
        .args(["--quiet", "--out"])
        .arg(out)
        .env("GATES_TEST_PAT", PAT)
        .output()
        .expect("fleetsim run")
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written"))
        .expect("report is JSON")
}

// Goal: a run that leaks nothing passes `emulator.leaked_secrets == 0` against a target that
// holds leaks from an earlier run; its report counts 0 leaked during the run and keeps the
// target's lifetime total (the earlier leaks) apart. Fails when the gate judges the lifetime
// total (the clean run then exits 1).
#[test]
fn a_clean_run_passes_its_leak_gate_on_a_target_that_leaked_before() {
    let dir = scratch("leaks");
    let serve = Serve::start(PAT);

    let leaky = scenario(&dir, "leaky", &serve.url, false, "");
    let out = run(&leaky, &dir.join("leaky.json"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = report(&dir.join("leaky.json"))["emulator"]["leakedSecrets"]
        .as_u64()
        .expect("leaky run reads the emulator");
    assert!(before > 0, "the unmasked run leaked nothing");

    let gate = "\"emulator.leaked_secrets\" = \"== 0\"\n\"jobs.succeeded\" = \"> 0\"";
    let clean = scenario(&dir, "clean", &serve.url, true, gate);
    let out = run(&clean, &dir.join("clean.json"));
    let r = report(&dir.join("clean.json"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r["thresholds"]
    );
    assert_eq!(r["emulator"]["leakedSecrets"], 0);
    let lifetime = &r["emulator_lifetime"];
    assert_eq!(lifetime["start"]["leakedSecrets"].as_u64(), Some(before));
    assert_eq!(lifetime["end"]["leakedSecrets"].as_u64(), Some(before));
    let completed = |v: &serde_json::Value| v["jobsCompleted"].as_u64().unwrap_or(0);
    assert_eq!(
        completed(&r["emulator"]),
        completed(&lifetime["end"]) - completed(&lifetime["start"])
    );
}
