//! `fleetsim run --processes N`: the flags to `fleetsim_live::fleet::processes`, then the shard
//! children's reports merged, judged and written as one run's, with one run's exit codes.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use fleetsim_core::shard::Shard;
use fleetsim_live::fleet::processes::{
    self, ProcessesError, ProcessesOptions, ProcessesOutcome, ShardExit,
};
use fleetsim_live::fleet::{EmulatorPlacement, FleetError, ProgressBoard};
use fleetsim_live::prom::Role;
use fleetsim_metrics::{Report, render_summary};

use crate::args::RunArgs;
use crate::commands::{
    Outcome, finish, interrupted, linger_metrics, load_scenario, parse_linger, progress,
    read_report, runtime, start_metrics,
};
use crate::{Failure, exit};

/// Run the scenario as `n` shard processes and report them as one run.
pub(crate) fn run(args: RunArgs, n: u32) -> Outcome {
    let mut overrides = args.common.overrides.clone();
    if let Some(url) = &args.target {
        overrides.push(format!("target.url={url:?}"));
    }
    let scenario = load_scenario(&args.common.scenario, &overrides, args.common.seed)?;
    let linger = parse_linger(&args.common)?;
    let program = std::env::current_exe()
        .context("cannot find this executable to start the shard processes")
        .map_err(Failure::run)?;
    let dir = shard_dir()?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        // This process's endpoint serves the emulator's series; the children serve theirs on
        // the next ports.
        let prom = start_metrics(args.common.metrics_addr, Role::Emulator, Shard::WHOLE)?;
        let board = ProgressBoard::new();
        let display = (!args.common.quiet).then(|| progress::spawn(board.clone()));
        let json = args
            .progress_json
            .then(|| progress::spawn_json(board.clone()));
        let opts = ProcessesOptions {
            processes: n,
            program,
            scenario_path: args.common.scenario.clone(),
            overrides: args.common.overrides.clone(),
            seed: args.common.seed,
            out_dir: dir.clone(),
            emulator: if args.emulator_process {
                EmulatorPlacement::ChildProcess
            } else {
                EmulatorPlacement::Auto
            },
            metrics_addr: args.common.metrics_addr,
            progress: Some(board),
            prom: prom.is_some(),
        };
        let result = processes::run(&scenario, opts, interrupted()).await;
        if let Some(d) = display {
            d.finish().await;
        }
        if let Some(j) = json {
            j.finish().await;
        }
        let outcome = result.map_err(|e| match e {
            ProcessesError::Usage(_) | ProcessesError::Fleet(FleetError::Unsupported(_)) => {
                Failure::usage(e)
            }
            e => Failure::run(anyhow::Error::new(e).context("the run could not be carried out")),
        })?;
        Ok::<_, Failure>((outcome, prom))
    });
    let (outcome, prom) = match result {
        Ok(r) => r,
        Err(f) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(f);
        }
    };
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    if outcome.start_unix_ms.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("fleetsim: interrupted before the shards started; nothing was measured");
        return Ok(exit::RUN_FAILED);
    }

    let (reports, failed) = read_shard_reports(&outcome.shards);
    if reports.is_empty() {
        return Err(Failure::run(anyhow::anyhow!(
            "no shard process wrote a report (they are kept in {}):\n  {}",
            dir.display(),
            failed.join("\n  ")
        )));
    }
    let labels: Vec<String> = reports.iter().map(|(label, _)| label.clone()).collect();
    let mut report = merge_shards(reports, failed.is_empty())
        .and_then(|r| with_emulator(r, &outcome))
        .context("the shard reports cannot be merged")
        .map_err(Failure::run)?;
    report.run.shard = None;
    report.run.scenario_digest = Some(scenario.digest());
    report.run.started_unix_us = outcome.start_unix_ms.map(|ms| ms * 1_000);
    report.run.wall_s = outcome.wall.as_secs_f64();
    report.evaluate_thresholds(&scenario.thresholds);
    if !outcome.interrupted {
        // As for one process: a run that never got a token, a session or a finished job
        // measured nothing and fails (exit 3) whatever its thresholds say.
        report.incomplete = fleetsim_metrics::incomplete::check(&report);
    }

    let mut summary = render_summary(&report);
    summary.push_str(&format!(
        "\n  {n} processes, merged from shard reports: {}\n  target {}{}\n",
        labels.join(", "),
        outcome.target_url,
        outcome
            .placement
            .map_or(String::new(), |p| format!(" ({p})")),
    ));
    let mut code = finish(&args.common, &report, summary, outcome.interrupted)?;
    if failed.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        // One shard's part of the fleet is missing from the report: the run did not do its
        // work, whatever the rest says.
        eprintln!(
            "fleetsim: {} of {n} shard processes failed; the report holds the others (shard \
             reports kept in {}):\n  {}",
            failed.len(),
            dir.display(),
            failed.join("\n  ")
        );
        code = exit::RUN_FAILED;
    }
    rt.block_on(linger_metrics(prom, linger));
    Ok(code)
}

/// The shards' reports, labelled, and a description of every shard that failed: one that
/// exited other than 0 (passed), 1 (its thresholds failed) or 3 (it was incomplete or
/// interrupted, which the merged report judges again), was killed, or wrote no report.
fn read_shard_reports(shards: &[ShardExit]) -> (Vec<(String, Report)>, Vec<String>) {
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for s in shards {
        let finished = matches!(
            s.code,
            Some(c) if c == i32::from(exit::OK)
                || c == i32::from(exit::GATE_FAILED)
                || c == i32::from(exit::RUN_FAILED)
        );
        match read_report(&s.report) {
            Ok(r) if finished => reports.push((
                format!("shard {} (exit {})", s.shard, s.code.unwrap_or(0)),
                r,
            )),
            Ok(_) => failed.push(s.describe()),
            Err(e) => failed.push(format!("{}; no report: {:#}", s.describe(), e.error)),
        }
    }
    (reports, failed)
}

/// Merge the shards' reports into one with the validated shard merge (`Report::merge_shards`):
/// one set of shards of this scenario, each index once, added on the earliest start, pickups
/// whose queued and picked halves fell in different shards joined. When a child failed
/// (`complete` false) the survivors still add up, as the separate runs they now are, so the
/// report shows what was measured; the caller fails the run. The emulator's counters are
/// taken out of every shard first: each shard read the same shared emulator at a different
/// moment, and the parent's one reading after every shard finished (`with_emulator`) is the
/// run's.
fn merge_shards(reports: Vec<(String, Report)>, complete: bool) -> anyhow::Result<Report> {
    let reports: Vec<(String, Report)> = reports
        .into_iter()
        .map(|(label, mut r)| {
            r.emulator = None;
            r.emulator_lifetime = None;
            r.jobs.requeued = 0;
            if !complete {
                r.run.shard = None;
            }
            (label, r)
        })
        .collect();
    Ok(Report::merge_shards(&reports)?)
}

/// The merged report with the parent's readings of the shared emulator, before the children
/// started and after they ended: the counters' change between them (and the requeues it
/// holds), the lifetime totals apart, and, for an embedded emulator, its crypto totals.
fn with_emulator(report: Report, outcome: &ProcessesOutcome) -> anyhow::Result<Report> {
    let mut rec = report.to_recorder()?;
    if let Some(end) = &outcome.emulator {
        rec.set_server_readings(outcome.emulator_at_start.clone(), end.clone());
    }
    for ev in &outcome.emulator_crypto {
        rec.record(ev);
    }
    Ok(Report::from_recorder(&rec, report.run.clone()))
}

/// A fresh directory only this user can enter, for the shard reports.
fn shard_dir() -> Result<PathBuf, Failure> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("fleetsim-shards-{}-{nanos}", std::process::id()));
    DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(Failure::run)?;
    Ok(dir)
}
