//! What a running fleet shows while it runs: a [`Progress`] snapshot that the run updates a few
//! times a second on a shared [`ProgressBoard`], and the caller (the CLI's indicatif bar on a
//! TTY, or a plain line every 5 s otherwise) reads whenever it likes.
//!
//! The board is a mutex around a small copyable struct: writers hold it for a few field
//! assignments, readers copy it out. It never renders on its own and never blocks a run.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use fleetsim_core::ops::AgentState;
use fleetsim_metrics::report::JobsReport;

/// Where the run is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Setting up (limits, proxy, emulator).
    #[default]
    Starting,
    /// Loading or generating RSA keys.
    Keys { done: usize, total: usize },
    /// Agents run and jobs arrive.
    Running,
    /// The run is over (or was interrupted): agents delete their sessions.
    Draining,
    /// Everything measured; the outcome is being assembled.
    Done,
}

/// Where the embedded emulator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, Default, PartialEq)]
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
}
