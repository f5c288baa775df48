//! Maps keyed by the ids this daemon hands out (node ids, file handles).
//!
//! The ids are counters the daemon assigns, never values the guest picks, so they need no
//! defence against keys chosen to collide, and the default SipHash would be spent on every
//! request that names a node or a handle. [`IdMap`] hashes an id with one multiplication
//! (Fibonacci hashing: consecutive ids land in distinct buckets, and the top bits the table
//! also uses are well mixed). A guest naming an id that does not exist only makes a lookup
//! miss. This module must not be used for keys that come from outside (host inode numbers go
//! in `host_keys.rs`'s map; request `unique`s).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from daemon-assigned ids.
pub(super) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`]: one `u64` in, that times 2⁶⁴/φ out.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IdHasher(u64);

/// ⌊2⁶⁴/φ⌋, odd: multiplying by it permutes every run of low bits.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys reach here in practice; anything else is folded in byte by byte.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(GOLDEN);
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn consecutive_ids_spread_over_the_low_bits_and_maps_behave() {
        let build = BuildHasherDefault::<IdHasher>::default();
        // 1024 consecutive ids fill 1024 distinct low-10-bit buckets.
        let mut seen = std::collections::HashSet::new();
        for id in 1..=1024u64 {
            seen.insert(build.hash_one(id) & 1023);
        }
        assert_eq!(seen.len(), 1024);
        let mut map = IdMap::default();
        for id in 0..10_000u64 {
            map.insert(id, id * 3);
        }
        assert_eq!(map.get(&9_999), Some(&29_997));
        assert_eq!(map.get(&10_000), None);
        assert_eq!(map.remove(&5), Some(15));
        assert_eq!(map.len(), 9_999);
    }
}
