//! Walking one descriptor chain into its device-readable and device-writable buffers.
//!
//! [`ChainBuilder`] holds the checks both ring layouts share (chain length, buffer ranges,
//! readable-first order, `u32` totals); the split walk below and `packed.rs` feed it.
//!
//! The split walk follows `next` links through the descriptor table and, when negotiated, one level of
//! indirect table (virtio 1.2 §2.7.5.3). It checks every guest-controlled value: indices against the
//! table, loops, the chain length against the queue size, nested indirect tables, the readable-first
//! ordering, buffer ranges against guest memory and total lengths against `u32`. It copies no buffer
//! contents (see `io.rs`) and never touches the rings themselves (see `split.rs`, `packed.rs`).

use vm_memory::{Address, GuestAddress, Permissions};
use zerocopy::{FromBytes, IntoBytes};

use super::buffer_memory::BufferMemory;
use super::desc::{Descriptor, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE};
use super::error::QueueError;
use super::ring_memory::{read_descriptor_words, read_volatile_into, RingMemory};

/// One guest buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A validated descriptor chain: its id and its buffers, readable ones first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescriptorChain {
    head: u16,
    readable: Vec<Segment>,
    writable: Vec<Segment>,
    readable_len: u32,
    writable_len: u32,
}

impl DescriptorChain {
    /// The id to put in the used ring: the head descriptor's index (split rings) or the buffer id
    /// of the chain's last descriptor (packed rings).
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The device-readable buffers, in chain order.
    pub fn readable(&self) -> &[Segment] {
        &self.readable
    }

    /// The device-writable buffers, in chain order.
    pub fn writable(&self) -> &[Segment] {
        &self.writable
    }

    /// Total bytes of the device-readable part.
    pub fn readable_len(&self) -> u32 {
        self.readable_len
    }

    /// Total bytes of the device-writable part.
    pub fn writable_len(&self) -> u32 {
        self.writable_len
    }
}

/// What the walker needs to know about the queue.
pub(crate) struct WalkParams {
    /// Guest address of the descriptor table.
    pub(crate) table: GuestAddress,
    /// Queue size: entries of the table and the chain length limit.
    pub(crate) size: u16,
    /// Whether VIRTIO_F_INDIRECT_DESC was negotiated.
    pub(crate) indirect: bool,
}

/// Reusable per-queue scratch: which table entries the current walk visited.
///
/// Each entry holds the number of the walk that last visited it, so starting a walk is one
/// increment instead of clearing a bitmap sized to the queue.
#[derive(Clone, Debug, Default)]
pub(crate) struct Visited {
    stamps: Vec<u16>,
    walk: u16,
}

impl Visited {
    /// Starts a walk of a table of `entries` entries.
    #[inline]
    fn reset(&mut self, entries: u32) {
        if self.stamps.len() < entries as usize {
            self.grow(entries);
        }
        self.walk = self.walk.wrapping_add(1);
        if self.walk == 0 {
            self.wrap();
        }
    }

    #[cold]
    fn grow(&mut self, entries: u32) {
        self.stamps.resize(entries as usize, 0);
    }

    /// Stamps of 65 535 walks ago would read as this walk's: clear them once per wrap.
    #[cold]
    fn wrap(&mut self) {
        self.stamps.fill(0);
        self.walk = 1;
    }

    /// Marks `index` (which the caller checked is in range); false if this walk already did.
    fn mark(&mut self, index: u32) -> bool {
        match self.stamps.get_mut(index as usize) {
            Some(stamp) if *stamp != self.walk => {
                *stamp = self.walk;
                true
            }
            _ => false,
        }
    }
}

/// Reads entry `index` (16 bytes) of the descriptor table at `table`.
pub(crate) fn read_entry<R, T>(mem: &R, table: GuestAddress, index: u32) -> Result<T, QueueError>
where
    R: RingMemory + ?Sized,
    T: FromBytes + IntoBytes,
{
    let failed = |addr: GuestAddress| QueueError::Memory { addr: addr.raw_value(), len: DESC_SIZE };
    let addr = table.checked_add(u64::from(index) * DESC_SIZE).ok_or(failed(table))?;
    let mut entry = T::new_zeroed();
    mem.read_bytes(addr, entry.as_mut_bytes()).map_err(|_| failed(addr))?;
    Ok(entry)
}

/// A descriptor table a walk reads: the ring's, through the ring memory, or an indirect one
/// resolved to its host memory once, so each entry is a read at an offset instead of a search
/// for the memory holding it.
pub(crate) enum Table {
    /// Entries read through the ring memory at this guest address.
    Guest(GuestAddress),
    /// Entries in host memory: where, how many, and the table's guest address.
    Host(*const u8, u32, GuestAddress),
}

impl Table {
    /// The indirect table of `entries` descriptors at `addr`, which [`indirect_entries`]
    /// checked.
    pub(crate) fn indirect<M: BufferMemory + ?Sized>(mem: &M, addr: u64, entries: u32) -> Self {
        let len = entries as usize * DESC_SIZE as usize;
        match mem.host_slice(GuestAddress(addr), len) {
            Some(slice) => Self::Host(slice.ptr, entries, GuestAddress(addr)),
            None => Self::Guest(GuestAddress(addr)),
        }
    }

    /// Entry `index` (16 bytes). `mem` must be the memory the table was resolved in.
    pub(crate) fn read<R, T>(&self, mem: &R, index: u32) -> Result<T, QueueError>
    where
        R: RingMemory + ?Sized,
        T: FromBytes + IntoBytes,
    {
        match *self {
            Self::Guest(table) => read_entry(mem, table, index),
            Self::Host(ptr, entries, table) => {
                if index >= entries {
                    let addr = table.raw_value().wrapping_add(u64::from(index) * DESC_SIZE);
                    return Err(QueueError::Memory { addr, len: DESC_SIZE });
                }
                let mut entry = T::new_zeroed();
                let at = ptr.wrapping_add(index as usize * DESC_SIZE as usize);
                let bytes = entry.as_mut_bytes();
                if bytes.len() == DESC_SIZE as usize && at.align_offset(8) == 0 {
                    // SAFETY: as below; two aligned words are the entry's sixteen bytes, each
                    // read once.
                    let words = unsafe { read_descriptor_words(at.cast::<u64>()) };
                    bytes.copy_from_slice(words.as_bytes());
                    return Ok(entry);
                }
                // SAFETY: entry `index` lies in the `entries` descriptors of host memory that
                // `host_slice` found mapped in `mem`, which the caller still borrows; `entry`
                // is ours.
                unsafe { read_volatile_into(at, bytes) };
                Ok(entry)
            }
        }
    }
}

/// Checks an indirect descriptor's table (`addr`, `len`) and returns its number of entries.
///
/// The table must be a non-zero multiple of 16 bytes, lie in guest memory and hold at most `max`
/// entries.
pub(crate) fn indirect_entries<M: BufferMemory + ?Sized>(
    mem: &M,
    head: u16,
    addr: u64,
    len: u32,
    max: u32,
) -> Result<u32, QueueError> {
    if len == 0 || u64::from(len) % DESC_SIZE != 0 {
        return Err(QueueError::IndirectLength { head, len });
    }
    let in_memory = addr.checked_add(u64::from(len)).is_some()
        && mem.holds(GuestAddress(addr), u64::from(len), Permissions::Read);
    if !in_memory {
        return Err(QueueError::BufferOutOfRange { head, addr, len });
    }
    let entries = len / DESC_SIZE as u32;
    if entries > max {
        return Err(QueueError::ChainTooLong { head, max });
    }
    Ok(entries)
}

/// Collects the buffers of one chain, checking each as it is added.
pub(crate) struct ChainBuilder<'a, M: ?Sized> {
    mem: &'a M,
    max: u32,
    count: u32,
    seen_writable: bool,
    chain: DescriptorChain,
}

impl<'a, M: BufferMemory + ?Sized> ChainBuilder<'a, M> {
    /// An empty chain named `head` that may hold at most `max` descriptors, in `spare`'s
    /// storage when there is one (a returned chain's: no allocation).
    pub(crate) fn new(mem: &'a M, head: u16, max: u32, spare: Option<DescriptorChain>) -> Self {
        let mut chain = spare.unwrap_or_default();
        chain.head = head;
        chain.readable.clear();
        chain.writable.clear();
        chain.readable_len = 0;
        chain.writable_len = 0;
        Self { mem, max, count: 0, seen_writable: false, chain }
    }

    /// Adds the buffer of descriptor `index`: counts it against the limit, checks its range and
    /// the readable-first order, and adds its length to the totals.
    #[inline(always)]
    pub(crate) fn push(
        &mut self,
        addr: u64,
        len: u32,
        writable: bool,
        index: u32,
    ) -> Result<(), QueueError> {
        let head = self.chain.head;
        self.count += 1;
        if self.count > self.max {
            return Err(QueueError::ChainTooLong { head, max: self.max });
        }
        if len > 0 {
            let end_ok = addr.checked_add(u64::from(len)).is_some();
            let access = if writable { Permissions::Write } else { Permissions::Read };
            let in_memory = end_ok && self.mem.holds(GuestAddress(addr), u64::from(len), access);
            if !in_memory {
                return Err(QueueError::BufferOutOfRange { head, addr, len });
            }
        }
        let segment = Segment { addr: GuestAddress(addr), len };
        let chain = &mut self.chain;
        if writable {
            self.seen_writable = true;
            chain.writable_len =
                chain.writable_len.checked_add(len).ok_or(QueueError::LengthOverflow { head })?;
            if len > 0 {
                chain.writable.push(segment);
            }
        } else {
            if self.seen_writable {
                return Err(QueueError::ReadableAfterWritable { head, index });
            }
            chain.readable_len =
                chain.readable_len.checked_add(len).ok_or(QueueError::LengthOverflow { head })?;
            if len > 0 {
                chain.readable.push(segment);
            }
        }
        Ok(())
    }

    /// The chain built so far.
    pub(crate) fn finish(self) -> DescriptorChain {
        self.chain
    }
}

/// Chains kept for reuse by a queue ([`Spares::put`] after a chain was returned).
#[derive(Clone, Debug, Default)]
pub(crate) struct Spares(Vec<DescriptorChain>);

impl Spares {
    /// Chains kept at most.
    const KEPT: usize = 4;

    pub(crate) fn take(&mut self) -> Option<DescriptorChain> {
        self.0.pop()
    }

    pub(crate) fn put(&mut self, chain: DescriptorChain) {
        if self.0.len() < Self::KEPT {
            self.0.push(chain);
        }
    }
}

/// Walks the chain starting at `head`, validating everything the guest controls.
pub(crate) fn walk<R: RingMemory + ?Sized>(
    ring_mem: &R,
    params: &WalkParams,
    head: u16,
    visited: &mut Visited,
    spare: Option<DescriptorChain>,
) -> Result<DescriptorChain, QueueError> {
    let size = u32::from(params.size);
    let mut builder = ChainBuilder::new(ring_mem, head, size, spare);
    let mut table = Table::Guest(params.table);
    let mut table_len = size;
    let mut in_indirect = false;
    let mut index = u32::from(head);
    visited.reset(table_len);
    loop {
        if index >= table_len {
            return Err(QueueError::IndexOutOfRange { head, index, table_len });
        }
        if !visited.mark(index) {
            return Err(QueueError::Loop { head, index });
        }
        let desc: Descriptor = table.read(ring_mem, index)?;
        if desc.has(DESC_F_INDIRECT) {
            if in_indirect {
                return Err(QueueError::NestedIndirect { head, index });
            }
            if !params.indirect {
                return Err(QueueError::IndirectNotNegotiated { head });
            }
            if desc.has(DESC_F_NEXT) {
                return Err(QueueError::IndirectWithNext { head, index });
            }
            let addr = desc.addr.get();
            table_len = indirect_entries(ring_mem, head, addr, desc.len.get(), size)?;
            table = Table::indirect(ring_mem, addr, table_len);
            in_indirect = true;
            index = 0;
            visited.reset(table_len);
            continue;
        }
        builder.push(desc.addr.get(), desc.len.get(), desc.has(DESC_F_WRITE), index)?;
        if !desc.has(DESC_F_NEXT) {
            return Ok(builder.finish());
        }
        index = u32::from(desc.next.get());
    }
}

#[cfg(test)]
mod tests {
    use super::Visited;

    #[test]
    fn a_walk_sees_only_its_own_visits() {
        let mut visited = Visited::default();
        visited.reset(4);
        assert!(visited.mark(0));
        assert!(visited.mark(3));
        assert!(!visited.mark(0), "a second visit in one walk is a loop");
        assert!(!visited.mark(4), "an index past the table is never marked");
        visited.reset(8);
        assert!(visited.mark(0), "the next walk starts clean");
        assert!(visited.mark(7), "a larger table grows the scratch");
    }

    #[test]
    fn a_visit_from_a_whole_wrap_ago_is_not_a_loop() {
        let mut visited = Visited::default();
        visited.reset(2);
        assert!(visited.mark(1));
        // 65 535 more walks bring the walk number back to the one that marked entry 1.
        for _ in 0..u16::MAX {
            visited.reset(2);
        }
        assert!(visited.mark(1));
        assert!(!visited.mark(1));
    }
}
