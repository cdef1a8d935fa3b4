//! The server's timer set: an ordered set of `(time, Timer)` plus a FIFO lane for long-poll
//! holds. Every hold lasts the same `long_poll_hold`, so holds are set in non-decreasing
//! deadline order and a `VecDeque` keeps them sorted at O(1) per poll, where the ordered set
//! costs a tree walk (several cache misses at a million parked polls) to insert and another to
//! remove. A hold released early (a job arrived, the client left) is removed lazily: the
//! server prunes the lane's front with [`Timers::prune_holds`] after every release, so the
//! front is always a live hold and [`Timers::first`] is exact.
//!
//! A hold whose deadline would go behind the lane's back (a clock that stepped back, or a
//! shorter hold configured at run time) goes to the ordered set instead, so order never
//! breaks. Within one instant, lane holds fire in the order they were parked.

use std::collections::{BTreeSet, VecDeque};

use super::{RequestId, Timer};
use crate::SimTime;

#[derive(Default)]
pub(super) struct Timers {
    set: BTreeSet<(SimTime, Timer)>,
    holds: VecDeque<(SimTime, RequestId)>,
    /// `PollHold` timers in `set` (out-of-order holds); 0 lets a release skip the set.
    holds_in_set: usize,
}

impl Timers {
    pub fn insert(&mut self, at: SimTime, timer: Timer) {
        if let Timer::PollHold(id) = timer
            && self.holds.back().is_none_or(|&(last, _)| last <= at)
        {
            self.holds.push_back((at, id));
            return;
        }
        if matches!(timer, Timer::PollHold(_)) {
            self.holds_in_set += 1;
        }
        self.set.insert((at, timer));
    }

    /// Forget a timer. A hold in the lane stays until [`Timers::prune_holds`] finds it dead.
    pub fn remove(&mut self, at: SimTime, timer: Timer) {
        if matches!(timer, Timer::PollHold(_)) {
            if self.holds_in_set > 0 && self.set.remove(&(at, timer)) {
                self.holds_in_set -= 1;
            }
            return;
        }
        self.set.remove(&(at, timer));
    }

    /// Drop dead holds from the lane's front; `live(at, id)` says whether hold `id` with
    /// deadline `at` is still parked.
    pub fn prune_holds(&mut self, live: impl Fn(SimTime, RequestId) -> bool) {
        while let Some(&(at, id)) = self.holds.front() {
            if live(at, id) {
                break;
            }
            self.holds.pop_front();
        }
    }

    /// The earliest timer (ties: the ordered set's `Timer` order, holds first as `PollHold`
    /// sorts first).
    pub fn first(&self) -> Option<(SimTime, Timer)> {
        let lane = self
            .holds
            .front()
            .map(|&(at, id)| (at, Timer::PollHold(id)));
        match (lane, self.set.first().copied()) {
            (Some(l), Some(s)) => Some(if (l.0, 0) <= (s.0, rank(s.1)) { l } else { s }),
            (l, s) => l.or(s),
        }
    }

    /// Take the earliest timer.
    pub fn pop_first(&mut self) -> Option<(SimTime, Timer)> {
        let first = self.first()?;
        match first.1 {
            Timer::PollHold(id) if self.holds.front() == Some(&(first.0, id)) => {
                self.holds.pop_front();
            }
            _ => {
                if matches!(first.1, Timer::PollHold(_)) {
                    self.holds_in_set -= 1;
                }
                self.set.pop_first();
            }
        }
        Some(first)
    }
}

/// `Timer`'s variant order, for ties between the lane and the set.
fn rank(t: Timer) -> u8 {
    match t {
        Timer::PollHold(_) => 0,
        Timer::LeaseExpiry(_) => 1,
        Timer::SessionIdle(_) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SimTime {
        SimTime::from_secs(s)
    }

    // Goal: lane holds and set timers come out in time order; a released hold is skipped once
    // pruned; an out-of-order hold goes through the set and still fires in order.
    #[test]
    fn lane_and_set_merge_in_time_order() {
        let mut timers = Timers::default();
        timers.insert(t(10), Timer::PollHold(1));
        timers.insert(t(20), Timer::PollHold(2));
        timers.insert(t(15), Timer::SessionIdle(7));
        timers.insert(t(5), Timer::PollHold(3)); // behind the lane's back: the set
        timers.insert(t(10), Timer::LeaseExpiry(9));
        timers.remove(t(10), Timer::PollHold(1));
        timers.prune_holds(|_, id| id != 1);
        let order: Vec<_> = std::iter::from_fn(|| timers.pop_first()).collect();
        assert_eq!(
            order,
            vec![
                (t(5), Timer::PollHold(3)),
                (t(10), Timer::LeaseExpiry(9)),
                (t(15), Timer::SessionIdle(7)),
                (t(20), Timer::PollHold(2)),
            ]
        );
        assert_eq!(timers.first(), None);
        assert_eq!(timers.holds_in_set, 0);
    }
}
