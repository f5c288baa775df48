//! [`RingMemory`]: where a queue's ring accesses go — straight to guest memory, each access
//! finding its region, or through a [`RingView`] that found the rings' regions once.
//!
//! A request costs a split ring a dozen small accesses of its three rings (indices, the
//! descriptors, the used entry, the event fields), and finding the region of each one was the
//! largest single cost of a 4 KiB READ's queue path. The rings do not move while a queue runs
//! and guest memory does not change under a snapshot, so a worker that takes a snapshot for a
//! turn resolves each ring to the host memory of one region ([`RingView::new`]), and every
//! access in the turn is a bounds-checked offset into it: an atomic load or store for an index,
//! volatile copies for descriptors and used entries, as `vm-memory` makes them but without its
//! layers. A ring that does not lie in one region of plain memory (across two regions, behind
//! an IOMMU) keeps the general path. Either way every access is bounds checked, and writes mark
//! the dirty log.
//!
//! This module decides nothing about what it reads or writes, and holds no state beyond a
//! snapshot's borrow: a view lives for one turn and never outlives the memory it came from.

use std::sync::atomic::{AtomicU16, Ordering};

use vm_memory::bitmap::{Bitmap, MS};
use vm_memory::volatile_memory::PtrGuardMut;
use vm_memory::{GuestAddress, GuestMemory, VolatileSlice};

use arrayvec::ArrayVec;

use super::access;
use super::buffer_memory::{map_regions, BufferMemory, MAX_REGIONS};
use super::error::QueueError;
use super::io::HostSlice;

/// Guest memory as a queue's ring code reads and writes it; see the module docs. Buffers, and
/// the guest memory behind it, are reached as [`BufferMemory`].
pub trait RingMemory: BufferMemory {
    /// A little-endian `u16` at `addr`, loaded atomically with `order`.
    fn load_u16(&self, addr: GuestAddress, order: Ordering) -> Result<u16, QueueError>;

    /// Stores `val` as a little-endian `u16` at `addr`, atomically with `order`.
    fn store_u16(&self, addr: GuestAddress, val: u16, order: Ordering) -> Result<(), QueueError>;

    /// Fills `buf` from `addr`.
    fn read_bytes(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<(), QueueError>;

    /// Writes `buf` at `addr`.
    fn write_bytes(&self, addr: GuestAddress, buf: &[u8]) -> Result<(), QueueError>;

    /// The host memory of ring `index` (in the order the view was made with: a split ring's
    /// descriptor table, available ring, used ring) when it lies in one region of plain memory;
    /// `None` without a view.
    fn ring_host(&self, index: usize) -> Option<HostSlice> {
        let _ = index;
        None
    }
}

impl<M: GuestMemory + ?Sized> RingMemory for M {
    fn load_u16(&self, addr: GuestAddress, order: Ordering) -> Result<u16, QueueError> {
        access::load_u16(self, addr, order)
    }

    fn store_u16(&self, addr: GuestAddress, val: u16, order: Ordering) -> Result<(), QueueError> {
        access::store_u16(self, addr, val, order)
    }

    fn read_bytes(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<(), QueueError> {
        access::read_bytes(self, addr, buf)
    }

    fn write_bytes(&self, addr: GuestAddress, buf: &[u8]) -> Result<(), QueueError> {
        access::write_bytes(self, addr, buf)
    }
}

type Slice<'m, M> = VolatileSlice<'m, MS<'m, <M as GuestMemory>::PhysicalMemory>>;

/// A ring, or a region of guest memory, resolved to the host memory that holds it.
pub(super) struct Window<'m, M: GuestMemory + ?Sized> {
    /// Guest address of its first byte.
    pub(super) start: u64,
    /// Its host memory (held: with some mappings it is only valid while held).
    pub(super) host: PtrGuardMut,
    /// The same memory as `vm-memory` hands it out, for its dirty bitmap.
    pub(super) slice: Slice<'m, M>,
}

impl<M: GuestMemory + ?Sized> Window<'_, M> {
    /// The host address of the `len` bytes at `addr` and their offset in the window, when they
    /// lie in it.
    #[inline]
    fn host(&self, addr: GuestAddress, len: usize) -> Option<(*mut u8, usize)> {
        let offset = addr.0.wrapping_sub(self.start);
        let room = self.host.len() as u64;
        // `offset <= room` keeps the subtraction from wrapping and the addition in the mapping.
        (offset <= room && len as u64 <= room - offset)
            .then(|| (self.host.as_ptr().wrapping_add(offset as usize), offset as usize))
    }
}

/// The order [`RingView`] looks at the rings for an index load, for a store, and for a read
/// of entries (by position in the view: descriptors, available, used).
const LOADS: [usize; 3] = [1, 2, 0];
const STORES: [usize; 3] = [2, 1, 0];
const READS: [usize; 3] = [0, 1, 2];

/// A queue's rings resolved in one snapshot of guest memory; see the module docs.
pub struct RingView<'m, M: GuestMemory + ?Sized> {
    pub(super) mem: &'m M,
    windows: [Option<Window<'m, M>>; 3],
    /// Regions of guest memory, for buffers ([`BufferMemory`]).
    regions: ArrayVec<Window<'m, M>, MAX_REGIONS>,
}

impl<'m, M: GuestMemory + ?Sized> RingView<'m, M> {
    /// The rings at `rings` (guest address and length of each) in `mem`, and its first
    /// regions for buffers. A ring or buffer that does not lie in one region of plain memory is
    /// reached the general way.
    pub fn new(mem: &'m M, rings: [(u64, u64); 3]) -> Self {
        let window = |(start, len): (u64, u64)| {
            let len = usize::try_from(len).ok()?;
            let slice = access::slice(mem, GuestAddress(start), len)?;
            Some(Window { start, host: slice.ptr_guard_mut(), slice })
        };
        Self { mem, windows: rings.map(window), regions: map_regions(mem) }
    }

    /// The ring holding `len` bytes at `addr`, their host address and their offset in it, the
    /// rings looked at in `order` (the one an access most likely goes to first: a split ring's
    /// device loads from the available ring, stores to the used ring and reads descriptors).
    #[inline]
    fn find(
        &self,
        order: [usize; 3],
        addr: GuestAddress,
        len: usize,
    ) -> Option<(&Window<'m, M>, *mut u8, usize)> {
        order.into_iter().find_map(|i| {
            let w = self.windows[i].as_ref()?;
            w.host(addr, len).map(|(p, at)| (w, p, at))
        })
    }

    /// The region holding `len` bytes at `addr`, their host address and their offset in it.
    #[inline]
    pub(super) fn region(
        &self,
        addr: GuestAddress,
        len: usize,
    ) -> Option<(&Window<'m, M>, *mut u8, usize)> {
        self.regions.iter().find_map(|w| w.host(addr, len).map(|(p, at)| (w, p, at)))
    }
}

impl<M: GuestMemory + ?Sized> RingMemory for RingView<'_, M> {
    #[inline]
    fn ring_host(&self, index: usize) -> Option<HostSlice> {
        let window = self.windows.get(index)?.as_ref()?;
        Some(HostSlice { ptr: window.host.as_ptr(), len: window.host.len() })
    }

    #[inline]
    fn load_u16(&self, addr: GuestAddress, order: Ordering) -> Result<u16, QueueError> {
        match self.find(LOADS, addr, 2) {
            Some((_, host, _)) if host.align_offset(2) == 0 => {
                // SAFETY: the two bytes lie in the ring's mapping (`find`), which stays mapped
                // while the snapshot `self` borrows lives, and are aligned; the driver writes
                // them concurrently, so they are only accessed atomically.
                let word = unsafe { AtomicU16::from_ptr(host.cast::<u16>()) };
                Ok(u16::from_le(word.load(order)))
            }
            _ => access::load_u16(self.mem, addr, order),
        }
    }

    #[inline]
    fn store_u16(&self, addr: GuestAddress, val: u16, order: Ordering) -> Result<(), QueueError> {
        match self.find(STORES, addr, 2) {
            Some((window, host, at)) if host.align_offset(2) == 0 => {
                // SAFETY: as in `load_u16`.
                let word = unsafe { AtomicU16::from_ptr(host.cast::<u16>()) };
                word.store(val.to_le(), order);
                window.slice.bitmap().mark_dirty(at, 2);
                Ok(())
            }
            _ => access::store_u16(self.mem, addr, val, order),
        }
    }

    /// Rings first, then the regions mapped for buffers: an indirect descriptor table lies in
    /// a buffer the driver allocated, not in a ring.
    #[inline]
    fn read_bytes(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<(), QueueError> {
        let found = self.find(READS, addr, buf.len()).or_else(|| self.region(addr, buf.len()));
        match found {
            Some((_, host, _)) => {
                // SAFETY: `buf.len()` bytes at `host` lie in a ring's or a region's mapping
                // (`find`, `region`), which stays mapped while the snapshot `self` borrows
                // lives.
                unsafe { read_volatile_into(host, buf) };
                Ok(())
            }
            None => access::read_bytes(self.mem, addr, buf),
        }
    }

    #[inline]
    fn write_bytes(&self, addr: GuestAddress, buf: &[u8]) -> Result<(), QueueError> {
        match self.find(STORES, addr, buf.len()) {
            Some((window, host, at)) => {
                // SAFETY: as in `read_bytes`.
                unsafe { write_volatile_from(host, buf) };
                window.slice.bitmap().mark_dirty(at, buf.len());
                Ok(())
            }
            None => access::write_bytes(self.mem, addr, buf),
        }
    }
}

/// The sixteen bytes of a descriptor at `src` as two words, each read once (the driver may
/// write them meanwhile: whatever they hold is what the caller checks).
///
/// # Safety
/// `src..src + 16` must be mapped and readable for the whole call, and `src` aligned to eight.
#[inline(always)]
pub(super) unsafe fn read_descriptor_words(src: *const u64) -> [u64; 2] {
    // SAFETY: the caller vouches for the sixteen bytes and the alignment.
    unsafe { [src.read_volatile(), src.add(1).read_volatile()] }
}

/// Copies `buf.len()` bytes from guest memory at `src` into `buf`, eight or four bytes a load
/// where `src` is aligned for it, as `vm-memory`'s volatile copies do (the driver may write the
/// same bytes meanwhile: each is read once, whatever it holds).
///
/// # Safety
/// `src..src + buf.len()` must be mapped and readable for the whole call.
pub(super) unsafe fn read_volatile_into(src: *const u8, buf: &mut [u8]) {
    let (len, dst) = (buf.len(), buf.as_mut_ptr());
    let mut done = 0;
    if (src as usize) % 8 == 0 {
        while len - done >= 8 {
            // SAFETY: the eight bytes lie in the range the caller vouches for, aligned; `dst`
            // has room for them (`done + 8 <= len`).
            unsafe {
                let word = src.add(done).cast::<u64>().read_volatile();
                dst.add(done).cast::<u64>().write_unaligned(word);
            }
            done += 8;
        }
    }
    if (src as usize + done) % 4 == 0 {
        while len - done >= 4 {
            // SAFETY: as above, four bytes.
            unsafe {
                let word = src.add(done).cast::<u32>().read_volatile();
                dst.add(done).cast::<u32>().write_unaligned(word);
            }
            done += 4;
        }
    }
    while done < len {
        // SAFETY: the byte lies in the range the caller vouches for, and in `buf`.
        unsafe { *dst.add(done) = src.add(done).read_volatile() };
        done += 1;
    }
}

/// Copies `buf` to guest memory at `dst`, eight or four bytes a store where `dst` is aligned
/// for it.
///
/// # Safety
/// `dst..dst + buf.len()` must be mapped and writable for the whole call.
pub(super) unsafe fn write_volatile_from(dst: *mut u8, buf: &[u8]) {
    let (len, src) = (buf.len(), buf.as_ptr());
    let mut done = 0;
    if (dst as usize) % 8 == 0 {
        while len - done >= 8 {
            // SAFETY: the eight bytes lie in the range the caller vouches for, aligned; `buf`
            // holds them (`done + 8 <= len`).
            unsafe {
                let word = src.add(done).cast::<u64>().read_unaligned();
                dst.add(done).cast::<u64>().write_volatile(word);
            }
            done += 8;
        }
    }
    if (dst as usize + done) % 4 == 0 {
        while len - done >= 4 {
            // SAFETY: as above, four bytes.
            unsafe {
                let word = src.add(done).cast::<u32>().read_unaligned();
                dst.add(done).cast::<u32>().write_volatile(word);
            }
            done += 4;
        }
    }
    while done < len {
        // SAFETY: the byte lies in the range the caller vouches for, and in `buf`.
        unsafe { dst.add(done).write_volatile(*src.add(done)) };
        done += 1;
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::Bytes;

    use super::super::access::tests::two_regions;
    use super::*;

    #[test]
    fn a_view_reads_and_writes_what_guest_memory_holds_in_and_across_regions() {
        let mem = two_regions();
        // A ring in the first region, one across the boundary, one in the second.
        let view = RingView::new(&mem, [(0x100, 0x40), (0xff0, 0x20), (0x1800, 0x40)]);
        assert!(view.windows[0].is_some() && view.windows[2].is_some());
        assert!(view.windows[1].is_none(), "a ring across two regions keeps the general path");
        let bytes: Vec<u8> = (1..=16).collect();
        for at in [0x100, 0x130, 0xff8, 0x1830, 0x500] {
            view.write_bytes(GuestAddress(at), &bytes).expect("write");
            let mut back = [0u8; 16];
            mem.read_slice(&mut back, GuestAddress(at)).expect("vm-memory read");
            assert_eq!(back.as_slice(), bytes.as_slice(), "at {at:#x}");
            let mut ours = [0u8; 16];
            view.read_bytes(GuestAddress(at), &mut ours).expect("read");
            assert_eq!(ours, back);
            view.store_u16(GuestAddress(at + 2), 0xbeef, Ordering::Release).expect("store");
            assert_eq!(
                mem.read_obj::<u16>(GuestAddress(at + 2)).expect("read"),
                0xbeef_u16.to_le()
            );
            assert_eq!(
                view.load_u16(GuestAddress(at + 2), Ordering::Acquire).expect("load"),
                0xbeef
            );
        }
    }

    #[test]
    fn an_access_running_off_a_ring_or_out_of_memory_is_an_error_or_the_general_path() {
        let mem = two_regions();
        let view = RingView::new(&mem, [(0x100, 0x10), (0x1ff0, 0x10), (0x3000, 0x10)]);
        assert!(view.windows[2].is_none(), "a ring outside guest memory has no window");
        // Past the end of the first ring but inside memory: the general path, which works.
        view.write_bytes(GuestAddress(0x108), &[7; 16]).expect("write past the ring");
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x117)).expect("read"), 7);
        // Past the end of guest memory: an error naming the access.
        let mut buf = [0u8; 16];
        assert!(matches!(
            view.read_bytes(GuestAddress(0x1ff8), &mut buf),
            Err(QueueError::Memory { addr: 0x1ff8, len: 16 })
        ));
        assert!(view.load_u16(GuestAddress(0x3000), Ordering::Relaxed).is_err());
        assert!(view.store_u16(GuestAddress(u64::MAX), 1, Ordering::Relaxed).is_err());
    }

    #[test]
    fn copies_of_any_length_and_alignment_in_a_ring_match_vm_memory() {
        let mem = two_regions();
        let view = RingView::new(&mem, [(0x100, 0x80), (0x400, 0x10), (0x800, 0x10)]);
        let pattern: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37).wrapping_add(1)).collect();
        for at in 0x100..0x110u64 {
            for len in [1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 17, 31, 32, 33] {
                mem.write_slice(&[0u8; 64], GuestAddress(0x100)).expect("clear");
                view.write_bytes(GuestAddress(at), &pattern[..len]).expect("write");
                let mut back = [0u8; 64];
                mem.read_slice(&mut back[..len], GuestAddress(at)).expect("vm-memory read");
                assert_eq!(&back[..len], &pattern[..len], "write of {len} at {at:#x}");
                let mut before = [0u8; 1];
                mem.read_slice(&mut before, GuestAddress(at - 1)).expect("read");
                assert_eq!(before, [0], "nothing written before {at:#x}");
                let mut after = [0u8; 1];
                mem.read_slice(&mut after, GuestAddress(at + len as u64)).expect("read");
                assert_eq!(after, [0], "nothing written after {len} at {at:#x}");
                let mut ours = [0u8; 64];
                view.read_bytes(GuestAddress(at), &mut ours[..len]).expect("read");
                assert_eq!(&ours[..len], &pattern[..len], "read of {len} at {at:#x}");
            }
            // An index at an odd address is the general path's to refuse or read.
            let general = access::load_u16(&mem, GuestAddress(at), Ordering::Relaxed);
            assert_eq!(view.load_u16(GuestAddress(at), Ordering::Relaxed), general);
        }
    }
}
