//! A set of agent ids as a three-level bitmap: O(1) insert and remove (one bit, plus summary
//! bits when a word empties or fills) and ascending iteration that skips empty regions 4096
//! and 262144 ids at a time. Dispatch asks "the lowest idle (or ready) agent id" and every
//! poll moves an agent in or out of these sets; a `BTreeSet<u64>` pays a tree walk (several
//! cache misses at a million agents) for each move, the bitmap one cache line.
//!
//! Ids are dense (the server hands them out from 1), so the bitmap costs 1 bit per id ever
//! registered. Iteration order is ascending id, exactly as the `BTreeSet` it replaces.

/// Ascending-ordered set of `u64` ids (dense, small).
#[derive(Default, Clone, Debug)]
pub(super) struct IdSet {
    /// Bit `i % 64` of word `i / 64`: id `i` is in the set.
    bits: Vec<u64>,
    /// Bit `w % 64` of word `w / 64`: `bits[w]` is non-zero.
    mid: Vec<u64>,
    /// Bit `m % 64` of word `m / 64`: `mid[m]` is non-zero.
    top: Vec<u64>,
    len: usize,
}

impl IdSet {
    /// Add `id`; true if it was not there.
    pub fn insert(&mut self, id: u64) -> bool {
        let w = (id / 64) as usize;
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
            self.mid.resize(w / 64 + 1, 0);
            self.top.resize(w / 4096 + 1, 0);
        }
        let bit = 1u64 << (id % 64);
        if self.bits[w] & bit != 0 {
            return false;
        }
        self.bits[w] |= bit;
        self.mid[w / 64] |= 1 << (w % 64);
        self.top[w / 4096] |= 1 << ((w / 64) % 64);
        self.len += 1;
        true
    }

    /// Remove `id`; true if it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        let w = (id / 64) as usize;
        let bit = 1u64 << (id % 64);
        match self.bits.get_mut(w) {
            Some(word) if *word & bit != 0 => *word &= !bit,
            _ => return false,
        }
        self.len -= 1;
        if self.bits[w] == 0 {
            self.mid[w / 64] &= !(1 << (w % 64));
            if self.mid[w / 64] == 0 {
                self.top[w / 4096] &= !(1 << ((w / 64) % 64));
            }
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The smallest id `>= from` in the set.
    pub fn next_from(&self, from: u64) -> Option<u64> {
        let mut w = (from / 64) as usize;
        if w >= self.bits.len() {
            return None;
        }
        // The rest of `from`'s own word.
        let word = self.bits[w] & (u64::MAX << (from % 64));
        if word != 0 {
            return Some(w as u64 * 64 + u64::from(word.trailing_zeros()));
        }
        w += 1;
        // The rest of its mid word, then the top level.
        loop {
            let m = w / 64;
            if m >= self.mid.len() {
                return None;
            }
            let mid = self.mid[m] & (u64::MAX << (w % 64));
            if mid != 0 {
                let w = m * 64 + mid.trailing_zeros() as usize;
                return Some(w as u64 * 64 + u64::from(self.bits[w].trailing_zeros()));
            }
            // Find the next non-empty mid word through the top level.
            let next_m = m + 1;
            let t = next_m / 64;
            if t >= self.top.len() {
                return None;
            }
            let mut t = t;
            let mut top = self.top[t] & (u64::MAX << (next_m % 64));
            while top == 0 {
                t += 1;
                if t >= self.top.len() {
                    return None;
                }
                top = self.top[t];
            }
            w = (t * 64 + top.trailing_zeros() as usize) * 64;
        }
    }

    /// Ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut next = self.next_from(0);
        std::iter::from_fn(move || {
            let id = next?;
            next = id.checked_add(1).and_then(|n| self.next_from(n));
            Some(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    // Goal: the bitmap holds exactly what a BTreeSet holds and iterates it in the same order,
    // across word, mid-level and top-level boundaries, through random inserts and removes.
    #[test]
    fn matches_a_btreeset() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut set = IdSet::default();
        let mut model = BTreeSet::new();
        for round in 0..20_000 {
            // Clustered ids and far ones, so every level gets empty and refilled.
            let id = if round % 3 == 0 {
                rng.random_range(0..600_000)
            } else {
                rng.random_range(4_000..4_200)
            };
            if rng.random_bool(0.55) {
                assert_eq!(set.insert(id), model.insert(id));
            } else {
                assert_eq!(set.remove(id), model.remove(&id));
            }
            if round % 1000 == 0 {
                assert!(set.iter().eq(model.iter().copied()));
                let probe = rng.random_range(0..700_000);
                assert_eq!(set.next_from(probe), model.range(probe..).next().copied());
            }
        }
        assert!(set.iter().eq(model.iter().copied()));
        assert_eq!(set.is_empty(), model.is_empty());
        for id in model.clone() {
            set.remove(id);
        }
        assert!(set.is_empty() && set.next_from(0).is_none());
    }
}
