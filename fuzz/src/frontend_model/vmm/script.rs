//! The scripted form of front-end configurations and VMM calls, shared by the front-end
//! targets' scripted inputs: `[tag u8][fields...]`, little-endian.
//!
//! A [`Config`] is its device features (u64), its protocol toggle (u32) and its bit-30 flag.
//! A [`Vmm`] call has a tag from 0 to 28 in the order of the enum, then its fields; an option is
//! a presence byte and the value when present, a list a one-byte count and its elements, a byte
//! string a one-byte length and its bytes.

use vhu_core::message::{ConfigFlags, TransferDirection};

use super::{Answer as Ans, Config, Ring, Saved, Vmm};
use crate::cursor::{Cursor, Out};

pub(crate) fn read_config(c: &mut Cursor<'_>) -> Option<Config> {
    Some(Config { device_features: c.u64()?, toggle: c.u32()?, protocol_features: c.bool()? })
}

pub(crate) fn write_config(out: &mut Out, config: &Config) {
    out.u64(config.device_features);
    out.u32(config.toggle);
    out.bool(config.protocol_features);
}

fn read_option<T>(
    c: &mut Cursor<'_>,
    read: impl FnOnce(&mut Cursor<'_>) -> Option<T>,
) -> Option<Option<T>> {
    Some(if c.bool()? { Some(read(c)?) } else { None })
}

fn write_option<T: Copy>(out: &mut Out, value: Option<T>, write: impl FnOnce(&mut Out, T)) {
    out.bool(value.is_some());
    if let Some(value) = value {
        write(out, value);
    }
}

fn read_ring(c: &mut Cursor<'_>) -> Option<Ring> {
    Some(Ring {
        size: c.u8()?,
        raw_size: c.u16()?,
        base: c.u32()?,
        log: c.bool()?,
        call: c.bool()?,
        kick: c.bool()?,
    })
}

fn read_saved(c: &mut Cursor<'_>) -> Option<Saved> {
    Some(Saved {
        last: c.bool()?,
        offered: c.u64()?,
        features: c.u64()?,
        protocol: c.u32()?,
        supported_only: c.bool()?,
        queues: read_option(c, |c| c.u8())?,
        slots: read_option(c, |c| c.u16())?,
    })
}

/// One VMM call; `None` at the end of the input or at an unknown tag.
pub(crate) fn read_vmm(c: &mut Cursor<'_>) -> Option<Vmm> {
    use Vmm::*;
    Some(match c.u8()? {
        0 => Connect(c.bool()?),
        1 => Restore(read_saved(c)?, c.bool()?),
        2 => {
            let n = c.u8()?;
            let mut regions = Vec::new();
            for _ in 0..n {
                regions.push((c.u8()?, c.u8()?));
            }
            SetMemTable(regions)
        }
        3 => AddRegion(c.u8()?, c.u8()?),
        4 => RemoveRegion(c.u8()?),
        5 => StartVring(c.u8()?, read_ring(c)?),
        6 => StopVring(c.u8()?),
        7 => StopVringSkipDrain(c.u8()?),
        8 => SetVringEnable(c.u8()?, c.bool()?),
        9 => SetVringCall(c.u8()?, c.bool()?),
        10 => SetVringErr(c.u8()?, c.bool()?),
        11 => SetVringAddr(c.u8()?, c.bool()?),
        12 => VringKick(c.u8()?),
        13 => SetFeatures(c.u64()?),
        14 => SetNegotiatedFeatures(c.u64()?),
        15 => SetLogging(c.bool()?),
        16 => GetConfig(c.u8()?, c.u16()?),
        17 => {
            let offset = c.u8()?;
            let data = c.short_bytes()?.to_vec();
            let flags = if c.bool()? { ConfigFlags::Migration } else { ConfigFlags::Writable };
            SetConfig(offset, data, flags)
        }
        18 => SetStatus(c.u8()?),
        19 => GetStatus,
        20 => ResetDevice,
        21 => GetSharedObject(c.u8()?),
        22 => SetDeviceStateFd(if c.bool()? {
            TransferDirection::Load
        } else {
            TransferDirection::Save
        }),
        23 => CheckDeviceState,
        24 => SetLogBase(c.u16()?),
        25 => SetLogFd,
        26 => GetInflightFd(c.u8()?, c.u16()?),
        27 => SetInflightFd(c.u16()?),
        28 => {
            let lookup = c.bool()?;
            let status = read_option(c, |c| c.u8())?;
            Answer(if lookup { Ans::SharedObject(status) } else { Ans::Done(status) })
        }
        29 => PostcopyAdvise,
        30 => PostcopyListen,
        31 => PostcopyEnd,
        32 => ResetOwner,
        33 => IotlbMsg(c.u8()?, c.bool()?),
        34 => CreateCryptoSession(c.u8()?),
        35 => CloseCryptoSession(c.u8()?),
        _ => return None,
    })
}

pub(crate) fn write_vmm(out: &mut Out, vmm: &Vmm) {
    use Vmm::*;
    let index_flag = |out: &mut Out, tag: u8, i: u8, flag: bool| out.raw(&[tag, i, u8::from(flag)]);
    match vmm {
        Connect(channel) => out.raw(&[0, u8::from(*channel)]),
        Restore(saved, channel) => {
            out.u8(1);
            out.bool(saved.last);
            out.u64(saved.offered);
            out.u64(saved.features);
            out.u32(saved.protocol);
            out.bool(saved.supported_only);
            write_option(out, saved.queues, Out::u8);
            write_option(out, saved.slots, Out::u16);
            out.bool(*channel);
        }
        SetMemTable(regions) => {
            out.u8(2);
            out.u8(u8::try_from(regions.len()).expect("at most 255 regions"));
            for (slot, pages) in regions {
                out.raw(&[*slot, *pages]);
            }
        }
        AddRegion(slot, pages) => out.raw(&[3, *slot, *pages]),
        RemoveRegion(pick) => out.raw(&[4, *pick]),
        StartVring(i, ring) => {
            out.raw(&[5, *i, ring.size]);
            out.u16(ring.raw_size);
            out.u32(ring.base);
            out.raw(&[u8::from(ring.log), u8::from(ring.call), u8::from(ring.kick)]);
        }
        StopVring(i) => out.raw(&[6, *i]),
        StopVringSkipDrain(i) => out.raw(&[7, *i]),
        SetVringEnable(i, on) => index_flag(out, 8, *i, *on),
        SetVringCall(i, fd) => index_flag(out, 9, *i, *fd),
        SetVringErr(i, fd) => index_flag(out, 10, *i, *fd),
        SetVringAddr(i, log) => index_flag(out, 11, *i, *log),
        VringKick(i) => out.raw(&[12, *i]),
        SetFeatures(bits) => {
            out.u8(13);
            out.u64(*bits);
        }
        SetNegotiatedFeatures(drop) => {
            out.u8(14);
            out.u64(*drop);
        }
        SetLogging(on) => out.raw(&[15, u8::from(*on)]),
        GetConfig(offset, size) => {
            out.raw(&[16, *offset]);
            out.u16(*size);
        }
        SetConfig(offset, data, flags) => {
            out.raw(&[17, *offset]);
            out.short_bytes(data);
            out.bool(*flags == ConfigFlags::Migration);
        }
        SetStatus(status) => out.raw(&[18, *status]),
        GetStatus => out.u8(19),
        ResetDevice => out.u8(20),
        GetSharedObject(b) => out.raw(&[21, *b]),
        SetDeviceStateFd(direction) => {
            out.raw(&[22, u8::from(*direction == TransferDirection::Load)]);
        }
        CheckDeviceState => out.u8(23),
        SetLogBase(pages) => {
            out.u8(24);
            out.u16(*pages);
        }
        SetLogFd => out.u8(25),
        GetInflightFd(queues, size) => {
            out.raw(&[26, *queues]);
            out.u16(*size);
        }
        SetInflightFd(pages) => {
            out.u8(27);
            out.u16(*pages);
        }
        Answer(answer) => {
            let (lookup, status) = match answer {
                Ans::Done(status) => (false, *status),
                Ans::SharedObject(status) => (true, *status),
            };
            out.raw(&[28, u8::from(lookup)]);
            write_option(out, status, Out::u8);
        }
        PostcopyAdvise => out.u8(29),
        PostcopyListen => out.u8(30),
        PostcopyEnd => out.u8(31),
        ResetOwner => out.u8(32),
        IotlbMsg(pages, invalidate) => out.raw(&[33, *pages, u8::from(*invalidate)]),
        CreateCryptoSession(extra) => out.raw(&[34, *extra]),
        CloseCryptoSession(id) => out.raw(&[35, *id]),
    }
}
