//! The small guest-memory accesses of the ring and chain paths: ring indices, descriptors,
//! used entries, request and reply headers.
//!
//! `vm-memory`'s `Bytes` methods on a [`GuestMemory`] go through its I/O-virtual-address layer
//! (a slice iterator, an error adapter and a fold) even when the memory is plain guest-physical
//! memory, which costs a 4 KiB READ more user-space instructions than the rest of its queue
//! path. Here an access that lies in one region of plain memory takes one region lookup and a
//! bounds-checked slice; anything else (an access across regions, memory behind an IOMMU)
//! goes the general way. Both are bounds checked by `vm-memory`, and writes mark the dirty log
//! the same way. This module decides nothing about what it reads or writes.

use std::sync::atomic::Ordering;

use vm_memory::bitmap::MS;
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryRegion, VolatileSlice,
};

use super::error::QueueError;

/// The `len` bytes at `addr` as one slice, when they lie in one region of plain guest memory
/// (`None`: take the general path, which also reports what is wrong).
pub(crate) fn slice<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
    len: usize,
) -> Option<VolatileSlice<'_, MS<'_, M::PhysicalMemory>>> {
    mem.physical_memory().and_then(|p| p.get_slice(addr, len).ok())
}

/// Whether the `len` bytes at `addr` lie in one region of plain guest memory (`false`: ask the
/// general way, which also handles ranges across regions).
pub(crate) fn in_one_region<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
    len: u64,
) -> bool {
    let Some(region) = mem.physical_memory().and_then(|p| p.find_region(addr)) else {
        return false;
    };
    // `find_region` found the region holding `addr`, so neither subtraction fails.
    let room =
        addr.0.checked_sub(region.start_addr().0).and_then(|at| region.len().checked_sub(at));
    room.is_some_and(|room| len <= room)
}

/// The error for a failed access of `len` bytes at `addr`.
pub(crate) fn mem_err(addr: GuestAddress, len: u64) -> QueueError {
    QueueError::Memory { addr: addr.0, len }
}

/// Fills `buf` from guest memory at `addr`.
pub(crate) fn read_bytes<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
    buf: &mut [u8],
) -> Result<(), QueueError> {
    if let Some(slice) = slice(mem, addr, buf.len()) {
        // The slice is exactly `buf.len()` bytes long.
        slice.copy_to(buf);
        return Ok(());
    }
    mem.read_slice(buf, addr).map_err(|_| mem_err(addr, buf.len() as u64))
}

/// Writes `buf` to guest memory at `addr`.
pub(crate) fn write_bytes<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
    buf: &[u8],
) -> Result<(), QueueError> {
    if let Some(slice) = slice(mem, addr, buf.len()) {
        // The slice is exactly `buf.len()` bytes long; it marks what it writes dirty.
        slice.copy_from(buf);
        return Ok(());
    }
    mem.write_slice(buf, addr).map_err(|_| mem_err(addr, buf.len() as u64))
}

/// A little-endian `u16` of guest memory, loaded atomically with `order`.
pub(crate) fn load_u16<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
    order: Ordering,
) -> Result<u16, QueueError> {
    if let Some(slice) = slice(mem, addr, 2) {
        return slice.load::<u16>(0, order).map(u16::from_le).map_err(|_| mem_err(addr, 2));
    }
    mem.load::<u16>(addr, order).map(u16::from_le).map_err(|_| mem_err(addr, 2))
}

/// Stores `val` as a little-endian `u16` of guest memory, atomically with `order`.
pub(crate) fn store_u16<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
    val: u16,
    order: Ordering,
) -> Result<(), QueueError> {
    if let Some(slice) = slice(mem, addr, 2) {
        return slice.store(val.to_le(), 0, order).map_err(|_| mem_err(addr, 2));
    }
    mem.store(val.to_le(), addr, order).map_err(|_| mem_err(addr, 2))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::Ordering;

    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::*;

    /// Two adjacent regions: 0..0x1000 and 0x1000..0x2000.
    pub(crate) fn two_regions() -> GuestMemoryMmap {
        let ranges = [(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)];
        GuestMemoryMmap::from_ranges(&ranges).expect("guest memory")
    }

    #[test]
    fn accesses_in_one_region_and_across_two_agree_with_vm_memory() {
        let mem = two_regions();
        let bytes: Vec<u8> = (1..=16).collect();
        // In one region, and straddling the boundary (the general path).
        for at in [0x100, 0x1000 - 8] {
            write_bytes(&mem, GuestAddress(at), &bytes).expect("write");
            let mut back = [0u8; 16];
            mem.read_slice(&mut back, GuestAddress(at)).expect("vm-memory read");
            assert_eq!(back.as_slice(), bytes.as_slice());
            let mut ours = [0u8; 16];
            read_bytes(&mem, GuestAddress(at), &mut ours).expect("read");
            assert_eq!(ours, back);
        }
        store_u16(&mem, GuestAddress(0x1ffe), 0xbeef, Ordering::Release).expect("store");
        assert_eq!(mem.read_obj::<u16>(GuestAddress(0x1ffe)).expect("read"), 0xbeef_u16.to_le());
        assert_eq!(load_u16(&mem, GuestAddress(0x1ffe), Ordering::Acquire).expect("load"), 0xbeef);
    }

    #[test]
    fn accesses_outside_guest_memory_are_errors_naming_them() {
        let mem = two_regions();
        let mut buf = [0u8; 16];
        let past_end = GuestAddress(0x2000 - 8);
        assert!(matches!(
            read_bytes(&mem, past_end, &mut buf),
            Err(QueueError::Memory { addr: 0x1ff8, len: 16 })
        ));
        assert!(write_bytes(&mem, GuestAddress(0x5000), &buf).is_err());
        assert!(load_u16(&mem, GuestAddress(0x1fff), Ordering::Relaxed).is_err());
        assert!(store_u16(&mem, GuestAddress(u64::MAX), 1, Ordering::Relaxed).is_err());
        // A write running off the end fails; what it wrote first is the general path's business.
        assert!(write_bytes(&mem, past_end, &[0xaa; 16]).is_err());
    }
}
