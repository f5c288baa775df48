//! The `virtq_chain` seed corpus: valid rings of both layouts, malformed ones, and readers and
//! writers over segments at the edges of memory.

use super::input::{encode, Addr, Buf, Config, Len, Op};

/// A standard-layout configuration.
pub(super) fn standard(packed: bool, size: u16, event_idx: bool, indirect: bool) -> Config {
    Config {
        packed,
        event_idx,
        indirect,
        rings: None,
        size,
        next_avail: 0,
        next_used: 0,
        avail_wrap: true,
        used_wrap: true,
        fill: Vec::new(),
    }
}

pub(super) fn buf(offset: u16, len: u16, write: bool) -> Buf {
    Buf { addr: Addr::InA(offset), len: Len::Mid(len), write }
}

/// A request chain: a header and a body to read, a reply area to write.
pub(super) fn request(id: u16, indirect: bool) -> Op {
    let base = 0x4000 + 0x400 * (id % 8);
    Op::Chain {
        bufs: vec![buf(base, 40, false), buf(base + 0x40, 64, false), buf(base + 0x100, 256, true)],
        indirect,
        table: Addr::InA(0x3000 + 0x100 * (id % 8)),
        id,
    }
}

/// The seed corpus: valid rings of both layouts and a few malformed ones.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Op::*;
    let mut out = Vec::new();
    // Split, 16 entries: three chains, read, written and returned, then the notification calls.
    let ops = [request(0, false), request(1, false), Drain(3), request(2, false), Pop(0b011)];
    let tail = [ReturnHeld, NeedsNotification, EnableNotification, DisableNotification];
    out.push((
        "split_basic",
        encode(&standard(false, 4, false, false), &[&ops[..], &tail].concat()),
    ));
    // Split with EVENT_IDX and an indirect table.
    let ops = [
        request(3, true),
        request(4, false),
        Drain(2),
        RingWord { which: 2, value: 1 },
        NeedsNotification,
        NeedsNotification,
        EnableNotification,
    ];
    out.push(("split_indirect_event_idx", encode(&standard(false, 5, true, true), &ops)));
    // Split: a loop, an index outside the table, an avail index that jumps too far.
    let ops = [
        Desc { index: 0, addr: Addr::InA(0x5000), len: Len::Small(8), flags: 1, next: 1 },
        Desc { index: 1, addr: Addr::InA(0x5100), len: Len::Small(8), flags: 1, next: 0 },
        Publish(0),
        Pop(0),
        Desc { index: 2, addr: Addr::EndA(4), len: Len::Small(8), flags: 0, next: 0 },
        Publish(2),
        Publish(40),
        Drain(3),
        DriverIndex(200),
        Pop(0),
        EnableNotification,
    ];
    out.push(("split_malformed", encode(&standard(false, 3, false, false), &ops)));
    // Split rings at chosen addresses in the small region, resumed from a saved base.
    let mut config = standard(false, 8, false, true);
    config.rings = Some([Addr::InB(0x000), Addr::InB(0x200), Addr::InB(0x400)]);
    config.next_avail = 0xfffe;
    config.next_used = 0xfffe;
    let ops = [request(5, false), request(6, true), request(7, false), Drain(4)];
    out.push(("split_custom_wrap", encode(&config, &ops)));
    // Packed, 16 descriptors: chains, returned out of order.
    let ops = [
        request(1, false),
        request(2, false),
        Pop(0b001),
        Pop(0b010),
        AddUsed { head: 2, len: 0 },
        ReturnHeld,
        request(3, false),
        Drain(1),
        NeedsNotification,
    ];
    out.push(("packed_basic", encode(&standard(true, 15, false, false), &ops)));
    // Packed, 4 descriptors: the ring wraps; EVENT_IDX and indirect tables.
    let ops = [
        EnableNotification,
        request(1, true),
        request(2, false),
        Drain(2),
        request(3, true),
        request(4, true),
        Drain(2),
        RingWord { which: 1, value: 2 },
        NeedsNotification,
        DisableNotification,
    ];
    out.push(("packed_wrap_indirect", encode(&standard(true, 3, true, true), &ops)));
    // Packed: a chain that never ends, one made available while the ring is full of in-flight
    // slots, and a buffer in the hole after the main region.
    let mut config = standard(true, 3, false, false);
    config.next_avail = 2;
    config.next_used = 2;
    let next = |index: u16, flags: u16| Desc {
        index,
        addr: Addr::InA(0x5000),
        len: Len::Small(8),
        flags,
        next: 9,
    };
    let ops = [
        next(0, 1),
        next(1, 1),
        next(3, 1),
        next(2, 0x81),
        Pop(0),
        DriverIndex(2),
        Chain {
            bufs: vec![Buf { addr: Addr::Hole(0), len: Len::Small(8), write: false }],
            indirect: false,
            table: Addr::InA(0x3000),
            id: 9,
        },
        Pop(0),
        request(7, false),
        Pop(0b001),
        request(8, false),
        Pop(0),
        ReturnHeld,
        Pop(0b111),
    ];
    out.push(("packed_malformed", encode(&config, &ops)));
    // Readers and writers over segments at and across the edges of memory.
    let ops = [
        Segments {
            segments: vec![(Addr::EndA(16), Len::Small(16)), (Addr::InB(0xff0), Len::Small(32))],
            write: false,
        },
        Segments { segments: vec![(Addr::Hole(0), Len::Small(1))], write: true },
        Segments {
            segments: vec![
                (Addr::InA(0x8000), Len::Mid(100)),
                (Addr::Raw(u64::MAX - 3), Len::Small(8)),
            ],
            write: true,
        },
    ];
    let mut config = standard(false, 2, false, false);
    config.fill = (0..64).collect();
    out.push(("segments_edges", encode(&config, &ops)));
    out
}
