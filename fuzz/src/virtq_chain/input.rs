//! The `virtq_chain` input format: guest addresses and lengths, the queue configuration and the
//! operations of a session, each with its decoder and the encoder the seeds are written with.

use crate::cursor::{Cursor, Out};

use super::memory::{A, A_LEN, B, B_LEN};
use super::{MAX_BUFS, MAX_SEGMENTS};

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
    pub(super) fn get(self) -> u64 {
        match self {
            Self::InA(o) => A + u64::from(o),
            Self::InB(o) => B + u64::from(o) % B_LEN,
            Self::EndA(n) => A + A_LEN - u64::from(n),
            Self::Hole(n) => A + A_LEN + u64::from(n),
            Self::EndB(n) => B + B_LEN - u64::from(n),
            Self::Raw(a) => a,
        }
    }

    pub(super) fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(match c.u8()? % 6 {
            0 => Self::InA(c.u16()?),
            1 => Self::InB(c.u16()?),
            2 => Self::EndA(c.u8()?),
            3 => Self::Hole(c.u8()?),
            4 => Self::EndB(c.u8()?),
            _ => Self::Raw(c.u64()?),
        })
    }

    pub(super) fn encode(self, o: &mut Out) {
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
    pub(super) fn get(self) -> u32 {
        match self {
            Self::Small(v) => u32::from(v),
            Self::Mid(v) => u32::from(v),
            Self::Raw(v) => v,
        }
    }

    pub(super) fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(match c.u8()? % 3 {
            0 => Self::Small(c.u8()?),
            1 => Self::Mid(c.u16()?),
            _ => Self::Raw(c.u32()?),
        })
    }

    pub(super) fn encode(self, o: &mut Out) {
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
    pub(super) fn decode(c: &mut Cursor<'_>) -> Option<Self> {
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

    pub(super) fn encode(&self, o: &mut Out) {
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
    /// Pops one chain; bit 0 reads it, bit 1 writes it, bit 2 returns it at once, bit 3 keeps
    /// a bad chain, bit 4 pops through a [`RingView`](vhu_transport_std::virtq::RingView).
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
    pub(super) fn decode(c: &mut Cursor<'_>) -> Option<Self> {
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

    pub(super) fn encode(&self, o: &mut Out) {
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
