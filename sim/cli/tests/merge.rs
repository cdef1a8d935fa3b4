//! `fleetsim merge` and `fleetsim plan --shard/--merge` through the binary: shard reports built
//! here (no live run) merge into one report whose thresholds decide the exit code (0 pass,
//! 1 fail, 3 incomplete), invalid shard sets exit 2 naming the files, and a sweep split over two
//! "machines" merges into the CSV one machine writes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::{Scratch, fleetsim, text};

use fleetsim_core::SimTime;
use fleetsim_core::event::{Event, Outcome};
use fleetsim_core::ops::Operation;
use fleetsim_core::proto::TaskResult;
use fleetsim_core::shard::Shard;
use fleetsim_metrics::{Mode, Recorder, Report, RunMeta};

fn scratch(name: &str) -> Scratch {
    support::scratch("merge", name)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The scenario the "shards" ran. `jobs.started >= 6` holds only for the whole run: each shard
/// alone picked up 2 jobs, so a pass proves the thresholds were judged on the merged report.
fn scenario(dir: &Path, name: &str, pickup_p99: &str) -> PathBuf {
    scenario_for(dir, name, pickup_p99, "10s")
}

/// `scenario` with another run duration: a different run, so a different digest.
fn scenario_for(dir: &Path, name: &str, pickup_p99: &str, duration: &str) -> PathBuf {
    let p = dir.join(name);
    let body = format!(
        r#"[run]
name = "merge-test"
duration = "{duration}"
seed = 7

[fleet]
agents = 3

[jobs]
rate_per_s = 0.6

[thresholds]
"job_pickup.p99" = "{pickup_p99}"
"jobs.started" = ">= 6"
"#
    );
    std::fs::write(&p, body).expect("write scenario");
    p
}

fn digest(scenario: &Path) -> String {
    fleetsim_scenario::load(scenario, &[])
        .expect("the test scenario loads")
        .digest()
}

/// Shard `index` of 3 of a run of 3 agents and 6 jobs: arrival k is queued by shard k mod 3 and
/// picked up 300 ms later by agent (k + 1) mod 3, i.e. always by another shard's agent.
fn shard_report(index: u32, digest: &str, seed: u64) -> Report {
    let shard = Shard::new(index, 3).expect("shard");
    let at = SimTime::from_millis;
    let mut rec = Recorder::new();
    rec.set_fleet_size(1);
    if shard.has_agent(index) {
        rec.record(&Event::Op {
            agent: index,
            op: Operation::PollMessage,
            intended: at(10),
            done: at(40),
            outcome: Outcome::Ok,
        });
    }
    for k in 0..6u64 {
        let (id, agent) = (1_000 + k, ((k + 1) % 3) as u32);
        if shard.has_job(k) {
            rec.record(&Event::JobQueued {
                request_id: id,
                at: at(1_000 * k),
            });
        }
        if shard.has_agent(agent) {
            rec.record(&Event::JobPickedUp {
                agent,
                request_id: id,
                at: at(1_000 * k + 300),
            });
            rec.record(&Event::JobFinished {
                agent,
                request_id: id,
                result: TaskResult::Succeeded,
                at: at(1_000 * k + 800),
            });
        }
    }
    let run = RunMeta {
        mode: Mode::Live,
        seed,
        wall_s: 12.0,
        scenario: "merge-test".to_string(),
        duration_s: 10.0,
        started_unix_us: Some(1_796_000_000_000_000),
        shard: Some(shard),
        scenario_digest: Some(digest.to_string()),
        ..RunMeta::default()
    };
    Report::from_recorder(&rec, run)
}

/// Write the shard reports; returns their paths.
fn write_shards(dir: &Path, reports: &[Report]) -> Vec<String> {
    reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = dir.join(format!("shard-{i}.json"));
            let mut bytes = Vec::new();
            r.write_json(&mut bytes).expect("render");
            std::fs::write(&p, bytes).expect("write report");
            path(&p)
        })
        .collect()
}

fn three(digest: &str) -> Vec<Report> {
    (0..3).map(|i| shard_report(i, digest, 7)).collect()
}

fn merge(files: &[String], extra: &[&str]) -> Output {
    let mut args: Vec<&str> = vec!["merge"];
    args.extend(files.iter().map(String::as_str));
    args.extend_from_slice(extra);
    fleetsim(&args)
}

#[test]
fn merged_thresholds_pass_and_every_output_is_written() {
    // Goal: three shards merge into one report with every cross-shard pickup joined, the
    // scenario's thresholds (one only the whole run meets) pass on it: exit 0, and the JSON,
    // JUnit and HTML reports are written.
    let dir = scratch("pass");
    let sc = scenario(&dir, "s.toml", "< 1s");
    let files = write_shards(&dir, &three(&digest(&sc)));
    let (out, junit, html) = (dir.join("m.json"), dir.join("m.xml"), dir.join("m.html"));
    let res = merge(
        &files,
        &[
            "--scenario",
            &path(&sc),
            "--out",
            &path(&out),
            "--junit",
            &path(&junit),
            "--html",
            &path(&html),
        ],
    );
    assert_eq!(res.status.code(), Some(0), "{}", text(&res));
    assert!(
        String::from_utf8_lossy(&res.stdout).contains("merged 3 shards from"),
        "{}",
        text(&res)
    );
    let merged: Report =
        Report::read_json(std::fs::File::open(&out).expect("merged report")).expect("report");
    assert_eq!(merged.run.shards, Some(3));
    assert_eq!(merged.run.shard, None);
    assert_eq!(merged.jobs.started, 6);
    assert_eq!(merged.job_pickup.latency_s.count, 6, "every pickup joined");
    assert_eq!(
        (merged.job_pickup.pending, merged.job_pickup.unmatched),
        (0, 0)
    );
    assert!((merged.job_pickup.latency_s.p99 - 0.3).abs() < 0.001);
    assert_eq!(merged.thresholds.len(), 2);
    assert!(merged.thresholds_passed(), "{:?}", merged.thresholds);
    assert!(
        std::fs::read_to_string(&junit)
            .expect("junit")
            .contains("jobs.started")
    );
    assert!(
        std::fs::read_to_string(&html)
            .expect("html")
            .contains("<html")
    );
}

#[test]
fn a_failing_threshold_on_the_merged_run_exits_1() {
    // Goal: the verdict is the merged run's: a pickup p99 above the limit fails with exit 1.
    // The shards ran with a looser limit: thresholds are not part of the digest, so a merge
    // may judge the same run by stricter ones.
    let dir = scratch("fail");
    let ran = scenario(&dir, "ran.toml", "< 1s");
    let sc = scenario(&dir, "strict.toml", "< 100ms");
    assert_eq!(digest(&ran), digest(&sc));
    let files = write_shards(&dir, &three(&digest(&ran)));
    let out = path(&dir.join("m.json"));
    let res = merge(&files, &["--scenario", &path(&sc), "--out", &out, "-q"]);
    assert_eq!(res.status.code(), Some(1), "{}", text(&res));
    assert!(
        String::from_utf8_lossy(&res.stdout).contains("job_pickup.p99"),
        "{}",
        text(&res)
    );
}

#[test]
fn invalid_shard_sets_exit_2_naming_the_files() {
    // Goal: a missing shard, a shard given twice, shards of different seeds, and a --scenario
    // that is not what the shards ran are usage errors (exit 2) that name what is wrong.
    let dir = scratch("invalid");
    let sc = scenario(&dir, "s.toml", "< 1s");
    let files = write_shards(&dir, &three(&digest(&sc)));
    let out = path(&dir.join("m.json"));
    let cases: [(Vec<String>, Vec<&str>, &str); 2] = [
        (files[..2].to_vec(), vec![], "shard 2/3 missing"),
        (
            vec![files[0].clone(), files[1].clone(), files[1].clone()],
            vec![],
            "are both shard 1/3",
        ),
    ];
    for (set, extra, want) in cases {
        let mut args = vec!["--out", out.as_str()];
        args.extend(extra);
        let res = merge(&set, &args);
        assert_eq!(res.status.code(), Some(2), "{want}: {}", text(&res));
        assert!(
            String::from_utf8_lossy(&res.stderr).contains(want),
            "{}",
            text(&res)
        );
    }

    let mut seeds = three(&digest(&sc));
    seeds[2] = shard_report(2, &digest(&sc), 8);
    let other = scratch("seeds");
    let files_seeds = write_shards(&other, &seeds);
    let res = merge(&files_seeds, &["--out", &out]);
    assert_eq!(res.status.code(), Some(2), "{}", text(&res));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("seed 8") && err.contains("seed 7"),
        "{}",
        text(&res)
    );
    assert!(
        err.contains("shard-2.json") && err.contains("shard-0.json"),
        "{err}"
    );

    let wrong = scenario_for(&dir, "wrong.toml", "< 1s", "20s");
    let res = merge(&files, &["--scenario", &path(&wrong), "--out", &out]);
    assert_eq!(res.status.code(), Some(2), "{}", text(&res));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains(&digest(&wrong)) && err.contains(&digest(&sc)),
        "both digests named: {err}"
    );
    assert!(
        !Path::new(&out).exists(),
        "nothing written for an invalid set"
    );
}

#[test]
fn a_merged_run_that_did_no_work_exits_3() {
    // Goal: a merged live run in which no agent got a token (no calls at all) is incomplete,
    // exit 3, as one process's run would be.
    let dir = scratch("incomplete");
    let empty: Vec<Report> = (0..2)
        .map(|i| {
            let run = RunMeta {
                mode: Mode::Live,
                seed: 7,
                scenario: "merge-test".to_string(),
                started_unix_us: Some(1_796_000_000_000_000),
                shard: Some(Shard::new(i, 2).expect("shard")),
                scenario_digest: Some("d".to_string()),
                ..RunMeta::default()
            };
            Report::from_recorder(&Recorder::new(), run)
        })
        .collect();
    let files = write_shards(&dir, &empty);
    let out = path(&dir.join("m.json"));
    let res = merge(&files, &["--out", &out]);
    assert_eq!(res.status.code(), Some(3), "{}", text(&res));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("phase token"),
        "{}",
        text(&res)
    );
}

/// D/D/4 in virtual time, short: a sweep of it runs in seconds.
const DD4: &str = r#"
[run]
duration = "5m"
warmup = "30s"

[fleet]
agents = 4

[jobs]
rate_per_s = 0.1
arrival = "constant"
duration = "20s"
steps = 1
log_lines_per_s = 0

[agent]
empty_poll_gap = "0s"

[thresholds]
"job_pickup.p99" = "< 2s"
"#;

#[test]
fn a_sweep_split_over_two_machines_merges_into_the_same_csv() {
    // Goal: `plan --vary` on one machine and its two shards (--shard 0/2, 1/2) merged with
    // `plan --merge` write byte-identical CSV; --find-max cannot be sharded (exit 2).
    let dir = scratch("plan");
    let sc = dir.join("dd4.toml");
    std::fs::write(&sc, DD4).expect("write");
    let sc = path(&sc);
    let vary = "jobs.rate_per_s=0.05,0.1,0.3";
    let one = path(&dir.join("one.csv"));
    let res = fleetsim(&["plan", &sc, "--vary", vary, "--csv", &one]);
    assert_eq!(res.status.code(), Some(0), "{}", text(&res));
    let mut parts = Vec::new();
    for i in 0..2 {
        let part = path(&dir.join(format!("plan-{i}.json")));
        let shard = format!("{i}/2");
        let res = fleetsim(&[
            "plan", &sc, "--vary", vary, "--shard", &shard, "--out", &part,
        ]);
        assert_eq!(res.status.code(), Some(0), "{}", text(&res));
        parts.push(part);
    }
    let merged = path(&dir.join("merged.csv"));
    let res = fleetsim(&["plan", "--merge", &parts[1], &parts[0], "--csv", &merged]);
    assert_eq!(res.status.code(), Some(0), "{}", text(&res));
    let (one, merged) = (
        std::fs::read_to_string(&one).expect("one-machine csv"),
        std::fs::read_to_string(&merged).expect("merged csv"),
    );
    assert_eq!(one.lines().count(), 4, "{one}");
    assert_eq!(merged, one);

    let res = fleetsim(&[
        "plan",
        "--merge",
        &parts[0],
        "--csv",
        &path(&dir.join("x.csv")),
    ]);
    assert_eq!(res.status.code(), Some(2), "{}", text(&res));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("plan shard 1/2 missing"),
        "{}",
        text(&res)
    );
    let res = fleetsim(&[
        "plan",
        &sc,
        "--find-max",
        "jobs.rate_per_s",
        "--lo",
        "0.05",
        "--hi",
        "0.3",
        "--shard",
        "0/2",
        "--out",
        &path(&dir.join("f.json")),
    ]);
    assert_eq!(res.status.code(), Some(2), "{}", text(&res));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("shard a --vary sweep instead"),
        "{}",
        text(&res)
    );
}
