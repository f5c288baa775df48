//! The buffer outgoing frames are encoded into: small at first, grown to the largest frame the
//! protocol allows the first time a frame does not fit. Most vhost-user frames are a header and
//! a few words; a connection that never sends a large one never pays for the room.
//!
//! This module owns only the buffer; what is encoded, and how, is core's.

use vhu_core::limits::MAX_FRAME_SIZE;
use vhu_core::WireError;

/// Room a new buffer takes on its first frame: a memory table or a config space fits.
const START: usize = 512;

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct EncodeBuf(Vec<u8>);

impl EncodeBuf {
    pub(crate) fn new() -> Self {
        Self(Vec::new())
    }

    /// Encodes with `encode` (a message's `encode_into`), once more after growing when the
    /// frame does not fit; returns its length ([`EncodeBuf::frame`] gives the bytes).
    pub(crate) fn encode(
        &mut self,
        encode: impl Fn(&mut [u8]) -> Result<usize, WireError>,
    ) -> Result<usize, WireError> {
        if self.0.is_empty() {
            self.0.resize(START, 0);
        }
        match encode(&mut self.0) {
            Err(WireError::BufferTooSmall { .. }) if self.0.len() < MAX_FRAME_SIZE => {
                self.0.resize(MAX_FRAME_SIZE, 0);
                encode(&mut self.0)
            }
            result => result,
        }
    }

    /// The first `len` bytes: the frame [`EncodeBuf::encode`] wrote.
    pub(crate) fn frame(&self, len: usize) -> &[u8] {
        &self.0[..len]
    }
}

#[cfg(test)]
mod tests {
    use vhu_core::limits::MAX_FRAME_SIZE;
    use vhu_core::message::ConfigFlags;
    use vhu_core::{Reply, Request};

    use super::EncodeBuf;

    #[test]
    fn small_frames_stay_small_and_large_ones_grow_the_buffer_once() {
        let mut buf = EncodeBuf::new();
        let len = buf.encode(|b| Request::GetFeatures.encode_into(false, b)).unwrap();
        assert_eq!(len, 12);
        assert!(buf.0.len() < MAX_FRAME_SIZE);
        let data = [7u8; 256];
        let reply = Reply::Config { offset: 0, flags: ConfigFlags::Writable, data: &data };
        let mut expected = vec![0; MAX_FRAME_SIZE];
        let want = reply.encode_into(&mut expected).unwrap();
        let len = buf.encode(|b| reply.encode_into(b)).unwrap();
        assert_eq!(buf.frame(len), &expected[..want]);
        let big = [1u8; 2048];
        let request = Request::CreateCryptoSession(&big);
        let mut expected = vec![0; MAX_FRAME_SIZE];
        let want = request.encode_into(true, &mut expected).unwrap();
        let len = buf.encode(|b| request.encode_into(true, b)).unwrap();
        assert_eq!(buf.frame(len), &expected[..want]);
        assert_eq!(buf.0.len(), MAX_FRAME_SIZE);
    }
}
