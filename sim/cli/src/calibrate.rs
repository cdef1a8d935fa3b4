//! `fleetsim calibrate` and `--profile`: the CLI side of calibration. It parses the flags,
//! runs `fleetsim_live::calibrate` on a tokio runtime, prints what was measured and saves the
//! profile; and it loads a profile into scenario overrides for `simulate` and `plan`.
//!
//! It never measures by itself and never decides the model; `fleetsim_live::calibrate` and
//! `fleetsim_scenario::profile` do.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use fleetsim_core::dist::{format_duration, parse_duration};
use fleetsim_live::calibrate::{CalibrateOptions, calibrate};
use fleetsim_scenario::Profile;

use crate::args::CalibrateArgs;
use crate::{Failure, exit};

/// Default `--agents` against a remote target: a light, polite load.
const TARGET_AGENTS: u32 = 8;
/// Default `--agents` against the embedded emulator: measured, the run's fixed CPU (~8 ms a
/// second) added ~40 % to the CPU per request at 64 agents and ~200 % at 8; at 200 agents
/// (~600 requests/s) it adds a few per cent while the load stays low (~10 % of a core).
const EMBEDDED_AGENTS: u32 = 200;

/// `overrides` with the profile at `path` in front (see `Profile::apply`).
pub fn with_profile(path: &Path, overrides: &[String]) -> Result<Vec<String>, Failure> {
    let profile = Profile::load(path)
        .map_err(|e| Failure::usage(anyhow!("--profile {}: {e}", path.display())))?;
    profile
        .apply(overrides)
        .map_err(|e| Failure::usage(anyhow!("--profile {}: {e}", path.display())))
}

/// `fleetsim calibrate`.
pub fn run(args: CalibrateArgs) -> Result<u8, Failure> {
    let dur = |flag: &str, v: &str| -> Result<Duration, Failure> {
        parse_duration(v).map_err(|e| Failure::usage(anyhow!("{flag}: {e}")))
    };
    let opts = CalibrateOptions {
        target: args.target.clone(),
        pat_env: args.pat_env.clone(),
        agents: args.agents.unwrap_or(if args.target.is_some() {
            TARGET_AGENTS
        } else {
            EMBEDDED_AGENTS
        }),
        duration: dur("--duration", &args.duration)?,
        step: dur("--step", &args.step)?,
        max_concurrency: args.max_concurrency,
        seed: args.seed,
        per_route: args.per_route,
    };
    // Options are checked before the runtime starts, so usage errors exit 2.
    fleetsim_live::calibrate::low_load_scenario(&opts)
        .map_err(|e| Failure::usage(anyhow!("{e}")))?;
    let rt = crate::commands::runtime()?;
    println!(
        "calibrating {} (ramp steps of {}, up to {} clients; then {} agents for {})",
        opts.target.as_deref().unwrap_or("the embedded emulator"),
        format_duration(opts.step),
        opts.max_concurrency,
        opts.agents,
        format_duration(opts.duration)
    );
    let cal = rt.block_on(calibrate(&opts)).map_err(|e| match e {
        fleetsim_live::calibrate::CalibrateError::Options(m) => Failure::usage(anyhow!(m)),
        other => Failure::run(anyhow!(other).context("the calibration could not be carried out")),
    })?;
    print!("{}", render(&cal.profile));
    cal.profile
        .save(&args.out, &generated())
        .map_err(|e| Failure::run(anyhow!(e)))?;
    println!("  profile → {}", args.out.display());
    Ok(exit::OK)
}

/// What the terminal shows: the ramp, the derived workers, the per-operation round trips.
pub fn render(p: &Profile) -> String {
    let s = &p.saturation;
    let mut out = format!("\n  saturation ramp ({})\n", s.probe);
    out.push_str("    clients   throughput/s   mean latency   errors   process cores\n");
    for r in &s.ramp {
        let cores = r
            .process_cores
            .map_or("-".to_string(), |c| format!("{c:.2}"));
        out.push_str(&format!(
            "    {:>7}   {:>12.1}   {:>11.3}ms   {:>6}   {:>13}\n",
            r.concurrency,
            r.throughput_per_s,
            r.mean_latency_s * 1e3,
            r.errors,
            cores
        ));
    }
    out.push_str(&format!(
        "  X_max {:.1}/s at {} clients, E[S] {:.3}ms → busy workers {:.2}",
        s.throughput_per_s,
        s.concurrency,
        s.low_load_latency_s * 1e3,
        s.busy_workers
    ));
    match &p.demand {
        // One station per route group, sized by the emulator's busy time.
        Some(d) => {
            out.push_str(&format!(
                "\n\n  service demand ({} cores, capacity {:.0} requests/s at this mix)\n",
                d.cores, d.capacity_per_s
            ));
            if let (Some(cores), Some(cpu)) = (d.cores_obtained, d.cpu_per_request_s) {
                out.push_str(&format!(
                    "    clients share the process: {cores:.2} cores obtained, {:.2} used whatever \
                     the load, {:.1} µs of CPU per added request (×{:.2} the emulator's demand)\n",
                    d.fixed_cores.unwrap_or(0.0),
                    cpu * 1e6,
                    d.client_factor
                ));
            }
            out.push_str("    station        requests   demand µs    scv   share   workers\n");
            for st in &p.stations {
                let (requests, mean, scv, share) =
                    d.groups.get(&st.name).map_or((0, 0.0, 0.0, 0.0), |g| {
                        (g.requests, g.mean_s, g.scv, g.share)
                    });
                out.push_str(&format!(
                    "    {:<13} {:>9}   {:>9.1}   {:>4.1}   {:>4.0}%   {:>7}\n",
                    st.name,
                    requests,
                    mean * 1e6,
                    scv,
                    share * 100.0,
                    st.workers
                ));
            }
        }
        None if !p.routes.is_empty() => {
            out.push_str(&render_routes(p));
        }
        None => {
            for st in &p.stations {
                out.push_str(&format!(
                    " → station {:?}: {} workers\n",
                    st.name, st.workers
                ));
            }
        }
    }
    out.push_str(
        "\n  low-load round trips\n    operation              count     p50 ms     p90 ms\n",
    );
    for (name, m) in &p.operations {
        out.push_str(&format!(
            "    {name:<20} {:>7}   {:>8.3}   {:>8.3}\n",
            m.count,
            m.p50_s * 1e3,
            m.p90_s * 1e3
        ));
    }
    out
}

/// The per-route ramps: each group's X_max, E[S] and workers, and each group that could not
/// be ramped with its reason.
fn render_routes(p: &Profile) -> String {
    let mut out = String::from(
        "\n\n  per-route ramps\n    station        probe             E[S] ms   X_max/s   clients   workers\n",
    );
    for st in &p.stations {
        let Some(s) = p.routes.get(&st.name) else {
            continue;
        };
        out.push_str(&format!(
            "    {:<13}  {:<16} {:>8.3}   {:>7.1}   {:>7}   {:>7}\n",
            st.name,
            s.probe,
            s.low_load_latency_s * 1e3,
            s.throughput_per_s,
            s.concurrency,
            st.workers
        ));
    }
    for (group, why) in &p.unramped {
        out.push_str(&format!(
            "    not ramped: {group} ({why}); its operations stay with station \"server\"\n"
        ));
    }
    out
}

/// The profile's comment: when it was written (UTC), the only date-bearing text in the file.
fn generated() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!(
        "fleetsim {}, {}",
        env!("CARGO_PKG_VERSION"),
        fleetsim_core::codec::text::iso8601_utc(ms)
    )
}
