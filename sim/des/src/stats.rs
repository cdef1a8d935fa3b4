//! Statistics a virtual run keeps beyond the report: batch means of job pickup latency (an
//! honest standard error for `job_pickup.latency_s.mean`) and the time-averages behind Little's
//! law and the utilisation law. Fed the same telemetry as the recorder, after the warm-up; never
//! changes a run.

use std::collections::HashMap;

use fleetsim_core::SimTime;
use fleetsim_core::event::Event;
use fleetsim_core::ops::AgentState;

/// Batch means of a per-job measure: the measured period cut into equal time windows, each
/// job's value added to the window it ended in. Consecutive waits are correlated; window means
/// far apart are nearly independent, so their spread gives an honest standard error.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct BatchMeans {
    /// Per window: (jobs, sum of values in seconds).
    pub windows: Vec<(u64, f64)>,
}

/// Windows per run for batch means (20 keeps each window long and the t-quantile near normal).
pub const BATCHES: usize = 20;

impl BatchMeans {
    /// Mean over all jobs and the standard error from the spread of the window means (windows
    /// without jobs are skipped). `None` with fewer than two non-empty windows.
    pub fn mean_and_se(&self) -> Option<(f64, f64)> {
        let means: Vec<f64> = self
            .windows
            .iter()
            .filter(|w| w.0 > 0)
            .map(|&(n, sum)| sum / n as f64)
            .collect();
        if means.len() < 2 {
            return None;
        }
        let (n, sum) = self
            .windows
            .iter()
            .fold((0u64, 0.0), |(n, s), w| (n + w.0, s + w.1));
        let (_, se) = crate::theory::mean_and_se(&means);
        Some((sum / n as f64, se))
    }
}

/// Time-averages for Little's law and the utilisation law over the measured period.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LittleStats {
    /// Jobs queued per second (after the warm-up).
    pub arrival_rate_per_s: f64,
    /// Time-average number of jobs queued but not yet picked up (L_q).
    pub mean_waiting: f64,
    /// Mean pickup latency of the jobs picked up (W_q), seconds.
    pub mean_wait_s: f64,
    /// Time-average number of busy agents.
    pub mean_busy_agents: f64,
}

/// Watches job and agent events after the warm-up: pickup latencies into batch windows, and the
/// integrals behind [`LittleStats`].
pub(crate) struct JobWatch {
    from: SimTime,
    window_us: u64,
    queued: HashMap<u64, SimTime>,
    pub(crate) batches: BatchMeans,
    arrivals: u64,
    picked: u64,
    wait_sum_s: f64,
    waiting: u64,
    busy: u64,
    last: SimTime,
    /// ∫ waiting dt and ∫ busy dt, in job·µs and agent·µs.
    waiting_area: u128,
    busy_area: u128,
}

impl JobWatch {
    pub(crate) fn new(from: SimTime, until: SimTime) -> Self {
        let window_us = ((until - from).as_micros() as u64 / BATCHES as u64).max(1);
        JobWatch {
            from,
            window_us,
            queued: Default::default(),
            batches: BatchMeans {
                windows: vec![(0, 0.0); BATCHES],
            },
            arrivals: 0,
            picked: 0,
            wait_sum_s: 0.0,
            waiting: 0,
            busy: 0,
            last: SimTime::ZERO,
            waiting_area: 0,
            busy_area: 0,
        }
    }

    /// Accumulate the areas up to `now` (only the measured part counts).
    fn advance(&mut self, now: SimTime) {
        let start = self.last.max(self.from);
        if now > start {
            let dt = (now - start).as_micros();
            self.waiting_area += dt * u128::from(self.waiting);
            self.busy_area += dt * u128::from(self.busy);
        }
        self.last = self.last.max(now);
    }

    pub(crate) fn observe(&mut self, ev: &Event) {
        match *ev {
            Event::JobQueued { request_id, at } if at >= self.from => {
                self.advance(at);
                self.queued.insert(request_id, at);
                self.arrivals += 1;
                self.waiting += 1;
            }
            Event::JobPickedUp { request_id, at, .. } => {
                // A requeued job's second pickup has no queue record left: counted once.
                if let Some(q) = self.queued.remove(&request_id) {
                    self.advance(at);
                    self.waiting -= 1;
                    self.picked += 1;
                    let wait_s = (at - q).as_secs_f64();
                    self.wait_sum_s += wait_s;
                    let i = ((at - self.from).as_micros() as u64 / self.window_us) as usize;
                    let w = &mut self.batches.windows[i.min(BATCHES - 1)];
                    w.0 += 1;
                    w.1 += wait_s;
                }
            }
            // A job canceled before any agent took it leaves the queue without a pickup.
            Event::JobFinished { request_id, at, .. } if self.queued.contains_key(&request_id) => {
                self.queued.remove(&request_id);
                self.advance(at);
                self.waiting = self.waiting.saturating_sub(1);
            }
            Event::AgentState { from, to, at, .. } => {
                self.advance(at);
                if from == AgentState::Busy {
                    self.busy = self.busy.saturating_sub(1);
                }
                if to == AgentState::Busy {
                    self.busy += 1;
                }
            }
            _ => {}
        }
    }

    pub(crate) fn little(&mut self, end: SimTime) -> LittleStats {
        self.advance(end);
        let span_us = (end - self.from).as_micros().max(1) as f64;
        LittleStats {
            arrival_rate_per_s: self.arrivals as f64 / (span_us / 1e6),
            mean_waiting: self.waiting_area as f64 / span_us,
            mean_wait_s: if self.picked == 0 {
                0.0
            } else {
                self.wait_sum_s / self.picked as f64
            },
            mean_busy_agents: self.busy_area as f64 / span_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_areas_and_batches_follow_the_events() {
        // Goal: two jobs waiting 1 s and 3 s over a 10 s window give Lq = 0.4, Wq = 2, λ = 0.2;
        // a busy agent for 5 s gives 0.5 busy on average; events before `from` are ignored.
        let t = SimTime::from_secs;
        let mut w = JobWatch::new(t(10), t(20));
        let busy = |from, to, at| Event::AgentState {
            agent: 0,
            from,
            to,
            at,
        };
        // Events arrive in time order, as the engine delivers them.
        w.observe(&Event::JobQueued {
            request_id: 0,
            at: t(5),
        });
        w.observe(&Event::JobQueued {
            request_id: 1,
            at: t(11),
        });
        w.observe(&Event::JobQueued {
            request_id: 2,
            at: t(12),
        });
        w.observe(&Event::JobPickedUp {
            agent: 0,
            request_id: 1,
            at: t(12),
        });
        w.observe(&busy(AgentState::Idle, AgentState::Busy, t(12)));
        w.observe(&Event::JobPickedUp {
            agent: 1,
            request_id: 2,
            at: t(15),
        });
        w.observe(&busy(AgentState::Busy, AgentState::Idle, t(17)));
        let l = w.little(t(20));
        assert!((l.mean_waiting - 0.4).abs() < 1e-12, "{l:?}");
        assert!((l.mean_wait_s - 2.0).abs() < 1e-12 && (l.arrival_rate_per_s - 0.2).abs() < 1e-12);
        assert!((l.mean_busy_agents - 0.5).abs() < 1e-12);
        let (mean, _) = w.batches.mean_and_se().expect("two windows with pickups");
        assert!((mean - 2.0).abs() < 1e-12);
    }
}
