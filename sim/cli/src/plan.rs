//! `fleetsim plan`: capacity planning from the command line. It turns the flags into scenario
//! overrides (profile, seed, thresholds, proportional scaling) and calls `fleetsim_des::plan`
//! (sweep, find-max or find-min) with `--seeds` seeds per point (the run seed and the next
//! N-1), then prints the table (each metric's mean ± its 95 % interval over the seeds) and
//! writes the CSV, SVG and HTML page.
//!
//! With `--shard I/N` it runs one machine's share of a `--vary` sweep and writes it with `--out`;
//! `--merge` reads every shard's file and prints the table one machine would have printed
//! (`fleetsim_des::plan::merge_plan_shards` checks the set).
//!
//! It never simulates by itself and holds no search logic; a plan's exit code says whether the
//! plan could be made (0), not whether every row passed — failing rows are the answer. A search
//! whose good end already fails (find-max: --lo; find-min: --hi) exits 1.

use std::path::Path;

use anyhow::{Context, anyhow};
use fleetsim_core::shard::Shard;
use fleetsim_des::plan::{self, PlanPoint, PlanShard};
use fleetsim_scenario::Scenario;

use crate::args::PlanArgs;
use crate::{Failure, exit};

/// Most values a `--vary` list may hold (each one is a whole simulation).
pub const MAX_VALUES: usize = 256;

/// `--vary KEY=V1,V2,…` → (key, values); every problem is a usage error that says what to write.
pub fn parse_vary(spec: &str) -> Result<(String, Vec<String>), String> {
    let example = "write e.g. --vary fleet.agents=1000,2000,4000";
    let (key, values) = spec
        .split_once('=')
        .ok_or_else(|| format!("--vary {spec:?}: expected KEY=V1,V2,…; {example}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("--vary {spec:?}: the key is empty; {example}"));
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!(
            "--vary {spec:?}: an empty value (two commas, or a trailing comma); {example}"
        ));
    }
    if values.len() > MAX_VALUES {
        return Err(format!(
            "--vary: {} values is too many (at most {MAX_VALUES})",
            values.len()
        ));
    }
    Ok((key.to_string(), values))
}

/// `--threshold 'job_pickup.p99 < 5s'` → the scenario override `thresholds."job_pickup.p99"="< 5s"`.
pub fn threshold_override(spec: &str) -> Result<String, String> {
    let at = spec.find(['<', '>', '=', '!']).ok_or_else(|| {
        format!("--threshold {spec:?}: expected METRIC OPERATOR VALUE, e.g. 'job_pickup.p99 < 5s'")
    })?;
    let (metric, condition) = (spec[..at].trim(), spec[at..].trim());
    if metric.is_empty() || metric.contains('"') {
        return Err(format!(
            "--threshold {spec:?}: no metric name before the operator"
        ));
    }
    fleetsim_metrics::thresholds::parse(metric, condition)
        .map_err(|e| format!("--threshold {spec:?}: {e}"))?;
    let quoted = serde_json::to_string(condition).map_err(|e| e.to_string())?;
    Ok(format!("thresholds.\"{metric}\"={quoted}"))
}

/// The value of the dotted `key` as the scenario would see it: the last `--set` of exactly that
/// key, else the file's value. Only numbers count (used to scale keys in proportion).
fn base_value(file_text: &str, overrides: &[String], key: &str) -> Option<f64> {
    if let Some(v) = overrides
        .iter()
        .rev()
        .filter_map(|o| o.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
    {
        return Some(v);
    }
    let mut node = &toml::Value::Table(file_text.parse::<toml::Table>().ok()?);
    for part in key.split('.') {
        node = node.as_table()?.get(part)?;
    }
    match node {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// One `--scale-with` key: its value at the scenario's base value of the varied key.
struct Scaled {
    key: String,
    base: f64,
    integer: bool,
}

/// Everything every point shares; `load` adds one point's value.
struct PlanLoader {
    path: std::path::PathBuf,
    overrides: Vec<String>,
    varied_base: Option<f64>,
    scaled: Vec<Scaled>,
}

impl PlanLoader {
    fn load(&self, extra: &[String]) -> Result<Scenario, String> {
        let mut all = self.overrides.clone();
        all.extend_from_slice(extra);
        if let Some(base) = self.varied_base {
            let value = extra
                .iter()
                .filter_map(|o| o.split_once('='))
                .find_map(|(_, v)| v.trim().parse::<f64>().ok())
                .ok_or_else(|| "--scale-with needs numeric values of the varied key".to_string())?;
            for s in &self.scaled {
                let v = s.base * value / base;
                all.push(if s.integer {
                    format!("{}={}", s.key, v.round().max(0.0) as i64)
                } else {
                    format!("{}={v}", s.key)
                });
            }
        }
        fleetsim_scenario::load(&self.path, &all).map_err(|d| d.to_string())
    }
}

/// `fleetsim plan`.
pub fn run(args: PlanArgs) -> Result<u8, Failure> {
    if !args.merge.is_empty() {
        return merge(&args);
    }
    let usage = |m: String| Failure::usage(anyhow!(m));
    let Some(scenario_path) = args.scenario.as_deref() else {
        return Err(usage(
            "give a scenario file, or --merge plan-*.json to join shard results".into(),
        ));
    };
    let shard = args
        .shard
        .as_deref()
        .map(|s| {
            s.parse::<Shard>()
                .map_err(|e| usage(format!("--shard {s:?}: {e}")))
        })
        .transpose()?;
    let search_key = match (&args.find_max, &args.find_min) {
        (Some(k), None) => Some((k, plan::Direction::Max)),
        (None, Some(k)) => Some((k, plan::Direction::Min)),
        _ => None,
    };
    if shard.is_some() && search_key.is_some() {
        return Err(usage(
            "--find-max/--find-min cannot be split with --shard: the bisection is sequential \
             (each point depends on the last); shard a --vary sweep instead, e.g. --vary \
             KEY=V1,V2,… --shard I/N --out plan-I.json"
                .into(),
        ));
    }
    if args.out.is_some() && search_key.is_some() {
        return Err(usage(
            "--out writes a --vary sweep's result for `plan --merge`; a --find-max/--find-min \
             search has none: write its table with --csv"
                .into(),
        ));
    }
    let mut overrides = Vec::new();
    if let Some(profile) = &args.profile {
        overrides = crate::calibrate::with_profile(profile, &overrides)?;
    }
    overrides.extend(args.overrides.iter().cloned());
    for t in &args.thresholds {
        overrides.push(threshold_override(t).map_err(usage)?);
    }
    if let Some(seed) = args.seed {
        overrides.push(format!("run.seed={seed}"));
    }
    let (key, sweep_values, bracket) = match (&args.vary, search_key) {
        (Some(spec), None) => {
            if args.lo.is_some() || args.hi.is_some() {
                return Err(usage(
                    "--lo/--hi bound a --find-max or --find-min search; a --vary sweep runs \
                     exactly its values"
                        .into(),
                ));
            }
            let (key, values) = parse_vary(spec).map_err(usage)?;
            (key, values, None)
        }
        (None, Some((key, direction))) => {
            let (lo, hi) = match (&args.lo, &args.hi) {
                (Some(lo), Some(hi)) => (lo, hi),
                _ => return Err(usage(format!("--{direction} KEY needs --lo A and --hi B"))),
            };
            let integer = lo.parse::<i64>().is_ok() && hi.parse::<i64>().is_ok();
            let num = |flag: &str, v: &str| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| usage(format!("{flag} {v:?}: not a number")))
            };
            let (lo, hi) = (num("--lo", lo)?, num("--hi", hi)?);
            if lo >= hi {
                return Err(usage(format!("--lo {lo} must be below --hi {hi}")));
            }
            (
                key.trim().to_string(),
                Vec::new(),
                Some((lo, hi, integer, direction)),
            )
        }
        _ => {
            return Err(usage(
                "give either --vary KEY=V1,V2,…, --find-max KEY --lo A --hi B or --find-min KEY \
                 --lo A --hi B"
                    .into(),
            ));
        }
    };
    if key == "run.seed" {
        return Err(usage(
            "the plan sets run.seed itself (--seed S --seeds N runs S … S+N-1 at every point); \
             vary another key"
                .into(),
        ));
    }
    // Check the scenario and the overrides once, before any thread starts.
    let base = crate::commands::load_with(scenario_path, &overrides)?;
    let seeds = plan::seeds_from(base.run.seed, usize::from(args.seeds));
    let scaled = scaled_keys(&args, scenario_path, &key, &overrides)?;
    let loader = PlanLoader {
        path: scenario_path.to_path_buf(),
        overrides,
        varied_base: scaled.as_ref().map(|(b, _)| *b),
        scaled: scaled.map(|(_, s)| s).unwrap_or_default(),
    };
    let load = |extra: &[String]| loader.load(extra);
    let threads = args.threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let heading = format!(
        "plan {} ({} agents, {} virtual, {}) on {threads} thread{}",
        scenario_path.display(),
        base.fleet.agents,
        fleetsim_core::dist::format_duration(base.run.duration),
        describe_seeds(&seeds),
        if threads == 1 { "" } else { "s" }
    );
    println!("{heading}");
    if base.thresholds.is_empty() {
        eprintln!(
            "warning: the scenario has no thresholds, so every point passes; add some with \
             --threshold 'job_pickup.p99 < 5s'"
        );
    }
    for s in &loader.scaled {
        println!(
            "  {} scales with {key}: {} at {key}={}",
            s.key,
            s.base,
            loader.varied_base.unwrap_or_default()
        );
    }
    let plan_failure = |e: plan::PlanError| match e {
        plan::PlanError::Scenario { .. } => Failure::usage(anyhow!(e)),
        plan::PlanError::Search { .. } => Failure {
            code: exit::GATE_FAILED,
            error: anyhow!(e),
        },
        other => Failure::run(anyhow!(other)),
    };
    let share: Vec<usize> =
        PlanShard::share(shard.unwrap_or_default(), sweep_values.len()).collect();
    if let Some(s) = shard {
        println!(
            "  shard {s}: points {share:?} of {} (merge the shards' --out files with plan --merge)",
            sweep_values.len()
        );
    }
    let (rows, answer) = match bracket {
        None => {
            let mine: Vec<String> = share.iter().map(|&i| sweep_values[i].clone()).collect();
            let rows = plan::sweep(&load, &key, &mine, &seeds, threads).map_err(plan_failure)?;
            (rows, None)
        }
        Some((lo, hi, integer, direction)) => {
            let spec = plan::SearchSpec {
                key: &key,
                low: lo,
                high: hi,
                integer,
                max_points: args.runs,
                threads,
                seeds: &seeds,
                direction,
            };
            let m = plan::search(&load, &spec).map_err(plan_failure)?;
            let mut rows = m.tried.clone();
            rows.sort_by(|a, b| {
                let v = |r: &plan::PlanRow| r.value.parse::<f64>().unwrap_or(f64::NAN);
                v(a).total_cmp(&v(b))
            });
            (rows, Some((m, integer)))
        }
    };
    print!("{}", plan::render_table(&key, &rows));
    let mut lines = vec![heading];
    if seeds.len() > 1 {
        let note = format!(
            "each figure: mean ± half-width of its 95 % Student-t interval over {} seeds; \
             verdict: pass = every seed, k/{} = k seeds passed",
            seeds.len(),
            seeds.len()
        );
        println!("{note}");
        lines.push(note);
    }
    if let Some((m, integer)) = &answer {
        for line in answer_lines(&key, m, *integer, seeds.len()) {
            println!("{line}");
            lines.push(line);
        }
    }
    write_out(args.csv.as_deref(), &plan::render_csv(&key, &rows), "csv")?;
    write_out(args.svg.as_deref(), &plan::render_svg(&key, &rows), "svg")?;
    if args.html.is_some() {
        let html = plan::render_html(&key, &rows, &base.thresholds, lines);
        write_out(args.html.as_deref(), &html, "html")?;
    }
    if let Some(path) = &args.out {
        let result = PlanShard {
            schema_version: plan::PLAN_SCHEMA_VERSION,
            scenario: base.run.name.clone(),
            scenario_digest: base.digest(),
            seed: base.run.seed,
            seeds: seeds.clone(),
            key: key.clone(),
            values: sweep_values,
            scale_with: args.scale_with.clone(),
            shard: shard.unwrap_or_default(),
            points: share
                .into_iter()
                .zip(rows)
                .map(|(index, row)| PlanPoint { index, row })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&result)
            .context("cannot render the plan result")
            .map_err(Failure::run)?;
        write_out(Some(path), &(text + "\n"), "plan")?;
    }
    Ok(exit::OK)
}

/// `seed 7` or `seeds 7…11`.
fn describe_seeds(seeds: &[u64]) -> String {
    match seeds {
        [one] => format!("seed {one}"),
        [first, .., last] => format!("{} seeds {first}…{last}", seeds.len()),
        [] => "no seeds".into(),
    }
}

/// The search's answer: the value every seed passes, where some seed first fails, and the
/// range where the seeds disagree.
fn answer_lines(key: &str, m: &plan::Found, integer: bool, seeds: usize) -> Vec<String> {
    let fmt = |v: f64| {
        if integer {
            format!("{}", v as i64)
        } else {
            format!("{v}")
        }
    };
    let (word, end) = match m.direction {
        plan::Direction::Max => ("largest", "--hi"),
        plan::Direction::Min => ("smallest", "--lo"),
    };
    let Some(f) = m.first_failing else {
        let raise = if m.direction == plan::Direction::Max {
            "raise --hi"
        } else {
            "lower --lo"
        };
        return vec![format!(
            "{key} = {} ({end}) still passes every seed; {raise} to find the limit",
            fmt(m.best)
        )];
    };
    let mut lines = vec![format!(
        "{word} passing {key} = {} (fails at {}; {} points × {seeds} seed{})",
        fmt(m.best),
        fmt(f),
        m.tried.len(),
        if seeds == 1 { "" } else { "s" }
    )];
    if seeds > 1 {
        let (a, b) = if m.best <= m.some_pass {
            (m.best, m.some_pass)
        } else {
            (m.some_pass, m.best)
        };
        let past = match m.direction {
            plan::Direction::Max => "above",
            plan::Direction::Min => "below",
        };
        let beyond = match m.none_pass {
            Some(n) => format!("; no seed passes at {}", fmt(n)),
            None => String::new(),
        };
        lines.push(if a == b {
            format!(
                "interval: {key} = {} — every seed passes there and none {past}{beyond}",
                fmt(m.best)
            )
        } else {
            format!(
                "interval: {key} in {}…{} — every seed passes at {}, some seed still passes \
                 at {}{beyond}",
                fmt(a),
                fmt(b),
                fmt(m.best),
                fmt(m.some_pass)
            )
        });
    }
    lines
}

/// `fleetsim plan --merge`: the shards' results → the table one machine would print.
fn merge(args: &PlanArgs) -> Result<u8, Failure> {
    let mut inputs = Vec::new();
    for path in &args.merge {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {label}"))
            .map_err(Failure::usage)?;
        let result: PlanShard = serde_json::from_str(&text)
            .with_context(|| format!("{label} is not a fleetsim plan result (plan --out)"))
            .map_err(Failure::usage)?;
        inputs.push((label, result));
    }
    let (key, rows) = plan::merge_plan_shards(&inputs)
        .map_err(|e| Failure::usage(anyhow!("the plan results are not one sweep's shards: {e}")))?;
    let first = &inputs[0].1;
    println!(
        "plan {} ({}) merged from {} shard{}: {}",
        first.scenario,
        describe_seeds(&first.seeds),
        first.shard.count,
        if first.shard.count == 1 { "" } else { "s" },
        inputs
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    print!("{}", plan::render_table(&key, &rows));
    write_out(args.csv.as_deref(), &plan::render_csv(&key, &rows), "csv")?;
    write_out(args.svg.as_deref(), &plan::render_svg(&key, &rows), "svg")?;
    if args.html.is_some() {
        let lines = vec![format!(
            "plan {} ({}) merged from {} shards",
            first.scenario,
            describe_seeds(&first.seeds),
            first.shard.count
        )];
        // The shard files carry the rows, not the scenario's thresholds: no threshold line.
        let html = plan::render_html(&key, &rows, &[], lines);
        write_out(args.html.as_deref(), &html, "html")?;
    }
    Ok(exit::OK)
}

/// The `--scale-with` keys with their base values, and the varied key's base value.
fn scaled_keys(
    args: &PlanArgs,
    scenario: &Path,
    key: &str,
    overrides: &[String],
) -> Result<Option<(f64, Vec<Scaled>)>, Failure> {
    if args.scale_with.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(scenario)
        .with_context(|| format!("cannot read {}", scenario.display()))
        .map_err(Failure::usage)?;
    let missing = |k: &str| {
        Failure::usage(anyhow!(
            "--scale-with: {k} has no numeric value in {} or a --set; give one with --set {k}=…",
            scenario.display()
        ))
    };
    let varied = base_value(&text, overrides, key).ok_or_else(|| missing(key))?;
    if varied == 0.0 {
        return Err(Failure::usage(anyhow!(
            "--scale-with: {key} is 0 in the scenario, nothing to scale from"
        )));
    }
    let mut scaled = Vec::new();
    for k in &args.scale_with {
        let base = base_value(&text, overrides, k).ok_or_else(|| missing(k))?;
        let integer = base.fract() == 0.0 && !text_has_float(&text, k);
        scaled.push(Scaled {
            key: k.clone(),
            base,
            integer,
        });
    }
    Ok(Some((varied, scaled)))
}

/// Whether the file writes `key` as a float (`2.0`), so a scaled value stays a float.
fn text_has_float(text: &str, key: &str) -> bool {
    let Ok(table) = text.parse::<toml::Table>() else {
        return false;
    };
    let mut node = &toml::Value::Table(table);
    for part in key.split('.') {
        match node.as_table().and_then(|t| t.get(part)) {
            Some(n) => node = n,
            None => return false,
        }
    }
    matches!(node, toml::Value::Float(_))
}

fn write_out(path: Option<&Path>, text: &str, what: &str) -> Result<(), Failure> {
    if let Some(p) = path {
        crate::commands::write_text(p, text)?;
        println!("  {what:<4} → {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_specs_parse_or_say_what_to_write() {
        // Goal: the good form gives key and values in order; each bad form is refused with a
        // message that shows the right form.
        assert_eq!(
            parse_vary("fleet.agents=10, 20,40").unwrap(),
            (
                "fleet.agents".to_string(),
                vec!["10".into(), "20".into(), "40".into()]
            )
        );
        for bad in [
            "fleet.agents",
            "=1,2",
            "fleet.agents=1,,2",
            "fleet.agents=1,",
        ] {
            let e = parse_vary(bad).unwrap_err();
            assert!(e.contains("--vary fleet.agents=1000"), "{bad}: {e}");
        }
    }

    #[test]
    fn thresholds_become_quoted_overrides() {
        // Goal: a --threshold is checked by the metrics catalogue and becomes a scenario
        // override with the dotted metric name quoted as one key.
        assert_eq!(
            threshold_override("job_pickup.p99 < 5s").unwrap(),
            "thresholds.\"job_pickup.p99\"=\"< 5s\""
        );
        assert!(threshold_override("job_pickup.p99 5s").is_err());
        assert!(threshold_override("job_pikup.p99 < 5s").is_err());
    }

    #[test]
    fn base_values_come_from_the_last_set_or_the_file() {
        // Goal: --scale-with reads the value the scenario would use.
        let text = "[fleet]\nagents = 1000\n[jobs]\nrate_per_s = 2.0\n";
        assert_eq!(base_value(text, &[], "fleet.agents"), Some(1000.0));
        assert_eq!(base_value(text, &[], "jobs.rate_per_s"), Some(2.0));
        let sets = ["fleet.agents=10".to_string(), "fleet.agents=20".to_string()];
        assert_eq!(base_value(text, &sets, "fleet.agents"), Some(20.0));
        assert_eq!(base_value(text, &[], "jobs.missing"), None);
        assert!(text_has_float(text, "jobs.rate_per_s"));
        assert!(!text_has_float(text, "fleet.agents"));
    }
}
