//! `virtq_chain`: arbitrary guest memory and ring parameters through the split and packed
//! virtqueues of `vhu-device-fs`, driven by a model driver whose indices the input also mutates.
//!
//! The input chooses the layout (split or packed), the queue size, the ring addresses (inside,
//! across the edge of, or outside guest memory, aligned or not), EVENT_IDX, INDIRECT and the
//! starting indices, then fills guest memory and runs a bounded list of operations: raw
//! descriptor and ring writes, whole chains published the way a driver would, index jumps, pops
//! with the chain read and written through [`Reader`] / [`Writer`], used entries, the
//! notification calls, and readers / writers over arbitrary segments.
//!
//! Invariants checked after every operation:
//! - nothing panics, and construction succeeds exactly when the size, alignment and placement of
//!   every ring are valid for the memory given;
//! - every error is a [`QueueError`] whose values are true (a buffer said to be outside memory
//!   is outside it, an index said to be out of range is, ...), and a [`QueueError::Memory`] never
//!   occurs on memory that is fixed and rings that were validated;
//! - a pop consumes an entry exactly when the driver made one available (split: `avail->idx`
//!   ahead of the device by 1 to the queue size; packed: the next descriptor's AVAIL/USED bits
//!   match the wrap counter and the in-flight slots stay within the queue size), consumes one
//!   entry (split) or the chain's slots (packed), and a chain error names the consumed chain;
//! - every segment of every chain lies inside guest memory, the totals match the segments, and a
//!   chain never has more segments than the queue size;
//! - readers and writers over a chain never fail and move exactly the chain's bytes; over
//!   arbitrary segments, a successful read or write only touched guest memory;
//! - used entries and notification state are written where and as the layout says.

use vhu_device_fs::virtq::{
    DescriptorChain, PackedQueue, PackedQueueState, QueueError, QueueState, Reader, Ring, Segment,
    SplitQueue, Virtqueue, Writer, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, MAX_QUEUE_SIZE,
    PACKED_DESC_F_AVAIL, PACKED_DESC_F_USED, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
    RING_EVENT_FLAGS_ENABLE,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::cursor::{Cursor, Out};

/// Directory of the seed corpus, relative to this crate's manifest.
pub const CORPUS_DIR: &str = "corpus/virtq_chain";

/// The main region: 64 KiB.
const A: u64 = 0x1_0000;
const A_LEN: u64 = 0x1_0000;
/// A second, small region after a one-page hole, so accesses can straddle a gap.
const B: u64 = 0x2_1000;
const B_LEN: u64 = 0x1000;
const REGIONS: [(u64, u64); 2] = [(A, A_LEN), (B, B_LEN)];

/// Longer inputs are ignored.
const MAX_INPUT: usize = 16 << 10;
const MAX_OPS: usize = 128;
/// Pops per input (a pop walks at most the queue size of descriptors).
const MAX_POPS: usize = 96;
/// Bytes moved by readers and writers per input.
const IO_BUDGET: usize = 1 << 20;
const CHUNK: usize = 4096;
/// Chains the device holds without returning them.
const MAX_HELD: usize = 64;
const MAX_BUFS: usize = 8;
const MAX_SEGMENTS: usize = 8;

/// Whether `[addr, addr + len)` lies inside one region (the regions are not adjacent).
fn in_memory(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    REGIONS.iter().any(|&(start, size)| addr >= start && end <= start + size)
}

/// A guest address, chosen so that most land inside memory or near its edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Addr {
    /// `A + offset`.
    InA(u16),
    /// `B + offset % B_LEN`.
    InB(u16),
    /// `n` bytes before the end of `A`.
    EndA(u8),
    /// `n` bytes into the hole after `A`.
    Hole(u8),
    /// `n` bytes before the end of `B`.
    EndB(u8),
    /// Anything.
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Self::InA(o) => A + u64::from(o),
            Self::InB(o) => B + u64::from(o) % B_LEN,
            Self::EndA(n) => A + A_LEN - u64::from(n),
            Self::Hole(n) => A + A_LEN + u64::from(n),
            Self::EndB(n) => B + B_LEN - u64::from(n),
            Self::Raw(a) => a,
        }
    }

    fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(match c.u8()? % 6 {
            0 => Self::InA(c.u16()?),
            1 => Self::InB(c.u16()?),
            2 => Self::EndA(c.u8()?),
            3 => Self::Hole(c.u8()?),
            4 => Self::EndB(c.u8()?),
            _ => Self::Raw(c.u64()?),
        })
    }

    fn encode(self, o: &mut Out) {
        match self {
            Self::InA(v) => (o.u8(0), o.u16(v)).1,
            Self::InB(v) => (o.u8(1), o.u16(v)).1,
            Self::EndA(v) => (o.u8(2), o.u8(v)).1,
            Self::Hole(v) => (o.u8(3), o.u8(v)).1,
            Self::EndB(v) => (o.u8(4), o.u8(v)).1,
            Self::Raw(v) => (o.u8(5), o.u64(v)).1,
        }
    }
}

/// A buffer length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Len {
    Small(u8),
    Mid(u16),
    Raw(u32),
}

impl Len {
    fn get(self) -> u32 {
        match self {
            Self::Small(v) => u32::from(v),
            Self::Mid(v) => u32::from(v),
            Self::Raw(v) => v,
        }
    }

    fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(match c.u8()? % 3 {
            0 => Self::Small(c.u8()?),
            1 => Self::Mid(c.u16()?),
            _ => Self::Raw(c.u32()?),
        })
    }

    fn encode(self, o: &mut Out) {
        match self {
            Self::Small(v) => (o.u8(0), o.u8(v)).1,
            Self::Mid(v) => (o.u8(1), o.u16(v)).1,
            Self::Raw(v) => (o.u8(2), o.u32(v)).1,
        }
    }
}

/// One buffer of a chain the model driver publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Buf {
    pub(crate) addr: Addr,
    pub(crate) len: Len,
    pub(crate) write: bool,
}

/// Queue parameters and the initial memory contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) packed: bool,
    pub(crate) event_idx: bool,
    pub(crate) indirect: bool,
    /// Ring addresses (descriptors, avail / driver event, used / device event); `None` places
    /// them at fixed valid spots and keeps the size small.
    pub(crate) rings: Option<[Addr; 3]>,
    pub(crate) size: u16,
    pub(crate) next_avail: u16,
    pub(crate) next_used: u16,
    pub(crate) avail_wrap: bool,
    pub(crate) used_wrap: bool,
    /// Tiled over all of guest memory (zeroes when empty).
    pub(crate) fill: Vec<u8>,
}

impl Config {
    fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        let flags = c.u8()?;
        let size = c.u16()?;
        let rings = if flags & 8 != 0 {
            Some([Addr::decode(c)?, Addr::decode(c)?, Addr::decode(c)?])
        } else {
            None
        };
        let next_avail = c.u16()?;
        let next_used = c.u16()?;
        let fill_len = usize::from(c.u8()?) * 16;
        let fill = c.bytes(fill_len).to_vec();
        Some(Self {
            packed: flags & 1 != 0,
            event_idx: flags & 2 != 0,
            indirect: flags & 4 != 0,
            rings,
            size,
            next_avail,
            next_used,
            avail_wrap: flags & 16 != 0,
            used_wrap: flags & 32 != 0,
            fill,
        })
    }

    fn encode(&self, o: &mut Out) {
        let bit = |b: bool, v: u8| if b { v } else { 0 };
        o.u8(bit(self.packed, 1)
            | bit(self.event_idx, 2)
            | bit(self.indirect, 4)
            | bit(self.rings.is_some(), 8)
            | bit(self.avail_wrap, 16)
            | bit(self.used_wrap, 32));
        o.u16(self.size);
        if let Some(rings) = self.rings {
            for r in rings {
                r.encode(o);
            }
        }
        o.u16(self.next_avail);
        o.u16(self.next_used);
        assert!(self.fill.len() % 16 == 0 && self.fill.len() <= 255 * 16, "fill is whole units");
        o.u8((self.fill.len() / 16) as u8);
        o.raw(&self.fill);
    }
}

/// One step of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Writes ring descriptor `index % size` (packed: `next` is the buffer id).
    Desc {
        index: u16,
        addr: Addr,
        len: Len,
        flags: u16,
        next: u16,
    },
    /// The model driver publishes a chain of `bufs` (through an indirect table at `table`).
    Chain {
        bufs: Vec<Buf>,
        indirect: bool,
        table: Addr,
        id: u16,
    },
    /// Split: makes `head` available. Packed: flips the next driver slot to available.
    Publish(u16),
    /// Split: sets `avail->idx`. Packed: moves the driver's position and wrap counter.
    DriverIndex(u16),
    /// Writes raw bytes anywhere (the write fails outside memory).
    Poke {
        at: Addr,
        bytes: Vec<u8>,
    },
    /// Writes one 16-bit ring field (flags, indices, event fields).
    RingWord {
        which: u8,
        value: u16,
    },
    /// Pops one chain; bit 0 reads it, bit 1 writes it, bit 2 returns it at once.
    Pop(u8),
    /// Pops up to `n % 16 + 1` chains, reading, writing and returning each.
    Drain(u8),
    /// `add_used` with any head or id.
    AddUsed {
        head: u16,
        len: u32,
    },
    /// Returns the oldest held chain.
    ReturnHeld,
    NeedsNotification,
    EnableNotification,
    DisableNotification,
    /// A reader (or writer) over arbitrary segments, run to the end.
    Segments {
        segments: Vec<(Addr, Len)>,
        write: bool,
    },
}

impl Op {
    fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(match c.u8()? % 14 {
            0 => Self::Desc {
                index: c.u16()?,
                addr: Addr::decode(c)?,
                len: Len::decode(c)?,
                flags: c.u16()?,
                next: c.u16()?,
            },
            1 => {
                let n = usize::from(c.u8()?) % MAX_BUFS + 1;
                let mut bufs = Vec::with_capacity(n);
                for _ in 0..n {
                    bufs.push(Buf {
                        addr: Addr::decode(c)?,
                        len: Len::decode(c)?,
                        write: c.bool()?,
                    });
                }
                Self::Chain { bufs, indirect: c.bool()?, table: Addr::decode(c)?, id: c.u16()? }
            }
            2 => Self::Publish(c.u16()?),
            3 => Self::DriverIndex(c.u16()?),
            4 => Self::Poke { at: Addr::decode(c)?, bytes: c.short_bytes()?.to_vec() },
            5 => Self::RingWord { which: c.u8()?, value: c.u16()? },
            6 => Self::Pop(c.u8()?),
            7 => Self::Drain(c.u8()?),
            8 => Self::AddUsed { head: c.u16()?, len: c.u32()? },
            9 => Self::ReturnHeld,
            10 => Self::NeedsNotification,
            11 => Self::EnableNotification,
            12 => Self::DisableNotification,
            _ => {
                let n = usize::from(c.u8()?) % MAX_SEGMENTS + 1;
                let mut segments = Vec::with_capacity(n);
                for _ in 0..n {
                    segments.push((Addr::decode(c)?, Len::decode(c)?));
                }
                Self::Segments { segments, write: c.bool()? }
            }
        })
    }

    fn encode(&self, o: &mut Out) {
        match self {
            Self::Desc { index, addr, len, flags, next } => {
                o.u8(0);
                o.u16(*index);
                addr.encode(o);
                len.encode(o);
                o.u16(*flags);
                o.u16(*next);
            }
            Self::Chain { bufs, indirect, table, id } => {
                o.u8(1);
                assert!((1..=MAX_BUFS).contains(&bufs.len()), "1 to {MAX_BUFS} buffers");
                o.u8((bufs.len() - 1) as u8);
                for b in bufs {
                    b.addr.encode(o);
                    b.len.encode(o);
                    o.bool(b.write);
                }
                o.bool(*indirect);
                table.encode(o);
                o.u16(*id);
            }
            Self::Publish(head) => (o.u8(2), o.u16(*head)).1,
            Self::DriverIndex(v) => (o.u8(3), o.u16(*v)).1,
            Self::Poke { at, bytes } => {
                o.u8(4);
                at.encode(o);
                o.short_bytes(bytes);
            }
            Self::RingWord { which, value } => {
                o.u8(5);
                o.u8(*which);
                o.u16(*value);
            }
            Self::Pop(mode) => (o.u8(6), o.u8(*mode)).1,
            Self::Drain(n) => (o.u8(7), o.u8(*n)).1,
            Self::AddUsed { head, len } => {
                o.u8(8);
                o.u16(*head);
                o.u32(*len);
            }
            Self::ReturnHeld => o.u8(9),
            Self::NeedsNotification => o.u8(10),
            Self::EnableNotification => o.u8(11),
            Self::DisableNotification => o.u8(12),
            Self::Segments { segments, write } => {
                o.u8(13);
                assert!((1..=MAX_SEGMENTS).contains(&segments.len()), "1 to {MAX_SEGMENTS}");
                o.u8((segments.len() - 1) as u8);
                for (addr, len) in segments {
                    addr.encode(o);
                    len.encode(o);
                }
                o.bool(*write);
            }
        }
    }
}

/// Encodes a whole input.
pub(crate) fn encode(config: &Config, ops: &[Op]) -> Vec<u8> {
    let mut o = Out::default();
    config.encode(&mut o);
    for op in ops {
        op.encode(&mut o);
    }
    o.0
}

/// Runs one input.
pub fn run(data: &[u8]) {
    session(data);
}

/// What one input did, for the tests.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    /// Valid chains popped.
    chains: usize,
    /// Chains popped with an error.
    bad_chains: usize,
}

fn session(data: &[u8]) -> Option<Stats> {
    if data.len() > MAX_INPUT {
        return None;
    }
    let mut c = Cursor::new(data);
    let config = Config::decode(&mut c)?;
    let mut h = Harness::new(&config)?;
    for _ in 0..MAX_OPS {
        let Some(op) = Op::decode(&mut c) else {
            break;
        };
        h.apply(op);
    }
    // The device gives back everything it still holds; the ring stays consistent.
    while !h.held.is_empty() {
        h.return_held();
    }
    Some(h.stats)
}

/// A standard-layout configuration.
fn standard(packed: bool, size: u16, event_idx: bool, indirect: bool) -> Config {
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

fn buf(offset: u16, len: u16, write: bool) -> Buf {
    Buf { addr: Addr::InA(offset), len: Len::Mid(len), write }
}

/// A request chain: a header and a body to read, a reply area to write.
fn request(id: u16, indirect: bool) -> Op {
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

/// What the model expects a pop to do.
enum Expect {
    /// Nothing available: `Ok(None)`, nothing consumed.
    Empty,
    /// This error, nothing consumed.
    Refused(QueueError),
    /// One chain consumed: its head (split) or buffer id (packed), and (packed) the ring slots
    /// it occupies and whether its last descriptor ends it.
    Consume { head: u16, slots: u16, terminated: bool },
}

/// The split ring's driver side and the device-side facts the model tracks.
struct SplitModel {
    desc: u64,
    avail: u64,
    used: u64,
    /// The driver's `avail->idx`.
    avail_idx: u16,
    /// Where the driver puts its next chain in the descriptor table.
    next_desc: u16,
    /// `next_used` at the last notification decision.
    signalled: Option<u16>,
}

/// The packed ring's driver side and the device-side facts the model tracks.
struct PackedModel {
    desc: u64,
    driver_event: u64,
    device_event: u64,
    /// The driver's next slot and wrap counter.
    pos: u16,
    wrap: bool,
    /// Chains consumed and not returned, oldest first: buffer id and ring slots.
    in_flight: Vec<(u16, u16)>,
    /// Whether `pop` keeps the device event offset current.
    kick_on_desc: bool,
}

enum Model {
    Split(SplitModel),
    Packed(PackedModel),
}

struct Harness {
    mem: GuestMemoryMmap,
    q: Virtqueue,
    size: u16,
    event_idx: bool,
    indirect: bool,
    model: Model,
    /// Popped chains not returned yet: the id to return and the chain when it was valid.
    held: Vec<(u16, Option<DescriptorChain>)>,
    pops: usize,
    io_left: usize,
    stats: Stats,
}

/// `slot` moved forward by `n <= size` slots with its wrap counter.
fn advance(slot: u16, wrap: bool, n: u16, size: u16) -> (u16, bool) {
    let next = u32::from(slot) + u32::from(n);
    if next >= u32::from(size) {
        ((next - u32::from(size)) as u16, !wrap)
    } else {
        (next as u16, wrap)
    }
}

fn off_wrap(slot: u16, wrap: bool) -> u16 {
    (slot & 0x7fff) | if wrap { 0x8000 } else { 0 }
}

/// The AVAIL/USED bits of a descriptor the driver makes available with wrap counter `wrap`.
fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        PACKED_DESC_F_AVAIL
    } else {
        PACKED_DESC_F_USED
    }
}

/// A split descriptor's 16 bytes.
fn split_desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..].copy_from_slice(&next.to_le_bytes());
    raw
}

/// A packed descriptor's 16 bytes.
fn packed_desc(addr: u64, len: u32, id: u16, flags: u16) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&id.to_le_bytes());
    raw[14..].copy_from_slice(&flags.to_le_bytes());
    raw
}

/// The guest ranges covering bytes `[start, start + n)` of `segments`; `None` for a range whose
/// address overflows.
fn pieces(segments: &[Segment], mut start: usize, mut n: usize) -> Vec<Option<(u64, u64)>> {
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

fn rd16(mem: &GuestMemoryMmap, addr: u64) -> u16 {
    u16::from_le(mem.read_obj(GuestAddress(addr)).expect("validated ring field reads"))
}

fn wr16(mem: &GuestMemoryMmap, addr: u64, v: u16) {
    mem.write_obj(v.to_le(), GuestAddress(addr)).expect("validated ring field writes");
}

fn rd_desc(mem: &GuestMemoryMmap, addr: u64) -> [u8; 16] {
    let mut raw = [0u8; 16];
    mem.read_slice(&mut raw, GuestAddress(addr)).expect("validated ring entry reads");
    raw
}

fn split_state(q: &Virtqueue) -> QueueState {
    match q {
        Virtqueue::Split(q) => q.state(),
        Virtqueue::Packed(_) => unreachable!("a split harness holds a split queue"),
    }
}

fn packed_state(q: &Virtqueue) -> PackedQueueState {
    match q {
        Virtqueue::Packed(q) => q.state(),
        Virtqueue::Split(_) => unreachable!("a packed harness holds a packed queue"),
    }
}

/// Every error names something that really is wrong.
fn check_error(e: &QueueError, size: u16, indirect: bool) {
    assert!(!e.to_string().is_empty());
    match *e {
        QueueError::Memory { addr, len } => {
            panic!("memory error [{addr:#x}, +{len:#x}) on fixed memory and validated rings")
        }
        QueueError::BufferOutOfRange { addr, len, .. } => {
            assert!(!in_memory(addr, u64::from(len)), "{e}: the buffer is in memory");
        }
        QueueError::IndexOutOfRange { index, table_len, .. } => {
            assert!(index >= table_len, "{e}: the index is in range");
        }
        QueueError::ChainTooLong { max, .. } => assert_eq!(max, u32::from(size), "{e}"),
        QueueError::IndirectLength { len, .. } => {
            assert!(len == 0 || len % 16 != 0, "{e}: the length is valid");
        }
        QueueError::IndirectNotNegotiated { .. } => assert!(!indirect, "{e}: it was negotiated"),
        QueueError::InFlightOverflow { size: s } => assert_eq!(s, size, "{e}"),
        QueueError::InvalidSize(_)
        | QueueError::Misaligned { .. }
        | QueueError::RingOutOfRange { .. }
        | QueueError::BaseOutOfRange { .. } => panic!("construction error {e} after construction"),
        _ => {}
    }
}

impl Harness {
    fn new(config: &Config) -> Option<Self> {
        let ranges: Vec<_> =
            REGIONS.iter().map(|&(start, len)| (GuestAddress(start), len as usize)).collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).expect("test memory maps");
        if !config.fill.is_empty() {
            for &(start, len) in &REGIONS {
                let tiled: Vec<u8> =
                    config.fill.iter().copied().cycle().take(len as usize).collect();
                mem.write_slice(&tiled, GuestAddress(start)).expect("fill in memory");
            }
        }
        let (size, rings) = match (config.rings, config.packed) {
            (Some(rings), _) => (config.size, rings.map(Addr::get)),
            (None, false) => (1 << (config.size % 9), [A, A + 0x1000, A + 0x2000]),
            (None, true) => (config.size % 256 + 1, [A, A + 0x1000, A + 0x1100]),
        };
        let standard = config.rings.is_none();
        let (q, model) = if config.packed {
            let (next_avail, next_used) = if standard && size > 0 {
                (config.next_avail % size, config.next_used % size)
            } else {
                (config.next_avail, config.next_used)
            };
            let state = PackedQueueState {
                size,
                desc_ring: rings[0],
                driver_event: rings[1],
                device_event: rings[2],
                next_avail,
                avail_wrap: config.avail_wrap,
                next_used,
                used_wrap: config.used_wrap,
                event_idx: config.event_idx,
                indirect: config.indirect,
            };
            let result = PackedQueue::new(state, &mem);
            let violations = packed_violations(&state);
            let q = check_new(result, &violations)?;
            assert_eq!(q.state(), state);
            let model = PackedModel {
                desc: rings[0],
                driver_event: rings[1],
                device_event: rings[2],
                pos: next_avail,
                wrap: config.avail_wrap,
                in_flight: Vec::new(),
                kick_on_desc: false,
            };
            (Virtqueue::from(q), Model::Packed(model))
        } else {
            let state = QueueState {
                size,
                desc_table: rings[0],
                avail_ring: rings[1],
                used_ring: rings[2],
                next_avail: config.next_avail,
                next_used: config.next_used,
                event_idx: config.event_idx,
                indirect: config.indirect,
            };
            let result = SplitQueue::new(state, &mem);
            let q = check_new(result, &split_violations(&state))?;
            assert_eq!(q.state(), state);
            // The driver starts where the device does.
            let avail_idx = config.next_avail;
            wr16(&mem, rings[1] + 2, avail_idx);
            let model = SplitModel {
                desc: rings[0],
                avail: rings[1],
                used: rings[2],
                avail_idx,
                next_desc: 0,
                signalled: None,
            };
            (Virtqueue::from(q), Model::Split(model))
        };
        assert_eq!(q.size(), size);
        Some(Self {
            mem,
            q,
            size,
            event_idx: config.event_idx,
            indirect: config.indirect,
            model,
            held: Vec::new(),
            pops: 0,
            io_left: IO_BUDGET,
            stats: Stats::default(),
        })
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Desc { index, addr, len, flags, next } => {
                let i = u64::from(index % self.size);
                match &self.model {
                    Model::Split(m) => {
                        let raw = split_desc(addr.get(), len.get(), flags, next);
                        let _ = self.mem.write_slice(&raw, GuestAddress(m.desc + 16 * i));
                    }
                    Model::Packed(m) => {
                        let raw = packed_desc(addr.get(), len.get(), next, flags);
                        let _ = self.mem.write_slice(&raw, GuestAddress(m.desc + 16 * i));
                    }
                }
            }
            Op::Chain { bufs, indirect, table, id } => {
                self.publish_chain(&bufs, indirect, table, id)
            }
            Op::Publish(head) => self.publish_head(head),
            Op::DriverIndex(v) => match &mut self.model {
                Model::Split(m) => {
                    m.avail_idx = v;
                    let at = m.avail + 2;
                    wr16(&self.mem, at, v);
                }
                Model::Packed(m) => {
                    m.pos = (v & 0x7fff) % self.size;
                    m.wrap = v & 0x8000 != 0;
                }
            },
            Op::Poke { at, bytes } => {
                let _ = self.mem.write_slice(&bytes, GuestAddress(at.get()));
            }
            Op::RingWord { which, value } => self.ring_word(which, value),
            Op::Pop(mode) => {
                self.pop(mode);
            }
            Op::Drain(n) => {
                for _ in 0..=(n % 16) {
                    if !self.pop(0b111) {
                        break;
                    }
                }
            }
            Op::AddUsed { head, len } => self.add_used(head, len),
            Op::ReturnHeld => self.return_held(),
            Op::NeedsNotification => self.needs_notification(),
            Op::EnableNotification => self.enable_notification(),
            Op::DisableNotification => self.disable_notification(),
            Op::Segments { segments, write } => {
                let segments: Vec<Segment> = segments
                    .iter()
                    .map(|(a, l)| Segment { addr: GuestAddress(a.get()), len: l.get() })
                    .collect();
                self.segments(&segments, write);
            }
        }
    }

    fn ring_word(&mut self, which: u8, value: u16) {
        let size = u64::from(self.size);
        let at = match &mut self.model {
            Model::Split(m) => match which % 6 {
                0 => m.avail,
                1 => {
                    m.avail_idx = value;
                    m.avail + 2
                }
                2 => m.avail + 4 + 2 * size,
                3 => m.used,
                4 => m.used + 2,
                _ => m.used + 4 + 8 * size,
            },
            Model::Packed(m) => match which % 4 {
                0 => m.driver_event,
                1 => m.driver_event + 2,
                2 => m.device_event,
                _ => m.device_event + 2,
            },
        };
        wr16(&self.mem, at, value);
    }

    /// The model driver makes `bufs` available as one chain.
    fn publish_chain(&mut self, bufs: &[Buf], indirect: bool, table: Addr, id: u16) {
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
    fn publish_head(&mut self, head: u16) {
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

    /// What the next pop must do, from guest memory and the model alone.
    fn expect_pop(&self) -> Expect {
        let size = self.size;
        match &self.model {
            Model::Split(m) => {
                let st = split_state(&self.q);
                let avail_idx = rd16(&self.mem, m.avail + 2);
                let pending = avail_idx.wrapping_sub(st.next_avail);
                let Virtqueue::Split(q) = &self.q else { unreachable!("split") };
                let jump = QueueError::AvailIdxJump {
                    avail_idx,
                    next_avail: st.next_avail,
                    pending,
                    size,
                };
                if pending > size {
                    assert_eq!(q.pending(&self.mem), Err(jump));
                    return Expect::Refused(jump);
                }
                assert_eq!(q.pending(&self.mem), Ok(pending));
                if pending == 0 {
                    return Expect::Empty;
                }
                let slot = u64::from(st.next_avail % size);
                let head = rd16(&self.mem, m.avail + 4 + 2 * slot);
                Expect::Consume { head, slots: 1, terminated: true }
            }
            Model::Packed(m) => {
                let st = packed_state(&self.q);
                let flags = rd16(&self.mem, m.desc + 16 * u64::from(st.next_avail) + 14);
                let avail = flags & PACKED_DESC_F_AVAIL != 0;
                let used = flags & PACKED_DESC_F_USED != 0;
                let available = avail == st.avail_wrap && used != st.avail_wrap;
                let Virtqueue::Packed(q) = &self.q else { unreachable!("packed") };
                assert_eq!(q.has_available(&self.mem), Ok(available));
                if !available {
                    return Expect::Empty;
                }
                let (mut slot, mut slots) = (st.next_avail, 0u16);
                let (terminated, id) = loop {
                    let raw = rd_desc(&self.mem, m.desc + 16 * u64::from(slot));
                    slots += 1;
                    let id = u16::from_le_bytes([raw[12], raw[13]]);
                    slot = (slot + 1) % size;
                    if u16::from_le_bytes([raw[14], raw[15]]) & DESC_F_NEXT == 0 {
                        break (true, id);
                    }
                    if slots >= size {
                        break (false, id);
                    }
                };
                let in_flight: u32 = m.in_flight.iter().map(|&(_, s)| u32::from(s)).sum();
                if in_flight + u32::from(slots) > u32::from(size) {
                    return Expect::Refused(QueueError::InFlightOverflow { size });
                }
                Expect::Consume { head: id, slots, terminated }
            }
        }
    }

    /// Pops one chain and checks it against the model; false when nothing was consumed.
    fn pop(&mut self, mode: u8) -> bool {
        if self.pops >= MAX_POPS {
            return false;
        }
        self.pops += 1;
        let expect = self.expect_pop();
        let (split_before, packed_before) = match &self.model {
            Model::Split(_) => (Some(split_state(&self.q)), None),
            Model::Packed(_) => (None, Some(packed_state(&self.q))),
        };
        let result = self.q.pop(&self.mem);
        let (head, slots, terminated) = match expect {
            Expect::Empty => {
                assert_eq!(result, Ok(None), "nothing was available");
                self.assert_unchanged(split_before, packed_before);
                return false;
            }
            Expect::Refused(e) => {
                assert_eq!(result, Err(e));
                self.assert_unchanged(split_before, packed_before);
                return false;
            }
            Expect::Consume { head, slots, terminated } => (head, slots, terminated),
        };
        let size = self.size;
        match &mut self.model {
            Model::Split(m) => {
                let before = split_before.expect("split state");
                let after = split_state(&self.q);
                let want = QueueState { next_avail: before.next_avail.wrapping_add(1), ..before };
                assert_eq!(after, want, "a pop consumes exactly one available entry");
                if self.event_idx {
                    let at = m.used + 4 + 8 * u64::from(size);
                    assert_eq!(
                        rd16(&self.mem, at),
                        after.next_avail,
                        "avail_event follows the device"
                    );
                }
            }
            Model::Packed(m) => {
                let before = packed_before.expect("packed state");
                let (next_avail, avail_wrap) =
                    advance(before.next_avail, before.avail_wrap, slots, size);
                let want = PackedQueueState { next_avail, avail_wrap, ..before };
                assert_eq!(packed_state(&self.q), want, "a pop consumes the chain's slots");
                m.in_flight.push((head, slots));
                let in_flight: u32 = m.in_flight.iter().map(|&(_, s)| u32::from(s)).sum();
                assert!(in_flight <= u32::from(size), "more slots in flight than the ring has");
                if self.event_idx && m.kick_on_desc {
                    let got = u16::from_le(
                        self.mem.read_obj(GuestAddress(m.device_event)).expect("device event"),
                    );
                    assert_eq!(got, off_wrap(next_avail, avail_wrap), "device event offset");
                }
            }
        }
        match result {
            Ok(Some(chain)) => {
                self.stats.chains += 1;
                assert!(terminated, "a chain without an end was accepted");
                assert_eq!(chain.head(), head, "the chain is the one made available");
                self.check_chain(&chain);
                let mut written = 0;
                if mode & 1 != 0 {
                    self.read_chain(&chain);
                }
                if mode & 2 != 0 {
                    written = self.write_chain(&chain);
                }
                if mode & 4 != 0 {
                    self.add_used(head, written);
                } else {
                    self.hold(head, Some(chain));
                }
            }
            Ok(None) => panic!("an available chain was not consumed"),
            Err(e) => {
                self.stats.bad_chains += 1;
                if !terminated {
                    assert_eq!(e, QueueError::ChainTooLong { head, max: u32::from(size) });
                }
                assert_eq!(e.head(), Some(head), "{e}: a consumed chain's error names it");
                check_error(&e, size, self.indirect);
                // A bad chain goes back with length 0 unless the input keeps it.
                if mode & 8 == 0 {
                    self.add_used(head, 0);
                } else {
                    self.hold(head, None);
                }
            }
        }
        true
    }

    fn assert_unchanged(&self, split: Option<QueueState>, packed: Option<PackedQueueState>) {
        if let Some(before) = split {
            assert_eq!(split_state(&self.q), before, "nothing consumed");
        }
        if let Some(before) = packed {
            assert_eq!(packed_state(&self.q), before, "nothing consumed");
        }
    }

    fn hold(&mut self, head: u16, chain: Option<DescriptorChain>) {
        if self.held.len() >= MAX_HELD {
            self.return_held();
        }
        self.held.push((head, chain));
    }

    fn return_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let (head, chain) = self.held.remove(0);
        let written = match chain {
            Some(chain) => self.write_chain(&chain),
            None => 0,
        };
        self.add_used(head, written);
    }

    fn check_chain(&self, chain: &DescriptorChain) {
        let segments = chain.readable().len() + chain.writable().len();
        assert!(
            segments <= usize::from(self.size),
            "{segments} segments, queue size {}",
            self.size
        );
        let mut totals = [0u64; 2];
        for (total, part) in totals.iter_mut().zip([chain.readable(), chain.writable()]) {
            for s in part {
                assert!(in_memory(s.addr.0, u64::from(s.len)), "segment {s:?} outside memory");
                *total += u64::from(s.len);
            }
        }
        assert_eq!(totals[0], u64::from(chain.readable_len()), "readable total");
        assert_eq!(totals[1], u64::from(chain.writable_len()), "writable total");
        if let Model::Split(_) = self.model {
            assert!(chain.head() < self.size, "split head {} outside the table", chain.head());
        }
    }

    /// Reads the readable part (within the budget); it must all succeed and match memory.
    fn read_chain(&mut self, chain: &DescriptorChain) {
        let mut r = Reader::new(&self.mem, chain);
        assert_eq!(r.remaining(), chain.readable_len() as usize);
        let mut pos = 0;
        let mut buf = vec![0u8; CHUNK];
        while r.remaining() > 0 && self.io_left > 0 {
            let want = CHUNK.min(self.io_left);
            let before = r.remaining();
            let n = r.read(&mut buf[..want]).expect("a validated chain reads");
            assert_eq!(n, want.min(before));
            assert_eq!(r.remaining(), before - n);
            let mut at = 0;
            for piece in pieces(chain.readable(), pos, n) {
                let (addr, len) = piece.expect("validated segments do not overflow");
                let mut expect = vec![0u8; len as usize];
                self.mem.read_slice(&mut expect, GuestAddress(addr)).expect("in memory");
                assert_eq!(&buf[at..at + len as usize], &expect[..], "reader bytes");
                at += len as usize;
            }
            assert_eq!(at, n);
            pos += n;
            self.io_left -= n;
        }
    }

    /// Fills the writable part (within the budget); returns the bytes written.
    fn write_chain(&mut self, chain: &DescriptorChain) -> u32 {
        let mut w = Writer::new(&self.mem, chain);
        assert_eq!(w.remaining(), chain.writable_len() as usize);
        let data: Vec<u8> = (0..CHUNK).map(|i| i as u8 ^ 0x5a).collect();
        while w.remaining() > 0 && self.io_left > 0 {
            let want = CHUNK.min(self.io_left);
            let before = w.remaining();
            let n = w.write(&data[..want]).expect("a validated chain writes");
            assert_eq!(n, want.min(before));
            assert_eq!(w.remaining(), before - n);
            self.io_left -= n;
        }
        assert_eq!(w.written() + w.remaining(), chain.writable_len() as usize);
        u32::try_from(w.written()).expect("at most writable_len")
    }

    /// A reader or writer over arbitrary segments: an `Ok` must only have touched guest memory.
    fn segments(&mut self, segments: &[Segment], write: bool) {
        let total: usize = segments.iter().map(|s| s.len as usize).sum();
        let mut buf = vec![0xa5u8; CHUNK];
        let mut reader = Reader::from_segments(&self.mem, segments);
        let mut writer = Writer::from_segments(&self.mem, segments);
        assert_eq!(reader.remaining(), total);
        assert_eq!(writer.remaining(), total);
        let mut pos = 0;
        while pos < total && self.io_left > 0 {
            let want = CHUNK.min(self.io_left);
            let result =
                if write { writer.write(&buf[..want]) } else { reader.read(&mut buf[..want]) };
            let expect = want.min(total - pos);
            let touched = pieces(segments, pos, expect);
            let outside = touched.iter().any(|p| !p.is_some_and(|(a, l)| in_memory(a, l)));
            match result {
                Ok(n) => {
                    assert_eq!(n, expect);
                    assert!(!outside, "Ok access outside guest memory: {touched:x?}");
                    pos += n;
                    self.io_left -= n;
                }
                Err(e) => {
                    assert!(matches!(e, QueueError::Memory { .. }), "{e}");
                    assert!(outside, "{e} although {touched:x?} is in memory");
                    return;
                }
            }
        }
        if write {
            assert_eq!(writer.written(), pos);
        }
    }

    fn add_used(&mut self, head: u16, len: u32) {
        let size = self.size;
        match &mut self.model {
            Model::Split(m) => {
                let (used, before) = (m.used, split_state(&self.q));
                let result = self.q.add_used(&self.mem, head, len);
                if head >= size {
                    assert_eq!(result, Err(QueueError::UsedHeadOutOfRange { head, size }));
                    assert_eq!(split_state(&self.q), before);
                    return;
                }
                assert_eq!(result, Ok(()), "add_used of an in-range head");
                let after = split_state(&self.q);
                let next_used = before.next_used.wrapping_add(1);
                assert_eq!(after, QueueState { next_used, ..before });
                let mut elem = [0u8; 8];
                let at = used + 4 + 8 * u64::from(before.next_used % size);
                self.mem.read_slice(&mut elem, GuestAddress(at)).expect("used ring");
                assert_eq!(elem[..4], u32::from(head).to_le_bytes(), "used id");
                assert_eq!(elem[4..], len.to_le_bytes(), "used len");
                assert_eq!(rd16(&self.mem, used + 2), next_used, "used idx published");
            }
            Model::Packed(m) => {
                let before = packed_state(&self.q);
                let result = self.q.add_used(&self.mem, head, len);
                let Some(at) = m.in_flight.iter().position(|&(id, _)| id == head) else {
                    assert_eq!(result, Err(QueueError::UsedIdNotInFlight { id: head }));
                    assert_eq!(packed_state(&self.q), before);
                    return;
                };
                assert_eq!(result, Ok(()), "add_used of an in-flight id");
                let (_, slots) = m.in_flight.remove(at);
                let (next_used, used_wrap) =
                    advance(before.next_used, before.used_wrap, slots, size);
                let after = packed_state(&self.q);
                assert_eq!(after, PackedQueueState { next_used, used_wrap, ..before });
                let mut raw = [0u8; 16];
                let slot_at = m.desc + 16 * u64::from(before.next_used);
                self.mem.read_slice(&mut raw, GuestAddress(slot_at)).expect("descriptor ring");
                assert_eq!(raw[8..12], len.to_le_bytes(), "used len");
                assert_eq!(raw[12..14], head.to_le_bytes(), "used id");
                let mut flags =
                    if before.used_wrap { PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED } else { 0 };
                if len > 0 {
                    flags |= DESC_F_WRITE;
                }
                assert_eq!(raw[14..], flags.to_le_bytes(), "used flags");
            }
        }
    }

    fn needs_notification(&mut self) {
        let result = self.q.needs_notification(&self.mem);
        let size = u64::from(self.size);
        match &mut self.model {
            Model::Split(m) => {
                let new = split_state(&self.q).next_used;
                let expect = if self.event_idx {
                    let used_event = rd16(&self.mem, m.avail + 4 + 2 * size);
                    let old = m.signalled.replace(new);
                    old.is_none_or(|old| {
                        new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old)
                    })
                } else {
                    m.signalled = Some(new);
                    rd16(&self.mem, m.avail) & 1 == 0
                };
                assert_eq!(result, Ok(expect), "split notification decision");
            }
            Model::Packed(m) => {
                let flags = rd16(&self.mem, m.driver_event + 2) & 3;
                let notify = result.expect("validated event structures");
                if flags == RING_EVENT_FLAGS_DISABLE {
                    assert!(!notify, "notified although the driver disabled it");
                } else if flags != RING_EVENT_FLAGS_DESC || !self.event_idx {
                    assert!(notify, "not notified although the driver enabled it");
                }
            }
        }
    }

    fn enable_notification(&mut self) {
        let result = self.q.enable_notification(&self.mem);
        let size = self.size;
        match &mut self.model {
            Model::Split(m) => {
                let st = split_state(&self.q);
                if self.event_idx {
                    let at = m.used + 4 + 8 * u64::from(size);
                    assert_eq!(rd16(&self.mem, at), st.next_avail, "avail_event");
                } else {
                    assert_eq!(rd16(&self.mem, m.used), 0, "used flags cleared");
                }
                let avail_idx = rd16(&self.mem, m.avail + 2);
                let pending = avail_idx.wrapping_sub(st.next_avail);
                if pending > size {
                    let next_avail = st.next_avail;
                    let jump = QueueError::AvailIdxJump { avail_idx, next_avail, pending, size };
                    assert_eq!(result, Err(jump));
                } else {
                    assert_eq!(result, Ok(pending != 0));
                }
            }
            Model::Packed(m) => {
                let st = packed_state(&self.q);
                m.kick_on_desc = self.event_idx;
                let flags = rd16(&self.mem, m.device_event + 2);
                if self.event_idx {
                    let off = rd16(&self.mem, m.device_event);
                    assert_eq!(off, off_wrap(st.next_avail, st.avail_wrap), "device event offset");
                    assert_eq!(flags, RING_EVENT_FLAGS_DESC);
                } else {
                    assert_eq!(flags, RING_EVENT_FLAGS_ENABLE);
                }
                let raw = rd16(&self.mem, m.desc + 16 * u64::from(st.next_avail) + 14);
                let avail = raw & PACKED_DESC_F_AVAIL != 0;
                let used = raw & PACKED_DESC_F_USED != 0;
                let available = avail == st.avail_wrap && used != st.avail_wrap;
                assert_eq!(result, Ok(available));
            }
        }
    }

    fn disable_notification(&mut self) {
        let result = self.q.disable_notification(&self.mem);
        assert_eq!(result, Ok(()), "validated rings");
        match &mut self.model {
            Model::Split(m) => {
                if !self.event_idx {
                    assert_eq!(rd16(&self.mem, m.used), 1, "VIRTQ_USED_F_NO_NOTIFY");
                }
            }
            Model::Packed(m) => {
                m.kick_on_desc = false;
                assert_eq!(rd16(&self.mem, m.device_event + 2), RING_EVENT_FLAGS_DISABLE);
            }
        }
    }
}

/// Checks a construction result against the model's list of violated rules.
fn check_new<Q>(result: Result<Q, QueueError>, violations: &[QueueError]) -> Option<Q> {
    match result {
        Ok(q) => {
            assert!(violations.is_empty(), "accepted although {violations:?}");
            Some(q)
        }
        Err(e) => {
            assert!(violations.contains(&e), "{e} is not among {violations:?}");
            None
        }
    }
}

fn ring_violations(out: &mut Vec<QueueError>, ring: Ring, addr: u64, align: u64, len: u64) {
    if addr % align != 0 {
        out.push(QueueError::Misaligned { ring, addr, align });
    }
    if !in_memory(addr, len) {
        out.push(QueueError::RingOutOfRange { ring, addr, len });
    }
}

fn split_violations(s: &QueueState) -> Vec<QueueError> {
    let mut out = Vec::new();
    if s.size == 0 || s.size > MAX_QUEUE_SIZE || !s.size.is_power_of_two() {
        out.push(QueueError::InvalidSize(s.size));
        return out;
    }
    let n = u64::from(s.size);
    ring_violations(&mut out, Ring::Descriptors, s.desc_table, 16, 16 * n);
    ring_violations(&mut out, Ring::Available, s.avail_ring, 2, 6 + 2 * n);
    ring_violations(&mut out, Ring::Used, s.used_ring, 4, 6 + 8 * n);
    out
}

fn packed_violations(s: &PackedQueueState) -> Vec<QueueError> {
    let mut out = Vec::new();
    if s.size == 0 || s.size > MAX_QUEUE_SIZE {
        out.push(QueueError::InvalidSize(s.size));
        return out;
    }
    for index in [s.next_avail, s.next_used] {
        if index >= s.size {
            out.push(QueueError::BaseOutOfRange { index, size: s.size });
        }
    }
    ring_violations(&mut out, Ring::Descriptors, s.desc_ring, 16, 16 * u64::from(s.size));
    ring_violations(&mut out, Ring::DriverEvent, s.driver_event, 4, 4);
    ring_violations(&mut out, Ring::DeviceEvent, s.device_event, 4, 4);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CORPUS_DIR);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.expect("directory entry").path();
                let name = path.file_name().expect("file name").to_string_lossy().into_owned();
                (name, std::fs::read(&path).expect("corpus file reads"))
            })
            .collect();
        files.sort();
        files
    }

    /// Each seed builds a queue and pops the chains it was written for.
    #[test]
    fn seeds_reach_the_chains() {
        for (name, input) in seeds() {
            let stats = session(&input).unwrap_or_else(|| panic!("{name}: no queue"));
            if name.ends_with("malformed") {
                assert!(stats.bad_chains >= 2, "{name}: {stats:?}");
            } else if name != "segments_edges" {
                assert!(stats.chains >= 2, "{name}: {stats:?}");
                assert_eq!(stats.bad_chains, 0, "{name}: {stats:?}");
            }
        }
    }

    /// Decoding gives back what was encoded.
    #[test]
    fn input_format_round_trips() {
        for (name, input) in seeds() {
            let mut c = Cursor::new(&input);
            let config = Config::decode(&mut c).expect("config");
            let mut ops = Vec::new();
            while !c.is_empty() {
                ops.push(Op::decode(&mut c).unwrap_or_else(|| panic!("{name}: truncated op")));
            }
            assert_eq!(encode(&config, &ops), input, "{name}");
        }
    }

    /// The corpus holds exactly the current seeds; `cargo run -p vhu-fuzz --example write_corpus`
    /// rewrites it.
    #[test]
    fn corpus_matches_seeds() {
        let mut expected: Vec<_> =
            seeds().into_iter().map(|(name, bytes)| (name.to_owned(), bytes)).collect();
        expected.sort();
        assert_eq!(corpus(), expected, "corpus is stale: run the write_corpus example");
    }

    /// Every prefix and a few bit flips of every seed.
    #[test]
    fn replays_mutations_of_seeds() {
        for (_, input) in seeds() {
            for len in 0..=input.len() {
                run(&input[..len]);
            }
            for bit in (0..input.len() * 8).step_by(7) {
                let mut flipped = input.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                run(&flipped);
            }
        }
    }

    /// Replays deterministic pseudo-random inputs, so `cargo test` exercises the target.
    #[test]
    fn replays_pseudo_random_inputs() {
        let mut state = 0x853c_49e6_748f_ea9bu64;
        for len in (0..1500).step_by(3) {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            run(&bytes);
        }
    }

    /// Inputs that once crashed the target, kept in `regressions/virtq_chain/` (may be absent).
    #[test]
    fn replays_regressions() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/virtq_chain");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            println!("replaying {}", path.display());
            run(&std::fs::read(&path).expect("regression file reads"));
        }
    }
}
