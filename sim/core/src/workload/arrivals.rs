//! When jobs arrive: the scenario's arrival process turned into a sequence of intended arrival
//! times (offsets from the run start), drawn from the run's `Jobs` stream 0. Both drivers use
//! this one sequence, so a live run and its virtual twin see the same arrival times for the same
//! seed (common random numbers for calibration comparisons).
//!
//! - Poisson: exponential gaps at `rate_per_s`.
//! - Constant: evenly spaced, the first at 0, computed from the count (no drift).
//! - Bursts: `size` jobs at 0, `every`, 2·`every`, …
//! - Profile: a piecewise-constant Poisson rate. A gap that crosses into the next segment is
//!   dropped and redrawn from the boundary at the new rate, which is exact because the
//!   exponential distribution is memoryless.
//!
//! Pure and deterministic for a seed: no clock, no IO. The `Workload` machine asks for a wake-up
//! at each time and queues the job then; a slow server delays the queueing but never the intended
//! time, so pickup latency includes the delay (no coordinated omission).

use std::time::Duration;

use rand::RngCore as _;

use super::model::Arrival;
use crate::rng::Rng;

/// The arrival times of one run, in order, all before the run's end.
pub struct Arrivals {
    arrival: Arrival,
    rng: Rng,
    end_us: u64,
    /// The next arrival, in µs since the run started; `None` when exhausted.
    next_us: Option<u64>,
    /// Jobs still due at `next_us` (bursts).
    burst_left: u32,
    /// Arrivals handed out so far (constant spacing is computed from it, without drift).
    count: u64,
}

impl Arrivals {
    /// Arrivals of `arrival` before `end`, drawn from `rng`.
    pub fn new(arrival: &Arrival, rng: Rng, end: Duration) -> Arrivals {
        let mut arrivals = Arrivals {
            arrival: arrival.clone(),
            rng,
            end_us: u64::try_from(end.as_micros()).unwrap_or(u64::MAX),
            next_us: None,
            burst_left: 0,
            count: 0,
        };
        arrivals.next_us = arrivals.first();
        arrivals
    }

    /// The next arrival time (offset from the run start), or `None` when the run is over.
    pub fn next_arrival(&mut self) -> Option<Duration> {
        let at = self.next_us.filter(|&t| t < self.end_us)?;
        self.count += 1;
        self.next_us = self.after(at);
        Some(Duration::from_micros(at))
    }

    /// Peek at the next arrival without consuming it.
    pub fn peek(&self) -> Option<Duration> {
        self.next_us
            .filter(|&t| t < self.end_us)
            .map(Duration::from_micros)
    }

    fn first(&mut self) -> Option<u64> {
        match &self.arrival {
            Arrival::None => None,
            Arrival::Poisson { rate_per_s } => self.exp_gap_us(*rate_per_s),
            Arrival::Constant { rate_per_s } if *rate_per_s > 0.0 => Some(0),
            Arrival::Constant { .. } => None,
            Arrival::Bursts { size, .. } if *size > 0 => {
                self.burst_left = *size;
                Some(0)
            }
            Arrival::Bursts { .. } => None,
            Arrival::Profile(_) => self.profile_after(0),
        }
    }

    fn after(&mut self, at: u64) -> Option<u64> {
        match self.arrival.clone() {
            Arrival::None => None,
            Arrival::Poisson { rate_per_s } => {
                Some(at.saturating_add(self.exp_gap_us(rate_per_s)?))
            }
            Arrival::Constant { rate_per_s } => {
                // From the count, not by adding gaps, so rounding never accumulates.
                Some((self.count as f64 * 1e6 / rate_per_s).round() as u64)
            }
            Arrival::Bursts { size, every } => {
                self.burst_left = self.burst_left.saturating_sub(1);
                if self.burst_left > 0 {
                    return Some(at);
                }
                self.burst_left = size;
                let every_us = u64::try_from(every.as_micros()).unwrap_or(u64::MAX).max(1);
                Some(at.saturating_add(every_us))
            }
            Arrival::Profile(_) => self.profile_after(at),
        }
    }

    /// The next arrival after `at` under the piecewise rate profile.
    fn profile_after(&mut self, mut at: u64) -> Option<u64> {
        let Arrival::Profile(points) = &self.arrival else {
            return None;
        };
        let points: Vec<(u64, f64)> = points
            .iter()
            .map(|p| {
                (
                    u64::try_from(p.at.as_micros()).unwrap_or(u64::MAX),
                    p.rate_per_s,
                )
            })
            .collect();
        // Each pass either returns or moves `at` to a later boundary: at most one pass per point.
        for _ in 0..=points.len() {
            if at >= self.end_us {
                return None;
            }
            let segment = points.iter().rposition(|&(start, _)| start <= at);
            let rate = segment.map_or(0.0, |i| points[i].1);
            let boundary = match segment {
                Some(i) => points.get(i + 1).map(|p| p.0),
                None => points.first().map(|p| p.0),
            };
            let candidate = if rate > 0.0 {
                self.exp_gap_us(rate).map(|g| at.saturating_add(g))
            } else {
                None
            };
            match (candidate, boundary) {
                (Some(t), Some(b)) if t < b => return Some(t),
                (Some(t), None) => return Some(t),
                (_, Some(b)) => at = b,
                (None, None) => return None,
            }
        }
        None
    }

    /// An exponential gap in µs at `rate_per_s` (`None` for a zero rate).
    fn exp_gap_us(&mut self, rate_per_s: f64) -> Option<u64> {
        if rate_per_s <= 0.0 {
            return None;
        }
        // u in (0, 1]: never ln(0).
        let u = 1.0 - (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Some((-u.ln() / rate_per_s * 1e6).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::ProfilePoint;
    use crate::rng::{self, StreamKind};

    use super::*;

    fn all(arrival: Arrival, end_s: u64) -> Vec<Duration> {
        let mut a = Arrivals::new(
            &arrival,
            rng::stream(7, StreamKind::Jobs, 0),
            Duration::from_secs(end_s),
        );
        std::iter::from_fn(|| a.next_arrival()).collect()
    }

    // Goal: constant spacing is exact from 0, bursts come in groups, and nothing arrives at or
    // after the end of the run.
    #[test]
    fn constant_and_bursts_follow_their_schedule() {
        let c = all(Arrival::Constant { rate_per_s: 4.0 }, 1);
        assert_eq!(
            c,
            (0..4)
                .map(|i| Duration::from_millis(250 * i))
                .collect::<Vec<_>>()
        );
        let b = all(
            Arrival::Bursts {
                size: 3,
                every: Duration::from_secs(2),
            },
            5,
        );
        let secs: Vec<u64> = b.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 0, 0, 2, 2, 2, 4, 4, 4]);
        assert!(all(Arrival::None, 10).is_empty());
    }

    // Goal: Poisson arrivals have the asked rate (within 5% over 20,000 draws), are increasing,
    // and the same seed gives the same times.
    #[test]
    fn poisson_rate_is_right_and_reproducible() {
        let times = all(Arrival::Poisson { rate_per_s: 20.0 }, 1000);
        let n = times.len() as f64;
        assert!(
            (n / 20_000.0 - 1.0).abs() < 0.05,
            "{n} arrivals for 20,000 expected"
        );
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(times, all(Arrival::Poisson { rate_per_s: 20.0 }, 1000));
    }

    // Goal: a profile holds each rate in its segment: nothing before the first point or in a
    // zero-rate segment, the right count in each busy one.
    #[test]
    fn profile_rates_hold_per_segment() {
        let point = |at, rate_per_s| ProfilePoint {
            at: Duration::from_secs(at),
            rate_per_s,
        };
        let profile = Arrival::Profile(vec![point(100, 50.0), point(200, 0.0), point(300, 10.0)]);
        let times = all(profile, 400);
        let in_range = |a: u64, b: u64| {
            times
                .iter()
                .filter(|t| (a..b).contains(&t.as_secs()))
                .count() as f64
        };
        assert_eq!(in_range(0, 100), 0.0);
        assert!(
            (in_range(100, 200) / 5000.0 - 1.0).abs() < 0.08,
            "{}",
            in_range(100, 200)
        );
        assert_eq!(in_range(200, 300), 0.0);
        assert!(
            (in_range(300, 400) / 1000.0 - 1.0).abs() < 0.15,
            "{}",
            in_range(300, 400)
        );
    }
}
