//! Messages as bytes on the socket, for what the front-end state machine rightly never sends
//! (an unknown request, a payload of the wrong size) and for asking exactly what a back-end
//! offers: a 12-byte header (request, flags with version 1 and NEED_REPLY, size) and the
//! payload, the reply read back under a deadline. No descriptors travel this way.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vhu_transport_std::vhu_core::wire::FrontendCode;

/// Version 1 in the header's flags (spec "Message Specification").
const VERSION_1: u32 = 0x1;
/// The header's REPLY bit.
const REPLY: u32 = 0x4;
/// The header's NEED_REPLY bit.
pub(crate) const NEED_REPLY: u32 = 0x8;

/// A connection spoken to byte by byte.
pub(crate) struct Raw {
    stream: UnixStream,
}

/// A reply: its request code and payload.
pub(crate) struct Answer {
    pub(crate) code: u32,
    pub(crate) payload: Vec<u8>,
}

impl Answer {
    /// The payload as the `u64` most replies carry.
    pub(crate) fn u64(&self) -> Option<u64> {
        let bytes: [u8; 8] = self.payload.get(..8)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }
}

impl Raw {
    pub(crate) fn new(stream: UnixStream, timeout: Duration) -> std::io::Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self { stream })
    }

    /// Sends request `code` (a number, so unknown ones can be sent too).
    pub(crate) fn send(&mut self, code: u32, flags: u32, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(12 + payload.len());
        frame.extend_from_slice(&code.to_le_bytes());
        frame.extend_from_slice(&(VERSION_1 | flags).to_le_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame)
    }

    /// The next reply; `None` when the back-end closed the connection or said nothing in time.
    pub(crate) fn reply(&mut self) -> Option<Answer> {
        let mut header = [0u8; 12];
        self.stream.read_exact(&mut header).ok()?;
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (code, flags, size) = (word(0), word(4), word(8));
        if flags & REPLY == 0 || size > 1 << 16 {
            return None;
        }
        let mut payload = vec![0u8; size as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some(Answer { code, payload })
    }

    /// Sends `code` and reads its reply.
    pub(crate) fn ask(&mut self, code: FrontendCode, flags: u32, payload: &[u8]) -> Option<Answer> {
        self.send(code.as_u32(), flags, payload).ok()?;
        self.reply().filter(|a| a.code == code.as_u32())
    }

    /// A `u64` request (features, protocol features) with its value.
    pub(crate) fn set_u64(
        &mut self,
        code: FrontendCode,
        value: u64,
        flags: u32,
    ) -> std::io::Result<()> {
        self.send(code.as_u32(), flags, &value.to_le_bytes())
    }

    /// Whether the back-end still answers (GET_FEATURES).
    pub(crate) fn alive(&mut self) -> bool {
        self.ask(FrontendCode::GetFeatures, 0, &[]).is_some_and(|a| a.payload.len() == 8)
    }
}
