//! Inflight I/O tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD; spec "Inflight I/O tracking"):
//! the shared area that outlives a back-end, and what each queue records in it so a restarted
//! back-end resubmits the requests that were in flight.
//!
//! - [`InflightArea`]: the front-end's area (SET_INFLIGHT_FD) mapped shared, one region per queue,
//!   each [`core's size`](vhu_core::inflight::queue_region_size) long.
//! - [`InflightRegion`]: one queue's region, handed to the device with its
//!   [`Queue`](crate::Queue); [`Virtqueue::track_inflight`](super::Virtqueue::track_inflight)
//!   attaches it to a ring.
//! - [`SplitInflight`] and [`PackedInflight`]: the spec's bookkeeping for each layout — what is
//!   written when a chain is fetched and when it is returned, and the recovery on reconnect that
//!   yields the chains to resubmit, in the order they were first fetched.
//!
//! The area is shared with the front-end, which keeps it across back-end restarts and could hand
//! back anything: every index read from it is checked, a region that does not add up is
//! [`InflightError`] or starts over, and nothing here panics on its contents.

mod packed;
mod split;

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vhu_core::inflight::queue_region_size;
use vhu_core::message::InflightDesc;
use vhu_core::VringIndex;
use vm_memory::mmap::MmapRegion;
use vm_memory::{AtomicAccess, Bytes, VolatileMemory};

use crate::bus_guard::Guarded;
use crate::memory::{map_area, AreaError};

pub use packed::{PackedInflight, PackedResubmit, UsedPosition};
pub use split::SplitInflight;

/// The version of the region layout the spec defines; 0 marks a region never initialised.
pub(super) const REGION_VERSION: u16 = 1;

/// Offsets of the header fields both layouts share: `u64 features, u16 version, u16 desc_num`.
pub(super) const FEATURES: usize = 0;
pub(super) const VERSION: usize = 8;
pub(super) const DESC_NUM: usize = 10;

/// Why an inflight area or region cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InflightError {
    /// The area could not be mapped.
    #[error("the inflight area ({size} bytes at offset {offset}) cannot be mapped: {source}")]
    Map {
        /// Bytes asked for.
        size: u64,
        /// Offset in the descriptor.
        offset: u64,
        /// What failed.
        source: vm_memory::mmap::MmapRegionError,
    },
    /// Every guard of the process is taken ([`crate::bus_guard::SLOTS`]).
    #[error("the inflight area cannot be guarded: all guards of this process are taken")]
    Unguarded,
    /// The area does not lie within its file (touching it would fault).
    #[error("the inflight area ends at byte {end} of a file of {file} bytes")]
    BeyondFile {
        /// Where the area ends in the file.
        end: u64,
        /// The file's size.
        file: u64,
    },
    /// The queue has no region in the area.
    #[error(
        "queue {index} has no inflight region (the area covers {queues} queues of {size} bytes)"
    )]
    NoRegion {
        /// The queue.
        index: u8,
        /// Queues the area covers.
        queues: u16,
        /// Bytes per region.
        size: u64,
    },
    /// The ring is larger than the region's descriptor states.
    #[error("a ring of {ring} entries does not fit an inflight region of {entries}")]
    RingTooLarge {
        /// The ring's size.
        ring: u16,
        /// Entries the region holds.
        entries: u16,
    },
    /// The region was written by another layout or version.
    #[error("the inflight region has version {version} and {entries} entries, not version 1 with {expected}")]
    Layout {
        /// The version found.
        version: u16,
        /// The entry count found.
        entries: u16,
        /// The entry count expected.
        expected: u16,
    },
    /// A field of the region could not be accessed.
    #[error("inflight region access at offset {offset} failed")]
    Access {
        /// Offset in the region.
        offset: usize,
    },
}

impl InflightError {
    /// The errno a front-end is told: ENOMEM when the area could not be mapped (or guarded),
    /// EINVAL for an area or region that is not what it must be.
    pub fn errno(&self) -> u64 {
        match self {
            Self::Map { .. } | Self::Unguarded => 12, // ENOMEM
            _ => 22,                                  // EINVAL
        }
    }
}

/// The front-end's inflight area, mapped shared; see the module docs.
#[derive(Debug)]
pub struct InflightArea {
    map: MmapRegion<()>,
    desc: InflightDesc,
    /// Registered with the SIGBUS guard; dropped after `map` is unmapped.
    _guarded: Option<Guarded>,
}

impl InflightArea {
    /// Maps `desc.mmap_size` bytes of `fd` from `desc.mmap_offset`, shared (what is written
    /// lands in the front-end's memory and outlives this process).
    pub fn map(fd: OwnedFd, desc: InflightDesc) -> Result<Arc<Self>, InflightError> {
        let (size, offset) = (desc.mmap_size, desc.mmap_offset);
        let (map, guarded) = map_area(fd, size, offset).map_err(|error| match error {
            AreaError::BeyondFile { end, file } => InflightError::BeyondFile { end, file },
            AreaError::Map(source) => InflightError::Map { size, offset, source },
            AreaError::Unguarded => InflightError::Unguarded,
        })?;
        Ok(Arc::new(Self { map, desc, _guarded: guarded }))
    }

    /// Queue `index`'s region, laid out for a split or a packed ring.
    pub fn region(
        self: &Arc<Self>,
        index: VringIndex,
        packed: bool,
    ) -> Result<InflightRegion, InflightError> {
        let size = queue_region_size(self.desc.queue_size, packed);
        let no_region =
            || InflightError::NoRegion { index: index.0, queues: self.desc.num_queues, size };
        if u16::from(index.0) >= self.desc.num_queues {
            return Err(no_region());
        }
        let start = u64::from(index.0) * size;
        let fits = start.checked_add(size).is_some_and(|end| end <= self.map.size() as u64);
        if !fits {
            return Err(no_region());
        }
        let offset = usize::try_from(start).map_err(|_| no_region())?;
        let len = usize::try_from(size).map_err(|_| no_region())?;
        Ok(InflightRegion {
            area: Arc::clone(self),
            offset,
            len,
            entries: self.desc.queue_size,
            packed,
        })
    }
}

/// One queue's region of an [`InflightArea`].
#[derive(Clone, Debug)]
pub struct InflightRegion {
    area: Arc<InflightArea>,
    offset: usize,
    len: usize,
    /// Descriptor states the region holds (the area's queue size).
    entries: u16,
    packed: bool,
}

impl InflightRegion {
    /// Descriptor states the region holds.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Whether the region is laid out for a packed ring.
    pub fn is_packed(&self) -> bool {
        self.packed
    }

    fn check(&self, at: usize, size: usize) -> Result<usize, InflightError> {
        match at.checked_add(size) {
            Some(end) if end <= self.len => Ok(self.offset + at),
            _ => Err(InflightError::Access { offset: at }),
        }
    }

    /// Reads a field (host byte order: the area never leaves the host).
    pub(super) fn load<T: AtomicAccess>(&self, at: usize) -> Result<T, InflightError> {
        let addr = self.check(at, std::mem::size_of::<T>())?;
        let slice = self.area.map.as_volatile_slice();
        slice.load(addr, Ordering::Acquire).map_err(|_| InflightError::Access { offset: at })
    }

    /// Writes a field, visible before any later write.
    pub(super) fn store<T: AtomicAccess>(&self, at: usize, value: T) -> Result<(), InflightError> {
        let addr = self.check(at, std::mem::size_of::<T>())?;
        let slice = self.area.map.as_volatile_slice();
        slice
            .store(value, addr, Ordering::Release)
            .map_err(|_| InflightError::Access { offset: at })
    }

    /// Whether the region holds records for a ring of `size` entries (`false`: never
    /// initialised); a ring larger than the region, or records of another version or size, are
    /// refused.
    pub(super) fn holds_records(&self, size: u16) -> Result<bool, InflightError> {
        let entries = self.entries;
        if size > entries {
            return Err(InflightError::RingTooLarge { ring: size, entries });
        }
        let version = self.load::<u16>(VERSION)?;
        if version == 0 {
            return Ok(false);
        }
        let stored = self.load::<u16>(DESC_NUM)?;
        if version != REGION_VERSION || stored != entries {
            return Err(InflightError::Layout { version, entries: stored, expected: entries });
        }
        Ok(true)
    }

    /// Zeroes the whole region.
    pub(super) fn clear(&self) -> Result<(), InflightError> {
        let addr = self.check(0, self.len)?;
        let slice = self
            .area
            .map
            .get_slice(addr, self.len)
            .map_err(|_| InflightError::Access { offset: 0 })?;
        slice.write_slice(&vec![0; self.len], 0).map_err(|_| InflightError::Access { offset: 0 })
    }
}

/// Heads in the order they were first fetched, from `(head, counter)` pairs.
pub(super) fn in_fetch_order(mut heads: Vec<(u16, u64)>) -> Vec<u16> {
    heads.sort_by_key(|&(head, counter)| (counter, head));
    heads.into_iter().map(|(head, _)| head).collect()
}
