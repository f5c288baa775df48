//! Framing: turning a byte stream into complete frames, header first.
//!
//! The decoder owns one frame's worth of buffer and asks for exactly the bytes the current part
//! needs: the 12-byte header, then the payload the header announces. A transport that reads exactly
//! [`FrameDecoder::next_read_len`] bytes per `recvmsg` can never read past a message boundary, so
//! SCM_RIGHTS descriptors always attach to the message they were sent with. An oversized payload is
//! refused as soon as the header is complete, before a byte of it is read. The decoder knows nothing
//! about request codes or payload layouts: [`crate::message`] parses the frames it yields.

use zerocopy::FromBytes;

use crate::limits::{HEADER_SIZE, MAX_FRAME_SIZE, MAX_PAYLOAD_SIZE};
use crate::wire::Header;
use crate::WireError;

/// What the decoder needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The current part needs this many more bytes.
    NeedMore(usize),
    /// A complete frame of this length is in [`FrameDecoder::frame`].
    Ready(usize),
}

/// Reassembles frames from a stream; see the module docs.
///
/// After [`FrameDecoder::advance`] or [`FrameDecoder::push`] return an error the stream cannot be
/// resynchronised (the payload boundary is unknown or untrusted); the connection should be closed.
#[derive(Clone)]
pub struct FrameDecoder {
    buf: [u8; MAX_FRAME_SIZE],
    filled: usize,
    /// Total length of the current frame, once its header is complete.
    frame_len: Option<usize>,
    max_payload: usize,
}

impl core::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("filled", &self.filled)
            .field("frame_len", &self.frame_len)
            .field("max_payload", &self.max_payload)
            .finish()
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting payloads up to [`MAX_PAYLOAD_SIZE`].
    pub const fn new() -> Self {
        Self::with_max_payload(MAX_PAYLOAD_SIZE)
    }

    /// A decoder accepting payloads up to `max_payload` bytes (at most [`MAX_PAYLOAD_SIZE`]).
    pub const fn with_max_payload(max_payload: usize) -> Self {
        let max_payload =
            if max_payload < MAX_PAYLOAD_SIZE { max_payload } else { MAX_PAYLOAD_SIZE };
        Self { buf: [0; MAX_FRAME_SIZE], filled: 0, frame_len: None, max_payload }
    }

    /// The largest payload this decoder accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// How many bytes to read next: what remains of the header, then of the payload; 0 once a frame
    /// is complete (take it with [`FrameDecoder::frame`], then call [`FrameDecoder::clear`]).
    pub fn next_read_len(&self) -> usize {
        self.frame_len.unwrap_or(HEADER_SIZE) - self.filled
    }

    /// Whether no byte of a frame has been received (a clean place for the peer to hang up).
    pub fn is_idle(&self) -> bool {
        self.filled == 0
    }

    /// The buffer to read into: exactly [`FrameDecoder::next_read_len`] bytes long.
    pub fn read_buf(&mut self) -> &mut [u8] {
        let end = self.frame_len.unwrap_or(HEADER_SIZE);
        &mut self.buf[self.filled..end]
    }

    /// Records that `n` bytes were written at the start of [`FrameDecoder::read_buf`].
    ///
    /// Validates the header (version, payload limit) as soon as it is complete.
    pub fn advance(&mut self, n: usize) -> Result<Progress, WireError> {
        let n = n.min(self.next_read_len());
        self.filled += n;
        if self.frame_len.is_none() && self.filled == HEADER_SIZE {
            match self.check_header() {
                Ok(len) => self.frame_len = Some(len),
                Err(error) => {
                    self.clear();
                    return Err(error);
                }
            }
        }
        Ok(match self.next_read_len() {
            0 => Progress::Ready(self.filled),
            more => Progress::NeedMore(more),
        })
    }

    /// Copies bytes from a stream into the current frame; returns how many were consumed.
    ///
    /// Consumes at most what the current frame needs, so the rest of `input` belongs to the next
    /// frame. Call again with the remainder after taking the frame.
    pub fn push(&mut self, input: &[u8]) -> Result<(usize, Progress), WireError> {
        let mut consumed = 0;
        loop {
            let want = self.next_read_len();
            if want == 0 {
                return Ok((consumed, Progress::Ready(self.filled)));
            }
            let chunk = &input[consumed..];
            let n = want.min(chunk.len());
            self.read_buf()[..n].copy_from_slice(&chunk[..n]);
            consumed += n;
            match self.advance(n)? {
                Progress::NeedMore(more) if consumed == input.len() => {
                    return Ok((consumed, Progress::NeedMore(more)));
                }
                progress @ Progress::Ready(_) => return Ok((consumed, progress)),
                Progress::NeedMore(_) => {}
            }
        }
    }

    /// The complete frame (header and payload), if there is one.
    pub fn frame(&self) -> Option<&[u8]> {
        match self.frame_len {
            Some(len) if self.filled == len => Some(&self.buf[..len]),
            _ => None,
        }
    }

    /// The current frame's header, once it is complete.
    pub fn header(&self) -> Option<Header> {
        self.frame_len.and_then(|_| Header::read_from_prefix(&self.buf).ok().map(|(h, _)| h))
    }

    /// Forgets the current frame and waits for the next header.
    pub fn clear(&mut self) {
        self.filled = 0;
        self.frame_len = None;
    }

    fn check_header(&self) -> Result<usize, WireError> {
        frame_len(&self.buf[..self.filled], self.max_payload)
    }
}

/// The length (header and payload) of the frame whose header starts `bytes`, once the header is
/// checked as the decoder checks it: the version (reserved flag bits are the message's to
/// refuse, not the stream's), a payload of at most
/// `max_payload` bytes (itself capped at [`MAX_PAYLOAD_SIZE`]). For transports that assemble
/// frames in a buffer of their own; `bytes` shorter than a header is
/// [`WireError::TruncatedHeader`].
pub fn frame_len(bytes: &[u8], max_payload: usize) -> Result<usize, WireError> {
    let (header, _) = Header::read_from_prefix(bytes)
        .map_err(|_| WireError::TruncatedHeader { got: bytes.len() })?;
    crate::message::check_version(header.flags.get())?;
    let size = header.size.get();
    let max_payload = max_payload.min(MAX_PAYLOAD_SIZE);
    if size as usize > max_payload {
        return Err(WireError::PayloadTooLarge { size, max: max_payload });
    }
    Ok(HEADER_SIZE + size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(request: u32, flags: u32, size: u32) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[0..4].copy_from_slice(&request.to_ne_bytes());
        out[4..8].copy_from_slice(&flags.to_ne_bytes());
        out[8..12].copy_from_slice(&size.to_ne_bytes());
        out
    }

    #[test]
    fn asks_for_header_then_payload() {
        let mut decoder = FrameDecoder::new();
        assert_eq!(decoder.next_read_len(), 12);
        assert!(decoder.is_idle());
        let h = header(2, 1, 8);
        decoder.read_buf()[..5].copy_from_slice(&h[..5]);
        assert_eq!(decoder.advance(5), Ok(Progress::NeedMore(7)));
        assert!(!decoder.is_idle());
        decoder.read_buf().copy_from_slice(&h[5..]);
        assert_eq!(decoder.advance(7), Ok(Progress::NeedMore(8)));
        assert_eq!(decoder.next_read_len(), 8);
        assert_eq!(decoder.header().map(|h| h.request.get()), Some(2));
        assert!(decoder.frame().is_none());
        decoder.read_buf().copy_from_slice(&7u64.to_ne_bytes());
        assert_eq!(decoder.advance(8), Ok(Progress::Ready(20)));
        assert_eq!(decoder.next_read_len(), 0);
        let frame = decoder.frame().expect("frame is complete");
        assert_eq!(&frame[..12], &h);
        assert_eq!(&frame[12..], &7u64.to_ne_bytes());
        decoder.clear();
        assert_eq!(decoder.next_read_len(), 12);
    }

    #[test]
    fn empty_payload_is_ready_after_header() {
        let mut decoder = FrameDecoder::new();
        let (used, progress) = decoder.push(&header(3, 1, 0)).expect("valid header");
        assert_eq!((used, progress), (12, Progress::Ready(12)));
    }

    #[test]
    fn refuses_oversize_before_reading_the_body() {
        let mut decoder = FrameDecoder::with_max_payload(64);
        let err = decoder.push(&header(5, 1, 65)).expect_err("oversize");
        assert_eq!(err, WireError::PayloadTooLarge { size: 65, max: 64 });
        let mut decoder = FrameDecoder::new();
        let err = decoder.push(&header(5, 1, u32::MAX)).expect_err("oversize");
        assert_eq!(err, WireError::PayloadTooLarge { size: u32::MAX, max: MAX_PAYLOAD_SIZE });
    }

    #[test]
    fn refuses_a_bad_version_and_frames_reserved_bits() {
        let mut decoder = FrameDecoder::new();
        assert_eq!(
            decoder.push(&header(1, 2, 0)),
            Err(WireError::BadVersion { version: 2, flags: 2 })
        );
        assert!(decoder.is_idle());
        assert_eq!(decoder.push(&header(1, 0x11, 0)), Ok((12, Progress::Ready(12))));
    }

    #[test]
    fn push_stops_at_the_frame_boundary() {
        let mut stream = [0u8; 40];
        stream[..12].copy_from_slice(&header(2, 1, 8));
        stream[20..32].copy_from_slice(&header(3, 1, 0));
        let mut decoder = FrameDecoder::new();
        let (used, progress) = decoder.push(&stream).expect("valid");
        assert_eq!((used, progress), (20, Progress::Ready(20)));
        decoder.clear();
        let (used, progress) = decoder.push(&stream[20..]).expect("valid");
        assert_eq!((used, progress), (12, Progress::Ready(12)));
        decoder.clear();
        let (used, progress) = decoder.push(&stream[32..]).expect("partial header is fine");
        assert_eq!((used, progress), (8, Progress::NeedMore(4)));
    }
}
