//! The pending-event set: a priority queue of `(time, item)` that pops in exact `(time, seq)`
//! order, where `seq` is the insertion counter, so events due at the same microsecond run in the
//! order they were scheduled (FIFO). Two implementations share one trait: the hierarchical
//! [`TimingWheel`] the engine uses, and the [`HeapQueue`] reference the property tests compare it
//! against.
//!
//! Neither ever reorders ties, reads a clock or allocates per event once warmed up. Neither
//! cancels: the engine cancels lazily by generation counter (a stale event is popped and
//! dropped), which costs less than finding and unlinking it.

mod heap;
mod wheel;

pub use heap::HeapQueue;
pub use wheel::TimingWheel;

/// A set of pending events keyed by integer time (µs), popped in `(time, insertion order)`.
///
/// Contract: every `push` uses a time no earlier than the floor — the last popped time, or the
/// last `limit` passed to [`EventSet::pop_until`] that returned `None`. A time below the floor is
/// treated as the floor (it runs "now"), which keeps the order total instead of panicking.
pub trait EventSet<T: Copy> {
    /// Schedule `item` at `time_us`.
    fn push(&mut self, time_us: u64, item: T);
    /// Remove and return the earliest item, ties in insertion order.
    fn pop(&mut self) -> Option<(u64, T)>;
    /// Like [`EventSet::pop`], but only if the earliest item is due at or before `limit_us`.
    fn pop_until(&mut self, limit_us: u64) -> Option<(u64, T)>;
    /// The earliest pending time, without removing anything.
    fn peek_time(&self) -> Option<u64>;
    /// Pending items.
    fn len(&self) -> usize;
    /// No pending items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// Drives both queues with the same random workload: a mix of pushes (exponential, constant,
    /// zero and far-future delays, many exact ties) and pops, and records every pop.
    fn run_workload<Q: EventSet<u32>>(q: &mut Q, seed: u64, ops: usize) -> Vec<(u64, u32)> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut now = 0u64;
        let mut next_id = 0u32;
        let mut out = Vec::new();
        for _ in 0..ops {
            let r: u32 = rng.random_range(0..100);
            if r < 55 || q.is_empty() {
                let delay = match rng.random_range(0..6) {
                    0 => 0,
                    1 => rng.random_range(0..64),
                    2 => 1_000,
                    3 => (-(1.0 - rng.random::<f64>()).ln() * 1e6) as u64,
                    4 => rng.random_range(0..1u64 << 40),
                    _ => rng.random::<u64>() >> rng.random_range(1..64),
                };
                q.push(now.saturating_add(delay), next_id);
                next_id += 1;
            } else if r < 95 {
                let (t, id) = q.pop().expect("non-empty");
                assert!(t >= now, "time went backwards: {t} < {now}");
                now = t;
                out.push((t, id));
            } else {
                // Bounded pop: either pops something due by the limit or nothing at all.
                let limit = now + rng.random_range(0..200);
                match q.pop_until(limit) {
                    Some((t, id)) => {
                        assert!(t <= limit && t >= now);
                        now = t;
                        out.push((t, id));
                    }
                    None => {
                        assert!(q.peek_time().is_none_or(|t| t > limit));
                        now = limit;
                    }
                }
            }
        }
        while let Some(p) = q.pop() {
            out.push(p);
        }
        out
    }

    #[test]
    fn wheel_and_heap_pop_identical_sequences() {
        // Goal: the timing wheel is a drop-in for the obviously-correct heap on random
        // workloads, ties included (ids are pushed in increasing order, so FIFO ties mean ids
        // increase within one time).
        for seed in 0..64 {
            let mut wheel = TimingWheel::new();
            let mut heap = HeapQueue::new();
            let a = run_workload(&mut wheel, seed, 5_000);
            let b = run_workload(&mut heap, seed, 5_000);
            assert_eq!(a.len(), b.len(), "seed {seed}");
            assert!(a == b, "seed {seed}: sequences differ");
            for w in a.windows(2) {
                assert!(
                    w[0].0 < w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1),
                    "seed {seed}"
                );
            }
        }
    }

    #[test]
    fn ties_pop_in_insertion_order_across_cascades() {
        // Goal: items for one time inserted from far away (high wheel levels) and from close by
        // (level 0) still pop in insertion order.
        let mut q = TimingWheel::new();
        let t = 5_000_000u64;
        q.push(t, 0u32);
        q.push(1, 1);
        assert_eq!(q.pop(), Some((1, 1)));
        q.push(t, 2);
        q.push(t - 10, 3);
        assert_eq!(q.pop(), Some((t - 10, 3)));
        q.push(t, 4);
        assert_eq!(q.pop(), Some((t, 0)));
        q.push(t, 5);
        let rest: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, vec![(t, 2), (t, 4), (t, 5)]);
    }

    #[test]
    fn extreme_times_are_ordered() {
        // Goal: the full u64 range works (the top level is partial: bits 60..64).
        let mut q = TimingWheel::new();
        for (i, t) in [u64::MAX, 0, 1 << 63, u64::MAX - 1, 1 << 36]
            .into_iter()
            .enumerate()
        {
            q.push(t, i as u32);
        }
        let times: Vec<u64> = std::iter::from_fn(|| q.pop()).map(|(t, _)| t).collect();
        assert_eq!(times, vec![0, 1 << 36, 1 << 63, u64::MAX - 1, u64::MAX]);
    }

    #[test]
    fn pushes_below_the_floor_run_at_the_floor() {
        // Goal: misuse keeps a total order instead of panicking or losing the item.
        let mut q = TimingWheel::new();
        q.push(100, 1u32);
        assert_eq!(q.pop(), Some((100, 1)));
        q.push(50, 2);
        assert_eq!(q.pop(), Some((100, 2)));
        let mut h = HeapQueue::new();
        h.push(100, 1u32);
        assert_eq!(h.pop(), Some((100, 1)));
        h.push(50, 2);
        assert_eq!(h.pop(), Some((100, 2)));
    }
}
