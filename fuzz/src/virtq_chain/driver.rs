//! The model driver of `virtq_chain`: publishing whole chains (direct or through an indirect
//! table) and making heads available, the way a driver would for each layout.

use vhu_transport_std::virtq::{
    DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, PACKED_DESC_F_AVAIL, PACKED_DESC_F_USED,
};
use vm_memory::{Bytes, GuestAddress};

use super::harness::{Harness, Model};
use super::input::{Addr, Buf};
use super::memory::{advance, avail_bits, packed_desc, rd16, split_desc, wr16};

impl Harness {
    /// The model driver makes `bufs` available as one chain.
    pub(super) fn publish_chain(&mut self, bufs: &[Buf], indirect: bool, table: Addr, id: u16) {
        let size = self.size;
        let table = table.get();
        let n = bufs.len() as u16;
        let flags = |b: &Buf| if b.write { DESC_F_WRITE } else { 0 };
        match &mut self.model {
            Model::Split(m) => {
                let head = m.next_desc % size;
                if indirect {
                    for (i, b) in (0u16..).zip(bufs) {
                        let next_flag = if i + 1 < n { DESC_F_NEXT } else { 0 };
                        let raw =
                            split_desc(b.addr.get(), b.len.get(), flags(b) | next_flag, i + 1);
                        let at = table.wrapping_add(16 * u64::from(i));
                        let _ = self.mem.write_slice(&raw, GuestAddress(at));
                    }
                    let raw = split_desc(table, 16 * u32::from(n), DESC_F_INDIRECT, 0);
                    let _ = self.mem.write_slice(&raw, GuestAddress(m.desc + 16 * u64::from(head)));
                    m.next_desc = m.next_desc.wrapping_add(1);
                } else {
                    for (i, b) in (0u16..).zip(bufs) {
                        let index = m.next_desc.wrapping_add(i) % size;
                        let next = m.next_desc.wrapping_add(i + 1) % size;
                        let next_flag = if i + 1 < n { DESC_F_NEXT } else { 0 };
                        let raw = split_desc(b.addr.get(), b.len.get(), flags(b) | next_flag, next);
                        let at = m.desc + 16 * u64::from(index);
                        let _ = self.mem.write_slice(&raw, GuestAddress(at));
                    }
                    m.next_desc = m.next_desc.wrapping_add(n);
                }
                self.publish_head(head);
            }
            Model::Packed(m) => {
                let head = m.pos;
                let mut head_raw = None;
                let entries: Vec<(u64, u32, u16)> = if indirect {
                    for (i, b) in (0u64..).zip(bufs) {
                        let raw = packed_desc(b.addr.get(), b.len.get(), 0, flags(b));
                        let _ =
                            self.mem.write_slice(&raw, GuestAddress(table.wrapping_add(16 * i)));
                    }
                    vec![(table, 16 * u32::from(n), DESC_F_INDIRECT)]
                } else {
                    bufs.iter().map(|b| (b.addr.get(), b.len.get(), flags(b))).collect()
                };
                let count = entries.len();
                for (i, (addr, len, f)) in entries.into_iter().enumerate() {
                    let last = i + 1 == count;
                    let f = f | avail_bits(m.wrap) | if last { 0 } else { DESC_F_NEXT };
                    let raw = packed_desc(addr, len, if last { id } else { 0xdead }, f);
                    if i == 0 {
                        head_raw = Some(raw);
                    } else {
                        let at = m.desc + 16 * u64::from(m.pos);
                        let _ = self.mem.write_slice(&raw, GuestAddress(at));
                    }
                    (m.pos, m.wrap) = advance(m.pos, m.wrap, 1, size);
                }
                // The head's flags last, as a driver must.
                if let Some(raw) = head_raw {
                    let at = m.desc + 16 * u64::from(head);
                    let _ = self.mem.write_slice(&raw, GuestAddress(at));
                }
            }
        }
    }

    /// Split: makes `head` available. Packed: flips the driver's next slot to available (its
    /// buffer id stays whatever the slot holds).
    pub(super) fn publish_head(&mut self, head: u16) {
        let size = self.size;
        match &mut self.model {
            Model::Split(m) => {
                let slot = u64::from(m.avail_idx % size);
                let (entry, idx_at) = (m.avail + 4 + 2 * slot, m.avail + 2);
                m.avail_idx = m.avail_idx.wrapping_add(1);
                let idx = m.avail_idx;
                wr16(&self.mem, entry, head);
                wr16(&self.mem, idx_at, idx);
            }
            Model::Packed(m) => {
                let at = m.desc + 16 * u64::from(m.pos) + 14;
                let flags = rd16(&self.mem, at) & !(PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED);
                let wrap = m.wrap;
                (m.pos, m.wrap) = advance(m.pos, m.wrap, 1, size);
                wr16(&self.mem, at, flags | avail_bits(wrap));
            }
        }
    }
}
