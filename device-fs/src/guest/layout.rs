//! Where a guest's request queue lives in guest memory — the split ring, then each request
//! slot's request buffer, reply buffer and indirect table — and how one request's indirect table
//! is built page by page, as Linux's virtio-fs driver builds it. Addresses and descriptors only:
//! writing them into guest memory and moving the ring are `ring.rs`'s.

use vhu_transport_std::virtq::{Descriptor, DESC_F_NEXT};

/// A guest page: the most data one descriptor carries in Linux's layout.
pub(super) const PAGE: u64 = 4096;

/// Appends a descriptor to an indirect table, chained to the one after it.
pub(super) fn push_desc(table: &mut Vec<Descriptor>, addr: u64, len: u32, flags: u16) {
    let next = (table.len() + 1) as u16;
    table.push(Descriptor::new(addr, len, flags | DESC_F_NEXT, next));
}

/// Appends `len` bytes from the page at `addr` on, a descriptor per page.
pub(super) fn push_pages(table: &mut Vec<Descriptor>, mut addr: u64, mut len: u32, flags: u16) {
    while len > 0 {
        let part = len.min(PAGE as u32);
        push_desc(table, addr, part, flags);
        addr += PAGE;
        len -= part;
    }
}

/// Which part of a request and of its reply is file data, which a Linux guest gives the device
/// page by page (its page cache or the caller's pages), each page its own descriptor; the rest
/// of each direction travels in one buffer after its header.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pages {
    /// Trailing bytes of the request body that are data (a WRITE's).
    pub request: u32,
    /// Trailing bytes of the reply room that are data (a READ's, a READDIR's).
    pub reply: u32,
    /// The data stays in guest memory: the request's pages already hold it (the body carries
    /// the arguments only) and the reply's are not copied out.
    pub in_place: bool,
}

/// Where a ring and its slots live in guest memory, and how large they are.
#[derive(Clone, Copy, Debug)]
pub struct RingLayout {
    /// Guest address of the ring (descriptor table, then available and used rings).
    pub ring: u64,
    /// Ring entries: at least two per slot.
    pub size: u16,
    /// Requests in flight at once.
    pub slots: u16,
    /// Guest address of the first slot's buffers; each slot's follow.
    pub buffers: u64,
    /// Bytes of one request (header included).
    pub request_max: u32,
    /// Bytes of one reply (header included).
    pub reply_max: u32,
}

impl RingLayout {
    /// Bytes the ring itself takes (split layout, 4 KiB aligned to keep slots page-aligned).
    pub fn ring_bytes(size: u16) -> u64 {
        let n = u64::from(size);
        let used = (16 * n + 6 + 2 * n + 3) & !3;
        (used + 6 + 8 * n).next_multiple_of(4096)
    }

    /// Bytes one slot's buffers take: the request's, the reply's, and an indirect table.
    pub fn slot_bytes(&self) -> u64 {
        let buffers = u64::from(self.request_max) + u64::from(self.reply_max);
        (buffers + 16 * self.table_entries()).next_multiple_of(4096)
    }

    /// Entries of a slot's indirect table: two headers, two argument buffers and a page each.
    fn table_entries(&self) -> u64 {
        4 + u64::from(self.request_max).div_ceil(PAGE) + u64::from(self.reply_max).div_ceil(PAGE)
    }

    /// Guest address of slot `slot`'s indirect table.
    pub fn table(&self, slot: u16) -> u64 {
        self.reply(slot) + u64::from(self.reply_max)
    }

    /// One past the last byte the ring and its slots use.
    pub fn end(&self) -> u64 {
        self.buffers + u64::from(self.slots) * self.slot_bytes()
    }

    /// Guest address of slot `slot`'s request buffer.
    pub fn request(&self, slot: u16) -> u64 {
        self.buffers + u64::from(slot) * self.slot_bytes()
    }

    /// Guest address of slot `slot`'s reply buffer.
    pub fn reply(&self, slot: u16) -> u64 {
        self.request(slot) + u64::from(self.request_max)
    }

    pub(super) fn available(&self) -> u64 {
        self.ring + 16 * u64::from(self.size)
    }

    pub(super) fn used(&self) -> u64 {
        (self.available() + 6 + 2 * u64::from(self.size) + 3) & !3
    }
}
