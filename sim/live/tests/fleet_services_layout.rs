//! The live fleet against the embedded emulator in the layout of Azure DevOps Services: the
//! token service on another listener, the collection under `/org`, the plan hub on another
//! loopback host (`127.0.0.2`) and `expires_in` typed as a string. A fleet that follows the
//! registration's `authorizationUrl` and the job's `SystemVssConnection.url`, as the real agent
//! does, runs every job to completion with no error; one that posts tokens to
//! `{target}/_apis/oauth2/token` gets 404s and runs nothing.

use std::future::pending;
use std::path::PathBuf;

use fleetsim_live::fleet::{self, RunOptions};

/// Where test keys are cached: shared by every fleet test and kept between runs.
fn key_dir() -> PathBuf {
    std::env::temp_dir().join("fleetsim-test-keys")
}

fn scenario() -> fleetsim_scenario::Scenario {
    let text = format!(
        r#"
[run]
name = "fleet-services-layout"
duration = "8s"
seed = 11

[fleet]
agents = 3
ramp_up = "1s"
distinct_keys = 1
key_cache_dir = "{keys}"

[agent]
empty_poll_gap = "300ms"
lock_renew_interval = "1s"

[jobs]
rate_per_s = 1.0
arrival = "constant"
duration = {{ dist = "uniform", min = "500ms", max = "1s" }}
steps = 2
log_lines_per_s = 10
failure_rate = "0%"

[server]
long_poll_hold = "2s"

[server.layout]
token_listen = "127.0.0.1:0"
collection_path = "/org"
plan_listen = "127.0.0.2:0"
expires_in_as_string = true
"#,
        keys = key_dir().display()
    );
    fleetsim_scenario::load_str("fleet-services-layout.toml", &text, &[])
        .unwrap_or_else(|d| panic!("test scenario invalid: {d}"))
}

// Goal: against the Services layout every job the fleet picked up completes, tokens come from
// the token listener (the emulator issued them: the main listener cannot), plan-hub traffic
// reaches the plan host (jobs complete through it), and the run records no error at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_runs_every_job_against_the_services_layout() {
    let out = fleet::run(&scenario(), RunOptions::default(), pending())
        .await
        .expect("the run is carried out");
    assert!(out.target_url.ends_with("/org"), "{}", out.target_url);
    let emulator = out.emulator.clone().expect("embedded emulator counters");
    assert!(
        emulator.tokens_issued >= 3,
        "listener tokens come from the token listener: {emulator:?}; errors {:?}",
        out.report.errors
    );
    let jobs = out.report.jobs.clone();
    assert!(jobs.succeeded >= 3, "{jobs:?}");
    assert_eq!(jobs.failed, 0, "{jobs:?}");
    assert_eq!(
        jobs.started,
        jobs.succeeded + jobs.abandoned,
        "every picked-up job is accounted for: {jobs:?}"
    );
    assert_eq!(jobs.lost, 0, "{jobs:?}");
    assert_eq!(
        out.report.errors.count, 0,
        "no error anywhere: {:?}",
        out.report.errors
    );
}
