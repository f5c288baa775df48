//! Reads and writes that do not wait, whatever the descriptor's O_NONBLOCK says.
//!
//! O_NONBLOCK belongs to the open file, not to the descriptor: a pipe, eventfd or socket a
//! front-end sent is the same open file as the copy it may have kept, and it can clear the
//! flag again after this process set it, so that a read of a drained pipe or eventfd waits for
//! good, holding a queue's worker or an event loop serving other connections. `preadv2` and
//! `pwritev2` with RWF_NOWAIT ask not to wait for this one call (pipes, eventfd reads and
//! sockets honour it on the kernels this runs on); where the kernel does not take it for a
//! file (EOPNOTSUPP: an eventfd's write, older kernels), the plain call is made, as
//! non-blocking as the open file still is.
//!
//! This module only moves bytes; what a caller does about `EAGAIN` is its own.

use std::os::fd::{AsFd, AsRawFd};

use rustix::io::Errno;

/// The "current position" `preadv2` and `pwritev2` take for files without one (pipes).
const NO_OFFSET: libc::off_t = -1;

/// Reads into `buf` without waiting: `EAGAIN` when nothing has arrived.
pub(crate) fn read(fd: impl AsFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let fd = fd.as_fd();
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    loop {
        // SAFETY: `iov` describes `buf`, which is ours and outlives the call; the kernel
        // writes at most `buf.len()` bytes into it.
        let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, NO_OFFSET, libc::RWF_NOWAIT) };
        match settle(n) {
            Err(Errno::INTR) => continue,
            Err(Errno::OPNOTSUPP) => return rustix::io::read(fd, buf),
            done => return done,
        }
    }
}

/// Writes from `buf` without waiting: `EAGAIN` when nothing can be taken now.
pub(crate) fn write(fd: impl AsFd, buf: &[u8]) -> Result<usize, Errno> {
    let fd = fd.as_fd();
    let iov = libc::iovec { iov_base: buf.as_ptr().cast_mut().cast(), iov_len: buf.len() };
    loop {
        // SAFETY: `iov` describes `buf`, which outlives the call; the kernel only reads it.
        let n = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, NO_OFFSET, libc::RWF_NOWAIT) };
        match settle(n) {
            Err(Errno::INTR) => continue,
            Err(Errno::OPNOTSUPP) => return rustix::io::write(fd, buf),
            done => return done,
        }
    }
}

/// A byte count or the call's errno.
fn settle(n: isize) -> Result<usize, Errno> {
    usize::try_from(n).map_err(|_| {
        let raw = std::io::Error::last_os_error().raw_os_error();
        Errno::from_raw_os_error(raw.unwrap_or(libc::EIO))
    })
}

#[cfg(test)]
mod tests {
    use rustix::fs::{fcntl_setfl, OFlags};
    use rustix::pipe::{pipe_with, PipeFlags};

    /// A pipe whose open file blocks (O_NONBLOCK cleared, as a front-end holding the other
    /// copy can): neither a read of it empty nor a write of it full waits.
    #[test]
    fn a_blocking_pipe_is_not_waited_for() {
        let (reader, writer) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
        fcntl_setfl(&reader, OFlags::empty()).expect("blocking");
        fcntl_setfl(&writer, OFlags::empty()).expect("blocking");
        let mut buf = [0u8; 8];
        assert_eq!(super::read(&reader, &mut buf), Err(rustix::io::Errno::AGAIN));
        let page = [1u8; 4096];
        let mut taken = 0;
        loop {
            match super::write(&writer, &page) {
                Ok(n) => taken += n,
                Err(errno) => {
                    assert_eq!(errno, rustix::io::Errno::AGAIN);
                    break;
                }
            }
            assert!(taken <= 16 << 20, "a pipe took more than any pipe holds");
        }
        assert!(taken > 0);
        assert_eq!(super::read(&reader, &mut buf), Ok(8));
    }

    /// An eventfd made blocking: a read of a zero counter does not wait.
    #[test]
    fn a_blocking_eventfd_read_is_not_waited_for() {
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd");
        let mut buf = [0u8; 8];
        assert_eq!(super::read(&fd, &mut buf), Err(rustix::io::Errno::AGAIN));
        super::write(&fd, &1u64.to_ne_bytes()).expect("counted");
        assert_eq!(super::read(&fd, &mut buf), Ok(8));
    }
}
