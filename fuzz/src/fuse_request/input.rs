//! The `fuse_request` input format: numbers, names, structured requests and sessions, each
//! with its decoder and the encoder the seeds are written with.

use crate::cursor::{Cursor, Out};
use crate::memfs::NAMES;

use super::{MAX_RAW, MAX_REQUESTS};

/// A number: usually small, so that node ids and handles hit live ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Num {
    Small(u8),
    Raw(u64),
}

impl Num {
    pub(super) fn get(self) -> u64 {
        match self {
            Self::Small(v) => u64::from(v),
            Self::Raw(v) => v,
        }
    }

    pub(super) fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(if c.u8()? % 4 != 3 { Self::Small(c.u8()?) } else { Self::Raw(c.u64()?) })
    }

    pub(super) fn encode(self, o: &mut Out) {
        match self {
            Self::Small(v) => (o.u8(0), o.u8(v)).1,
            Self::Raw(v) => (o.u8(3), o.u64(v)).1,
        }
    }
}

/// A name in a request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    /// One of [`NAMES`], NUL-terminated.
    Known(u8),
    /// Arbitrary bytes, NUL-terminated (an inner NUL ends the name early).
    Bytes(Vec<u8>),
    /// Arbitrary bytes without a terminator.
    Unterminated(Vec<u8>),
    /// `200 + n` bytes of `a`, around NAME_MAX.
    Long(u8),
}

impl Name {
    pub(super) fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(match c.u8()? % 4 {
            0 => Self::Known(c.u8()?),
            1 => Self::Bytes(c.short_bytes()?.to_vec()),
            2 => Self::Unterminated(c.short_bytes()?.to_vec()),
            _ => Self::Long(c.u8()?),
        })
    }

    pub(super) fn encode(&self, o: &mut Out) {
        match self {
            Self::Known(i) => (o.u8(0), o.u8(*i)).1,
            Self::Bytes(b) => (o.u8(1), o.short_bytes(b)).1,
            Self::Unterminated(b) => (o.u8(2), o.short_bytes(b)).1,
            Self::Long(n) => (o.u8(3), o.u8(*n)).1,
        }
    }

    pub(super) fn put(&self, body: &mut Vec<u8>) {
        match self {
            Self::Known(i) => {
                body.extend_from_slice(NAMES[usize::from(*i) % NAMES.len()]);
                body.push(0);
            }
            Self::Bytes(b) => {
                body.extend_from_slice(b);
                body.push(0);
            }
            Self::Unterminated(b) => body.extend_from_slice(b),
            Self::Long(n) => {
                body.resize(body.len() + 200 + usize::from(*n), b'a');
                body.push(0);
            }
        }
    }
}

/// A request built from typed fields; `a`, `b`, `c` and `d` fill the opcode's argument struct
/// (handles, offsets, sizes, flags, modes) and `data` its trailing bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Structured {
    pub(crate) opcode: u8,
    pub(crate) unique: u64,
    pub(crate) node: Num,
    pub(crate) a: Num,
    pub(crate) b: Num,
    pub(crate) c: u32,
    pub(crate) d: u32,
    pub(crate) names: [Name; 2],
    pub(crate) data: Vec<u8>,
    /// Request extensions: `ext % 4` words of 8 bytes.
    pub(crate) ext: u8,
    /// Bytes cut from the end of the arguments (0: none).
    pub(crate) cut: u8,
}

/// One request of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Req {
    Raw(Vec<u8>),
    Structured(Box<Structured>),
}

/// A session: limits, the opening INIT and the requests, each with its reply space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) queue_size: u16,
    /// INIT minor: `27 + minor % 12`.
    pub(crate) minor: u8,
    pub(crate) init_flags: u32,
    pub(crate) init_flags2: u32,
    /// Each request and its reply-space selector (below 240: plenty; else `(v - 240) * 8`).
    pub(crate) requests: Vec<(Req, u8)>,
}

impl Structured {
    pub(super) fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(Self {
            opcode: c.u8()?,
            unique: c.u64()?,
            node: Num::decode(c)?,
            a: Num::decode(c)?,
            b: Num::decode(c)?,
            c: c.u32()?,
            d: c.u32()?,
            names: [Name::decode(c)?, Name::decode(c)?],
            data: c.long_bytes(MAX_RAW)?.to_vec(),
            ext: c.u8()?,
            cut: c.u8()?,
        })
    }

    pub(super) fn encode(&self, o: &mut Out) {
        o.u8(self.opcode);
        o.u64(self.unique);
        self.node.encode(o);
        self.a.encode(o);
        self.b.encode(o);
        o.u32(self.c);
        o.u32(self.d);
        for n in &self.names {
            n.encode(o);
        }
        o.long_bytes(&self.data);
        o.u8(self.ext);
        o.u8(self.cut);
    }
}

impl Session {
    pub(super) fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        let queue_size = c.u16()?;
        let minor = c.u8()?;
        let init_flags = c.u32()?;
        let init_flags2 = c.u32()?;
        let mut requests = Vec::new();
        while requests.len() < MAX_REQUESTS {
            let Some(tag) = c.u8() else { break };
            let req = if tag % 4 == 0 {
                let Some(bytes) = c.long_bytes(MAX_RAW) else { break };
                Req::Raw(bytes.to_vec())
            } else {
                let Some(s) = Structured::decode(c) else { break };
                Req::Structured(Box::new(s))
            };
            let Some(space) = c.u8() else { break };
            requests.push((req, space));
        }
        Some(Self { queue_size, minor, init_flags, init_flags2, requests })
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut o = Out::default();
        o.u16(self.queue_size);
        o.u8(self.minor);
        o.u32(self.init_flags);
        o.u32(self.init_flags2);
        for (req, space) in &self.requests {
            match req {
                Req::Raw(bytes) => {
                    o.u8(0);
                    o.long_bytes(bytes);
                }
                Req::Structured(s) => {
                    o.u8(1);
                    s.encode(&mut o);
                }
            }
            o.u8(*space);
        }
        o.0
    }
}
