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
//! [`Arrivals::skip_through`] passes over every arrival up to a time in constant time, whatever
//! their number: counted for constant spacing and bursts, one Poisson count drawn for poisson
//! and profile arrivals (exact in distribution, the process being memoryless). Stepping through
//! them one by one would never end at an absurd rate, where every gap rounds to 0 µs.
//!
//! Pure and deterministic for a seed: no clock, no IO. The `Workload` machine asks for a wake-up
//! at each time and queues the job then; a slow server delays the queueing but never the intended
//! time, so pickup latency includes the delay (no coordinated omission).

use std::time::Duration;

use rand::RngCore as _;

use super::model::{Arrival, unit};
use crate::dist::std_normal;
use crate::rng::Rng;

/// Below this mean a Poisson count is drawn exactly (by inversion); from it on, from the normal
/// approximation, whose error there is well inside one count of the spread.
const POISSON_EXACT_BELOW: f64 = 30.0;

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

    /// Consume every arrival at or before `t` (and before the run's end) and say how many there
    /// were, in constant time whatever their number. The next arrival is then the first after
    /// `t`.
    pub fn skip_through(&mut self, t: Duration) -> u64 {
        let Some(next) = self.next_us.filter(|&n| n < self.end_us) else {
            return 0;
        };
        // `end_us > next ≥ 0`, so the last instant of the run exists.
        let t_us = u64::try_from(t.as_micros())
            .unwrap_or(u64::MAX)
            .min(self.end_us - 1);
        if next > t_us {
            return 0;
        }
        let n = match self.arrival.clone() {
            Arrival::None => 0,
            Arrival::Constant { rate_per_s } => {
                let last = constant_last_through(rate_per_s, t_us);
                let n = last.saturating_sub(self.count).saturating_add(1);
                self.count = last.saturating_add(1);
                self.next_us = Some(constant_at(self.count, rate_per_s));
                return n;
            }
            Arrival::Bursts { size, every } => {
                let every_us = u64::try_from(every.as_micros()).unwrap_or(u64::MAX).max(1);
                // Whole bursts after the current one, at or before `t`.
                let more = (t_us - next) / every_us;
                let left = u64::from(self.burst_left);
                self.burst_left = size;
                let after = more.saturating_add(1).saturating_mul(every_us);
                self.next_us = Some(next.saturating_add(after));
                left.saturating_add(more.saturating_mul(u64::from(size)))
            }
            Arrival::Poisson { rate_per_s } => {
                // The next arrival, then (memoryless) a Poisson count over the rest of (next, t].
                let span_s = (t_us - next) as f64 / 1e6;
                let n = 1u64.saturating_add(self.poisson_count(rate_per_s * span_s));
                self.next_us = self
                    .exp_gap_us(rate_per_s)
                    .map(|g| t_us.saturating_add(1).saturating_add(g));
                n
            }
            Arrival::Profile(points) => {
                let mut n = 1u64;
                for (i, p) in points.iter().enumerate() {
                    let start = u64::try_from(p.at.as_micros())
                        .unwrap_or(u64::MAX)
                        .max(next);
                    let stop = points.get(i + 1).map_or(u64::MAX, |q| {
                        u64::try_from(q.at.as_micros()).unwrap_or(u64::MAX)
                    });
                    let stop = stop.min(t_us);
                    if stop > start {
                        let mean = p.rate_per_s * (stop - start) as f64 / 1e6;
                        n = n.saturating_add(self.poisson_count(mean));
                    }
                }
                self.next_us = self.profile_after(t_us.saturating_add(1));
                n
            }
        };
        self.count = self.count.saturating_add(n);
        n
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
            // From the count, not by adding gaps, so rounding never accumulates.
            Arrival::Constant { rate_per_s } => Some(constant_at(self.count, rate_per_s)),
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

    /// A Poisson count of mean `mean`, from one or two draws however large it is.
    fn poisson_count(&mut self, mean: f64) -> u64 {
        if mean.is_nan() || mean <= 0.0 {
            return 0;
        }
        if mean >= u64::MAX as f64 {
            return u64::MAX;
        }
        if mean < POISSON_EXACT_BELOW {
            // Inversion: walk the CDF to a uniform draw. Bounded: past 1,000 terms at a mean
            // below 30 the mass left is below f64's resolution.
            let u = unit(&mut self.rng);
            let (mut k, mut p) = (0u64, (-mean).exp());
            let mut cdf = p;
            while u > cdf && k < 1_000 {
                k += 1;
                p *= mean / k as f64;
                cdf += p;
            }
            return k;
        }
        // `as` saturates: a draw beyond u64 is u64::MAX, a negative one 0.
        (mean + mean.sqrt() * std_normal(&mut self.rng))
            .round()
            .max(0.0) as u64
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

/// Constant arrival `i`'s time in µs (arrival 0 at 0).
fn constant_at(i: u64, rate_per_s: f64) -> u64 {
    (i as f64 * 1e6 / rate_per_s).round() as u64
}

/// The index of the last constant arrival at or before `t_us` (arrival 0, at 0, always is):
/// the inverse of [`constant_at`], corrected by a step or two where float rounding lands on the
/// wrong side, so it agrees with [`constant_at`] exactly.
fn constant_last_through(rate_per_s: f64, t_us: u64) -> u64 {
    // `as` saturates: an absurd rate gives u64::MAX, every arrival at 0.
    let mut last = ((t_us as f64 + 0.5) * rate_per_s / 1e6).floor() as u64;
    for _ in 0..4 {
        if last < u64::MAX && constant_at(last + 1, rate_per_s) <= t_us {
            last += 1;
        } else if last > 0 && constant_at(last, rate_per_s) > t_us {
            last -= 1;
        } else {
            break;
        }
    }
    last
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

    // Goal: skipping through a time consumes exactly the arrivals stepping would (constant
    // spacing at awkward rates, bursts mid-burst) and leaves the same next arrival; a Poisson
    // skip counts about rate × time. Fails if the arithmetic is off by one anywhere.
    #[test]
    fn skip_through_matches_stepping() {
        let start = |arrival: &Arrival| {
            Arrivals::new(
                arrival,
                rng::stream(7, StreamKind::Jobs, 0),
                Duration::from_secs(100),
            )
        };
        let bursts = Arrival::Bursts {
            size: 3,
            every: Duration::from_millis(700),
        };
        for arrival in [
            Arrival::Constant { rate_per_s: 3.0 },
            Arrival::Constant { rate_per_s: 7.3 },
            Arrival::Constant {
                rate_per_s: 2_000.0,
            },
            bursts,
        ] {
            for (taken, until_ms) in [(0, 0), (1, 5_000), (2, 33_333), (5, 99_999), (0, 200_000)] {
                let (mut stepped, mut skipped) = (start(&arrival), start(&arrival));
                for _ in 0..taken {
                    stepped.next_arrival();
                    skipped.next_arrival();
                }
                let until = Duration::from_millis(until_ms);
                let mut n = 0u64;
                while stepped.peek().is_some_and(|t| t <= until) {
                    stepped.next_arrival();
                    n += 1;
                }
                let what = format!("{arrival:?} after {taken}, through {until_ms} ms");
                assert_eq!(skipped.skip_through(until), n, "{what}");
                assert_eq!(skipped.peek(), stepped.peek(), "{what}");
            }
        }
        let mut poisson = start(&Arrival::Poisson { rate_per_s: 50.0 });
        let n = poisson.skip_through(Duration::from_secs(80)) as f64;
        assert!((n / 4_000.0 - 1.0).abs() < 0.1, "{n} for about 4,000");
        assert!(poisson.peek().is_none_or(|t| t > Duration::from_secs(80)));
    }
}
