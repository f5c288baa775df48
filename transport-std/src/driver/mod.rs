//! The blocking driver of one back-end connection: socket and descriptors in, `Backend` in the
//! middle, device calls, mappings and replies out.
//!
//! [`Connection::run`] loops: read one frame header-first with SCM_RIGHTS ([`crate::scm`]), store
//! its descriptors in the [`FdTable`](crate::FdTable), feed [`Backend::handle_frame`], and drain
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
//! The session state and the action executor are [`Executor`], public so that other drivers
//! (such as `vhu-transport-mio`) share them.
//!
//! This module must not decide protocol questions (what to answer, what is valid, when to close):
//! `vhu-core`'s `Backend` does. It only executes, and maps local failures to status codes.

mod actions;
mod channel;
mod executor;
mod transfer;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vhu_core::backend::{Backend, BackendOutcome, BackendRequestId, Output, SpecError};
use vhu_core::limits::MAX_FRAME_SIZE;
use vhu_core::{FdToken, FrameDecoder, FrontendCode, ProtocolError, Reply, WireError};

use crate::device::Device;
use crate::fd_table::TokensExhausted;
use crate::scm::{self, RecvOutcome, ScmError};

pub use channel::{BackendRequests, DeviceRequest};
pub use executor::{Executor, Owed};

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

/// Everything of a connection except the back-end state machine.
///
/// The executor comes first: dropping it stops the queues and resets the device before the
/// socket and the channel close.
struct Session<'d, D: Device + ?Sized> {
    exec: Executor<D, &'d mut D>,
    socket: UnixStream,
    decoder: Box<FrameDecoder>,
    received: Vec<OwnedFd>,
    channel: channel::Channel,
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
            .field("fds", &self.session.exec.fd_count())
            .field("regions", &self.session.exec.memory().len())
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
        let session = Session {
            exec: Executor::new(device, queues).with_device_state_transfer(),
            socket,
            decoder: Box::new(FrameDecoder::new()),
            received: Vec::new(),
            channel: channel::Channel::new().map_err(DriverError::Setup)?,
            buf: Box::new([0; MAX_FRAME_SIZE]),
        };
        let mut connection = Self { backend, session };
        let requests = connection.backend_requests();
        connection.session.exec.device().connected(requests);
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
        let tokens = s.exec.insert_fds(std::mem::take(&mut s.received))?;
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
                match self.session.handle_output(output)? {
                    None => {}
                    Some((id, channel::Exchanged::Sent)) => self.backend.handle_backend_sent(id),
                    Some((id, channel::Exchanged::Answered(frame, fds))) => {
                        self.backend.handle_backend_sent(id);
                        let tokens = self.session.exec.insert_fds(fds)?;
                        if self.backend.handle_backend_reply(&frame, &tokens).is_err() {
                            self.session.channel.drop_socket();
                        }
                    }
                    Some((_, channel::Exchanged::Failed)) => {
                        self.backend.handle_backend_channel_lost();
                    }
                }
            }
            if !self.backend.is_awaiting_completion() {
                self.session.exec.discard_owed();
                self.session.exec.run_transfer(TRANSFER_TIMEOUT);
                return Ok(());
            }
            self.session
                .exec
                .feed_completion(&mut self.backend)
                .map_err(DriverError::Completion)?;
        }
        Err(DriverError::Completion(ProtocolError::UnexpectedCompletion))
    }
}

impl<D: Device + ?Sized> Session<'_, D> {
    fn handle_output(
        &mut self,
        output: Output<'_>,
    ) -> Result<Option<(BackendRequestId, channel::Exchanged)>, DriverError> {
        match output {
            Output::Reply(reply) => self.send_reply(&reply).map(|()| None),
            Output::Action(action) => {
                self.exec.execute(action);
                if let Some(fd) = self.exec.take_backend_channel() {
                    self.channel.set_socket(fd);
                }
                Ok(None)
            }
            Output::BackendRequest { id, request, need_reply } => {
                Ok(Some((id, self.channel.send(self.exec.fds_mut(), &request, need_reply))))
            }
            Output::BackendResult(result) => {
                if let BackendOutcome::SharedObject { fd: Some(fd), .. } = result.outcome {
                    self.exec.fds_mut().release(fd);
                }
                Ok(None)
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
            owned.push(
                self.exec.fds_mut().take(token).ok_or(DriverError::MissingFd { code, token })?,
            );
        }
        let borrowed: Vec<BorrowedFd<'_>> = owned.iter().map(AsFd::as_fd).collect();
        scm::send(&self.socket, &self.buf[..len], &borrowed)
            .map_err(|source| DriverError::Send { code, source })
    }
}
