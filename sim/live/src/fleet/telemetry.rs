//! The run's one recorder task: every agent and the job generator send their `Event`s through a
//! bounded channel; this task folds them into the `Recorder` and publishes a `Progress` snapshot
//! a few times a second.
//!
//! Why one task and not per-shard recorders: the pickup join (JobQueued from the generator with
//! JobPickedUp from an agent) and the per-second pickup percentiles need both halves in one
//! recorder, and one core folds far more events per second (≥10^5) than a 10,000-agent fleet
//! produces (a few thousand). At the channel's bound, senders wait: nothing is dropped, and since
//! latency is measured from intended times, a slow recorder cannot hide delay.
//!
//! Warm-up: calls intended before the warm-up ends are not recorded, nor are jobs queued or
//! picked up before it (their other events are skipped by request id, with a bounded memory of
//! ids). A job queued just before the boundary whose pickup reaches the recorder first stays a
//! pending half in the recorder: a window of milliseconds, counted, never a wrong latency.
//! Agent-state and crypto events always count. Every job event, warm-up or not, also goes into
//! the [`JobLedger`] that accounts for lost jobs at the end.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::SimTime;
use fleetsim_core::event::Event;
use fleetsim_core::ops::AgentState;
use fleetsim_metrics::Recorder;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::driver::Clock;
use super::ledger::JobLedger;
use super::progress::{Phase, ProgressBoard};

/// Events waiting for the recorder at most; senders wait beyond it.
pub(crate) const EVENT_CHANNEL_CAPACITY: usize = 65_536;
/// Warm-up jobs remembered (to skip their pickups) at most.
const WARMUP_IDS_MAX: usize = 1_000_000;
/// How often the progress board is refreshed.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// How often the recorder drains the channel. It does not wait on the channel: a waiting
/// receiver is woken by every event sent to it (thousands a second, often from the other worker
/// thread — a futex wake and a context switch each), while a short tick costs one timer wake-up
/// whatever the event rate. 10 ms delays nothing anyone reads: the board refreshes every
/// 250 ms, the events carry their own timestamps, and the channel holds 6.5 s of events at
/// 10^4 events/s, so no sender waits for the tick.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// The recorder task's state.
pub(crate) struct Telemetry {
    pub(crate) rx: mpsc::Receiver<Event>,
    pub(crate) recorder: Recorder,
    pub(crate) board: Option<Arc<ProgressBoard>>,
    pub(crate) clock: Clock,
    pub(crate) warmup: SimTime,
    pub(crate) duration: Duration,
    /// The Prometheus exporter's view: every event, warm-up included (a live dashboard shows
    /// the warm-up too; the report leaves it out).
    pub(crate) prom: Option<crate::prom::PromSink>,
    /// Every job's queueing and end, for the lost-jobs check.
    pub(crate) ledger: JobLedger,
}

impl Telemetry {
    /// Record until every sender is gone, then hand the recorder and the job ledger back.
    pub(crate) async fn run(mut self) -> (Recorder, JobLedger) {
        let mut warmup_jobs: HashSet<u64> = HashSet::new();
        let mut tick = tokio::time::interval(DRAIN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = (Instant::now(), 0u64);
        let mut next_publish = last.0 + PUBLISH_EVERY;
        loop {
            tick.tick().await;
            let open = self.drain(&mut warmup_jobs);
            let now = Instant::now();
            if now >= next_publish {
                self.publish(&mut last);
                next_publish = now + PUBLISH_EVERY;
            }
            if !open {
                break;
            }
        }
        self.publish(&mut last);
        (self.recorder, self.ledger)
    }

    /// Fold the events waiting in the channel; false once it is empty and every sender is gone.
    /// At most one channel's worth per tick, so a flood cannot hold the worker: the rest waits
    /// for the next tick (and senders beyond the bound wait, as always).
    fn drain(&mut self, warmup_jobs: &mut HashSet<u64>) -> bool {
        for _ in 0..EVENT_CHANNEL_CAPACITY {
            let ev = match self.rx.try_recv() {
                Ok(ev) => ev,
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            };
            self.ledger.record(&ev);
            if let Some(sink) = &mut self.prom {
                sink.observe(&ev);
            }
            if keep(&ev, self.warmup, warmup_jobs) {
                self.recorder.record(&ev);
            }
        }
        true
    }

    fn publish(&self, last: &mut (Instant, u64)) {
        let Some(board) = &self.board else { return };
        let rec = &self.recorder;
        let requests = rec.requests();
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        let rate = if dt > 0.0 {
            requests.saturating_sub(last.1) as f64 / dt
        } else {
            0.0
        };
        *last = (now, requests);
        let pickup = rec.pickup_histogram();
        let quantile = |q: f64| {
            (!pickup.is_empty()).then(|| Duration::from_micros(pickup.value_at_quantile(q)))
        };
        let elapsed = self.clock.now().saturating_since(SimTime::ZERO);
        board.update(|p| {
            if matches!(p.phase, Phase::Running) {
                p.elapsed = elapsed.min(self.duration);
            }
            for (slot, &state) in p.by_state.iter_mut().zip(AgentState::ALL) {
                *slot = rec.agents_in(state);
            }
            p.requests = requests;
            p.errors = rec.errors();
            p.requests_per_s = rate;
            p.jobs = rec.jobs();
            p.pickup_p50 = quantile(0.5);
            p.pickup_p99 = quantile(0.99);
        });
    }
}

/// Whether `ev` counts, given the warm-up (see the module docs).
fn keep(ev: &Event, warmup: SimTime, warmup_jobs: &mut HashSet<u64>) -> bool {
    if warmup == SimTime::ZERO {
        return true;
    }
    match *ev {
        Event::Op { intended, .. } => intended >= warmup,
        Event::JobQueued { request_id, at } if at < warmup => {
            if warmup_jobs.len() < WARMUP_IDS_MAX {
                warmup_jobs.insert(request_id);
            }
            false
        }
        // A pickup can reach the recorder before its JobQueued (the parked poll is answered
        // before the generator's queue call returns), so early pickups mark their job too.
        Event::JobPickedUp { request_id, at, .. } if at < warmup => {
            if warmup_jobs.len() < WARMUP_IDS_MAX {
                warmup_jobs.insert(request_id);
            }
            false
        }
        Event::JobPickedUp { request_id, .. } => !warmup_jobs.contains(&request_id),
        Event::JobFinished { request_id, .. } => !warmup_jobs.remove(&request_id),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use fleetsim_core::event::Outcome;
    use fleetsim_core::ops::Operation;
    use fleetsim_core::proto::TaskResult;

    use super::*;

    // Goal: warm-up drops calls intended before it and whole jobs queued before it (pickup and
    // result too), and keeps everything else.
    #[test]
    fn warmup_drops_early_calls_and_early_jobs_whole() {
        let warmup = SimTime::from_secs(10);
        let mut ids = HashSet::new();
        let op = |s| Event::Op {
            agent: 0,
            op: Operation::PollEmpty,
            intended: SimTime::from_secs(s),
            done: SimTime::from_secs(s + 50),
            outcome: Outcome::Ok,
        };
        assert!(!keep(&op(9), warmup, &mut ids));
        assert!(keep(&op(10), warmup, &mut ids));
        let queued = |id, s| Event::JobQueued {
            request_id: id,
            at: SimTime::from_secs(s),
        };
        assert!(!keep(&queued(1, 5), warmup, &mut ids));
        assert!(keep(&queued(2, 11), warmup, &mut ids));
        let picked = |id| Event::JobPickedUp {
            agent: 0,
            request_id: id,
            at: SimTime::from_secs(12),
        };
        assert!(!keep(&picked(1), warmup, &mut ids));
        assert!(keep(&picked(2), warmup, &mut ids));
        // A pickup before the warm-up ends that overtook its JobQueued is dropped, and so is the
        // JobQueued and the result that follow it.
        let early = Event::JobPickedUp {
            agent: 0,
            request_id: 3,
            at: SimTime::from_secs(9),
        };
        assert!(!keep(&early, warmup, &mut ids));
        assert!(!keep(&queued(3, 8), warmup, &mut ids));
        let finished = |id| Event::JobFinished {
            agent: 0,
            request_id: id,
            result: TaskResult::Succeeded,
            at: SimTime::from_secs(20),
        };
        assert!(!keep(&finished(1), warmup, &mut ids));
        assert!(keep(&finished(2), warmup, &mut ids));
        assert!(!keep(&finished(3), warmup, &mut ids));
        assert!(ids.is_empty(), "finished warm-up jobs are forgotten");
        assert!(
            keep(&op(0), SimTime::ZERO, &mut ids),
            "no warm-up keeps everything"
        );
    }
}
