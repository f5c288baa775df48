//! A model of a packed-ring driver over test guest memory, for the packed virtqueue tests.
#![allow(dead_code, unreachable_pub)]

use vhu_transport_std::virtq::{
    packed_avail_flags, PackedDescriptor, PackedQueue, PackedQueueState, DESC_F_NEXT,
    PACKED_DESC_F_AVAIL, PACKED_DESC_F_USED,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromBytes, IntoBytes};

/// Descriptor ring.
pub const RING: u64 = 0x0;
/// Driver event suppression structure.
pub const DRIVER_EVENT: u64 = 0x1000;
/// Device event suppression structure.
pub const DEVICE_EVENT: u64 = 0x1100;
/// Indirect tables.
pub const TABLE: u64 = 0x3000;

/// One buffer: address, length, flags (NEXT is added by [`Driver::publish`]).
pub type Buf = (u64, u32, u16);

/// A used descriptor as the driver reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub id: u16,
    pub len: u32,
    pub flags: u16,
}

/// The driver side of a packed ring: its own avail and used positions and wrap counters.
pub struct Driver {
    pub mem: GuestMemoryMmap,
    pub size: u16,
    pub next: u16,
    pub wrap: bool,
    pub used_next: u16,
    pub used_wrap: bool,
    /// Where the device starts ([`Driver::state`]), whatever was published since.
    pub start: (u16, bool),
    /// Slots of each published id, to skip when its used descriptor comes back.
    slots: Vec<(u16, u16)>,
}

impl Driver {
    pub fn new(size: u16) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("test memory");
        Self::with_memory(mem, size)
    }

    pub fn with_memory(mem: GuestMemoryMmap, size: u16) -> Self {
        Self {
            mem,
            size,
            next: 0,
            wrap: true,
            used_next: 0,
            used_wrap: true,
            start: (0, true),
            slots: Vec::new(),
        }
    }

    /// Starts both positions at `slot` with wrap counter `wrap` (a ring resumed from a base).
    pub fn resume_at(&mut self, slot: u16, wrap: bool) {
        (self.next, self.wrap, self.used_next, self.used_wrap) = (slot, wrap, slot, wrap);
        self.start = (slot, wrap);
    }

    pub fn state(&self, event_idx: bool, indirect: bool) -> PackedQueueState {
        PackedQueueState {
            size: self.size,
            desc_ring: RING,
            driver_event: DRIVER_EVENT,
            device_event: DEVICE_EVENT,
            next_avail: self.start.0,
            avail_wrap: self.start.1,
            next_used: self.start.0,
            used_wrap: self.start.1,
            event_idx,
            indirect,
        }
    }

    pub fn queue(&self, event_idx: bool, indirect: bool) -> PackedQueue {
        PackedQueue::new(self.state(event_idx, indirect), &self.mem).expect("valid queue")
    }

    pub fn write_desc(&self, slot: u16, desc: PackedDescriptor) {
        let at = GuestAddress(RING + 16 * u64::from(slot));
        self.mem.write_slice(desc.as_bytes(), at).expect("descriptor write");
    }

    pub fn read_desc(&self, slot: u16) -> PackedDescriptor {
        let mut raw = [0u8; 16];
        self.mem.read_slice(&mut raw, GuestAddress(RING + 16 * u64::from(slot))).expect("read");
        PackedDescriptor::read_from_bytes(&raw).expect("16 bytes")
    }

    /// Writes entry `i` of an indirect table at `table`.
    pub fn table_desc(&self, table: u64, i: u32, addr: u64, len: u32, flags: u16) {
        let d = PackedDescriptor::new(addr, len, 0, flags);
        let at = GuestAddress(table + 16 * u64::from(i));
        self.mem.write_slice(d.as_bytes(), at).expect("indirect write");
    }

    /// Makes `bufs` available as one chain with buffer id `id`, the head's flags written last.
    /// Returns the head slot.
    pub fn publish(&mut self, id: u16, bufs: &[Buf]) -> u16 {
        self.publish_raw(id, bufs, true)
    }

    /// Like [`Driver::publish`]; with `link` false, NEXT is not added (the flags are used as given).
    pub fn publish_raw(&mut self, id: u16, bufs: &[Buf], link: bool) -> u16 {
        let head = self.next;
        let mut head_desc = None;
        for (i, &(addr, len, flags)) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let mut flags = flags | packed_avail_flags(self.wrap);
            if link && !last {
                flags |= DESC_F_NEXT;
            }
            let desc = PackedDescriptor::new(addr, len, if last { id } else { 0xdead }, flags);
            if i == 0 {
                head_desc = Some(desc);
            } else {
                self.write_desc(self.next, desc);
            }
            self.next += 1;
            if self.next == self.size {
                self.next = 0;
                self.wrap = !self.wrap;
            }
        }
        if let Some(desc) = head_desc {
            self.write_desc(head, desc);
        }
        // Chains of a lap or more are malformed; a used entry for them skips the whole ring.
        let slots = u16::try_from(bufs.len()).expect("small chain").min(self.size);
        self.slots.push((id, slots));
        head
    }

    /// The next used descriptor, if the device wrote it; advances past the chain's slots.
    pub fn take_used(&mut self) -> Option<Used> {
        let d = self.read_desc(self.used_next);
        let avail = d.flags.get() & PACKED_DESC_F_AVAIL != 0;
        let used = d.flags.get() & PACKED_DESC_F_USED != 0;
        if avail != self.used_wrap || used != self.used_wrap {
            return None;
        }
        let id = d.id.get();
        let at = self.slots.iter().position(|&(i, _)| i == id).expect("a published id");
        let (_, slots) = self.slots.remove(at);
        let next = u32::from(self.used_next) + u32::from(slots);
        if next >= u32::from(self.size) {
            self.used_next = (next - u32::from(self.size)) as u16;
            self.used_wrap = !self.used_wrap;
        } else {
            self.used_next = next as u16;
        }
        Some(Used { id, len: d.len.get(), flags: d.flags.get() })
    }

    pub fn u16_at(&self, addr: u64) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(addr)).expect("read u16"))
    }

    pub fn set_u16(&self, addr: u64, v: u16) {
        self.mem.write_obj(v.to_le(), GuestAddress(addr)).expect("write u16");
    }

    /// Sets the driver event suppression structure.
    pub fn driver_event(&self, off_wrap: u16, flags: u16) {
        self.set_u16(DRIVER_EVENT, off_wrap);
        self.set_u16(DRIVER_EVENT + 2, flags);
    }
}
