//! The recorder: the one sink for telemetry `Event`s from both drivers.
//!
//! It keeps per-operation HDR histograms (3 significant digits, microseconds, latency =
//! `done - intended`, successful calls only) and error counts by bounded label, the job pickup
//! latency (joined by request id whichever event arrives first), job and agent counters, crypto
//! work per side and operation, a per-second time series, and the bounded per-interval
//! `timeline` the HTML charts draw (per-operation percentiles, errors by kind, pickup, agents). `merge` adds another
//! recorder exactly (HDR histograms add bucket by bucket).
//!
//! Hot path: `record` touches fixed arrays indexed by enum and pre-sized histograms; it
//! allocates only when the pending pickup map or the time series grows, both bounded. It never
//! reads a clock: every time comes from the event. One recorder holds about 250 KB per
//! operation in use, plus the timeline (177 KB of dense counts for its newest interval, about
//! 1 KB per interval and the sketches' bins, at most 1,200 intervals), so keep one per driver
//! or shard, not one per agent.

use std::collections::HashMap;

use fleetsim_core::SimTime;
use fleetsim_core::api::EmulatorStats;
use fleetsim_core::event::{CryptoOp, Event, Outcome, Side};
use fleetsim_core::ops::{AgentState, Operation};
use fleetsim_core::proto::TaskResult;
use hdrhistogram::Histogram;

use crate::names;
use crate::timeline::Timeline;

/// The largest latency a histogram tracks: 7 days in µs. Longer values are clamped to it, so a
/// job waiting a week in a virtual run still counts (as "at least a week").
pub const MAX_TRACKABLE_US: u64 = 7 * 86_400 * 1_000_000;
/// Significant digits of every histogram (house style habit 12).
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Default bound on jobs waiting for their other half of the pickup join.
pub const DEFAULT_PENDING_LIMIT: usize = 1 << 20;
/// The time series holds at most this many one-second points (a day); later seconds are
/// dropped and counted in `series_dropped`.
pub const SERIES_LIMIT_S: usize = 86_400;

const OPS: usize = Operation::ALL.len();
const STATES: usize = AgentState::ALL.len();
const CRYPTO_OPS: usize = CryptoOp::ALL.len();
const SIDES: usize = 2;

/// Per-second chart percentiles need less precision than the report: 2 significant digits
/// make the interval histogram about 7× smaller (35 KB), which matters because it is scanned
/// and cleared once per run second (virtual runs pass many seconds quickly).
const INTERVAL_DIGITS: u8 = 2;

/// The interval histogram: same range as the report's, coarser buckets.
fn new_interval_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, INTERVAL_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// A fresh latency histogram with the crate's bounds.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's preconditions (low ≥ 1,
    // high ≥ 2·low, digits ≤ 5), so creation cannot fail.
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Counters and latency of one operation.
#[derive(Clone, Debug)]
pub(crate) struct OpStats {
    /// Successful-call latency, allocated on the first successful call.
    pub(crate) latency_us: Option<Histogram<u64>>,
    /// Failed calls by `names::error_label_index`.
    pub(crate) errors: [u64; names::ERROR_LABEL_COUNT],
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            latency_us: None,
            errors: [0; names::ERROR_LABEL_COUNT],
        }
    }
}

impl OpStats {
    pub(crate) fn ok(&self) -> u64 {
        self.latency_us.as_ref().map_or(0, Histogram::len)
    }
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Job lifecycle counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct JobCounters {
    pub(crate) queued: u64,
    pub(crate) started: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) canceled: u64,
    pub(crate) abandoned: u64,
}

/// Crypto work of one (side, operation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CryptoCounters {
    pub(crate) ops: u64,
    pub(crate) bytes: u64,
    pub(crate) nanos: u64,
}

/// One second of the time series, as the recorder accumulates it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Point {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) jobs_queued: u64,
    pub(crate) jobs_started: u64,
    pub(crate) jobs_finished: u64,
    pub(crate) agents: [u64; STATES],
    /// Pickup p50/p99 (µs) of a finished interval; the open one lives in `interval_pickup`.
    pub(crate) pickup_p50_us: Option<u64>,
    pub(crate) pickup_p99_us: Option<u64>,
}

/// Folds telemetry events into histograms and counters. See the module docs.
#[derive(Clone, Debug)]
pub struct Recorder {
    pub(crate) ops: Vec<OpStats>,
    pub(crate) pickup_us: Histogram<u64>,
    /// Queue time of jobs not picked up yet, by request id.
    queued_at: HashMap<u64, SimTime>,
    /// Pickup time of jobs whose queue event has not arrived yet, by request id.
    picked_at: HashMap<u64, SimTime>,
    pending_limit: usize,
    /// Pending and unmatched counts carried in from reports (their ids are not in reports).
    pub(crate) carried_pending: u64,
    pub(crate) carried_unmatched: u64,
    /// Pickup samples taken from the server's own times (jobs the fleet did not queue); the
    /// rest of `pickup_us` is on the fleet's clock.
    pub(crate) pickup_server_clock: u64,
    /// Join halves refused because the pending map was full.
    pub(crate) overflowed: u64,
    pub(crate) jobs: JobCounters,
    pub(crate) jobs_requeued: u64,
    pub(crate) jobs_lost: Option<u64>,
    /// The emulator's figures for the run: counters as their change during it, gauges at its end.
    pub(crate) emulator: Option<EmulatorStats>,
    /// The emulator's lifetime totals around the run, when read at both ends.
    pub(crate) emulator_lifetime: Option<EmulatorLifetime>,
    /// What a `pipelines` job source did with its runs (set by the driver at the end).
    pub(crate) runs: Option<crate::report::RunsReport>,
    /// Agents by state; signed because a driver may report a transition before the recorder
    /// learnt the fleet size. The report clamps at zero.
    pub(crate) agents: [i64; STATES],
    pub(crate) peak_busy: u64,
    pub(crate) tokens_rotated: u64,
    pub(crate) secrets_masked: u64,
    pub(crate) crypto: [[CryptoCounters; CRYPTO_OPS]; SIDES],
    pub(crate) series: Vec<Point>,
    pub(crate) series_dropped: u64,
    /// Pickups of the newest second (`series.len() - 1`), for its p50/p99.
    pub(crate) interval_pickup: Histogram<u64>,
    /// The latest event time seen: the run length when the driver does not give one.
    pub(crate) last_event: SimTime,
    /// Per-interval figures for the report's charts (bounded, see `timeline`).
    pub(crate) timeline: Timeline,
    /// Faults the driver applied, in the order they were sent (at most [`MAX_FAULTS`]; a
    /// scenario's faults are bounded by its validation, this guards a driver loop).
    pub(crate) faults: Vec<crate::report::FaultReport>,
}

/// Faults a recorder keeps; more are dropped (the scenario limit is far below).
pub const MAX_FAULTS: usize = 1_024;
/// Shards' reports of one fault start this close (their clocks share run time zero; each
/// applies the fault at its own wake-up).
const FAULT_MERGE_WINDOW_S: f64 = 0.5;

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder with the default pending-join bound.
    pub fn new() -> Recorder {
        Recorder::with_pending_limit(DEFAULT_PENDING_LIMIT)
    }

    /// An empty recorder holding at most `limit` half-joined pickups; beyond it, new halves are
    /// counted as unmatched instead of stored.
    pub fn with_pending_limit(limit: usize) -> Recorder {
        Recorder {
            ops: vec![OpStats::default(); OPS],
            pickup_us: new_histogram(),
            queued_at: HashMap::new(),
            picked_at: HashMap::new(),
            pending_limit: limit,
            carried_pending: 0,
            carried_unmatched: 0,
            pickup_server_clock: 0,
            overflowed: 0,
            jobs: JobCounters::default(),
            jobs_requeued: 0,
            jobs_lost: None,
            emulator: None,
            emulator_lifetime: None,
            runs: None,
            agents: [0; STATES],
            peak_busy: 0,
            tokens_rotated: 0,
            secrets_masked: 0,
            crypto: [[CryptoCounters::default(); CRYPTO_OPS]; SIDES],
            series: Vec::new(),
            series_dropped: 0,
            interval_pickup: new_interval_histogram(),
            last_event: SimTime::ZERO,
            timeline: Timeline::default(),
            faults: Vec::new(),
        }
    }

    /// Fold one event in.
    pub fn record(&mut self, ev: &Event) {
        match *ev {
            Event::Op {
                op,
                intended,
                done,
                outcome,
                ..
            } => self.record_op(op, intended, done, outcome),
            Event::JobQueued { request_id, at } => {
                self.jobs.queued += 1;
                self.timeline.job_queued(at);
                if let Some(p) = self.point(at) {
                    p.jobs_queued += 1;
                }
                match self.picked_at.remove(&request_id) {
                    Some(picked) => self.record_pickup(at, picked),
                    None => self.hold(true, request_id, at),
                }
            }
            Event::JobPickedUp { request_id, at, .. } => {
                self.jobs.started += 1;
                self.timeline.job_started(at);
                if let Some(p) = self.point(at) {
                    p.jobs_started += 1;
                }
                match self.queued_at.remove(&request_id) {
                    Some(queued) => self.record_pickup(queued, at),
                    None => self.hold(false, request_id, at),
                }
            }
            Event::JobFinished { result, at, .. } => {
                match result {
                    TaskResult::Succeeded
                    | TaskResult::SucceededWithIssues
                    | TaskResult::Skipped => self.jobs.succeeded += 1,
                    TaskResult::Failed => self.jobs.failed += 1,
                    TaskResult::Abandoned => self.jobs.abandoned += 1,
                    TaskResult::Canceled => self.jobs.canceled += 1,
                }
                self.timeline.job_finished(at);
                if let Some(p) = self.point(at) {
                    p.jobs_finished += 1;
                }
            }
            Event::AgentState { from, to, at, .. } => {
                self.agents[state_index(from)] -= 1;
                self.agents[state_index(to)] += 1;
                let busy = self.agents[state_index(AgentState::Busy)].max(0) as u64;
                self.peak_busy = self.peak_busy.max(busy);
                self.touch(at);
                self.snapshot_agents();
                self.timeline.set_agents(at, self.agents_now());
            }
            Event::TokenRotated { at, .. } => {
                self.tokens_rotated += 1;
                self.touch(at);
            }
            Event::SecretsMasked { count, .. } => self.secrets_masked += u64::from(count),
            Event::Crypto {
                side,
                op,
                count,
                bytes,
                nanos,
            } => {
                let c = &mut self.crypto[side_index(side)][crypto_index(op)];
                c.ops += u64::from(count);
                c.bytes += bytes;
                c.nanos += nanos;
            }
            Event::Fault {
                kind,
                start,
                end,
                agents,
            } => {
                if self.faults.len() < MAX_FAULTS {
                    self.faults.push(crate::report::FaultReport {
                        kind: kind.name().to_string(),
                        start_s: start.as_secs_f64(),
                        end_s: end.map(SimTime::as_secs_f64),
                        agents: u64::from(agents),
                    });
                }
                self.touch(start);
            }
        }
    }

    /// Start counting `agents` agents as offline (before their first state change), so the
    /// by-state gauge does not go negative when agents leave `Offline`.
    pub fn set_fleet_size(&mut self, agents: u64) {
        self.agents[state_index(AgentState::Offline)] += agents as i64;
        self.snapshot_agents();
        self.timeline.set_agents_now(self.agents_now());
    }

    /// Store what the `pipelines` job source did with its runs (at the end of the run).
    pub fn set_runs(&mut self, runs: crate::report::RunsReport) {
        self.runs = Some(runs);
    }

    /// Store the emulator's counters of a run that started with a fresh emulator (virtual
    /// time), so its totals are the run's; `jobs.requeued` comes from them.
    pub fn set_server_stats(&mut self, stats: EmulatorStats) {
        self.jobs_requeued = stats.jobs_requeued;
        self.emulator = Some(stats);
    }

    /// Store the emulator's lifetime totals read before the run (`start`, when it could be
    /// read) and after it (`end`). The run's figures are the change between them
    /// ([`EmulatorStats::since`]): a target that served earlier runs (15 leaked secrets
    /// yesterday) does not fail a clean run's `emulator.leaked_secrets == 0`. Both readings
    /// are kept apart as the lifetime totals.
    pub fn set_server_readings(&mut self, start: Option<EmulatorStats>, end: EmulatorStats) {
        let lifetime = EmulatorLifetime { start, end };
        self.set_server_stats(lifetime.during());
        self.emulator_lifetime = Some(lifetime);
    }

    /// Set the number of lost jobs, as the driver's end-of-run invariant check found them
    /// (queued, never finished, not running and not waiting). Without it the report says 0.
    pub fn set_jobs_lost(&mut self, lost: u64) {
        self.jobs_lost = Some(lost);
    }

    /// Shards of one run apply one schedule, each to its own agents: a fault of the same kind
    /// that started within [`FAULT_MERGE_WINDOW_S`] is the same fault, hitting the sum of both
    /// shards' agents; any other is another fault.
    fn merge_faults(&mut self, other: &Recorder) {
        for theirs in &other.faults {
            let same = self.faults.iter_mut().find(|mine| {
                mine.kind == theirs.kind
                    && (mine.start_s - theirs.start_s).abs() < FAULT_MERGE_WINDOW_S
            });
            match same {
                Some(mine) => {
                    mine.agents += theirs.agents;
                    mine.start_s = mine.start_s.min(theirs.start_s);
                    mine.end_s = match (mine.end_s, theirs.end_s) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => {
                    if self.faults.len() < MAX_FAULTS {
                        self.faults.push(theirs.clone());
                    }
                }
            }
        }
    }

    /// Add another recorder exactly: histograms add bucket by bucket, counters add, pending
    /// pickup halves join across the two. Time-series pickup percentiles of intervals both
    /// recorded are the larger of the two (an upper bound; only counts merge exactly there);
    /// a pickup joined here counts in the second of its later half. Emulator counters are not
    /// summed (one shared target): the snapshot read last is kept, see `read_later`.
    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            merge_histogram(&mut mine.latency_us, &theirs.latency_us);
            for (a, b) in mine.errors.iter_mut().zip(&theirs.errors) {
                *a += b;
            }
        }
        add_histogram(&mut self.pickup_us, &other.pickup_us);
        self.merge_pending(other);
        self.carried_pending += other.carried_pending;
        self.carried_unmatched += other.carried_unmatched;
        self.pickup_server_clock += other.pickup_server_clock;
        self.overflowed += other.overflowed;
        let (a, b) = (&mut self.jobs, &other.jobs);
        a.queued += b.queued;
        a.started += b.started;
        a.succeeded += b.succeeded;
        a.failed += b.failed;
        a.canceled += b.canceled;
        a.abandoned += b.abandoned;
        self.jobs_lost = match (self.jobs_lost, other.jobs_lost) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        if let Some(theirs) = other.runs {
            let mine = self.runs.get_or_insert_with(Default::default);
            mine.add(&theirs);
        }
        // Shards share one target, so its counters are not summed: every shard read the same
        // server's counters at its own start and end; the run spans the earliest start to the
        // latest end.
        if let Some(theirs) = &other.emulator_lifetime
            && (self.emulator_lifetime.is_some() || self.emulator.is_none())
        {
            let mine = self.emulator_lifetime.get_or_insert_with(|| theirs.clone());
            mine.widen(theirs);
            self.emulator = Some(mine.during());
        } else if let Some(theirs) = &other.emulator
            && self
                .emulator
                .as_ref()
                .is_none_or(|mine| read_later(theirs, mine))
        {
            self.emulator = Some(theirs.clone());
        }
        // `jobs.requeued` is the emulator's counter, so it follows the snapshot kept.
        self.jobs_requeued = match &self.emulator {
            Some(stats) => stats.jobs_requeued,
            None => self.jobs_requeued + other.jobs_requeued,
        };
        for (a, b) in self.agents.iter_mut().zip(&other.agents) {
            *a += b;
        }
        // Peaks of different shards need not coincide: the sum is an upper bound.
        self.peak_busy += other.peak_busy;
        self.tokens_rotated += other.tokens_rotated;
        self.secrets_masked += other.secrets_masked;
        self.merge_faults(other);
        for (side_a, side_b) in self.crypto.iter_mut().zip(&other.crypto) {
            for (a, b) in side_a.iter_mut().zip(side_b) {
                a.ops += b.ops;
                a.bytes += b.bytes;
                a.nanos += b.nanos;
            }
        }
        self.merge_series(other);
        self.timeline.merge(&other.timeline);
        self.last_event = self.last_event.max(other.last_event);
    }

    /// Operations that were called at least once, in report order.
    pub fn operations_seen(&self) -> impl Iterator<Item = Operation> + '_ {
        Operation::ALL.iter().copied().filter(|&op| {
            let s = &self.ops[op as usize];
            s.ok() + s.error_count() > 0
        })
    }

    /// Calls finished so far (every operation, successful or not).
    pub fn requests(&self) -> u64 {
        self.ops.iter().map(|s| s.ok() + s.error_count()).sum()
    }

    /// Job counters so far, as the report shows them (e.g. for a live progress line).
    pub fn jobs(&self) -> crate::report::JobsReport {
        crate::report::JobsReport {
            queued: self.jobs.queued,
            started: self.jobs.started,
            succeeded: self.jobs.succeeded,
            failed: self.jobs.failed,
            canceled: self.jobs.canceled,
            abandoned: self.jobs.abandoned,
            requeued: self.jobs_requeued,
            lost: self.jobs_lost.unwrap_or(0),
        }
    }

    /// Failed calls so far.
    pub fn errors(&self) -> u64 {
        self.ops.iter().map(OpStats::error_count).sum()
    }

    /// The job pickup histogram (µs), e.g. for a live progress line.
    pub fn pickup_histogram(&self) -> &Histogram<u64> {
        &self.pickup_us
    }

    /// The successful-call latency histogram (µs) of one operation, if it succeeded once.
    pub fn operation_histogram(&self, op: Operation) -> Option<&Histogram<u64>> {
        self.ops[op as usize].latency_us.as_ref()
    }

    /// Agents currently in `state` (clamped at zero).
    pub fn agents_in(&self, state: AgentState) -> u64 {
        self.agents[state_index(state)].max(0) as u64
    }

    /// Jobs queued but not picked up yet (including ones carried in from reports).
    pub fn pickups_pending(&self) -> u64 {
        self.queued_at.len() as u64 + self.carried_pending
    }

    /// Pickups whose queue event never arrived, plus halves refused at the pending bound.
    pub fn pickups_unmatched(&self) -> u64 {
        self.picked_at.len() as u64 + self.carried_unmatched + self.overflowed
    }

    /// A pickup measured on the server's clock (`queueTime` → `receiveTime` of a job request)
    /// for a job an agent picked up but the fleet never saw queued: the waiting half of the
    /// join becomes a sample. Returns whether it did; a job the fleet queued itself keeps its
    /// fleet-clock sample, and a job no agent of this run picked up is not this run's.
    pub fn record_server_pickup(&mut self, request_id: u64, latency: std::time::Duration) -> bool {
        if self.picked_at.remove(&request_id).is_none() {
            return false;
        }
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.pickup_us.saturating_record(us);
        self.pickup_server_clock += 1;
        true
    }

    /// Pickup samples taken from the server's times (the rest are on the fleet's clock).
    pub fn pickups_server_clock(&self) -> u64 {
        self.pickup_server_clock
    }

    /// The latest event time seen.
    pub fn last_event(&self) -> SimTime {
        self.last_event
    }

    fn record_op(&mut self, op: Operation, intended: SimTime, done: SimTime, outcome: Outcome) {
        let stats = &mut self.ops[op as usize];
        let failed = match names::error_label_index(outcome) {
            None => {
                let latency_us = (done - intended).as_micros().min(u128::from(u64::MAX)) as u64;
                stats
                    .latency_us
                    .get_or_insert_with(new_histogram)
                    .saturating_record(latency_us);
                self.timeline.record_op(op, done, Ok(latency_us));
                false
            }
            Some(label) => {
                stats.errors[label] += 1;
                self.timeline.record_op(op, done, Err(label));
                true
            }
        };
        if let Some(p) = self.point(done) {
            p.requests += 1;
            p.errors += u64::from(failed);
        }
    }

    fn record_pickup(&mut self, queued: SimTime, picked: SimTime) {
        let us = (picked - queued).as_micros().min(u128::from(u64::MAX)) as u64;
        self.pickup_us.saturating_record(us);
        self.interval_pickup.saturating_record(us);
        self.timeline.record_pickup(queued.max(picked), us);
    }

    /// Keep one half of a pickup join until the other arrives, within the bound.
    fn hold(&mut self, queued: bool, request_id: u64, at: SimTime) {
        if self.queued_at.len() + self.picked_at.len() >= self.pending_limit {
            self.overflowed += 1;
            return;
        }
        let map = if queued {
            &mut self.queued_at
        } else {
            &mut self.picked_at
        };
        map.insert(request_id, at);
    }

    fn merge_pending(&mut self, other: &Recorder) {
        // The join's result (the set of samples) does not depend on iteration order, so the
        // HashMap order cannot leak into the report; only which halves hit the bound could.
        let mut joined = Vec::new();
        for (&id, &queued) in &other.queued_at {
            self.join_half(true, id, queued, &mut joined);
        }
        for (&id, &picked) in &other.picked_at {
            self.join_half(false, id, picked, &mut joined);
        }
        self.chart_joined(joined);
    }

    /// Offer one half of a pickup join: with its partner held, the pair becomes a sample in the
    /// histogram (and `(second of the later half, µs)` in `joined`, for the chart); otherwise
    /// the half is held within the bound.
    fn join_half(&mut self, queued: bool, id: u64, at: SimTime, joined: &mut Vec<(u64, u64)>) {
        let partner = if queued {
            self.picked_at.remove(&id)
        } else {
            self.queued_at.remove(&id)
        };
        let Some(other) = partner else {
            self.hold(queued, id, at);
            return;
        };
        let (q, p) = if queued { (at, other) } else { (other, at) };
        let us = (p - q).as_micros().min(u128::from(u64::MAX)) as u64;
        self.pickup_us.saturating_record(us);
        self.timeline.record_pickup(q.max(p), us);
        joined.push((q.max(p).as_secs(), us));
    }

    /// Fold pickups joined after the fact into the per-second chart: each second's p50/p99 is
    /// the larger of what it held and the joined samples' own (the same upper bound as merged
    /// intervals). Seconds past the series limit are already counted in `series_dropped`.
    fn chart_joined(&mut self, mut joined: Vec<(u64, u64)>) {
        joined.sort_unstable();
        let mut interval = new_interval_histogram();
        for group in joined.chunk_by(|a, b| a.0 == b.0) {
            let sec = group[0].0 as usize;
            if sec >= SERIES_LIMIT_S {
                continue;
            }
            if sec >= self.series.len() {
                self.open_points_to(sec);
            }
            interval.reset();
            for &(_, us) in group {
                interval.saturating_record(us);
            }
            let point = &mut self.series[sec];
            close_interval(point, &mut interval);
        }
    }

    /// The pickup halves still waiting for their partner, as `(request id, µs since run time
    /// zero)` sorted by id: what a shard report carries so a merge can join a job queued by one
    /// shard with its pickup by another. At most the pending bound in all.
    pub fn open_pickups(&self) -> crate::report::OpenPickups {
        let sorted = |m: &HashMap<u64, SimTime>| {
            let mut v: Vec<(u64, u64)> = m.iter().map(|(&id, t)| (id, t.as_micros())).collect();
            v.sort_unstable();
            v
        };
        crate::report::OpenPickups {
            queued: sorted(&self.queued_at),
            picked: sorted(&self.picked_at),
        }
    }

    /// Take back open halves a report carried, moved `offset_us` later (onto another run
    /// time zero). Halves that meet their partner here join; the rest are held. The bound is
    /// raised to hold them all: they were already held once, by the shard that wrote them.
    pub(crate) fn restore_open(
        &mut self,
        queued: &[(u64, u64)],
        picked: &[(u64, u64)],
        offset_us: u64,
    ) {
        let held = self.queued_at.len() + self.picked_at.len();
        self.pending_limit = self.pending_limit.max(held + queued.len() + picked.len());
        let mut joined = Vec::new();
        let at = |t: u64| SimTime::from_micros(t.saturating_add(offset_us));
        for &(id, t) in queued {
            self.join_half(true, id, at(t), &mut joined);
        }
        for &(id, t) in picked {
            self.join_half(false, id, at(t), &mut joined);
        }
        self.chart_joined(joined);
    }

    /// Raise the pending bound to at least `limit` (a merge holds every half its inputs held).
    pub(crate) fn reserve_pending(&mut self, limit: usize) {
        self.pending_limit = self.pending_limit.max(limit);
    }

    /// Move the time series `secs` seconds later (a shard that started after the earliest one
    /// of its run); the new leading seconds are empty. Held pickup halves are moved by
    /// `restore_open`, to the microsecond.
    pub(crate) fn delay_series(&mut self, secs: usize) {
        self.timeline.delay(secs as u64);
        if secs == 0 || self.series.is_empty() {
            return;
        }
        let keep = SERIES_LIMIT_S.saturating_sub(secs).min(self.series.len());
        self.series_dropped += (self.series.len() - keep) as u64;
        self.series.truncate(keep);
        let mut shifted = vec![Point::default(); secs.min(SERIES_LIMIT_S)];
        shifted.append(&mut self.series);
        self.series = shifted;
    }

    /// Note an event time, opening time-series points up to it.
    fn touch(&mut self, at: SimTime) {
        let _ = self.point(at);
    }

    /// The time-series point of `at`'s second, opening points up to it; `None` past the limit.
    fn point(&mut self, at: SimTime) -> Option<&mut Point> {
        self.last_event = self.last_event.max(at);
        let sec = at.as_secs() as usize;
        if sec >= SERIES_LIMIT_S {
            self.series_dropped += 1;
            return None;
        }
        if sec >= self.series.len() {
            self.open_points_to(sec);
        }
        // Late events (an earlier second) count where they belong; only their pickup samples
        // fall into the newest interval.
        self.series.get_mut(sec)
    }

    /// Close the newest interval's pickup percentiles and open points up to `sec`.
    fn open_points_to(&mut self, sec: usize) {
        if let Some(last) = self.series.last_mut() {
            close_interval(last, &mut self.interval_pickup);
        }
        let agents = self.agents_now();
        self.series.resize(
            sec + 1,
            Point {
                agents,
                ..Point::default()
            },
        );
    }

    fn snapshot_agents(&mut self) {
        let agents = self.agents_now();
        if let Some(last) = self.series.last_mut() {
            last.agents = agents;
        }
    }

    fn agents_now(&self) -> [u64; STATES] {
        self.agents.map(|a| a.max(0) as u64)
    }

    fn merge_series(&mut self, other: &Recorder) {
        // Close other's open interval on a copy so both sides hold only closed percentiles,
        // except self's newest point, which keeps accumulating.
        let mut theirs = other.series.clone();
        if let Some(last) = theirs.last_mut() {
            close_interval(last, &mut other.interval_pickup.clone());
        }
        if theirs.len() > self.series.len() {
            self.open_points_to(theirs.len() - 1);
        }
        for (i, b) in theirs.iter().enumerate() {
            let a = &mut self.series[i];
            a.requests += b.requests;
            a.errors += b.errors;
            a.jobs_queued += b.jobs_queued;
            a.jobs_started += b.jobs_started;
            a.jobs_finished += b.jobs_finished;
            for (x, y) in a.agents.iter_mut().zip(&b.agents) {
                *x += y;
            }
            a.pickup_p50_us = max_opt(a.pickup_p50_us, b.pickup_p50_us);
            a.pickup_p99_us = max_opt(a.pickup_p99_us, b.pickup_p99_us);
        }
        self.series_dropped += other.series_dropped;
    }
}

/// The emulator's lifetime totals around a run: read before it (when that could be read) and
/// after it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmulatorLifetime {
    /// Before the run; `None` when the emulator could not be read then (the run's figures are
    /// then the totals at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<EmulatorStats>,
    /// After the run.
    pub end: EmulatorStats,
}

impl EmulatorLifetime {
    /// The run's figures: the change from `start` to `end`.
    pub fn during(&self) -> EmulatorStats {
        match &self.start {
            Some(start) => self.end.since(start),
            None => self.end.clone(),
        }
    }

    /// Span `other`'s readings too (another shard of the run, against the same target): the
    /// earliest start, the latest end.
    fn widen(&mut self, other: &EmulatorLifetime) {
        if read_later(&other.end, &self.end) {
            self.end = other.end.clone();
        }
        self.start = match (self.start.take(), &other.start) {
            (Some(mine), Some(theirs)) if read_later(&mine, theirs) => Some(theirs.clone()),
            (Some(mine), _) => Some(mine),
            (None, theirs) => theirs.clone(),
        };
    }
}

/// Whether emulator counters `a` were read after `b` from the same server: its counters only
/// grow, so the later read is at least as large in each; ties keep the earlier choice.
fn read_later(a: &EmulatorStats, b: &EmulatorStats) -> bool {
    let key = |s: &EmulatorStats| {
        (
            s.jobs_completed,
            s.tokens_issued,
            s.tokens_rotated,
            s.jobs_requeued,
            s.leaked_secrets,
        )
    };
    key(a) > key(b)
}

/// Write an interval's pickup percentiles into its point (keeping a larger value merged in
/// earlier) and reset the interval histogram.
fn close_interval(point: &mut Point, interval: &mut Histogram<u64>) {
    if !interval.is_empty() {
        point.pickup_p50_us = max_opt(point.pickup_p50_us, Some(interval.value_at_quantile(0.5)));
        point.pickup_p99_us = max_opt(point.pickup_p99_us, Some(interval.value_at_quantile(0.99)));
        interval.reset();
    }
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

fn merge_histogram(mine: &mut Option<Histogram<u64>>, theirs: &Option<Histogram<u64>>) {
    if let Some(t) = theirs {
        add_histogram(mine.get_or_insert_with(new_histogram), t);
    }
}

/// Add `theirs` into `mine`. Both come from `new_histogram` (or a report written by it), so
/// the ranges agree; a foreign histogram with a wider range is re-recorded value by value with
/// clamping rather than failing the merge.
pub(crate) fn add_histogram(mine: &mut Histogram<u64>, theirs: &Histogram<u64>) {
    if mine.add(theirs).is_err() {
        for v in theirs.iter_recorded() {
            let value = v.value_iterated_to().min(MAX_TRACKABLE_US);
            let _ = mine.record_n(value, v.count_at_value());
        }
    }
}

pub(crate) fn state_index(state: AgentState) -> usize {
    match state {
        AgentState::Registering => 0,
        AgentState::Idle => 1,
        AgentState::Busy => 2,
        AgentState::Offline => 3,
    }
}

pub(crate) fn side_index(side: Side) -> usize {
    match side {
        Side::Agents => 0,
        Side::Emulator => 1,
    }
}

pub(crate) fn crypto_index(op: CryptoOp) -> usize {
    CryptoOp::ALL.iter().position(|&o| o == op).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetsim_core::api::ErrorKind;
    use fleetsim_core::event::TransportError;

    fn ms(v: u64) -> SimTime {
        SimTime::from_millis(v)
    }

    fn call(op: Operation, intended_ms: u64, done_ms: u64, outcome: Outcome) -> Event {
        Event::Op {
            agent: 1,
            op,
            intended: ms(intended_ms),
            done: ms(done_ms),
            outcome,
        }
    }

    fn queued(id: u64, at_ms: u64) -> Event {
        Event::JobQueued {
            request_id: id,
            at: ms(at_ms),
        }
    }

    fn picked(id: u64, at_ms: u64) -> Event {
        Event::JobPickedUp {
            agent: 1,
            request_id: id,
            at: ms(at_ms),
        }
    }

    /// A deterministic mixed workload: latencies spread over four decades, some errors.
    fn workload(seed: u64, n: u64) -> Vec<Event> {
        let mut x = seed;
        let mut out = Vec::new();
        for i in 0..n {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let latency_ms = 1 + (x >> 33) % 10_000;
            let outcome = if x.is_multiple_of(17) {
                Outcome::Api(ErrorKind::Throttled)
            } else {
                Outcome::Ok
            };
            out.push(call(
                Operation::PollMessage,
                i * 10,
                i * 10 + latency_ms,
                outcome,
            ));
            out.push(queued(seed * 1_000_000 + i, i * 10));
            out.push(picked(seed * 1_000_000 + i, i * 10 + latency_ms / 2));
        }
        out
    }

    // Goal: merging shard recorders gives bit-for-bit the histograms and counters of one
    // recorder that saw every event (the "exact merge" promise of the reports).
    #[test]
    fn hdr_merge_is_exact() {
        let (a_events, b_events) = (workload(1, 3_000), workload(2, 2_000));
        let mut whole = Recorder::new();
        let (mut a, mut b) = (Recorder::new(), Recorder::new());
        for e in &a_events {
            whole.record(e);
            a.record(e);
        }
        for e in &b_events {
            whole.record(e);
            b.record(e);
        }
        a.merge(&b);
        let h = |r: &Recorder| r.operation_histogram(Operation::PollMessage).cloned();
        assert_eq!(h(&a), h(&whole));
        assert_eq!(a.pickup_histogram(), whole.pickup_histogram());
        assert_eq!(a.requests(), 5_000);
        assert_eq!(
            (a.requests(), a.errors()),
            (whole.requests(), whole.errors())
        );
        assert_eq!(a.pickup_histogram().len(), 5_000);
    }

    // Goal: pickup latency is joined by request id whichever event the driver delivers first,
    // and halves without a partner are counted, not silently dropped.
    #[test]
    fn pickup_join_works_in_both_orders() {
        let mut rec = Recorder::new();
        rec.record(&queued(1, 1_000));
        rec.record(&picked(1, 1_250));
        rec.record(&picked(2, 3_000));
        rec.record(&queued(2, 2_500));
        rec.record(&queued(3, 4_000));
        rec.record(&picked(4, 5_000));
        let h = rec.pickup_histogram();
        assert_eq!(h.len(), 2);
        assert!(h.equivalent(h.min(), 250_000), "min {}", h.min());
        assert!(h.equivalent(h.max(), 500_000), "max {}", h.max());
        assert_eq!(rec.pickups_pending(), 1, "job 3 still waits");
        assert_eq!(rec.pickups_unmatched(), 1, "job 4 was never queued");
    }

    // Goal: a job an agent picked up but the fleet never queued gets its sample from the
    // server's times (counted as such) instead of staying unmatched; a job the fleet queued
    // keeps its fleet-clock sample, and the count survives a report round trip.
    #[test]
    fn server_times_give_unmatched_pickups_a_sample() {
        let mut rec = Recorder::new();
        rec.record(&queued(1, 1_000));
        rec.record(&picked(1, 1_250));
        rec.record(&picked(2, 3_000));
        assert_eq!(rec.pickups_unmatched(), 1);
        assert!(!rec.record_server_pickup(1, std::time::Duration::from_secs(9)));
        assert!(!rec.record_server_pickup(3, std::time::Duration::from_secs(9)));
        assert!(rec.record_server_pickup(2, std::time::Duration::from_millis(700)));
        assert_eq!(rec.pickups_unmatched(), 0);
        assert_eq!(rec.pickup_histogram().len(), 2);
        assert_eq!(rec.pickups_server_clock(), 1);
        let h = rec.pickup_histogram();
        assert!(h.equivalent(h.max(), 700_000), "max {}", h.max());
        let report = crate::report::Report::from_recorder(&rec, crate::report::RunMeta::default());
        assert_eq!(report.job_pickup.server_clock, 1);
    }

    // Goal: the pending join map is bounded; halves past the bound are counted as unmatched.
    #[test]
    fn pending_pickups_are_bounded() {
        let mut rec = Recorder::with_pending_limit(2);
        for id in 0..5 {
            rec.record(&queued(id, 0));
        }
        assert_eq!(rec.pickups_pending(), 2);
        assert_eq!(rec.pickups_unmatched(), 3);
    }

    // Goal: latency runs from the intended start, only successful calls enter the histogram,
    // errors count by bounded label, and an empty long poll is timed apart from an answer.
    #[test]
    fn operations_time_ok_calls_and_count_errors_by_label() {
        let mut rec = Recorder::new();
        rec.record(&call(Operation::PollMessage, 100, 400, Outcome::Ok));
        rec.record(&call(Operation::PollEmpty, 0, 50_000, Outcome::Ok));
        rec.record(&call(
            Operation::PollMessage,
            0,
            5,
            Outcome::Transport(TransportError::Reset),
        ));
        rec.record(&call(Operation::PollMessage, 0, 5, Outcome::Status(503)));
        let answered = rec
            .operation_histogram(Operation::PollMessage)
            .expect("answered");
        assert_eq!(answered.len(), 1);
        assert!(answered.equivalent(answered.max(), 300_000));
        let empty = rec
            .operation_histogram(Operation::PollEmpty)
            .expect("empty polls");
        assert!(empty.equivalent(empty.max(), 50_000_000));
        assert_eq!((rec.requests(), rec.errors()), (4, 2));
        let stats = &rec.ops[Operation::PollMessage as usize];
        let label = |o| names::error_label_index(o).expect("error");
        assert_eq!(
            stats.errors[label(Outcome::Transport(TransportError::Reset))],
            1
        );
        assert_eq!(stats.errors[label(Outcome::Status(503))], 1);
        let seen: Vec<_> = rec.operations_seen().collect();
        assert_eq!(seen, [Operation::PollMessage, Operation::PollEmpty]);
    }

    // Goal: `op as usize` indexes the per-operation table in `Operation::ALL` order.
    #[test]
    fn operation_discriminants_match_report_order() {
        for (i, &op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op as usize, i, "{op:?}");
        }
        for (i, &s) in AgentState::ALL.iter().enumerate() {
            assert_eq!(state_index(s), i, "{s:?}");
        }
    }

    // Goal: agents-by-state follows transitions from the fleet size, with the busy peak and the
    // per-second series showing the state at the end of each second.
    #[test]
    fn agents_by_state_and_series_follow_transitions() {
        let mut rec = Recorder::new();
        rec.set_fleet_size(3);
        let mv = |agent, from, to, at_ms| Event::AgentState {
            agent,
            from,
            to,
            at: ms(at_ms),
        };
        use AgentState::*;
        for agent in 0..3 {
            rec.record(&mv(agent, Offline, Registering, 100));
            rec.record(&mv(agent, Registering, Idle, 900));
        }
        rec.record(&mv(0, Idle, Busy, 1_500));
        rec.record(&mv(1, Idle, Busy, 1_600));
        rec.record(&mv(1, Busy, Idle, 2_100));
        assert_eq!(rec.agents_in(Idle), 2);
        assert_eq!(rec.agents_in(Busy), 1);
        assert_eq!(rec.agents_in(Offline), 0);
        assert_eq!(rec.peak_busy, 2);
        let agents: Vec<[u64; 4]> = rec.series.iter().map(|p| p.agents).collect();
        assert_eq!(agents, [[0, 3, 0, 0], [0, 1, 2, 0], [0, 2, 1, 0]]);
    }

    // Goal: crypto work adds up per (side, op) and jobs count by result.
    #[test]
    fn crypto_and_job_results_are_counted() {
        let mut rec = Recorder::new();
        let crypto = |side, count, bytes, nanos| Event::Crypto {
            side,
            op: CryptoOp::AesDecrypt,
            count,
            bytes,
            nanos,
        };
        rec.record(&crypto(Side::Agents, 2, 1_000, 500));
        rec.record(&crypto(Side::Agents, 3, 2_000, 700));
        rec.record(&crypto(Side::Emulator, 1, 10, 0));
        let c = rec.crypto[side_index(Side::Agents)][crypto_index(CryptoOp::AesDecrypt)];
        assert_eq!(
            c,
            CryptoCounters {
                ops: 5,
                bytes: 3_000,
                nanos: 1_200
            }
        );
        for result in [
            TaskResult::Succeeded,
            TaskResult::Failed,
            TaskResult::Canceled,
            TaskResult::Abandoned,
        ] {
            rec.record(&Event::JobFinished {
                agent: 0,
                request_id: 1,
                result,
                at: ms(10),
            });
        }
        let j = rec.jobs;
        // A job cut short by the run's end is abandoned, not failed.
        assert_eq!(
            (j.succeeded, j.failed, j.canceled, j.abandoned),
            (1, 1, 1, 1)
        );
    }
}
