//! The scripted input of `backend_session`: after the [`SCRIPT`] byte, operations follow as
//! `[tag u8][fields...]`, little-endian, until the input ends or a tag is unknown.
//!
//! Requests have tags 0 to 37 in the order of [`Req`], then their NEED_REPLY flag, then their
//! fields; a list is a one-byte count and its elements, a byte string a one-byte length and its
//! bytes. Completions have tags 0x40 to 0x49 in the order of [`Comp`], back-end API calls 0x60
//! to 0x63 in the order of [`Api`].

use crate::cursor::{Cursor, Out, SCRIPT};

use super::{Api, Comp, Op, Req};

/// Decodes the operations of a script (the input after its [`SCRIPT`] byte).
pub(super) fn decode(data: &[u8]) -> Vec<Op> {
    let mut c = Cursor::new(data);
    let mut ops = Vec::new();
    while let Some(op) = op(&mut c) {
        ops.push(op);
    }
    ops
}

fn op(c: &mut Cursor<'_>) -> Option<Op> {
    let tag = c.u8()?;
    Some(match tag {
        0..=0x3f => {
            let need_reply = c.bool()?;
            Op::Request(req(tag, c)?, need_reply)
        }
        0x40..=0x5f => Op::Complete(comp(tag, c)?),
        _ => Op::Api(api(tag, c)?),
    })
}

fn req(tag: u8, c: &mut Cursor<'_>) -> Option<Req> {
    use Req::*;
    Some(match tag {
        0 => GetFeatures,
        1 => SetFeatures(c.u64()?),
        2 => SetOwner,
        3 => ResetOwner,
        4 => GetProtocolFeatures,
        5 => SetProtocolFeatures(c.u32()?),
        6 => GetQueueNum,
        7 => {
            let n = c.u8()?;
            let mut regions = Vec::new();
            for _ in 0..n {
                regions.push((c.u8()?, c.u8()?));
            }
            SetMemTable(regions)
        }
        8 => GetMaxMemSlots,
        9 => AddMemReg(c.u8()?, c.u8()?),
        10 => RemMemReg(c.u8()?, c.u8()?, c.bool()?),
        11 => SetLogBase(c.u16()?, c.bool()?),
        12 => SetVringNum(c.u8()?, c.u16()?),
        13 => SetVringAddr(c.u8()?, c.u16()?, c.u16()?, c.u16()?, c.bool()?),
        14 => SetVringBase(c.u8()?, c.u32()?),
        15 => GetVringBase(c.u8()?),
        16 => GetVringBaseSkipDrain(c.u8()?),
        17 => SetVringKick(c.u8()?, c.bool()?),
        18 => SetVringCall(c.u8()?, c.bool()?),
        19 => SetVringEnable(c.u8()?, c.bool()?),
        20 => VringKick(c.u8()?),
        21 => GetConfig(c.u8()?, c.u8()?),
        22 => SetConfig(c.u8()?, c.short_bytes()?.to_vec()),
        23 => SetStatus(c.u8()?),
        24 => GetStatus,
        25 => ResetDevice,
        26 => GetInflightFd(c.u16()?, c.u16()?),
        27 => SetInflightFd(c.u16()?),
        28 => SetBackendReqFd,
        29 => SetDeviceStateFd(c.bool()?),
        30 => CheckDeviceState,
        31 => GetShmemConfig,
        32 => GetSharedObject(c.u8()?),
        33 => PostcopyAdvise,
        34 => PostcopyListen,
        35 => PostcopyEnd,
        36 => PostcopyAck,
        37 => Raw(c.u8()?, c.short_bytes()?.to_vec(), c.u8()?),
        _ => return None,
    })
}

fn comp(tag: u8, c: &mut Cursor<'_>) -> Option<Comp> {
    Some(match tag - 0x40 {
        0 => Comp::Ok,
        1 => Comp::Failed(c.u8()?),
        2 => Comp::Stopped(c.u8()?, c.u32()?),
        3 => Comp::Config(c.short_bytes()?.to_vec()),
        4 => Comp::ConfigFailed,
        5 => Comp::Inflight(c.bool()?),
        6 => Comp::DeviceState(match c.u8()? {
            0 => None,
            b => Some(b == 2),
        }),
        7 => Comp::SharedObject(c.bool()?),
        8 => Comp::Userfaultfd(c.bool()?),
        9 => {
            let n = c.u8()?;
            let mut bases = Vec::new();
            for _ in 0..n {
                bases.push(c.u64()?);
            }
            Comp::PostcopyMapped(bases)
        }
        _ => return None,
    })
}

fn api(tag: u8, c: &mut Cursor<'_>) -> Option<Api> {
    Some(match tag {
        0x60 => Api::ConfigChange,
        0x61 => Api::ShmemMap(c.bool()?),
        0x62 => Api::SharedObjectAdd,
        0x63 => Api::VringCall(c.u8()?),
        _ => return None,
    })
}

/// Encodes `ops` as a scripted input, [`SCRIPT`] byte first.
pub(super) fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Out::default();
    out.u8(SCRIPT);
    for op in ops {
        match op {
            Op::Request(req, need_reply) => encode_req(&mut out, req, *need_reply),
            Op::Complete(comp) => encode_comp(&mut out, comp),
            Op::Api(Api::ConfigChange) => out.u8(0x60),
            Op::Api(Api::ShmemMap(rw)) => {
                out.u8(0x61);
                out.bool(*rw);
            }
            Op::Api(Api::SharedObjectAdd) => out.u8(0x62),
            Op::Api(Api::VringCall(i)) => {
                out.u8(0x63);
                out.u8(*i);
            }
        }
    }
    out.0
}

fn encode_req(out: &mut Out, req: &Req, need_reply: bool) {
    use Req::*;
    let tag = |out: &mut Out, tag: u8| {
        out.u8(tag);
        out.bool(need_reply);
    };
    match req {
        GetFeatures => tag(out, 0),
        SetFeatures(bits) => {
            tag(out, 1);
            out.u64(*bits);
        }
        SetOwner => tag(out, 2),
        ResetOwner => tag(out, 3),
        GetProtocolFeatures => tag(out, 4),
        SetProtocolFeatures(bits) => {
            tag(out, 5);
            out.u32(*bits);
        }
        GetQueueNum => tag(out, 6),
        SetMemTable(regions) => {
            tag(out, 7);
            out.u8(u8::try_from(regions.len()).expect("at most 255 regions"));
            for (slot, pages) in regions {
                out.u8(*slot);
                out.u8(*pages);
            }
        }
        GetMaxMemSlots => tag(out, 8),
        AddMemReg(slot, pages) => {
            tag(out, 9);
            out.raw(&[*slot, *pages]);
        }
        RemMemReg(slot, pages, stray) => {
            tag(out, 10);
            out.raw(&[*slot, *pages, u8::from(*stray)]);
        }
        SetLogBase(pages, with_fd) => {
            tag(out, 11);
            out.u16(*pages);
            out.bool(*with_fd);
        }
        SetVringNum(i, num) => {
            tag(out, 12);
            out.u8(*i);
            out.u16(*num);
        }
        SetVringAddr(i, d, a, u, log) => {
            tag(out, 13);
            out.u8(*i);
            out.u16(*d);
            out.u16(*a);
            out.u16(*u);
            out.bool(*log);
        }
        SetVringBase(i, base) => {
            tag(out, 14);
            out.u8(*i);
            out.u32(*base);
        }
        GetVringBase(i) => out.raw(&[15, u8::from(need_reply), *i]),
        GetVringBaseSkipDrain(i) => out.raw(&[16, u8::from(need_reply), *i]),
        SetVringKick(i, fd) => out.raw(&[17, u8::from(need_reply), *i, u8::from(*fd)]),
        SetVringCall(i, fd) => out.raw(&[18, u8::from(need_reply), *i, u8::from(*fd)]),
        SetVringEnable(i, on) => out.raw(&[19, u8::from(need_reply), *i, u8::from(*on)]),
        VringKick(i) => out.raw(&[20, u8::from(need_reply), *i]),
        GetConfig(offset, size) => out.raw(&[21, u8::from(need_reply), *offset, *size]),
        SetConfig(offset, data) => {
            tag(out, 22);
            out.u8(*offset);
            out.short_bytes(data);
        }
        SetStatus(status) => out.raw(&[23, u8::from(need_reply), *status]),
        GetStatus => tag(out, 24),
        ResetDevice => tag(out, 25),
        GetInflightFd(n, size) => {
            tag(out, 26);
            out.u16(*n);
            out.u16(*size);
        }
        SetInflightFd(pages) => {
            tag(out, 27);
            out.u16(*pages);
        }
        SetBackendReqFd => tag(out, 28),
        SetDeviceStateFd(load) => out.raw(&[29, u8::from(need_reply), u8::from(*load)]),
        CheckDeviceState => tag(out, 30),
        GetShmemConfig => tag(out, 31),
        GetSharedObject(b) => out.raw(&[32, u8::from(need_reply), *b]),
        PostcopyAdvise => tag(out, 33),
        PostcopyListen => tag(out, 34),
        PostcopyEnd => tag(out, 35),
        PostcopyAck => tag(out, 36),
        Raw(code, payload, nfds) => {
            tag(out, 37);
            out.u8(*code);
            out.short_bytes(payload);
            out.u8(*nfds);
        }
    }
}

fn encode_comp(out: &mut Out, comp: &Comp) {
    match comp {
        Comp::Ok => out.u8(0x40),
        Comp::Failed(e) => out.raw(&[0x41, *e]),
        Comp::Stopped(i, base) => {
            out.raw(&[0x42, *i]);
            out.u32(*base);
        }
        Comp::Config(bytes) => {
            out.u8(0x43);
            out.short_bytes(bytes);
        }
        Comp::ConfigFailed => out.u8(0x44),
        Comp::Inflight(ok) => out.raw(&[0x45, u8::from(*ok)]),
        Comp::DeviceState(fd) => out.raw(&[0x46, fd.map_or(0, |fd| 1 + u8::from(fd))]),
        Comp::SharedObject(ok) => out.raw(&[0x47, u8::from(*ok)]),
        Comp::Userfaultfd(ok) => out.raw(&[0x48, u8::from(*ok)]),
        Comp::PostcopyMapped(bases) => {
            out.u8(0x49);
            out.u8(u8::try_from(bases.len()).expect("at most 255 bases"));
            for base in bases {
                out.u64(*base);
            }
        }
    }
}
