//! The scripted input of `frontend_backend_pair`: after the [`SCRIPT`] byte, the device (queues
//! u8, protocol toggle u32, feature bits u8, config size u8, slots u8), the front-end's
//! configuration (in the form of `frontend_model`'s script), then operations as
//! `[kind u8][fields...]`, little-endian, until the input ends or a kind is unknown.
//!
//! Kind 0 is a VMM call (in `frontend_model`'s script form), 1 a delivery from a queue (0 to the
//! back-end, 1 to the front-end, 2 the back-end channel, 3 a VMM answer), 2 a pump, 3 a
//! back-end API call (a sub-tag: 0 config change, 1-3 shared-object add, remove and lookup with
//! a UUID byte, 4-5 vring call and error with an index, 6 a host notifier with an index and an
//! fd flag), 4 buffers processed (ring index, count), 5 a setup (pages u8, rings u8, base u16).
//! A script makes no other choice: the driver and the VMM always answer with the fitting
//! success.
//!
//! [`SCRIPT`]: crate::cursor::SCRIPT

use arbitrary::Unstructured;

use crate::cursor::{Cursor, Out, SCRIPT};
use crate::frontend_model::script::{read_config, read_vmm, write_config, write_vmm};
use crate::frontend_model::Config;

use super::{Api, Device, Op, Pair, Queue, MAX_OPS};

/// Decodes a script (the input after its [`SCRIPT`] byte): the device, the front-end's
/// configuration and the operations.
pub(super) fn decode(data: &[u8]) -> Option<(Device, Config, Vec<Op>)> {
    let mut c = Cursor::new(data);
    let device = Device {
        queues: c.u8()?,
        toggle: c.u32()?,
        features: c.u8()?,
        config_size: c.u8()?,
        slots: c.u8()?,
    };
    let config = read_config(&mut c)?;
    let mut ops = Vec::new();
    while let Some(op) = op(&mut c) {
        ops.push(op);
    }
    Some((device, config, ops))
}

fn op(c: &mut Cursor<'_>) -> Option<Op> {
    Some(match c.u8()? {
        0 => Op::Vmm(read_vmm(c)?),
        1 => Op::Deliver(match c.u8()? % 4 {
            0 => Queue::ToBackend,
            1 => Queue::ToFrontend,
            2 => Queue::BackendChannel,
            _ => Queue::VmmAnswer,
        }),
        2 => Op::Pump,
        3 => Op::Api(match c.u8()? {
            0 => Api::ConfigChange,
            1 => Api::SharedObjectAdd(c.u8()?),
            2 => Api::SharedObjectRemove(c.u8()?),
            3 => Api::SharedObjectLookup(c.u8()?),
            4 => Api::VringCall(c.u8()?),
            5 => Api::VringErr(c.u8()?),
            6 => Api::HostNotifier(c.u8()?, c.bool()?),
            _ => return None,
        }),
        4 => Op::Process(c.u8()?, c.u8()?),
        5 => Op::Setup { pages: c.u8()?, rings: c.u8()?, base: c.u16()? },
        _ => return None,
    })
}

/// Encodes a script, [`SCRIPT`] byte first. Panics on an operation the script form cannot
/// express.
pub(super) fn encode(device: &Device, config: &Config, ops: &[Op]) -> Vec<u8> {
    let mut out = Out::default();
    out.u8(SCRIPT);
    out.u8(device.queues);
    out.u32(device.toggle);
    out.raw(&[device.features, device.config_size, device.slots]);
    write_config(&mut out, config);
    for op in ops {
        match op {
            Op::Vmm(vmm) => {
                out.u8(0);
                write_vmm(&mut out, vmm);
            }
            Op::Deliver(queue) => out.raw(&[1, *queue as u8]),
            Op::Pump => out.u8(2),
            Op::Api(api) => {
                let fields: &[u8] = match api {
                    Api::ConfigChange => &[0],
                    Api::SharedObjectAdd(b) => &[1, *b],
                    Api::SharedObjectRemove(b) => &[2, *b],
                    Api::SharedObjectLookup(b) => &[3, *b],
                    Api::VringCall(i) => &[4, *i],
                    Api::VringErr(i) => &[5, *i],
                    Api::HostNotifier(i, fd) => &[6, *i, u8::from(*fd)],
                    other => panic!("a script cannot express {other:?}"),
                };
                out.u8(3);
                out.raw(fields);
            }
            Op::Process(i, n) => out.raw(&[4, *i, *n]),
            Op::Setup { pages, rings, base } => {
                out.raw(&[5, *pages, *rings]);
                out.u16(*base);
            }
        }
    }
    out.0
}

/// Runs a script's operations on a new pair, every choice the fitting success, and lets
/// everything move at the end; the pair as they left it (`None` for an invalid device).
pub(super) fn play(device: &Device, config: &Config, ops: Vec<Op>) -> Option<Pair> {
    let mut pair = Pair::new(device.spec(), config.build())?;
    // No bytes to choose from: every answer is the fitting success.
    let mut none = Unstructured::new(&[]);
    for op in ops.into_iter().take(MAX_OPS) {
        if pair.closed {
            break;
        }
        pair.op(op, &mut none);
    }
    pair.settle(&mut none);
    Some(pair)
}
