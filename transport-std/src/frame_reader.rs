//! Frames and their descriptors out of a Unix stream socket, with as few `recvmsg` calls as the
//! stream allows.
//!
//! A [`FrameReader`] reads chunks with [`recv_chunk`] and feeds them to core's [`FrameDecoder`],
//! which validates each header as soon as it is complete. How much one `recvmsg` asks for is its
//! [`ReadAhead`]:
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
//! [`ScmError::TooManyFds`]. After any error but [`ScmError::Io`] the reader is cleared and every
//! descriptor it held is closed: the stream has lost its boundaries and must be closed.
//!
//! This module must not interpret frames (core parses them) nor wait for readiness.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};

use vhu_core::limits::{HEADER_SIZE, MAX_FDS_PER_MSG, MAX_FRAME_SIZE};
use vhu_core::{FrameDecoder, Progress};

use crate::scm::{recv_chunk, RecvOutcome, ScmError};

/// Bytes one greedy `recvmsg` may bring: several frames of a burst.
const READ_AHEAD: usize = 4 * MAX_FRAME_SIZE;

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
    fds: Vec<OwnedFd>,
}

/// Reads frames and their descriptors; see the module docs.
pub struct FrameReader {
    decoder: Box<FrameDecoder>,
    buf: Box<[u8]>,
    /// Received bytes not yet given to the decoder: `buf[start..end]`.
    start: usize,
    end: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    /// Stream offset of the decoder's current frame.
    frame_start: u64,
    arrived: VecDeque<Arrived>,
    /// The complete frame's descriptors.
    fds: Vec<OwnedFd>,
    read_ahead: ReadAhead,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &(self.end - self.start))
            .field("offset", &self.offset)
            .field("arrived", &self.arrived.len())
            .field("read_ahead", &self.read_ahead)
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    /// A reader for frames of up to the protocol's maximum payload.
    pub fn new(read_ahead: ReadAhead) -> Self {
        Self::with_max_payload(read_ahead, vhu_core::limits::MAX_PAYLOAD_SIZE)
    }

    /// A reader refusing payloads over `max_payload` bytes (at most the protocol's maximum). With
    /// [`ReadAhead::Exact`] an oversized payload is refused before a byte of it is read.
    pub fn with_max_payload(read_ahead: ReadAhead, max_payload: usize) -> Self {
        let size = match read_ahead {
            ReadAhead::Greedy => READ_AHEAD,
            ReadAhead::Exact => MAX_FRAME_SIZE,
        };
        Self {
            decoder: Box::new(FrameDecoder::with_max_payload(max_payload)),
            buf: vec![0; size].into_boxed_slice(),
            start: 0,
            end: 0,
            offset: 0,
            frame_start: 0,
            arrived: VecDeque::new(),
            fds: Vec::new(),
            read_ahead,
        }
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
        if self.decoder.next_read_len() == 0 {
            self.decoder.clear();
        }
        self.fds.clear();
        loop {
            if let Some(len) = self.decode()? {
                return Ok(RecvOutcome::Frame(len));
            }
            let want = match self.read_ahead {
                ReadAhead::Greedy => self.buf.len(),
                ReadAhead::Exact => self.decoder.next_read_len(),
            };
            // `decode` consumed every buffered byte: the buffer starts over.
            self.start = 0;
            self.end = 0;
            let (bytes, fds) = recv_chunk(sock, &mut self.buf[..want]).map_err(|e| self.fail(e))?;
            if bytes == 0 {
                if !fds.is_empty() {
                    let error = ScmError::FdsMidFrame { fds: fds.len(), offset: self.progress().0 };
                    return Err(self.fail(error));
                }
                if self.decoder.is_idle() {
                    return Ok(RecvOutcome::Closed);
                }
                let (got, wanted) = self.progress();
                return Err(self.fail(ScmError::UnexpectedEof { got, wanted }));
            }
            if !fds.is_empty() {
                let to = self.offset + bytes as u64;
                self.arrived.push_back(Arrived { from: self.offset, to, fds });
            }
            self.end = bytes;
        }
    }

    /// The complete frame the last [`FrameReader::recv`] returned.
    pub fn frame(&self) -> Option<&[u8]> {
        self.decoder.frame()
    }

    /// The descriptors of the complete frame, in the order they came; the next
    /// [`FrameReader::recv`] closes those not taken.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Takes the descriptors of the complete frame, in the order they came.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// Whether bytes wait in the reader: call [`FrameReader::recv`] before waiting for the
    /// socket. Never true with [`ReadAhead::Exact`].
    pub fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Whether no byte of a frame is held (a clean place for the peer to hang up).
    pub fn is_idle(&self) -> bool {
        !self.has_buffered() && (self.decoder.is_idle() || self.decoder.next_read_len() == 0)
    }

    /// Forgets everything received, closing the descriptors held.
    pub fn clear(&mut self) {
        self.decoder.clear();
        self.start = 0;
        self.end = 0;
        self.arrived.clear();
        self.fds.clear();
    }

    /// Gives buffered bytes to the decoder until a frame is complete (its length) or the buffer
    /// is empty.
    fn decode(&mut self) -> Result<Option<usize>, ScmError> {
        while self.start < self.end {
            if self.decoder.is_idle() {
                self.frame_start = self.offset;
            }
            let pushed = self.decoder.push(&self.buf[self.start..self.end]);
            let (consumed, progress) = pushed.map_err(|e| self.fail(ScmError::Wire(e)))?;
            self.start += consumed;
            self.offset += consumed as u64;
            if let Progress::Ready(len) = progress {
                self.attribute().map_err(|e| self.fail(e))?;
                return Ok(Some(len));
            }
        }
        Ok(None)
    }

    /// Hands the just completed frame the descriptors that are its own (module docs).
    fn attribute(&mut self) -> Result<(), ScmError> {
        let (start, end) = (self.frame_start, self.offset);
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
            self.fds.extend(call.fds);
            if self.fds.len() > MAX_FDS_PER_MSG {
                return Err(ScmError::TooManyFds { max: MAX_FDS_PER_MSG, got: self.fds.len() });
            }
        }
        Ok(())
    }

    /// Bytes of the current frame received, and bytes it needs so far.
    fn progress(&self) -> (usize, usize) {
        let wanted = match self.decoder.header() {
            Some(header) => HEADER_SIZE + header.size.get() as usize,
            None => HEADER_SIZE,
        };
        (wanted.saturating_sub(self.decoder.next_read_len()), wanted)
    }

    /// Forgets the stream (unless the error leaves it usable) before reporting `error`.
    fn fail(&mut self, error: ScmError) -> ScmError {
        if !matches!(error, ScmError::Io(_)) {
            self.clear();
        }
        error
    }
}
