//! The timeline: what the report's charts draw over time, per interval of the run.
//!
//! Per interval it keeps each operation's successful-call latency and errors, errors by kind,
//! requests, jobs queued/started/finished, the job pickup latency (in the interval of the later
//! half of the join) and agents by state at the interval's end. Latencies are kept as a
//! [`Sketch`], a sparse log-linear histogram (32 buckets per power of two, so a percentile read
//! from it is within 1.6 % of the exact value): small enough to keep one per operation per
//! interval, and it adds exactly, so adjacent intervals and shards merge without loss.
//!
//! Bounded: intervals start one second wide and at most [`MAX_INTERVALS`] are kept; a run that
//! would need more doubles the width and merges neighbours pairwise (the widths stay powers of
//! two, so shards and reports always align by coarsening the finer one). A sketch holds at most
//! [`BUCKETS`] bins.
//!
//! Only the recorder writes it; the report carries it as [`TimelineReport`] (`timeline` key).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fleetsim_core::SimTime;
use fleetsim_core::ops::{AgentState, Operation};
use serde::{Deserialize, Serialize};

use crate::names;

/// The most intervals a timeline keeps; a longer run coarsens (two neighbours become one).
/// 1,200 is about one point per pixel of a wide chart: more would not draw.
pub const MAX_INTERVALS: usize = 1_200;

/// The sketch encoding written to reports: per bin, LEB128 of the bin's distance from the
/// previous one and of its count, base64.
pub const SKETCH_ENCODING: &str = "log2x32-leb128-base64";

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Bins of a sketch: values below 32 µs exactly, then 32 per power of two up to `u64::MAX`.
pub const BUCKETS: usize = SUB as usize * (1 + 64 - SUB_BITS as usize);

const OPS: usize = Operation::ALL.len();
const STATES: usize = AgentState::ALL.len();
/// Dense rows of the open interval: one per operation, then job pickup.
const ROWS: usize = OPS + 1;
const PICKUP_ROW: usize = OPS;

fn bucket_of(us: u64) -> u16 {
    if us < SUB {
        return us as u16;
    }
    let shift = 63 - us.leading_zeros() - SUB_BITS;
    let sub = (us >> shift) & (SUB - 1);
    (SUB + u64::from(shift) * SUB + sub) as u16
}

/// The middle of a bin (its value when read back).
fn bucket_value(bin: u16) -> u64 {
    let b = u64::from(bin);
    if b < SUB {
        return b;
    }
    let (shift, sub) = ((b - SUB) / SUB, (b - SUB) % SUB);
    ((SUB + sub) << shift) + ((1u64 << shift) >> 1)
}

/// A sparse log-linear latency histogram (µs): sorted `(bin, count)` pairs. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sketch {
    bins: Vec<(u16, u32)>,
}

impl Sketch {
    /// Count one value.
    pub fn record(&mut self, us: u64) {
        self.add_bin(bucket_of(us), 1);
    }

    fn add_bin(&mut self, bin: u16, n: u32) {
        match self.bins.binary_search_by_key(&bin, |&(b, _)| b) {
            Ok(i) => self.bins[i].1 = self.bins[i].1.saturating_add(n),
            Err(i) => self.bins.insert(i, (bin, n)),
        }
    }

    /// Add another sketch bin by bin.
    pub fn add(&mut self, other: &Sketch) {
        if other.bins.is_empty() {
            return;
        }
        if self.bins.is_empty() {
            self.bins.clone_from(&other.bins);
            return;
        }
        let (x, y) = (&self.bins, &other.bins);
        let mut out = Vec::with_capacity(x.len() + y.len());
        let (mut i, mut j) = (0, 0);
        while i < x.len() && j < y.len() {
            if x[i].0 == y[j].0 {
                out.push((x[i].0, x[i].1.saturating_add(y[j].1)));
                i += 1;
                j += 1;
            } else if x[i].0 < y[j].0 {
                out.push(x[i]);
                i += 1;
            } else {
                out.push(y[j]);
                j += 1;
            }
        }
        out.extend_from_slice(&x[i..]);
        out.extend_from_slice(&y[j..]);
        self.bins = out;
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.bins.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    /// The value at quantile `q` (0–1), µs, as the middle of its bin; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for &(bin, count) in &self.bins {
            seen += u64::from(count);
            if seen >= rank {
                return Some(bucket_value(bin));
            }
        }
        self.bins.last().map(|&(b, _)| bucket_value(b))
    }

    /// The report form, see [`SKETCH_ENCODING`]; an empty sketch is the empty string.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(self.bins.len() * 3);
        let mut prev = 0u16;
        for &(bin, n) in &self.bins {
            leb128(&mut bytes, u64::from(bin - prev));
            leb128(&mut bytes, u64::from(n));
            prev = bin;
        }
        BASE64.encode(bytes)
    }

    /// Read [`Sketch::encode`]'s form back; bins must increase, stay below [`BUCKETS`] and
    /// count at least one.
    pub fn decode(text: &str) -> Result<Sketch, String> {
        let bytes = BASE64
            .decode(text)
            .map_err(|e| format!("sketch is not base64: {e}"))?;
        let mut bins = Vec::new();
        let mut at = 0usize;
        let mut prev: Option<u64> = None;
        while at < bytes.len() {
            let step = read_leb128(&bytes, &mut at)?;
            let n = read_leb128(&bytes, &mut at)?;
            let bin = prev.map_or(Some(step), |p| p.checked_add(step));
            let bin = match bin {
                Some(b) if b < BUCKETS as u64 && (prev.is_none() || step > 0) => b,
                _ => return Err("sketch bins out of order or range".to_string()),
            };
            let n = u32::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .ok_or("sketch bin count is 0 or too large")?;
            bins.push((bin as u16, n));
            prev = Some(bin);
        }
        Ok(Sketch { bins })
    }
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb128(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = bytes.get(*at) else {
            return Err("sketch ends inside a number".to_string());
        };
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("sketch number longer than 64 bits".to_string())
}

/// One interval of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Interval {
    requests: u64,
    jobs_queued: u64,
    jobs_started: u64,
    jobs_finished: u64,
    /// Agents by state at the interval's end, `AgentState::ALL` order.
    agents: [u64; STATES],
    /// Failed calls per operation (`Operation as usize`).
    op_errors: [u64; OPS],
    /// Successful-call latency per operation.
    op_latency: Vec<Sketch>,
    errors_by_kind: [u64; names::ERROR_LABEL_COUNT],
    pickup: Sketch,
}

impl Interval {
    fn new(agents: [u64; STATES]) -> Interval {
        Interval {
            requests: 0,
            jobs_queued: 0,
            jobs_started: 0,
            jobs_finished: 0,
            agents,
            op_errors: [0; OPS],
            op_latency: vec![Sketch::default(); OPS],
            errors_by_kind: [0; names::ERROR_LABEL_COUNT],
            pickup: Sketch::default(),
        }
    }

    /// Add the counts and latencies of `other`, an interval over the same or the next time.
    fn add_counts(&mut self, other: &Interval) {
        self.requests += other.requests;
        self.jobs_queued += other.jobs_queued;
        self.jobs_started += other.jobs_started;
        self.jobs_finished += other.jobs_finished;
        for (a, b) in self.op_errors.iter_mut().zip(&other.op_errors) {
            *a += b;
        }
        for (a, b) in self.op_latency.iter_mut().zip(&other.op_latency) {
            a.add(b);
        }
        for (a, b) in self.errors_by_kind.iter_mut().zip(&other.errors_by_kind) {
            *a += b;
        }
        self.pickup.add(&other.pickup);
    }
}

/// Latency counts of the newest interval, dense by (operation, bin), job pickup in the row after
/// the operations: recording there is one array increment instead of a sorted insert (this is
/// the recorder's hot path). They are folded into the interval's sketches when a later
/// interval opens and before any read.
#[derive(Clone, Debug, PartialEq)]
struct Open {
    /// `ROWS × BUCKETS` counts, allocated on the first call.
    dense: Vec<u32>,
    /// Per row, the lowest and highest bin counted (`lo > hi`: none).
    lo: [u16; ROWS],
    hi: [u16; ROWS],
}

impl Open {
    fn new() -> Open {
        Open {
            dense: Vec::new(),
            lo: [u16::MAX; ROWS],
            hi: [0; ROWS],
        }
    }

    fn record(&mut self, op: usize, bin: u16) {
        if self.dense.is_empty() {
            self.dense = vec![0; ROWS * BUCKETS];
        }
        let cell = &mut self.dense[op * BUCKETS + usize::from(bin)];
        *cell = cell.saturating_add(1);
        self.lo[op] = self.lo[op].min(bin);
        self.hi[op] = self.hi[op].max(bin);
    }

    /// Move the counts into `into`'s sketches and clear.
    fn drain_into(&mut self, into: &mut Interval) {
        for row in 0..ROWS {
            let (lo, hi) = (self.lo[row], self.hi[row]);
            if lo > hi {
                continue;
            }
            let sketch = if row == PICKUP_ROW {
                &mut into.pickup
            } else {
                &mut into.op_latency[row]
            };
            for bin in lo..=hi {
                let cell = &mut self.dense[row * BUCKETS + usize::from(bin)];
                if *cell > 0 {
                    sketch.add_bin(bin, *cell);
                    *cell = 0;
                }
            }
            (self.lo[row], self.hi[row]) = (u16::MAX, 0);
        }
    }

    fn is_empty(&self) -> bool {
        self.lo.iter().zip(&self.hi).all(|(lo, hi)| lo > hi)
    }
}

/// Per-interval figures of a run, bounded to [`MAX_INTERVALS`]. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    width_s: u64,
    intervals: Vec<Interval>,
    /// Agents by state now: the value new intervals start with.
    agents: [u64; STATES],
    /// The newest interval's latencies not yet in its sketches.
    open: Open,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            width_s: 1,
            intervals: Vec::new(),
            agents: [0; STATES],
            open: Open::new(),
        }
    }
}

impl Timeline {
    /// Seconds per interval (a power of two).
    pub fn interval_s(&self) -> u64 {
        self.width_s
    }

    /// Intervals held.
    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// A call finished at `done`: its latency (µs) if it succeeded, else its error label.
    pub(crate) fn record_op(&mut self, op: Operation, done: SimTime, result: Result<u64, usize>) {
        let idx = self.index(done);
        let newest = idx + 1 == self.intervals.len();
        let slot = &mut self.intervals[idx];
        slot.requests += 1;
        match result {
            Ok(us) if newest => self.open.record(op as usize, bucket_of(us)),
            Ok(us) => slot.op_latency[op as usize].record(us),
            Err(label) => {
                slot.op_errors[op as usize] += 1;
                slot.errors_by_kind[label] += 1;
            }
        }
    }

    /// A pickup sample (µs) joined at `at` (the later half's time).
    pub(crate) fn record_pickup(&mut self, at: SimTime, us: u64) {
        let idx = self.index(at);
        if idx + 1 == self.intervals.len() {
            self.open.record(PICKUP_ROW, bucket_of(us));
        } else {
            self.intervals[idx].pickup.record(us);
        }
    }

    pub(crate) fn job_queued(&mut self, at: SimTime) {
        self.slot(at).jobs_queued += 1;
    }

    pub(crate) fn job_started(&mut self, at: SimTime) {
        self.slot(at).jobs_started += 1;
    }

    pub(crate) fn job_finished(&mut self, at: SimTime) {
        self.slot(at).jobs_finished += 1;
    }

    /// Agents by state changed at `at`: the newest interval ends with `agents`, and so do the
    /// intervals opened after it until the next change.
    pub(crate) fn set_agents(&mut self, at: SimTime, agents: [u64; STATES]) {
        let _ = self.slot(at);
        self.set_agents_now(agents);
    }

    /// Agents by state changed, without a time (the fleet size, set before the run).
    pub(crate) fn set_agents_now(&mut self, agents: [u64; STATES]) {
        self.agents = agents;
        if let Some(last) = self.intervals.last_mut() {
            last.agents = agents;
        }
    }

    /// The interval holding `at`, opening intervals up to it and coarsening past the bound.
    /// A late event (earlier than the newest interval) counts where it belongs.
    fn slot(&mut self, at: SimTime) -> &mut Interval {
        let idx = self.index(at);
        &mut self.intervals[idx]
    }

    /// The index of `slot(at)`.
    fn index(&mut self, at: SimTime) -> usize {
        let sec = at.as_secs();
        // The width is a power of two: a shift, not a division, on the hot path.
        while sec >> self.width_s.trailing_zeros() >= MAX_INTERVALS as u64 {
            self.coarsen();
        }
        let idx = (sec >> self.width_s.trailing_zeros()) as usize;
        if idx >= self.intervals.len() {
            self.flush();
            let agents = self.agents;
            self.intervals
                .resize_with(idx + 1, || Interval::new(agents));
        }
        idx
    }

    /// Fold the newest interval's dense latency counts into its sketches.
    fn flush(&mut self) {
        if let Some(last) = self.intervals.last_mut()
            && !self.open.is_empty()
        {
            self.open.drain_into(last);
        }
    }

    /// Double the width: neighbours (2i, 2i+1) become interval i, which ends with the later
    /// one's agents.
    fn coarsen(&mut self) {
        self.flush();
        self.width_s = self.width_s.saturating_mul(2);
        let old = std::mem::take(&mut self.intervals);
        let mut iter = old.into_iter();
        while let Some(mut first) = iter.next() {
            if let Some(second) = iter.next() {
                first.add_counts(&second);
                first.agents = second.agents;
            }
            self.intervals.push(first);
        }
    }

    /// Add another timeline of the same run (another shard, same time zero): the finer one is
    /// coarsened to the wider width, then intervals add one by one; agents add too (different
    /// agents), each side holding its last state past its own end.
    pub(crate) fn merge(&mut self, other: &Timeline) {
        if other.intervals.is_empty() {
            return;
        }
        let mut theirs = other.clone();
        theirs.flush();
        self.flush();
        while self.width_s < theirs.width_s {
            self.coarsen();
        }
        while theirs.width_s < self.width_s {
            theirs.coarsen();
        }
        let n = self.intervals.len().max(theirs.intervals.len());
        self.pad_to(n);
        theirs.pad_to(n);
        for (a, b) in self.intervals.iter_mut().zip(&theirs.intervals) {
            a.add_counts(b);
            for (x, y) in a.agents.iter_mut().zip(&b.agents) {
                *x += y;
            }
        }
        for (x, y) in self.agents.iter_mut().zip(&theirs.agents) {
            *x += y;
        }
        while self.intervals.len() > MAX_INTERVALS {
            self.coarsen();
        }
    }

    fn pad_to(&mut self, n: usize) {
        let agents = self.agents;
        if self.intervals.len() < n {
            self.intervals.resize_with(n, || Interval::new(agents));
        }
    }

    /// Move the timeline `secs` seconds later (a shard that started after its run's time
    /// zero), to the nearest whole interval. The new leading intervals count nothing, and the
    /// shard's agents (state changes keep their total) as offline: not started yet.
    pub(crate) fn delay(&mut self, secs: u64) {
        let shift = ((secs + self.width_s / 2) / self.width_s) as usize;
        if shift == 0 || self.intervals.is_empty() {
            return;
        }
        self.flush();
        let mut before = [0; STATES];
        before[crate::recorder::state_index(AgentState::Offline)] =
            self.intervals[0].agents.iter().sum();
        let mut shifted: Vec<Interval> = (0..shift).map(|_| Interval::new(before)).collect();
        shifted.append(&mut self.intervals);
        self.intervals = shifted;
        while self.intervals.len() > MAX_INTERVALS {
            self.coarsen();
        }
    }

    /// The report form; `None` when nothing was recorded.
    pub fn to_report(&self) -> Option<TimelineReport> {
        if self.intervals.is_empty() {
            return None;
        }
        let mut flushed;
        let iv = if self.open.is_empty() {
            &self.intervals
        } else {
            flushed = self.intervals.clone();
            let last = flushed.last_mut().expect("not empty");
            self.open.clone().drain_into(last);
            &flushed
        };
        let column = |f: &dyn Fn(&Interval) -> u64| iv.iter().map(f).collect::<Vec<u64>>();
        let agents = AgentState::ALL
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name().to_string(), column(&|p| p.agents[i])))
            .collect();
        let errors_by_kind = (0..names::ERROR_LABEL_COUNT)
            .filter(|&k| iv.iter().any(|p| p.errors_by_kind[k] > 0))
            .map(|k| {
                let label = names::error_label(k).to_string();
                (label, column(&|p| p.errors_by_kind[k]))
            })
            .collect();
        let operations = Operation::ALL
            .iter()
            .filter(|&&op| {
                let i = op as usize;
                iv.iter()
                    .any(|p| p.op_errors[i] > 0 || !p.op_latency[i].bins.is_empty())
            })
            .map(|&op| {
                let i = op as usize;
                let latency = LatencyTimeline::of(iv.iter().map(|p| &p.op_latency[i]));
                let errors = column(&|p| p.op_errors[i]);
                (op.name().to_string(), OperationTimeline { errors, latency })
            })
            .collect();
        Some(TimelineReport {
            interval_s: self.width_s,
            encoding: SKETCH_ENCODING.to_string(),
            requests: column(&|p| p.requests),
            jobs_queued: column(&|p| p.jobs_queued),
            jobs_started: column(&|p| p.jobs_started),
            jobs_finished: column(&|p| p.jobs_finished),
            agents,
            errors_by_kind,
            job_pickup: LatencyTimeline::of(iv.iter().map(|p| &p.pickup)),
            operations,
        })
    }

    /// Rebuild a timeline from its report form, refusing one this build did not write (an
    /// unknown name, columns of different lengths, more than [`MAX_INTERVALS`]).
    pub fn from_report(r: &TimelineReport) -> Result<Timeline, String> {
        let n = r.requests.len();
        if n > MAX_INTERVALS {
            return Err(format!("{n} intervals (at most {MAX_INTERVALS})"));
        }
        if !r.interval_s.is_power_of_two() {
            return Err(format!("interval_s {} is not a power of two", r.interval_s));
        }
        if r.encoding != SKETCH_ENCODING {
            return Err(format!(
                "encoding {:?} (expected {SKETCH_ENCODING})",
                r.encoding
            ));
        }
        let same = |name: &str, len: usize| {
            if len == n {
                Ok(())
            } else {
                Err(format!("{name} has {len} intervals, requests {n}"))
            }
        };
        let mut iv: Vec<Interval> = (0..n).map(|_| Interval::new([0; STATES])).collect();
        for (name, col) in [
            ("jobs_queued", &r.jobs_queued),
            ("jobs_started", &r.jobs_started),
            ("jobs_finished", &r.jobs_finished),
        ] {
            same(name, col.len())?;
        }
        for (i, p) in iv.iter_mut().enumerate() {
            p.requests = r.requests[i];
            p.jobs_queued = r.jobs_queued[i];
            p.jobs_started = r.jobs_started[i];
            p.jobs_finished = r.jobs_finished[i];
        }
        for (state, col) in &r.agents {
            let s = AgentState::ALL
                .iter()
                .position(|s| s.name() == state)
                .ok_or_else(|| format!("unknown agent state {state:?}"))?;
            same(state, col.len())?;
            for (p, &v) in iv.iter_mut().zip(col) {
                p.agents[s] = v;
            }
        }
        for (label, col) in &r.errors_by_kind {
            let k = names::error_label_from_name(label)
                .ok_or_else(|| format!("unknown error label {label:?}"))?;
            same(label, col.len())?;
            for (p, &v) in iv.iter_mut().zip(col) {
                p.errors_by_kind[k] = v;
            }
        }
        let pickup = r.job_pickup.sketches(names::JOB_PICKUP, n)?;
        for (p, s) in iv.iter_mut().zip(pickup) {
            p.pickup = s;
        }
        for (name, o) in &r.operations {
            let op =
                Operation::from_name(name).ok_or_else(|| format!("unknown operation {name:?}"))?;
            same(name, o.errors.len())?;
            let sketches = o.latency.sketches(name, n)?;
            for ((p, s), &e) in iv.iter_mut().zip(sketches).zip(&o.errors) {
                p.op_latency[op as usize] = s;
                p.op_errors[op as usize] = e;
            }
        }
        let agents = iv.last().map_or([0; STATES], |p| p.agents);
        Ok(Timeline {
            width_s: r.interval_s,
            intervals: iv,
            agents,
            open: Open::new(),
        })
    }
}

/// The `timeline` key of a report: columns of one value per interval; interval `i` covers
/// run seconds `[i·interval_s, (i+1)·interval_s)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineReport {
    /// Seconds per interval (a power of two; 1 unless the run was longer than
    /// [`MAX_INTERVALS`] seconds).
    pub interval_s: u64,
    /// Always [`SKETCH_ENCODING`].
    pub encoding: String,
    /// Calls finished in the interval, every operation.
    pub requests: Vec<u64>,
    /// Jobs queued in the interval.
    pub jobs_queued: Vec<u64>,
    /// Jobs picked up in the interval.
    pub jobs_started: Vec<u64>,
    /// Jobs finished in the interval.
    pub jobs_finished: Vec<u64>,
    /// Agents by state at the interval's end, by state name.
    pub agents: BTreeMap<String, Vec<u64>>,
    /// Failed calls in the interval by error label (labels seen in the run only).
    pub errors_by_kind: BTreeMap<String, Vec<u64>>,
    /// Job pickups joined in the interval (fleet clock; server-clock samples are not timed).
    pub job_pickup: LatencyTimeline,
    /// Per operation called in the run.
    pub operations: BTreeMap<String, OperationTimeline>,
}

/// A latency over time: per interval the sample count, p50/p95/p99 in seconds (`null` when
/// empty) and the sketch they were read from (for merging).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyTimeline {
    /// Samples in the interval.
    pub count: Vec<u64>,
    /// Median, seconds.
    pub p50_s: Vec<Option<f64>>,
    /// 95th percentile, seconds.
    pub p95_s: Vec<Option<f64>>,
    /// 99th percentile, seconds.
    pub p99_s: Vec<Option<f64>>,
    /// The interval's sketch, [`SKETCH_ENCODING`].
    pub sketch: Vec<String>,
}

impl LatencyTimeline {
    fn of<'a>(sketches: impl Iterator<Item = &'a Sketch>) -> LatencyTimeline {
        let mut t = LatencyTimeline::default();
        let secs = |v: Option<u64>| v.map(|us| us as f64 / 1e6);
        for s in sketches {
            t.count.push(s.count());
            t.p50_s.push(secs(s.quantile(0.50)));
            t.p95_s.push(secs(s.quantile(0.95)));
            t.p99_s.push(secs(s.quantile(0.99)));
            t.sketch.push(s.encode());
        }
        t
    }

    fn sketches(&self, name: &str, n: usize) -> Result<Vec<Sketch>, String> {
        if self.sketch.len() != n {
            return Err(format!(
                "{name} has {} sketches, requests {n} intervals",
                self.sketch.len()
            ));
        }
        self.sketch
            .iter()
            .map(|s| Sketch::decode(s).map_err(|e| format!("{name}: {e}")))
            .collect()
    }
}

/// One operation over time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperationTimeline {
    /// Failed calls in the interval.
    pub errors: Vec<u64>,
    /// Successful-call latency.
    #[serde(flatten)]
    pub latency: LatencyTimeline,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> SimTime {
        SimTime::from_secs(secs)
    }

    // Goal: bins cover every u64, read back within 1.6 % (exact below 32 µs), in order.
    #[test]
    fn sketch_bins_are_ordered_and_accurate() {
        let mut prev = 0;
        for v in (0..20_000u64).chain([1 << 40, u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!((b as usize) < BUCKETS, "{v}");
            assert!(b >= prev || v > 20_000, "bins grow with the value");
            prev = b;
            let back = bucket_value(b) as f64;
            assert!(
                (back - v as f64).abs() <= v as f64 / 64.0 + 0.5,
                "{v} read back {back}"
            );
        }
        assert_eq!(bucket_value(bucket_of(17)), 17);
        let mut sk = Sketch::default();
        for v in 1..=1_000u64 {
            sk.record(v * 1_000);
        }
        let p99 = sk.quantile(0.99).expect("samples") as f64;
        assert!((p99 - 990_000.0).abs() < 990_000.0 * 0.016, "p99 {p99}");
        assert_eq!(Sketch::decode(&sk.encode()), Ok(sk));
        assert!(Sketch::decode("AAA=").is_err(), "a zero count is refused");
        assert!(
            Sketch::decode("/w==").is_err(),
            "a truncated number is refused"
        );
    }

    // Goal: a run longer than the bound coarsens to at most MAX_INTERVALS power-of-two
    // intervals, losing no count and keeping the agents at each interval's end.
    #[test]
    fn long_runs_coarsen_within_the_bound() {
        let mut t = Timeline::default();
        let hours = 5 * 3_600;
        for sec in 0..hours {
            t.record_op(Operation::PollMessage, s(sec), Ok(1_000 + sec));
            if sec % 100 == 0 {
                t.set_agents(s(sec), [0, sec, 0, 0]);
            }
        }
        assert!(t.len() <= MAX_INTERVALS, "{} intervals", t.len());
        assert_eq!(t.interval_s(), 16, "18,000 s need 16 s intervals");
        let r = t.to_report().expect("recorded");
        assert_eq!(r.requests.iter().sum::<u64>(), hours);
        assert_eq!(r.requests[0], 16);
        let idle = &r.agents["idle"];
        // Interval 7 covers 112..128 s: the change at 100 s is its latest.
        assert_eq!(idle[7], 100);
        assert_eq!(*idle.last().expect("intervals"), hours - 100);
        let poll = &r.operations["poll_message"].latency;
        assert_eq!(poll.count.iter().sum::<u64>(), hours);
        assert!(poll.p50_s[0].is_some_and(|v| (v - 0.001).abs() < 0.0001));
    }

    // Goal: shards merge by interval: a shard with fine intervals merged into one with coarse
    // intervals gives exactly the timeline of one recorder that saw everything, and the report
    // form round-trips.
    #[test]
    fn timelines_merge_by_interval_and_round_trip() {
        let event = |t: &mut Timeline, sec: u64, us: u64| {
            t.record_op(Operation::FeedPost, s(sec), Ok(us));
            t.record_op(Operation::FeedPost, s(sec), Err(3));
            t.record_pickup(s(sec), us * 10);
            t.job_queued(s(sec));
        };
        let (mut whole, mut long, mut short) = (
            Timeline::default(),
            Timeline::default(),
            Timeline::default(),
        );
        for sec in 0..2_000 {
            event(&mut whole, sec, 500 + sec);
            event(&mut long, sec, 500 + sec);
        }
        for sec in 0..300 {
            event(&mut whole, sec, 7_000 + sec);
            event(&mut short, sec, 7_000 + sec);
        }
        assert_eq!((long.interval_s(), short.interval_s()), (2, 1));
        short.merge(&long);
        assert_eq!(short.to_report(), whole.to_report());
        let back = Timeline::from_report(&short.to_report().expect("recorded")).expect("valid");
        assert_eq!(back.to_report(), whole.to_report());
        let mut bad = whole.to_report().expect("recorded");
        bad.jobs_started.pop();
        assert!(
            Timeline::from_report(&bad).is_err(),
            "ragged columns are refused"
        );
    }

    // Goal: a late shard moves by whole intervals; its leading intervals count nothing and
    // hold its agents as offline (not started yet).
    #[test]
    fn delay_shifts_by_whole_intervals() {
        let mut t = Timeline::default();
        t.set_agents_now([0, 0, 0, 5]);
        t.job_queued(s(0));
        t.set_agents(s(0), [1, 0, 0, 4]);
        t.delay(3);
        let r = t.to_report().expect("recorded");
        assert_eq!(r.jobs_queued, [0, 0, 0, 1]);
        assert_eq!(r.agents["offline"], [5, 5, 5, 4]);
        assert_eq!(r.agents["registering"], [0, 0, 0, 1]);
    }
}
