//! Measures how many events per second one `Recorder` folds in on one core, with a mix shaped
//! like a busy fleet (calls, job queue/pickup/finish, state changes, crypto). Run with
//! `cargo run -p fleetsim-metrics --example record_throughput [events]`.

use std::time::Instant;

use fleetsim_core::SimTime;
use fleetsim_core::api::ErrorKind;
use fleetsim_core::event::{CryptoOp, Event, Outcome, Side};
use fleetsim_core::ops::{AgentState, Operation};
use fleetsim_core::proto::TaskResult;
use fleetsim_metrics::{Recorder, Report, RunMeta};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let events = workload(n);
    let mut rec = Recorder::new();
    rec.set_fleet_size(10_000);
    let start = Instant::now();
    for e in &events {
        rec.record(e);
    }
    let record_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let report = Report::from_recorder(&rec, RunMeta::default());
    let report_s = start.elapsed().as_secs_f64();
    println!(
        "{} events in {record_s:.3}s = {:.0} events/s; report in {report_s:.3}s ({} requests)",
        events.len(),
        events.len() as f64 / record_s,
        report.requests.count
    );
}

/// Ten events per simulated job cycle, spread over time like a 10,000-agent fleet.
fn workload(n: u64) -> Vec<Event> {
    let mut x: u64 = 7;
    let mut out = Vec::with_capacity(n as usize);
    let mut i = 0u64;
    while (out.len() as u64) < n {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let t = SimTime::from_micros(i * 300);
        let done = SimTime::from_micros(i * 300 + (x >> 40) % 2_000_000);
        let agent = (i % 10_000) as u32;
        let op = Operation::ALL[(x >> 20) as usize % Operation::ALL.len()];
        let outcome = if (x >> 8).is_multiple_of(100) {
            Outcome::Api(ErrorKind::Throttled)
        } else {
            Outcome::Ok
        };
        out.push(Event::Op {
            agent,
            op,
            intended: t,
            done,
            outcome,
        });
        out.push(Event::Op {
            agent,
            op: Operation::PollMessage,
            intended: t,
            done,
            outcome,
        });
        out.push(Event::Op {
            agent,
            op: Operation::TimelineUpdate,
            intended: t,
            done,
            outcome,
        });
        out.push(Event::Op {
            agent,
            op: Operation::FeedPost,
            intended: t,
            done,
            outcome,
        });
        out.push(Event::JobQueued {
            request_id: i,
            at: t,
        });
        out.push(Event::JobPickedUp {
            agent,
            request_id: i,
            at: done,
        });
        let (from, to) = (AgentState::Idle, AgentState::Busy);
        out.push(Event::AgentState {
            agent,
            from,
            to,
            at: done,
        });
        out.push(Event::AgentState {
            agent,
            from: to,
            to: from,
            at: done,
        });
        let result = TaskResult::Succeeded;
        out.push(Event::JobFinished {
            agent,
            request_id: i,
            result,
            at: done,
        });
        let (side, op) = (Side::Agents, CryptoOp::AesDecrypt);
        out.push(Event::Crypto {
            side,
            op,
            count: 1,
            bytes: 4_096,
            nanos: 3_000,
        });
        i += 1;
    }
    out
}
