//! Host file systems inside the share: which directories the guest sees as submounts, the guest
//! inode numbers that keep files of different host file systems apart, and which host file
//! systems SYNCFS must flush.
//!
//! A directory reached through another host mount than its parent is a mount point: with
//! announce-submounts (the default, as in virtiofsd) its entry carries FUSE_ATTR_SUBMOUNT, and the
//! guest gives it a superblock and an `st_dev` of its own. Inode numbers are unique either way:
//! files of the share root's host file system keep their host number; those of any other host
//! file system get a small per-device index in the top 16 bits, so two host files never show the
//! same guest inode number (host numbers below 2^48, as every common file system hands out).
//! A larger host number on another file system (overlayfs with xino puts a layer's number in
//! the top bits, NFS may hand out 64-bit file ids) has its top bits folded into the 48 kept,
//! not cut off: files of two layers with one number below stay apart.
//!
//! This module only decides; it opens nothing and keeps no descriptors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::attr::InodeKey;
use super::host_keys::HostMap;

/// FUSE_ATTR_SUBMOUNT in `fuse_attr.flags`.
pub(super) const ATTR_SUBMOUNT: u32 = 1 << 0;

/// Bits of a host inode number kept below the device index.
const INDEX_SHIFT: u32 = 48;

/// The largest index above them. Devices past it all share it: their numbers may meet each
/// other's, never the share's (index 0) or a device's below it.
const MAX_INDEX: u64 = (1 << (64 - INDEX_SHIFT)) - 1;

/// Host devices seen so far, numbered in the order they were met (the share's own is 0).
#[derive(Debug)]
pub(super) struct Devices {
    inner: Mutex<Indexes>,
    /// The share's own device ([`NO_ROOT`] before the first reset), read without the lock:
    /// nearly every attribute the guest gets is of a file on it.
    root: AtomicU64,
}

/// [`Devices::root`] when there is none. A device with this number takes the locked path.
const NO_ROOT: u64 = u64::MAX;

impl Default for Devices {
    fn default() -> Self {
        Self { inner: Mutex::default(), root: AtomicU64::new(NO_ROOT) }
    }
}

#[derive(Debug, Default)]
struct Indexes {
    by_dev: HostMap<u64, u64>,
    /// The index the next new device gets.
    next: u64,
}

impl Devices {
    fn lock(&self) -> MutexGuard<'_, Indexes> {
        // Updated by single inserts with their counter: a panic cannot leave it half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every device and makes `root_dev` the share's own (index 0).
    pub(super) fn reset(&self, root_dev: u64) {
        let mut map = self.lock();
        map.by_dev.clear();
        map.by_dev.insert(root_dev, 0);
        map.next = 1;
        self.root.store(root_dev, Ordering::Relaxed);
    }

    /// Every device met and its index, in index order (what a migration carries).
    pub(super) fn indexes(&self) -> Vec<(u64, u64)> {
        let map = self.lock();
        let mut all: Vec<(u64, u64)> = map.by_dev.iter().map(|(d, i)| (*d, *i)).collect();
        all.sort_unstable_by_key(|(_, index)| *index);
        all
    }

    /// Gives each device the index it had on a migration's source, so the guest's inode
    /// numbers do not change; a device that already has one keeps it, and an index already
    /// given stays with its device. (One pass with the indexes in a set: a state may name many.)
    pub(super) fn assign(&self, devices: impl IntoIterator<Item = (u64, u64)>) {
        let mut map = self.lock();
        let mut given: std::collections::HashSet<u64> = map.by_dev.values().copied().collect();
        for (dev, index) in devices {
            if !map.by_dev.contains_key(&dev) && given.insert(index) {
                map.by_dev.insert(dev, index);
                map.next = map.next.max(index.saturating_add(1)).min(MAX_INDEX);
            }
        }
    }

    /// The inode number the guest sees for host inode `key`.
    pub(super) fn guest_ino(&self, (dev, ino): InodeKey) -> u64 {
        if dev != NO_ROOT && dev == self.root.load(Ordering::Relaxed) {
            // Index 0: the host number.
            return ino;
        }
        let mut map = self.lock();
        let index = match map.by_dev.get(&dev) {
            Some(index) => *index,
            None => {
                let index = map.next;
                map.next = (index + 1).min(MAX_INDEX);
                map.by_dev.insert(dev, index);
                index
            }
        };
        if index == 0 {
            ino
        } else {
            (index << INDEX_SHIFT) | fold(ino)
        }
    }

    /// Every host device met so far.
    #[cfg(test)]
    pub(super) fn all(&self) -> Vec<u64> {
        self.lock().by_dev.keys().copied().collect()
    }
}

/// Host inode number `ino` in [`INDEX_SHIFT`] bits: itself when it fits; otherwise its bits
/// above them, spread by a multiplication (Fibonacci hashing) over the kept ones and mixed in,
/// so numbers that differ only above (overlayfs xino's layers over one file system's small
/// numbers) differ below too.
fn fold(ino: u64) -> u64 {
    const KEPT: u64 = (1 << INDEX_SHIFT) - 1;
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let above = ino >> INDEX_SHIFT;
    if above == 0 {
        return ino;
    }
    (ino ^ (above.wrapping_mul(GOLDEN) >> (64 - INDEX_SHIFT))) & KEPT
}

/// Whether a directory reached through mount `child_mnt` from a parent on `parent_mnt` is a
/// mount point the guest should see as a submount. Unknown mount ids (0: hosts before Linux 5.8)
/// never make one.
pub(super) fn is_submount(parent_mnt: u64, child_mnt: u64, is_dir: bool) -> bool {
    is_dir && parent_mnt != 0 && child_mnt != 0 && parent_mnt != child_mnt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_keeps_host_numbers_and_other_devices_are_kept_apart() {
        let d = Devices::default();
        d.reset(8);
        assert_eq!(d.guest_ino((8, 1234)), 1234);
        let a = d.guest_ino((9, 1234));
        let b = d.guest_ino((10, 1234));
        assert!(a != 1234 && b != 1234 && a != b, "one host number, three guest numbers");
        assert_eq!(d.guest_ino((9, 1234)), a, "stable for a device");
        assert_eq!(a & ((1 << INDEX_SHIFT) - 1), 1234);
        let mut all = d.all();
        all.sort_unstable();
        assert_eq!(all, [8, 9, 10]);
        d.reset(8);
        assert_eq!(d.all(), [8]);
    }

    #[test]
    fn the_device_keeping_host_numbers_follows_each_reset() {
        let d = Devices::default();
        assert_eq!(d.guest_ino((5, 77)), 77, "before a reset, the first device met is index 0");
        assert_ne!(d.guest_ino((6, 77)), 77);
        d.reset(6);
        assert_eq!(d.guest_ino((6, 77)), 77, "the new share's device keeps host numbers");
        assert_ne!(d.guest_ino((5, 77)), 77, "the old one no longer does");
        d.reset(NO_ROOT);
        assert_eq!(d.guest_ino((NO_ROOT, 77)), 77, "a device with the sentinel's number too");
        assert_ne!(d.guest_ino((6, 77)), 77);
    }

    /// An index a migration state gave its last device (the largest there is) does not make
    /// the next device's numbers wrap onto the share's.
    #[test]
    fn indexes_stop_at_the_largest_instead_of_wrapping() {
        let d = Devices::default();
        d.reset(8);
        d.assign([(9, MAX_INDEX)]);
        let next = d.guest_ino((10, 1234));
        assert_ne!(next, 1234, "not the share's number");
        assert_eq!(next >> INDEX_SHIFT, MAX_INDEX);
        assert_eq!(d.guest_ino((11, 5)) >> INDEX_SHIFT, MAX_INDEX, "and stays there");
    }

    /// Overlayfs with xino: one small number in two lower layers, told apart by the layer's
    /// number in the top bits. On another device than the share's, both stay apart, and apart
    /// from that number in the upper layer (no layer bits).
    #[test]
    fn host_numbers_differing_only_in_their_top_bits_stay_apart() {
        let d = Devices::default();
        d.reset(8);
        let layer = |n: u64| (n << 62) | 4242;
        let (upper, one, two) =
            (d.guest_ino((9, 4242)), d.guest_ino((9, layer(1))), d.guest_ino((9, layer(2))));
        assert!(upper != one && one != two && upper != two, "{upper:x} {one:x} {two:x}");
        for ino in [upper, one, two] {
            assert_eq!(ino >> INDEX_SHIFT, 1, "the device's index stays on top");
        }
        assert_eq!(upper & ((1 << INDEX_SHIFT) - 1), 4242, "a number that fits is kept");
        assert_eq!(d.guest_ino((9, layer(1))), one, "stable");
        // Many layers over many small numbers: no two meet.
        let mut seen = std::collections::HashSet::new();
        for layer in 0..4u64 {
            for ino in 1..5000u64 {
                assert!(seen.insert(d.guest_ino((9, (layer << 62) | ino))), "{layer} {ino}");
            }
        }
    }

    #[test]
    fn only_directories_on_another_mount_are_submounts() {
        assert!(is_submount(20, 21, true));
        assert!(!is_submount(20, 21, false));
        assert!(!is_submount(20, 20, true));
        assert!(!is_submount(0, 21, true) && !is_submount(20, 0, true));
    }
}
