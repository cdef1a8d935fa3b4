//! Event-engine benchmark (not a test): events/s of the timing-wheel engine on the des.md §3.3
//! fleet model at 10^4, 10^5 and 10^6 agents, each event touching a 64-byte agent record.
//!
//! Model: agents long-poll (1 ms one-way latency) a server station of c FIFO workers (Exp
//! service: poll 2 ms, upload 20 ms, rotate 5 ms); a poll returns a job with p = 0.5 (job
//! Exp(5 min), then a log upload) or is held 30 s; hourly token rotation. Agents start spread
//! over the first second.
//!
//! Run: `cargo run --release -p fleetsim-des --example des_bench -- [AGENTS...] [--hours H]`
//! (default 10000 100000 1000000 agents, 1 virtual hour, c = agents/10000 workers, min 1).
//! `--heap` uses the reference binary heap instead of the wheel.
//!
//! `--fleet` instead runs the full driver (`simulate`: real agent and server state machines)
//! on [`FLEET`], an idle-heavy fleet with ~10% of agents busy (default 10^4 and 10^5 agents).

use std::time::{Duration, Instant};

use fleetsim_core::SimTime;
use fleetsim_core::dist::DurationDist;
use fleetsim_core::rng::{Rng, StreamKind, stream};
use fleetsim_des::engine::{Engine, Model, Scheduler, SimEvent};
use fleetsim_des::queue::{EventSet, HeapQueue, TimingWheel};
use fleetsim_des::station::{Admission, Shed, Station, StationSpec};
use rand::Rng as _;

#[derive(Clone, Copy, Debug)]
struct Ev {
    kind: Kind,
    agent: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    SendPoll,
    SendUpload,
    SendRotate,
    Arrive,
    Done,
    Respond,
    JobEnd,
    Rotate,
}

impl SimEvent for Ev {
    fn trace_key(&self) -> (u8, u32) {
        (self.kind as u8, self.agent)
    }
}

/// 64 bytes of per-agent state, touched on every agent event (as a real driver would).
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct AgentRec {
    pending: u8,
    polls: u32,
    jobs: u32,
    uploads: u32,
    rotations: u32,
    last_us: u64,
    _pad: [u64; 4],
}

struct Fleet {
    rng: Rng,
    agents: Vec<AgentRec>,
    station: Station,
    queue: std::collections::VecDeque<u32>,
}

const LATENCY: Duration = Duration::from_millis(1);

impl Fleet {
    fn exp(&mut self, mean_us: f64) -> Duration {
        Duration::from_micros((-(1.0 - self.rng.random::<f64>()).ln() * mean_us) as u64)
    }
    fn service<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, agent: u32) {
        let mean = match self.agents[agent as usize].pending {
            0 => 2_000.0,
            1 => 20_000.0,
            _ => 5_000.0,
        };
        let d = self.exp(mean);
        s.after(
            d,
            Ev {
                kind: Kind::Done,
                agent,
            },
        );
    }
}

impl Model<Ev> for Fleet {
    fn handle<Q: EventSet<Ev>>(&mut self, s: &mut Scheduler<Ev, Q>, ev: Ev) {
        let a = ev.agent;
        let now = s.now();
        let rec = &mut self.agents[a as usize];
        rec.last_us = now.as_micros();
        match ev.kind {
            Kind::SendPoll | Kind::SendUpload | Kind::SendRotate => {
                rec.pending = match ev.kind {
                    Kind::SendPoll => 0,
                    Kind::SendUpload => 1,
                    _ => 2,
                };
                s.after(
                    LATENCY,
                    Ev {
                        kind: Kind::Arrive,
                        agent: a,
                    },
                );
            }
            Kind::Arrive => match self.station.arrive(now, a) {
                Admission::Start => self.service(s, a),
                Admission::Queued => self.queue.push_back(a),
                Admission::Shed(_) => s.after(
                    LATENCY,
                    Ev {
                        kind: Kind::Respond,
                        agent: a,
                    },
                ),
            },
            Kind::Done => {
                if self.station.finish(now).is_some() {
                    let next = self.queue.pop_front().expect("queued");
                    self.service(s, next);
                }
                let rec = &mut self.agents[a as usize];
                match rec.pending {
                    0 => {
                        rec.polls += 1;
                        if self.rng.random::<bool>() {
                            let d = self.exp(300e6);
                            s.after(
                                LATENCY + d,
                                Ev {
                                    kind: Kind::JobEnd,
                                    agent: a,
                                },
                            );
                        } else {
                            let hold = Duration::from_secs(30) + LATENCY;
                            s.after(
                                hold,
                                Ev {
                                    kind: Kind::Respond,
                                    agent: a,
                                },
                            );
                        }
                    }
                    1 => {
                        rec.uploads += 1;
                        s.after(
                            LATENCY,
                            Ev {
                                kind: Kind::Respond,
                                agent: a,
                            },
                        );
                    }
                    _ => rec.rotations += 1,
                }
            }
            Kind::Respond => s.at(
                now,
                Ev {
                    kind: Kind::SendPoll,
                    agent: a,
                },
            ),
            Kind::JobEnd => {
                rec.jobs += 1;
                s.at(
                    now,
                    Ev {
                        kind: Kind::SendUpload,
                        agent: a,
                    },
                );
            }
            Kind::Rotate => {
                s.after(
                    Duration::from_secs(3600),
                    Ev {
                        kind: Kind::Rotate,
                        agent: a,
                    },
                );
                s.at(
                    now,
                    Ev {
                        kind: Kind::SendRotate,
                        agent: a,
                    },
                );
            }
        }
    }
}

fn bench<Q: EventSet<Ev>>(mut engine: Engine<Ev, Q>, agents: u32, hours: f64) {
    let workers = (agents / 10_000).max(1);
    let spec = StationSpec {
        name: "api".into(),
        workers: Some(workers),
        queue_limit: None,
        shed: Shed::Unavailable,
        service: DurationDist::exponential(Duration::from_millis(2)),
        service_by_op: Default::default(),
    };
    let mut fleet = Fleet {
        rng: stream(1, StreamKind::Network, 0),
        agents: vec![AgentRec::default(); agents as usize],
        station: Station::new(spec),
        queue: Default::default(),
    };
    let mut start_rng = stream(1, StreamKind::Agent, 0);
    for a in 0..agents {
        let t = SimTime::from_micros(start_rng.random_range(0..1_000_000));
        engine.scheduler().at(
            t,
            Ev {
                kind: Kind::SendPoll,
                agent: a,
            },
        );
        let r = SimTime::from_micros(start_rng.random_range(0..3_600_000_000));
        engine.scheduler().at(
            r,
            Ev {
                kind: Kind::Rotate,
                agent: a,
            },
        );
    }
    let wall = Instant::now();
    let stats = engine
        .run(
            &mut fleet,
            SimTime::from_secs((3600.0 * hours).round() as u64),
            u64::MAX,
        )
        .unwrap();
    let wall_s = wall.elapsed().as_secs_f64();
    fleet.station.advance(stats.now);
    let elapsed = stats.now - SimTime::ZERO;
    println!(
        "agents {agents:>8}  workers {workers:>4}  virtual {hours} h  events {:>11}  wall {wall_s:>7.2} s  \
         {:>6.2} M events/s  utilisation {:.3}  mean wait {:.4} s  trace {:016x}",
        stats.events,
        stats.events as f64 / wall_s / 1e6,
        fleet.station.stats().mean_busy(elapsed) / f64::from(workers),
        fleet.station.stats().mean_wait_s(),
        stats.trace_hash,
    );
}

/// The full-driver benchmark scenario: agents start over 10 minutes, jobs keep ~10% of them
/// busy (5-minute jobs with a log line a second), a web station of 64 workers.
const FLEET: &str = r#"
[run]
name = "des-bench"
duration = "1h"

[fleet]
agents = 10000
ramp_up = "10m"

[jobs]
rate_per_s = 3.3
duration = { dist = "exponential", mean = "5m" }
steps = 3
log_lines_per_s = 1
secrets = 1
secret_lines = 1

[[server.stations]]
name = "web"
workers = 64
service = { dist = "exponential", mean = "1ms" }
"#;

fn bench_fleet(agents: u32, hours: f64) {
    let rate = f64::from(agents) * 0.1 / 300.0;
    let sets = vec![
        format!("fleet.agents={agents}"),
        format!("jobs.rate_per_s={rate}"),
        format!("run.duration=\"{}s\"", (hours * 3600.0).round() as u64),
    ];
    let scenario =
        fleetsim_scenario::load_str("des-bench.toml", FLEET, &sets).expect("bench scenario");
    let wall = Instant::now();
    let out = fleetsim_des::simulate(&scenario, &Default::default()).expect("run");
    let wall_s = wall.elapsed().as_secs_f64();
    let e = out.report.engine.expect("engine stats");
    println!(
        "fleet agents {agents:>8}  virtual {hours} h  events {:>11}  wall {wall_s:>7.2} s  \
         {:>6.3} M events/s  jobs {}  pickup p99 {:.3} s  trace {}",
        e.events,
        e.events as f64 / wall_s / 1e6,
        out.report.jobs.succeeded,
        out.report.job_pickup.latency_s.p99,
        out.report.trace_hash.unwrap_or_default(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut hours = 1.0;
    let mut heap = false;
    let mut fleet = false;
    let mut sizes = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--hours" => hours = it.next().and_then(|h| h.parse().ok()).expect("--hours N"),
            "--heap" => heap = true,
            "--fleet" => fleet = true,
            n => sizes.push(n.parse::<u32>().expect("agent count")),
        }
    }
    if fleet {
        if sizes.is_empty() {
            sizes = vec![10_000, 100_000];
        }
        for n in sizes {
            bench_fleet(n, hours);
        }
        return;
    }
    if sizes.is_empty() {
        sizes = vec![10_000, 100_000, 1_000_000];
    }
    for n in sizes {
        if heap {
            bench(Engine::with_queue(HeapQueue::new()), n, hours);
        } else {
            bench(Engine::with_queue(TimingWheel::new()), n, hours);
        }
    }
}
