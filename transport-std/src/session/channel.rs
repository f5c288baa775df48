//! The back-end channel's socket (SET_BACKEND_REQ_FD): requests out, the front-end's answers in,
//! never blocking.
//!
//! The socket is made non-blocking when it arrives, and every read and write asks not to wait
//! besides (`MSG_DONTWAIT`): O_NONBLOCK belongs to the open file, which the front-end shares
//! when it kept a copy of the socket it sent, and can clear again to hang the session (and an
//! event loop serving others) in a read. Requests are written as far as the socket takes them
//! and the rest waits in an [`Outbox`] for the session's next turn; answers are read until the
//! socket runs dry (so nothing waits in the reader afterwards), a partial frame kept until the
//! rest arrives. Any failure —
//! the peer closed it, an I/O error, a malformed frame — makes the socket unusable: it is closed
//! and the caller tells `Backend`, which reports every outstanding request as lost.
//!
//! This module must not judge the answers (`Backend::handle_backend_reply` does) nor decide what
//! is sent.

use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use vhu_core::backend::BackendRequestId;
use vhu_core::BackendRequest;

use super::outbox::Outbox;
use super::status::{EINVAL, EIO};
use crate::frame_reader::{FrameFds, FrameReader, ReadAhead};
use crate::scm::{RecvOutcome, ScmError};

/// One answer of the front-end: its frame and the descriptors that came with it.
pub(super) type Answer = (Vec<u8>, FrameFds);

/// The channel socket is gone or unusable.
#[derive(Debug)]
pub(super) struct Broken;

/// The session's end of the back-end channel.
#[derive(Debug)]
pub(super) struct Channel {
    socket: Option<UnixStream>,
    outbox: Outbox<BackendRequestId>,
    reader: FrameReader,
}

/// Whether `fd` is a stream socket (`SO_TYPE` fails with ENOTSOCK on anything else).
fn is_stream_socket(fd: &OwnedFd) -> bool {
    use rustix::net::{sockopt, SocketType};
    sockopt::socket_type(fd).is_ok_and(|kind| kind == SocketType::STREAM)
}

/// `fd` as a channel socket, non-blocking; the errno-like status SET_BACKEND_REQ_FD's
/// completion carries when it cannot be one.
pub(super) fn channel_socket(fd: OwnedFd) -> Result<UnixStream, u64> {
    // The channel is a stream socket (vhost-user "Back-end communication"); anything else
    // (a file, a pipe, a datagram socket) would fail at the first request, and an event loop
    // could not even watch a file.
    if !is_stream_socket(&fd) {
        log::warn!("SET_BACKEND_REQ_FD: the descriptor is not a stream socket; no channel");
        return Err(EINVAL);
    }
    let socket = UnixStream::from(fd);
    socket.set_nonblocking(true).map_err(|error| {
        log::warn!("SET_BACKEND_REQ_FD: the socket cannot be made non-blocking: {error}");
        EIO
    })?;
    Ok(socket)
}

impl Channel {
    pub(super) fn new() -> Self {
        let reader = FrameReader::new(ReadAhead::Greedy);
        Self { socket: None, outbox: Outbox::never_waiting(), reader }
    }

    /// Uses `socket` ([`channel_socket`]) as the channel from now on; what waited for the old
    /// one is dropped (`Backend` has already reported it lost).
    pub(super) fn set_socket(&mut self, socket: UnixStream) {
        self.drop_socket();
        self.socket = Some(socket);
    }

    /// Closes the socket and forgets what waited on it.
    pub(super) fn drop_socket(&mut self) {
        self.socket = None;
        self.outbox.clear();
        self.reader.clear();
    }

    /// The socket, for readiness.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.socket.as_ref().map(AsFd::as_fd)
    }

    /// Whether requests wait for the socket to become writable.
    pub(super) fn wants_write(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Writes (or queues) `request` with `fds`; `sent` hears of each request fully written.
    pub(super) fn send(
        &mut self,
        id: BackendRequestId,
        request: &BackendRequest,
        need_reply: bool,
        fds: Vec<OwnedFd>,
        sent: impl FnMut(BackendRequestId),
    ) -> Result<(), Broken> {
        let mut buf = [0u8; 128];
        let len = request.encode_into(need_reply, &mut buf).map_err(|_| Broken)?;
        let socket = self.socket.as_ref().ok_or(Broken)?.as_fd();
        self.outbox.send(Some(socket), id, &buf[..len], fds, sent).map_err(|_| Broken)
    }

    /// Writes what waits, as far as the socket takes it.
    pub(super) fn flush(&mut self, sent: impl FnMut(BackendRequestId)) -> Result<(), Broken> {
        let Some(socket) = self.socket.as_ref() else { return Ok(()) };
        self.outbox.flush(socket.as_fd(), sent).map_err(|_| Broken)
    }

    /// Reads the next answer: `Ok(Some(frame, fds))`, or `Ok(None)` when nothing complete waits.
    pub(super) fn recv(&mut self) -> Result<Option<Answer>, Broken> {
        let Some(socket) = self.socket.as_ref() else { return Ok(None) };
        match self.reader.recv_arrived(socket) {
            Ok(RecvOutcome::Frame(_)) => {
                let frame = self.reader.frame().unwrap_or(&[]).to_vec();
                Ok(Some((frame, self.reader.take_fds())))
            }
            Err(ScmError::Io(error)) if error.kind() == ErrorKind::WouldBlock => Ok(None),
            Ok(RecvOutcome::Closed) | Err(_) => Err(Broken),
        }
    }
}
