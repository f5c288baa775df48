//! The two byte streams a FUSE request lives in: the device-readable request and the device-writable
//! reply space.
//!
//! The server only sees these traits, so it runs the same over virtqueue chains (see
//! `crate::bridge`) and over plain byte slices in tests. Implementations move bytes; they do not
//! parse them. READ and WRITE data can go straight between a file and the streams' buffers
//! ([`ReplyWriter::read_file_ahead`], [`RequestReader::write_file`]): over virtqueue chains that
//! is `preadv`/`pwritev` on guest memory, with no copy through the daemon.

use std::os::fd::BorrowedFd;

/// A failure of the underlying transport while moving request or reply bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("transport failed to move {len} bytes")]
pub struct TransportError {
    /// Bytes that were to be moved.
    pub len: usize,
}

/// What a transfer of several calls answers when a call fails after others moved bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partial {
    /// The count so far, as `write(2)` reports a partial transfer: a WRITE of the guest's own
    /// (not a write-back of its page cache) that reached the file size limit or a full disk
    /// half-way changed the file, and an error would tell the guest it did not; its caller
    /// sees the short count, and its next request meets the error itself.
    Count,
    /// The error: a READ that stops short is the end of the file to the guest (Linux then
    /// takes the file for shorter than it is, or reads zeros where a disk failed), and a
    /// write-back of the guest's page cache is never looked at for its count (only an error
    /// marks the pages failed, for the guest's next fsync to report: a short count lost them).
    Error,
}

/// Repeats `step(done)` — one I/O call moving bytes from position `done` on, returning how many
/// it moved — until `len` bytes moved or a call moved none, retrying interrupted calls; returns
/// the bytes moved. A call that fails after others moved bytes ends the loop with what
/// `partial` says.
pub(crate) fn until_done(
    len: usize,
    partial: Partial,
    mut step: impl FnMut(usize) -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    let mut done = 0;
    while done < len {
        match step(done) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) if done > 0 && partial == Partial::Count => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The device-readable bytes of one request.
pub trait RequestReader {
    /// Bytes not read yet.
    fn remaining(&self) -> usize;
    /// Fills `buf` completely or fails (short input is an error).
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TransportError>;
    /// Writes the next `len` bytes to `fd` at `offset` and consumes what was written; returns
    /// how much that was (short only when the file takes less). The default goes through a
    /// buffer and consumes all `len` bytes even when the file takes fewer: a reader that can
    /// leave the rest for the next call overrides it (every reader here does).
    fn write_file(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> std::io::Result<usize> {
        let mut data = vec![0; len];
        self.read_exact(&mut data).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        Ok(rustix::io::pwrite(fd, &data, offset)?)
    }
}

/// The device-writable space for one reply.
pub trait ReplyWriter {
    /// Bytes that can still be written.
    fn remaining(&self) -> usize;
    /// Writes all of `buf` or fails.
    fn write_all(&mut self, buf: &[u8]) -> Result<(), TransportError>;
    /// Reads up to `len` bytes of `fd` at `offset` into the space `skip` bytes past the write
    /// position, without moving it (a READ's data, behind the header written next); returns
    /// how many (short only at the end of the file).
    fn read_file_ahead(
        &mut self,
        skip: usize,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> std::io::Result<usize>;
    /// Copies `buf` to `skip` bytes past the write position, without moving it.
    fn write_ahead(&mut self, skip: usize, buf: &[u8]) -> Result<(), TransportError>;
    /// Moves the write position past `n` bytes placed there ahead of it.
    fn advance(&mut self, n: usize) -> Result<(), TransportError>;
}

/// Where a READ's data goes: `len` bytes behind the reply's header.
pub trait ReadTarget {
    /// Reads up to the target's room of `fd` at `offset` into it; returns how many bytes (short
    /// only at the end of the file).
    fn read_file(&mut self, fd: BorrowedFd<'_>, offset: u64) -> std::io::Result<usize>;
    /// Copies `data` in (for data that had to pass through a buffer, as O_DIRECT's alignment
    /// requires); returns how many bytes fit.
    fn copy_in(&mut self, data: &[u8]) -> std::io::Result<usize>;
    /// Bytes the target holds at most.
    fn room(&self) -> usize;
}

/// Where a WRITE's data comes from: the request's bytes after its arguments.
pub trait WriteSource {
    /// Bytes it holds.
    fn len(&self) -> usize;
    /// Whether it holds nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes it to `fd` at `offset`; returns how many bytes the file took, or, after a failure
    /// part of the way, what `partial` says.
    fn write_file(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u64,
        partial: Partial,
    ) -> std::io::Result<usize>;
    /// Copies it into `buf` (for data that must pass through a buffer).
    fn copy_out(&mut self, buf: &mut [u8]) -> std::io::Result<()>;
}

impl WriteSource for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn write_file(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u64,
        partial: Partial,
    ) -> std::io::Result<usize> {
        until_done(self.len(), partial, |done| {
            Ok(rustix::io::pwrite(fd, &self[done..], offset + done as u64)?)
        })
    }

    fn copy_out(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        Ok(())
    }
}

/// A READ's data placed in a reply writer, behind its header.
pub(crate) struct ReplyTarget<'w> {
    pub(crate) writer: &'w mut dyn ReplyWriter,
    /// Bytes of header written before the data.
    pub(crate) skip: usize,
    pub(crate) len: usize,
}

impl ReadTarget for ReplyTarget<'_> {
    fn read_file(&mut self, fd: BorrowedFd<'_>, offset: u64) -> std::io::Result<usize> {
        self.writer.read_file_ahead(self.skip, fd, offset, self.len)
    }

    fn copy_in(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(self.len);
        self.writer
            .write_ahead(self.skip, &data[..n])
            .map_err(|_| std::io::ErrorKind::WriteZero)?;
        Ok(n)
    }

    fn room(&self) -> usize {
        self.len
    }
}

/// A WRITE's data still in the request reader.
pub(crate) struct RequestSource<'r> {
    pub(crate) reader: &'r mut dyn RequestReader,
    pub(crate) len: usize,
}

impl WriteSource for RequestSource<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn write_file(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u64,
        partial: Partial,
    ) -> std::io::Result<usize> {
        until_done(self.len, partial, |done| {
            self.reader.write_file(fd, offset + done as u64, self.len - done)
        })
    }

    fn copy_out(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.reader.read_exact(buf).map_err(|_| std::io::ErrorKind::UnexpectedEof.into())
    }
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

    fn write_file(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> std::io::Result<usize> {
        let data = self.get(..len).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let n = rustix::io::pwrite(fd, data, offset)?;
        *self = &self[n..];
        Ok(n)
    }
}

/// A reply buffer of fixed capacity, for tests and for replies assembled in memory.
#[derive(Clone, Debug)]
pub struct VecWriter {
    /// Bytes placed, written or ahead of the position.
    buf: Vec<u8>,
    /// The write position: `buf[..len]` is written.
    len: usize,
    capacity: usize,
}

impl VecWriter {
    /// An empty buffer accepting up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self { buf: Vec::new(), len: 0, capacity }
    }

    /// The bytes written.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Consumes the writer, returning the bytes written.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.buf.truncate(self.len);
        self.buf
    }

    /// Makes room for `n` bytes at `at`, or fails when they exceed the capacity.
    fn room_at(&mut self, at: usize, n: usize) -> Result<&mut [u8], TransportError> {
        let end = at.checked_add(n).filter(|end| *end <= self.capacity);
        let end = end.ok_or(TransportError { len: n })?;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        Ok(&mut self.buf[at..end])
    }
}

impl ReplyWriter for VecWriter {
    fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        self.room_at(self.len, buf.len())?.copy_from_slice(buf);
        self.len += buf.len();
        Ok(())
    }

    fn read_file_ahead(
        &mut self,
        skip: usize,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> std::io::Result<usize> {
        let len = len.min(self.remaining().saturating_sub(skip));
        let at = self.len + skip;
        let room = self.room_at(at, len).map_err(|_| std::io::ErrorKind::WriteZero)?;
        let done = until_done(room.len(), Partial::Error, |done| {
            Ok(rustix::io::pread(fd, &mut room[done..], offset + done as u64)?)
        })?;
        self.buf.truncate(at + done);
        Ok(done)
    }

    fn write_ahead(&mut self, skip: usize, buf: &[u8]) -> Result<(), TransportError> {
        self.room_at(self.len + skip, buf.len())?.copy_from_slice(buf);
        Ok(())
    }

    fn advance(&mut self, n: usize) -> Result<(), TransportError> {
        let end = self.len + n;
        if end > self.buf.len() {
            return Err(TransportError { len: n });
        }
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{until_done, Partial};

    fn efbig() -> std::io::Error {
        std::io::Error::from_raw_os_error(27)
    }

    #[test]
    fn a_failure_after_bytes_moved_reports_the_bytes_or_the_error_as_asked() {
        let mut calls = vec![Ok(3), Err(efbig())].into_iter();
        let moved = until_done(8, Partial::Count, |_| calls.next().unwrap_or(Ok(0)));
        assert_eq!(moved.expect("a partial count"), 3);
        let mut calls = vec![Ok(3), Err(efbig())].into_iter();
        let moved = until_done(8, Partial::Error, |_| calls.next().unwrap_or(Ok(0)));
        assert_eq!(moved.expect_err("the error").raw_os_error(), Some(27));
        // The end of the file is no failure: the count either way.
        let mut calls = vec![Ok(3), Ok(0)].into_iter();
        let moved = until_done(8, Partial::Error, |_| calls.next().unwrap_or(Ok(0)));
        assert_eq!(moved.expect("a short count at the end"), 3);
    }

    #[test]
    fn a_failure_before_any_byte_is_the_error() {
        let interrupted = std::io::ErrorKind::Interrupted.into();
        let mut calls = vec![Err(interrupted), Err(efbig())].into_iter();
        let moved = until_done(8, Partial::Count, |_| calls.next().unwrap_or(Ok(0)));
        assert_eq!(moved.expect_err("nothing moved").raw_os_error(), Some(27));
    }

    #[test]
    fn calls_repeat_until_everything_moved_or_none_did() {
        let mut seen = Vec::new();
        let moved = until_done(8, Partial::Count, |done| {
            seen.push(done);
            Ok(if done < 6 { 3 } else { 0 })
        });
        assert_eq!((moved.expect("count"), seen), (6, vec![0, 3, 6]));
    }
}
