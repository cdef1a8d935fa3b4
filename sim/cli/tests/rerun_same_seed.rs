//! `fleetsim run --target` twice with the same seed against one `fleetsim serve`: the second
//! run must not be refused as a replay. The server remembers each client assertion's `jti`
//! until it expires (plus skew), and a live run salts its jtis from the OS RNG, so a re-run
//! draws new ones while everything else the seed decides stays as it was.

use std::path::{Path, PathBuf};

mod support;

use support::{BIN, Serve, scratch, text};

const PAT: &str = "rerun-same-seed-pat";

/// 2 agents named `{prefix}N` against `url`, seed 11, short jobs; passes only if jobs finished.
fn scenario(dir: &Path, prefix: &str, url: &str) -> PathBuf {
    let path = dir.join(format!("{prefix}.toml"));
    let body = format!(
        r#"[run]
duration = "4s"
seed = 11

[fleet]
agents = 2
name_prefix = "{prefix}-"

[target]
url = "{url}"
pat_env = "RERUN_TEST_PAT"

[jobs]
source = "emulator"
rate_per_s = 2.0
duration = {{ dist = "constant", value = "300ms" }}

[thresholds]
"jobs.succeeded" = "> 0"
"#
    );
    std::fs::write(&path, body).expect("write scenario");
    path
}

// Goal: the same seed run twice against one server succeeds both times (before, the second
// run's agents drew the first run's jtis, every token exchange was refused as a replay, and the
// run failed without a token).
#[test]
fn the_same_seed_runs_twice_against_one_server() {
    let dir = scratch("rerun", "same-seed");
    let serve = Serve::start(PAT);
    for prefix in ["first", "second"] {
        let path = scenario(&dir, prefix, &serve.url);
        let out = std::process::Command::new(BIN)
            .arg("run")
            .arg(&path)
            .arg("--quiet")
            .env("RERUN_TEST_PAT", PAT)
            .output()
            .expect("fleetsim run");
        assert_eq!(out.status.code(), Some(0), "{prefix} run: {}", text(&out));
    }
}
