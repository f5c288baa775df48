//! Guest memory assembled from the regions the front-end shares, with `vm-memory`.
//!
//! [`MemoryMap`] owns a [`GuestMemoryAtomic`] over a [`GuestMemoryMmap`]. Each region is the
//! front-end's descriptor mapped `MAP_SHARED`, read/write, `size` bytes from `mmap_offset`, at its
//! guest-physical address. Every update builds a new map and swaps it in atomically, RCU-style:
//! a worker that took a snapshot keeps reading the old mappings, which stay mapped until the last
//! snapshot of them is dropped, so an update never tears a request in flight.
//!
//! Everything about a region is checked before it is mapped (zero or overflowing sizes, an offset
//! that is not page-aligned, a range past the end of the file, overlap with a mapped region) and
//! reported as a [`MemoryError`]; a failed update leaves the map as it was.
//!
//! Every region carries a [`DirtyBitmap`] over the connection's [`DirtyLog`], so writes made
//! through `vm-memory` are logged while the front-end migrates the guest ([`crate::dirty`]).
//!
//! This module must not apply protocol rules (which message may add or remove a region, slot
//! limits) nor translate front-end user addresses: both are `vhu-core`'s job. It keeps only what
//! `vm-memory` needs. The front-end must not shrink a file it shared; a mapping past the new end
//! of a file faults on access. Every mapping of a front-end's file is registered with
//! [`crate::bus_guard`] (while its table has room; past that the mapping is refused, ENOMEM),
//! so such an access reads zeros (and is counted) instead of ending the process and every other
//! connection it serves.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, PoisonError};

use crate::bus_guard::{self, Guarded};
use crate::dirty::{DirtyBitmap, DirtyLog};

use rustix::fs::{fstat, FileType};
use vhu_core::message::Region;
use vm_memory::mmap::{MmapRegion, MmapRegionBuilder, MmapRegionError};
use vm_memory::{
    FileOffset, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend,
    GuestMemoryMmap, GuestMemoryRegion, GuestRegionCollectionError, GuestRegionMmap,
};

/// Guest memory as a back-end sees it: `vm-memory`'s mmap regions, each with the
/// [`DirtyBitmap`] that logs writes to it.
pub type LoggedMemory = GuestMemoryMmap<DirtyBitmap>;

/// A region that cannot be mapped, or an update that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// The region has no bytes.
    #[error("region at guest address {guest_address:#x} has size 0")]
    ZeroSize {
        /// Guest-physical address.
        guest_address: u64,
    },
    /// `guest_address + size` exceeds 2^64 - 1.
    #[error(
        "region at guest address {guest_address:#x} of size {size:#x} wraps the address space"
    )]
    AddressOverflow {
        /// Guest-physical address.
        guest_address: u64,
        /// Size.
        size: u64,
    },
    /// `size` does not fit in this process's address space.
    #[error("region size {size:#x} does not fit in the address space")]
    TooLarge {
        /// Size.
        size: u64,
    },
    /// `mmap_offset + size` does not fit in a file offset.
    #[error("mmap offset {mmap_offset:#x} plus size {size:#x} overflows")]
    OffsetOverflow {
        /// Offset in the file.
        mmap_offset: u64,
        /// Size.
        size: u64,
    },
    /// `mmap` needs an offset that is a multiple of the page size.
    #[error("mmap offset {mmap_offset:#x} is not a multiple of the page size {page_size:#x}")]
    UnalignedOffset {
        /// Offset in the file.
        mmap_offset: u64,
        /// This system's page size.
        page_size: u64,
    },
    /// The range extends past the end of the file (accessing it would fault).
    #[error("mmap offset {mmap_offset:#x} plus size {size:#x} exceeds file size {file_size:#x}")]
    PastEndOfFile {
        /// Offset in the file.
        mmap_offset: u64,
        /// Size.
        size: u64,
        /// Size of the file.
        file_size: u64,
    },
    /// The region overlaps a mapped region (or another region of the same table).
    #[error(
        "region {guest_address:#x}+{size:#x} overlaps region {existing_address:#x}+{existing_size:#x}"
    )]
    Overlap {
        /// Guest-physical address of the new region.
        guest_address: u64,
        /// Size of the new region.
        size: u64,
        /// Guest-physical address of the region it overlaps.
        existing_address: u64,
        /// Size of the region it overlaps.
        existing_size: u64,
    },
    /// No mapped region starts at this address with this size.
    #[error("no region at guest address {guest_address:#x} with size {size:#x}")]
    NotFound {
        /// Guest-physical address asked for.
        guest_address: u64,
        /// Size asked for.
        size: u64,
    },
    /// `fstat` on the region's descriptor failed.
    #[error("fstat of the region descriptor failed: {0}")]
    Stat(#[source] std::io::Error),
    /// `mmap` failed.
    #[error("mapping region at guest address {guest_address:#x} failed: {source}")]
    Map {
        /// Guest-physical address.
        guest_address: u64,
        /// What vm-memory reported.
        #[source]
        source: MmapRegionError,
    },
    /// Every guard of the process is taken ([`bus_guard::SLOTS`]): mapped without one, the
    /// front-end could end the process by truncating its file.
    #[error(
        "region at guest address {guest_address:#x}: all {} guards of this process are taken",
        bus_guard::SLOTS
    )]
    Unguarded {
        /// Guest-physical address.
        guest_address: u64,
    },
    /// vm-memory refused the new region set (not expected after the checks above).
    #[error("guest memory update refused: {0}")]
    Collection(#[from] GuestRegionCollectionError),
}

/// The guest memory of one connection; see the module docs.
#[derive(Debug)]
pub struct MemoryMap {
    atomic: GuestMemoryAtomic<LoggedMemory>,
    log: Arc<DirtyLog>,
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMap {
    /// A map with no regions.
    pub fn new() -> Self {
        Self { atomic: GuestMemoryAtomic::new(LoggedMemory::new()), log: Arc::default() }
    }

    /// The dirty log every region of this map marks.
    pub fn log(&self) -> &Arc<DirtyLog> {
        &self.log
    }

    /// The shared handle workers keep; `handle.memory()` takes a snapshot.
    ///
    /// A snapshot stays valid, and keeps its mappings alive, across later updates: a worker sees an
    /// update when it takes its next snapshot.
    pub fn memory(&self) -> GuestMemoryAtomic<LoggedMemory> {
        self.atomic.clone()
    }

    /// A snapshot of the current map.
    pub fn snapshot(&self) -> Arc<LoggedMemory> {
        self.atomic.memory().into_inner()
    }

    /// Number of mapped regions.
    pub fn len(&self) -> usize {
        self.atomic.memory().num_regions()
    }

    /// Whether no region is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maps `size` bytes of `fd` from `mmap_offset` at `guest_address` (ADD_MEM_REG, or one region of
    /// SET_MEM_TABLE). `user_address` is not used here.
    ///
    /// On error nothing changes and `fd` is closed.
    pub fn add(&mut self, region: &Region, fd: OwnedFd) -> Result<(), MemoryError> {
        let guard = self.atomic.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.atomic.memory();
        check_overlap(region, current.iter().map(|r| (r.start_addr().0, r.len())))?;
        let mapped = map_region(region, fd, &self.log)?;
        let next = current.insert_region(Arc::new(mapped))?;
        guard.replace(next);
        Ok(())
    }

    /// Unmaps the region that starts at `guest_address` and has `size` bytes (REM_MEM_REG), once
    /// no snapshot refers to it any more.
    pub fn remove(&mut self, guest_address: u64, size: u64) -> Result<(), MemoryError> {
        let guard = self.atomic.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.atomic.memory();
        match current.remove_region(GuestAddress(guest_address), size) {
            Ok((next, _removed)) => {
                guard.replace(next);
                Ok(())
            }
            Err(_) => Err(MemoryError::NotFound { guest_address, size }),
        }
    }

    /// Replaces every region at once (SET_MEM_TABLE).
    ///
    /// All regions are checked and mapped before the swap; if one fails the old map stays and every
    /// descriptor given is closed.
    pub fn replace_all(&mut self, regions: Vec<(Region, OwnedFd)>) -> Result<(), MemoryError> {
        let mut checked: Vec<(u64, u64)> = Vec::with_capacity(regions.len());
        for (region, _) in &regions {
            check_overlap(region, checked.iter().copied())?;
            checked.push((region.guest_address, region.size));
        }
        let mut mapped = Vec::with_capacity(regions.len());
        for (region, fd) in regions {
            mapped.push(map_region(&region, fd, &self.log)?);
        }
        mapped.sort_by_key(|r| r.start_addr());
        let next = if mapped.is_empty() {
            LoggedMemory::new()
        } else {
            LoggedMemory::from_regions(mapped)?
        };
        let guard = self.atomic.lock().unwrap_or_else(PoisonError::into_inner);
        guard.replace(next);
        Ok(())
    }

    /// Drops every region (RESET_OWNER, disconnect) and the dirty log's area; snapshots keep
    /// their regions until dropped.
    pub fn clear(&mut self) {
        let guard = self.atomic.lock().unwrap_or_else(PoisonError::into_inner);
        guard.replace(LoggedMemory::new());
        self.log.clear();
    }
}

/// Checks `region`'s own fields and that it overlaps none of `existing` (`(start, len)` pairs).
fn check_overlap(
    region: &Region,
    existing: impl Iterator<Item = (u64, u64)>,
) -> Result<(), MemoryError> {
    let (start, end) = guest_range(region)?;
    for (existing_address, existing_size) in existing {
        let existing_end = existing_address.saturating_add(existing_size);
        if start < existing_end && existing_address < end {
            return Err(MemoryError::Overlap {
                guest_address: region.guest_address,
                size: region.size,
                existing_address,
                existing_size,
            });
        }
    }
    Ok(())
}

/// The half-open guest range `[start, end)` of a region, if its size and address are sane.
fn guest_range(region: &Region) -> Result<(u64, u64), MemoryError> {
    let (guest_address, size) = (region.guest_address, region.size);
    if size == 0 {
        return Err(MemoryError::ZeroSize { guest_address });
    }
    let end = guest_address
        .checked_add(size)
        .ok_or(MemoryError::AddressOverflow { guest_address, size })?;
    Ok((guest_address, end))
}

/// Validates the file side of `region` and maps it.
fn map_region(
    region: &Region,
    fd: OwnedFd,
    log: &Arc<DirtyLog>,
) -> Result<GuestRegionMmap<DirtyBitmap>, MemoryError> {
    let (guest_address, size, mmap_offset) =
        (region.guest_address, region.size, region.mmap_offset);
    guest_range(region)?;
    let len = usize::try_from(size).map_err(|_| MemoryError::TooLarge { size })?;
    let file_end = mmap_offset
        .checked_add(size)
        .filter(|end| i64::try_from(*end).is_ok())
        .ok_or(MemoryError::OffsetOverflow { mmap_offset, size })?;
    let page_size = rustix::param::page_size() as u64;
    if mmap_offset % page_size != 0 {
        return Err(MemoryError::UnalignedOffset { mmap_offset, page_size });
    }
    let stat = fstat(&fd).map_err(|errno| MemoryError::Stat(errno.into()))?;
    let page = mapping_page(&fd);
    if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile {
        let file_size = u64::try_from(stat.st_size).unwrap_or(0);
        if file_end > file_size {
            return Err(MemoryError::PastEndOfFile { mmap_offset, size, file_size });
        }
    }
    let file = FileOffset::new(File::from(fd), mmap_offset);
    let mapping =
        MmapRegionBuilder::new_with_bitmap(len, DirtyBitmap::new(log.clone(), guest_address))
            .with_file_offset(file)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_NORESERVE | libc::MAP_SHARED)
            .build()
            .map_err(|source| MemoryError::Map { guest_address, source })?;
    let guarded = bus_guard::guard(mapping.as_ptr(), mapping.size(), page)
        .map_err(|bus_guard::GuardsTaken| MemoryError::Unguarded { guest_address })?;
    if let Some(guarded) = guarded {
        mapping.bitmap().hold(guarded);
    }
    // `guest_range` checked that the region does not wrap, the only reason `new` refuses.
    GuestRegionMmap::new(mapping, GuestAddress(guest_address))
        .ok_or(MemoryError::AddressOverflow { guest_address, size })
}

/// The size of the pages a mapping of `fd` is made of: a hugetlbfs file's huge pages, or the
/// base page size.
fn mapping_page(fd: &OwnedFd) -> usize {
    let base = rustix::param::page_size();
    match rustix::fs::fstatfs(fd) {
        Ok(fs) if fs.f_type as u64 == HUGETLBFS_MAGIC => {
            usize::try_from(fs.f_bsize).ok().filter(|p| p.is_power_of_two()).unwrap_or(base)
        }
        _ => base,
    }
}

/// `statfs(2)`'s file system type of hugetlbfs.
const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;

/// Why an area the front-end shares (a dirty log, an inflight area) cannot be mapped.
#[derive(Debug)]
pub(crate) enum AreaError {
    /// The area does not lie within its file (touching it would fault).
    BeyondFile {
        /// Where the area ends in the file.
        end: u64,
        /// The file's size.
        file: u64,
    },
    /// `mmap` refused it (or its size does not fit this address space).
    Map(MmapRegionError),
    /// Every guard of the process is taken ([`bus_guard::SLOTS`]).
    Unguarded,
}

/// Maps `size` bytes of `fd` from `offset`, shared with the front-end, after checking that
/// they lie within the file (a shared mapping past the end of a file maps, then faults when
/// touched).
pub(crate) fn map_area(
    fd: OwnedFd,
    size: u64,
    offset: u64,
) -> Result<(MmapRegion, Option<Guarded>), AreaError> {
    let len = usize::try_from(size).map_err(|_| AreaError::Map(MmapRegionError::InvalidPointer))?;
    let file = fstat(&fd).map_or(0, |st| u64::try_from(st.st_size).unwrap_or(0));
    let end = offset.saturating_add(size);
    if end > file {
        return Err(AreaError::BeyondFile { end, file });
    }
    let page = mapping_page(&fd);
    let map = MmapRegion::from_file(FileOffset::new(File::from(fd), offset), len)
        .map_err(AreaError::Map)?;
    let guarded = bus_guard::guard(map.as_ptr(), map.size(), page)
        .map_err(|bus_guard::GuardsTaken| AreaError::Unguarded)?;
    Ok((map, guarded))
}
