//! Guest memory for `virtq_chain`: the two regions and the hole between them, whether a range
//! is mapped, the raw byte layout of split and packed descriptors, ring-field access, and the
//! packed ring's slot and wrap-counter arithmetic.

use vhu_transport_std::virtq::{Segment, PACKED_DESC_F_AVAIL, PACKED_DESC_F_USED};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The main region: 64 KiB.
pub(super) const A: u64 = 0x1_0000;
pub(super) const A_LEN: u64 = 0x1_0000;
/// A second, small region after a one-page hole, so accesses can straddle a gap.
pub(super) const B: u64 = 0x2_1000;
pub(super) const B_LEN: u64 = 0x1000;
pub(super) const REGIONS: [(u64, u64); 2] = [(A, A_LEN), (B, B_LEN)];

/// Whether `[addr, addr + len)` lies inside one region (the regions are not adjacent).
pub(super) fn in_memory(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    REGIONS.iter().any(|&(start, size)| addr >= start && end <= start + size)
}

/// `slot` moved forward by `n <= size` slots with its wrap counter.
pub(super) fn advance(slot: u16, wrap: bool, n: u16, size: u16) -> (u16, bool) {
    let next = u32::from(slot) + u32::from(n);
    if next >= u32::from(size) {
        ((next - u32::from(size)) as u16, !wrap)
    } else {
        (next as u16, wrap)
    }
}

pub(super) fn off_wrap(slot: u16, wrap: bool) -> u16 {
    (slot & 0x7fff) | if wrap { 0x8000 } else { 0 }
}

/// The AVAIL/USED bits of a descriptor the driver makes available with wrap counter `wrap`.
pub(super) fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        PACKED_DESC_F_AVAIL
    } else {
        PACKED_DESC_F_USED
    }
}

/// A split descriptor's 16 bytes.
pub(super) fn split_desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..].copy_from_slice(&next.to_le_bytes());
    raw
}

/// A packed descriptor's 16 bytes.
pub(super) fn packed_desc(addr: u64, len: u32, id: u16, flags: u16) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&id.to_le_bytes());
    raw[14..].copy_from_slice(&flags.to_le_bytes());
    raw
}

/// The guest ranges covering bytes `[start, start + n)` of `segments`; `None` for a range whose
/// address overflows.
pub(super) fn pieces(
    segments: &[Segment],
    mut start: usize,
    mut n: usize,
) -> Vec<Option<(u64, u64)>> {
    let mut out = Vec::new();
    for seg in segments {
        if n == 0 {
            break;
        }
        let len = seg.len as usize;
        if start >= len {
            start -= len;
            continue;
        }
        let take = (len - start).min(n);
        out.push(seg.addr.0.checked_add(start as u64).map(|a| (a, take as u64)));
        n -= take;
        start = 0;
    }
    out
}

pub(super) fn rd16(mem: &GuestMemoryMmap, addr: u64) -> u16 {
    u16::from_le(mem.read_obj(GuestAddress(addr)).expect("validated ring field reads"))
}

pub(super) fn wr16(mem: &GuestMemoryMmap, addr: u64, v: u16) {
    mem.write_obj(v.to_le(), GuestAddress(addr)).expect("validated ring field writes");
}

pub(super) fn rd_desc(mem: &GuestMemoryMmap, addr: u64) -> [u8; 16] {
    let mut raw = [0u8; 16];
    mem.read_slice(&mut raw, GuestAddress(addr)).expect("validated ring entry reads");
    raw
}
