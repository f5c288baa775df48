//! The scripted input of `frontend_session`: after the [`SCRIPT`] byte, the front-end's
//! configuration, then steps as `[kind u8][fields...]`, little-endian, until the input ends or a
//! kind is unknown.
//!
//! Kind 0 is a VMM call (in the form of `frontend_model`'s script), 1 a fitted reply (`Fit`:
//! status u8, value u64, small u8, fd flag; then the one-fd-too-many flag), 2 a run of fitted
//! replies with one `Fit` until no request waits, 3 a reconnection with a new configuration.
//! Typed replies of other shapes, raw frames and back-end requests come only from `arbitrary`
//! data.
//!
//! [`SCRIPT`]: crate::cursor::SCRIPT

use crate::cursor::{Cursor, Out, SCRIPT};
use crate::frontend_model::script::{read_config, read_vmm, write_config, write_vmm};
use crate::frontend_model::Config;

use super::{Fit, Op, Rep};

/// One step of a script.
#[derive(Clone, Debug)]
pub(super) enum Step {
    Op(Op),
    /// Fitted replies with these values until nothing waits.
    Settle(Fit),
}

fn read_fit(c: &mut Cursor<'_>) -> Option<Fit> {
    Some(Fit { status: c.u8()?, value: c.u64()?, small: c.u8()?, fd: c.bool()? })
}

fn write_fit(out: &mut Out, fit: &Fit) {
    out.u8(fit.status);
    out.u64(fit.value);
    out.u8(fit.small);
    out.bool(fit.fd);
}

/// Decodes a script (the input after its [`SCRIPT`] byte): the configuration and the steps.
pub(super) fn decode(data: &[u8]) -> Option<(Config, Vec<Step>)> {
    let mut c = Cursor::new(data);
    let config = read_config(&mut c)?;
    let mut steps = Vec::new();
    while let Some(step) = step(&mut c) {
        steps.push(step);
    }
    Some((config, steps))
}

fn step(c: &mut Cursor<'_>) -> Option<Step> {
    Some(match c.u8()? {
        0 => Step::Op(Op::Vmm(read_vmm(c)?)),
        1 => Step::Op(Op::Reply(Rep::Fit(read_fit(c)?), c.bool()?)),
        2 => Step::Settle(read_fit(c)?),
        3 => Step::Op(Op::Reconnect(read_config(c)?)),
        _ => return None,
    })
}

/// Encodes a script, [`SCRIPT`] byte first. Panics on a step the script form cannot express.
pub(super) fn encode(config: &Config, steps: &[Step]) -> Vec<u8> {
    let mut out = Out::default();
    out.u8(SCRIPT);
    write_config(&mut out, config);
    for step in steps {
        match step {
            Step::Op(Op::Vmm(vmm)) => {
                out.u8(0);
                write_vmm(&mut out, vmm);
            }
            Step::Op(Op::Reply(Rep::Fit(fit), extra)) => {
                out.u8(1);
                write_fit(&mut out, fit);
                out.bool(*extra);
            }
            Step::Settle(fit) => {
                out.u8(2);
                write_fit(&mut out, fit);
            }
            Step::Op(Op::Reconnect(config)) => {
                out.u8(3);
                write_config(&mut out, config);
            }
            Step::Op(other) => panic!("a script cannot express {other:?}"),
        }
    }
    out.0
}
