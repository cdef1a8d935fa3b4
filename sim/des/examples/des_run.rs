//! Run one scenario in virtual time and print the headline numbers, the stations, the
//! invariants and the engine figures (a development and scripting aid; `fleetsim simulate` is
//! the user-facing command).
//!
//! `cargo run --release -p fleetsim-des --example des_run -- SCENARIO [--set KEY=VALUE]... [--json]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: des_run SCENARIO [--set KEY=VALUE]... [--json]");
        return ExitCode::from(2);
    };
    let mut sets = Vec::new();
    let mut json = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--set" => sets.push(args.next().unwrap_or_default()),
            "--json" => json = true,
            other => {
                eprintln!("unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let scenario = match fleetsim_scenario::load(&path, &sets) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::from(2);
        }
    };
    let out = match fleetsim_des::simulate(&scenario, &Default::default()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = out.report.write_json(&mut stdout) {
            eprintln!("write: {e}");
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    let r = &out.report;
    let p = &r.job_pickup.latency_s;
    println!(
        "jobs queued {} started {} succeeded {} failed {} lost {}",
        r.jobs.queued, r.jobs.started, r.jobs.succeeded, r.jobs.failed, r.jobs.lost
    );
    println!(
        "pickup n={} mean={:.6}s p50={:.4}s p99={:.4}s max={:.4}s",
        p.count, p.mean, p.p50, p.p99, p.max
    );
    if let Some((mean, se)) = out.pickup_batches.mean_and_se() {
        println!("pickup mean {mean:.6}s ± {se:.6}s (batch-means standard error)");
    }
    println!("little {:?}", out.little);
    for (name, op) in &r.operations {
        println!(
            "  {name:<20} count {:>9} errors {:>6} p50 {:.4}s p99 {:.4}s",
            op.count, op.errors, op.latency_s.p50, op.latency_s.p99
        );
    }
    for st in &out.stations {
        println!(
            "station {} workers {:?} utilisation {:.3} mean queue {:.3} wait {:.4}s shed {}",
            st.name, st.workers, st.utilisation, st.mean_queue, st.mean_wait_s, st.shed
        );
    }
    println!("invariants ok={} {:?}", out.invariants.ok(), out.invariants);
    if let Some(e) = &r.engine {
        println!(
            "engine events {} virtual {:.0}s wall {:.2}s {:.0} events/s trace {}",
            e.events,
            e.virtual_s,
            e.wall_s,
            e.events_per_s,
            r.trace_hash.as_deref().unwrap_or("-")
        );
    }
    if out.invariants.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
