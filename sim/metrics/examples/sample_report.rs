//! Writes every report format for a synthetic two-minute run into a directory, to look at the
//! layouts: `cargo run -p fleetsim-metrics --example sample_report -- OUT_DIR`.

use std::fs;
use std::path::PathBuf;

use fleetsim_core::SimTime;
use fleetsim_core::api::{EmulatorStats, ErrorKind};
use fleetsim_core::event::{CryptoOp, Event, Outcome, Side};
use fleetsim_core::ops::{AgentState, Operation};
use fleetsim_core::proto::TaskResult;
use fleetsim_metrics::{
    Mode, Recorder, Report, RunMeta, compare, render_html, render_junit, render_summary, thresholds,
};

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "sample-report".into()),
    );
    fs::create_dir_all(&dir)?;
    let baseline = run(1.0);
    let current = run(1.15);
    current.write_json(fs::File::create(dir.join("report.json"))?)?;
    fs::write(dir.join("summary.txt"), render_summary(&current))?;
    fs::write(dir.join("junit.xml"), render_junit(&current))?;
    fs::write(dir.join("report.html"), render_html(&current))?;
    fs::write(
        dir.join("compare.txt"),
        compare(&baseline, &current, 0.10).render(),
    )?;
    print!("{}", render_summary(&current));
    Ok(())
}

/// A 100-agent fleet over 120 s with a ramp, a burst of throttling and latencies × `slow`.
fn run(slow: f64) -> Report {
    let mut rec = Recorder::new();
    rec.set_fleet_size(100);
    let mut x: u64 = 11;
    let mut rand = move |m: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % m
    };
    let ms = |v: f64| SimTime::from_micros((v * 1_000.0) as u64);
    for agent in 0..100u32 {
        let t = f64::from(agent) * 200.0;
        let at = ms(t);
        rec.record(&Event::AgentState {
            agent,
            from: AgentState::Offline,
            to: AgentState::Registering,
            at,
        });
        for op in [
            Operation::ConnectionData,
            Operation::Register,
            Operation::TokenExchange,
            Operation::SessionCreate,
        ] {
            let done = ms(t + (20 + rand(80)) as f64 * slow);
            rec.record(&Event::Op {
                agent,
                op,
                intended: at,
                done,
                outcome: Outcome::Ok,
            });
        }
        rec.record(&Event::Crypto {
            side: Side::Agents,
            op: CryptoOp::KeyGen,
            count: 1,
            bytes: 0,
            nanos: 80_000_000,
        });
        rec.record(&Event::AgentState {
            agent,
            from: AgentState::Registering,
            to: AgentState::Idle,
            at: ms(t + 150.0),
        });
    }
    for id in 0..600u64 {
        let t = 20_000.0 + id as f64 * 160.0;
        let agent = (id % 100) as u32;
        rec.record(&Event::JobQueued {
            request_id: id,
            at: ms(t),
        });
        let picked = t + (50 + rand(400)) as f64 * slow;
        let throttled = (60_000.0..70_000.0).contains(&t) && rand(4) == 0;
        let outcome = if throttled {
            Outcome::Api(ErrorKind::Throttled)
        } else {
            Outcome::Ok
        };
        rec.record(&Event::Op {
            agent,
            op: Operation::PollMessage,
            intended: ms(t),
            done: ms(picked),
            outcome,
        });
        rec.record(&Event::JobPickedUp {
            agent,
            request_id: id,
            at: ms(picked),
        });
        rec.record(&Event::AgentState {
            agent,
            from: AgentState::Idle,
            to: AgentState::Busy,
            at: ms(picked),
        });
        rec.record(&Event::Crypto {
            side: Side::Agents,
            op: CryptoOp::AesDecrypt,
            count: 1,
            bytes: 8_192,
            nanos: 40_000,
        });
        for k in 0..5 {
            let at = ms(picked + 1_000.0 * f64::from(k));
            let done = ms(picked + 1_000.0 * f64::from(k) + (5 + rand(40)) as f64 * slow);
            rec.record(&Event::Op {
                agent,
                op: Operation::FeedPost,
                intended: at,
                done,
                outcome: Outcome::Ok,
            });
        }
        let end = ms(picked + 6_000.0);
        let result = if rand(10) == 0 {
            TaskResult::Failed
        } else {
            TaskResult::Succeeded
        };
        rec.record(&Event::JobFinished {
            agent,
            request_id: id,
            result,
            at: end,
        });
        rec.record(&Event::AgentState {
            agent,
            from: AgentState::Busy,
            to: AgentState::Idle,
            at: end,
        });
    }
    rec.set_server_stats(EmulatorStats {
        agents: 100,
        jobs_assigned: 600,
        jobs_completed: 600,
        ..Default::default()
    });
    rec.set_jobs_lost(0);
    let meta = RunMeta {
        mode: Mode::Live,
        seed: 42,
        wall_s: 121.3,
        scenario: "sample".to_string(),
        started_at: Some("2026-11-25T21:00:00Z".to_string()),
        duration_s: 120.0,
        ..RunMeta::default()
    };
    let mut report = Report::from_recorder(&rec, meta);
    let defs = [
        ("job_pickup.p99", "< 500ms"),
        ("errors.rate", "< 0.1%"),
        ("jobs.lost", "== 0"),
    ];
    let parsed: Vec<_> = defs
        .iter()
        .map(|(m, c)| thresholds::parse(m, c).expect("valid"))
        .collect();
    report.evaluate_thresholds(&parsed);
    report
}
