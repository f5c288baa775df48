//! The log SET_LOG_BASE shares: a bitmap in the front-end's memory where bit `n` (byte `n / 8`,
//! bit `n % 8`) stands for guest-physical page `n` of [`LOG_PAGE`] bytes (spec "Migration":
//! "the log is a bitmap ... one bit per page", set with an atomic OR since the front-end reads
//! and clears it concurrently).
//!
//! Bits are set a 64-bit little-endian word at a time where the word lies inside the area (the
//! front-end exchanges whole words to read them), a byte at a time at an area's ragged end.
//! This module must not know when logging is on; [`DirtyLog`](super::DirtyLog) does.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use vm_memory::mmap::{MmapRegion, MmapRegionError};
use vm_memory::VolatileMemory;

use crate::bus_guard::Guarded;
use crate::memory::{map_area, AreaError};

/// Bytes of guest memory one bit of the log stands for (`VHOST_LOG_PAGE`).
pub const LOG_PAGE: u64 = 0x1000;

/// Why a log area cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The area has no bytes.
    #[error("the log area is empty")]
    Empty,
    /// The area does not lie within its file (touching it would fault).
    #[error("the log area ends at byte {end} of a file of {file} bytes")]
    BeyondFile {
        /// Where the area ends in the file.
        end: u64,
        /// The file's size.
        file: u64,
    },
    /// The area could not be mapped.
    #[error("the log area ({size} bytes at offset {offset}) cannot be mapped: {source}")]
    Map {
        /// Bytes asked for.
        size: u64,
        /// Offset in the descriptor.
        offset: u64,
        /// What failed.
        source: MmapRegionError,
    },
    /// Every guard of the process is taken ([`crate::bus_guard::SLOTS`]).
    #[error("the log area cannot be guarded: all guards of this process are taken")]
    Unguarded,
}

impl LogError {
    /// The errno a front-end is told.
    pub fn errno(&self) -> u64 {
        match self {
            Self::Map { .. } | Self::Unguarded => 12,    // ENOMEM
            Self::Empty | Self::BeyondFile { .. } => 22, // EINVAL
        }
    }
}

/// A mapped log; see the module docs.
#[derive(Debug)]
pub struct LogArea {
    map: MmapRegion<()>,
    /// Registered with the SIGBUS guard; dropped after `map` is unmapped.
    _guarded: Option<Guarded>,
}

impl LogArea {
    /// Maps `size` bytes of `fd` from `offset`, shared with the front-end.
    pub fn map(fd: OwnedFd, size: u64, offset: u64) -> Result<Self, LogError> {
        if size == 0 {
            return Err(LogError::Empty);
        }
        let (map, guarded) = map_area(fd, size, offset).map_err(|error| match error {
            AreaError::BeyondFile { end, file } => LogError::BeyondFile { end, file },
            AreaError::Map(source) => LogError::Map { size, offset, source },
            AreaError::Unguarded => LogError::Unguarded,
        })?;
        Ok(Self { map, _guarded: guarded })
    }

    /// Bytes of log.
    pub fn len(&self) -> usize {
        self.map.size()
    }

    /// Whether the area has no bytes (never: [`LogArea::map`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the log has a bit for every page `[address, address + len)` touches.
    pub fn covers(&self, address: u64, len: u64) -> bool {
        let last = address.saturating_add(len.saturating_sub(1)) / LOG_PAGE;
        last / 8 < self.len() as u64
    }

    /// Sets the bits of every page `[address, address + len)` touches, up to the end of the
    /// log. Returns whether any of them was clear.
    pub fn mark(&self, address: u64, len: u64) -> bool {
        let Some(last) = address.checked_add(len.saturating_sub(1)) else { return false };
        let bits = self.len() as u64 * 8;
        let first = address / LOG_PAGE;
        let last = (last / LOG_PAGE).min(bits.saturating_sub(1));
        let mut fresh = false;
        let mut page = first;
        while page <= last {
            let word = page / 64;
            let upto = last.min(word * 64 + 63);
            let (low, high) = (page % 64, upto % 64);
            let mask = (u64::MAX >> (63 - high)) & (u64::MAX << low);
            fresh |= self.or_word(word, mask);
            page = upto + 1;
        }
        fresh
    }

    /// Whether the bit of the page holding `address` is set.
    pub fn is_dirty(&self, address: u64) -> bool {
        let page = address / LOG_PAGE;
        let Ok(byte) = usize::try_from(page / 8) else { return false };
        self.map
            .get_atomic_ref::<AtomicU8>(byte)
            .is_ok_and(|b| b.load(Ordering::Acquire) & (1 << (page % 8)) != 0)
    }

    /// ORs `mask` (bit `i` = page `word * 64 + i`) into the log; whether it set a clear bit.
    fn or_word(&self, word: u64, mask: u64) -> bool {
        let Ok(at) = usize::try_from(word * 8) else { return false };
        if let Ok(cell) = self.map.get_atomic_ref::<AtomicU64>(at) {
            let old = u64::from_le(cell.fetch_or(mask.to_le(), Ordering::AcqRel));
            return old & mask != mask;
        }
        // The area ends inside this word (or is not 8-byte aligned there): byte by byte.
        let mut fresh = false;
        for (i, byte) in mask.to_le_bytes().into_iter().enumerate() {
            if byte == 0 {
                continue;
            }
            if let Ok(cell) = self.map.get_atomic_ref::<AtomicU8>(at + i) {
                fresh |= cell.fetch_or(byte, Ordering::AcqRel) & byte != byte;
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{ftruncate, memfd_create, MemfdFlags};

    fn area(size: u64) -> LogArea {
        let fd = memfd_create("log", MemfdFlags::CLOEXEC).unwrap();
        ftruncate(&fd, size).unwrap();
        LogArea::map(fd, size, 0).unwrap()
    }

    fn set_pages(area: &LogArea) -> Vec<u64> {
        (0..area.len() as u64 * 8).filter(|p| area.is_dirty(p * LOG_PAGE)).collect()
    }

    #[test]
    fn marks_every_page_a_range_touches_and_no_other() {
        let log = area(32);
        assert!(log.mark(LOG_PAGE - 1, 2));
        assert_eq!(set_pages(&log), [0, 1]);
        assert!(!log.mark(LOG_PAGE, 1), "page 1 was already dirty");
        assert!(log.mark(60 * LOG_PAGE + 5, 10 * LOG_PAGE));
        assert_eq!(set_pages(&log), [0, 1, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70]);
    }

    #[test]
    fn bits_follow_the_byte_layout_of_the_spec() {
        let fd = memfd_create("log", MemfdFlags::CLOEXEC).unwrap();
        ftruncate(&fd, 16).unwrap();
        let copy = fd.try_clone().unwrap();
        let log = LogArea::map(fd, 16, 0).unwrap();
        log.mark(9 * LOG_PAGE, 1); // byte 1, bit 1
        log.mark(70 * LOG_PAGE, 1); // byte 8, bit 6
        let mut bytes = [0u8; 16];
        rustix::io::pread(&copy, &mut bytes, 0).unwrap();
        let mut want = [0u8; 16];
        want[1] = 1 << 1;
        want[8] = 1 << 6;
        assert_eq!(bytes, want);
    }

    #[test]
    fn pages_past_the_log_and_ragged_ends_are_handled() {
        let log = area(9); // 72 pages; the last byte is not a whole word
        assert!(log.mark(63 * LOG_PAGE, 20 * LOG_PAGE));
        assert_eq!(set_pages(&log), (63..72).collect::<Vec<_>>());
        assert!(log.covers(71 * LOG_PAGE, LOG_PAGE) && !log.covers(71 * LOG_PAGE, LOG_PAGE + 1));
        assert!(!log.mark(1000 * LOG_PAGE, 1));
        assert!(!log.mark(u64::MAX, 1));
        assert!(!log.mark(u64::MAX - 5, 100), "a range that wraps marks nothing");
    }

    #[test]
    fn areas_beyond_their_file_or_empty_are_refused() {
        let fd = memfd_create("log", MemfdFlags::CLOEXEC).unwrap();
        ftruncate(&fd, 4096).unwrap();
        let err = LogArea::map(fd.try_clone().unwrap(), 8192, 0).unwrap_err();
        assert!(matches!(err, LogError::BeyondFile { end: 8192, file: 4096 }), "{err}");
        assert!(matches!(LogArea::map(fd, 0, 0), Err(LogError::Empty)));
    }
}
