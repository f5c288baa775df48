//! The blocking driver of one back-end connection: socket and descriptors in, `Backend` in the
//! middle, device calls, mappings and replies out.
//!
//! [`Connection::run`] loops: read one frame header-first with SCM_RIGHTS ([`crate::scm`]), store
//! its descriptors in the [`FdTable`], feed [`Backend::handle_frame`], and drain
//! [`Backend::poll_output`] in order: replies are encoded and sent with their descriptors, actions
//! are carried out (guest memory, the [`Device`], per-ring eventfds, the back-end channel), and
//! [`Output::Close`] ends the connection. An action that completes records its outcome; once the
//! outputs are drained, if the back-end awaits a completion the driver feeds it (success or
//! failure, never nothing) and drains again, so the back-end never waits and the next frame is
//! only read when every completion is in. A device-state transfer runs after the reply of
//! SET_DEVICE_STATE_FD is sent, before the next frame, with an inactivity timeout.
//!
//! Ending a connection — the peer hung up, an I/O error, a malformed stream, `Output::Close` —
//! stops every running queue, resets the device, and drops every mapping and descriptor of the
//! session.
//!
//! This module must not decide protocol questions (what to answer, what is valid, when to close):
//! `vhu-core`'s `Backend` does. It only executes, and maps local failures to status codes.

mod actions;
mod channel;
mod transfer;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vhu_core::backend::{Backend, Completion, Output, SpecError};
use vhu_core::limits::MAX_FRAME_SIZE;
use vhu_core::message::VringBase;
use vhu_core::{FdToken, FrameDecoder, FrontendCode, ProtocolError, Reply, VringIndex, WireError};

use crate::device::{Device, DeviceError, Notifier};
use crate::fd_table::{FdTable, TokensExhausted};
use crate::memory::MemoryMap;
use crate::scm::{self, RecvOutcome, ScmError};
use transfer::Transfer;

pub use channel::{BackendRequests, DeviceRequest};

/// How long a device-state transfer may wait for the front-end's end of the pipe, per read or
/// write, before it fails.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the driver waits for the front-end's answer on the back-end channel.
pub const CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Completion rounds after one input before the driver gives up on a back-end that keeps
/// refusing them (it never needs more than one).
const MAX_COMPLETION_ROUNDS: usize = 4;

/// Errno-like statuses the driver reports for local failures.
pub(crate) mod status {
    pub(crate) const EIO: u64 = 5;
    pub(crate) const EBADF: u64 = 9;
    pub(crate) const ENOENT: u64 = 2;
    pub(crate) const EINVAL: u64 = 22;
    pub(crate) const ENOTSUP: u64 = 95;
}

/// Why a connection ended other than by the peer hanging up between frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The device's spec cannot be served.
    #[error("the device spec is invalid: {0}")]
    Spec(#[from] SpecError),
    /// The connection's own resources (an eventfd) could not be created.
    #[error("setting up the connection failed: {0}")]
    Setup(#[source] std::io::Error),
    /// Receiving a frame failed (I/O error, malformed header, peer gone mid-frame, bad fds).
    #[error("receiving a frame failed: {0}")]
    Recv(#[source] ScmError),
    /// Sending a reply failed.
    #[error("sending the reply to {code} failed: {source}")]
    Send {
        /// The request answered.
        code: FrontendCode,
        /// Why.
        #[source]
        source: ScmError,
    },
    /// A reply could not be encoded.
    #[error("encoding the reply to {code} failed: {source}")]
    Encode {
        /// The request answered.
        code: FrontendCode,
        /// Why.
        #[source]
        source: WireError,
    },
    /// A reply names a descriptor the driver does not hold.
    #[error("the reply to {code} names descriptor {token:?}, which the driver does not hold")]
    MissingFd {
        /// The request answered.
        code: FrontendCode,
        /// The token.
        token: FdToken,
    },
    /// The peer sent more descriptors than the table can name.
    #[error(transparent)]
    Tokens(#[from] TokensExhausted),
    /// The back-end closed the connection for this reason.
    #[error("the back-end closed the connection: {0}")]
    Closed(ProtocolError),
    /// The back-end refused the driver's completion.
    #[error("the back-end refused a completion: {0}")]
    Completion(ProtocolError),
}

/// A completion the driver owes the back-end, with owned data.
#[derive(Debug)]
pub(crate) enum Owed {
    Done(Result<(), u64>),
    Stopped { index: VringIndex, base: VringBase },
    Config(Option<Vec<u8>>),
    Inflight(Result<(FdToken, u64), u64>),
    DeviceState(Result<Option<FdToken>, u8>),
    SharedObject(Result<FdToken, u64>),
    Userfaultfd(Result<FdToken, u64>),
}

impl Owed {
    fn completion(&self) -> Completion<'_> {
        match self {
            Self::Done(result) => Completion::Done(*result),
            Self::Stopped { index, base } => {
                Completion::VringStopped { index: *index, base: *base }
            }
            Self::Config(data) => Completion::ConfigRead(data.as_deref()),
            Self::Inflight(result) => Completion::InflightAllocated(*result),
            Self::DeviceState(result) => Completion::DeviceStateFd(*result),
            Self::SharedObject(result) => Completion::SharedObject(*result),
            Self::Userfaultfd(result) => Completion::Userfaultfd(*result),
        }
    }

    /// The token this completion hands to the back-end, if any.
    fn token(&self) -> Option<FdToken> {
        match self {
            Self::Inflight(Ok((token, _)))
            | Self::DeviceState(Ok(Some(token)))
            | Self::SharedObject(Ok(token))
            | Self::Userfaultfd(Ok(token)) => Some(*token),
            _ => None,
        }
    }
}

/// Whether the driver handed a ring to the device.
#[derive(Clone, Copy, Debug)]
enum Run {
    Stopped,
    Running,
    /// The device refused to start it; GET_VRING_BASE answers with the start base.
    Failed(VringBase),
}

/// The driver's per-ring state: notification fds outlive starts and stops.
#[derive(Debug)]
struct Ring {
    call: Notifier,
    err: Notifier,
    run: Run,
}

/// Everything of a connection except the back-end state machine.
struct Session<'d, D: Device + ?Sized> {
    device: &'d mut D,
    socket: UnixStream,
    decoder: Box<FrameDecoder>,
    received: Vec<OwnedFd>,
    fds: FdTable,
    memory: MemoryMap,
    rings: Vec<Ring>,
    channel: channel::Channel,
    log_fd: Option<OwnedFd>,
    inflight: Option<OwnedFd>,
    owed: Option<Owed>,
    transfer: Option<Transfer>,
    transfer_result: Option<Result<(), DeviceError>>,
    buf: Box<[u8; MAX_FRAME_SIZE]>,
}

/// One front-end connection served by a [`Device`]. See the module docs.
pub struct Connection<'d, D: Device + ?Sized> {
    backend: Backend,
    session: Session<'d, D>,
}

impl<D: Device + ?Sized> std::fmt::Debug for Connection<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("backend", &self.backend)
            .field("fds", &self.session.fds.len())
            .field("regions", &self.session.memory.len())
            .finish_non_exhaustive()
    }
}

/// How long a reply may wait for a front-end that does not read its socket.
pub const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl<'d, D: Device + ?Sized> Connection<'d, D> {
    /// A fresh back-end for `socket`, a connected blocking stream socket.
    pub fn new(device: &'d mut D, socket: UnixStream) -> Result<Self, DriverError> {
        // A front-end that sends requests but never reads the replies must not park the daemon
        // in sendmsg forever: after REPLY_TIMEOUT the reply fails and the connection ends.
        socket.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(DriverError::Setup)?;
        let backend = Backend::new(device.spec())?;
        let queues = backend.spec().queues;
        let rings = (0..queues)
            .map(|_| Ring { call: Notifier::new(), err: Notifier::new(), run: Run::Stopped })
            .collect();
        let session = Session {
            device,
            socket,
            decoder: Box::new(FrameDecoder::new()),
            received: Vec::new(),
            fds: FdTable::new(),
            memory: MemoryMap::new(),
            rings,
            channel: channel::Channel::new().map_err(DriverError::Setup)?,
            log_fd: None,
            inflight: None,
            owed: None,
            transfer: None,
            transfer_result: None,
            buf: Box::new([0; MAX_FRAME_SIZE]),
        };
        let connection = Self { backend, session };
        let requests = connection.backend_requests();
        connection.session.device.connected(requests);
        Ok(connection)
    }

    /// A handle through which the device asks for back-end requests (config change, in-band
    /// notifications); they are sent between frames.
    pub fn backend_requests(&self) -> BackendRequests {
        self.session.channel.requests()
    }

    /// The state machine, for inspection.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Serves the connection until the peer hangs up (`Ok`) or it must close (`Err`). Either way
    /// the session's queues, mappings and descriptors are gone when this returns.
    pub fn run(mut self) -> Result<(), DriverError> {
        while self.handle_next()? {}
        Ok(())
    }

    /// Waits for the next frame (or device request) and handles it; `Ok(false)` when the peer
    /// hung up at a frame boundary.
    pub fn handle_next(&mut self) -> Result<bool, DriverError> {
        if self.session.channel.wait_for_requests(&self.session.socket) {
            for request in self.session.channel.take_requests() {
                channel::submit(&mut self.backend, request);
                self.drain()?;
            }
            return Ok(true);
        }
        let s = &mut self.session;
        match scm::recv_frame(&s.socket, &mut s.decoder, &mut s.received) {
            Ok(RecvOutcome::Frame(_)) => {}
            Ok(RecvOutcome::Closed) => return Ok(false),
            Err(error) => return Err(DriverError::Recv(error)),
        }
        let tokens = s.fds.insert_all(std::mem::take(&mut s.received))?;
        let frame = s.decoder.frame().unwrap_or(&[]);
        // A refusal has already been turned into outputs (a NACK or a close).
        let _refusal = self.backend.handle_frame(frame, &tokens);
        self.drain()?;
        Ok(true)
    }

    /// Carries out every output, feeding completions until none is owed.
    fn drain(&mut self) -> Result<(), DriverError> {
        for _ in 0..MAX_COMPLETION_ROUNDS {
            while let Some(output) = self.backend.poll_output() {
                self.session.handle_output(output)?;
            }
            if !self.backend.is_awaiting_completion() {
                self.session.discard_owed();
                self.session.run_transfer();
                return Ok(());
            }
            let owed = self.session.owed.take().unwrap_or(Owed::Done(Err(status::EIO)));
            self.backend.handle_completion(owed.completion()).map_err(DriverError::Completion)?;
        }
        Err(DriverError::Completion(ProtocolError::UnexpectedCompletion))
    }
}

impl<D: Device + ?Sized> Session<'_, D> {
    fn handle_output(&mut self, output: Output<'_>) -> Result<(), DriverError> {
        match output {
            Output::Reply(reply) => self.send_reply(&reply),
            Output::Action(action) => {
                self.execute(action);
                Ok(())
            }
            Output::BackendRequest { request, need_reply } => {
                self.channel.send(&mut self.fds, &request, need_reply);
                Ok(())
            }
            Output::Close(error) => Err(DriverError::Closed(error)),
        }
    }

    fn send_reply(&mut self, reply: &Reply<'_>) -> Result<(), DriverError> {
        let code = reply.code();
        let len = reply
            .encode_into(&mut self.buf[..])
            .map_err(|source| DriverError::Encode { code, source })?;
        let mut owned = Vec::new();
        for token in reply.fds() {
            owned.push(self.fds.take(token).ok_or(DriverError::MissingFd { code, token })?);
        }
        let borrowed: Vec<BorrowedFd<'_>> = owned.iter().map(AsFd::as_fd).collect();
        scm::send(&self.socket, &self.buf[..len], &borrowed)
            .map_err(|source| DriverError::Send { code, source })
    }

    /// Records a completion; the map results of one request fold into the first failure.
    fn owe(&mut self, owed: Owed) {
        if let (Some(Owed::Done(Err(_))), Owed::Done(_)) = (&self.owed, &owed) {
            return;
        }
        self.discard_owed();
        self.owed = Some(owed);
    }

    /// Drops a completion that will not be fed, with the descriptor it would have handed off.
    fn discard_owed(&mut self) {
        if let Some(token) = self.owed.take().and_then(|owed| owed.token()) {
            self.fds.release(token);
        }
    }

    fn run_transfer(&mut self) {
        if let Some(transfer) = self.transfer.take() {
            self.transfer_result = Some(transfer.run(&mut *self.device, TRANSFER_TIMEOUT));
        }
    }

    /// Stops every queue the device runs.
    fn stop_queues(&mut self) {
        for (i, ring) in self.rings.iter_mut().enumerate() {
            if let Run::Running = ring.run {
                // Cannot truncate: the back-end has at most 256 queues.
                let _ = self.device.stop_queue(VringIndex(i as u8), false);
            }
            ring.run = Run::Stopped;
        }
    }
}

impl<D: Device + ?Sized> Drop for Session<'_, D> {
    fn drop(&mut self) {
        self.stop_queues();
        self.device.reset();
        self.memory.clear();
        self.fds.clear();
    }
}
