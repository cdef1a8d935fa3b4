//! Scenario loading as users meet it: the shipped files load, bad files get exact messages with
//! file:line:col, `--set` overrides any field, and the schema is valid JSON.

use std::path::PathBuf;
use std::time::Duration;

use fleetsim_core::dist::DurationDist;
use fleetsim_scenario::{
    AgentSelection, Arrival, FaultKind, KeyBits, Origin, PatSource, ProxySource, RegisterMode,
    StationOps, StepModel, TaskModel, TlsTrust, json_schema, load, load_str,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// The messages `load_str` gives for `text` (with `overrides`), rendered.
fn errors(text: &str, overrides: &[&str]) -> Vec<String> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    match load_str("bad.toml", text, &overrides) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.lines(),
    }
}

const MINIMAL: &str = "[run]\nduration = \"10s\"\n";

#[test]
fn every_shipped_scenario_loads() {
    // Goal: the files we ship (and document) are valid, with the names the issues require.
    let files: Vec<PathBuf> = shipped("scenarios")
        .into_iter()
        .chain(shipped("scenarios/validation"))
        .collect();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "quickstart.toml",
        "steady.toml",
        "morning-surge.toml",
        "registration-storm.toml",
        "token-expiry-storm.toml",
        "pipelines.toml",
        "azure-devops.toml",
        "mmc.toml",
        "mm1.toml",
        "mmck.toml",
        "little.toml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing {want} in {names:?}"
        );
    }
    for f in &files {
        if let Err(d) = load(f, &[]) {
            panic!("{} does not load:\n{d}", f.display());
        }
    }
}

#[test]
fn quickstart_is_short_and_exercises_the_job_features() {
    // Goal: quickstart keeps its promise — under a minute, embedded emulator, and jobs with
    // secrets, artifacts, failures, cancellation and token rotation.
    let s = load(repo().join("scenarios/quickstart.toml"), &[]).unwrap();
    assert!(s.target.is_none());
    assert!(s.run.duration + s.fleet.ramp_up < Duration::from_secs(60));
    assert!(s.jobs.model.secrets > 0 && s.jobs.model.secret_lines > 0);
    assert!(s.jobs.model.artifact_bytes.mean() > 0.0);
    assert!(s.jobs.model.failure_rate > 0.0 && s.jobs.model.cancel_rate > 0.0);
    let rotate = s.agent.job_token_rotate_before.unwrap();
    assert!(rotate < s.jobs.token_ttl.unwrap());
    assert!(
        s.server.long_poll_hold < s.run.duration,
        "empty polls must end within the run"
    );
    assert!(!s.thresholds.is_empty());
}

#[test]
fn mmc_validation_file_is_an_mmc_system() {
    // Goal: mmc.toml is what issue 5 item 3 describes — Poisson λ, exponential service, c agents,
    // no network delay, no server queueing, no gap after an empty poll.
    let s = load(repo().join("scenarios/validation/mmc.toml"), &[]).unwrap();
    assert_eq!(s.jobs.arrival, Arrival::Poisson { rate_per_s: 8.0 });
    assert_eq!(
        s.jobs.model.duration,
        DurationDist::exponential(Duration::from_secs(1))
    );
    assert_eq!(s.fleet.agents, 10);
    assert_eq!(s.network.latency, DurationDist::constant(Duration::ZERO));
    assert_eq!(s.network.loss, 0.0);
    assert!(s.server.stations.is_empty());
    assert_eq!(
        s.agent.pacing.empty_poll_gap,
        DurationDist::constant(Duration::ZERO)
    );
    assert!(s.faults.is_empty());
}

#[test]
fn defaults_are_the_real_agents_timers() {
    // Goal: a minimal file gets the real agent's timers and the emulator defaults.
    let s = load_str("min.toml", MINIMAL, &[]).unwrap();
    assert_eq!(s.run.name, "min");
    assert_eq!(s.run.seed, 1);
    assert_eq!(s.agent.pacing.long_poll_timeout, Duration::from_secs(100));
    let gap = DurationDist::uniform(Duration::from_secs(5), Duration::from_secs(15));
    assert_eq!(s.agent.pacing.empty_poll_gap, gap);
    assert_eq!(s.agent.pacing.keepalive_interval, Duration::from_secs(30));
    assert_eq!(s.agent.pacing.lock_renew_interval, Duration::from_secs(60));
    assert_eq!(
        s.agent.pacing.session_conflict_budget,
        Duration::from_secs(240)
    );
    assert_eq!(s.agent.pacing.completion_tries, 5);
    assert_eq!(s.agent.pacing.feed_batch_lines_max, 100);
    assert!(s.agent.mask_secrets);
    assert_eq!(s.agent.job_token_rotate_before, None);
    assert_eq!(s.server.long_poll_hold, Duration::from_secs(50));
    assert_eq!(s.fleet.key_bits, KeyBits::B2048);
    assert_eq!(s.fleet.distinct_keys, s.fleet.agents);
    assert_eq!(s.jobs.arrival, Arrival::None);
}

#[test]
fn bad_scenarios_get_exact_messages_with_positions() {
    // Goal: each common mistake is reported at the offending key or value with a message a
    // person can act on — the table issue 3 item 10 asks for.
    let table: &[(&str, &[&str], &str)] = &[
        (
            "[run]\nduration = \"10s\"\n[fleet]\nagentz = 3\n",
            &[],
            "bad.toml:4:1: fleet.agentz: `fleet` has no such key; write one of agents, \
             capabilities, connection_mode, distinct_keys, key_bits, key_cache_dir, \
             name_prefix, ramp_up, register_mode",
        ),
        (
            "[run]\nduration = \"10s\"\n[fleet]\nagents = \"ten\"\n",
            &[],
            "bad.toml:4:10: fleet.agents: expected a whole number ≥ 1, found the string \
             \"ten\" (at most 10000000 agents)",
        ),
        (
            "[run]\nduration = \"10s\"\n[jobs]\nrate_per_s = -2.5\n",
            &[],
            "bad.toml:4:14: jobs.rate_per_s: must be between 0 and 100000 jobs per second, \
             found -2.5",
        ),
        (
            "[run]\nduration = \"5 parsecs\"\n",
            &[],
            "bad.toml:2:12: run.duration: invalid duration \"5 parsecs\": unknown unit \
             \"parsecs\" (use us, ms, s, m, h or d)",
        ),
        (
            "[run]\nduration = 30\n",
            &[],
            "bad.toml:2:12: run.duration: a duration needs a unit: write \"30s\" or \"30ms\"",
        ),
        (
            "[run]\nduration = \"10s\"\n[thresholds]\n\"job_pikup.p99\" = \"< 2s\"\n",
            &[],
            "bad.toml:4:1: thresholds.\"job_pikup.p99\": unknown threshold metric \
             `job_pikup.p99`; did you mean `job_pickup.p99`?",
        ),
        (
            "[run]\nduration = \"10s\"\n[thresholds]\n\"job_pickup.p99\" = \"about 2s\"\n",
            &[],
            "bad.toml:4:20: thresholds.\"job_pickup.p99\": invalid condition \"about 2s\" for \
             `job_pickup.p99`: expected an operator (<, <=, >, >=, ==, !=) and a value, e.g. \
             \"< 2s\"",
        ),
        (
            MINIMAL,
            &["fleet.agentz=3"],
            "bad.toml: --set fleet.agentz=3: unknown key path `fleet.agentz`: no key `agentz` in \
             `fleet`; expected one of agents, capabilities, connection_mode, distinct_keys, \
             key_bits, key_cache_dir, name_prefix, ramp_up, register_mode",
        ),
        (
            MINIMAL,
            &["fleet.agents=lots"],
            "bad.toml: --set fleet.agents=lots: expected a whole number ≥ 1, found the string \
             \"lots\" (at most 10000000 agents)",
        ),
        (
            MINIMAL,
            &["fleet.agents"],
            "bad.toml: --set fleet.agents: expected KEY.PATH=VALUE",
        ),
        (
            "[run]\nwarmup = \"1m\"\n",
            &[],
            "bad.toml:1:2: run.duration: missing; write e.g. duration = \"40s\" in [run]",
        ),
        (
            "[run]\nduration = \"10s\"\n[jobs]\nrate_per_s = 1\n\
             duration = { dist = \"exponential\" }\n",
            &[],
            "bad.toml:5:12: jobs.duration: `exponential` distribution needs `mean`",
        ),
        (
            "[run]\nduration = \"10s\"\n[[faults]]\nkind = \"agent_crsh\"\nat = \"1s\"\n",
            &[],
            "bad.toml:4:8: faults[0].kind: expected one of \"agent_crash\", \"partition\", \
             \"server_stall\", \"server_restart\", \"token_expiry_storm\"; found the string \
             \"agent_crsh\"",
        ),
        (
            "[run]\nduration = \"10s\"\n[[faults]]\nkind = \"server_restart\"\nat = \"1m\"\n",
            &[],
            "bad.toml:5:6: faults[0].at: 1m is not within the run (10s)",
        ),
        (
            "[run]\nduration = \"10s\"\n[target]\nurl = \"https://h\"\npat = \"secret\"\n",
            &[],
            "bad.toml:5:1: target.pat: `target` has no such key; write one of ca_file, insecure, \
             pat_env, pat_file, pool, proxy, url",
        ),
        (
            "[run]\nduration = \"10s\"\n[[faults]]\nkind = 3\nat = \"1s\"\n",
            &[],
            "bad.toml:4:8: faults[0].kind: expected one of \"agent_crash\", \"partition\", \
             \"server_stall\", \"server_restart\", \"token_expiry_storm\"; found 3",
        ),
        (
            // One mistake, one message: the emptied `arrival` table is not reported again.
            "[run]\nduration = \"1m\"\n[jobs]\narrival = { profile = [[\"0s\"]] }\n",
            &[],
            "bad.toml:4:24: jobs.arrival.profile[0]: expected a list of exactly 2 values \
             ([at, rate_per_s], such as [\"10m\", 4.0]), found 1",
        ),
        (
            "[run]\nduration = \"10s\"\n[fleet\n",
            &[],
            "bad.toml:3:7: unclosed table, expected `]`",
        ),
        (
            "[run]\nduration = \"10s\"\n[server.layout]\ntoken_listen = \"localhost\"\n",
            &[],
            "bad.toml:4:16: server.layout.token_listen: \"localhost\" is not an address; write \
             \"127.0.0.1:0\" (host:port)",
        ),
    ];
    for (text, overrides, want) in table {
        let got = errors(text, overrides);
        assert_eq!(
            got,
            vec![want.to_string()],
            "for:\n{text}\nwith {overrides:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    // Goal: a file with several mistakes gets all of them, in file order, and a value already
    // reported as bad does not cause a second, derived message.
    let text = "\
[run]
duration = \"forever\"
seed = \"x\"

[fleet]
agents = 0
key_bits = 1024
colour = \"blue\"

[jobs]
rate_per_s = -1
failure_rate = 1.5

[thresholds]
\"jobs.lots\" = \"== 0\"
";
    let got = errors(text, &["jobs.secrets=many"]);
    let want = [
        "bad.toml:2:12: run.duration: invalid duration \"forever\": expected a number at \
         \"forever\"",
        "bad.toml:3:8: run.seed: expected a whole number ≥ 0, found the string \"x\"",
        "bad.toml:6:10: fleet.agents: must be between 1 and 10000000 agents, found 0",
        "bad.toml:7:12: fleet.key_bits: must be 2048, 3072 or 4096, found 1024",
        "bad.toml:8:1: fleet.colour: `fleet` has no such key; write one of agents, \
         capabilities, connection_mode, distinct_keys, key_bits, key_cache_dir, name_prefix, \
         ramp_up, register_mode",
        "bad.toml:11:14: jobs.rate_per_s: must be between 0 and 100000 jobs per second, found -1",
        "bad.toml:12:16: jobs.failure_rate: must be between 0 and 1 (or 0% and 100%), found 1.5",
        "bad.toml: --set jobs.secrets=many: expected a whole number ≥ 0, found the string \
         \"many\"",
    ];
    assert_eq!(got.len(), want.len() + 1, "{got:#?}");
    for w in want {
        assert!(got.contains(&w.to_string()), "missing {w:?} in {got:#?}");
    }
    let metric = got.iter().find(|g| g.contains("jobs.lots")).unwrap();
    assert!(
        metric.starts_with("bad.toml:15:1: thresholds.\"jobs.lots\": unknown threshold metric"),
        "{metric}"
    );
    // File order, then overrides.
    assert!(got.last().unwrap().contains("--set"));
}

#[test]
fn overrides_set_any_field_typed_by_the_schema() {
    // Goal: `--set` reaches every kind of field, typed by the schema, and creates sections.
    let sets: Vec<String> = [
        "fleet.agents=100",
        "run.name=123",
        "run.seed=42",
        "run.duration=2m",
        "agent.mask_secrets=false",
        "jobs.rate_per_s=2.5",
        "jobs.duration={ dist = \"exponential\", mean = \"2m\" }",
        "jobs.arrival=constant",
        "thresholds.\"job_pickup.p99\"=< 3s",
        "fleet.key_cache_dir=/tmp/keys",
        "fleet.register_mode=replace",
        "target.url=https://dev.example/org",
        "target.pat_file=/run/secrets/pat",
        "target.proxy.url=http://127.0.0.1:8888",
        "server.stations[0].workers=4",
    ]
    .map(String::from)
    .to_vec();
    let text = format!("{MINIMAL}[[server.stations]]\nname = \"api\"\nworkers = 1\n");
    let s = load_str("o.toml", &text, &sets).unwrap();
    assert_eq!(s.fleet.agents, 100);
    assert_eq!(s.run.name, "123");
    assert_eq!(s.run.seed, 42);
    assert_eq!(s.run.duration, Duration::from_secs(120));
    assert!(!s.agent.mask_secrets);
    assert_eq!(s.jobs.arrival, Arrival::Constant { rate_per_s: 2.5 });
    assert_eq!(
        s.jobs.model.duration,
        DurationDist::exponential(Duration::from_secs(120))
    );
    assert_eq!(s.thresholds[0].metric, "job_pickup.p99");
    assert_eq!(s.fleet.key_cache_dir, Some(PathBuf::from("/tmp/keys")));
    assert_eq!(s.fleet.register_mode, RegisterMode::Replace);
    let t = s.target.unwrap();
    assert_eq!(t.url, "https://dev.example/org");
    assert_eq!(t.pat, PatSource::File(PathBuf::from("/run/secrets/pat")));
    assert_eq!(
        t.proxy.source,
        ProxySource::Url("http://127.0.0.1:8888".into())
    );
    assert_eq!(t.tls, TlsTrust::Default);
    assert_eq!(s.server.stations[0].workers, 4);
    assert_eq!(s.server.stations[0].ops, StationOps::Rest);
    // A later override of the same key wins.
    let twice = ["fleet.agents=3".to_string(), "fleet.agents=7".to_string()];
    assert_eq!(load_str("o.toml", MINIMAL, &twice).unwrap().fleet.agents, 7);
}

#[test]
fn override_paths_that_cannot_exist_are_errors() {
    // Goal: a bad --set path names itself and what would have been valid.
    let got = errors(MINIMAL, &["flet.agents=3"]);
    let want = "bad.toml: --set flet.agents=3: unknown key path `flet.agents`: no key `flet` at \
                the top level; expected one of agent,";
    assert!(got[0].starts_with(want), "{got:?}");
    let got = errors(MINIMAL, &["run.name.first=x"]);
    assert!(
        got[0].contains("unknown key path `run.name.first`"),
        "{got:?}"
    );
    let got = errors(MINIMAL, &["faults[3].at=1s"]);
    assert_eq!(
        got,
        vec!["bad.toml: --set faults[3].at=1s: `faults` has 0 entries; index 3 is out of range"]
    );
}

#[test]
fn faults_and_partitions_merge_in_time_order() {
    // Goal: [[network.partitions]] is shorthand for partition faults, and faults come sorted.
    let text = "\
[run]
duration = \"1h\"
[fleet]
agents = 100
[[faults]]
kind = \"server_stall\"
at = \"30m\"
duration = \"10s\"
[[faults]]
kind = \"agent_crash\"
at = \"5m\"
agents = [7, 3, 7]
[network]
latency = { dist = \"uniform\", min = \"1ms\", max = \"3ms\" }
[[network.partitions]]
at = \"10m\"
duration = \"1m\"
fraction = \"25%\"
";
    let s = load_str("f.toml", text, &[]).unwrap();
    let kinds: Vec<FaultKind> = s.faults.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            FaultKind::AgentCrash,
            FaultKind::Partition,
            FaultKind::ServerStall
        ]
    );
    assert_eq!(s.faults[0].agents, AgentSelection::Agents(vec![3, 7]));
    assert_eq!(s.faults[1].agents, AgentSelection::Fraction(0.25));
    assert_eq!(s.faults[2].agents, AgentSelection::All);
    assert_eq!(s.network.latency.mean(), Duration::from_millis(2));
}

#[test]
fn fault_rules_point_at_the_field() {
    // Goal: semantic fault mistakes are caught with the position of the field at fault.
    let text = "\
[run]
duration = \"1h\"
[fleet]
agents = 10
[[faults]]
kind = \"partition\"
at = \"1m\"
[[faults]]
kind = \"server_restart\"
at = \"2m\"
fraction = 0.5
[[faults]]
kind = \"agent_crash\"
at = \"3m\"
agents = [10]
";
    let got = errors(text, &[]);
    assert_eq!(
        got,
        [
            "bad.toml:5:1: faults[0].duration: a partition needs a `duration`",
            "bad.toml:11:12: faults[1].fraction: a server_restart hits the server, not chosen \
             agents",
            "bad.toml:15:10: faults[2].agents: agent index 10 is out of range (fleet.agents = 10)",
        ]
    );
}

#[test]
fn stations_validate_operation_names() {
    // Goal: the capacity model's route groups use report operation names, each served once.
    let text = "\
[run]
duration = \"1m\"
[[server.stations]]
name = \"auth\"
workers = 2
queue_limit = 100
shed = \"throttled\"
ops = [\"token_exchange\", \"registr\"]
service = { dist = \"exponential\", mean = \"3ms\" }
[[server.stations]]
name = \"rest\"
ops = [\"token_exchange\"]
";
    let got = errors(text, &[]);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with(
            "bad.toml:8:26: server.stations[0].ops[1]: unknown operation `registr`; expected one of"
        ),
        "{got:?}"
    );
    assert_eq!(
        got[1],
        "bad.toml:12:8: server.stations[1].ops[0]: operation `token_exchange` is already served by \
         station \"auth\""
    );
}

#[test]
fn arrival_profiles_are_piecewise_rates() {
    // Goal: a profile's rate holds from its point to the next; bad points are caught.
    let text =
        format!("{MINIMAL}[jobs]\narrival = {{ profile = [[\"0s\", 1.0], [\"1m\", 4.0]] }}\n");
    let s = load_str("p.toml", &text, &[]).unwrap();
    assert_eq!(s.jobs.arrival.rate_at(Duration::from_secs(30)), 1.0);
    assert_eq!(s.jobs.arrival.rate_at(Duration::from_secs(60)), 4.0);
    let bad =
        format!("{MINIMAL}[jobs]\narrival = {{ profile = [[\"1m\", 1.0], [\"1m\", -4.0]] }}\n");
    let got = errors(&bad, &[]);
    assert_eq!(
        got,
        [
            "bad.toml:4:37: jobs.arrival.profile[1]: rate must be between 0 and 100000 jobs per \
             second, found -4",
            "bad.toml:4:37: jobs.arrival.profile[1]: points must be in increasing time; 1m \
             follows 1m",
        ]
    );
    let both = format!(
        "{MINIMAL}[jobs]\nrate_per_s = 1\n\
         arrival = {{ bursts = {{ size = 5, every = \"10s\" }} }}\n"
    );
    assert!(errors(&both, &[])[0].contains("bursts and profiles carry their own rates"));
}

#[test]
fn sampled_jobs_follow_the_job_model() {
    // Goal: `Jobs::sample_job` splits duration over steps, attaches the artifact to the last
    // step, and is deterministic for a seed (both drivers rely on it).
    let text = format!(
        "{MINIMAL}[jobs]\nrate_per_s = 1\nduration = \"10s\"\nsteps = 4\nlog_lines_per_s = 3\n\
         secrets = 2\nsecret_lines = 1\nartifact_bytes = \"1KiB\"\nfailure_rate = 1.0\n"
    );
    let s = load_str("j.toml", &text, &[]).unwrap();
    let mut rng = fleetsim_core::rng::stream(7, fleetsim_core::rng::StreamKind::Jobs, 0);
    let job = s.jobs.model.sample_job(&mut rng);
    assert_eq!(job.steps.len(), 4);
    assert!(
        job.steps
            .iter()
            .all(|st| st.duration_ms == 2_500 && st.log_lines == 8)
    );
    assert_eq!(job.steps[3].artifact_bytes, 1024);
    assert_eq!(job.steps[0].artifact_bytes, 0);
    assert!(job.fail);
    assert_eq!(job.secrets, 2);
    let mut again = fleetsim_core::rng::stream(7, fleetsim_core::rng::StreamKind::Jobs, 0);
    assert_eq!(s.jobs.model.sample_job(&mut again), job);
}

#[test]
fn task_models_inherit_from_default_and_the_built_in_model() {
    // Goal: `[jobs.tasks]` absent gives the built-in model; present, `default` overrides the
    // built-in default field by field, each named task overrides `default`, and the agents of
    // both drivers get it through `agent_config`.
    let none = load_str("t.toml", MINIMAL, &[]).unwrap();
    assert_eq!(none.jobs.tasks, StepModel::default());
    assert_eq!(
        none.jobs.tasks.for_task("checkout").log_lines_per_s,
        40.0,
        "the built-in model knows Checkout"
    );
    let text = format!(
        "{MINIMAL}[jobs]\nrate_per_s = 0\n\
         [jobs.tasks.default]\nlog_lines_per_s = 4\nfailure_rate = \"2%\"\n\
         [jobs.tasks.CmdLine]\nduration = \"3s\"\nattachment_bytes = \"1KiB\"\n\
         issues_rate = 0.5\n"
    );
    let s = load_str("t.toml", &text, &[]).unwrap();
    let m = &s.jobs.tasks;
    assert_eq!(m.default.log_lines_per_s, 4.0);
    assert_eq!(m.default.failure_rate, 0.02);
    assert_eq!(m.default.duration, TaskModel::default().duration);
    let cmd = m.for_task("cmdline");
    assert_eq!(cmd.duration, DurationDist::constant(Duration::from_secs(3)));
    assert_eq!(cmd.attachment_bytes.mean(), 1024.0);
    assert_eq!((cmd.log_lines_per_s, cmd.failure_rate), (4.0, 0.02));
    assert_eq!(cmd.issues_rate, 0.5);
    assert!(
        m.tasks.len() == 1,
        "a written table replaces the built-in task list"
    );
    let config = s.agent_config("pat", fleetsim_core::crypto::CryptoMode::Modelled);
    assert_eq!(*config.steps, s.jobs.tasks);
    let set = load_str(
        "t.toml",
        &text,
        &["jobs.tasks.Bash.log_lines_per_s=7".to_string()],
    )
    .unwrap();
    assert_eq!(set.jobs.tasks.for_task("bash").log_lines_per_s, 7.0);
}

#[test]
fn task_model_mistakes_point_at_the_field() {
    // Goal: bad task models are reported at the key or value with what to write.
    let head = format!("{MINIMAL}[jobs]\nrate_per_s = 0\n");
    let table: &[(&str, &str)] = &[
        (
            "[jobs.tasks.CmdLine]\nlines_per_s = 3\n",
            "bad.toml:6:1: jobs.tasks.CmdLine.lines_per_s: `jobs.tasks.CmdLine` has no such key; \
             write one of attachment_bytes, duration, failure_rate, issues_rate, \
             log_lines_per_s, secret_lines",
        ),
        (
            "[jobs.tasks.CmdLine]\nlog_lines_per_s = -1\n",
            "bad.toml:6:19: jobs.tasks.CmdLine.log_lines_per_s: must be between 0 and 100000 \
             lines per second, found -1",
        ),
        (
            "[jobs.tasks.Bash]\nfailure_rate = \"60%\"\nissues_rate = \"50%\"\n",
            "bad.toml:7:15: jobs.tasks.Bash.issues_rate: failure_rate + issues_rate is 110%, \
             more than 100%",
        ),
        (
            "[jobs.tasks.Checkout]\nduration = \"2s\"\n[jobs.tasks.checkout]\nduration = \"3s\"\n",
            "bad.toml:7:13: jobs.tasks.checkout: task `checkout` is already modelled as \
             `Checkout` (task names match case-insensitively)",
        ),
        (
            "[jobs.tasks.Default]\nduration = \"2s\"\n",
            "bad.toml:5:13: jobs.tasks.Default: task names match case-insensitively, so \
             `Default` is the default model; write `default`",
        ),
        (
            "[jobs.tasks.default]\nduration = { dist = \"uniform\", min = \"5s\" }\n",
            "bad.toml:6:12: jobs.tasks.default.duration: `uniform` distribution needs `max`",
        ),
    ];
    for (tail, want) in table {
        let text = format!("{head}{tail}");
        assert_eq!(errors(&text, &[]), vec![want.to_string()], "for:\n{text}");
    }
}

#[test]
fn pat_is_never_inline_and_tls_options_conflict() {
    // Goal: credentials stay out of scenario files and contradictory TLS settings are refused.
    let got = errors(
        &format!("{MINIMAL}[target]\nurl = \"https://u:p@host/org\"\n"),
        &[],
    );
    assert_eq!(
        got,
        ["bad.toml:4:7: target.url: credentials do not belong in the URL; use pat_env or pat_file"]
    );
    let got = errors(
        &format!("{MINIMAL}[target]\nurl = \"https://h\"\nca_file = \"ca.pem\"\ninsecure = true\n"),
        &[],
    );
    assert_eq!(
        got,
        ["bad.toml:6:12: target.insecure: give either ca_file or insecure = true, not both"]
    );
    let s = load_str(
        "t.toml",
        &format!("{MINIMAL}[target]\nurl = \"http://h:8080/\"\n"),
        &[],
    )
    .unwrap();
    let t = s.target.unwrap();
    assert_eq!(t.url, "http://h:8080");
    assert_eq!(t.pat, PatSource::Env("FLEETSIM_PAT".into()));
    assert_eq!(t.pool, "Default");
}

#[test]
fn schema_is_valid_json_describing_every_section() {
    // Goal: `fleetsim schema` prints a JSON Schema naming every top-level section, and the
    // schema forbids unknown keys like the loader does.
    let schema = json_schema();
    let text = serde_json::to_string_pretty(&schema).unwrap();
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back, schema);
    assert!(
        schema["$schema"]
            .as_str()
            .unwrap()
            .contains("json-schema.org")
    );
    let props = schema["properties"].as_object().unwrap();
    for section in [
        "run",
        "target",
        "fleet",
        "agent",
        "jobs",
        "server",
        "network",
        "faults",
        "thresholds",
    ] {
        assert!(props.contains_key(section), "schema lacks {section}");
    }
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
}

#[test]
fn diagnostics_carry_structured_origins() {
    // Goal: callers (the CLI, plan sweeps) can tell file problems from override problems.
    let err = load_str(
        "x.toml",
        "[run]\nduration = 5\n",
        &["fleet.agents=z".into()],
    )
    .unwrap_err();
    assert_eq!(err.items[0].origin, Origin::File { line: 2, col: 12 });
    assert!(matches!(
        err.items[1].origin,
        Origin::Override { index: 0, .. }
    ));
}

#[test]
fn documented_examples_load() {
    // Goal: the TOML tables shown in docs/SCENARIOS.md are valid scenario fragments.
    let doc = std::fs::read_to_string(repo().join("docs/SCENARIOS.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .filter(|b| b.starts_with('['))
        .collect();
    assert!(blocks.len() >= 3, "expected table examples in the docs");
    for block in blocks {
        let text = format!("[run]\nduration = \"1h\"\n{block}");
        if let Err(d) = load_str("SCENARIOS.md", &text, &[]) {
            panic!("documented example does not load:\n{block}\n{d}");
        }
    }
}

#[test]
fn damaged_files_give_diagnostics_not_panics() {
    // Goal: bad input is a value, never a panic — every truncation and every dropped line of a
    // real scenario either loads or comes back as diagnostics, each with a position or origin.
    let text = std::fs::read_to_string(repo().join("scenarios/quickstart.toml")).unwrap();
    let mut variants: Vec<String> = (0..text.len())
        .step_by(7)
        .filter(|&i| text.is_char_boundary(i))
        .map(|i| text[..i].to_string())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    for skip in 0..lines.len() {
        let kept: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| *l)
            .collect();
        variants.push(kept.join("\n"));
    }
    let overrides = ["jobs.steps=x".to_string(), "faults[0].at=1s".to_string()];
    for v in &variants {
        for ov in [&[][..], &overrides[..]] {
            if let Err(d) = load_str("cut.toml", v, ov) {
                assert!(!d.is_empty() && d.len() <= fleetsim_scenario::MAX_DIAGNOSTICS);
                assert!(d.lines().iter().all(|l| l.starts_with("cut.toml")), "{d}");
            }
        }
    }
}

#[test]
fn job_sources_default_by_target_and_refuse_what_cannot_be_honoured() {
    // Goal: `[jobs] source` defaults to the emulator without a target; with one, to "server"
    // unless arrivals are set; pipelines parse with their weights; arrivals or cancels with
    // "server", a "pipelines" source without pipelines, and pipelines with another source are
    // refused with
    // the key's position.
    use fleetsim_scenario::{JobSource, PipelineTarget};
    let target = "[target]\nurl = \"http://127.0.0.1:9\"\n";
    let jobs = "[jobs]\nrate_per_s = 1\n";
    let load_ok = |text: &str| load_str("ok.toml", text, &[]).expect("valid").jobs.source;
    assert_eq!(load_ok(&format!("{MINIMAL}{jobs}")), JobSource::Emulator);
    assert_eq!(load_ok(&format!("{MINIMAL}{target}")), JobSource::Server);
    assert_eq!(
        load_ok(&format!("{MINIMAL}{target}{jobs}")),
        JobSource::Emulator
    );
    // A server source (explicit, or the default against a target) needs no arrival rate: a
    // `[jobs]` section that only models the server's jobs' steps loads.
    let tasks = "[jobs.tasks.default]\nduration = \"2s\"\n";
    assert_eq!(
        load_ok(&format!(
            "{MINIMAL}{target}[jobs]\nsource = \"server\"\n{tasks}"
        )),
        JobSource::Server
    );
    assert_eq!(
        load_ok(&format!("{MINIMAL}{target}[jobs]\n{tasks}")),
        JobSource::Server
    );
    let pipelines = format!(
        "{MINIMAL}{jobs}source = \"pipelines\"\n[[jobs.pipelines]]\nid = 12\nproject = \"proj\"\n\
         weight = 3\nbranch = \"refs/heads/main\"\n[[jobs.pipelines]]\nid = 4\nproject = \"p2\"\n"
    );
    assert_eq!(
        load_ok(&pipelines),
        JobSource::Pipelines(vec![
            PipelineTarget {
                id: 12,
                project: "proj".into(),
                weight: 3,
                branch: Some("refs/heads/main".into()),
            },
            PipelineTarget {
                id: 4,
                project: "p2".into(),
                weight: 1,
                branch: None,
            },
        ])
    );
    let server =
        format!("{MINIMAL}[jobs]\nsource = \"server\"\nrate_per_s = 1\ncancel_rate = 0.1\n");
    let got = errors(&server, &[]);
    assert!(
        got.iter()
            .any(|l| l.starts_with("bad.toml:4:10: ") && l.contains("rate_per_s")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|l| l.starts_with("bad.toml:6:15: ") && l.contains("cancel_rate")),
        "{got:?}"
    );
    // Keys that shape synthetic jobs cannot be honoured when the server's jobs are served.
    let got = errors(
        &format!("{MINIMAL}{target}[jobs]\nsource = \"server\"\nsecrets = 2\nduration = \"5s\"\n"),
        &[],
    );
    for key in ["secrets", "duration"] {
        assert!(
            got.iter()
                .any(|l| l.contains(&format!("`{key}` shapes fleetsim's synthetic jobs"))),
            "{key}: {got:?}"
        );
    }
    let got = errors(
        &format!(
            "{MINIMAL}{jobs}source = \"pipelines\"\nduration = \"5s\"\nsteps = 4\n\
             [[jobs.pipelines]]\nid = 1\nproject = \"p\"\n"
        ),
        &[],
    );
    assert!(got.iter().any(|l| l.contains("`steps` shapes")), "{got:?}");
    assert!(!got.iter().any(|l| l.contains("`duration`")), "{got:?}");
    let got = errors(
        &format!("{MINIMAL}{jobs}source = \"pipelines\"\ncancel_rate = 0.1\n"),
        &[],
    );
    assert!(!got.iter().any(|l| l.contains("cancel_rate")), "{got:?}");
    assert!(
        got.iter()
            .any(|l| l.contains("at least one [[jobs.pipelines]]")),
        "{got:?}"
    );
    let got = errors(&format!("{MINIMAL}{jobs}[[jobs.pipelines]]\nid = 0\n"), &[]);
    assert!(
        got.iter()
            .any(|l| l.contains("[[jobs.pipelines]] is read only with")),
        "{got:?}"
    );
}

#[test]
fn server_pipelines_load_and_reach_the_emulator_config() {
    // Goal: `[[server.pipelines]]` loads with defaults (pool = server.pool, one job, the
    // checkout + script steps), reaches the embedded emulator's config, and a bad entry is
    // reported at its own file:line:col with the emulator's reason.
    let text = "[run]\nduration = \"10s\"\n[server]\npool = \"linux\"\n\
                [[server.pipelines]]\nid = 1\nname = \"ci\"\nproject = \"Demo\"\n\
                [[server.pipelines]]\nid = 2\nname = \"nightly\"\nproject = \"Demo\"\n\
                jobs = 4\nsteps = [\"Checkout\", \"Bash\", \"PublishTestResults\"]\n";
    let s = load_str("p.toml", text, &[]).unwrap();
    let config = s.server_config("pat", fleetsim_core::crypto::CryptoMode::Modelled);
    assert_eq!(config.pipelines.len(), 2);
    assert_eq!(config.pipelines[0].pool, "linux");
    assert_eq!(config.pipelines[0].steps, ["Checkout", "CmdLine"]);
    assert_eq!(config.pipelines[1].jobs, 4);
    config.validate().unwrap();

    let bad = "[run]\nduration = \"10s\"\n\
               [[server.pipelines]]\nid = 1\nname = \"ci\"\nproject = \"Demo\"\npool = \"gpu\"\n\
               [[server.pipelines]]\nname = \"x\"\n";
    let lines = errors(bad, &[]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("bad.toml:7:8:") && l.contains("\"gpu\"")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("project")) && lines.iter().any(|l| l.contains("`id`")),
        "{lines:?}"
    );
}

// Goal: shards of one run agree on the scenario digest whatever the file's formatting or the
// target, and any change to what the fleet does changes it.
#[test]
fn digest_names_the_fleet_not_the_file() {
    // The source is written out: without it, a target changes the default source (and the
    // digest with it, rightly: the fleet then queues nothing).
    let text = "[run]\nduration = \"40s\"\n[fleet]\nagents = 20\n[jobs]\nsource = \"emulator\"\nrate_per_s = 1\n";
    let a = fleetsim_scenario::load_str("a.toml", text, &[]).unwrap();
    let spaced = "[run]\nduration   =   \"40s\"\n\n[fleet]\nagents = 20 # the fleet\n[jobs]\nrate_per_s=1.0\nsource=\"emulator\"\n";
    let b = fleetsim_scenario::load_str("elsewhere/a.toml", spaced, &[]).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.digest().len(), 16);
    let targeted = fleetsim_scenario::load_str(
        "a.toml",
        text,
        &["target.url=https://dev.azure.com/org".into()],
    )
    .unwrap();
    assert_eq!(a.digest(), targeted.digest());
    let more = fleetsim_scenario::load_str("a.toml", text, &["fleet.agents=21".into()]).unwrap();
    assert_ne!(a.digest(), more.digest());
    let seeded = fleetsim_scenario::load_str("a.toml", text, &["run.seed=9".into()]).unwrap();
    assert_ne!(a.digest(), seeded.digest());
    // Thresholds judge the run without shaping it: merged shards may be judged by others.
    let judged = fleetsim_scenario::load_str(
        "a.toml",
        text,
        &["thresholds.\"jobs.started\"=\">= 1\"".into()],
    )
    .unwrap();
    assert_eq!(a.digest(), judged.digest());
}

#[test]
fn type_errors_speak_the_users_words() {
    // Goal: a value of the wrong type gets the key path, what the key takes (with its range
    // when it has one) and what was found, for every kind of value a scenario holds — never a
    // Rust type (`u32`, `f64`, `struct RawFleet`) or serde's "invalid type". Issue 12, item 5.
    let cases: &[(&str, &[&str], &str)] = &[
        // A whole number with a range.
        (
            "[fleet]\nagents = \"many\"\n",
            &[],
            "bad.toml:4:10: fleet.agents: expected a whole number ≥ 1, found the string \
             \"many\" (at most 10000000 agents)",
        ),
        // A whole number below its type's least value, without a range of its own.
        (
            "[jobs]\nrate_per_s = 1\nsecrets = -1\n",
            &[],
            "bad.toml:5:11: jobs.secrets: expected a whole number ≥ 0, found -1",
        ),
        // A fraction given where a whole number goes.
        (
            "[fleet]\nagents = 2.5\n",
            &[],
            "bad.toml:4:10: fleet.agents: expected a whole number ≥ 1, found 2.5 (at most \
             10000000 agents)",
        ),
        // A number.
        (
            "[jobs]\nrate_per_s = \"fast\"\n",
            &[],
            "bad.toml:4:14: jobs.rate_per_s: expected a number ≥ 0, found the string \"fast\" \
             (at most 100000 jobs per second)",
        ),
        // A string.
        (
            "[target]\nurl = 5\n",
            &[],
            "bad.toml:4:7: target.url: expected a string in quotes, found 5",
        ),
        // A boolean.
        (
            "[agent]\nmask_secrets = \"yes\"\n",
            &[],
            "bad.toml:4:16: agent.mask_secrets: expected true or false, found the string \"yes\"",
        ),
        // A duration.
        (
            "[fleet]\nramp_up = true\n",
            &[],
            "bad.toml:4:11: fleet.ramp_up: expected a duration string with a unit, such as \
             \"30s\" or \"500ms\", found true",
        ),
        // A table.
        (
            "[target]\nproxy = 5\n",
            &[],
            "bad.toml:4:9: target.proxy: expected a table: a [target.proxy] section or { key = \
             value, … }, found 5",
        ),
        // A list.
        (
            "[jobs]\nrate_per_s = 1\ndemands = \"docker\"\n",
            &[],
            "bad.toml:5:11: jobs.demands: expected a list of strings, such as [\"a\", \"b\"], \
             found the string \"docker\"",
        ),
        // An unknown key, and an unknown section.
        (
            "[fleet]\nagentz = 3\n",
            &[],
            "bad.toml:4:1: fleet.agentz: `fleet` has no such key; write one of agents, \
             capabilities, connection_mode, distinct_keys, key_bits, key_cache_dir, \
             name_prefix, ramp_up, register_mode",
        ),
        (
            "[flet]\nagents = 3\n",
            &[],
            "bad.toml:3:2: flet: a scenario has no such section; write one of agent, faults, \
             fleet, jobs, network, run, server, target, thresholds",
        ),
        // An unknown choice.
        (
            "[[faults]]\nkind = \"agent_crsh\"\nat = \"1s\"\n",
            &[],
            "bad.toml:4:8: faults[0].kind: expected one of \"agent_crash\", \"partition\", \
             \"server_stall\", \"server_restart\", \"token_expiry_storm\"; found the string \
             \"agent_crsh\"",
        ),
        // A pair of the wrong length.
        (
            "[jobs]\narrival = { profile = [[\"0s\"]] }\n",
            &[],
            "bad.toml:4:24: jobs.arrival.profile[0]: expected a list of exactly 2 values \
             ([at, rate_per_s], such as [\"10m\", 4.0]), found 1",
        ),
        // Through `--set`, the override names the path.
        (
            "",
            &["fleet.agents=many"],
            "bad.toml: --set fleet.agents=many: expected a whole number ≥ 1, found the string \
             \"many\" (at most 10000000 agents)",
        ),
    ];
    for (text, overrides, want) in cases {
        let text = format!("{MINIMAL}{text}");
        let got = errors(&text, overrides);
        assert_eq!(got, vec![want.to_string()], "for:\n{text}");
        for rust in [
            "u32",
            "u64",
            "f64",
            "invalid type",
            "invalid value",
            "struct ",
            "`,",
        ] {
            assert!(!got[0].contains(rust), "{rust:?} in {}", got[0]);
        }
    }
}

#[test]
fn numbers_out_of_range_name_the_range() {
    // Goal: every number is checked against its range, including rates far beyond any server
    // (`1e308` used to pass and spin the run), durations beyond a year, and values only
    // absurd in combination (bursts averaging more than the rate limit).
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "",
            &["jobs.rate_per_s=1e308"],
            "bad.toml: --set jobs.rate_per_s=1e308: must be between 0 and 100000 jobs per \
             second, found 1e308",
        ),
        (
            "[jobs]\nrate_per_s = nan\n",
            &[],
            "bad.toml:4:14: jobs.rate_per_s: must be between 0 and 100000 jobs per second, \
             found NaN",
        ),
        (
            "[agent]\nauth_retries_max = 300\n",
            &[],
            "bad.toml:4:20: agent.auth_retries_max: must be between 0 and 100 re-mints, found \
             300",
        ),
        (
            "[agent]\nlog_page_bytes_max = \"2GiB\"\n",
            &[],
            "bad.toml:4:22: agent.log_page_bytes_max: must be between 1 and 1073741824 bytes, \
             found 2147483648",
        ),
        (
            "[[server.stations]]\nname = \"all\"\nworkers = 0\n",
            &[],
            "bad.toml:5:11: server.stations[0].workers: must be between 1 and 1000000 workers, \
             found 0",
        ),
        (
            "[fleet]\nramp_up = \"400d\"\n",
            &[],
            "bad.toml:4:11: fleet.ramp_up: a duration is at most 365 days (\"365d\"), found \"400d\"",
        ),
        (
            "[jobs]\narrival = { bursts = { size = 1000, every = \"1ms\" } }\n",
            &[],
            "bad.toml:4:45: jobs.arrival.bursts.every: 1000 jobs every 1ms is 1000000 jobs per \
             second on average; at most 100000: make `every` longer or `size` smaller",
        ),
        (
            "[jobs]\narrival = { profile = [[\"0s\", 1e9]] }\n",
            &[],
            "bad.toml:4:24: jobs.arrival.profile[0]: rate must be between 0 and 100000 jobs per \
             second, found 1000000000",
        ),
    ];
    for (text, overrides, want) in cases {
        let text = format!("{MINIMAL}{text}");
        assert_eq!(
            errors(&text, overrides),
            vec![want.to_string()],
            "for:\n{text}"
        );
    }
}

// Goal: an `agent.assertion_lifetime` the emulator (like Azure DevOps) would refuse, longer
// than 5 minutes plus the server's JWT skew, is refused by `validate` at the key with what to
// write, in the file and through `--set`; up to that bound it loads, and a longer
// `server.jwt_skew` moves the bound.
#[test]
fn assertion_lifetimes_the_server_refuses_are_refused() {
    let text = format!("{MINIMAL}[agent]\nassertion_lifetime = \"11m\"\n");
    assert_eq!(
        errors(&text, &[]),
        [
            "bad.toml:4:22: agent.assertion_lifetime: must be at most 10m (5m plus \
          server.jwt_skew 5m): the emulator, like Azure DevOps, refuses longer client \
          assertions and every token exchange would fail; write \"5m\", the real agent's \
          lifetime"
        ]
    );
    let set = errors(MINIMAL, &["agent.assertion_lifetime=1h"]);
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(
        set[0].contains("--set agent.assertion_lifetime=1h: must be at most 10m"),
        "{set:?}"
    );
    let at_bound = format!("{MINIMAL}[agent]\nassertion_lifetime = \"10m\"\n");
    assert!(load_str("ok.toml", &at_bound, &[]).is_ok());
    let skewed = format!("{text}[server]\njwt_skew = \"6m\"\n");
    assert!(load_str("ok.toml", &skewed, &[]).is_ok());
}

// Goal: `[server.deadlines]` sets the embedded emulator's head, body and keep-alive deadlines
// (left out: the emulator's defaults); a value outside its range is refused at the value, and
// any of them with a target is refused, since fleetsim cannot set a foreign server's deadlines.
#[test]
fn server_deadlines_load_with_ranges_and_are_refused_with_a_target() {
    let text = format!(
        "{MINIMAL}[server.deadlines]\nhead_timeout = \"2s\"\nkeep_alive_timeout = \"90s\"\n"
    );
    let s = load_str("ok.toml", &text, &[]).unwrap();
    let d = &s.server.deadlines;
    assert_eq!(d.head_timeout, Some(Duration::from_secs(2)));
    assert_eq!(d.body_timeout, None);
    assert_eq!(d.keep_alive_timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        load_str("ok.toml", MINIMAL, &[]).unwrap().server.deadlines,
        fleetsim_scenario::ServerDeadlines::default()
    );
    assert_eq!(
        errors(&text, &["server.deadlines.body_timeout=\"2h\""]),
        [
            "bad.toml: --set server.deadlines.body_timeout=\"2h\": must be between 0.1 and 3600 \
          seconds, found 7200"
        ]
    );
    assert_eq!(
        errors(&text, &["server.deadlines.head_timeout=\"10ms\""]),
        [
            "bad.toml: --set server.deadlines.head_timeout=\"10ms\": must be between 0.1 and 3600 \
          seconds, found 0.01"
        ]
    );
    let got = errors(&text, &["target.url=\"http://127.0.0.1:9/\""]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(
            "bad.toml:3:1: server.deadlines: the embedded emulator's deadlines; a target keeps \
             its own"
        ),
        "{got:?}"
    );
}
