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

use arbitrary::{Arbitrary, Unstructured};
use vhu_core::frontend::Frontend;
use vhu_core::limits::MAX_FRAME_SIZE;
use vhu_core::message::{ConfigFlags, InflightDesc, MemoryTable, VringBase};
use vhu_core::{
    wire, BackendRequest, FdToken, FrontendCode, ProtocolFeatures, Reply, VirtioFeatures,
};

use crate::frontend_model::{region, Config, Detail, Model, Sent, Vmm};

/// Most operations one input runs.
const MAX_OPS: usize = 256;

/// A reply fitted to the request that waits, from these values.
#[derive(Arbitrary, Debug)]
struct Fit {
    /// 0 for success.
    status: u8,
    value: u64,
    small: u8,
    fd: bool,
}

/// A reply from the back-end.
#[derive(Arbitrary, Debug)]
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
#[derive(Arbitrary, Debug)]
struct Raw {
    code: u8,
    flags: Option<u32>,
    payload: Vec<u8>,
    fds: u8,
    cut: Option<u16>,
}

/// A request from the back-end channel.
#[derive(Arbitrary, Debug)]
enum BeReq {
    /// A typed request (its tokens are replaced by fresh ones), NEED_REPLY, one fd too many.
    Typed(BackendRequest, bool, bool),
    Raw(Raw),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Vmm(Vmm),
    /// A reply, with one fd too many if set.
    Reply(Rep, bool),
    BackendRequest(BeReq),
    /// A new connection: the front-end is closed and a new one starts.
    Reconnect(Config),
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = Config::arbitrary(&mut u) else { return };
    let mut frontend = Frontend::new(config.build());
    let mut model = Model::default();
    let mut last = None;
    let mut buf = vec![0u8; MAX_FRAME_SIZE];
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        match op {
            Op::Vmm(vmm) => {
                vmm.apply(&mut frontend, &mut model, last);
            }
            Op::Reply(rep, extra) => {
                let (frame, fds) = match rep {
                    Rep::Raw(raw) => raw_frame(raw, 50, 0x5),
                    rep => {
                        let Some((len, fds)) = encode_reply(rep, model.awaiting, &mut buf) else {
                            continue;
                        };
                        (buf[..len].to_vec(), fds)
                    }
                };
                model.reply(&mut frontend, &frame, fds + usize::from(extra));
            }
            Op::BackendRequest(request) => {
                let (frame, fds) = match request {
                    BeReq::Raw(raw) => raw_frame(raw, 12, 0x1),
                    BeReq::Typed(request, need_reply, extra) => {
                        let Ok(len) = request.encode_into(need_reply, &mut buf) else { continue };
                        (buf[..len].to_vec(), request.fds().len() + usize::from(extra))
                    }
                };
                model.backend_request(&mut frontend, &frame, fds);
            }
            Op::Reconnect(config) => {
                model.finish(&mut frontend);
                frontend = Frontend::new(config.build());
                model = Model::default();
            }
        }
        if model.negotiated.is_some() {
            last = model.negotiated;
        }
    }
    model.finish(&mut frontend);
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
fn encode_reply(rep: Rep, awaiting: Option<Sent>, buf: &mut [u8]) -> Option<(usize, usize)> {
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
mod tests {
    use super::*;
    use crate::frontend_model::Ev;

    fn fit() -> Rep {
        Rep::Fit(Fit { status: 0, value: u64::MAX, small: 2, fd: true })
    }

    /// Answers every waiting request with a fitting success until the front-end settles.
    fn answer_all(frontend: &mut Frontend, model: &mut Model) -> Vec<Ev> {
        let mut buf = vec![0u8; MAX_FRAME_SIZE];
        let mut events = Vec::new();
        for _ in 0..64 {
            if model.awaiting.is_none() {
                break;
            }
            let (len, fds) = encode_reply(fit(), model.awaiting, &mut buf).expect("encodes");
            events.extend(model.reply(frontend, &buf[..len], fds).events);
        }
        events
    }

    /// A full handshake and a few calls through the harness itself, without a fuzzer: the
    /// harness accepts a correct session.
    #[test]
    fn a_correct_session_passes_the_checks() {
        // No device features, the default protocol features, bit 30 wanted.
        let bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let config = Config::arbitrary(&mut Unstructured::new(&bytes)).expect("config");
        let mut frontend = Frontend::new(config.build());
        let mut model = Model::default();
        Vmm::Connect(true).apply(&mut frontend, &mut model, None);
        let events = answer_all(&mut frontend, &mut model);
        assert!(model.connected, "{events:?}");
        assert!(matches!(events.last(), Some(Ev::Connected(_))), "{events:?}");
        Vmm::SetMemTable(vec![(0, 4), (1, 4)]).apply(&mut frontend, &mut model, None);
        Vmm::GetStatus.apply(&mut frontend, &mut model, None);
        Vmm::GetConfig(4, 8).apply(&mut frontend, &mut model, None);
        let events = answer_all(&mut frontend, &mut model);
        assert!(events.iter().any(|e| matches!(e, Ev::ConfigRead { offset: 4, .. })));
        assert_eq!(frontend.regions().len(), 2);
        model.finish(&mut frontend);
    }

    /// Replays deterministic pseudo-random inputs, so `cargo test` exercises the target.
    #[test]
    fn replays_pseudo_random_sessions() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in (0..1200).step_by(5) {
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

    /// Inputs that once crashed the target, kept in `regressions/frontend_session/` (may be absent).
    #[test]
    fn replays_regressions() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/frontend_session");
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
