//! Maps keyed by values the host hands out: an inode's device and number, a device number.
//!
//! The guest does not choose these values, but it decides which files exist, so a map keyed by
//! them must not let it pick keys that collide. The default SipHash would be spent on every
//! LOOKUP and every attribute reply. [`HostMap`] hashes each `u64` word of a key with one
//! folded multiplication (the 128-bit product's halves xored), starting from a key drawn at
//! random once per process and finishing with another: which host values collide depends on
//! that key, which the guest never sees. Node ids and file handles use the same hash
//! (`ids.rs`): a migration state chooses them.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// A map from host values.
pub(super) type HostMap<K, V> = HashMap<K, V, HostKeys>;

/// The hasher builder of [`HostMap`]: every map of the process shares its random key.
#[derive(Clone, Copy, Debug)]
pub(super) struct HostKeys {
    seed: (u64, u64),
}

impl Default for HostKeys {
    fn default() -> Self {
        static SEED: OnceLock<(u64, u64)> = OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            // std's RandomState draws its keys from the system's random source.
            let random = RandomState::new();
            (random.hash_one(1u64), random.hash_one(2u64))
        });
        Self { seed }
    }
}

impl BuildHasher for HostKeys {
    type Hasher = HostKeyHasher;

    fn build_hasher(&self) -> HostKeyHasher {
        HostKeyHasher { state: self.seed.0, finish: self.seed.1 }
    }
}

/// The product of `a` and `b` as 128 bits, its halves xored.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// 2⁶⁴/π rounded up to odd: a constant with no structure in its bits.
const MIX: u64 = 0x517c_c1b7_2722_0a95;

/// The hasher of [`HostMap`]; see the module docs.
#[derive(Clone, Copy, Debug)]
pub(super) struct HostKeyHasher {
    state: u64,
    finish: u64,
}

impl Hasher for HostKeyHasher {
    fn finish(&self) -> u64 {
        fold(self.state, self.finish | 1)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Keys here are made of `u64`s; anything else is folded in eight bytes at a time.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.state = fold(self.state ^ word, MIX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_inode_numbers_spread_and_maps_behave() {
        let keys = HostKeys::default();
        // Consecutive inode numbers of one device, as tmpfs hands them out, land in the
        // low-10-bit buckets and top-7-bit tags a hash table uses as random values would
        // (1 024 random values fill about 647 of 1 024 buckets, give or take 10, and all but a
        // handful of 128 tags).
        let mut buckets = std::collections::HashSet::new();
        let mut tags = std::collections::HashSet::new();
        for ino in 1..=1024u64 {
            let hash = keys.hash_one((42u64, ino));
            buckets.insert(hash & 1023);
            tags.insert(hash >> 57);
        }
        assert!(buckets.len() > 560, "{} of 1024 buckets", buckets.len());
        assert!(tags.len() >= 120, "{} of 128 tags", tags.len());
        // The same key hashes alike in every map of the process; another key does not.
        assert_eq!(keys.hash_one((1u64, 2u64)), HostKeys::default().hash_one((1u64, 2u64)));
        assert_ne!(keys.hash_one((1u64, 2u64)), keys.hash_one((2u64, 1u64)));
        let mut map = HostMap::default();
        for ino in 0..10_000u64 {
            map.insert((7u64, ino), ino * 3);
        }
        assert_eq!(map.get(&(7, 9_999)), Some(&29_997));
        assert_eq!(map.get(&(8, 9_999)), None);
        assert_eq!(map.remove(&(7, 5)), Some(15));
        assert_eq!(map.len(), 9_999);
    }
}
