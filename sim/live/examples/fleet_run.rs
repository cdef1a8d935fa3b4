//! Run a scenario with the live fleet driver and print what a capacity note needs: the k6-style
//! summary, requests/s, pickup p50/p99, and the process's CPU time and peak RSS (read from
//! /proc; with the embedded emulator both sides share this process).
//!
//! ```text
//! cargo run --release -p fleetsim-live --example fleet_run -- scenarios/steady.toml \
//!     --set fleet.agents=10000 --set jobs.rate_per_s=20 --set run.duration=5m
//! ```
//!
//! Progress goes to stderr every 5 s; Ctrl-C stops the run gracefully and still prints the
//! summary. This is a measuring tool, not the CLI (`fleetsim run` is the product's entry point).
//!
//! With a 20,000-descriptor limit an in-process emulator cannot hold both ends of 10,000
//! agents' connections; `--serve ADDR` runs the emulator alone (PAT from `FLEETSIM_PAT`) so the
//! fleet can target it from a second process (`--set target.url=http://ADDR`).

use std::time::Duration;

use fleetsim_live::fleet::{self, ProgressBoard, RunOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: fleet_run SCENARIO.toml [--set KEY=VALUE]... | --serve ADDR")?;
    if path == "--serve" {
        return serve(
            &args
                .next()
                .ok_or("--serve needs ADDR (e.g. 127.0.0.1:8080)")?,
        );
    }
    let mut overrides = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--set" => overrides.push(args.next().ok_or("--set needs KEY=VALUE")?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let scenario = fleetsim_scenario::load(&path, &overrides).map_err(|d| d.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let board = ProgressBoard::new();
        let watcher = {
            let board = board.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    eprintln!("{}", board.snapshot().line());
                }
            })
        };
        let opts = RunOptions { progress: Some(board), ..RunOptions::default() };
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let out = fleet::run(&scenario, opts, ctrl_c).await?;
        watcher.abort();
        println!("{}", fleetsim_metrics::render_summary(&out.report));
        let r = &out.report;
        println!("target           {} (embedded: {})", out.target_url, out.embedded);
        println!("agents           {}", scenario.fleet.agents);
        println!(
            "keys             {} distinct, {} loaded, {} generated",
            out.keys.distinct, out.keys.loaded, out.keys.generated
        );
        println!(
            "requests         {} in {:.0} s measured = {:.1} req/s",
            r.requests.count, r.run.duration_s, r.requests.rate_per_s
        );
        println!(
            "pickup           p50 {:.3} s  p99 {:.3} s  ({} jobs)",
            r.job_pickup.latency_s.p50, r.job_pickup.latency_s.p99, r.job_pickup.latency_s.count
        );
        println!("connections      {:?}", out.transport);
        if let Some((cpu_s, rss_kb)) = process_usage() {
            println!(
                "process          cpu {cpu_s:.1} s over {:.1} s wall ({:.0}% of one core), peak RSS {} MiB",
                out.wall.as_secs_f64(),
                100.0 * cpu_s / out.wall.as_secs_f64(),
                rss_kb / 1024
            );
        }
        for w in &out.warnings {
            println!("warning          {w}");
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// Run the emulator alone until Ctrl-C, then print its counters and this process's usage.
fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    use fleetsim_live::server::{self, EmulatorOptions};
    let pat = std::env::var("FLEETSIM_PAT").map_err(|_| "set FLEETSIM_PAT")?;
    let mut opts = EmulatorOptions::new(
        addr.parse()?,
        fleetsim_core::server::ServerConfig::with_env_pat(pat),
    );
    opts.max_connections = 19_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = fleetsim_live::fleet::limits::raise_nofile(1 << 20);
        let started = std::time::Instant::now();
        let running = server::start(opts).await?;
        eprintln!("emulator listening on {}", running.base_url);
        let _ = tokio::signal::ctrl_c().await;
        let stats = running.handle.shutdown().await;
        println!("emulator stats   {stats:?}");
        if let Some((cpu_s, rss_kb)) = process_usage() {
            let wall = started.elapsed().as_secs_f64();
            println!(
                "emulator process cpu {cpu_s:.1} s over {wall:.1} s wall ({:.0}% of one core), peak RSS {} MiB",
                100.0 * cpu_s / wall,
                rss_kb / 1024
            );
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// (user+system CPU seconds, peak RSS KiB) of this process, from /proc (Linux only).
fn process_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks as f64 / hz, rss_kb))
}
