//! The front-end's side of dirty logging: [`LogBuffer`], the bitmap a VMM shares with
//! SET_LOG_BASE while it migrates a guest, and reads back page by page.
//!
//! One bit per 4 KiB guest-physical page ([`LOG_PAGE`](crate::dirty::LOG_PAGE)), byte `n / 8`
//! bit `n % 8` (spec "Migration"). The back-end sets bits with atomic ORs while the front-end
//! takes them with atomic exchanges, a 64-bit word at a time, so no mark is lost between a read
//! and a clear. This module must not send anything: [`Client::set_log_base`](super::Client::set_log_base)
//! shares the buffer.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

use super::ClientError;
use crate::dirty::LOG_PAGE;

/// A dirty log on a memfd, mapped shared in this process; see the module docs.
#[derive(Debug)]
pub struct LogBuffer {
    fd: OwnedFd,
    map: MmapRegion<()>,
}

impl LogBuffer {
    /// A clean log covering guest-physical addresses `0..memory_end`.
    pub fn new(memory_end: u64) -> Result<Self, ClientError> {
        let pages = memory_end.div_ceil(LOG_PAGE);
        // Whole 64-bit words, so the front-end can take them with one exchange each.
        let size = pages.div_ceil(64).max(1) * 8;
        // Sealed at its size: a back-end that shrank it would end this process at its next
        // look past the new end.
        let fd = super::memory::sealed_memfd("vhu-dirty-log", size)?;
        let len = usize::try_from(size).map_err(|_| ClientError::Io {
            what: "mapping the log",
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        let file =
            fd.try_clone().map_err(|source| ClientError::Io { what: "mapping the log", source })?;
        let map =
            MmapRegion::from_file(FileOffset::new(File::from(file), 0), len).map_err(|e| {
                ClientError::Io { what: "mapping the log", source: std::io::Error::other(e) }
            })?;
        Ok(Self { fd, map })
    }

    /// The memfd, for [`Client::set_log_base`](super::Client::set_log_base).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Bytes of log (what SET_LOG_BASE's `mmap_size` says).
    pub fn size(&self) -> u64 {
        self.map.size() as u64
    }

    /// The pages marked since the last call, in order, clearing them.
    pub fn take_dirty(&self) -> Vec<u64> {
        let mut pages = Vec::new();
        for word in 0..self.map.size() / 8 {
            // Whole words of a page-aligned mapping: always in bounds and aligned.
            let Ok(cell) = self.map.get_atomic_ref::<AtomicU64>(word * 8) else { continue };
            let mut bits = u64::from_le(cell.swap(0, Ordering::AcqRel));
            while bits != 0 {
                let bit = u64::from(bits.trailing_zeros());
                pages.push(word as u64 * 64 + bit);
                bits &= bits - 1;
            }
        }
        pages
    }
}
