//! `backend_session`: an arbitrary sequence of requests, completions and back-end API calls
//! through [`Backend`].
//!
//! Invariants checked after every step: nothing panics; every descriptor token that entered the
//! state machine has left it exactly once (core keeps none between inputs); a reply appears only
//! for a request whose spec gives one or that asked for it with NEED_REPLY, and answers that
//! request's code; every reply encodes and re-parses; the started state of every ring matches the
//! start and stop actions the driver was given.
//!
//! An input starting with `SCRIPT` is a script instead (see `script`): the seed corpus uses
//! it to spell out whole sessions.

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use vhu_core::backend::{Action, Backend, BackendOutcome, BackendSpec, Completion, Output};
use vhu_core::message::{
    ConfigFlags, InflightDesc, LogBase, MemoryTable, Region, ShmemMapping, TransferDirection,
    TransferPhase, Uuid, VringAddr, VringAddrFlags, VringBase, VringFd,
};
use vhu_core::testing::Ledger;
use vhu_core::wire;
use vhu_core::{
    reply_kind, FdToken, FrontendCode, ProtocolFeatures, Reply, ReplyKind, Request, VirtioFeatures,
    VringIndex,
};

use crate::cursor::SCRIPT;

mod script;
mod seeds;

pub use seeds::seeds;

/// Addresses are drawn near these bases so that some of them land inside regions.
const RAM: u64 = 0x7f00_0000_0000;

/// A request in owned form, built into a real frame.
#[derive(Arbitrary, Clone, Debug)]
enum Req {
    GetFeatures,
    SetFeatures(u64),
    SetOwner,
    ResetOwner,
    GetProtocolFeatures,
    SetProtocolFeatures(u32),
    GetQueueNum,
    SetMemTable(Vec<(u8, u8)>),
    GetMaxMemSlots,
    AddMemReg(u8, u8),
    RemMemReg(u8, u8, bool),
    SetLogBase(u16, bool),
    SetVringNum(u8, u16),
    SetVringAddr(u8, u16, u16, u16, bool),
    SetVringBase(u8, u32),
    GetVringBase(u8),
    GetVringBaseSkipDrain(u8),
    SetVringKick(u8, bool),
    SetVringCall(u8, bool),
    SetVringEnable(u8, bool),
    VringKick(u8),
    GetConfig(u8, u8),
    SetConfig(u8, Vec<u8>),
    SetStatus(u8),
    GetStatus,
    ResetDevice,
    GetInflightFd(u16, u16),
    SetInflightFd(u16),
    SetBackendReqFd,
    SetDeviceStateFd(bool),
    CheckDeviceState,
    GetShmemConfig,
    GetSharedObject(u8),
    PostcopyAdvise,
    PostcopyListen,
    PostcopyEnd,
    /// The front-end's acknowledgement of a postcopy SET_MEM_TABLE reply.
    PostcopyAck,
    /// Any code, any payload, any fd count.
    Raw(u8, Vec<u8>, u8),
}

#[derive(Arbitrary, Clone, Debug)]
enum Comp {
    Ok,
    Failed(u8),
    Stopped(u8, u32),
    Config(Vec<u8>),
    ConfigFailed,
    Inflight(bool),
    DeviceState(Option<bool>),
    SharedObject(bool),
    Userfaultfd(bool),
    PostcopyMapped(Vec<u64>),
}

#[derive(Arbitrary, Clone, Debug)]
enum Api {
    ConfigChange,
    ShmemMap(bool),
    SharedObjectAdd,
    VringCall(u8),
}

#[derive(Arbitrary, Clone, Debug)]
enum Op {
    Request(Req, bool),
    Complete(Comp),
    Api(Api),
}

fn region(slot: u8, pages: u8) -> Region {
    let base = u64::from(slot) << 24;
    Region {
        guest_address: base,
        size: u64::from(pages) << 16,
        user_address: RAM + base,
        mmap_offset: 0,
        xen: None,
    }
}

struct Session {
    backend: Backend,
    tokens: Ledger,
    started: BTreeMap<u8, bool>,
    /// The ring of a StartVring whose completion has not come yet.
    starting: Option<u8>,
    closed: bool,
}

impl Session {
    /// A token handed to core (with a frame, a completion or an API call).
    fn fd(&mut self) -> FdToken {
        let fd = self.tokens.fresh();
        self.tokens.enter(fd, false);
        fd
    }

    fn left(&mut self, fd: FdToken) {
        self.tokens.left(fd);
    }

    /// Drains outputs; `answering` is the request whose replies are allowed.
    fn drain(&mut self, answering: Option<(FrontendCode, bool)>) {
        let mut replies = 0;
        let mut buf = vec![0u8; 4096];
        while let Some(output) = self.backend.poll_output() {
            match output {
                Output::Reply(reply) => {
                    replies += 1;
                    let (code, need_reply) = answering.expect("a reply answers a request");
                    assert_eq!(reply.code(), code, "reply answers another request");
                    // The postcopy form of SET_MEM_TABLE is always answered (spec "Migration").
                    let postcopy = matches!(reply, Reply::MemTableBases(_));
                    let allowed = need_reply || postcopy || reply_kind(code) != ReplyKind::AckOnly;
                    assert!(allowed, "{code} without NEED_REPLY got {reply:?}");
                    let len = reply.encode_into(&mut buf).expect("reply encodes");
                    let fds = reply.fds();
                    let parsed = Reply::parse(&buf[..len], &fds).expect("reply re-parses");
                    if matches!(reply, Reply::MemTableBases(table) if table.is_empty()) {
                        // An empty postcopy table is the bytes of the `u64` ack.
                        assert_eq!(parsed, Reply::Ack { request: code, status: 0 });
                    } else {
                        assert_eq!(parsed, reply);
                    }
                    for fd in fds {
                        self.tokens.left(fd);
                    }
                }
                Output::Nack { status, .. } => {
                    replies += 1;
                    assert_ne!(status, 0, "a refusal has a failure status");
                }
                Output::Action(action) => {
                    let handed = handed_off(&action);
                    match action {
                        Action::StartVring { index, .. } => {
                            assert_ne!(
                                self.started.insert(index.0, true),
                                Some(true),
                                "started twice"
                            );
                            self.starting = Some(index.0);
                        }
                        Action::StopVring { index, .. } => {
                            assert_eq!(
                                self.started.insert(index.0, false),
                                Some(true),
                                "stopped a stopped ring"
                            );
                        }
                        Action::ResetDevice => self.started.clear(),
                        _ => {}
                    }
                    for fd in handed {
                        self.left(fd);
                    }
                }
                Output::BackendRequest { request, .. } => {
                    for fd in request.fds() {
                        self.left(fd);
                    }
                }
                Output::BackendResult(result) => {
                    if let BackendOutcome::SharedObject { fd: Some(fd), .. } = result.outcome {
                        self.left(fd);
                    }
                }
                Output::Close(_) => self.closed = true,
            }
        }
        assert!(replies <= 1, "one input, one reply at most");
        for (index, started) in &self.started {
            let state = self.backend.vring_state(VringIndex(*index)).expect("index in range");
            assert_eq!(state.started, *started, "ring {index}");
        }
        // Core keeps no token between inputs.
        self.tokens.assert_balanced();
    }
}

fn handed_off(action: &Action<'_>) -> Vec<FdToken> {
    action.fds().into_iter().collect()
}

/// The spec of the back-end under test. PAGEFAULT and CONFIGURE_MEM_SLOTS are contradictory
/// offers, so a session that asks for postcopy gets a spec with PAGEFAULT instead of memory slots.
fn spec_for(postcopy: bool) -> BackendSpec {
    let mut spec = spec();
    if postcopy {
        spec.protocol_features.remove(ProtocolFeatures::CONFIGURE_MEM_SLOTS);
        spec.protocol_features.insert(ProtocolFeatures::PAGEFAULT);
    }
    spec
}

fn spec() -> BackendSpec {
    let mut spec = BackendSpec::new(3, 256);
    spec.features |=
        VirtioFeatures::RING_PACKED | VirtioFeatures::LOG_ALL | VirtioFeatures::RING_EVENT_IDX;
    spec.protocol_features |= ProtocolFeatures::LOG_SHMFD
        | ProtocolFeatures::INFLIGHT_SHMFD
        | ProtocolFeatures::DEVICE_STATE
        | ProtocolFeatures::SHMEM
        | ProtocolFeatures::SHARED_OBJECT
        | ProtocolFeatures::BACKEND_SEND_FD
        | ProtocolFeatures::INBAND_NOTIFICATIONS
        | ProtocolFeatures::GET_VRING_BASE_INFLIGHT
        | ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN;
    spec.config_size = 40;
    spec.max_mem_slots = 16;
    spec.shmem_sizes.extend([0x1000, 0x2000]);
    spec
}

/// Directory of the seed corpus, relative to this crate's manifest.
pub const CORPUS_DIR: &str = "corpus/backend_session";

/// Most operations one input runs.
const MAX_OPS: usize = 256;

/// Runs one input: `arbitrary` data, or a script (see `script`) when it starts with
/// `SCRIPT`.
pub fn run(data: &[u8]) {
    let ops = match data.split_first() {
        Some((&SCRIPT, rest)) => script::decode(rest),
        _ => {
            let mut u = Unstructured::new(data);
            let Ok(ops) = u.arbitrary_iter::<Op>() else { return };
            ops.take(MAX_OPS).map_while(Result::ok).collect()
        }
    };
    play(ops);
}

/// Runs `ops` (at most [`MAX_OPS`] of them) on a fresh back-end; the session as they left it.
fn play(ops: Vec<Op>) -> Session {
    let postcopy = ops.iter().any(|op| {
        matches!(op, Op::Request(Req::PostcopyAdvise | Req::PostcopyListen | Req::PostcopyEnd, _))
    });
    let mut s = Session {
        backend: Backend::new(spec_for(postcopy)).expect("valid spec"),
        tokens: Ledger::new(),
        started: BTreeMap::new(),
        starting: None,
        closed: false,
    };
    let mut pending: Option<(FrontendCode, bool)> = None;
    for op in ops.into_iter().take(MAX_OPS) {
        match op {
            Op::Request(req, need_reply) => {
                let mut fds = Vec::new();
                let mut buf = vec![0u8; 4096];
                let Some(len) = build(&mut s, req, need_reply, &mut buf, &mut fds) else {
                    continue;
                };
                let code =
                    FrontendCode::from_u32(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]));
                let result = s.backend.handle_frame(&buf[..len], &fds);
                let answering = code.map(|c| (c, need_reply));
                if result.is_ok() && s.backend.is_awaiting_completion() {
                    pending = answering;
                }
                s.drain(answering.or(pending));
            }
            Op::Complete(comp) => {
                let config: Vec<u8>;
                let postcopy_bases: Vec<u64>;
                let completion = match comp {
                    Comp::Ok => Completion::Done(Ok(())),
                    Comp::Failed(e) => Completion::Done(Err(u64::from(e))),
                    Comp::Stopped(i, base) => {
                        Completion::VringStopped { index: VringIndex(i % 4), base: VringBase(base) }
                    }
                    Comp::Config(bytes) => {
                        config = bytes;
                        Completion::ConfigRead(Some(&config))
                    }
                    Comp::ConfigFailed => Completion::ConfigRead(None),
                    Comp::Inflight(ok) => {
                        Completion::InflightAllocated(if ok { Ok((s.fd(), 0)) } else { Err(1) })
                    }
                    Comp::DeviceState(fd) => Completion::DeviceStateFd(match fd {
                        Some(true) => Ok(Some(s.fd())),
                        Some(false) => Ok(None),
                        None => Err(3),
                    }),
                    Comp::SharedObject(ok) => {
                        Completion::SharedObject(if ok { Ok(s.fd()) } else { Err(2) })
                    }
                    Comp::Userfaultfd(ok) => {
                        Completion::Userfaultfd(if ok { Ok(s.fd()) } else { Err(4) })
                    }
                    Comp::PostcopyMapped(bases) => {
                        postcopy_bases = bases;
                        Completion::PostcopyMapped(Ok(&postcopy_bases))
                    }
                };
                let failed = matches!(completion, Completion::Done(Err(_)));
                let accepted = s.backend.handle_completion(completion).is_ok();
                // A ring the device could not start is not started (spec "Starting and
                // stopping rings": the front-end starts it again with a new kick).
                if let Some(index) = s.starting.take_if(|_| accepted) {
                    if failed {
                        s.started.insert(index, false);
                    }
                }
                let answering = pending;
                if !s.backend.is_awaiting_completion() {
                    pending = None;
                }
                s.drain(answering);
            }
            Op::Api(api) => {
                let _ = match api {
                    Api::ConfigChange => s.backend.send_config_change(),
                    Api::ShmemMap(rw) => {
                        let mapping = ShmemMapping {
                            shmid: 0,
                            fd_offset: 0,
                            shm_offset: 0,
                            len: 0x1000,
                            writable: rw,
                        };
                        let fd = s.fd();
                        let result = s.backend.send_shmem_map(mapping, fd);
                        if result.is_err() {
                            // A refused call leaves the token with the caller.
                            s.left(fd);
                        }
                        result
                    }
                    Api::SharedObjectAdd => s.backend.send_shared_object_add(Uuid([7; 16])),
                    Api::VringCall(i) => s.backend.send_vring_call(VringIndex(i % 4)),
                };
                s.drain(None);
            }
        }
        if s.closed {
            break;
        }
    }
    s
}

/// Encodes `req` into `buf`; new tokens go into `fds`.
fn build(
    s: &mut Session,
    req: Req,
    need_reply: bool,
    buf: &mut [u8],
    fds: &mut Vec<FdToken>,
) -> Option<usize> {
    let v = |i: u8| VringIndex(i % 4);
    let fd = |s: &mut Session, fds: &mut Vec<FdToken>| {
        let fd = s.fd();
        fds.push(fd);
        fd
    };
    // Owned data the request borrows; it lives until the request is encoded.
    let table: Vec<wire::MemoryRegion>;
    let table_fds: Vec<FdToken>;
    let config: Vec<u8>;
    let request = match req {
        Req::GetFeatures => Request::GetFeatures,
        Req::SetFeatures(bits) => Request::SetFeatures(VirtioFeatures::from_bits_retain(bits)),
        Req::SetOwner => Request::SetOwner,
        Req::ResetOwner => Request::ResetOwner,
        Req::GetProtocolFeatures => Request::GetProtocolFeatures,
        Req::SetProtocolFeatures(bits) => {
            Request::SetProtocolFeatures(ProtocolFeatures::from_bits_retain(u64::from(bits)))
        }
        Req::GetQueueNum => Request::GetQueueNum,
        Req::SetMemTable(regions) => {
            table = regions
                .iter()
                .take(8)
                .map(|(slot, pages)| region(*slot, *pages).to_wire())
                .collect();
            for _ in &table {
                fd(s, fds);
            }
            table_fds = fds.clone();
            Request::SetMemTable { table: MemoryTable::Standard(&table), fds: &table_fds }
        }
        Req::GetMaxMemSlots => Request::GetMaxMemSlots,
        Req::AddMemReg(slot, pages) => {
            Request::AddMemReg { region: region(slot, pages), fd: fd(s, fds) }
        }
        Req::RemMemReg(slot, pages, stray) => {
            let stray = stray.then(|| fd(s, fds));
            Request::RemMemReg { region: region(slot, pages), fd: stray }
        }
        Req::SetLogBase(pages, with_fd) => {
            let log_fd = with_fd.then(|| fd(s, fds));
            Request::SetLogBase(LogBase::Shared {
                mmap_size: u64::from(pages) << 12,
                mmap_offset: 0,
                fd: log_fd,
            })
        }
        Req::SetVringNum(i, num) => Request::SetVringNum { index: v(i), num: num % 1024 },
        Req::SetVringAddr(i, d, a, u, log) => Request::SetVringAddr(VringAddr {
            index: v(i),
            flags: if log { VringAddrFlags::LOG } else { VringAddrFlags::empty() },
            descriptor: RAM + (u64::from(d) << 8),
            available: RAM + (u64::from(a) << 8),
            used: RAM + (u64::from(u) << 8),
            log: 0,
        }),
        Req::SetVringBase(i, base) => Request::SetVringBase { index: v(i), base: VringBase(base) },
        Req::GetVringBase(i) => Request::GetVringBase { index: v(i) },
        Req::GetVringBaseSkipDrain(i) => Request::GetVringBaseSkipDrain { index: v(i) },
        Req::SetVringKick(i, with_fd) => {
            Request::SetVringKick(VringFd { index: v(i), fd: with_fd.then(|| fd(s, fds)) })
        }
        Req::SetVringCall(i, with_fd) => {
            Request::SetVringCall(VringFd { index: v(i), fd: with_fd.then(|| fd(s, fds)) })
        }
        Req::SetVringEnable(i, enable) => Request::SetVringEnable { index: v(i), enable },
        Req::VringKick(i) => Request::VringKick { index: v(i) },
        Req::GetConfig(offset, size) => Request::GetConfig {
            offset: u32::from(offset),
            size: u32::from(size % 64),
            flags: ConfigFlags::Writable,
        },
        Req::SetConfig(offset, data) => {
            config = data.into_iter().take(64).collect();
            Request::SetConfig {
                offset: u32::from(offset),
                flags: ConfigFlags::Writable,
                data: &config,
            }
        }
        Req::SetStatus(status) => Request::SetStatus(status),
        Req::GetStatus => Request::GetStatus,
        Req::ResetDevice => Request::ResetDevice,
        Req::GetInflightFd(n, size) => Request::GetInflightFd(InflightDesc {
            mmap_size: 0,
            mmap_offset: 0,
            num_queues: n % 8,
            queue_size: size,
        }),
        Req::SetInflightFd(pages) => Request::SetInflightFd {
            desc: InflightDesc {
                mmap_size: u64::from(pages) << 12,
                mmap_offset: 0,
                num_queues: 2,
                queue_size: 256,
            },
            fd: fd(s, fds),
        },
        Req::SetBackendReqFd => Request::SetBackendReqFd(fd(s, fds)),
        Req::SetDeviceStateFd(load) => Request::SetDeviceStateFd {
            direction: if load { TransferDirection::Load } else { TransferDirection::Save },
            phase: TransferPhase::Stopped,
            fd: fd(s, fds),
        },
        Req::CheckDeviceState => Request::CheckDeviceState,
        Req::GetShmemConfig => Request::GetShmemConfig,
        Req::GetSharedObject(b) => Request::GetSharedObject(Uuid([b; 16])),
        Req::PostcopyAdvise => Request::PostcopyAdvise,
        Req::PostcopyListen => Request::PostcopyListen,
        Req::PostcopyEnd => Request::PostcopyEnd,
        Req::PostcopyAck => {
            let mut frame = Vec::with_capacity(20);
            frame.extend_from_slice(&FrontendCode::SetMemTable.as_u32().to_ne_bytes());
            frame.extend_from_slice(&1u32.to_ne_bytes());
            frame.extend_from_slice(&8u32.to_ne_bytes());
            frame.extend_from_slice(&0u64.to_ne_bytes());
            buf[..frame.len()].copy_from_slice(&frame);
            return Some(frame.len());
        }
        Req::Raw(code, payload, nfds) => {
            let payload: Vec<u8> = payload.into_iter().take(512).collect();
            for _ in 0..(nfds % 10) {
                fd(s, fds);
            }
            let mut frame = Vec::with_capacity(12 + payload.len());
            frame.extend_from_slice(&u32::from(code % 50).to_ne_bytes());
            frame.extend_from_slice(&(1u32 | if need_reply { 8 } else { 0 }).to_ne_bytes());
            frame.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
            frame.extend_from_slice(&payload);
            buf[..frame.len()].copy_from_slice(&frame);
            return Some(frame.len());
        }
    };
    request.encode_into(need_reply, buf).ok()
}

#[cfg(test)]
mod tests;
