//! Shared-memory regions for a VMM's back-ends (SHMEM): address space reserved for each region the
//! back-end announced with GET_SHMEM_CONFIG, and the [`BackendHandler`] that maps the back-end's
//! descriptors into it on BACKEND_SHMEM_MAP and takes them out on BACKEND_SHMEM_UNMAP.
//!
//! A region is reserved inaccessible (`PROT_NONE`) and a mapping replaces part of it with the
//! back-end's file, shared, readable and writable if the back-end asked. A mapping outside its
//! region, not page-aligned, of anything but a regular file or a memfd, or overlapping one
//! already there is refused, as is an unmap that is not a whole mapping (spec "Back-end message
//! types": BACKEND_SHMEM_MAP must fail on overlap; BACKEND_SHMEM_UNMAP names a mapping as it was
//! made). Removing a mapping makes its range inaccessible again. This module must not decide
//! when a request is answered: the state machine does.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use vhu_core::message::ShmemMapping;
use vhu_core::BackendRequest;

use super::channel::{BackendHandler, BackendResponse, NoMappings};

const EINVAL: u64 = libc::EINVAL as u64;
const EEXIST: u64 = libc::EEXIST as u64;
const ENOENT: u64 = libc::ENOENT as u64;

/// The page size mappings are aligned to.
pub(super) fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// One shared-memory region: reserved address space, and what is mapped in it.
#[derive(Debug)]
pub struct ShmemRegion {
    /// Start of the reservation (its address, so the region can be shared between threads).
    base: usize,
    size: usize,
    /// Mappings: offset → (length, writable).
    mappings: Mutex<BTreeMap<u64, (u64, bool)>>,
}

impl ShmemRegion {
    /// Reserves `size` bytes (a multiple of the page size), all inaccessible.
    pub fn new(size: u64) -> std::io::Result<Self> {
        let size =
            usize::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        if size == 0 || size as u64 % page_size() != 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a new anonymous mapping at an address the kernel chooses touches no existing
        // memory; the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { base: base as usize, size, mappings: Mutex::new(BTreeMap::new()) })
    }

    /// The region's first byte, for a VMM to map into its guest. Only mapped ranges
    /// ([`ShmemRegion::is_mapped`]) may be accessed, and a file mapping past the file's end
    /// faults as any `mmap` does.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base as *mut u8
    }

    /// Copies `buf.len()` bytes at `offset` out of one mapping; false if they are not all
    /// mapped. Bytes past the end of the mapped file fault (SIGBUS), as with any `mmap`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        let mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        if Self::within(&mappings, offset, buf.len() as u64, false).is_none() {
            return false;
        }
        // Shared with the back-end's file (and whoever else maps it): read as volatile memory.
        self.slice(offset, buf.len()).copy_to(buf);
        true
    }

    /// Copies `data` into one writable mapping at `offset`; false if it is not all mapped
    /// writable. Bytes past the end of the mapped file fault (SIGBUS), as with any `mmap`.
    pub fn write(&self, offset: u64, data: &[u8]) -> bool {
        let mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        if Self::within(&mappings, offset, data.len() as u64, true).is_none() {
            return false;
        }
        self.slice(offset, data.len()).copy_from(data);
        true
    }

    /// `len` bytes at `offset`, which lie inside one mapping (the caller checked, and holds the
    /// lock that keeps it there).
    fn slice(&self, offset: u64, len: usize) -> vm_memory::VolatileSlice<'_> {
        // SAFETY: the range lies inside a mapping of this region's reservation, which lives as
        // long as `self` and stays mapped while the caller holds the mappings' lock; it is
        // shared memory, which `VolatileSlice` only ever accesses with volatile copies.
        unsafe { vm_memory::VolatileSlice::new((self.base + offset as usize) as *mut u8, len) }
    }

    /// The mapping holding all of `len` bytes at `offset` (writable, if asked).
    fn within(
        mappings: &BTreeMap<u64, (u64, bool)>,
        offset: u64,
        len: u64,
        writable: bool,
    ) -> Option<u64> {
        let (at, (size, rw)) = mappings.range(..=offset).next_back()?;
        let end = offset.checked_add(len)?;
        (end <= at + size && (*rw || !writable)).then_some(*at)
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.size as u64
    }

    /// Whether the region is empty (never: a region has at least a page).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Whether `len` bytes at `offset` lie inside one mapping.
    pub fn is_mapped(&self, offset: u64, len: u64) -> bool {
        let mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        Self::within(&mappings, offset, len, false).is_some()
    }

    /// Mappings in place now.
    pub fn mapping_count(&self) -> usize {
        self.mappings.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The end of `len` bytes at `offset` if they are page-aligned, not empty and inside.
    fn range_end(&self, offset: u64, len: u64) -> Result<u64, u64> {
        let page = page_size();
        if len == 0 || offset % page != 0 || len % page != 0 {
            return Err(EINVAL);
        }
        offset.checked_add(len).filter(|end| *end <= self.size as u64).ok_or(EINVAL)
    }

    /// BACKEND_SHMEM_MAP: `fd` from `m.fd_offset` at `m.shm_offset`.
    fn map(&self, m: &ShmemMapping, fd: &OwnedFd) -> Result<(), u64> {
        let end = self.range_end(m.shm_offset, m.len)?;
        if m.fd_offset % page_size() != 0 {
            return Err(EINVAL);
        }
        let offset = libc::off_t::try_from(m.fd_offset).map_err(|_| EINVAL)?;
        // Only file contents go into the region (a regular file or a memfd): never a device
        // node the back-end opened, whose mapping could do more than show memory.
        let stat = rustix::fs::fstat(fd).map_err(|_| EINVAL)?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(EINVAL);
        }
        let mut mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        let overlaps =
            mappings.range(..end).next_back().is_some_and(|(at, (len, _))| at + len > m.shm_offset);
        if overlaps {
            return Err(EEXIST);
        }
        let prot = if m.writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: the range lies inside this region's reservation (checked above), which this
        // struct owns and nothing else uses; MAP_FIXED replaces only those reserved pages.
        let addr = unsafe {
            libc::mmap(
                (self.base + m.shm_offset as usize) as *mut libc::c_void,
                m.len as usize,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
            // A kernel may have removed the reserved pages before failing: reserve them again,
            // so nothing else is ever placed inside the region.
            self.reserve(m.shm_offset, m.len)?;
            return Err(errno as u64);
        }
        mappings.insert(m.shm_offset, (m.len, m.writable));
        Ok(())
    }

    /// BACKEND_SHMEM_UNMAP: the whole mapping at `m.shm_offset` of `m.len` bytes.
    fn unmap(&self, m: &ShmemMapping) -> Result<(), u64> {
        self.range_end(m.shm_offset, m.len)?;
        let mut mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        if mappings.get(&m.shm_offset).is_none_or(|(len, _)| *len != m.len) {
            return Err(ENOENT);
        }
        self.reserve(m.shm_offset, m.len)?;
        mappings.remove(&m.shm_offset);
        Ok(())
    }

    /// Makes `len` bytes at `offset` (inside the region) inaccessible again.
    fn reserve(&self, offset: u64, len: u64) -> Result<(), u64> {
        // SAFETY: the range lies inside this region's reservation (checked by the callers), and
        // replacing it with fresh inaccessible pages is what removing a mapping means.
        let addr = unsafe {
            libc::mmap(
                (self.base + offset as usize) as *mut libc::c_void,
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(libc::EIO as u64);
        }
        Ok(())
    }

    /// Removes every mapping (the back-end was reset, or went away).
    pub fn clear(&self) {
        let mut mappings = self.mappings.lock().unwrap_or_else(PoisonError::into_inner);
        for (at, (len, _)) in std::mem::take(&mut *mappings) {
            let _ = self.reserve(at, len);
        }
    }
}

impl Drop for ShmemRegion {
    fn drop(&mut self) {
        // SAFETY: the reservation is this struct's own, made in `new` with this size, and no
        // reference into it outlives the struct.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.size);
        }
    }
}

/// A [`BackendHandler`] that serves BACKEND_SHMEM_MAP and BACKEND_SHMEM_UNMAP with
/// [`ShmemRegion`]s (indexed by shmid) and answers every other request as [`NoMappings`] does.
#[derive(Clone, Debug, Default)]
pub struct ShmemHandler {
    regions: Vec<Option<Arc<ShmemRegion>>>,
}

impl ShmemHandler {
    /// Reserves a region for each non-zero size of `sizes` (GET_SHMEM_CONFIG's answer, by shmid),
    /// as large as the back-end asked. A VMM that does not trust its back-ends to ask for a
    /// sensible amount of its address space uses [`ShmemHandler::within`].
    pub fn new(sizes: &[u64]) -> std::io::Result<Self> {
        let regions = sizes
            .iter()
            .map(|size| (*size > 0).then(|| ShmemRegion::new(*size).map(Arc::new)).transpose())
            .collect::<std::io::Result<_>>()?;
        Ok(Self { regions })
    }

    /// [`ShmemHandler::new`], once the sizes add up to at most `most` bytes: the reservations
    /// cost no memory, but address space a back-end took by announcing tens of TiB would be
    /// missing when the VMM maps its own memory. More is refused (`InvalidInput`, naming the
    /// total) before anything is reserved.
    pub fn within(sizes: &[u64], most: u64) -> std::io::Result<Self> {
        let total = sizes.iter().try_fold(0u64, |sum, size| sum.checked_add(*size));
        match total {
            Some(total) if total <= most => Self::new(sizes),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "the back-end's shared-memory regions ({}) exceed the {most} bytes allowed",
                    total.map_or_else(
                        || "more than 2^64 bytes".to_string(),
                        |t| format!("{t} bytes")
                    )
                ),
            )),
        }
    }

    /// The region `shmid`, if the back-end announced one.
    pub fn region(&self, shmid: u8) -> Option<Arc<ShmemRegion>> {
        self.regions.get(usize::from(shmid)).cloned().flatten()
    }
}

impl BackendHandler for ShmemHandler {
    fn device_reset(&mut self) {
        for region in self.regions.iter().flatten() {
            region.clear();
        }
    }

    fn handle(&mut self, request: &BackendRequest, mut fds: Vec<OwnedFd>) -> BackendResponse {
        let done = match request {
            BackendRequest::ShmemMap { mapping, .. } => {
                match (self.region(mapping.shmid), fds.pop()) {
                    (Some(region), Some(fd)) => region.map(mapping, &fd),
                    _ => Err(EINVAL),
                }
            }
            BackendRequest::ShmemUnmap(mapping) => match self.region(mapping.shmid) {
                Some(region) => region.unmap(mapping),
                None => Err(EINVAL),
            },
            _ => return NoMappings.handle(request, fds),
        };
        BackendResponse::Done(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhu_core::FdToken;

    fn memfd(len: u64, fill: u8) -> OwnedFd {
        let fd =
            rustix::fs::memfd_create("shmem-test", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, len).expect("size");
        rustix::io::pwrite(&fd, &vec![fill; len as usize], 0).expect("fill");
        fd
    }

    fn map(handler: &mut ShmemHandler, shm_offset: u64, len: u64, fd: OwnedFd) -> BackendResponse {
        let mapping = ShmemMapping { shmid: 0, fd_offset: 0, shm_offset, len, writable: true };
        let request = BackendRequest::ShmemMap { mapping, fd: FdToken(0) };
        handler.handle(&request, vec![fd])
    }

    fn unmap(handler: &mut ShmemHandler, shm_offset: u64, len: u64) -> BackendResponse {
        let mapping = ShmemMapping { shmid: 0, fd_offset: 0, shm_offset, len, writable: false };
        handler.handle(&BackendRequest::ShmemUnmap(mapping), Vec::new())
    }

    fn status(response: BackendResponse) -> Result<(), u64> {
        match response {
            BackendResponse::Done(done) => done,
            other => panic!("a mapping is answered with a status, not {other:?}"),
        }
    }

    #[test]
    fn regions_past_the_vmms_limit_are_refused_before_any_reservation() {
        let page = page_size();
        let handler = ShmemHandler::within(&[2 * page, 0, 2 * page], 4 * page).expect("at it");
        assert!(handler.region(0).is_some() && handler.region(2).is_some());
        let refused = ShmemHandler::within(&[2 * page, 3 * page], 4 * page).expect_err("past it");
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
        assert!(refused.to_string().contains(&format!("{} bytes", 5 * page)), "{refused}");
        let overflow = ShmemHandler::within(&[u64::MAX, page], u64::MAX).expect_err("wraps");
        assert!(overflow.to_string().contains("2^64"), "{overflow}");
    }

    #[test]
    fn mappings_are_placed_refused_and_removed_as_the_spec_says() {
        let page = page_size();
        let mut handler = ShmemHandler::new(&[4 * page]).expect("reserved");
        let region = handler.region(0).expect("region 0");
        assert!(handler.region(1).is_none());
        assert!(!region.is_mapped(0, 1), "nothing is reachable before a mapping");

        assert_eq!(status(map(&mut handler, page, 2 * page, memfd(2 * page, 7))), Ok(()));
        let mut byte = [0u8; 1];
        assert!(region.read(2 * page, &mut byte));
        assert_eq!(byte, [7]);
        assert!(region.write(page, &[9]));
        assert!(!region.read(0, &mut byte), "outside every mapping");

        // Overlapping, outside, unaligned: refused, and the mapping there is untouched.
        assert_eq!(status(map(&mut handler, 0, 2 * page, memfd(2 * page, 1))), Err(EEXIST));
        assert_eq!(status(map(&mut handler, 3 * page, 2 * page, memfd(2 * page, 1))), Err(EINVAL));
        assert_eq!(status(map(&mut handler, 1, page, memfd(page, 1))), Err(EINVAL));
        let device = std::fs::File::open("/dev/zero").expect("/dev/zero").into();
        assert_eq!(status(map(&mut handler, 3 * page, page, device)), Err(EINVAL), "no devices");
        assert_eq!(status(unmap(&mut handler, page, page)), Err(ENOENT), "half a mapping");
        assert!(region.read(page, &mut byte));
        assert_eq!(byte, [9]);

        assert_eq!(status(unmap(&mut handler, page, 2 * page)), Ok(()));
        assert!(!region.is_mapped(page, 1));
        assert_eq!(region.mapping_count(), 0);
        // The range is free again.
        assert_eq!(status(map(&mut handler, 0, 4 * page, memfd(4 * page, 3))), Ok(()));
        // A device reset drops every mapping (spec "BACKEND_SHMEM_MAP").
        handler.device_reset();
        assert_eq!(region.mapping_count(), 0);
        assert!(!region.read(0, &mut byte));
    }
}
