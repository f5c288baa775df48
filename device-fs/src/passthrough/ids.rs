//! Maps keyed by node ids and file handles.
//!
//! The daemon hands these ids out itself, but not only: a migration destination takes over
//! the ids its source handed out, as the state describes them, and that state comes from
//! outside. A plain multiplicative hash keeps only an id's low bits in a table's low bits, so
//! a state naming ids that differ only in their high bits would put every one in the same
//! bucket and make loading it quadratic. [`IdMap`] therefore hashes ids as host values are
//! hashed (`host_keys.rs`: one folded multiplication a word, from a key drawn at random once
//! per process), which no one outside the process can aim at.

use super::host_keys::HostMap;

/// A map from node ids or file handles.
pub(super) type IdMap<V> = HostMap<u64, V>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn ids_that_differ_only_in_high_bits_spread_and_maps_behave() {
        let build = super::super::host_keys::HostKeys::default();
        // 1 024 ids that a multiplication would send to one low-10-bit bucket fill about as
        // many as random values would (about 647, give or take 10).
        let buckets: std::collections::HashSet<u64> =
            (1..=1024u64).map(|i| build.hash_one(i << 24) & 1023).collect();
        assert!(buckets.len() > 560, "{} of 1024 buckets", buckets.len());
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
