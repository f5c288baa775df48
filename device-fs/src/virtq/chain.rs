//! Walking one descriptor chain into its device-readable and device-writable buffers.
//!
//! The walk follows `next` links through the descriptor table and, when negotiated, one level of
//! indirect table (virtio 1.2 §2.7.5.3). It checks every guest-controlled value: indices against the
//! table, loops, the chain length against the queue size, nested indirect tables, the readable-first
//! ordering, buffer ranges against guest memory and total lengths against `u32`. It copies no buffer
//! contents (see `io.rs`) and never touches the rings themselves (see `split.rs`).

use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};
use zerocopy::FromBytes;

use super::desc::{Descriptor, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE};
use super::error::QueueError;

/// One guest buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A validated descriptor chain: its head and its buffers, readable ones first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescriptorChain {
    head: u16,
    readable: Vec<Segment>,
    writable: Vec<Segment>,
    readable_len: u32,
    writable_len: u32,
}

impl DescriptorChain {
    /// Index of the head descriptor, the id to put in the used ring.
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

/// Reusable per-queue scratch: one visited bit per table entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct Visited {
    bits: Vec<u64>,
}

impl Visited {
    fn reset(&mut self, entries: u32) {
        let words = entries.div_ceil(64) as usize;
        self.bits.clear();
        self.bits.resize(words, 0);
    }

    /// Marks `index` (which the caller checked is in range); false if it was already marked.
    fn mark(&mut self, index: u32) -> bool {
        let (word, bit) = ((index / 64) as usize, index % 64);
        match self.bits.get_mut(word) {
            Some(w) if *w & (1 << bit) == 0 => {
                *w |= 1 << bit;
                true
            }
            _ => false,
        }
    }
}

struct Walk<'a, M: ?Sized> {
    mem: &'a M,
    head: u16,
    max: u32,
    count: u32,
    seen_writable: bool,
    chain: DescriptorChain,
}

impl<M: GuestMemory + ?Sized> Walk<'_, M> {
    fn read_desc(&self, table: GuestAddress, index: u32) -> Result<Descriptor, QueueError> {
        let addr = table
            .checked_add(u64::from(index) * DESC_SIZE)
            .ok_or(QueueError::Memory { addr: table.raw_value(), len: DESC_SIZE })?;
        let mut raw = [0u8; DESC_SIZE as usize];
        self.mem
            .read_slice(&mut raw, addr)
            .map_err(|_| QueueError::Memory { addr: addr.raw_value(), len: DESC_SIZE })?;
        // A 16-byte array always holds exactly one descriptor.
        Descriptor::read_from_bytes(&raw)
            .map_err(|_| QueueError::Memory { addr: addr.raw_value(), len: DESC_SIZE })
    }

    fn push(&mut self, desc: &Descriptor, index: u32) -> Result<(), QueueError> {
        let head = self.head;
        self.count += 1;
        if self.count > self.max {
            return Err(QueueError::ChainTooLong { head, max: self.max });
        }
        let (addr, len) = (desc.addr.get(), desc.len.get());
        let out_of_range = QueueError::BufferOutOfRange { head, addr, len };
        if len > 0 {
            let end_ok = addr.checked_add(u64::from(len)).is_some();
            let access =
                if desc.has(DESC_F_WRITE) { Permissions::Write } else { Permissions::Read };
            if !end_ok || !self.mem.check_range(GuestAddress(addr), len as usize, access) {
                return Err(out_of_range);
            }
        }
        let segment = Segment { addr: GuestAddress(addr), len };
        let chain = &mut self.chain;
        if desc.has(DESC_F_WRITE) {
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
}

/// Walks the chain starting at `head`, validating everything the guest controls.
pub(crate) fn walk<M: GuestMemory + ?Sized>(
    mem: &M,
    params: &WalkParams,
    head: u16,
    visited: &mut Visited,
) -> Result<DescriptorChain, QueueError> {
    let size = u32::from(params.size);
    let mut w = Walk {
        mem,
        head,
        max: size,
        count: 0,
        seen_writable: false,
        chain: DescriptorChain { head, ..DescriptorChain::default() },
    };
    let mut table = params.table;
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
        let desc = w.read_desc(table, index)?;
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
            let len = desc.len.get();
            if len == 0 || u64::from(len) % DESC_SIZE != 0 {
                return Err(QueueError::IndirectLength { head, len });
            }
            let entries = len / DESC_SIZE as u32;
            let addr = desc.addr.get();
            let in_memory = addr.checked_add(u64::from(len)).is_some()
                && mem.check_range(GuestAddress(addr), len as usize, Permissions::Read);
            if !in_memory {
                return Err(QueueError::BufferOutOfRange { head, addr, len });
            }
            if entries > size {
                return Err(QueueError::ChainTooLong { head, max: size });
            }
            table = GuestAddress(addr);
            table_len = entries;
            in_indirect = true;
            index = 0;
            visited.reset(table_len);
            continue;
        }
        w.push(&desc, index)?;
        if !desc.has(DESC_F_NEXT) {
            return Ok(w.chain);
        }
        index = u32::from(desc.next.get());
    }
}
