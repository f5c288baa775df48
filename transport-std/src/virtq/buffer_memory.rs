//! [`BufferMemory`]: where a chain's buffer accesses go — the walk's range check of each buffer,
//! the bytes [`Reader`](super::Reader) and [`Writer`](super::Writer) copy, the host memory a
//! device hands to `preadv`/`pwritev` and the dirty marking after it — straight to guest memory,
//! each access finding its region, or through a [`RingView`] that found the regions once.
//!
//! Through `vm-memory` a 4 KiB READ's buffers took eight region lookups, each behind a few
//! layers: three range checks in the walk, two header reads, the reply header, the data's host
//! slice and its dirty marking. A turn's [`RingView`] maps up to [`MAX_REGIONS`] regions of
//! plain guest memory once, so each buffer access in the turn is a bounds check against them.
//! Copies follow `vm-memory`'s rule (up to eight bytes with volatile loads or stores, more with
//! a plain copy of the guest's bytes, which the guest may change meanwhile); writes mark the
//! dirty log. A buffer across two regions, memory behind an IOMMU, or a region past the first
//! [`MAX_REGIONS`] takes the general path. Either way every access is bounds checked.
//!
//! This module decides nothing about what it reads or writes, and holds no state beyond a
//! snapshot's borrow: a view lives for one turn and never outlives the memory it came from.

use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryRegion, Permissions};

use super::access;
use super::error::QueueError;
use super::io::HostSlice;
use super::ring_memory::{read_volatile_into, write_volatile_from, RingView, Window};

/// Regions a [`RingView`] maps for buffers; guests have one to three.
pub const MAX_REGIONS: usize = 4;

/// Guest memory as chain walks, readers and writers reach buffers; see the module docs.
pub trait BufferMemory {
    /// The guest memory behind it, for what takes the general path.
    type Memory: GuestMemory + ?Sized;

    /// The guest memory behind it.
    fn memory(&self) -> &Self::Memory;

    /// Whether the `len` bytes at `addr` (a range the caller checked does not wrap) lie in
    /// guest memory that allows `access`.
    fn holds(&self, addr: GuestAddress, len: u64, access: Permissions) -> bool;

    /// Fills `buf` from `addr`.
    fn read_buffer(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<(), QueueError>;

    /// Writes `buf` at `addr`, marking it in the dirty log.
    fn write_buffer(&self, addr: GuestAddress, buf: &[u8]) -> Result<(), QueueError>;

    /// The host memory of the `len` bytes at `addr` when they lie in one region of plain
    /// memory (`None`: ask [`BufferMemory::memory`] the general way).
    fn host_slice(&self, addr: GuestAddress, len: usize) -> Option<HostSlice>;

    /// Marks the `len` bytes at `addr` dirty when they lie in one region of plain memory
    /// (`false`: ask the general way).
    fn mark_dirty(&self, addr: GuestAddress, len: usize) -> bool;
}

impl<M: GuestMemory + ?Sized> BufferMemory for M {
    type Memory = M;

    fn memory(&self) -> &M {
        self
    }

    fn holds(&self, addr: GuestAddress, len: u64, access: Permissions) -> bool {
        // One region of plain memory holding it all answers at once; anything else asks
        // `vm-memory` the general question.
        access::in_one_region(self, addr, len)
            || usize::try_from(len).is_ok_and(|len| self.check_range(addr, len, access))
    }

    fn read_buffer(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<(), QueueError> {
        access::read_bytes(self, addr, buf)
    }

    fn write_buffer(&self, addr: GuestAddress, buf: &[u8]) -> Result<(), QueueError> {
        access::write_bytes(self, addr, buf)
    }

    fn host_slice(&self, addr: GuestAddress, len: usize) -> Option<HostSlice> {
        access::slice(self, addr, len)
            .map(|slice| HostSlice { ptr: slice.ptr_guard_mut().as_ptr(), len: slice.len() })
    }

    fn mark_dirty(&self, addr: GuestAddress, len: usize) -> bool {
        access::slice(self, addr, len).map(|slice| slice.bitmap().mark_dirty(0, len)).is_some()
    }
}

/// The first [`MAX_REGIONS`] regions of plain guest memory in `mem`, mapped for a turn.
pub(super) fn map_regions<'m, M: GuestMemory + ?Sized>(
    mem: &'m M,
) -> arrayvec::ArrayVec<Window<'m, M>, MAX_REGIONS> {
    let mut windows = arrayvec::ArrayVec::new();
    let Some(physical) = mem.physical_memory() else { return windows };
    for region in physical.iter().take(MAX_REGIONS) {
        let start = region.start_addr();
        let Ok(len) = usize::try_from(region.len()) else { continue };
        if let Ok(slice) = physical.get_slice(start, len) {
            windows.push(Window { start: start.0, host: slice.ptr_guard_mut(), slice });
        }
    }
    windows
}

impl<M: GuestMemory + ?Sized> BufferMemory for RingView<'_, M> {
    type Memory = M;

    fn memory(&self) -> &M {
        self.mem
    }

    #[inline]
    fn holds(&self, addr: GuestAddress, len: u64, access: Permissions) -> bool {
        let fits = usize::try_from(len).is_ok_and(|len| self.region(addr, len).is_some());
        fits || self.mem.holds(addr, len, access)
    }

    #[inline]
    fn read_buffer(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<(), QueueError> {
        match self.region(addr, buf.len()) {
            // SAFETY: `buf.len()` bytes at `host` lie in the region's mapping (`region`), which
            // stays mapped while the snapshot `self` borrows lives; `buf` is ours, so the two
            // cannot overlap.
            Some((_, host, _)) => unsafe { copy_from_guest(host, buf) },
            None => return access::read_bytes(self.mem, addr, buf),
        }
        Ok(())
    }

    #[inline]
    fn write_buffer(&self, addr: GuestAddress, buf: &[u8]) -> Result<(), QueueError> {
        match self.region(addr, buf.len()) {
            Some((window, host, at)) => {
                // SAFETY: as in `read_buffer`.
                unsafe { copy_to_guest(host, buf) };
                window.slice.bitmap().mark_dirty(at, buf.len());
            }
            None => return access::write_bytes(self.mem, addr, buf),
        }
        Ok(())
    }

    #[inline]
    fn host_slice(&self, addr: GuestAddress, len: usize) -> Option<HostSlice> {
        self.region(addr, len).map(|(_, ptr, _)| HostSlice { ptr, len })
    }

    #[inline]
    fn mark_dirty(&self, addr: GuestAddress, len: usize) -> bool {
        match self.region(addr, len) {
            Some((window, _, at)) => {
                window.slice.bitmap().mark_dirty(at, len);
                true
            }
            None => false,
        }
    }
}

/// Copies `buf.len()` bytes of guest memory at `src` into `buf`, as `vm-memory` copies: up to
/// eight bytes with volatile loads, more with a plain copy.
///
/// # Safety
/// `src..src + buf.len()` must be mapped and readable for the whole call, outside `buf`.
#[inline]
unsafe fn copy_from_guest(src: *const u8, buf: &mut [u8]) {
    if buf.len() <= 8 {
        // SAFETY: the caller's range.
        unsafe { read_volatile_into(src, buf) }
    } else {
        // SAFETY: the caller's range, which does not overlap `buf`.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) }
    }
}

/// Copies `buf` to guest memory at `dst`, as `vm-memory` copies.
///
/// # Safety
/// `dst..dst + buf.len()` must be mapped and writable for the whole call, outside `buf`.
#[inline]
unsafe fn copy_to_guest(dst: *mut u8, buf: &[u8]) {
    if buf.len() <= 8 {
        // SAFETY: the caller's range.
        unsafe { write_volatile_from(dst, buf) }
    } else {
        // SAFETY: the caller's range, which does not overlap `buf`.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), dst, buf.len()) }
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::bitmap::AtomicBitmap;
    use vm_memory::{Bytes, GuestMemoryMmap};

    use super::*;

    /// Two adjacent regions of four pages each, with dirty bitmaps.
    fn logged() -> GuestMemoryMmap<AtomicBitmap> {
        let ranges = [(GuestAddress(0), 0x4000), (GuestAddress(0x4000), 0x4000)];
        GuestMemoryMmap::from_ranges(&ranges).expect("guest memory")
    }

    fn dirty(mem: &GuestMemoryMmap<AtomicBitmap>, addr: u64) -> bool {
        let (region, at) = mem.to_region_addr(GuestAddress(addr)).expect("in memory");
        region.bitmap().dirty_at(at.0 as usize)
    }

    fn view(mem: &GuestMemoryMmap<AtomicBitmap>) -> RingView<'_, GuestMemoryMmap<AtomicBitmap>> {
        RingView::new(mem, [(0, 0x100), (0x100, 0x10), (0x200, 0x10)])
    }

    #[test]
    fn buffer_copies_of_any_length_and_alignment_match_vm_memory() {
        let mem = logged();
        let view = view(&mem);
        let pattern: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(29).wrapping_add(3)).collect();
        // Inside the first region, and across the boundary (the general path).
        for base in [0x1000u64, 0x4000 - 16] {
            for at in base..base + 9 {
                for len in [1, 2, 7, 8, 9, 16, 17, 33] {
                    mem.write_slice(&[0u8; 64], GuestAddress(base)).expect("clear");
                    view.write_buffer(GuestAddress(at), &pattern[..len]).expect("write");
                    let mut back = [0u8; 64];
                    mem.read_slice(&mut back, GuestAddress(base)).expect("vm-memory read");
                    let off = (at - base) as usize;
                    assert!(back[..off].iter().all(|b| *b == 0), "nothing before {at:#x}");
                    assert_eq!(&back[off..off + len], &pattern[..len], "{len} at {at:#x}");
                    assert!(back[off + len..].iter().all(|b| *b == 0), "nothing after");
                    let mut ours = [0u8; 33];
                    view.read_buffer(GuestAddress(at), &mut ours[..len]).expect("read");
                    assert_eq!(&ours[..len], &pattern[..len], "read of {len} at {at:#x}");
                }
            }
        }
    }

    #[test]
    fn writes_and_marks_through_a_view_reach_the_dirty_log() {
        let mem = logged();
        let view = view(&mem);
        view.write_buffer(GuestAddress(0x2010), &[1; 24]).expect("write");
        assert!(dirty(&mem, 0x2000) && !dirty(&mem, 0x1000) && !dirty(&mem, 0x3000));
        assert!(view.mark_dirty(GuestAddress(0x5ff0), 0x20), "one region: marked here");
        assert!(dirty(&mem, 0x5000) && dirty(&mem, 0x6000) && !dirty(&mem, 0x7000));
        assert!(!view.mark_dirty(GuestAddress(0x3ff0), 0x20), "across regions: the general way");
        view.write_buffer(GuestAddress(0x3ffc), &[2; 8]).expect("a write across regions");
        assert!(dirty(&mem, 0x3000) && dirty(&mem, 0x4000));
    }

    #[test]
    fn host_slices_and_range_checks_name_only_mapped_memory() {
        let mem = logged();
        let view = view(&mem);
        let host = view.host_slice(GuestAddress(0x4100), 0x200).expect("in one region");
        let want = mem.get_host_address(GuestAddress(0x4100)).expect("mapped");
        assert_eq!((host.ptr, host.len), (want, 0x200));
        assert_eq!(view.host_slice(GuestAddress(0x3f00), 0x200), None, "across regions");
        assert_eq!(view.host_slice(GuestAddress(0x7f00), 0x200), None, "past the end");
        assert!(view.holds(GuestAddress(0x100), 0x3f00, Permissions::Read));
        assert!(view.holds(GuestAddress(0x3f00), 0x200, Permissions::Write), "across regions");
        assert!(!view.holds(GuestAddress(0x7f00), 0x200, Permissions::Read));
        assert!(!view.holds(GuestAddress(u64::MAX - 4), 4, Permissions::Read));
        let mut buf = [0u8; 16];
        assert!(matches!(
            view.read_buffer(GuestAddress(0x7ff8), &mut buf),
            Err(QueueError::Memory { addr: 0x7ff8, len: 16 })
        ));
        assert!(view.write_buffer(GuestAddress(0x9000), &buf).is_err());
    }
}
