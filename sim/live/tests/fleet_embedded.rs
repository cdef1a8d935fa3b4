// The live fleet end to end against the embedded emulator: a handful of agents with real crypto
// and real sockets run synthetic jobs that log secrets for ~10 s. Proves that jobs succeed, that
// every protocol operation an agent performs shows up in the recorder, and that masking works —
// the emulator's leaked-secrets count stays 0 while jobs log secrets, and rises when masking is
// switched off. Timers are shortened so every periodic call happens within the run.

use std::future::pending;
use std::path::PathBuf;
use std::time::Duration;

use fleetsim_core::ops::Operation;
use fleetsim_live::fleet::{self, RunOptions, RunOutcome};

/// Where test keys are cached: shared by every fleet test and kept between runs.
fn key_dir() -> PathBuf {
    std::env::temp_dir().join("fleetsim-test-keys")
}

/// A small, busy scenario: 6 agents, 10 s, a job per second with secrets, logs, artifacts,
/// lock renewals and job-token rotation, and long polls held only 2 s so some end empty.
fn small_scenario(extra_overrides: &[&str]) -> fleetsim_scenario::Scenario {
    let text = format!(
        r#"
[run]
name = "fleet-embedded-test"
duration = "10s"
seed = 7

[fleet]
agents = 6
ramp_up = "1s"
distinct_keys = 2
key_cache_dir = "{keys}"
capabilities = {{ docker = "true" }}

[agent]
empty_poll_gap = "300ms"
keepalive_interval = "1s"
lock_renew_interval = "1s"
job_token_rotate_before = "2s"

[jobs]
rate_per_s = 1.5
arrival = "constant"
duration = {{ dist = "uniform", min = "2s", max = "3s" }}
steps = 2
log_lines_per_s = 20
secrets = 2
secret_lines = 3
artifact_bytes = "2KiB"
failure_rate = "0%"
demands = ["docker"]
token_ttl = "4s"

[server]
long_poll_hold = "2s"
"#,
        keys = key_dir().display()
    );
    let overrides: Vec<String> = extra_overrides.iter().map(|s| s.to_string()).collect();
    fleetsim_scenario::load_str("fleet-embedded-test.toml", &text, &overrides)
        .unwrap_or_else(|d| panic!("test scenario invalid: {d}"))
}

async fn run(overrides: &[&str]) -> RunOutcome {
    let scenario = small_scenario(overrides);
    fleet::run(&scenario, RunOptions::default(), pending())
        .await
        .expect("the run is carried out")
}

// Goal: a full run against the embedded emulator — jobs are queued, picked up and succeed, every
// operation of the agent's protocol (and the generator's queueing) is recorded, secrets in the
// logs are masked (emulator leaked_secrets == 0 while the agents did mask some), and agents end
// offline after deleting their sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_run_succeeds_and_records_every_operation() {
    let out = run(&[]).await;
    assert!(out.embedded && !out.interrupted, "{out:?}");
    let jobs = out.report.jobs.clone();
    assert!(jobs.queued >= 10, "jobs queued: {jobs:?}");
    assert!(jobs.succeeded >= 5, "jobs succeeded: {jobs:?}");
    // No job is meant to fail; jobs still running when the run ended are abandoned by their
    // agents on shutdown (at most one per agent).
    assert_eq!(jobs.failed, 0, "{jobs:?}");
    assert!(jobs.abandoned <= 6, "{jobs:?}");
    assert_eq!(
        jobs.started,
        jobs.succeeded + jobs.abandoned,
        "every picked-up job is accounted for: {jobs:?}"
    );
    assert!(
        out.report.job_pickup.latency_s.count >= 5,
        "{:?}",
        out.report.job_pickup
    );
    // Every queued job is accounted for: ended, finished on the emulator or still there.
    let account = out
        .jobs
        .clone()
        .expect("the embedded emulator lists its jobs");
    assert_eq!(account.lost, 0, "{account:?}");
    assert_eq!(jobs.lost, 0, "{jobs:?}");
    assert_eq!(account.queued, jobs.queued, "{account:?} vs {jobs:?}");
    assert_eq!(
        account.queued,
        account.ended + account.finished_on_target + account.in_flight,
        "{account:?}"
    );

    let seen: Vec<Operation> = out.recorder.operations_seen().collect();
    let expected = [
        Operation::ConnectionData,
        Operation::PoolLookup,
        Operation::AgentLookup,
        Operation::Register,
        Operation::AuthChallenge,
        Operation::TokenExchange,
        Operation::SessionCreate,
        Operation::SessionDelete,
        Operation::PollMessage,
        Operation::PollEmpty,
        Operation::KeepAlive,
        Operation::MessageAck,
        Operation::LockRenew,
        Operation::TimelineUpdate,
        Operation::FeedPost,
        Operation::LogCreate,
        Operation::LogAppend,
        Operation::AttachmentUpload,
        Operation::JobCompleted,
        Operation::TokenRotate,
        Operation::QueueJobs,
    ];
    let missing: Vec<_> = expected.iter().filter(|op| !seen.contains(op)).collect();
    assert!(
        missing.is_empty(),
        "operations never recorded: {missing:?} (seen {seen:?})"
    );

    let emulator = out.emulator.clone().expect("embedded emulator stats");
    assert_eq!(
        emulator.leaked_secrets, 0,
        "masked logs must not leak: {emulator:?}"
    );
    assert!(
        out.report.agents.secrets_masked > 0,
        "jobs logged secrets and agents masked them"
    );
    assert_eq!(
        emulator.sessions, 0,
        "every agent deleted its session at shutdown: {emulator:?}"
    );
    assert!(
        out.report.crypto.contains_key("agents"),
        "agent crypto is counted"
    );
    assert!(out.transport.connects >= 6, "{:?}", out.transport);
}

// Goal: jobs drawn as canceled are canceled through the emulator's admin route while they run;
// agents handle the JobCancellation and report them canceled, the report's canceled count
// matches the emulator's, and no job goes missing on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceled_jobs_are_canceled_on_the_emulator_and_counted() {
    let out = run(&["jobs.cancel_rate=0.5", "run.duration=\"12s\""]).await;
    let jobs = out.report.jobs.clone();
    let emulator = out.emulator.clone().expect("embedded emulator stats");
    let generator = out.generator;
    assert!(generator.cancels_sent > 0, "{generator:?}");
    assert!(jobs.canceled > 0, "{jobs:?} {generator:?}");
    assert_eq!(
        jobs.canceled, emulator.jobs_canceled,
        "report and emulator agree: {jobs:?} {emulator:?} {generator:?}"
    );
    assert_eq!(
        generator.cancel_errors, 0,
        "every cancel call is answered: {generator:?}"
    );
    let account = out.jobs.expect("the embedded emulator lists its jobs");
    assert_eq!((account.lost, jobs.lost), (0, 0), "{account:?}");
}

// Goal: with masking switched off the same jobs leak their secrets into the logs, and the
// emulator's scanner counts them — so a zero above is proof, not blindness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_secrets_are_detected_by_the_emulator() {
    let out = run(&["agent.mask_secrets=false", "run.duration=\"6s\""]).await;
    let emulator = out.emulator.expect("embedded emulator stats");
    assert!(
        emulator.leaked_secrets > 0,
        "unmasked secrets must be detected: {emulator:?}"
    );
}

// Goal: Ctrl-C (the shutdown future) stops a run early and gracefully, and the outcome still
// carries what was measured up to then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_future_stops_early_and_keeps_measurements() {
    let scenario = small_scenario(&["run.duration=\"60s\""]);
    let started = std::time::Instant::now();
    let out = fleet::run(
        &scenario,
        RunOptions::default(),
        tokio::time::sleep(Duration::from_secs(4)),
    )
    .await
    .expect("the run is carried out");
    assert!(out.interrupted);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped long before the 60 s length"
    );
    assert!(
        out.recorder.requests() > 0,
        "what ran before Ctrl-C is measured"
    );
    assert_eq!(
        out.emulator.expect("stats").sessions,
        0,
        "sessions deleted on the way out"
    );
}

// Goal: the shipped `scenarios/pipelines.toml` runs end to end against the embedded emulator:
// runs are queued through the Pipelines Runs API and followed to their result, their jobs are
// served, pickups come from the server's times, and the counts equal the virtual-time run of
// the same scenario (one workload machine, one seed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_scenario_runs_end_to_end_like_its_virtual_twin() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scenarios/pipelines.toml"
    );
    let keys = format!("fleet.key_cache_dir=\"{}\"", key_dir().display());
    let sets = ["run.duration=\"25s\"".to_string(), keys];
    let scenario = fleetsim_scenario::load(path, &sets).unwrap_or_else(|d| panic!("{d}"));
    let out = fleet::run(&scenario, RunOptions::default(), pending())
        .await
        .expect("the run is carried out");
    let runs = out.report.runs.expect("a runs section");
    assert!(runs.queued >= 5, "{runs:?}");
    assert!(
        runs.completed > 0 && runs.completed == runs.succeeded + runs.canceled,
        "{runs:?}"
    );
    assert_eq!(
        out.report.job_pickup.unmatched, 0,
        "{:?}",
        out.report.job_pickup
    );
    assert!(
        out.report.job_pickup.server_clock > 0,
        "{:?}",
        out.report.job_pickup
    );
    let twin = fleetsim_des::simulate(&scenario, &fleetsim_des::SimOptions::default())
        .expect("virtual run");
    let virtual_runs = twin.report.runs.expect("a runs section");
    assert_eq!(
        runs.queued, virtual_runs.queued,
        "live {runs:?} virtual {virtual_runs:?}"
    );
    let diff = out.report.jobs.started.abs_diff(twin.report.jobs.started);
    assert!(
        diff <= 2,
        "live {:?} virtual {:?}",
        out.report.jobs,
        twin.report.jobs
    );
}
