//! A fixed, fast hasher for the server's string-keyed lookup tables (tokens, sessions, OAuth
//! clients, plans), so a lookup costs one hash and a probe or two instead of the ~20 string
//! comparisons (each a cache miss at a million agents) of a `BTreeMap<String, _>`.
//!
//! Deterministic (no random state), and these tables are never iterated, so the server's output
//! does not depend on hash order. Flooding is not a concern: every stored key is minted by the
//! server from its seeded stream (random tokens, UUIDs); a peer only chooses what it looks up.
//! It never hashes anything a peer can make the server store.
//!
//! [`InlineKey`] keeps a short string key inside the table's own bucket: a lookup then reads one
//! cache line for the bucket instead of a second one for the key's heap allocation (the
//! `memcmp` of a `String` key was ~6% of a virtual run at 10^5 agents, all of it that miss).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A `HashMap` with [`FastHasher`]: lookups only, never iterated where order would show.
pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// FxHash-style word mixing with a murmur3 finaliser, so the top bits (which the table's
/// control bytes use) depend on every input bit.
#[derive(Clone, Copy)]
pub(super) struct FastHasher {
    hash: u64,
}

impl Default for FastHasher {
    /// A non-zero start, so leading zero words still move the state.
    fn default() -> Self {
        FastHasher {
            hash: 0x243f_6a88_85a3_08d3,
        }
    }
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // The length first: byte strings that differ only in trailing zeros hash apart.
        self.add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// Longest key kept inline: a minted token (43 characters of base64) and a session id (a
/// 36-character UUID) both fit; a longer key goes to the heap and still works.
const INLINE_MAX: usize = 46;

/// A string key for a [`FastMap`], looked up by its bytes (`map.get(key.as_bytes())`).
/// Hash and equality are those of the key's bytes, so inline and heap keys of the same text
/// are the same key.
#[derive(Clone)]
pub(super) enum InlineKey {
    /// At most [`INLINE_MAX`] bytes, stored in place (48 bytes with the tag and length).
    Inline { len: u8, bytes: [u8; INLINE_MAX] },
    /// A longer key.
    Heap(Box<[u8]>),
}

impl InlineKey {
    pub(super) fn new(key: &str) -> Self {
        let b = key.as_bytes();
        if b.len() <= INLINE_MAX {
            let mut bytes = [0u8; INLINE_MAX];
            bytes[..b.len()].copy_from_slice(b);
            InlineKey::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            InlineKey::Heap(b.into())
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            InlineKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            InlineKey::Heap(b) => b,
        }
    }
}

impl PartialEq for InlineKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for InlineKey {}

impl Hash for InlineKey {
    /// As `[u8]` hashes, so a `&[u8]` lookup finds the key (`Borrow`'s contract).
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for InlineKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    fn hash(s: &str) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(s)
    }

    // Goal: the hash is a pure function of the key (replays need no random state) and keys
    // that differ in one byte, or only in length, hash apart.
    #[test]
    fn hashes_are_fixed_and_spread() {
        assert_eq!(hash("session-1"), hash("session-1"));
        assert_ne!(hash("session-1"), hash("session-2"));
        assert_ne!(hash("abcdefgh"), hash("abcdefgh\0"));
        assert_ne!(hash(""), hash("\0"));
        let mut map: FastMap<String, u32> = FastMap::default();
        for i in 0..1000 {
            map.insert(format!("token-{i}"), i);
        }
        assert_eq!(map.get("token-517"), Some(&517));
        assert_eq!(map.len(), 1000);
    }

    // Goal: inline and heap keys are found by their bytes, and only by exactly their bytes.
    #[test]
    fn inline_keys_find_by_bytes() {
        let long = "x".repeat(INLINE_MAX + 1);
        let edge = "y".repeat(INLINE_MAX);
        let mut map: FastMap<InlineKey, u32> = FastMap::default();
        for (i, k) in ["", "session-1", edge.as_str(), long.as_str()]
            .iter()
            .enumerate()
        {
            map.insert(InlineKey::new(k), i as u32);
        }
        assert!(matches!(InlineKey::new(&edge), InlineKey::Inline { .. }));
        assert!(matches!(InlineKey::new(&long), InlineKey::Heap(_)));
        assert_eq!(map.get("".as_bytes()), Some(&0));
        assert_eq!(map.get("session-1".as_bytes()), Some(&1));
        assert_eq!(map.get(edge.as_bytes()), Some(&2));
        assert_eq!(map.get(long.as_bytes()), Some(&3));
        assert_eq!(map.get("session-1\0".as_bytes()), None);
        assert_eq!(map.get(&long.as_bytes()[..INLINE_MAX]), None);
        assert_eq!(map.remove(long.as_bytes()), Some(3));
        assert_eq!(map.len(), 3);
    }
}
