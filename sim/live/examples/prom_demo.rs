//! Serves fleetsim's Prometheus metrics with sample data, for developing dashboards and the
//! observability check before (or without) a real run: a real embedded emulator exported through
//! `prom::observe_emulator`, plus a synthetic, seeded fleet story fed through `prom::PromSink`.
//!
//!     cargo run -p fleetsim-live --example prom_demo -- fleet 127.0.0.1:9464 30
//!     cargo run -p fleetsim-live --example prom_demo -- emulator 127.0.0.1:9465 30
//!
//! Arguments: role (`fleet` or `emulator`), address, seconds to serve. It never claims to be a
//! measurement: the fleet numbers are made up, only their names and shapes are real.

use std::net::SocketAddr;
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::api::ErrorKind;
use fleetsim_core::event::{CryptoOp, Event, Outcome, Side};
use fleetsim_core::ops::{AgentState, Operation};
use fleetsim_core::proto::TaskResult;
use fleetsim_core::server::ServerConfig;
use fleetsim_core::shard::Shard;
use fleetsim_live::prom::{self, PromSink, Role};
use fleetsim_live::server::{self, EmulatorOptions};

/// Agents in the synthetic fleet.
const AGENTS: u32 = 8;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map_or("fleet", String::as_str);
    let addr: SocketAddr = args
        .get(1)
        .map_or("127.0.0.1:9464", String::as_str)
        .parse()?;
    let seconds: u64 = args.get(2).map_or(Ok(30), |s| s.parse())?;
    let serve_for = Duration::from_secs(seconds);
    match role {
        "emulator" => emulator(addr, serve_for).await,
        _ => fleet(addr, serve_for).await,
    }
}

/// A real emulator, exported. No agents talk to it: a poke loop sends one request a second to
/// an unknown path (answered 404, route `unrouted`) so the request series exist; every other
/// value stays 0, which is real too.
async fn emulator(addr: SocketAddr, serve_for: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let handle = prom::install(addr, Role::Emulator, Shard::WHOLE)?;
    let opts = EmulatorOptions::new(([127, 0, 0, 1], 0).into(), ServerConfig::default());
    let running = server::start(opts).await?;
    println!(
        "metrics at {} (emulator at {})",
        handle.url(),
        running.base_url
    );
    let target = running.local_addr;
    let poke = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let _ = poke_once(target).await;
        }
    };
    tokio::select! {
        () = prom::observe_emulator(&running.handle, prom::EMULATOR_EVERY) => {}
        () = poke => {}
        () = tokio::time::sleep(serve_for) => {}
    }
    running.handle.shutdown().await;
    Ok(())
}

/// One HTTP/1.1 request to a path the emulator does not serve; the answer is read and dropped.
async fn poke_once(target: SocketAddr) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(target).await?;
    let request = "GET /prom-demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(())
}

/// A synthetic fleet: agents come up, poll, take jobs, rotate tokens, now and then fail a call.
async fn fleet(addr: SocketAddr, serve_for: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let handle = prom::install(addr, Role::Fleet, Shard::WHOLE)?;
    println!("metrics at {}", handle.url());
    let mut sink = PromSink::new(AGENTS);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let started = tokio::time::Instant::now();
    let mut step: u64 = 0;
    while started.elapsed() < serve_for {
        tick.tick().await;
        let now = SimTime::from_micros(started.elapsed().as_micros() as u64);
        for ev in story(step, now) {
            sink.observe(&ev);
        }
        step += 1;
    }
    Ok(())
}

/// The events of one 100 ms step. Deterministic: the same step gives the same events.
fn story(step: u64, now: SimTime) -> Vec<Event> {
    let agent = (step % u64::from(AGENTS)) as u32;
    let ms = |d: u64| SimTime::from_micros(now.as_micros().saturating_sub(d * 1_000));
    let op = |op, latency_ms, outcome| Event::Op {
        agent,
        op,
        intended: ms(latency_ms),
        done: now,
        outcome,
    };
    let mut events = Vec::new();
    if step < u64::from(AGENTS) {
        let mv = |from, to| Event::AgentState {
            agent,
            from,
            to,
            at: now,
        };
        events.push(mv(AgentState::Offline, AgentState::Registering));
        events.push(op(Operation::Register, 40 + step, Outcome::Ok));
        events.push(op(Operation::TokenExchange, 8, Outcome::Ok));
        events.push(Event::Crypto {
            side: Side::Agents,
            op: CryptoOp::Rs256Sign,
            count: 1,
            bytes: 600,
            nanos: 900_000,
        });
        events.push(op(Operation::SessionCreate, 5, Outcome::Ok));
        events.push(mv(AgentState::Registering, AgentState::Idle));
        return events;
    }
    events.push(op(Operation::PollMessage, 2 + step % 30, Outcome::Ok));
    events.push(op(Operation::TimelineUpdate, 3 + step % 7, Outcome::Ok));
    events.push(op(Operation::FeedPost, 4 + step % 11, Outcome::Ok));
    if step.is_multiple_of(10) {
        let request_id = step;
        events.push(Event::JobQueued {
            request_id,
            at: ms(300 + (step * 37) % 4_000),
        });
        events.push(Event::JobPickedUp {
            agent,
            request_id,
            at: now,
        });
        let result = if step.is_multiple_of(30) {
            TaskResult::Failed
        } else {
            TaskResult::Succeeded
        };
        events.push(Event::JobFinished {
            agent,
            request_id,
            result,
            at: now,
        });
        events.push(Event::TokenRotated { agent, at: now });
        events.push(Event::SecretsMasked { agent, count: 2 });
    }
    if step.is_multiple_of(25) {
        events.push(op(
            Operation::LockRenew,
            9,
            Outcome::Api(ErrorKind::Throttled),
        ));
    }
    events
}
