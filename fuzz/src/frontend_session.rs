//! `frontend_session`: arbitrary replies and back-end requests fed into [`Frontend`], interleaved
//! with arbitrary VMM calls.
//!
//! Replies are typed (built from owned arbitrary values, or fitted to the request that waits so
//! that sessions get past the handshake) or raw frames; back-end requests are typed or raw too.
//!
//! Invariants checked after every step (see `frontend_model`): nothing panics; every token the
//! front-end received leaves it exactly once, by an emitted request, an event, a back-end channel
//! reply or a `CloseFd`, and never one a refused call was given; tokens of a frame leave in the
//! same step, and all of them once nothing is queued; at most one request waits for a reply on the
//! wire; NEED_REPLY is set exactly when REPLY_ACK was acked and the request has no reply of its
//! own; no request goes out without its protocol feature acked; every emitted request and
//! back-end reply encodes and re-parses to the same value; events answer the request that waited;
//! after `Close` only `CloseFd` follows; the front-end's own state queries agree with the model.
//!
//! An input starting with `SCRIPT` is a script instead (see `script`): the seed corpus uses
//! it to spell out whole sessions.

use arbitrary::{Arbitrary, Unstructured};
use vhu_core::frontend::{Frontend, Negotiated};
use vhu_core::limits::MAX_FRAME_SIZE;
use vhu_core::message::{ConfigFlags, InflightDesc, MemoryTable, VringBase};
use vhu_core::{
    wire, BackendRequest, FdToken, FrontendCode, ProtocolFeatures, Reply, VirtioFeatures,
};

use crate::cursor::SCRIPT;
use crate::frontend_model::{region, Config, Detail, Model, Vmm};

mod script;
mod seeds;

use script::Step;
pub use seeds::seeds;

/// Most operations one input runs.
const MAX_OPS: usize = 256;

/// A reply fitted to the request that waits, from these values.
#[derive(Arbitrary, Clone, Debug)]
struct Fit {
    /// 0 for success.
    status: u8,
    value: u64,
    small: u8,
    fd: bool,
}

/// A reply from the back-end.
#[derive(Arbitrary, Clone, Debug)]
enum Rep {
    Fit(Fit),
    Features(u64),
    ProtocolFeatures(u64),
    QueueNum(u64),
    MaxMemSlots(u64),
    VringBase(u8, u32, bool),
    Config(u8, ConfigFlags, Vec<u8>),
    Status(u8),
    LogBase(Vec<u8>),
    InflightFd(InflightDesc, bool),
    SharedObject(u64, bool),
    DeviceStateFd(u8, bool),
    Ack(FrontendCode, u64),
    MemTableBases(Vec<(u8, u8)>),
    AddMemRegBase(u8, u8),
    PostcopyAdvise,
    CryptoSession(Vec<u8>),
    Raw(Raw),
}

/// A raw frame: any code, flags, payload and fd count, possibly cut short.
#[derive(Arbitrary, Clone, Debug)]
struct Raw {
    code: u8,
    flags: Option<u32>,
    payload: Vec<u8>,
    fds: u8,
    cut: Option<u16>,
}

/// A request from the back-end channel.
#[derive(Arbitrary, Clone, Debug)]
enum BeReq {
    /// A typed request (its tokens are replaced by fresh ones), NEED_REPLY, one fd too many.
    Typed(BackendRequest, bool, bool),
    Raw(Raw),
}

#[derive(Arbitrary, Clone, Debug)]
enum Op {
    Vmm(Vmm),
    /// A reply, with one fd too many if set.
    Reply(Rep, bool),
    BackendRequest(BeReq),
    /// A new connection: the front-end is closed and a new one starts.
    Reconnect(Config),
}

/// Directory of the seed corpus, relative to this crate's manifest.
pub const CORPUS_DIR: &str = "corpus/frontend_session";

/// Runs one input: `arbitrary` data, or a script (see `script`) when it starts with
/// `SCRIPT`.
pub fn run(data: &[u8]) {
    if let Some((&SCRIPT, rest)) = data.split_first() {
        let Some((config, steps)) = script::decode(rest) else { return };
        let mut session = Session::new(&config);
        for step in steps.into_iter().take(MAX_OPS) {
            session.step(step);
        }
        session.model.finish(&mut session.frontend);
        return;
    }
    let mut u = Unstructured::new(data);
    let Ok(config) = Config::arbitrary(&mut u) else { return };
    let mut session = Session::new(&config);
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        session.op(op);
    }
    session.model.finish(&mut session.frontend);
}

/// A front-end under test with its model.
struct Session {
    frontend: Frontend,
    model: Model,
    /// The outcome of the last handshake, for restores.
    last: Option<Negotiated>,
    buf: Vec<u8>,
}

impl Session {
    fn new(config: &Config) -> Self {
        Self {
            frontend: Frontend::new(config.build()),
            model: Model::default(),
            last: None,
            buf: vec![0u8; MAX_FRAME_SIZE],
        }
    }

    /// One step of a script: an operation, or fitting replies until nothing waits.
    fn step(&mut self, step: Step) {
        match step {
            Step::Op(op) => self.op(op),
            Step::Settle(fit) => {
                for _ in 0..64 {
                    if self.model.awaiting.is_none() || self.model.closed {
                        break;
                    }
                    self.op(Op::Reply(Rep::Fit(fit.clone()), false));
                }
            }
        }
    }

    fn op(&mut self, op: Op) {
        let (frontend, model, buf) = (&mut self.frontend, &mut self.model, &mut self.buf);
        match op {
            Op::Vmm(vmm) => {
                vmm.apply(frontend, model, self.last);
            }
            Op::Reply(rep, extra) => {
                let (frame, fds) = match rep {
                    Rep::Raw(raw) => raw_frame(raw, 50, 0x5),
                    rep => {
                        let Some((len, fds)) = encode_reply(rep, model, buf) else {
                            return;
                        };
                        (buf[..len].to_vec(), fds)
                    }
                };
                model.reply(frontend, &frame, fds + usize::from(extra));
            }
            Op::BackendRequest(request) => {
                let (frame, fds) = match request {
                    BeReq::Raw(raw) => {
                        // Half of them ask for an answer (NEED_REPLY), unless flags are given.
                        let flags = if raw.code >= 0x80 { 0x9 } else { 0x1 };
                        raw_frame(raw, 12, flags)
                    }
                    BeReq::Typed(request, need_reply, extra) => {
                        let Ok(len) = request.encode_into(need_reply, buf) else { return };
                        (buf[..len].to_vec(), request.fds().len() + usize::from(extra))
                    }
                };
                model.backend_request(frontend, &frame, fds);
            }
            Op::Reconnect(config) => {
                model.finish(frontend);
                *frontend = Frontend::new(config.build());
                *model = Model::default();
            }
        }
        if self.model.negotiated.is_some() {
            self.last = self.model.negotiated;
        }
    }
}

/// A raw frame with a code below `codes` and `flags` unless the input gives its own.
fn raw_frame(raw: Raw, codes: u8, flags: u32) -> (Vec<u8>, usize) {
    let payload: Vec<u8> = raw.payload.into_iter().take(600).collect();
    let mut frame = Vec::with_capacity(12 + payload.len());
    frame.extend_from_slice(&u32::from(raw.code % codes).to_ne_bytes());
    frame.extend_from_slice(&raw.flags.unwrap_or(flags).to_ne_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    frame.extend_from_slice(&payload);
    if let Some(cut) = raw.cut {
        frame.truncate(usize::from(cut));
    }
    (frame, usize::from(raw.fds % 10))
}

/// Encodes a typed reply into `buf`: its length and how many fds travel with it.
fn encode_reply(rep: Rep, model: &Model, buf: &mut [u8]) -> Option<(usize, usize)> {
    let (awaiting, postcopy_table, crypto_sent) =
        (model.awaiting, &model.postcopy_table, model.crypto_sent);
    use FrontendCode as C;
    // Any token: the receiving side gets fresh ones, only the count travels.
    let fd = FdToken(0);
    // Owned data the reply borrows; it lives until the reply is encoded.
    let bytes: Vec<u8>;
    let table: Vec<wire::MemoryRegion>;
    let reply = match rep {
        Rep::Fit(fit) => {
            let status = u64::from(fit.status);
            match awaiting {
                None => Reply::Ack { request: C::SetOwner, status },
                Some(sent) if sent.need_reply => Reply::Ack { request: sent.code, status },
                Some(sent) => match (sent.code, sent.detail) {
                    (C::GetFeatures, _) => {
                        Reply::Features(VirtioFeatures::from_bits_retain(fit.value))
                    }
                    (C::GetProtocolFeatures, _) => {
                        Reply::ProtocolFeatures(ProtocolFeatures::from_bits_retain(fit.value))
                    }
                    (C::GetQueueNum, _) => Reply::QueueNum(u64::from(fit.small)),
                    (C::GetMaxMemSlots, _) => Reply::MaxMemSlots(fit.value),
                    (C::GetVringBase, Detail::Vring(index)) => {
                        Reply::VringBase { index, base: VringBase(fit.value as u32) }
                    }
                    (C::GetVringBaseSkipDrain, Detail::Vring(index)) => {
                        Reply::VringBaseSkipDrain { index, base: VringBase(fit.value as u32) }
                    }
                    (C::GetConfig, Detail::Config { offset, size }) => {
                        bytes = if fit.status == 0 {
                            (0..size).map(|i| fit.small ^ i as u8).collect()
                        } else {
                            Vec::new()
                        };
                        Reply::Config { offset, flags: ConfigFlags::Writable, data: &bytes }
                    }
                    (C::GetStatus, _) => Reply::Status(fit.small),
                    (C::SetLogBase, _) => {
                        bytes = vec![0; usize::from(fit.small % 17)];
                        Reply::LogBase(&bytes)
                    }
                    (C::GetInflightFd, _) => Reply::InflightFd {
                        desc: InflightDesc {
                            mmap_size: if fit.fd { (u64::from(fit.small) + 1) << 12 } else { 0 },
                            mmap_offset: 0,
                            num_queues: 2,
                            queue_size: 256,
                        },
                        fd: fit.fd.then_some(fd),
                    },
                    (C::GetSharedObject, _) => {
                        Reply::SharedObject { status, fd: fit.fd.then_some(fd) }
                    }
                    (C::SetDeviceStateFd, _) => {
                        Reply::DeviceStateFd { error: fit.status, fd: fit.fd.then_some(fd) }
                    }
                    (C::PostcopyAdvise, _) if status == 0 => {
                        Reply::PostcopyAdvise { userfaultfd: fd }
                    }
                    // The regions sent, each at a base of the back-end's own.
                    (C::SetMemTable, Detail::Table(_)) => {
                        table = postcopy_table
                            .iter()
                            .enumerate()
                            .map(|(i, r)| wire::MemoryRegion {
                                user_address: wire::U64::new(0x7e00_0000_0000 + ((i as u64) << 28)),
                                ..*r
                            })
                            .collect();
                        Reply::MemTableBases(MemoryTable::Standard(&table))
                    }
                    // The session sent, returned with an id in its last bytes (QEMU's layout).
                    (C::CreateCryptoSession, _) => {
                        let id =
                            if status == 0 { (fit.value >> 1) as i64 } else { -(status as i64) };
                        let mut session = vec![fit.small; crypto_sent];
                        let tail = crypto_sent.min(8);
                        session[crypto_sent - tail..].copy_from_slice(&id.to_le_bytes()[..tail]);
                        bytes = session;
                        Reply::CryptoSession(&bytes)
                    }
                    (code, _) => Reply::Ack { request: code, status },
                },
            }
        }
        Rep::Features(bits) => Reply::Features(VirtioFeatures::from_bits_retain(bits)),
        Rep::ProtocolFeatures(bits) => {
            Reply::ProtocolFeatures(ProtocolFeatures::from_bits_retain(bits))
        }
        Rep::QueueNum(n) => Reply::QueueNum(n),
        Rep::MaxMemSlots(n) => Reply::MaxMemSlots(n),
        Rep::VringBase(index, base, skip_drain) => {
            let index = vhu_core::VringIndex(index);
            let base = VringBase(base);
            if skip_drain {
                Reply::VringBaseSkipDrain { index, base }
            } else {
                Reply::VringBase { index, base }
            }
        }
        Rep::Config(offset, flags, data) => {
            bytes = data.into_iter().take(300).collect();
            Reply::Config { offset: u32::from(offset), flags, data: &bytes }
        }
        Rep::Status(status) => Reply::Status(status),
        Rep::LogBase(data) => {
            bytes = data.into_iter().take(64).collect();
            Reply::LogBase(&bytes)
        }
        Rep::InflightFd(desc, with_fd) => Reply::InflightFd { desc, fd: with_fd.then_some(fd) },
        Rep::SharedObject(status, with_fd) => {
            Reply::SharedObject { status, fd: with_fd.then_some(fd) }
        }
        Rep::DeviceStateFd(error, with_fd) => {
            Reply::DeviceStateFd { error, fd: with_fd.then_some(fd) }
        }
        Rep::Ack(request, status) => Reply::Ack { request, status },
        Rep::MemTableBases(regions) => {
            table = regions.iter().take(9).map(|(s, p)| region(*s, *p).to_wire()).collect();
            Reply::MemTableBases(MemoryTable::Standard(&table))
        }
        Rep::AddMemRegBase(slot, pages) => Reply::AddMemRegBase(region(slot, pages)),
        Rep::PostcopyAdvise => Reply::PostcopyAdvise { userfaultfd: fd },
        Rep::CryptoSession(data) => {
            bytes = data.into_iter().take(1100).collect();
            Reply::CryptoSession(&bytes)
        }
        Rep::Raw(_) => return None,
    };
    let len = reply.encode_into(buf).ok()?;
    Some((len, reply.fds().len()))
}

#[cfg(test)]
mod tests;
