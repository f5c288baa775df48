//! The two byte streams a FUSE request lives in: the device-readable request and the device-writable
//! reply space.
//!
//! The server only sees these traits, so it runs the same over virtqueue chains (see
//! `crate::bridge`) and over plain byte slices in tests. Implementations move bytes; they do not
//! parse them.

/// A failure of the underlying transport while moving request or reply bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("transport failed to move {len} bytes")]
pub struct TransportError {
    /// Bytes that were to be moved.
    pub len: usize,
}

/// The device-readable bytes of one request.
pub trait RequestReader {
    /// Bytes not read yet.
    fn remaining(&self) -> usize;
    /// Fills `buf` completely or fails (short input is an error).
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TransportError>;
}

/// The device-writable space for one reply.
pub trait ReplyWriter {
    /// Bytes that can still be written.
    fn remaining(&self) -> usize;
    /// Writes all of `buf` or fails.
    fn write_all(&mut self, buf: &[u8]) -> Result<(), TransportError>;
}

impl RequestReader for &[u8] {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TransportError> {
        if buf.len() > self.len() {
            return Err(TransportError { len: buf.len() });
        }
        let (head, tail) = self.split_at(buf.len());
        buf.copy_from_slice(head);
        *self = tail;
        Ok(())
    }
}

/// A reply buffer of fixed capacity, for tests and for replies assembled in memory.
#[derive(Clone, Debug)]
pub struct VecWriter {
    buf: Vec<u8>,
    capacity: usize,
}

impl VecWriter {
    /// An empty buffer accepting up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self { buf: Vec::new(), capacity }
    }

    /// The bytes written.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Consumes the writer, returning the bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

impl ReplyWriter for VecWriter {
    fn remaining(&self) -> usize {
        self.capacity - self.buf.len()
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        if buf.len() > self.remaining() {
            return Err(TransportError { len: buf.len() });
        }
        self.buf.extend_from_slice(buf);
        Ok(())
    }
}
