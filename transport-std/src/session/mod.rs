//! The session engine: everything of one back-end connection except the sockets' readiness.
//!
//! A [`Session`] owns the connection's `Backend`, its [`FrameReader`], the [`Executor`] (device, descriptor table, guest memory, per-ring eventfds), the
//! replies not yet written, the back-end channel and the device's request queue. A socket adapter
//! only waits for readiness and calls in:
//!
//! - [`Session::read`] when the main socket is readable (or [`Session::has_buffered_input`]):
//!   frames are read, each with the descriptors it came with, each fed to `Backend` and its outputs
//!   carried out in order — replies written (what the socket does not take waits for
//!   [`Session::flush`]), actions executed, completions fed back until none is owed, back-end
//!   requests written to the channel, results handed to the device, [`Output::Close`] returned as
//!   [`SessionError::Closed`]. A partial frame stays in the reader when a non-blocking socket runs
//!   dry. A blocking session reads ahead (one `recvmsg` for a burst of frames); an evented one
//!   reads exactly one frame's bytes at a time, so edge-triggered readiness never misses a frame.
//! - [`Session::service`] when the device's request eventfd ([`Session::requests_fd`]) or the
//!   channel socket ([`Session::channel_fd`]) is ready: queued device requests go to `Backend`,
//!   requests waiting for the channel are written, and the front-end's answers on the channel are
//!   fed to `Backend` as they come. Nothing here blocks, so an answer that is late never holds up the
//!   main socket; a channel that breaks is reported to `Backend` (every outstanding request is
//!   lost) and closed, and the session goes on.
//!
//! How the session waits is its [`Style`]: a blocking adapter runs a device-state transfer to its
//! end right after the reply of SET_DEVICE_STATE_FD and waits for a queue to stop; an evented
//! one never waits — [`Session::service`] moves a transfer on as its pipe allows and feeds a
//! queue's stop when the device reports it (the adapter watches [`Session::transfer_pipe`] and
//! [`Session::stop_fd`]; frames are not read while a completion is owed). Dropping the session stops every running queue, resets the device, drops every mapping
//! and descriptor, and disconnects the device's [`BackendRequests`] handles.
//!
//! This module must not wait for readiness or decide protocol questions (what to answer, what is
//! valid, when to close): `vhu-core`'s `Backend` does.

mod actions;
mod channel;
mod error;
mod executor;
pub mod offer;
mod outbox;
mod requests;
mod stops;
pub(crate) mod transfer;

use std::borrow::BorrowMut;
use std::io::ErrorKind;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use vhu_core::backend::{Backend, BackendOutcome, BackendRequestId, BackendResult, Output};
use vhu_core::message::encode_status;
use vhu_core::{FdToken, ProtocolError};

use crate::device::Device;
use crate::encode_buf::EncodeBuf;
use crate::frame_reader::{FrameReader, ReadAhead};
use crate::scm::{RecvOutcome, ScmError};
use channel::Channel;
use outbox::{Outbox, SendFailed};

pub use error::{RequestCode, SessionError};
pub use executor::{ChannelChange, Executor, Owed};
pub use requests::{BackendRequests, DeviceRequest, RequestError, RequestResult, RequestTicket};
pub use stops::QueueStopped;
pub use transfer::MAX_STATE_SIZE;

/// How long a device-state transfer may wait for the front-end's end of the pipe, per read or
/// write, before it fails.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a blocking session's whole device-state transfer may take, however its bytes
/// trickle: the front-end client's own bound,
/// [`DEFAULT_TRANSFER_TIMEOUT`](crate::client::DEFAULT_TRANSFER_TIMEOUT). An event loop's
/// transfer holds nobody up and is not bounded.
pub const TRANSFER_DEADLINE: Duration = Duration::from_secs(300);

/// Completion rounds after one input before the session gives up on a back-end that keeps
/// refusing them (it never needs more than one).
const MAX_COMPLETION_ROUNDS: usize = 4;

/// Errno-like statuses the session reports for local failures.
pub(crate) mod status {
    pub(crate) const EIO: u64 = 5;
    pub(crate) const EBADF: u64 = 9;
    pub(crate) const ENOENT: u64 = 2;
    pub(crate) const EINVAL: u64 = 22;
    pub(crate) const ENOTSUP: u64 = 95;
}

/// Why [`Session::read`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The socket has nothing more now (it would block).
    Drained,
    /// Replies are backlogged; read again once [`Session::flush`] has written them.
    Paused,
    /// The frame budget is spent; more may be waiting.
    Budget,
    /// The peer hung up at a frame boundary.
    HungUp,
    /// A completion is owed (a queue still stopping): read again once [`Session::service`]
    /// has fed it ([`Session::is_awaiting`] turns false).
    Awaiting,
}

/// One back-end connection's state; see the module docs.
///
/// `H` holds the device: `&mut D` for an adapter that borrows it, `D` itself for one that owns it.
pub struct Session<D: Device + ?Sized, H: BorrowMut<D>> {
    /// First: dropping it stops the queues and resets the device before the sockets close.
    exec: Executor<D, H>,
    /// Boxed: the state machine holds its tables inline (tens of KiB), and a session moves.
    backend: Box<Backend>,
    reader: FrameReader,
    replies: Outbox<RequestCode>,
    channel: Channel,
    channel_generation: u64,
    requests: BackendRequests,
    tickets: Vec<(BackendRequestId, RequestTicket)>,
    scratch: EncodeBuf,
    style: Style,
}

/// How a session waits: what its adapter can afford.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// The adapter serves one connection on its thread and may block: a device-state transfer
    /// runs to its end right after its reply (each pipe read or write waiting at most
    /// [`TRANSFER_TIMEOUT`]), and queues stop before GET_VRING_BASE or RESET_DEVICE is
    /// answered.
    Blocking,
    /// An event loop that must never wait: a transfer moves as its pipe allows
    /// ([`Session::transfer_pipe`]), and a queue that takes a while to stop (GET_VRING_BASE,
    /// RESET_DEVICE) reports later ([`Device::stop_queue_then`], [`Session::stop_fd`]);
    /// [`Session::service`] picks both up.
    Evented,
}

impl<D: Device + ?Sized, H: BorrowMut<D>> std::fmt::Debug for Session<D, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("backend", &self.backend)
            .field("fds", &self.exec.fd_count())
            .field("regions", &self.exec.memory().len())
            .field("outstanding", &self.tickets.len())
            .finish_non_exhaustive()
    }
}

impl<D: Device + ?Sized, H: BorrowMut<D>> Session<D, H> {
    /// A fresh session for `device`, waiting in `style`. The device gets its
    /// [`BackendRequests`] handle through [`Device::connected`]. What the transport does not
    /// carry out is not offered (see [`offer`]).
    pub fn new(mut device: H, style: Style) -> Result<Self, SessionError> {
        let spec = offer::offered(device.borrow_mut().spec()).check()?;
        let backend = crate::in_place::boxed(|| Backend::from_checked(spec));
        let queues = backend.spec().queues;
        let requests = BackendRequests::new().map_err(SessionError::Setup)?;
        let mut exec = Executor::new(device, queues);
        exec.enable_device_state_transfer();
        if style == Style::Evented {
            exec.enable_evented_stops().map_err(SessionError::Setup)?;
        }
        let mut session = Self {
            exec,
            backend,
            reader: FrameReader::new(match style {
                Style::Blocking => ReadAhead::Greedy,
                Style::Evented => ReadAhead::Exact,
            }),
            replies: Outbox::new(),
            channel: Channel::new(),
            channel_generation: 0,
            requests,
            tickets: Vec::new(),
            scratch: EncodeBuf::new(),
            style,
        };
        let handle = session.requests.clone();
        session.exec.device().connected(handle);
        Ok(session)
    }

    /// The state machine, for inspection.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The executor (device, descriptors, guest memory), for inspection.
    pub fn executor(&self) -> &Executor<D, H> {
        &self.exec
    }

    /// A handle through which the device asks for back-end requests.
    pub fn backend_requests(&self) -> BackendRequests {
        self.requests.clone()
    }

    /// The eventfd that becomes readable when the device queued requests: call
    /// [`Session::service`] then.
    pub fn requests_fd(&self) -> BorrowedFd<'_> {
        self.requests.wake_fd()
    }

    /// The back-end channel's socket, once the front-end sent one: call [`Session::service`] when
    /// it is readable (and writable, while [`Session::channel_wants_write`]).
    pub fn channel_fd(&self) -> Option<BorrowedFd<'_>> {
        self.channel.fd()
    }

    /// Changes whenever the channel socket is replaced or closed, so an event loop knows to
    /// re-register it.
    pub fn channel_generation(&self) -> u64 {
        self.channel_generation
    }

    /// Whether requests wait for the channel socket to become writable.
    pub fn channel_wants_write(&self) -> bool {
        self.channel.wants_write()
    }

    /// The request whose reply the main socket has not taken yet, if any.
    pub fn unsent_reply(&self) -> Option<RequestCode> {
        self.replies.front()
    }

    /// Whether so many replies wait that reading should pause until they are written.
    pub fn is_backlogged(&self) -> bool {
        self.replies.is_backlogged()
    }

    /// Reads and handles up to `budget` frames from the main socket; see the module docs.
    pub fn read(&mut self, socket: BorrowedFd<'_>, budget: usize) -> Result<Read, SessionError> {
        for _ in 0..budget {
            if self.backend.is_awaiting_completion() {
                return Ok(Read::Awaiting);
            }
            if self.replies.is_backlogged() {
                return Ok(Read::Paused);
            }
            match self.reader.recv(socket) {
                Ok(RecvOutcome::Frame(_)) => {}
                Ok(RecvOutcome::Closed) => return Ok(Read::HungUp),
                Err(ScmError::Io(error)) if error.kind() == ErrorKind::WouldBlock => {
                    return Ok(Read::Drained)
                }
                Err(error) => return Err(SessionError::Recv(error)),
            }
            let tokens = self.exec.insert_fds(self.reader.take_fds())?;
            let frame = self.reader.frame().unwrap_or(&[]);
            // A refusal has already been turned into outputs (a NACK or a close).
            let _refusal = self.backend.handle_frame(frame, &tokens);
            self.drain(Some(socket))?;
        }
        Ok(Read::Budget)
    }

    /// Whether frames read ahead wait in the session: call [`Session::read`] before waiting for
    /// the socket. Only a blocking session reads ahead; an evented one reads exactly one frame at
    /// a time, so readiness alone tells it that one waits.
    pub fn has_buffered_input(&self) -> bool {
        self.reader.has_buffered()
    }

    /// Whether the main socket is the only source of work: no channel socket (so no device
    /// request can be queued) and none queued, no transfer or stop under way. A
    /// blocking adapter may then read the socket without waiting for readiness first.
    pub fn main_socket_only(&self) -> bool {
        self.channel.fd().is_none()
            && self.requests.is_quiet()
            && !self.exec.is_awaiting_stop()
            && self.exec.transfer_pipe().is_none()
    }

    /// Writes the replies that wait, as far as `socket` takes them.
    pub fn flush(&mut self, socket: BorrowedFd<'_>) -> Result<(), SessionError> {
        self.replies
            .flush(socket, |_| {})
            .map_err(|SendFailed(code, source)| SessionError::Send { code, source })
    }

    /// Hands the device's queued requests to `Backend`, writes what waits for the channel, reads
    /// the front-end's answers on it, and moves an evented device-state transfer on. Never
    /// blocks.
    pub fn service(&mut self) -> Result<(), SessionError> {
        if self.exec.is_awaiting_stop() {
            self.exec.collect_stop();
            if !self.exec.is_awaiting_stop() {
                self.drain(None)?;
            }
        }
        if self.replies.is_empty() {
            self.move_transfer();
        }
        for (ticket, request) in self.requests.take() {
            match self.submit(request)? {
                Ok(id) => self.tickets.push((id, ticket)),
                Err(error) => {
                    self.exec.device().backend_result(ticket, RequestResult::Refused(error));
                }
            }
            self.drain(None)?;
        }
        let mut sent = Vec::new();
        let flushed = self.channel.flush(|id| sent.push(id));
        for id in sent {
            self.backend.handle_backend_sent(id);
        }
        if flushed.is_err() {
            return self.channel_broken();
        }
        loop {
            match self.channel.recv() {
                Ok(Some((frame, fds))) => {
                    let tokens = self.exec.insert_fds(fds)?;
                    if self.backend.handle_backend_reply(&frame, &tokens).is_err() {
                        // `Backend` has reported every outstanding request lost.
                        self.close_channel();
                    }
                    self.drain(None)?;
                }
                Ok(None) => return self.drain(None),
                Err(channel::Broken) => return self.channel_broken(),
            }
        }
    }

    /// Hands one device request to `Backend`, its descriptor through the table. The inner
    /// result is `Backend`'s answer.
    fn submit(
        &mut self,
        request: DeviceRequest,
    ) -> Result<Result<BackendRequestId, ProtocolError>, SessionError> {
        let fds = self.exec.fds_mut();
        let mut token_of = |fd: OwnedFd| -> Result<FdToken, SessionError> {
            let tokens = fds.insert_all(vec![fd])?;
            // Cannot fail: one descriptor inserted, one token named.
            Ok(tokens[0])
        };
        let backend = &mut self.backend;
        let (result, token) = match request {
            DeviceRequest::Iotlb(msg) => (backend.send_iotlb(msg), None),
            DeviceRequest::ConfigChange => (backend.send_config_change(), None),
            DeviceRequest::HostNotifier { index, size, offset, fd } => {
                let token = fd.map(&mut token_of).transpose()?;
                (backend.send_host_notifier(index, size, offset, token), token)
            }
            DeviceRequest::VringCall(index) => (backend.send_vring_call(index), None),
            DeviceRequest::VringErr(index) => (backend.send_vring_err(index), None),
            DeviceRequest::SharedObjectAdd(uuid) => (backend.send_shared_object_add(uuid), None),
            DeviceRequest::SharedObjectRemove(uuid) => {
                (backend.send_shared_object_remove(uuid), None)
            }
            DeviceRequest::SharedObjectLookup(uuid) => {
                (backend.send_shared_object_lookup(uuid), None)
            }
            DeviceRequest::ShmemMap { mapping, fd } => {
                let token = token_of(fd)?;
                (backend.send_shmem_map(mapping, token), Some(token))
            }
            DeviceRequest::ShmemUnmap(mapping) => (backend.send_shmem_unmap(mapping), None),
        };
        if let (Err(_), Some(token)) = (&result, token) {
            // A refused request leaves its descriptor with the caller: close it.
            self.exec.fds_mut().release(token);
        }
        Ok(result)
    }

    /// Carries out every output, feeding completions until none is owed.
    fn drain(&mut self, socket: Option<BorrowedFd<'_>>) -> Result<(), SessionError> {
        for _ in 0..MAX_COMPLETION_ROUNDS {
            while let Some(output) = self.backend.poll_output() {
                match output {
                    Output::Reply(reply) => {
                        let code = RequestCode::from(reply.code());
                        let len = self
                            .scratch
                            .encode(|buf| reply.encode_into(buf))
                            .map_err(|source| SessionError::Encode { code, source })?;
                        let mut fds = Vec::new();
                        for token in reply.fds() {
                            let fd = self.exec.fds_mut().take(token);
                            fds.push(fd.ok_or(SessionError::MissingFd { code, token })?);
                        }
                        self.replies
                            .send(socket, code, self.scratch.frame(len), fds, |_| {})
                            .map_err(|SendFailed(code, source)| SessionError::Send {
                                code,
                                source,
                            })?;
                    }
                    Output::Nack { request, status } => {
                        let code = RequestCode(request);
                        let len = self
                            .scratch
                            .encode(|buf| encode_status(request, status, buf))
                            .map_err(|source| SessionError::Encode { code, source })?;
                        self.replies
                            .send(socket, code, self.scratch.frame(len), Vec::new(), |_| {})
                            .map_err(|SendFailed(code, source)| SessionError::Send {
                                code,
                                source,
                            })?;
                    }
                    Output::Action(action) => {
                        self.exec.execute(action);
                        match self.exec.take_backend_channel() {
                            Some(ChannelChange::Open(socket)) => {
                                self.channel_generation += 1;
                                self.channel.set_socket(socket);
                                self.requests.set_channel_open(true);
                            }
                            // `Backend` hears of it from the completion.
                            Some(ChannelChange::Closed) => self.close_channel(),
                            None => {}
                        }
                    }
                    Output::BackendRequest { id, request, need_reply } => {
                        let fds: Vec<OwnedFd> = request
                            .fds()
                            .iter()
                            .filter_map(|t| self.exec.fds_mut().take(*t))
                            .collect();
                        let mut sent = None;
                        let result =
                            self.channel.send(id, &request, need_reply, fds, |id| sent = Some(id));
                        if let Some(id) = sent {
                            self.backend.handle_backend_sent(id);
                        }
                        if result.is_err() {
                            self.close_channel();
                            self.backend.handle_backend_channel_lost();
                        }
                    }
                    Output::BackendResult(result) => self.deliver(result),
                    Output::Close(error) => return Err(SessionError::Closed(error)),
                }
            }
            if !self.backend.is_awaiting_completion() {
                self.exec.discard_owed();
                if self.replies.is_empty() {
                    self.move_transfer();
                }
                return Ok(());
            }
            if self.exec.is_awaiting_stop() {
                // The queue reports later; `service` feeds the completion then.
                return Ok(());
            }
            if let Some(index) = self.exec.take_lost_stop() {
                return Err(SessionError::StopLost { index: index.0 });
            }
            self.exec.feed_completion(&mut self.backend).map_err(SessionError::Completion)?;
        }
        Err(SessionError::Completion(ProtocolError::UnexpectedCompletion))
    }

    /// The pipe of a device-state transfer in progress (by an evented session), whether it
    /// waits to write (else to read), and a number that changes with each transfer, so an event
    /// loop knows to register a new pipe: call [`Session::service`] when it is ready.
    pub fn transfer_pipe(&self) -> Option<(BorrowedFd<'_>, bool, u64)> {
        let (fd, writes) = self.exec.transfer_pipe()?;
        Some((fd, writes, self.exec.transfers_done()))
    }

    /// Whether the transfer's last step stopped at its byte budget with its pipe perhaps still
    /// ready (asked once: the answer is forgotten). An event loop whose readiness is
    /// edge-triggered re-arms the pipe then, as for a main socket read to its frame budget.
    pub fn take_transfer_spent(&mut self) -> bool {
        self.exec.take_transfer_spent()
    }

    /// The eventfd that becomes readable when a queue finished stopping (evented sessions):
    /// call [`Session::service`] then.
    pub fn stop_fd(&self) -> Option<BorrowedFd<'_>> {
        self.exec.stop_fd()
    }

    /// Whether the back-end waits for a completion (a queue still stopping): frames are not
    /// read meanwhile.
    pub fn is_awaiting(&self) -> bool {
        self.backend.is_awaiting_completion()
    }

    fn move_transfer(&mut self) {
        match self.style {
            Style::Blocking => self.exec.run_transfer(TRANSFER_TIMEOUT),
            Style::Evented => self.exec.progress_transfer(),
        }
    }

    /// Tells the device how one of its requests ended.
    fn deliver(&mut self, result: BackendResult) {
        let fd = match result.outcome {
            BackendOutcome::SharedObject { fd: Some(token), .. } => self.exec.fds_mut().take(token),
            _ => None,
        };
        let Some(position) = self.tickets.iter().position(|(id, _)| *id == result.id) else {
            // Not a request of the device's (none other is sent): nothing to tell.
            return;
        };
        let (_, ticket) = self.tickets.remove(position);
        let outcome = match result.outcome {
            BackendOutcome::Sent => RequestResult::Sent,
            BackendOutcome::Acked(status) => RequestResult::Acked(status),
            BackendOutcome::SharedObject { status, .. } => {
                RequestResult::SharedObject { status, fd }
            }
            BackendOutcome::Lost => RequestResult::Lost,
        };
        self.exec.device().backend_result(ticket, outcome);
    }

    fn close_channel(&mut self) {
        self.requests.set_channel_open(false);
        self.channel.drop_socket();
        self.channel_generation += 1;
    }

    fn channel_broken(&mut self) -> Result<(), SessionError> {
        self.close_channel();
        self.backend.handle_backend_channel_lost();
        self.drain(None)
    }
}

impl<D: Device + ?Sized, H: BorrowMut<D>> Drop for Session<D, H> {
    fn drop(&mut self) {
        self.requests.close();
    }
}
