//! Connects the FUSE server's byte streams to virtqueue chains.
//!
//! Implements [`RequestReader`] for [`virtq::Reader`] and [`ReplyWriter`] for [`virtq::Writer`];
//! a WRITE's data goes from the chain's readable buffers to the file with `pwritev`, a READ's
//! from the file into the writable buffers with `preadv`, on the host memory `vm-memory` maps for
//! them — no copy through the daemon. It adds no behaviour of its own.

use std::os::fd::{AsRawFd, BorrowedFd};

use vm_memory::GuestMemory;

use crate::fuse::until_done;
use crate::fuse::{ReplyWriter, RequestReader, TransportError};
use vhu_transport_std::virtq::{self, HostSlice};

/// Buffers one `preadv`/`pwritev` takes at most here (on the stack); longer chains take several
/// calls.
const IOVECS: usize = 64;

/// Up to [`IOVECS`] buffers, without a heap allocation and without writing the room it does
/// not use (zeroing 64 iovecs would cost a READ of 4 KiB more than its bookkeeping).
struct IoVecs {
    iov: arrayvec::ArrayVec<libc::iovec, IOVECS>,
}

impl IoVecs {
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
        unsafe { libc::syscall(libc::SYS_pread64, fd.as_raw_fd(), buf, len, at) as isize }
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
        unsafe { libc::syscall(libc::SYS_pwrite64, fd.as_raw_fd(), buf, len, at) as isize }
    }
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    {
        // SAFETY: as above.
        unsafe { libc::pwrite(fd.as_raw_fd(), buf, len, at) }
    }
}

fn offset_of(offset: u64) -> std::io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput.into())
}

fn chain_error(_: virtq::QueueError) -> std::io::Error {
    std::io::ErrorKind::InvalidInput.into()
}

impl<M: GuestMemory + ?Sized> RequestReader for virtq::Reader<'_, M> {
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
        let mut iov = IoVecs::new();
        self.host_slices(len, &mut |slice| iov.push(slice)).map_err(chain_error)?;
        let iov = iov.as_slice();
        if iov.is_empty() {
            return Ok(0);
        }
        let at = offset_of(offset)?;
        // SAFETY: every iovec names host memory vm-memory maps for this chain's readable
        // buffers, mapped while the reader borrows the guest memory; the kernel only reads it
        // (a guest changing it meanwhile changes the data written, never this process). One
        // buffer (the common case) goes without the kernel copying an iovec array in.
        let n = unsafe {
            match iov {
                [one] => pwrite_raw(fd, one.iov_base, one.iov_len, at),
                _ => libc::pwritev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at),
            }
        };
        let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
        self.consume(n).map_err(chain_error)
    }
}

impl<M: GuestMemory + ?Sized> ReplyWriter for virtq::Writer<'_, M> {
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
        until_done(len, |done| {
            let mut iov = IoVecs::new();
            let mut each = |slice| iov.push(slice);
            self.host_slices(skip + done, len - done, &mut each).map_err(chain_error)?;
            let iov = iov.as_slice();
            if iov.is_empty() {
                return Ok(0);
            }
            let at = offset_of(offset + done as u64)?;
            // SAFETY: every iovec names host memory vm-memory maps for this chain's writable
            // buffers, mapped while the writer borrows the guest memory and written by nobody
            // else on this side; the kernel writes at most their lengths. One buffer (the
            // common case) goes without the kernel copying an iovec array in.
            let n = unsafe {
                match iov {
                    [one] => pread_raw(fd, one.iov_base, one.iov_len, at),
                    _ => libc::preadv(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at),
                }
            };
            usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
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
