//! Whole virtual runs: the real agent and server state machines through the driver, the
//! network and the capacity model. Each test states its goal; fixtures are scenario text.

use fleetsim_des::{DesError, SimOptions, SimOutcome, simulate, simulate_observed};

/// A small fleet with jobs that carry secrets, logs and artifacts: every operation happens
/// within a minute of virtual time.
const SMALL: &str = r#"
[run]
duration = "60s"
seed = 7

[fleet]
agents = 12
ramp_up = "3s"

[jobs]
rate_per_s = 0.5
duration = { dist = "uniform", min = "5s", max = "15s" }
steps = 2
log_lines_per_s = 5
secrets = 2
secret_lines = 2
artifact_bytes = "4KiB"

[server]
long_poll_hold = "10s"
"#;

fn run(text: &str, sets: &[&str]) -> SimOutcome {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let scenario = fleetsim_scenario::load_str("test.toml", text, &sets).expect("valid scenario");
    simulate(&scenario, &SimOptions::default()).expect("run completes")
}

/// The report without the wall-clock parts, as JSON, for equality checks.
fn numbers(o: &SimOutcome) -> serde_json::Value {
    let mut v = serde_json::to_value(&o.report).expect("report serialises");
    v["run"]["wall_s"] = 0.into();
    v["engine"]["wall_s"] = 0.into();
    v["engine"]["events_per_s"] = 0.into();
    v
}

#[test]
fn a_small_fleet_runs_jobs_end_to_end_and_keeps_every_invariant() {
    // Goal: agents register, poll, pick up and finish jobs through the real cores; nothing is
    // lost, leased twice or leaked; the report carries the virtual-mode engine block.
    let o = run(SMALL, &[]);
    let r = &o.report;
    assert!(r.jobs.queued >= 15, "{:?}", r.jobs);
    assert!(r.jobs.succeeded >= 5, "{:?}", r.jobs);
    assert_eq!(r.jobs.lost, 0);
    assert!(o.invariants.ok(), "{:?}", o.invariants);
    for op in [
        "register",
        "token_exchange",
        "session_create",
        "poll_message",
        "lock_renew",
        "feed_post",
        "log_append",
        "attachment_upload",
        "job_completed",
    ] {
        assert!(
            r.operations.get(op).is_some_and(|x| x.count > 0),
            "no {op} calls"
        );
    }
    let engine = r.engine.as_ref().expect("engine block");
    assert!(
        engine.events > 1_000 && engine.virtual_s == 60.0,
        "{engine:?}"
    );
    assert_eq!(
        r.trace_hash.as_deref(),
        Some(format!("{:016x}", o.trace_hash).as_str())
    );
    assert!(o.notes.is_empty(), "{:?}", o.notes);
}

#[test]
fn same_seed_same_trace_and_numbers_other_seed_differs() {
    // Goal: the determinism contract — a seed replays the run exactly (trace hash and every
    // number in the report); another seed changes them.
    let a = run(SMALL, &[]);
    let b = run(SMALL, &[]);
    let c = run(SMALL, &["run.seed=8"]);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(numbers(&a), numbers(&b));
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn an_event_tap_sees_every_event_and_changes_nothing() {
    // Goal: `simulate --metrics-addr` watches the run through a tap; the tap sees the events the
    // report counts (one JobQueued per queued job) and the run stays the same run.
    let scenario = fleetsim_scenario::load_str("test.toml", SMALL, &[]).expect("valid scenario");
    let queued = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let seen = std::rc::Rc::clone(&queued);
    let tap = Box::new(move |ev: &fleetsim_core::event::Event| {
        if matches!(ev, fleetsim_core::event::Event::JobQueued { .. }) {
            seen.set(seen.get() + 1);
        }
    });
    let tapped = simulate_observed(&scenario, &SimOptions::default(), tap).expect("runs");
    let plain = run(SMALL, &[]);
    assert_eq!(tapped.trace_hash, plain.trace_hash);
    assert_eq!(numbers(&tapped), numbers(&plain));
    let report = serde_json::to_value(&plain.report).unwrap();
    assert!(queued.get() > 0);
    assert_eq!(Some(queued.get()), report["jobs"]["queued"].as_u64());
}

#[test]
fn masking_off_leaks_are_detected() {
    // Goal: with masking on nothing leaks; with masking off the server's scan finds the
    // secrets (the leak detector works end to end), and that is reported, not a violation.
    let on = run(SMALL, &[]);
    assert_eq!(on.invariants.leaked_secrets, 0);
    let off = run(SMALL, &["agent.mask_secrets=false"]);
    assert!(off.invariants.leaked_secrets > 0, "{:?}", off.invariants);
    assert!(!off.invariants.masking_on && off.invariants.ok());
}

#[test]
fn a_bounded_station_sheds_with_the_configured_error() {
    // Goal: a one-worker station with no waiting room and slow service sheds concurrent
    // requests with 429 (`throttled`), which reach the agents as typed errors.
    let text = format!(
        "{SMALL}\n[[server.stations]]\nname = \"api\"\nworkers = 1\nqueue_limit = 0\n\
         shed = \"throttled\"\nservice = \"200ms\"\n"
    );
    let o = run(&text, &[]);
    let st = &o.stations[0];
    assert_eq!((st.name.as_str(), st.workers), ("api", Some(1)));
    assert!(st.shed > 0 && st.utilisation > 0.0, "{st:?}");
    let throttled: u64 = o
        .report
        .operations
        .values()
        .map(|op| op.errors_by_kind.get("throttled").copied().unwrap_or(0))
        .sum();
    assert_eq!(
        throttled, st.shed,
        "every shed request surfaces as a throttled error"
    );
}

#[test]
fn network_latency_shows_in_call_latency() {
    // Goal: a constant 20 ms one-way latency makes a plain call take at least its round trip.
    let o = run(SMALL, &["network.latency=\"20ms\""]);
    let reg = &o.report.operations["register"];
    assert!(reg.latency_s.p50 >= 0.039, "{:?}", reg.latency_s);
}

#[test]
fn a_station_naming_queue_jobs_serves_the_operator_calls_and_delays_pickup() {
    // Goal: as live, where the generator's queue call is a request the server serves before an
    // agent can have the job: a station that names `queue_jobs` serves every queue call (its
    // service and the network's round trip show in the call's latency and in the pickup),
    // while a catch-all station leaves the operator's calls alone, as before.
    let station = "\n[[server.stations]]\nname = \"ops\"\nworkers = 1\nops = [\"queue_jobs\"]\n\
                   service = \"50ms\"\n";
    let named = run(&format!("{SMALL}{station}"), &["network.latency=\"5ms\""]);
    assert!(named.invariants.ok(), "{:?}", named.invariants);
    let queue = &named.report.operations["queue_jobs"];
    let st = &named.stations[0];
    assert_eq!(st.name, "ops");
    assert!(
        st.arrivals >= queue.count && st.arrivals <= queue.count + 1,
        "every queue call was served (one may be in flight at the end): {st:?} {queue:?}"
    );
    assert!(queue.count > 10, "{queue:?}");
    assert!(
        queue.latency_s.p50 >= 0.059 && queue.latency_s.p50 < 0.07,
        "5 ms + 50 ms + 5 ms: {:?}",
        queue.latency_s
    );
    let pickup = &named.report.job_pickup.latency_s;
    assert!(
        pickup.p50 >= 0.054,
        "a job is there 5 + 50 ms after it is due, then 5 ms to the parked poll: {pickup:?}"
    );
    assert!(named.report.jobs.succeeded > 10, "{:?}", named.report.jobs);

    let rest = "\n[[server.stations]]\nname = \"api\"\nworkers = 4\nservice = \"1ms\"\n";
    let catch_all = run(&format!("{SMALL}{rest}"), &["network.latency=\"5ms\""]);
    let queue = &catch_all.report.operations["queue_jobs"];
    // Through the station it would take at least 5 + 1 + 5 ms.
    assert_eq!(queue.latency_s.max, 0.0, "direct, as before: {queue:?}");
    assert!(catch_all.report.job_pickup.latency_s.p50 < 0.006);
}

#[test]
fn a_server_restart_with_queue_calls_on_a_station_loses_no_job() {
    // Goal: a queue call in flight through a station when the server goes down fails like any
    // request (the workload retries its arrivals), and every job is still accounted for.
    let text = format!(
        "{SMALL}\n[[server.stations]]\nname = \"ops\"\nworkers = 1\nops = [\"queue_jobs\"]\n\
         service = \"2s\"\n\n[[faults]]\nkind = \"server_restart\"\nat = \"30s\"\nduration = \"5s\"\n"
    );
    let o = run(&text, &["run.duration=\"90s\"", "jobs.rate_per_s=2"]);
    assert!(o.invariants.ok(), "{:?}", o.invariants);
    assert!(o.report.jobs.succeeded > 0, "{:?}", o.report.jobs);
    assert_eq!(o.report.jobs.lost, 0, "{:?}", o.report.jobs);
}

#[test]
fn agents_crashing_mid_job_lose_no_job() {
    // Goal: half the fleet dies mid-run and comes back 20 s later; the jobs they held are
    // requeued by lease expiry (short lease here) and finished by someone; no job is lost and
    // no job is ever leased twice.
    let text = format!(
        "{SMALL}\nlease_duration = \"30s\"\nlease_grace = \"5s\"\n\n[[faults]]\nkind = \
         \"agent_crash\"\nat = \"25s\"\nduration = \"20s\"\nfraction = 0.5\n"
    );
    let o = run(&text, &["run.duration=\"150s\"", "jobs.rate_per_s=0.8"]);
    assert!(o.invariants.ok(), "{:?}", o.invariants);
    assert_eq!(o.invariants.jobs_lost, 0);
    let requeued = o.report.emulator.as_ref().map_or(0, |e| e.jobs_requeued);
    assert!(
        requeued > 0,
        "crashed agents held jobs that had to be requeued"
    );
}

#[test]
fn a_partition_fails_calls_and_the_fleet_recovers() {
    // Goal: cutting every agent off from 20 s to 40 s produces transport errors and stops job
    // pickup; after it heals, agents pick up jobs again and nothing is lost.
    let text =
        format!("{SMALL}\n[[faults]]\nkind = \"partition\"\nat = \"20s\"\nduration = \"20s\"\n");
    let o = run(&text, &["run.duration=\"120s\""]);
    let kinds = &o.report.errors.by_kind;
    assert!(
        kinds.contains_key("connect") || kinds.contains_key("reset"),
        "{kinds:?}"
    );
    let started = |from: u64, to: u64| -> u64 {
        let ts = &o.report.timeseries;
        ts.iter()
            .filter(|p| p.t_s >= from && p.t_s < to)
            .map(|p| p.jobs_started)
            .sum()
    };
    assert_eq!(
        started(21, 40),
        0,
        "no pickups while every agent is cut off"
    );
    assert!(started(45, 120) > 0, "pickups resume after the partition");
    assert!(o.invariants.ok(), "{:?}", o.invariants);
}

#[test]
fn a_token_expiry_storm_makes_every_agent_re_mint() {
    // Goal: when every listener token expires at once, each agent meets a 401 and exchanges a
    // new assertion for a new token (one more token exchange per agent than a calm run), and
    // no job is lost.
    let text = format!("{SMALL}\n[[faults]]\nkind = \"token_expiry_storm\"\nat = \"30s\"\n");
    let storm = run(&text, &[]);
    let calm = run(SMALL, &[]);
    let exchanges = |o: &SimOutcome| o.report.operations["token_exchange"].count;
    assert_eq!(
        exchanges(&storm),
        exchanges(&calm) + 12,
        "one re-mint per agent"
    );
    let unauthorized: u64 = storm
        .report
        .operations
        .values()
        .map(|op| op.errors_by_kind.get("unauthorized").copied().unwrap_or(0))
        .sum();
    assert!(unauthorized >= 12, "every agent met a 401 ({unauthorized})");
    assert!(storm.invariants.ok(), "{:?}", storm.invariants);
    assert!(storm.notes.is_empty());
}

#[test]
fn a_server_stall_delays_pickup_and_loses_nothing() {
    // Goal: a 15 s stall holds every request and job intake; pickup latency grows beyond the
    // healthy run's and every job is still accounted for.
    let stalled =
        format!("{SMALL}\n[[faults]]\nkind = \"server_stall\"\nat = \"20s\"\nduration = \"15s\"\n");
    let o = run(&stalled, &["run.duration=\"90s\""]);
    let healthy = run(SMALL, &["run.duration=\"90s\""]);
    assert!(o.invariants.ok(), "{:?}", o.invariants);
    assert!(
        o.report.job_pickup.latency_s.max > healthy.report.job_pickup.latency_s.max,
        "stall {:?} vs healthy {:?}",
        o.report.job_pickup.latency_s,
        healthy.report.job_pickup.latency_s
    );
}

#[test]
fn a_server_restart_resets_connections_and_loses_nothing() {
    // Goal: a restart with 5 s downtime resets parked polls and refuses connections; agents
    // recover and no job is lost.
    let text = format!(
        "{SMALL}\n[[faults]]\nkind = \"server_restart\"\nat = \"30s\"\nduration = \"5s\"\n"
    );
    let o = run(&text, &["run.duration=\"90s\""]);
    let kinds = &o.report.errors.by_kind;
    assert!(
        kinds.contains_key("reset") || kinds.contains_key("connect"),
        "{kinds:?}"
    );
    assert!(o.invariants.ok(), "{:?}", o.invariants);
}

#[test]
fn the_step_budget_stops_a_run() {
    // Goal: a run bigger than its step budget ends with an error, not a hang.
    let scenario = fleetsim_scenario::load_str("t.toml", SMALL, &[]).unwrap();
    let err = simulate(
        &scenario,
        &SimOptions {
            step_budget: Some(100),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("step budget"), "{err}");
}

#[test]
fn quickstart_cancels_happen_in_virtual_time() {
    // Goal: the jobs drawn as canceled are really canceled in virtual time (the workload machine
    // both drivers share), so `simulate` reports canceled jobs as `run` does — before, virtual
    // time drew the cancels and dropped them (0 canceled).
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scenarios/quickstart.toml"
    );
    let scenario = fleetsim_scenario::load(path, &[]).expect("quickstart loads");
    let o = simulate(&scenario, &SimOptions::default()).expect("run completes");
    let jobs = &o.report.jobs;
    // The same arrivals and job draws live mode makes for this seed.
    let mut arrivals = fleetsim_scenario::Arrivals::new(
        &scenario.jobs.arrival,
        fleetsim_core::rng::stream(scenario.run.seed, fleetsim_core::rng::StreamKind::Jobs, 0),
        scenario.run.duration,
    );
    let mut draws =
        fleetsim_core::rng::stream(scenario.run.seed, fleetsim_core::rng::StreamKind::Jobs, 1);
    let mut arrived = 0;
    let mut drawn_canceled = 0;
    while arrivals.next_arrival().is_some() {
        arrived += 1;
        let _ = scenario.jobs.model.sample_job(&mut draws);
        drawn_canceled += u64::from(scenario.jobs.model.sample_cancel(&mut draws));
    }
    assert_eq!(jobs.queued, arrived, "{jobs:?}");
    assert!(jobs.canceled > 0, "{jobs:?}");
    assert!(
        jobs.canceled <= drawn_canceled,
        "{jobs:?} of {drawn_canceled} drawn"
    );
    assert_eq!(jobs.lost, 0);
    assert!(o.invariants.ok(), "{:?}", o.invariants);
}

#[test]
fn every_job_canceled_ends_canceled_and_nothing_is_lost() {
    // Goal: with every job drawn as canceled, jobs canceled while queued and while running both
    // end as canceled, the invariants hold, and only jobs whose cancel falls after the end run
    // on.
    let o = run(SMALL, &["jobs.cancel_rate=1"]);
    let jobs = &o.report.jobs;
    assert!(jobs.canceled * 10 >= jobs.queued * 6, "{jobs:?}");
    assert_eq!(jobs.lost, 0);
    assert!(o.invariants.ok(), "{:?}", o.invariants);
}

#[test]
fn pipelines_scenario_queues_runs_and_follows_them_in_virtual_time() {
    // Goal: with `[jobs] source = "pipelines"` virtual time drives the same workload machine:
    // runs go through the server's Pipelines Runs API, are followed to their result, their jobs
    // are served, and pickups come from the server's times (none left unmatched).
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scenarios/pipelines.toml"
    );
    let scenario = fleetsim_scenario::load(path, &[]).expect("pipelines.toml loads");
    let o = simulate(&scenario, &SimOptions::default()).expect("run completes");
    let r = &o.report;
    let runs = r.runs.expect("a runs section");
    assert!(runs.queued >= 10, "{runs:?}");
    assert!(runs.completed >= runs.queued / 2, "{runs:?}");
    assert_eq!(runs.completed, runs.succeeded + runs.canceled, "{runs:?}");
    assert_eq!(runs.queued, runs.completed + runs.unfinished, "{runs:?}");
    assert_eq!(r.jobs.queued, 0, "no synthetic jobs");
    assert!(r.jobs.started >= runs.queued, "{:?}", r.jobs);
    assert_eq!(r.job_pickup.unmatched, 0, "{:?}", r.job_pickup);
    assert_eq!(r.job_pickup.server_clock, r.job_pickup.latency_s.count);
    assert!(o.invariants.ok(), "{:?}", o.invariants);
}

#[test]
fn a_server_job_source_is_refused_in_virtual_time() {
    // Goal: jobs "queued by someone else" do not exist in virtual time, so a scenario that asks
    // for them is refused with the fix instead of simulating an idle fleet.
    let text = "[run]\nduration = \"10s\"\n[target]\nurl = \"http://127.0.0.1:9\"\n\
                [fleet]\nagents = 2\n[jobs]\nsource = \"server\"\n";
    let scenario = fleetsim_scenario::load_str("server.toml", text, &[]).expect("valid");
    match simulate(&scenario, &SimOptions::default()) {
        Err(DesError::Unsupported(why)) => assert!(why.contains("source = \"emulator\""), "{why}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a server source was simulated as an idle fleet"),
    }
}
