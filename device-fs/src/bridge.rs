//! Connects the FUSE server's byte streams to virtqueue chains.
//!
//! Implements [`RequestReader`] for [`virtq::Reader`] and [`ReplyWriter`] for [`virtq::Writer`];
//! a WRITE's data goes from the chain's readable buffers to the file with `pwritev`, a READ's
//! from the file into the writable buffers with `preadv`, on the host memory that maps them —
//! no copy through the daemon. It adds no behaviour of its own.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::fuse::{until_done, Partial};
use crate::fuse::{ReplyWriter, RequestReader, TransportError};
use vhu_transport_std::virtq::{self, BufferMemory, HostSlice};

/// Buffers one `preadv`/`pwritev` takes at most when the request spans few: on the stack and
/// small, as nearly every request is (one or two buffers).
const FEW: usize = 8;

/// Buffers one call takes at most otherwise (16 KiB of iovecs): the kernel's limit
/// (`UIO_MAXIOV`), so the largest request a guest sends — 256 pages, each its own buffer, as
/// Linux lays them out — goes in one call. Longer chains take several.
const MANY: usize = 1024;

/// Up to `N` buffers, without a heap allocation and without writing the room it does not use.
struct IoVecs<const N: usize> {
    iov: arrayvec::ArrayVec<libc::iovec, N>,
}

impl<const N: usize> IoVecs<N> {
    fn new() -> Self {
        Self { iov: arrayvec::ArrayVec::new() }
    }

    fn push(&mut self, slice: HostSlice) {
        // Past the capacity the rest waits for the next call.
        let _ = self.iov.try_push(libc::iovec { iov_base: slice.ptr.cast(), iov_len: slice.len });
    }

    fn as_slice(&self) -> &[libc::iovec] {
        &self.iov
    }
}

/// `pread(2)` as the bare system call: the C library's wrapper is a thread cancellation point
/// and pays for that on every call, and nothing here is ever cancelled.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
unsafe fn pread_raw(
    fd: BorrowedFd<'_>,
    buf: *mut libc::c_void,
    len: usize,
    at: libc::off_t,
) -> isize {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        // SAFETY: the caller vouches for `buf`; the arguments are the system call's own.
        unsafe {
            libc::syscall(libc::SYS_pread64, libc::c_long::from(fd.as_raw_fd()), buf, len, at)
                as isize
        }
    }
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    {
        // SAFETY: as above.
        unsafe { libc::pread(fd.as_raw_fd(), buf, len, at) }
    }
}

/// `pwrite(2)` as the bare system call, for the reason [`pread_raw`] gives.
///
/// # Safety
/// `buf` must be valid for reads of `len` bytes.
unsafe fn pwrite_raw(
    fd: BorrowedFd<'_>,
    buf: *const libc::c_void,
    len: usize,
    at: libc::off_t,
) -> isize {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        // SAFETY: the caller vouches for `buf`; the arguments are the system call's own.
        unsafe {
            libc::syscall(libc::SYS_pwrite64, libc::c_long::from(fd.as_raw_fd()), buf, len, at)
                as isize
        }
    }
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    {
        // SAFETY: as above.
        unsafe { libc::pwrite(fd.as_raw_fd(), buf, len, at) }
    }
}

/// The file offset `offset` names: past `i64::MAX` none, which `pread(2)` and `pwrite(2)`
/// answer with EINVAL.
fn offset_of(offset: u64) -> std::io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn chain_error(_: virtq::QueueError) -> std::io::Error {
    std::io::ErrorKind::InvalidInput.into()
}

impl<M: BufferMemory + ?Sized> RequestReader for virtq::Reader<'_, M> {
    fn remaining(&self) -> usize {
        virtq::Reader::remaining(self)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TransportError> {
        match self.read(buf) {
            Ok(n) if n == buf.len() => Ok(()),
            _ => Err(TransportError { len: buf.len() }),
        }
    }

    fn write_file(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> std::io::Result<usize> {
        let at = offset_of(offset)?;
        let n = if self.buffers_left() <= FEW {
            write_from::<M, FEW>(self, fd, at, len)?
        } else {
            write_from::<M, MANY>(self, fd, at, len)?
        };
        self.consume(n).map_err(chain_error)
    }
}

/// Writes up to `len` bytes of `reader`'s next buffers (at most `N` of them) to `fd` at `at`
/// with one system call; returns how many were written. Never inlined, so each `N` has a
/// frame of its own and only the large one holds [`MANY`] iovecs.
#[inline(never)]
fn write_from<M: BufferMemory + ?Sized, const N: usize>(
    reader: &virtq::Reader<'_, M>,
    fd: BorrowedFd<'_>,
    at: libc::off_t,
    len: usize,
) -> std::io::Result<usize> {
    one_call::<N>(
        |each| reader.host_slices(len, each),
        // SAFETY: every iovec names the mapped host memory of this chain's readable
        // buffers, mapped while the reader borrows the guest memory; the kernel only reads it
        // (a guest changing it meanwhile changes the data written, never this process). One
        // buffer (the common case) goes without the kernel copying an iovec array in.
        |iov| unsafe {
            match iov {
                [one] => pwrite_raw(fd, one.iov_base, one.iov_len, at),
                _ => libc::pwritev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at),
            }
        },
    )
}

/// Gathers up to `N` host buffers with `gather` and moves data over them with one `call` (a
/// system call's return: bytes moved, or -1 with `errno` set); returns how many bytes moved.
fn one_call<const N: usize>(
    gather: impl FnOnce(&mut dyn FnMut(HostSlice)) -> Result<(), virtq::QueueError>,
    call: impl FnOnce(&[libc::iovec]) -> isize,
) -> std::io::Result<usize> {
    let mut iov = IoVecs::<N>::new();
    gather(&mut |slice| iov.push(slice)).map_err(chain_error)?;
    let iov = iov.as_slice();
    if iov.is_empty() {
        return Ok(0);
    }
    usize::try_from(call(iov)).map_err(|_| std::io::Error::last_os_error())
}

/// Reads up to `len` bytes from `fd` at `at` into `writer`'s buffers `skip` bytes past its
/// position (at most `N` of them) with one system call; returns how many were read. Never
/// inlined, for the reason [`write_from`] gives.
#[inline(never)]
fn read_into<M: BufferMemory + ?Sized, const N: usize>(
    writer: &virtq::Writer<'_, M>,
    skip: usize,
    fd: BorrowedFd<'_>,
    at: libc::off_t,
    len: usize,
) -> std::io::Result<usize> {
    one_call::<N>(
        |each| writer.host_slices(skip, len, each),
        // SAFETY: every iovec names the mapped host memory of this chain's writable
        // buffers, mapped while the writer borrows the guest memory and written by nobody else
        // on this side; the kernel writes at most their lengths. One buffer (the common case)
        // goes without the kernel copying an iovec array in.
        |iov| unsafe {
            match iov {
                [one] => pread_raw(fd, one.iov_base, one.iov_len, at),
                _ => libc::preadv(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at),
            }
        },
    )
}

impl<M: BufferMemory + ?Sized> ReplyWriter for virtq::Writer<'_, M> {
    fn remaining(&self) -> usize {
        virtq::Writer::remaining(self)
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        match self.write(buf) {
            Ok(n) if n == buf.len() => Ok(()),
            _ => Err(TransportError { len: buf.len() }),
        }
    }

    fn read_file_ahead(
        &mut self,
        skip: usize,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> std::io::Result<usize> {
        let few = self.buffers_left() <= FEW;
        until_done(len, Partial::Error, |done| {
            let at = offset_of(offset + done as u64)?;
            if few {
                read_into::<M, FEW>(self, skip + done, fd, at, len - done)
            } else {
                read_into::<M, MANY>(self, skip + done, fd, at, len - done)
            }
        })
    }

    fn write_ahead(&mut self, skip: usize, buf: &[u8]) -> Result<(), TransportError> {
        match virtq::Writer::write_ahead(self, skip, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            _ => Err(TransportError { len: buf.len() }),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), TransportError> {
        match virtq::Writer::advance(self, n) {
            Ok(done) if done == n => Ok(()),
            _ => Err(TransportError { len: n }),
        }
    }
}
