//! The server capacity model (des.md §4): the emulated server is a network of stations. A
//! station is a pool of `workers` serving requests first-come first-served, each request taking
//! a service time drawn from its route group's distribution; when every worker is busy requests
//! wait in a FIFO queue, and with a `queue_limit` a full queue sheds new arrivals with 429
//! (`Throttled`) or 503 (`Unavailable`) — the M/M/c/K model.
//!
//! A long poll occupies a worker only while its request is processed; the hold that follows is a
//! pure delay inside the server state machine (the parked poll), never a worker — modelling the
//! hold as service time would make the pool look exhausted.
//!
//! This module only keeps the books (who is served, who waits, time-integrals for utilisation
//! and Little's law); the driver draws service times and schedules completions. It never reads
//! a clock and never touches protocol state.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::api::ErrorKind;
use fleetsim_core::dist::DurationDist;
use fleetsim_core::ops::Operation;

/// How a full station refuses work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// 429 Too Many Requests.
    Throttled,
    /// 503 Service Unavailable.
    Unavailable,
}

impl Shed {
    /// The typed error the agent receives.
    pub fn error_kind(self) -> ErrorKind {
        match self {
            Shed::Throttled => ErrorKind::Throttled,
            Shed::Unavailable => ErrorKind::Unavailable,
        }
    }
}

/// One station's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct StationSpec {
    /// Name used in reports (`stations.<name>.utilisation`).
    pub name: String,
    /// Parallel workers; `None` = unlimited (a pure delay station).
    pub workers: Option<u32>,
    /// Requests allowed to wait when every worker is busy; `None` = unbounded.
    pub queue_limit: Option<u32>,
    /// What a full queue answers.
    pub shed: Shed,
    /// Service time of requests unless `service_by_op` names their operation.
    pub service: DurationDist,
    /// Per-operation service times.
    pub service_by_op: BTreeMap<Operation, DurationDist>,
}

impl StationSpec {
    /// The service-time distribution of `op` at this station.
    pub fn service_for(&self, op: Operation) -> &DurationDist {
        self.service_by_op.get(&op).unwrap_or(&self.service)
    }
}

/// Which station serves each operation (`None`: no station, the request reaches the server
/// state machine at once — infinite capacity).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    table: BTreeMap<Operation, usize>,
}

impl Routes {
    /// Route `op` to station `station`. A long poll is sent as `PollMessage` and only learns
    /// whether it was empty from its answer, so routing either poll operation routes both.
    pub fn route(&mut self, op: Operation, station: usize) {
        match op {
            Operation::PollMessage | Operation::PollEmpty => {
                self.table.insert(Operation::PollMessage, station);
                self.table.insert(Operation::PollEmpty, station);
            }
            op => {
                self.table.insert(op, station);
            }
        }
    }
    /// The station serving `op`, if any.
    pub fn station(&self, op: Operation) -> Option<usize> {
        self.table.get(&op).copied()
    }
}

/// What happened to an arriving request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A worker took it: draw a service time and schedule its completion.
    Start,
    /// It waits for a worker.
    Queued,
    /// The queue is full: answer with this error.
    Shed(ErrorKind),
}

/// Counters and time-integrals of one station.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StationStats {
    /// Requests that arrived.
    pub arrivals: u64,
    /// Requests a worker took.
    pub started: u64,
    /// Requests a worker finished.
    pub completed: u64,
    /// Requests refused at a full queue.
    pub shed: u64,
    /// Sum of waits (arrival → service start) of started requests, µs.
    pub wait_sum_us: u128,
    /// ∫ busy workers dt, worker·µs.
    pub busy_integral: u128,
    /// ∫ queue length dt, request·µs.
    pub queue_integral: u128,
    /// Longest queue seen.
    pub queue_max: u64,
}

impl StationStats {
    /// Mean busy workers over `elapsed`.
    pub fn mean_busy(&self, elapsed: Duration) -> f64 {
        self.busy_integral as f64 / (elapsed.as_micros().max(1) as f64)
    }
    /// Time-average queue length over `elapsed`.
    pub fn mean_queue(&self, elapsed: Duration) -> f64 {
        self.queue_integral as f64 / (elapsed.as_micros().max(1) as f64)
    }
    /// Mean wait of started requests, seconds.
    pub fn mean_wait_s(&self) -> f64 {
        if self.started == 0 {
            0.0
        } else {
            self.wait_sum_us as f64 / self.started as f64 / 1e6
        }
    }
}

/// A station's live state: busy workers and the FIFO of waiting requests `(call, arrived)`.
#[derive(Clone, Debug)]
pub struct Station {
    /// The configuration it runs with.
    pub spec: StationSpec,
    busy: u32,
    waiting: VecDeque<(u32, SimTime)>,
    last_change: SimTime,
    stats: StationStats,
}

impl Station {
    /// An idle station at time zero.
    pub fn new(spec: StationSpec) -> Self {
        Station {
            spec,
            busy: 0,
            waiting: VecDeque::new(),
            last_change: SimTime::ZERO,
            stats: StationStats::default(),
        }
    }

    /// Request `call` arrives at `now`.
    pub fn arrive(&mut self, now: SimTime, call: u32) -> Admission {
        self.advance(now);
        self.stats.arrivals += 1;
        if self.spec.workers.is_none_or(|w| self.busy < w) {
            self.busy += 1;
            self.stats.started += 1;
            return Admission::Start;
        }
        if self
            .spec
            .queue_limit
            .is_some_and(|k| self.waiting.len() >= k as usize)
        {
            self.stats.shed += 1;
            return Admission::Shed(self.spec.shed.error_kind());
        }
        self.waiting.push_back((call, now));
        self.stats.queue_max = self.stats.queue_max.max(self.waiting.len() as u64);
        Admission::Queued
    }

    /// A worker finished at `now`; returns the next waiting call it starts, if any.
    pub fn finish(&mut self, now: SimTime) -> Option<u32> {
        self.advance(now);
        self.stats.completed += 1;
        match self.waiting.pop_front() {
            Some((call, arrived)) => {
                self.stats.started += 1;
                self.stats.wait_sum_us += (now - arrived).as_micros();
                Some(call)
            }
            None => {
                debug_assert!(
                    self.busy > 0,
                    "station {}: finish with no busy worker",
                    self.spec.name
                );
                self.busy = self.busy.saturating_sub(1);
                None
            }
        }
    }

    /// Empty the station (server restart): returns the waiting calls, which the driver fails.
    /// Busy workers finish normally; their completions find a restarted server.
    pub fn drain_waiting(&mut self, now: SimTime) -> Vec<u32> {
        self.advance(now);
        self.waiting.drain(..).map(|(call, _)| call).collect()
    }

    /// Close the integrals at `now` (call before reading stats at the end of a run).
    pub fn advance(&mut self, now: SimTime) {
        let dt = (now - self.last_change).as_micros();
        self.stats.busy_integral += dt * u128::from(self.busy);
        self.stats.queue_integral += dt * self.waiting.len() as u128;
        self.last_change = now.max(self.last_change);
    }

    /// Workers busy now.
    pub fn busy(&self) -> u32 {
        self.busy
    }
    /// Requests waiting now.
    pub fn queue_len(&self) -> usize {
        self.waiting.len()
    }
    /// Counters and integrals so far (call `advance` first to close the integrals).
    pub fn stats(&self) -> &StationStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(workers: u32, queue_limit: Option<u32>) -> StationSpec {
        StationSpec {
            name: "api".into(),
            workers: Some(workers),
            queue_limit,
            shed: Shed::Throttled,
            service: DurationDist::constant(Duration::from_millis(2)),
            service_by_op: BTreeMap::new(),
        }
    }

    #[test]
    fn full_workers_queue_then_shed_at_the_limit() {
        // Goal: c arrivals start, the next K wait, the one after is shed with 429; finishing
        // starts the oldest waiter (FIFO).
        let mut s = Station::new(spec(2, Some(1)));
        let t = SimTime::from_secs(1);
        assert_eq!(s.arrive(t, 0), Admission::Start);
        assert_eq!(s.arrive(t, 1), Admission::Start);
        assert_eq!(s.arrive(t, 2), Admission::Queued);
        assert_eq!(s.arrive(t, 3), Admission::Shed(ErrorKind::Throttled));
        assert_eq!(s.finish(SimTime::from_secs(2)), Some(2));
        assert_eq!(s.finish(SimTime::from_secs(3)), None);
        assert_eq!(s.busy(), 1);
        s.advance(SimTime::from_secs(4));
        let st = s.stats();
        assert_eq!(
            (st.arrivals, st.started, st.shed, st.completed),
            (4, 3, 1, 2)
        );
        // Busy: 2 workers from 1 s to 3 s, then 1 until 4 s (workers·µs).
        assert_eq!(st.busy_integral, 5_000_000);
        assert_eq!(st.queue_integral, 1_000_000);
        assert_eq!(st.mean_wait_s(), 1.0 / 3.0);
    }

    #[test]
    fn unlimited_workers_never_queue() {
        // Goal: a pure-delay station (no worker limit) starts everything at once.
        let mut s = Station::new(StationSpec {
            workers: None,
            ..spec(1, Some(0))
        });
        for i in 0..1000 {
            assert_eq!(s.arrive(SimTime::ZERO, i), Admission::Start);
        }
        assert_eq!(s.queue_len(), 0);
    }

    #[test]
    fn polls_route_together_and_ops_pick_their_service_time() {
        // Goal: routing either poll operation routes the long poll; per-op service times win
        // over the station default.
        let mut r = Routes::default();
        r.route(Operation::PollEmpty, 1);
        r.route(Operation::TokenExchange, 0);
        assert_eq!(r.station(Operation::PollMessage), Some(1));
        assert_eq!(r.station(Operation::TokenExchange), Some(0));
        assert_eq!(r.station(Operation::FeedPost), None);
        let mut sp = spec(1, None);
        let slow = DurationDist::constant(Duration::from_secs(1));
        sp.service_by_op
            .insert(Operation::TokenExchange, slow.clone());
        assert_eq!(sp.service_for(Operation::TokenExchange), &slow);
        assert_eq!(sp.service_for(Operation::FeedPost), &sp.service);
    }
}
