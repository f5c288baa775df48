//! Bringing the next requests of a split ring into this CPU's cache while the current one is
//! served.
//!
//! The driver writes each request — its descriptors, the indirect table Linux builds, the
//! request header and arguments — on its own CPU, so the device's first read of each of those
//! lines waits for it to come over from the other CPU's cache, one line after another: the
//! descriptor names the table, the table names the header, and the device waits for each in
//! turn. A queue that knows more chains are available (without reading `avail->idx` again) asks
//! the CPU for them a step at a time, each step one chain further ahead than the last, so every
//! line has a request's service time to arrive: the descriptor of the chain three ahead, the
//! indirect table of the one two ahead, and the request header and arguments (and, for writing,
//! the reply header) of the next one, whose table arrived during the previous request.
//!
//! A prefetch is only a hint: it reads nothing the program sees, cannot fault, and what it
//! fetched is read again, and checked, when the chain is walked (`chain.rs`). The entries it
//! reads to find the next lines (available ring, descriptors) are read once each, within the
//! rings a turn's view resolved, and whatever they hold is only a hint; the addresses they name
//! come from a driver that may change them at any time, so each is looked up in guest memory
//! first and no hint names host memory outside it. This module decides nothing and keeps no
//! state; on other architectures than x86-64 it hints at nothing. It costs a READ about 230
//! instructions; at depth 32 it took 3–15% off the back-end's CPU per 4 KiB read or write
//! (`vhu-fs-bench` on a 2-core virtual machine) and left LOOKUP+GETATTR level.

use std::sync::atomic::{AtomicU16, Ordering};

use vm_memory::GuestAddress;
use zerocopy::IntoBytes;

use super::desc::{Descriptor, DESC_F_INDIRECT, DESC_F_WRITE, DESC_SIZE};
use super::io::HostSlice;
use super::ring_memory::{read_descriptor_words, RingMemory};

/// A cache line, as far as hints go.
const LINE: u64 = 64;

/// Indirect-table entries looked at for the next chain's buffers: a request header, its
/// arguments (one or two buffers), the reply header.
const ENTRIES: u32 = 4;

/// Hints at the chains at available slots `next`, `next + 1` and `next + 2` of a split ring of
/// `size` entries (of which `known` are known to be available; none beyond is looked at) as the
/// module docs say. Without its rings resolved to host memory (`mem` a view of them), nothing.
pub(crate) fn ahead<R: RingMemory + ?Sized>(mem: &R, size: u16, next: u16, known: u16) {
    let (Some(table), Some(avail)) = (mem.ring_host(0), mem.ring_host(1)) else { return };
    let rings = Rings { table, avail, size };
    if known > 2 {
        if let Some(head) = rings.head(next.wrapping_add(2)) {
            if let Some(at) = rings.entry(head) {
                prefetch::<{ HINT_READ }>(at.cast());
            }
        }
    }
    if known > 1 {
        if let Some(desc) = rings.head_desc(next.wrapping_add(1)) {
            // A table's first two lines (four descriptors each); a buffer's first.
            let len = match desc.has(DESC_F_INDIRECT) {
                true => u64::from(desc.len.get()).min(2 * LINE),
                false => 1,
            };
            hint_read(mem, desc.addr.get(), len);
        }
    }
    if known > 0 {
        if let Some(desc) = rings.head_desc(next) {
            if desc.has(DESC_F_INDIRECT) {
                buffers(mem, desc.addr.get(), desc.len.get() / DESC_SIZE as u32);
            }
        }
    }
}

/// A split ring's descriptor table and available ring in host memory.
struct Rings {
    table: HostSlice,
    avail: HostSlice,
    size: u16,
}

impl Rings {
    /// The head of the chain at available slot `at`, when it names a descriptor of the table.
    #[inline]
    fn head(&self, at: u16) -> Option<u16> {
        // A split ring's size is a power of two.
        let slot = usize::from(at & self.size.wrapping_sub(1));
        let offset = 4 + 2 * slot;
        let ptr = self.avail.ptr.wrapping_add(offset).cast::<u16>();
        if offset + 2 > self.avail.len || !ptr.is_aligned() {
            return None;
        }
        // SAFETY: the two bytes lie in the available ring's mapping, aligned; the driver writes
        // them concurrently, so they are only loaded atomically.
        let head = u16::from_le(unsafe { AtomicU16::from_ptr(ptr) }.load(Ordering::Relaxed));
        (head < self.size).then_some(head)
    }

    /// Where descriptor `head` lies, when the table holds it, aligned.
    #[inline]
    fn entry(&self, head: u16) -> Option<*const u64> {
        let offset = usize::from(head) * DESC_SIZE as usize;
        let ptr = self.table.ptr.wrapping_add(offset).cast_const().cast::<u64>();
        (offset + DESC_SIZE as usize <= self.table.len && ptr.is_aligned()).then_some(ptr)
    }

    /// The head descriptor of the chain at available slot `at`.
    #[inline]
    fn head_desc(&self, at: u16) -> Option<Descriptor> {
        Entries { ptr: self.entry(self.head(at)?)?, count: 1 }.read(0)
    }
}

/// Hints at the buffers the first entries of the indirect table at `table` (of `entries`)
/// name: each readable one (its first and last line), then the first writable one's start, to
/// be written.
fn buffers<R: RingMemory + ?Sized>(mem: &R, table: u64, entries: u32) {
    let Some(table) = self::entries(mem, table, entries.min(ENTRIES)) else { return };
    for index in 0..table.count {
        let Some(desc) = table.read(index) else { return };
        let addr = desc.addr.get();
        if desc.has(DESC_F_WRITE) {
            hint_write(mem, addr);
            return;
        }
        hint_read(mem, addr, u64::from(desc.len.get()).min(2 * LINE));
    }
}

/// `count` descriptors in host memory.
struct Entries {
    ptr: *const u64,
    count: u32,
}

impl Entries {
    /// Entry `index`, when it is one of the `count`: two aligned words, each read once.
    #[inline]
    fn read(&self, index: u32) -> Option<Descriptor> {
        if index >= self.count {
            return None;
        }
        let at = self.ptr.wrapping_add(2 * index as usize);
        // SAFETY: `entries` or `Rings::entry` found the `count` descriptors mapped in guest
        // memory, which the caller still borrows, and aligned, and `index` is one of them; the
        // driver may change them meanwhile, so each word is read once, volatile, and whatever
        // it holds is only a hint.
        let words = unsafe { read_descriptor_words(at) };
        let mut desc = Descriptor::new(0, 0, 0, 0);
        desc.as_mut_bytes().copy_from_slice(words.as_bytes());
        Some(desc)
    }
}

/// The `count` descriptors at `addr`, when they lie in guest memory, aligned.
#[inline]
fn entries<R: RingMemory + ?Sized>(mem: &R, addr: u64, count: u32) -> Option<Entries> {
    let len = count as usize * DESC_SIZE as usize;
    let slice = mem.host_slice(GuestAddress(addr), len.max(1))?;
    let ptr = slice.ptr.cast_const().cast::<u64>();
    (count > 0 && ptr.is_aligned()).then_some(Entries { ptr, count })
}

/// Hints at the first and the last line of the `len` bytes at `addr` for reading (a request
/// header and its arguments, a table's first descriptors: two lines at most).
#[inline]
fn hint_read<R: RingMemory + ?Sized>(mem: &R, addr: u64, len: u64) {
    let len = len.max(1);
    let Ok(host_len) = usize::try_from(len) else { return };
    let Some(slice) = mem.host_slice(GuestAddress(addr), host_len) else { return };
    prefetch::<{ HINT_READ }>(slice.ptr);
    prefetch::<{ HINT_READ }>(slice.ptr.wrapping_add(host_len - 1));
}

/// Hints at the line at `addr` for writing.
#[inline]
fn hint_write<R: RingMemory + ?Sized>(mem: &R, addr: u64) {
    if let Some(slice) = mem.host_slice(GuestAddress(addr), 1) {
        prefetch::<{ HINT_WRITE }>(slice.ptr);
    }
}

#[cfg(target_arch = "x86_64")]
const HINT_READ: i32 = std::arch::x86_64::_MM_HINT_T0;
#[cfg(target_arch = "x86_64")]
const HINT_WRITE: i32 = std::arch::x86_64::_MM_HINT_ET0;
#[cfg(not(target_arch = "x86_64"))]
const HINT_READ: i32 = 0;
#[cfg(not(target_arch = "x86_64"))]
const HINT_WRITE: i32 = 1;

#[inline(always)]
fn prefetch<const HINT: i32>(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees, never faults, and
    // `ptr` lies in guest memory that `host_slice` found mapped.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<HINT>(ptr.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryMmap};
    use zerocopy::IntoBytes;

    use super::*;
    use crate::virtq::{RingView, DESC_F_NEXT};

    /// The descriptor table ends guest memory's first region and the available ring its
    /// second: a slot or head past either would be read outside what the view resolved.
    const TABLE: u64 = 0x10_000 - 8 * 16;
    const AVAIL: u64 = 0x30_000 - 22;

    /// A ring whose every available entry and descriptor is hostile: heads past the table,
    /// tables and buffers past guest memory, lengths that wrap, a size larger than the rings
    /// the view resolved. Hinting at it reads only those rings and never fails.
    #[test]
    fn hostile_rings_are_hinted_at_without_harm() {
        let ranges = [(GuestAddress(0), 0x10_000), (GuestAddress(0x20_000), 0x10_000)];
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
        let wild = [
            Descriptor::new(u64::MAX - 8, u32::MAX, DESC_F_INDIRECT, 0),
            Descriptor::new(0xfff0, 0x40, DESC_F_INDIRECT, 0),
            Descriptor::new(0x2000, 0x30, DESC_F_INDIRECT | DESC_F_NEXT, 7),
            Descriptor::new(0x40_000, 16, 0, 0),
        ];
        for (i, desc) in wild.iter().enumerate() {
            mem.write_slice(desc.as_bytes(), GuestAddress(TABLE + 16 * i as u64)).unwrap();
        }
        // The indirect table at 0x2000 names buffers outside memory and straddling its end.
        let table = [
            Descriptor::new(0xffff, 0x1000, DESC_F_NEXT, 1),
            Descriptor::new(u64::MAX, 1, DESC_F_NEXT, 2),
            Descriptor::new(0x40_000, 8, DESC_F_WRITE, 0),
        ];
        mem.write_slice(table.as_bytes(), GuestAddress(0x2000)).unwrap();
        let heads: [u16; 8] = [0, 1, 2, 3, 9, u16::MAX, 2, 1];
        mem.write_slice(heads.as_bytes(), GuestAddress(AVAIL + 4)).unwrap();
        let view = RingView::new(&mem, [(TABLE, 8 * 16), (AVAIL, 22), (0x1000, 70)]);
        assert!(view.ring_host(0).is_some() && view.ring_host(1).is_some());
        for size in [8, 16, 1 << 15] {
            for next in 0..40u16 {
                for known in 0..4 {
                    ahead(&view, size, next, known);
                }
            }
        }
        // Rings that are not resolved (outside memory, or no view at all): no hints.
        let outside = RingView::new(&mem, [(u64::MAX - 16, 16), (0x50_000, 22), (0, 8)]);
        assert!(outside.ring_host(0).is_none() && outside.ring_host(1).is_none());
        ahead(&outside, 8, 0, 3);
        assert!(mem.ring_host(0).is_none());
        ahead(&mem, 8, 0, 3);
    }
}
