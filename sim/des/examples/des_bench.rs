//! Scale benchmark (not a test): events/s of the virtual-time driver at 10^4, 10^5 and 10^6
//! agents, for the engine alone and for the full driver, printed as one table.
//!
//! **Engine**: the timing-wheel engine on the des.md §3.3 fleet model, each event touching a
//! 64-byte agent record. Agents long-poll (1 ms one-way latency) a server station of c FIFO
//! workers (Exp service: poll 2 ms, upload 20 ms, rotate 5 ms); a poll returns a job with
//! p = 0.5 (job Exp(5 min), then a log upload) or is held 30 s; hourly token rotation. Agents
//! start spread over the first second; 1 virtual hour; c = agents/10000 workers (min 1).
//!
//! **Driver**: `simulate` on [`FLEET`] — the real agent and server state machines, network and
//! station model. Agents register over the first third of the run, ~2% of them busy with
//! 10-minute, 3-step jobs; the virtual horizon shrinks with the fleet so each size costs a
//! similar number of events (see [`fleet_horizon_s`]); every event counted is one the driver
//! really handled (agent timers, arrivals, service completions, deliveries, server timers,
//! job arrivals).
//!
//! Run: `cargo run --release -p fleetsim-des --example des_bench -- [AGENTS...] [--engine |
//! --fleet] [--hours H] [--heap] [--runs N] [--json PATH]` (default: both parts at 10000 100000
//! 1000000 agents). `--runs N` keeps the median of N runs of each row; `--json` writes the rows
//! for `scripts/bench/score.sh`.
//! `--hours` sets the engine's virtual hours; `--heap` runs the engine on the reference binary
//! heap instead of the wheel.

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

fn bench<Q: EventSet<Ev>>(mut engine: Engine<Ev, Q>, agents: u32, hours: f64) -> Row {
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
        "engine agents {agents:>8}  workers {workers:>4}  virtual {hours} h  events {:>11}  \
         wall {wall_s:>7.2} s  {:>6.2} M events/s  utilisation {:.3}  mean wait {:.4} s  \
         trace {:016x}",
        stats.events,
        stats.events as f64 / wall_s / 1e6,
        fleet.station.stats().mean_busy(elapsed) / f64::from(workers),
        fleet.station.stats().mean_wait_s(),
        stats.trace_hash,
    );
    Row {
        part: "engine",
        agents,
        virtual_s: hours * 3600.0,
        events: stats.events,
        wall_s,
        trace: None,
    }
}

/// One line of the final table.
struct Row {
    part: &'static str,
    agents: u32,
    virtual_s: f64,
    events: u64,
    wall_s: f64,
    /// The run's trace hash (driver runs): the same for every run of one commit and seed.
    trace: Option<String>,
}

/// The full-driver benchmark scenario (sizes, rates and horizon are set per run): agents
/// register over the first third of the run, jobs keep ~2% of them busy (10-minute jobs of
/// three steps, a log line every 5 s), one web station with workers scaled to the fleet.
const FLEET: &str = r#"
[run]
name = "des-bench"
duration = "1h"

[fleet]
agents = 10000
ramp_up = "20m"

[jobs]
rate_per_s = 0.33
duration = { dist = "exponential", mean = "10m" }
steps = 3
log_lines_per_s = 0.2
secrets = 1
secret_lines = 0

[[server.stations]]
name = "web"
workers = 64
service = { dist = "exponential", mean = "1ms" }
"#;

/// Virtual seconds the driver benchmark runs for `agents`: ~1.2·10^8 agent-seconds (so each
/// size handles a similar number of events), between 2 minutes and 2 hours.
fn fleet_horizon_s(agents: u32) -> u64 {
    (1.2e8 / f64::from(agents.max(1))).clamp(120.0, 7200.0) as u64
}

fn bench_fleet(agents: u32) -> Row {
    let horizon = fleet_horizon_s(agents);
    let rate = f64::from(agents) * 0.02 / 600.0;
    // Registration (8 calls an agent over a third of the run) must not swamp the station.
    let workers = (agents / 2_000).max(64);
    let sets = vec![
        format!("fleet.agents={agents}"),
        format!("fleet.ramp_up=\"{}s\"", horizon / 3),
        format!("jobs.rate_per_s={rate}"),
        format!("run.duration=\"{horizon}s\""),
        format!("server.stations[0].workers={workers}"),
    ];
    let scenario =
        fleetsim_scenario::load_str("des-bench.toml", FLEET, &sets).expect("bench scenario");
    let wall = Instant::now();
    let out = fleetsim_des::simulate(&scenario, &Default::default()).expect("run");
    let wall_s = wall.elapsed().as_secs_f64();
    let e = out.report.engine.expect("engine stats");
    println!(
        "driver agents {agents:>8}  virtual {horizon} s  events {:>11}  wall {wall_s:>7.2} s  \
         {:>6.3} M events/s  jobs {}  pickup p99 {:.3} s  trace {}",
        e.events,
        e.events as f64 / wall_s / 1e6,
        out.report.jobs.succeeded,
        out.report.job_pickup.latency_s.p99,
        out.report.trace_hash.as_deref().unwrap_or_default(),
    );
    Row {
        part: "driver",
        agents,
        virtual_s: horizon as f64,
        events: e.events,
        wall_s,
        trace: out.report.trace_hash.clone(),
    }
}

/// The run with the median wall time of `runs` identical runs (the same events each time).
fn median_of(runs: usize, mut one: impl FnMut() -> Row) -> Row {
    let mut all: Vec<Row> = (0..runs.max(1)).map(|_| one()).collect();
    all.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
    let mid = all.len() / 2;
    all.swap_remove(mid)
}

/// The figures as JSON for `scripts/bench/score.sh`: one metric per part and size, with the
/// direction that counts as better, so a later run can be compared with this one.
fn write_json(path: &str, rows: &[Row]) {
    let metrics: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": format!("des_{}_events_per_s_{}", r.part, r.agents),
                "value": r.events as f64 / r.wall_s,
                "unit": "events/s",
                "better": "higher",
                "events": r.events,
                "wall_s": r.wall_s,
                "virtual_s": r.virtual_s,
                "trace": r.trace,
            })
        })
        .collect();
    let doc = serde_json::json!({ "metrics": metrics });
    std::fs::write(
        path,
        serde_json::to_string_pretty(&doc).expect("json") + "\n",
    )
    .unwrap_or_else(|e| panic!("write {path}: {e}"));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut hours = 1.0;
    let mut heap = false;
    let mut runs = 1usize;
    let mut json: Option<String> = None;
    let (mut engine, mut fleet) = (true, true);
    let mut sizes = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--hours" => hours = it.next().and_then(|h| h.parse().ok()).expect("--hours N"),
            "--heap" => heap = true,
            "--fleet" => engine = false,
            "--runs" => runs = it.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--json" => json = Some(it.next().expect("--json PATH").clone()),
            "--engine" => fleet = false,
            n => sizes.push(n.parse::<u32>().expect("agent count")),
        }
    }
    if sizes.is_empty() {
        sizes = vec![10_000, 100_000, 1_000_000];
    }
    let mut rows = Vec::new();
    for &n in &sizes {
        if engine {
            rows.push(median_of(runs, || {
                if heap {
                    bench(Engine::with_queue(HeapQueue::new()), n, hours)
                } else {
                    bench(Engine::with_queue(TimingWheel::new()), n, hours)
                }
            }));
        }
    }
    for &n in &sizes {
        if fleet {
            rows.push(median_of(runs, || bench_fleet(n)));
        }
    }
    if let Some(path) = json {
        write_json(&path, &rows);
    }
    println!();
    println!("| part | agents | virtual | events | wall | events/s |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} s | {:.2} M | {:.1} s | {:.2} M |",
            r.part,
            r.agents,
            r.virtual_s,
            r.events as f64 / 1e6,
            r.wall_s,
            r.events as f64 / r.wall_s / 1e6,
        );
    }
}
