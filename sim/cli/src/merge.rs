//! `fleetsim merge`: the shard reports of one run → the report of the whole run, judged.
//!
//! It reads the reports, lets `Report::merge_shards` check the set and add it, checks that
//! `--scenario` is the scenario the shards ran (its digest), judges that scenario's thresholds
//! on the merged report, and ends as a run would: exit 0, 1 (a threshold failed), 2 (not one
//! run's shards, or the wrong scenario) or 3 (the whole run did not do its work). It holds no
//! merge logic of its own.

use std::path::Path;

use anyhow::anyhow;
use fleetsim_metrics::{Mode, Report, render_summary};

use crate::Failure;
use crate::args::MergeArgs;
use crate::commands::{Outputs, finish_outputs, load_with, read_report};

/// `fleetsim merge`.
pub fn run(args: MergeArgs) -> Result<u8, Failure> {
    let inputs = args
        .reports
        .iter()
        .map(|p| Ok((p.display().to_string(), read_report(p)?)))
        .collect::<Result<Vec<_>, Failure>>()?;
    let scenario = args
        .scenario
        .as_deref()
        .map(|p| load_with(p, &args.overrides).map(|s| (p, s)))
        .transpose()?;
    let mut merged = Report::merge_shards(&inputs)
        .map_err(|e| Failure::usage(anyhow!("the reports are not one run's shards: {e}")))?;
    match &scenario {
        Some((path, s)) => {
            // Every report, not only the merged run's: whole-run reports merge unchecked.
            let digest = s.digest();
            for (label, report) in &inputs {
                check_digest(path, &digest, label, report)?;
            }
            merged.evaluate_thresholds(&s.thresholds);
        }
        None => eprintln!(
            "note: no --scenario, so no thresholds were judged on the merged run; add \
             --scenario SCENARIO (with the shards' --set overrides) to judge them"
        ),
    }
    // A whole live run that never got a token, a session or a finished job measured nothing,
    // however many shards it had: exit 3, as `run` would.
    if merged.run.mode == Mode::Live {
        merged.incomplete = fleetsim_metrics::incomplete::check(&merged);
    }
    let mut summary = render_summary(&merged);
    summary.push_str(&format!(
        "\n  merged {} from {}\n",
        match merged.run.shards {
            Some(n) => format!("{n} shards"),
            None => format!("{} whole-run reports", inputs.len()),
        },
        inputs
            .iter()
            .map(|(label, _)| label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let outputs = Outputs {
        quiet: args.quiet,
        out: Some(&args.out),
        junit: args.junit.as_deref(),
        html: args.html.as_deref(),
    };
    finish_outputs(&outputs, &merged, summary, false)
}

/// `--scenario` must be what the shards ran: the same digest (content without the target).
/// Reports without a digest (written before shards existed) cannot be checked, so judging
/// them against a scenario is refused rather than trusted.
fn check_digest(path: &Path, digest: &str, label: &str, report: &Report) -> Result<(), Failure> {
    match &report.run.scenario_digest {
        Some(d) if d == digest => Ok(()),
        Some(d) => Err(Failure::usage(anyhow!(
            "--scenario {} has digest {digest} but {label} ran scenario {:?} with digest {d}; \
             give the scenario file the shards ran, with the same --set overrides (a shard \
             run's --seed N is --set run.seed=N)",
            path.display(),
            report.run.scenario
        ))),
        None => Err(Failure::usage(anyhow!(
            "{label} carries no scenario digest (run.scenario_digest), so --scenario {} cannot \
             be checked against it; merge without --scenario",
            path.display()
        ))),
    }
}
