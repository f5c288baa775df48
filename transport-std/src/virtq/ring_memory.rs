//! [`RingMemory`]: where a queue's ring accesses go — straight to guest memory, each access
//! finding its region, or through a [`RingView`] that found the rings' regions once.
//!
//! A request costs a split ring a dozen small accesses of its three rings (indices, the
//! descriptors, the used entry, the event fields), and finding the region of each one was the
//! largest single cost of a 4 KiB READ's queue path. The rings do not move while a queue runs
//! and guest memory does not change under a snapshot, so a worker that takes a snapshot for a
//! turn resolves each ring to one slice of one region ([`RingView::new`]) and every access in
//! the turn is a bounds-checked offset into it. A ring that does not lie in one region of
//! plain memory (across two regions, behind an IOMMU) keeps the general path. Either way every
//! access is bounds checked by `vm-memory` and writes mark the dirty log.
//!
//! This module decides nothing about what it reads or writes, and holds no state beyond a
//! snapshot's borrow: a view lives for one turn and never outlives the memory it came from.

use std::sync::atomic::Ordering;

use vm_memory::bitmap::MS;
use vm_memory::{Bytes, GuestAddress, GuestMemory, VolatileSlice};

use super::access;
use super::error::QueueError;

/// Guest memory as a queue's ring code reads and writes it; see the module docs.
pub trait RingMemory {
    /// The guest memory behind it, for accesses outside the rings (buffers, indirect tables).
    type Memory: GuestMemory + ?Sized;

    /// The guest memory behind it.
    fn memory(&self) -> &Self::Memory;

    /// A little-endian `u16` at `addr`, loaded atomically with `order`.
    fn load_u16(&self, addr: GuestAddress, order: Ordering) -> Result<u16, QueueError>;

    /// Stores `val` as a little-endian `u16` at `addr`, atomically with `order`.
    fn store_u16(&self, addr: GuestAddress, val: u16, order: Ordering) -> Result<(), QueueError>;

    /// Fills `buf` from `addr`.
    fn read_bytes(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<(), QueueError>;

    /// Writes `buf` at `addr`.
    fn write_bytes(&self, addr: GuestAddress, buf: &[u8]) -> Result<(), QueueError>;
}

impl<M: GuestMemory + ?Sized> RingMemory for M {
    type Memory = M;

    fn memory(&self) -> &M {
        self
    }

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

/// One ring resolved to the slice of the region that holds it.
struct Window<'m, M: GuestMemory + ?Sized> {
    start: u64,
    slice: Slice<'m, M>,
}

/// A queue's rings resolved in one snapshot of guest memory; see the module docs.
pub struct RingView<'m, M: GuestMemory + ?Sized> {
    mem: &'m M,
    windows: [Option<Window<'m, M>>; 3],
}

impl<'m, M: GuestMemory + ?Sized> RingView<'m, M> {
    /// The rings at `rings` (guest address and length of each) in `mem`. A ring that does not
    /// lie in one region of plain memory is reached the general way.
    pub fn new(mem: &'m M, rings: [(u64, u64); 3]) -> Self {
        let window = |(start, len): (u64, u64)| {
            let len = usize::try_from(len).ok()?;
            access::slice(mem, GuestAddress(start), len).map(|slice| Window { start, slice })
        };
        Self { mem, windows: rings.map(window) }
    }

    /// The slice holding `len` bytes at `addr`, and their offset in it, when a ring's does.
    fn find(&self, addr: GuestAddress, len: usize) -> Option<(&Slice<'m, M>, usize)> {
        self.windows.iter().flatten().find_map(|w| {
            let offset = usize::try_from(addr.0.checked_sub(w.start)?).ok()?;
            (offset.checked_add(len)? <= w.slice.len()).then_some((&w.slice, offset))
        })
    }
}

impl<M: GuestMemory + ?Sized> RingMemory for RingView<'_, M> {
    type Memory = M;

    fn memory(&self) -> &M {
        self.mem
    }

    fn load_u16(&self, addr: GuestAddress, order: Ordering) -> Result<u16, QueueError> {
        match self.find(addr, 2) {
            Some((slice, at)) => {
                slice.load::<u16>(at, order).map(u16::from_le).map_err(|_| access::mem_err(addr, 2))
            }
            None => access::load_u16(self.mem, addr, order),
        }
    }

    fn store_u16(&self, addr: GuestAddress, val: u16, order: Ordering) -> Result<(), QueueError> {
        match self.find(addr, 2) {
            Some((slice, at)) => {
                slice.store(val.to_le(), at, order).map_err(|_| access::mem_err(addr, 2))
            }
            None => access::store_u16(self.mem, addr, val, order),
        }
    }

    fn read_bytes(&self, addr: GuestAddress, buf: &mut [u8]) -> Result<(), QueueError> {
        match self.find(addr, buf.len()) {
            Some((slice, at)) => {
                slice.read_slice(buf, at).map_err(|_| access::mem_err(addr, buf.len() as u64))
            }
            None => access::read_bytes(self.mem, addr, buf),
        }
    }

    fn write_bytes(&self, addr: GuestAddress, buf: &[u8]) -> Result<(), QueueError> {
        match self.find(addr, buf.len()) {
            Some((slice, at)) => {
                slice.write_slice(buf, at).map_err(|_| access::mem_err(addr, buf.len() as u64))
            }
            None => access::write_bytes(self.mem, addr, buf),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
