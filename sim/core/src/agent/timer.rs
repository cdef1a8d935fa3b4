//! The agent's timers: a closed enum, each a fixed slot in a small table of deadlines, so every
//! wake-up carries its reason ("agent 17: LockRenew @ 12.300000s").
//!
//! This module only stores deadlines and finds the earliest; it never decides what a timer does.

use std::fmt;

use crate::SimTime;

/// Which HTTP connection a call belongs to. The agent keeps at most one call in flight per
/// connection, as HTTP/1.1 on one socket does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Connection {
    /// Registration, token exchange, session, the main long poll and message acks.
    Listener,
    /// The parallel keep-alive poll.
    KeepAlive,
    /// The worker's plan-hub calls with the job token, and the listener's lock renewals.
    Job,
}

impl Connection {
    /// Every connection, in slot order.
    pub const ALL: [Connection; 3] = [Connection::Listener, Connection::KeepAlive, Connection::Job];

    pub(crate) fn slot(self) -> usize {
        self as usize
    }
}

/// Why the agent wants to be woken. A closed set: drivers may log it, never interpret it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The agent starts (the first registration call).
    Start,
    /// The pause after an empty long poll is over: poll again.
    PollGap,
    /// The error back-off of the listener is over.
    Backoff,
    /// Retry session create (after a conflict or a retriable error).
    SessionRetry,
    /// Send the next keep-alive poll.
    KeepAlive,
    /// A call on this connection got no answer within its client timeout.
    CallTimeout(Connection),
    /// Renew the job lock (also the first-renewal retries).
    LockRenew,
    /// Drain the timeline-record queue.
    TimelineFlush,
    /// Emit due log lines and post the live-console feed.
    FeedFlush,
    /// Upload buffered log content.
    LogFlush,
    /// The running step's duration is over.
    StepEnd,
    /// Rotate the job token before it expires (extension).
    TokenRotate,
    /// Retry the job completion event.
    CompletionRetry,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timer::CallTimeout(c) => write!(f, "CallTimeout({c:?})"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Agent-level timers (kept inline in every agent).
pub(crate) const AGENT_TIMERS: [Timer; 8] = [
    Timer::Start,
    Timer::PollGap,
    Timer::Backoff,
    Timer::SessionRetry,
    Timer::KeepAlive,
    Timer::CallTimeout(Connection::Listener),
    Timer::CallTimeout(Connection::KeepAlive),
    Timer::CallTimeout(Connection::Job),
];

/// Job-level timers (kept in the boxed job state, so idle agents do not pay for them).
pub(crate) const JOB_TIMERS: [Timer; 7] = [
    Timer::LockRenew,
    Timer::TimelineFlush,
    Timer::FeedFlush,
    Timer::LogFlush,
    Timer::StepEnd,
    Timer::TokenRotate,
    Timer::CompletionRetry,
];

/// A fixed table of deadlines, one slot per timer of `TIMERS`; `SimTime::NEVER` = unset.
#[derive(Clone, Debug)]
pub(crate) struct TimerTable<const N: usize> {
    at: [SimTime; N],
}

impl<const N: usize> TimerTable<N> {
    pub(crate) fn new() -> Self {
        TimerTable {
            at: [SimTime::NEVER; N],
        }
    }

    pub(crate) fn set(&mut self, slot: usize, at: SimTime) {
        self.at[slot] = at;
    }

    pub(crate) fn clear(&mut self, slot: usize) {
        self.at[slot] = SimTime::NEVER;
    }

    pub(crate) fn get(&self, slot: usize) -> Option<SimTime> {
        let at = self.at[slot];
        (at != SimTime::NEVER).then_some(at)
    }

    /// The earliest set deadline and its slot; ties go to the lower slot.
    pub(crate) fn earliest(&self) -> Option<(SimTime, usize)> {
        let mut best: Option<(SimTime, usize)> = None;
        for (slot, &at) in self.at.iter().enumerate() {
            if at != SimTime::NEVER && best.is_none_or(|(b, _)| at < b) {
                best = Some((at, slot));
            }
        }
        best
    }

    /// The first slot whose deadline is at or before `now`, clearing it.
    pub(crate) fn take_expired(&mut self, now: SimTime) -> Option<(SimTime, usize)> {
        let (at, slot) = self.earliest()?;
        if at > now {
            return None;
        }
        self.at[slot] = SimTime::NEVER;
        Some((at, slot))
    }
}

/// The slot of an agent-level timer, or `None` for a job-level one.
pub(crate) fn agent_slot(timer: Timer) -> Option<usize> {
    AGENT_TIMERS.iter().position(|&t| t == timer)
}

/// The slot of a job-level timer, or `None` for an agent-level one.
pub(crate) fn job_slot(timer: Timer) -> Option<usize> {
    JOB_TIMERS.iter().position(|&t| t == timer)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the table reports the earliest deadline with its slot and only hands out expired ones.
    #[test]
    fn earliest_and_take_expired_respect_deadlines() {
        let mut t = TimerTable::<3>::new();
        assert_eq!(t.earliest(), None);
        t.set(2, SimTime::from_secs(5));
        t.set(1, SimTime::from_secs(7));
        assert_eq!(t.earliest(), Some((SimTime::from_secs(5), 2)));
        assert_eq!(t.take_expired(SimTime::from_secs(4)), None);
        assert_eq!(
            t.take_expired(SimTime::from_secs(8)),
            Some((SimTime::from_secs(5), 2))
        );
        assert_eq!(
            t.take_expired(SimTime::from_secs(8)),
            Some((SimTime::from_secs(7), 1))
        );
        assert_eq!(t.take_expired(SimTime::from_secs(8)), None);
    }

    // Goal: every timer has exactly one slot, in exactly one of the two tables.
    #[test]
    fn every_timer_has_one_slot() {
        for t in AGENT_TIMERS {
            assert!(agent_slot(t).is_some() && job_slot(t).is_none(), "{t}");
        }
        for t in JOB_TIMERS {
            assert!(job_slot(t).is_some() && agent_slot(t).is_none(), "{t}");
        }
        assert_eq!(
            Timer::CallTimeout(Connection::Job).to_string(),
            "CallTimeout(Job)"
        );
    }
}
