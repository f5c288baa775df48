//! A transcript driver for `Backend`: send typed requests as real frames, collect every output as
//! an owned value, complete actions, and check with a [`Ledger`] that every descriptor token
//! leaves core exactly once.

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use super::Ledger;
use crate::backend::{
    Action, Backend, BackendOutcome, BackendRequestId, BackendResult, BackendSpec, Completion,
    Output,
};
use crate::message::{BackendRequest, Reply};
use crate::{FdToken, ProtocolError, Request};

/// An output with borrowed data copied out, so a test can keep it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Out {
    /// [`Output::Reply`].
    Reply(Reply<'static>),
    /// [`Output::Action`].
    Action(Action<'static>),
    /// [`Output::BackendRequest`].
    Backend {
        /// The request's id.
        id: BackendRequestId,
        /// The request.
        request: BackendRequest,
        /// NEED_REPLY is set.
        need_reply: bool,
    },
    /// [`Output::BackendResult`].
    Result(BackendResult),
    /// [`Output::Nack`].
    Nack {
        /// The unknown request code.
        request: u32,
        /// The failure status.
        status: u64,
    },
    /// [`Output::Close`].
    Close(ProtocolError),
}

fn leak(bytes: &[u8]) -> &'static [u8] {
    Box::leak(bytes.to_vec().into_boxed_slice())
}

fn own(output: Output<'_>) -> Out {
    match output {
        Output::Reply(reply) => Out::Reply(match reply {
            Reply::Config { offset, flags, data } => {
                Reply::Config { offset, flags, data: leak(data) }
            }
            Reply::LogBase(bytes) => Reply::LogBase(leak(bytes)),
            Reply::CryptoSession(bytes) => Reply::CryptoSession(leak(bytes)),
            Reply::ShmemConfig(config) => Reply::ShmemConfig(Box::leak(Box::new(*config))),
            Reply::MemTableBases(table) => {
                let regions: Vec<_> =
                    (0..table.len()).filter_map(|i| table.get(i)).map(|r| r.to_wire()).collect();
                Reply::MemTableBases(crate::message::MemoryTable::Standard(regions.leak()))
            }
            other => {
                // Every other reply borrows nothing; round-trip it through its encoding to get a
                // 'static value without lifetime tricks.
                let mut buf = vec![0u8; 4096];
                let len = other.encode_into(&mut buf).expect("reply encodes");
                let fds = other.fds();
                let frame = leak(&buf[..len]);
                let fds: &'static [FdToken] = Box::leak(fds.to_vec().into_boxed_slice());
                Reply::parse(frame, fds).expect("reply re-parses")
            }
        }),
        Output::Action(action) => Out::Action(match action {
            Action::WriteConfig { offset, data, migration } => {
                Action::WriteConfig { offset, data: leak(data), migration }
            }
            Action::UnmapAll => Action::UnmapAll,
            Action::MapRegion { region, fd } => Action::MapRegion { region, fd },
            Action::UnmapRegion(r) => Action::UnmapRegion(r),
            Action::MapLog { fd, mmap_size, mmap_offset } => {
                Action::MapLog { fd, mmap_size, mmap_offset }
            }
            Action::SetLogFd(fd) => Action::SetLogFd(fd),
            Action::SetLogging(on) => Action::SetLogging(on),
            Action::FeaturesAcked(f) => Action::FeaturesAcked(f),
            Action::StartVring { index, config, kick, enabled } => {
                Action::StartVring { index, config, kick, enabled }
            }
            Action::ReplaceKick { index, kick } => Action::ReplaceKick { index, kick },
            Action::UpdateVring { index, config, logging_only } => {
                Action::UpdateVring { index, config, logging_only }
            }
            Action::SetVringEnabled { index, enabled } => {
                Action::SetVringEnabled { index, enabled }
            }
            Action::StopVring { index, drain } => Action::StopVring { index, drain },
            Action::SetVringCall { index, fd } => Action::SetVringCall { index, fd },
            Action::SetVringErr { index, fd } => Action::SetVringErr { index, fd },
            Action::Kick(i) => Action::Kick(i),
            Action::ReadConfig { offset, size } => Action::ReadConfig { offset, size },
            Action::SetStatus(s) => Action::SetStatus(s),
            Action::ResetDevice => Action::ResetDevice,
            Action::AllocateInflight { mmap_size, num_queues, queue_size } => {
                Action::AllocateInflight { mmap_size, num_queues, queue_size }
            }
            Action::SetInflight { desc, fd } => Action::SetInflight { desc, fd },
            Action::SetBackendChannel(fd) => Action::SetBackendChannel(fd),
            Action::Iotlb(m) => Action::Iotlb(m),
            Action::GetSharedObject(u) => Action::GetSharedObject(u),
            Action::SetDeviceStateFd { direction, phase, fd } => {
                Action::SetDeviceStateFd { direction, phase, fd }
            }
            Action::CheckDeviceState => Action::CheckDeviceState,
            Action::SendRarp(m) => Action::SendRarp(m),
            Action::SetMtu(m) => Action::SetMtu(m),
            Action::PostcopyAdvise => Action::PostcopyAdvise,
            Action::PostcopyListen => Action::PostcopyListen,
            Action::PostcopyEnd => Action::PostcopyEnd,
            Action::CloseFd(fd) => Action::CloseFd(fd),
        }),
        Output::BackendRequest { id, request, need_reply } => {
            Out::Backend { id, request, need_reply }
        }
        Output::BackendResult(result) => Out::Result(result),
        Output::Nack { request, status } => Out::Nack { request, status },
        Output::Close(error) => Out::Close(error),
    }
}

/// Tokens an output hands off or releases (leaving core).
fn tokens_leaving(out: &Out) -> Vec<FdToken> {
    match out {
        Out::Reply(reply) => reply.fds().to_vec(),
        Out::Action(action) => action.fds().into_iter().collect(),
        Out::Backend { request, .. } => request.fds().to_vec(),
        Out::Result(BackendResult {
            outcome: BackendOutcome::SharedObject { fd: Some(fd), .. },
            ..
        }) => vec![*fd],
        Out::Result(_) | Out::Nack { .. } | Out::Close(_) => Vec::new(),
    }
}

/// A `Backend` driven by typed inputs, with the log of its outputs and the ledger of its tokens.
#[derive(Debug)]
pub struct Transcript {
    /// The state machine, for direct calls (the back-end channel API) and inspection.
    pub backend: Backend,
    ledger: Ledger,
    /// Every output so far.
    pub log: Vec<Out>,
}

impl Transcript {
    /// A back-end for `spec`.
    ///
    /// # Panics
    ///
    /// If the spec is invalid.
    pub fn backend(spec: BackendSpec) -> Self {
        Self {
            backend: Backend::new(spec).expect("valid spec"),
            ledger: Ledger::new(),
            log: Vec::new(),
        }
    }

    /// A fresh token, as a transport would assign to a received descriptor; it enters core when
    /// a frame or a completion carries it.
    pub fn fd(&mut self) -> FdToken {
        self.ledger.fresh()
    }

    /// A fresh token that the test hands to a back-end API call (a shared-memory map): it counts
    /// as entered now; a refused call leaves it with the test.
    pub fn api_fd(&mut self) -> FdToken {
        let fd = self.ledger.fresh();
        self.ledger.enter(fd, false);
        fd
    }

    fn enter(&mut self, fds: &[FdToken]) {
        for fd in fds {
            self.ledger.enter(*fd, true);
        }
    }

    fn drain(&mut self) -> Vec<Out> {
        let mut outs = Vec::new();
        while let Some(output) = self.backend.poll_output() {
            outs.push(own(output));
        }
        for out in &outs {
            for fd in tokens_leaving(out) {
                self.ledger.left(fd);
            }
        }
        self.log.extend(outs.iter().copied());
        outs
    }

    /// Sends a request (its fds are those of the typed request) and returns the outputs.
    pub fn send(&mut self, request: Request<'_>) -> Vec<Out> {
        self.send_flags(request, false)
    }

    /// Sends a request with NEED_REPLY set.
    pub fn send_need_reply(&mut self, request: Request<'_>) -> Vec<Out> {
        self.send_flags(request, true)
    }

    fn send_flags(&mut self, request: Request<'_>, need_reply: bool) -> Vec<Out> {
        let mut buf = vec![0u8; 4096];
        let len = request.encode_into(need_reply, &mut buf).expect("request encodes");
        let fds = request.fds();
        self.send_raw(&buf[..len], &fds)
    }

    /// Feeds raw bytes and fds, as a peer might send them.
    pub fn send_raw(&mut self, frame: &[u8], fds: &[FdToken]) -> Vec<Out> {
        self.enter(fds);
        let _ = self.backend.handle_frame(frame, fds);
        self.drain()
    }

    /// Reports a completion (tokens in it enter core).
    pub fn complete(&mut self, completion: Completion<'_>) -> Vec<Out> {
        let fds: Vec<FdToken> = match completion {
            Completion::InflightAllocated(Ok((fd, _))) => vec![fd],
            Completion::DeviceStateFd(Ok(Some(fd))) => vec![fd],
            Completion::SharedObject(Ok(fd)) | Completion::Userfaultfd(Ok(fd)) => vec![fd],
            _ => Vec::new(),
        };
        self.enter(&fds);
        let _ = self.backend.handle_completion(completion);
        self.drain()
    }

    /// Reports that back-end request `id` went out on the channel.
    pub fn sent(&mut self, id: BackendRequestId) -> Vec<Out> {
        self.backend.handle_backend_sent(id);
        self.drain()
    }

    /// Feeds the front-end's answer on the back-end channel (its tokens enter core).
    pub fn channel_reply(
        &mut self,
        frame: &[u8],
        fds: &[FdToken],
    ) -> (Result<BackendResult, ProtocolError>, Vec<Out>) {
        self.enter(fds);
        let result = self.backend.handle_backend_reply(frame, fds);
        (result, self.drain())
    }

    /// Outputs of a back-end API call made directly on the state machine.
    pub fn drain_outputs(&mut self) -> Vec<Out> {
        self.drain()
    }

    /// Every token entered core exactly once and left it exactly once.
    ///
    /// # Panics
    ///
    /// If a token is still held.
    pub fn assert_fds_balanced(&self) {
        self.ledger.assert_balanced();
    }
}
