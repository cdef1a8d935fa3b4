//! What the workload draws from: the arrival process and the synthetic job model, as validated
//! scenario values (the scenario crate builds them and re-exports these types).
//!
//! Pure data plus the draws: `JobModel::sample_job` and `JobModel::sample_cancel` take the
//! caller's RNG stream, so both drivers draw the same jobs for the same seed. Never parses text,
//! never reads a clock.

use std::time::Duration;

use crate::dist::{DurationDist, NumberDist};
use crate::job::{SyntheticJob, SyntheticStep};

/// How jobs arrive.
#[derive(Clone, Debug, PartialEq)]
pub enum Arrival {
    /// No jobs at all (`rate_per_s = 0` or no `[jobs]` section).
    None,
    /// A Poisson process at `rate_per_s`.
    Poisson { rate_per_s: f64 },
    /// Evenly spaced arrivals at `rate_per_s`.
    Constant { rate_per_s: f64 },
    /// `size` jobs at once, every `every`, the first at time 0.
    Bursts { size: u32, every: Duration },
    /// A piecewise-constant Poisson rate: each point's rate holds from its `at` until the next
    /// point's (before the first point the rate is 0). Points are sorted by `at`, strictly.
    Profile(Vec<ProfilePoint>),
}

impl Arrival {
    /// The mean arrival rate at `t` (jobs per second).
    pub fn rate_at(&self, t: Duration) -> f64 {
        match self {
            Arrival::None => 0.0,
            Arrival::Poisson { rate_per_s } | Arrival::Constant { rate_per_s } => *rate_per_s,
            Arrival::Bursts { size, every } => f64::from(*size) / every.as_secs_f64(),
            Arrival::Profile(points) => points
                .iter()
                .take_while(|p| p.at <= t)
                .last()
                .map_or(0.0, |p| p.rate_per_s),
        }
    }
}

/// One point of an arrival profile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProfilePoint {
    /// From this time on...
    pub at: Duration,
    /// ...jobs arrive at this rate (≥ 0).
    pub rate_per_s: f64,
}

/// What one synthetic job is made of, and how often jobs fail or are canceled.
#[derive(Clone, Debug, PartialEq)]
pub struct JobModel {
    /// A job's total run time on the agent, split evenly over its steps.
    pub duration: DurationDist,
    /// Steps per job (drawn, rounded, at least 1).
    pub steps: NumberDist,
    /// Log lines each step prints per second of its run time.
    pub log_lines_per_s: f64,
    /// Secret variables per job.
    pub secrets: u32,
    /// Log lines per step that carry a secret value (at most the step's lines).
    pub secret_lines: u32,
    /// Artifact bytes a job attaches at its last step (0 = none).
    pub artifact_bytes: NumberDist,
    /// Probability a job fails (0 ..= 1).
    pub failure_rate: f64,
    /// Probability a queued job is canceled while it runs (0 ..= 1).
    pub cancel_rate: f64,
    /// Demands every job carries (`name` or `name -equals value`).
    pub demands: Vec<String>,
}

/// A job has at most this many steps, whatever the distribution draws (the emulator's own
/// per-job bound, so a drawn job is never refused).
pub const MAX_STEPS_PER_JOB: u64 = 100;

/// A step prints at most this many log lines, whatever a long-tailed duration draws (a bound on
/// the work one job asks of an agent).
pub const MAX_LOG_LINES_PER_STEP: u64 = 1_000_000;

impl JobModel {
    /// Draw one synthetic job. Both drivers' workloads call this with the `Jobs` stream 1, so
    /// live and virtual runs generate the same jobs for the same seed.
    pub fn sample_job(&self, rng: &mut impl rand::RngCore) -> SyntheticJob {
        let total = self.duration.sample(rng);
        let steps = (self.steps.sample(rng).round() as u64).clamp(1, MAX_STEPS_PER_JOB);
        let step_us = total.as_micros() as u64 / steps;
        let lines = ((step_us as f64 / 1e6) * self.log_lines_per_s).round() as u64;
        let lines = lines.min(MAX_LOG_LINES_PER_STEP) as u32;
        let secret_lines = if self.secrets == 0 {
            0
        } else {
            self.secret_lines.min(lines)
        };
        let artifact = self.artifact_bytes.sample(rng).round() as u64;
        let fail = bernoulli(rng, self.failure_rate);
        let steps = (0..steps)
            .map(|i| SyntheticStep {
                duration_ms: step_us / 1_000,
                log_lines: lines,
                secret_lines,
                artifact_bytes: if i + 1 == steps { artifact } else { 0 },
            })
            .collect();
        SyntheticJob {
            steps,
            secrets: self.secrets,
            fail,
            demands: self.demands.clone(),
        }
    }

    /// Whether a job is to be canceled while running (drawn from the caller's Jobs stream).
    pub fn sample_cancel(&self, rng: &mut impl rand::RngCore) -> bool {
        bernoulli(rng, self.cancel_rate)
    }
}

/// `true` with probability `p`, consuming one draw whatever `p` is (so changing a rate does not
/// shift later draws).
fn bernoulli(rng: &mut impl rand::RngCore, p: f64) -> bool {
    unit(rng) < p
}

/// A uniform draw in [0, 1) from the top 53 bits.
pub(crate) fn unit(rng: &mut impl rand::RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}
