//! The big queueing-theory check (not a test): the shipped validation scenarios through the full
//! fleet stack with 10^5–10^6 customers per point, compared with the exact formulas. Each point
//! runs several seeds; the standard error comes from the spread of the per-seed means (each
//! seed is an independent replication), and a point passes within 3 standard errors.
//!
//! `cargo run --release -p fleetsim-des --example des_validate -- [--seeds N] [--quick]`
//! (`scripts/bench/des_validate.sh` wraps it). Exit status 1 if any point fails.

use std::process::ExitCode;
use std::time::Instant;

use fleetsim_des::theory::{Mmc, Mmck, mean_and_se};
use fleetsim_des::{SimOptions, SimOutcome, simulate};

/// Pass within this many standard errors.
const Z: f64 = 3.0;

/// One comparison: (label, expected value, how to read the observed value from a run,
/// tolerance floor); it passes within max(3 se, floor).
type Check = (&'static str, f64, fn(&SimOutcome) -> f64, f64);

struct Point {
    name: &'static str,
    file: &'static str,
    sets: Vec<String>,
    checks: Vec<Check>,
}

fn pickup_mean(o: &SimOutcome) -> f64 {
    o.little.mean_wait_s
}

fn blocked(o: &SimOutcome) -> f64 {
    let q = &o.report.operations["queue_jobs"];
    q.errors as f64 / q.count.max(1) as f64
}

/// Lq / (λ·Wq): 1 by Little's law, up to jobs still waiting when the run ends.
fn little_ratio(o: &SimOutcome) -> f64 {
    let l = o.little;
    l.mean_waiting / (l.arrival_rate_per_s * l.mean_wait_s)
}

fn points(quick: bool) -> Vec<Point> {
    let long = if quick { "6h" } else { "24h" };
    let sets = |v: &[&str]| -> Vec<String> {
        v.iter()
            .map(|s| s.to_string())
            .chain([format!("run.duration=\"{long}\"")])
            .collect()
    };
    let mm1 = |lambda: f64| {
        Mmc {
            lambda,
            mu: 1.0,
            c: 1,
        }
        .wq()
    };
    vec![
        Point {
            name: "M/M/1 rho=0.5",
            file: "mm1.toml",
            sets: sets(&[]),
            checks: vec![("Wq", mm1(0.5), pickup_mean, 0.0)],
        },
        Point {
            name: "M/M/1 rho=0.8",
            file: "mm1.toml",
            sets: sets(&["jobs.rate_per_s=0.8"]),
            checks: vec![("Wq", mm1(0.8), pickup_mean, 0.0)],
        },
        Point {
            name: "M/M/2 rho=0.8",
            file: "mmc.toml",
            sets: sets(&["fleet.agents=2", "jobs.rate_per_s=1.6"]),
            checks: vec![(
                "Wq",
                Mmc {
                    lambda: 1.6,
                    mu: 1.0,
                    c: 2,
                }
                .wq(),
                pickup_mean,
                0.0,
            )],
        },
        Point {
            name: "M/M/10 rho=0.8 (mmc.toml as shipped)",
            file: "mmc.toml",
            sets: if quick {
                vec!["run.duration=\"1h\"".into()]
            } else {
                vec![]
            },
            checks: vec![(
                "Wq",
                Mmc {
                    lambda: 8.0,
                    mu: 1.0,
                    c: 10,
                }
                .wq(),
                pickup_mean,
                0.0,
            )],
        },
        Point {
            name: "M/M/2/5",
            file: "mmck.toml",
            sets: sets(&[]),
            checks: vec![
                (
                    "P_block",
                    Mmck {
                        lambda: 2.0,
                        mu: 1.0,
                        c: 2,
                        k: 5,
                    }
                    .p_block(),
                    blocked,
                    0.0,
                ),
                (
                    "Wq",
                    Mmck {
                        lambda: 2.0,
                        mu: 1.0,
                        c: 2,
                        k: 5,
                    }
                    .wq(),
                    pickup_mean,
                    0.0,
                ),
            ],
        },
        Point {
            name: "Little (lognormal jobs)",
            file: "little.toml",
            sets: if quick {
                vec!["run.duration=\"1h\"".into()]
            } else {
                vec![]
            },
            checks: vec![("Lq/(lambda*Wq)", 1.0, little_ratio, 0.01)],
        },
    ]
}

fn main() -> ExitCode {
    let mut seeds = 12u64;
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => seeds = args.next().and_then(|n| n.parse().ok()).unwrap_or(seeds),
            "--quick" => quick = true,
            other => {
                eprintln!("unknown argument {other:?}; use --seeds N, --quick");
                return ExitCode::from(2);
            }
        }
    }
    let dir = format!("{}/../../scenarios/validation", env!("CARGO_MANIFEST_DIR"));
    let mut failed = 0;
    println!(
        "{:<38} {:<15} {:>10} {:>10} {:>9} {:>6}  customers",
        "point", "measure", "theory", "observed", "se", "z"
    );
    for p in points(quick) {
        let wall = Instant::now();
        let mut values = vec![Vec::new(); p.checks.len()];
        let mut customers = 0;
        for seed in 1..=seeds {
            let mut sets = p.sets.clone();
            sets.push(format!("run.seed={seed}"));
            let scenario = match fleetsim_scenario::load(format!("{dir}/{}", p.file), &sets) {
                Ok(s) => s,
                Err(d) => {
                    eprintln!("{d}");
                    return ExitCode::from(2);
                }
            };
            let o = match simulate(&scenario, &SimOptions::default()) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("{}: {e}", p.name);
                    return ExitCode::from(1);
                }
            };
            customers += o.report.job_pickup.latency_s.count;
            for (i, (_, _, read, _)) in p.checks.iter().enumerate() {
                values[i].push(read(&o));
            }
        }
        for ((label, expect, _, floor), v) in p.checks.iter().zip(&values) {
            let (mean, se) = mean_and_se(v);
            let z = (mean - expect) / se;
            let ok = (mean - expect).abs() < (Z * se).max(*floor);
            failed += usize::from(!ok);
            println!(
                "{:<38} {:<15} {:>10.6} {:>10.6} {:>9.6} {:>6.2}  {customers} ({} seeds, {:.0}s){}",
                p.name,
                label,
                expect,
                mean,
                se,
                z,
                seeds,
                wall.elapsed().as_secs_f64(),
                if ok { "" } else { "  FAIL" }
            );
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
