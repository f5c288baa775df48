//! Frames and their descriptors out of a Unix stream socket, with as few `recvmsg` calls as the
//! stream allows.
//!
//! A [`FrameReader`] reads chunks with [`recv_chunk`](crate::scm::recv_chunk) into a buffer of
//! its own and hands out each frame where it lies in that buffer, with no copy; core's
//! [`frame_len`] checks each header as soon as it is complete (version, payload limit). The
//! buffer starts small and grows only as far as the frames and bursts the peer sends need. How much one `recvmsg` asks
//! for is its [`ReadAhead`]:
//!
//! - [`ReadAhead::Greedy`]: as much as the buffer holds, so a frame usually takes one call and a
//!   burst of frames (QEMU sends a ring's setup without waiting for replies) takes one call for
//!   all. Frames beyond the first wait in the reader: call [`FrameReader::recv`] again before
//!   waiting for the socket ([`FrameReader::has_buffered`]).
//! - [`ReadAhead::Exact`]: what the current frame still needs (the header, then its payload), so
//!   nothing is ever left in the reader and socket readiness alone says whether a frame waits —
//!   what an edge-triggered event loop needs.
//!
//! Which frame the descriptors belong to: on a stream socket Linux ends a `recvmsg` right after
//! the chunk that carries descriptors, so the descriptors of one call came with the last chunk
//! it consumed. Every front-end sends one message per `sendmsg` with its descriptors (spec
//! "Communication"), so that chunk starts the last frame that begins within the call's bytes:
//! the descriptors belong to that frame. A call that brings descriptors but no frame's first byte
//! is [`ScmError::FdsMidFrame`]; more than [`MAX_FDS_PER_MSG`] for one frame is
//! [`ScmError::TooManyFds`]. Both are refused as soon as the call is read, not when the frame
//! ends, so a frame that never ends holds at most its own descriptors. After any error but
//! [`ScmError::Io`] the reader is cleared and every descriptor it held is closed: the stream has
//! lost its boundaries and must be closed.
//!
//! This module must not interpret frames (core parses them) nor wait for readiness.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use vhu_core::frame_len;
use vhu_core::limits::{HEADER_SIZE, MAX_FDS_PER_MSG, MAX_FRAME_SIZE, MAX_PAYLOAD_SIZE};

use crate::scm::{recv_chunk_waiting, ReceivedFds, RecvOutcome, ScmError};

/// The most one greedy `recvmsg` may bring: several frames of a burst.
const READ_AHEAD: usize = 4 * MAX_FRAME_SIZE;

/// Where a greedy buffer starts: a whole burst of ring set-up, or a memory table, in one call.
const GREEDY_START: usize = 1024;

/// The descriptors of one frame, at most [`MAX_FDS_PER_MSG`], held without a heap allocation.
pub type FrameFds = arrayvec::ArrayVec<OwnedFd, MAX_FDS_PER_MSG>;

/// How much one `recvmsg` asks for; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAhead {
    /// As much as the reader's buffer holds.
    Greedy,
    /// Exactly what the current frame still needs.
    Exact,
}

/// Descriptors of one `recvmsg`, waiting for the frame they belong to.
#[derive(Debug)]
struct Arrived {
    /// Stream offsets of the call's first byte and one past its last.
    from: u64,
    to: u64,
    fds: ReceivedFds,
}

/// Reads frames and their descriptors; see the module docs.
pub struct FrameReader {
    /// Received bytes: `buf[start..end]`, the current frame first. Grows, never shrinks.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// The length of the frame at `start` once its header was checked.
    frame_len: Option<usize>,
    /// Whether that frame was handed out (the next [`FrameReader::recv`] drops it).
    handed_out: bool,
    max_payload: usize,
    arrived: VecDeque<Arrived>,
    /// The complete frame's descriptors.
    fds: FrameFds,
    read_ahead: ReadAhead,
    /// When [`FrameReader::recv_by`] stops waiting for the rest of a frame.
    deadline: Option<Instant>,
    /// Reads wait for data (false in [`FrameReader::recv_arrived`]).
    wait: bool,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &(self.end - self.start))
            .field("offset", &(self.base + self.start as u64))
            .field("arrived", &self.arrived.len())
            .field("read_ahead", &self.read_ahead)
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    /// A reader accepting payloads up to the protocol's maximum.
    pub fn new(read_ahead: ReadAhead) -> Self {
        Self::with_max_payload(read_ahead, MAX_PAYLOAD_SIZE)
    }

    /// A reader refusing payloads over `max_payload` bytes (at most the protocol's maximum). With
    /// [`ReadAhead::Exact`] an oversized payload is refused before a byte of it is read.
    pub fn with_max_payload(read_ahead: ReadAhead, max_payload: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            base: 0,
            frame_len: None,
            handed_out: false,
            max_payload: max_payload.min(MAX_PAYLOAD_SIZE),
            arrived: VecDeque::new(),
            fds: FrameFds::new(),
            read_ahead,
            deadline: None,
            wait: true,
        }
    }

    /// [`FrameReader::recv`], giving up with a timeout ([`ScmError::Io`], the partial frame
    /// kept) once `deadline` has passed between two reads: a peer that sends a frame a byte at
    /// a time, each just before the socket's read timeout, cannot hold the caller longer than
    /// the deadline and one read.
    pub fn recv_by(&mut self, sock: impl AsFd, deadline: Instant) -> Result<RecvOutcome, ScmError> {
        self.deadline = Some(deadline);
        let outcome = self.recv(sock);
        self.deadline = None;
        outcome
    }

    /// [`FrameReader::recv`] of what has arrived, never waiting for more, even on a blocking
    /// socket: a frame not whole yet is `WouldBlock` ([`ScmError::Io`]), the part that came
    /// kept for the next call. For a socket an event loop watches, whose peer must not hold the
    /// loop by sending half a frame.
    pub fn recv_arrived(&mut self, sock: impl AsFd) -> Result<RecvOutcome, ScmError> {
        self.wait = false;
        let outcome = self.recv(sock);
        self.wait = true;
        outcome
    }

    /// Reads until a frame is complete; see the module docs.
    ///
    /// - [`RecvOutcome::Frame`]: the frame is in [`FrameReader::frame`] and its descriptors in
    ///   [`FrameReader::take_fds`] until the next call.
    /// - [`RecvOutcome::Closed`]: the peer hung up at a frame boundary; EOF inside a frame is
    ///   [`ScmError::UnexpectedEof`].
    /// - [`ScmError::Io`] (`WouldBlock`, a timeout): a partial frame is kept and the next call
    ///   continues it.
    pub fn recv(&mut self, sock: impl AsFd) -> Result<RecvOutcome, ScmError> {
        let sock = sock.as_fd();
        if self.handed_out {
            self.handed_out = false;
            // Cannot be None: a frame handed out has its length.
            self.start += self.frame_len.take().unwrap_or(0);
        }
        self.fds.clear();
        loop {
            if let Some(len) = self.decode()? {
                return Ok(RecvOutcome::Frame(len));
            }
            self.refuse_stray_fds().map_err(|e| self.fail(e))?;
            if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(ScmError::Io(std::io::ErrorKind::TimedOut.into()));
            }
            let room = self.make_room();
            let want = match self.read_ahead {
                ReadAhead::Greedy => room,
                ReadAhead::Exact => self.needed(),
            };
            let end = self.end;
            let chunk = &mut self.buf[end..end + want];
            let mut fds = ReceivedFds::new();
            let bytes =
                recv_chunk_waiting(sock, chunk, &mut fds, self.wait).map_err(|e| self.fail(e))?;
            if bytes == 0 {
                if !fds.is_empty() {
                    let error = ScmError::FdsMidFrame { fds: fds.len(), offset: self.progress().0 };
                    return Err(self.fail(error));
                }
                if self.start == self.end {
                    return Ok(RecvOutcome::Closed);
                }
                let (got, wanted) = self.progress();
                return Err(self.fail(ScmError::UnexpectedEof { got, wanted }));
            }
            if !fds.is_empty() {
                let from = self.base + self.end as u64;
                self.arrived.push_back(Arrived { from, to: from + bytes as u64, fds });
            }
            self.end += bytes;
            if self.read_ahead == ReadAhead::Greedy && bytes == room && self.buf.len() < READ_AHEAD
            {
                // The call filled the buffer: a burst larger than it; the next call takes more.
                let grown = (self.buf.len() * 2).min(READ_AHEAD);
                self.buf.resize(grown, 0);
            }
        }
    }

    /// The complete frame the last [`FrameReader::recv`] returned.
    pub fn frame(&self) -> Option<&[u8]> {
        match self.frame_len {
            Some(len) if self.handed_out => self.buf.get(self.start..self.start + len),
            _ => None,
        }
    }

    /// The descriptors of the complete frame, in the order they came; the next
    /// [`FrameReader::recv`] closes those not taken.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Takes the descriptors of the complete frame, in the order they came.
    pub fn take_fds(&mut self) -> FrameFds {
        std::mem::take(&mut self.fds)
    }

    /// Whether bytes wait in the reader: call [`FrameReader::recv`] before waiting for the
    /// socket. Never true with [`ReadAhead::Exact`].
    pub fn has_buffered(&self) -> bool {
        // Bytes of a frame a failed call left unfinished wait for the socket, not for a call.
        self.handed_out && !self.is_idle()
    }

    /// Whether a whole frame (or a header [`FrameReader::recv`] refuses) waits in the reader
    /// after the one handed out: the next [`FrameReader::recv`] returns it without reading the
    /// socket. A caller that serves only these before it waits for the socket reads nothing
    /// more than one read brought, however fast the peer writes; the part of a frame left over
    /// is completed once the socket is readable with the rest.
    pub fn has_whole_frame(&self) -> bool {
        if !self.handed_out {
            return false;
        }
        let next = self.start + self.handed_len();
        let held = &self.buf[next..self.end];
        match held.get(..HEADER_SIZE) {
            None => false,
            Some(header) => match frame_len(header, self.max_payload) {
                Ok(len) => held.len() >= len,
                Err(_) => true,
            },
        }
    }

    /// Whether no byte of a frame is held (a clean place for the peer to hang up).
    pub fn is_idle(&self) -> bool {
        self.start + self.handed_len() == self.end
    }

    /// Forgets everything received, closing the descriptors held.
    pub fn clear(&mut self) {
        self.base += self.end as u64;
        self.start = 0;
        self.end = 0;
        self.frame_len = None;
        self.handed_out = false;
        self.arrived.clear();
        self.fds.clear();
    }

    /// The length of the frame handed out, still at the front of the buffer.
    fn handed_len(&self) -> usize {
        match self.frame_len {
            Some(len) if self.handed_out => len,
            _ => 0,
        }
    }

    /// Bytes the current frame still needs: the rest of its header, then of its payload.
    fn needed(&self) -> usize {
        self.frame_len.unwrap_or(HEADER_SIZE) - (self.end - self.start)
    }

    /// Makes the buffer hold the whole current frame and have room after the bytes received
    /// (moving a partial frame to the front, growing where the frame or a greedy read needs it);
    /// returns the room.
    fn make_room(&mut self) -> usize {
        if self.start == self.end {
            self.base += self.end as u64;
            self.start = 0;
            self.end = 0;
        }
        let frame = self.frame_len.unwrap_or(HEADER_SIZE);
        let size = match self.read_ahead {
            ReadAhead::Greedy => frame.max(GREEDY_START),
            ReadAhead::Exact => frame,
        };
        if self.start + size > self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if size > self.buf.len() {
            let grown = match self.read_ahead {
                ReadAhead::Greedy => size.max(self.buf.len() * 2).min(READ_AHEAD.max(size)),
                ReadAhead::Exact => size,
            };
            self.buf.resize(grown, 0);
        }
        self.buf.len() - self.end
    }

    /// Checks the header of the frame at the front once it is complete, and says whether the
    /// whole frame is buffered (its length).
    fn decode(&mut self) -> Result<Option<usize>, ScmError> {
        let held = self.end - self.start;
        let len = match self.frame_len {
            Some(len) => len,
            None if held < HEADER_SIZE => return Ok(None),
            None => {
                let header = &self.buf[self.start..self.start + HEADER_SIZE];
                let len = frame_len(header, self.max_payload)
                    .map_err(|e| self.fail(ScmError::Wire(e)))?;
                self.frame_len = Some(len);
                len
            }
        };
        if held < len {
            return Ok(None);
        }
        self.attribute(len).map_err(|e| self.fail(e))?;
        self.handed_out = true;
        Ok(Some(len))
    }

    /// Hands the just completed frame the descriptors that are its own (module docs).
    fn attribute(&mut self, len: usize) -> Result<(), ScmError> {
        let start = self.base + self.start as u64;
        let end = start + len as u64;
        while let Some(call) = self.arrived.front() {
            if call.from >= end {
                break;
            }
            let starts_in_call = (call.from..call.to).contains(&start);
            if end < call.to {
                // A later frame starts within the call's bytes: the descriptors are its.
                if starts_in_call || start < call.from {
                    break;
                }
            }
            if !starts_in_call {
                let fds = call.fds.len();
                return Err(ScmError::FdsMidFrame { fds, offset: (call.from - start) as usize });
            }
            // Cannot fail: the loop saw a front element.
            let Some(call) = self.arrived.pop_front() else { break };
            let got = self.fds.len() + call.fds.len();
            if got > MAX_FDS_PER_MSG {
                return Err(ScmError::TooManyFds { max: MAX_FDS_PER_MSG, got });
            }
            for fd in call.fds {
                // Cannot fail: the count was checked against the capacity above.
                let _ = self.fds.try_push(fd);
            }
        }
        Ok(())
    }

    /// Refuses, while the current frame is incomplete, descriptors that can never be its: those
    /// of a call that does not carry its first byte (every byte received so far is the frame's),
    /// or more than [`MAX_FDS_PER_MSG`] with it. Without this a peer trickling a frame a byte at
    /// a time, each byte with descriptors, would have the reader hold them all until the frame
    /// ends, and fill the process's descriptor table.
    fn refuse_stray_fds(&self) -> Result<(), ScmError> {
        let start = self.base + self.start as u64;
        let mut got = 0;
        for call in &self.arrived {
            if !(call.from..call.to).contains(&start) {
                let offset = call.from.saturating_sub(start) as usize;
                return Err(ScmError::FdsMidFrame { fds: call.fds.len(), offset });
            }
            got += call.fds.len();
        }
        if got > MAX_FDS_PER_MSG {
            return Err(ScmError::TooManyFds { max: MAX_FDS_PER_MSG, got });
        }
        Ok(())
    }

    /// Bytes of the current frame received, and bytes it needs so far.
    fn progress(&self) -> (usize, usize) {
        let wanted = self.frame_len.unwrap_or(HEADER_SIZE);
        ((self.end - self.start).min(wanted), wanted)
    }

    /// Forgets the stream (unless the error leaves it usable) before reporting `error`.
    fn fail(&mut self, error: ScmError) -> ScmError {
        if !matches!(error, ScmError::Io(_)) {
            self.clear();
        }
        error
    }
}
