//! The reference event set: a binary heap keyed by `(time, seq)`. Obviously correct, O(log n),
//! and slow past ~10^5 pending events (cache misses, des.md §3.2); the property tests hold the
//! timing wheel to its pop sequence, and small runs may use it directly.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::EventSet;

/// A heap entry; ordered by `(time, seq)` only, so `T` needs no ordering.
struct Entry<T> {
    time_us: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.time_us, self.seq) == (other.time_us, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time_us, self.seq).cmp(&(other.time_us, other.seq))
    }
}

/// `BinaryHeap<Reverse<(time, seq)>>` with the [`EventSet`] contract.
pub struct HeapQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    next_seq: u64,
    /// Earliest time a push may use (last pop or exhausted limit).
    floor_us: u64,
}

impl<T> HeapQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        HeapQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            floor_us: 0,
        }
    }
}

impl<T> Default for HeapQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy> EventSet<T> for HeapQueue<T> {
    fn push(&mut self, time_us: u64, item: T) {
        let time_us = time_us.max(self.floor_us);
        self.heap.push(Reverse(Entry {
            time_us,
            seq: self.next_seq,
            item,
        }));
        self.next_seq += 1;
    }

    fn pop(&mut self) -> Option<(u64, T)> {
        let Reverse(e) = self.heap.pop()?;
        self.floor_us = e.time_us;
        Some((e.time_us, e.item))
    }

    fn pop_until(&mut self, limit_us: u64) -> Option<(u64, T)> {
        match self.peek_time() {
            Some(t) if t <= limit_us => self.pop(),
            _ => {
                self.floor_us = self.floor_us.max(limit_us);
                None
            }
        }
    }

    fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.time_us)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}
