//! Byte streams with SCM_RIGHTS descriptors: the only module that touches ancillary data.
//!
//! [`send`] writes one encoded message and attaches its descriptors to the first `sendmsg`, which
//! carries the first byte of the header, as every vhost-user peer expects (spec "Communication":
//! descriptors travel with the message they belong to). [`recv_frame`] reads one frame with
//! `recvmsg`, asking for exactly [`FrameDecoder::next_read_len`] bytes each time, so a read never
//! crosses a message boundary and descriptors can only arrive with the first byte of a header
//! (front-ends attach them to the `sendmsg` that carries a message's first byte). Descriptors that arrive anywhere else, too many
//! descriptors, and truncated control data are errors, and every descriptor received for the frame
//! is closed before the error is returned.
//!
//! "With the first byte" is all a receiver can check: one `recvmsg` may consume several chunks the
//! peer sent separately, and the kernel then hands over the descriptors of all of them, so
//! descriptors attached to a later chunk that the same `recvmsg` consumes are accepted. Reading the
//! header alone first still means they can never come from the next message.
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
use vhu_core::limits::{HEADER_SIZE, MAX_FDS_PER_MSG};
use vhu_core::{FrameDecoder, Progress, WireError};

/// Descriptors the receive control buffer has room for.
///
/// Larger than [`MAX_FDS_PER_MSG`] on purpose: a peer that sends a few too many is reported as
/// [`ScmError::TooManyFds`] with the real count. Beyond this the kernel truncates the control data
/// (closing what did not fit) and the error is [`ScmError::TruncatedControl`].
pub const RECV_CONTROL_FDS: usize = 4 * MAX_FDS_PER_MSG;

/// A failure to send or receive a message with its descriptors.
///
/// Apart from [`ScmError::Io`] from [`recv_frame`] (see there), every receive error leaves the stream
/// at an unknown or untrusted boundary: the connection should be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScmError {
    /// `sendmsg` or `recvmsg` failed (EINTR is retried and never reported).
    #[error("socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The frame decoder refused the header (bad version, reserved bits, oversized payload).
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
    /// Descriptors arrived with a `recvmsg` that did not carry the first byte of the header. They
    /// and the frame's earlier descriptors have been closed.
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

/// What [`recv_frame`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvOutcome {
    /// A complete frame of this many bytes is in [`FrameDecoder::frame`].
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
        match sendmsg(sock, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(ScmError::Io(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(ScmError::Io(errno.into())),
        }
    }
}

/// Receives one frame into `decoder` and the descriptors that came with it into `fds`.
///
/// Each `recvmsg` asks for exactly [`FrameDecoder::next_read_len`] bytes (the header first, then
/// the payload), with `MSG_CMSG_CLOEXEC`. Descriptors are accepted only with the `recvmsg` that
/// carries the first byte of the header, and at most [`MAX_FDS_PER_MSG`] of them. EINTR is retried.
///
/// - A decoder that still holds a complete frame is cleared first; when a new frame starts, `fds`
///   is cleared (closing anything left in it), so on [`RecvOutcome::Frame`] it holds exactly this
///   frame's descriptors.
/// - EOF before any byte of a frame is [`RecvOutcome::Closed`]; EOF inside a frame is
///   [`ScmError::UnexpectedEof`].
/// - On [`ScmError::Io`] (for instance `WouldBlock` or a timeout) the decoder and `fds` keep the
///   partial frame and calling again continues it. On every other error the decoder is cleared and
///   every descriptor in `fds` is closed; an oversized payload is refused before a byte of it is
///   read, so it is still in the socket.
pub fn recv_frame(
    sock: impl AsFd,
    decoder: &mut FrameDecoder,
    fds: &mut Vec<OwnedFd>,
) -> Result<RecvOutcome, ScmError> {
    let sock = sock.as_fd();
    if decoder.next_read_len() == 0 {
        decoder.clear();
    }
    if decoder.is_idle() {
        fds.clear();
    }
    let mut space = [MaybeUninit::<u8>::uninit(); cmsg_space!(ScmRights(RECV_CONTROL_FDS))];
    loop {
        let first = decoder.is_idle();
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(decoder.read_buf())];
        let msg = match recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(msg) => msg,
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(ScmError::Io(errno.into())),
        };
        let received = take_fds(&mut control);
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            let error = ScmError::TruncatedControl { fds_received: received.len() };
            return Err(fail(decoder, fds, error));
        }
        if !received.is_empty() {
            if !first {
                let offset = frame_progress(decoder).0;
                let error = ScmError::FdsMidFrame { fds: received.len(), offset };
                return Err(fail(decoder, fds, error));
            }
            if received.len() > MAX_FDS_PER_MSG {
                let error = ScmError::TooManyFds { max: MAX_FDS_PER_MSG, got: received.len() };
                return Err(fail(decoder, fds, error));
            }
            fds.extend(received);
        }
        if msg.bytes == 0 {
            if first {
                fds.clear();
                return Ok(RecvOutcome::Closed);
            }
            let (got, wanted) = frame_progress(decoder);
            return Err(fail(decoder, fds, ScmError::UnexpectedEof { got, wanted }));
        }
        match decoder.advance(msg.bytes) {
            Ok(Progress::Ready(len)) => return Ok(RecvOutcome::Frame(len)),
            Ok(Progress::NeedMore(_)) => {}
            Err(error) => return Err(fail(decoder, fds, ScmError::Wire(error))),
        }
    }
}

/// Moves every SCM_RIGHTS descriptor out of `control`; anything else in it is dropped.
fn take_fds(control: &mut RecvAncillaryBuffer<'_>) -> Vec<OwnedFd> {
    let mut out = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            out.extend(received);
        }
    }
    out
}

/// Bytes of the current frame received, and bytes it needs so far.
fn frame_progress(decoder: &FrameDecoder) -> (usize, usize) {
    let wanted = match decoder.header() {
        Some(header) => HEADER_SIZE + header.size.get() as usize,
        None => HEADER_SIZE,
    };
    (wanted.saturating_sub(decoder.next_read_len()), wanted)
}

/// Forgets the partial frame and closes its descriptors before reporting `error`.
fn fail(decoder: &mut FrameDecoder, fds: &mut Vec<OwnedFd>, error: ScmError) -> ScmError {
    decoder.clear();
    fds.clear();
    error
}
