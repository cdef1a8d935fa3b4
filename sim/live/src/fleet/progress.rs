//! What a running fleet shows while it runs: a [`Progress`] snapshot that the run updates a few
//! times a second on a shared [`ProgressBoard`], and the caller (the CLI's indicatif bar on a
//! TTY, or a plain line every 5 s otherwise) reads whenever it likes.
//!
//! The board is a mutex around a small copyable struct: writers hold it for a few field
//! assignments, readers copy it out. It never renders on its own and never blocks a run.
//!
//! A snapshot is also a wire format between processes: a shard child of `run --processes`
//! prints one as a JSON line (`run --progress-json`), and the parent folds its children's
//! snapshots into one ([`Progress::fold`]) for its own display.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::ops::AgentState;
use fleetsim_metrics::report::JobsReport;
use serde::{Deserialize, Serialize};

/// Where the run is. The variants are in the order a run passes through them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Setting up (limits, proxy, emulator).
    #[default]
    Starting,
    /// Loading or generating RSA keys.
    Keys { done: usize, total: usize },
    /// Keys are loaded and the run waits for its start time (`run --start-at`): a shard child
    /// of `run --processes` says it is ready to start with this phase.
    Ready,
    /// Agents run and jobs arrive.
    Running,
    /// The run is over (or was interrupted): agents delete their sessions.
    Draining,
    /// Everything measured; the outcome is being assembled.
    Done,
}

impl Phase {
    /// How far a run has got: a larger rank is further along. Key loading ranks by its share
    /// done, so of two runs loading keys the one with less done is the less advanced.
    fn rank(self) -> (u8, f64) {
        match self {
            Phase::Starting => (0, 0.0),
            Phase::Keys { done, total } => (1, done as f64 / total.max(1) as f64),
            Phase::Ready => (2, 0.0),
            Phase::Running => (3, 0.0),
            Phase::Draining => (4, 0.0),
            Phase::Done => (5, 0.0),
        }
    }

    /// Whether a run in this phase has its keys and may start (or already has).
    pub fn is_ready(self) -> bool {
        self.rank().0 >= Phase::Ready.rank().0
    }
}

/// Where the embedded emulator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// In the fleet's own process.
    InProcess,
    /// In a child process (`fleetsim serve`), because the fleet's connections would not fit
    /// in one process's descriptor limit twice.
    ChildProcess { pid: u32 },
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::InProcess => f.write_str("embedded emulator in this process"),
            Placement::ChildProcess { pid } => {
                write!(f, "embedded emulator in child process {pid}")
            }
        }
    }
}

/// A snapshot of a running fleet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// Time since agents started (zero before).
    pub elapsed: Duration,
    /// The scenario's run length.
    pub duration: Duration,
    /// Fleet size.
    pub agents: u32,
    /// Agents by state, indexed like `AgentState::ALL`.
    pub by_state: [u64; 4],
    /// Protocol calls finished so far.
    pub requests: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls per second over the last update interval.
    pub requests_per_s: f64,
    pub jobs: JobsReport,
    /// Job pickup latency so far (enqueued → agent holds the message).
    pub pickup_p50: Option<Duration>,
    pub pickup_p99: Option<Duration>,
    /// Where the embedded emulator runs; `None` for a remote target (or not started yet).
    pub emulator: Option<Placement>,
}

impl Progress {
    /// One snapshot of a run split over processes, from each process's latest: agents,
    /// states, requests, errors, rates and job counters add up; the phase (and with it what
    /// the line shows) is the least advanced process's, so "running" means every process
    /// runs; elapsed time and the run length are the largest. The pickup percentiles are the
    /// largest of the processes' (a bound, not the exact percentile of the union, which only
    /// the merged report has). `None` when there are no snapshots yet.
    pub fn fold(parts: &[Progress]) -> Option<Progress> {
        let least = parts.iter().min_by(|a, b| {
            let (ra, rb) = (a.phase.rank(), b.phase.rank());
            ra.0.cmp(&rb.0).then(ra.1.total_cmp(&rb.1))
        })?;
        let mut all = Progress {
            phase: least.phase,
            emulator: least.emulator,
            ..Progress::default()
        };
        for p in parts {
            all.elapsed = all.elapsed.max(p.elapsed);
            all.duration = all.duration.max(p.duration);
            all.agents += p.agents;
            for (sum, n) in all.by_state.iter_mut().zip(p.by_state) {
                *sum += n;
            }
            all.requests += p.requests;
            all.errors += p.errors;
            all.requests_per_s += p.requests_per_s;
            add_jobs(&mut all.jobs, &p.jobs);
            all.pickup_p50 = all.pickup_p50.max(p.pickup_p50);
            all.pickup_p99 = all.pickup_p99.max(p.pickup_p99);
        }
        Some(all)
    }

    /// Agents in `state`.
    pub fn agents_in(&self, state: AgentState) -> u64 {
        AgentState::ALL
            .iter()
            .position(|s| *s == state)
            .map_or(0, |i| self.by_state[i])
    }

    /// One plain line for logs and non-TTY output.
    pub fn line(&self) -> String {
        let mut line = String::with_capacity(160);
        match self.phase {
            Phase::Starting => {
                line.push_str("starting");
                if let Some(placement) = self.emulator {
                    let _ = write!(line, " ({placement})");
                }
                return line;
            }
            Phase::Keys { done, total } => {
                let _ = write!(line, "keys {done}/{total}");
                if let Some(placement) = self.emulator {
                    let _ = write!(line, " | {placement}");
                }
                return line;
            }
            Phase::Ready => return "ready: waiting for the start time".to_string(),
            Phase::Running => {
                let _ = write!(
                    line,
                    "{:>5.0}s/{:.0}s",
                    self.elapsed.as_secs_f64(),
                    self.duration.as_secs_f64()
                );
            }
            Phase::Draining => line.push_str("draining"),
            Phase::Done => line.push_str("done"),
        }
        let _ = write!(
            line,
            " | agents idle {} busy {} reg {} off {} | req {} ({:.0}/s) err {} | jobs q {} run {} ok {} fail {}",
            self.agents_in(AgentState::Idle),
            self.agents_in(AgentState::Busy),
            self.agents_in(AgentState::Registering),
            self.agents_in(AgentState::Offline),
            self.requests,
            self.requests_per_s,
            self.errors,
            self.jobs.queued,
            self.jobs
                .started
                .saturating_sub(self.jobs.succeeded + self.jobs.failed + self.jobs.canceled),
            self.jobs.succeeded,
            self.jobs.failed,
        );
        if let (Some(p50), Some(p99)) = (self.pickup_p50, self.pickup_p99) {
            let _ = write!(
                line,
                " | pickup p50 {:.3}s p99 {:.3}s",
                p50.as_secs_f64(),
                p99.as_secs_f64()
            );
        }
        if let Some(Placement::ChildProcess { pid }) = self.emulator {
            let _ = write!(line, " | emulator pid {pid}");
        }
        line
    }
}

/// Add `b`'s job counters to `a`'s (destructured, so a new counter cannot be forgotten here).
fn add_jobs(a: &mut JobsReport, b: &JobsReport) {
    let JobsReport {
        queued: _,
        started: _,
        succeeded: _,
        failed: _,
        canceled: _,
        abandoned: _,
        requeued: _,
        lost: _,
    } = b;
    a.queued += b.queued;
    a.started += b.started;
    a.succeeded += b.succeeded;
    a.failed += b.failed;
    a.canceled += b.canceled;
    a.abandoned += b.abandoned;
    a.requeued += b.requeued;
    a.lost += b.lost;
}

/// The shared board a run writes its [`Progress`] to.
#[derive(Debug, Default)]
pub struct ProgressBoard {
    inner: parking_lot::Mutex<Progress>,
}

impl ProgressBoard {
    /// An empty board to hand to `fleet::run` through `RunOptions::progress`.
    pub fn new() -> Arc<ProgressBoard> {
        Arc::new(ProgressBoard::default())
    }

    /// A copy of the latest progress.
    pub fn snapshot(&self) -> Progress {
        self.inner.lock().clone()
    }

    /// Replace the progress (a parent publishing its children's folded snapshots).
    pub fn set(&self, progress: Progress) {
        *self.inner.lock() = progress;
    }

    /// Change the progress in place (the run's writers).
    pub(crate) fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.inner.lock());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the plain progress line carries the figures an operator watches, and the board hands
    // out what was last written.
    #[test]
    fn line_shows_states_requests_jobs_and_pickup() {
        let board = ProgressBoard::new();
        board.update(|p| {
            p.phase = Phase::Running;
            p.elapsed = Duration::from_secs(12);
            p.duration = Duration::from_secs(40);
            p.by_state = [1, 15, 3, 1];
            p.requests = 420;
            p.requests_per_s = 35.0;
            p.jobs.queued = 9;
            p.jobs.started = 7;
            p.jobs.succeeded = 4;
            p.pickup_p50 = Some(Duration::from_millis(120));
            p.pickup_p99 = Some(Duration::from_millis(900));
        });
        let line = board.snapshot().line();
        assert_eq!(
            line,
            "   12s/40s | agents idle 15 busy 3 reg 1 off 1 | req 420 (35/s) err 0 | jobs q 9 run 3 \
             ok 4 fail 0 | pickup p50 0.120s p99 0.900s"
        );
        board.update(|p| p.phase = Phase::Keys { done: 3, total: 10 });
        assert_eq!(board.snapshot().line(), "keys 3/10");
        board.update(|p| {
            p.phase = Phase::Starting;
            p.emulator = Some(Placement::ChildProcess { pid: 42 });
        });
        assert_eq!(
            board.snapshot().line(),
            "starting (embedded emulator in child process 42)"
        );
    }

    // Goal: the parent of `run --processes` shows one run: counts add up, the phase is the
    // least advanced child's (one child still loading keys holds the display at keys), and a
    // snapshot survives the JSON line a child prints.
    #[test]
    fn fold_sums_counts_and_takes_the_least_advanced_phase() {
        let running = Progress {
            phase: Phase::Running,
            elapsed: Duration::from_secs(7),
            duration: Duration::from_secs(30),
            agents: 8,
            by_state: [1, 5, 2, 0],
            requests: 100,
            errors: 1,
            requests_per_s: 10.0,
            jobs: JobsReport {
                queued: 4,
                started: 3,
                succeeded: 2,
                ..JobsReport::default()
            },
            pickup_p50: Some(Duration::from_millis(100)),
            pickup_p99: Some(Duration::from_millis(400)),
            emulator: None,
        };
        let mut other = running.clone();
        other.elapsed = Duration::from_secs(6);
        other.pickup_p99 = Some(Duration::from_millis(900));
        let all = Progress::fold(&[running.clone(), other.clone()]).unwrap();
        assert_eq!(all.phase, Phase::Running);
        assert_eq!(all.agents, 16);
        assert_eq!(all.by_state, [2, 10, 4, 0]);
        assert_eq!((all.requests, all.errors), (200, 2));
        assert_eq!(
            (all.jobs.queued, all.jobs.started, all.jobs.succeeded),
            (8, 6, 4)
        );
        assert_eq!(all.elapsed, Duration::from_secs(7));
        assert_eq!(all.pickup_p99, Some(Duration::from_millis(900)));

        let mut slow = running.clone();
        slow.phase = Phase::Keys { done: 1, total: 4 };
        let mut keys = running.clone();
        keys.phase = Phase::Keys { done: 3, total: 4 };
        let all = Progress::fold(&[running.clone(), keys, slow]).unwrap();
        assert_eq!(all.phase, Phase::Keys { done: 1, total: 4 });
        assert!(!all.phase.is_ready());
        assert!(Phase::Ready.is_ready() && Phase::Done.is_ready());
        assert_eq!(Progress::fold(&[]), None);

        let line = serde_json::to_string(&running).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Progress>(&line).unwrap(), running);
    }
}
