//! When jobs arrive in virtual time: the scenario's arrival process as a sequence of intended
//! arrival times, drawn from the run's `Jobs` stream 0.
//!
//! This mirrors the live driver's `fleetsim_live::fleet::arrivals` draw for draw (same stream,
//! same transforms, same rounding to µs), so a live run and its virtual twin see the same
//! arrival times for the same seed — common random numbers for calibration comparisons. It is
//! duplicated rather than shared only because `fleetsim-des` must not depend on the tokio-based
//! live crate; both belong in the scenario crate.
//!
//! - Poisson: exponential gaps at `rate_per_s`.
//! - Constant: evenly spaced, the first at 0, computed from the count (no drift).
//! - Bursts: `size` arrivals at 0, `every`, 2·`every`, …
//! - Profile: piecewise-constant Poisson; a gap that crosses a boundary is redrawn from the
//!   boundary at the new rate (exact, by memorylessness).
//!
//! Pure: no clock, no IO.

use std::time::Duration;

use fleetsim_core::rng::Rng;
use fleetsim_scenario::Arrival;
use rand::RngCore as _;

/// The arrival times of one run, in order, all before the run's end.
pub struct Arrivals {
    arrival: Arrival,
    rng: Rng,
    end_us: u64,
    next_us: Option<u64>,
    /// Arrivals still due at `next_us` (bursts).
    burst_left: u32,
    /// Arrivals handed out so far.
    count: u64,
}

impl Arrivals {
    /// Arrivals of `arrival` before `end`, drawn from `rng`.
    pub fn new(arrival: &Arrival, rng: Rng, end: Duration) -> Arrivals {
        let mut a = Arrivals {
            arrival: arrival.clone(),
            rng,
            end_us: u64::try_from(end.as_micros()).unwrap_or(u64::MAX),
            next_us: None,
            burst_left: 0,
            count: 0,
        };
        a.next_us = a.first();
        a
    }

    /// The next arrival time (offset from the run start), or `None` when the run is over.
    pub fn next_arrival(&mut self) -> Option<Duration> {
        let at = self.next_us.filter(|&t| t < self.end_us)?;
        self.count += 1;
        self.next_us = self.after(at);
        Some(Duration::from_micros(at))
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
        match &self.arrival {
            Arrival::None => None,
            Arrival::Poisson { rate_per_s } => {
                let rate = *rate_per_s;
                Some(at.saturating_add(self.exp_gap_us(rate)?))
            }
            Arrival::Constant { rate_per_s } => {
                Some((self.count as f64 * 1e6 / rate_per_s).round() as u64)
            }
            Arrival::Bursts { size, every } => {
                let (size, every) = (*size, *every);
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
        // Each pass returns or moves `at` to a later boundary: at most one pass per point.
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
    use super::*;
    use fleetsim_core::rng::{StreamKind, stream};
    use fleetsim_scenario::ProfilePoint;

    fn all(arrival: Arrival, end_s: u64) -> Vec<Duration> {
        let mut a = Arrivals::new(
            &arrival,
            stream(7, StreamKind::Jobs, 0),
            Duration::from_secs(end_s),
        );
        std::iter::from_fn(|| a.next_arrival()).collect()
    }

    #[test]
    fn poisson_rate_is_right_and_times_increase() {
        // Goal: ~rate × duration arrivals (5σ), in non-decreasing order, all before the end.
        let t = all(Arrival::Poisson { rate_per_s: 10.0 }, 10_000);
        assert!(
            (t.len() as f64 - 100_000.0).abs() < 5.0 * 100_000f64.sqrt(),
            "{}",
            t.len()
        );
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        assert!(t.last().is_some_and(|&l| l < Duration::from_secs(10_000)));
    }

    #[test]
    fn constant_bursts_and_profiles_follow_their_shape() {
        // Goal: constant spacing without drift, bursts of `size` at each multiple of `every`,
        // no arrivals in a zero-rate profile segment.
        let c = all(Arrival::Constant { rate_per_s: 3.0 }, 2);
        assert_eq!(c.len(), 6);
        assert_eq!(c[3], Duration::from_secs(1));
        let b = all(
            Arrival::Bursts {
                size: 3,
                every: Duration::from_secs(10),
            },
            25,
        );
        let secs: Vec<u64> = b.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![0, 0, 0, 10, 10, 10, 20, 20, 20]);
        let p = all(
            Arrival::Profile(vec![
                ProfilePoint {
                    at: Duration::ZERO,
                    rate_per_s: 5.0,
                },
                ProfilePoint {
                    at: Duration::from_secs(100),
                    rate_per_s: 0.0,
                },
                ProfilePoint {
                    at: Duration::from_secs(200),
                    rate_per_s: 5.0,
                },
            ]),
            300,
        );
        assert!(p.iter().all(|t| t.as_secs() < 100 || t.as_secs() >= 200));
        assert!((800..1200).contains(&p.len()), "{}", p.len());
    }
}
