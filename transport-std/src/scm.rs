//! Byte streams with SCM_RIGHTS descriptors: the only module that touches ancillary data.
//!
//! [`send`] writes one encoded message and attaches its descriptors to the first `sendmsg`, which
//! carries the first byte of the header, as every vhost-user peer expects (spec "Communication":
//! descriptors travel with the message they belong to). [`recv_chunk`] is one `recvmsg` with its
//! descriptors; [`FrameReader`](crate::frame_reader::FrameReader) turns chunks into frames and
//! decides which frame the descriptors belong to.
//!
//! This module must not interpret frames: it neither parses requests nor decides what to do about an
//! error (that is `vhu-core`'s job). It works on connected `SOCK_STREAM` Unix sockets; control
//! buffers are built by `rustix`, never by hand.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::cmsg_space;
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use vhu_core::limits::MAX_FDS_PER_MSG;
use vhu_core::WireError;

/// Descriptors the receive control buffer has room for.
///
/// Larger than [`MAX_FDS_PER_MSG`] on purpose: a peer that sends a few too many is reported as
/// [`ScmError::TooManyFds`] with the real count. Beyond this the kernel truncates the control data
/// (closing what did not fit) and the error is [`ScmError::TruncatedControl`].
pub const RECV_CONTROL_FDS: usize = 4 * MAX_FDS_PER_MSG;

/// The descriptors one `recvmsg` brought, held without a heap allocation.
pub type ReceivedFds = arrayvec::ArrayVec<OwnedFd, RECV_CONTROL_FDS>;

/// A failure to send or receive a message with its descriptors.
///
/// Apart from [`ScmError::Io`] (for instance `WouldBlock` or a timeout, after which reading can go
/// on), every receive error leaves the stream at an unknown or untrusted boundary: the connection
/// should be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScmError {
    /// `sendmsg` or `recvmsg` failed (EINTR is retried and never reported).
    #[error("socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The frame decoder refused the header (bad version, oversized payload).
    #[error("invalid frame: {0}")]
    Wire(#[from] WireError),
    /// The kernel truncated the control data (MSG_CTRUNC): descriptors were lost. Every descriptor
    /// received for the frame has been closed.
    #[error("control data truncated: {fds_received} descriptors received before the truncation")]
    TruncatedControl {
        /// Descriptors that did fit (all closed).
        fds_received: usize,
    },
    /// More descriptors than one message may carry. Those received have been closed.
    #[error("{got} file descriptors with one message, at most {max} allowed")]
    TooManyFds {
        /// The limit ([`MAX_FDS_PER_MSG`]).
        max: usize,
        /// Number sent or received.
        got: usize,
    },
    /// Descriptors arrived with a `recvmsg` that carried no frame's first byte. They and the
    /// frame's earlier descriptors have been closed.
    #[error("{fds} file descriptors arrived {offset} bytes into a frame")]
    FdsMidFrame {
        /// Descriptors in the offending `recvmsg`.
        fds: usize,
        /// Bytes of the frame received before them.
        offset: usize,
    },
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed after {got} of {wanted} frame bytes")]
    UnexpectedEof {
        /// Bytes of the frame received (header and payload).
        got: usize,
        /// Bytes the frame needs so far: the header, or the header and its announced payload.
        wanted: usize,
    },
    /// Descriptors cannot travel without at least one byte on a stream socket.
    #[error("{fds} file descriptors given with an empty message")]
    FdsWithoutBytes {
        /// Descriptors given.
        fds: usize,
    },
}

/// What [`FrameReader::recv`](crate::frame_reader::FrameReader::recv) got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvOutcome {
    /// A complete frame of this many bytes is in
    /// [`FrameReader::frame`](crate::frame_reader::FrameReader::frame).
    Frame(usize),
    /// The peer closed the stream at a frame boundary.
    Closed,
}

/// Sends all of `bytes`, attaching `fds` (at most [`MAX_FDS_PER_MSG`]) to the first `sendmsg`.
///
/// Partial writes are continued without the descriptors; EINTR is retried. Meant for blocking
/// sockets: on a non-blocking socket use [`send_partial`] and keep track of the position.
/// `MSG_NOSIGNAL` is set, so a closed peer is an `EPIPE` error rather than a signal.
pub fn send(sock: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ScmError> {
    let sock = sock.as_fd();
    let mut sent = send_partial(sock, bytes, fds)?;
    while sent < bytes.len() {
        sent += send_partial(sock, &bytes[sent..], &[])?;
    }
    Ok(())
}

/// One `sendmsg` of `bytes` with `fds` attached (EINTR retried); returns how many bytes went out.
///
/// If it returns `Ok(n)` with `n > 0`, the descriptors have been sent: send the rest without them.
/// An empty `bytes` with no descriptors sends nothing and returns `Ok(0)`.
pub fn send_partial(
    sock: impl AsFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<usize, ScmError> {
    send_partial_waiting(sock, bytes, fds, true)
}

/// [`send_partial`]; without `wait`, a socket that takes nothing now is `WouldBlock` at once
/// (`MSG_DONTWAIT`), even a blocking one: O_NONBLOCK belongs to the open file, which a peer that
/// sent the socket and kept a copy can clear again.
pub(crate) fn send_partial_waiting(
    sock: impl AsFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    wait: bool,
) -> Result<usize, ScmError> {
    if fds.len() > MAX_FDS_PER_MSG {
        return Err(ScmError::TooManyFds { max: MAX_FDS_PER_MSG, got: fds.len() });
    }
    if bytes.is_empty() {
        return match fds.len() {
            0 => Ok(0),
            n => Err(ScmError::FdsWithoutBytes { fds: n }),
        };
    }
    let sock = sock.as_fd();
    let mut space = [MaybeUninit::<u8>::uninit(); cmsg_space!(ScmRights(MAX_FDS_PER_MSG))];
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            // The buffer is sized for MAX_FDS_PER_MSG, checked above; kept as an error, not a panic.
            return Err(ScmError::TooManyFds { max: MAX_FDS_PER_MSG, got: fds.len() });
        }
        let flags =
            if wait { SendFlags::NOSIGNAL } else { SendFlags::NOSIGNAL | SendFlags::DONTWAIT };
        match sendmsg(sock, &[IoSlice::new(bytes)], &mut control, flags) {
            Ok(0) => return Err(ScmError::Io(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(ScmError::Io(errno.into())),
        }
    }
}

/// One `recvmsg` into `buf` (EINTR retried) with `MSG_CMSG_CLOEXEC`: how many bytes came (0 at
/// end of stream); on success `fds` holds the descriptors that came with them.
///
/// On a stream socket the kernel ends a `recvmsg` right after the chunk that carries descriptors,
/// so they always came with the last chunk the call consumed; [`FrameReader`] relies on it to tell
/// which frame they belong to. Truncated control data is [`ScmError::TruncatedControl`], with
/// every descriptor that did arrive closed.
///
/// [`FrameReader`]: crate::frame_reader::FrameReader
pub fn recv_chunk(
    sock: impl AsFd,
    buf: &mut [u8],
    fds: &mut ReceivedFds,
) -> Result<usize, ScmError> {
    recv_chunk_waiting(sock, buf, fds, true)
}

/// [`recv_chunk`]; without `wait`, a socket with nothing to read is `WouldBlock` at once, even a
/// blocking one.
pub(crate) fn recv_chunk_waiting(
    sock: impl AsFd,
    buf: &mut [u8],
    fds: &mut ReceivedFds,
    wait: bool,
) -> Result<usize, ScmError> {
    let sock = sock.as_fd();
    let flags =
        if wait { RecvFlags::CMSG_CLOEXEC } else { RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT };
    let mut space = [MaybeUninit::<u8>::uninit(); cmsg_space!(ScmRights(RECV_CONTROL_FDS))];
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(msg) => msg,
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(ScmError::Io(errno.into())),
        };
        fds.clear();
        take_fds(&mut control, fds);
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            let fds_received = fds.len();
            fds.clear();
            return Err(ScmError::TruncatedControl { fds_received });
        }
        return Ok(msg.bytes);
    }
}

/// Moves every SCM_RIGHTS descriptor out of `control`; anything else in it is dropped.
fn take_fds(control: &mut RecvAncillaryBuffer<'_>, out: &mut ReceivedFds) {
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            for fd in received {
                // Cannot fail: the control buffer has room for RECV_CONTROL_FDS, the capacity
                // (the kernel truncates beyond it). Were it to, the descriptor is closed.
                let _ = out.try_push(fd);
            }
        }
    }
}
