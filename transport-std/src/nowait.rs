//! Reads and writes that do not wait, whatever the descriptor's O_NONBLOCK says.
//!
//! O_NONBLOCK belongs to the open file, not to the descriptor: a pipe, eventfd or socket a
//! front-end sent is the same open file as the copy it may have kept, and it can clear the
//! flag again after this process set it, so that a read of a drained pipe or eventfd waits for
//! good, holding a queue's worker or an event loop serving other connections. `preadv2` and
//! `pwritev2` with RWF_NOWAIT ask not to wait for this one call (sockets, eventfd reads from
//! Linux 5.12, pipes from 6.6 or so). Where the kernel does not take the flag for a file
//! (EOPNOTSUPP: an eventfd's write, a pipe on older kernels), the descriptor is polled first
//! and the plain call made only when it is ready, a write cut to `PIPE_BUF`, which a pipe that
//! polls writable takes whole: then only the holder of the other copy, reading or writing in
//! the same moment, can still make the call wait.
//!
//! This module only moves bytes; what a caller does about `EAGAIN` is its own.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::event::{poll, PollFd, PollFlags};
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
            Err(Errno::OPNOTSUPP) => return polled_read(fd, buf),
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
            Err(Errno::OPNOTSUPP) => return polled_write(fd, buf),
            done => return done,
        }
    }
}

/// [`read`] where the kernel does not take RWF_NOWAIT: the plain call once `fd` polls readable.
fn polled_read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    if ready(fd, PollFlags::IN)? {
        rustix::io::read(fd, buf)
    } else {
        Err(Errno::AGAIN)
    }
}

/// [`write`] where the kernel does not take RWF_NOWAIT: at most `PIPE_BUF` bytes once `fd` polls
/// writable.
fn polled_write(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<usize, Errno> {
    if ready(fd, PollFlags::OUT)? {
        rustix::io::write(fd, &buf[..buf.len().min(libc::PIPE_BUF)])
    } else {
        Err(Errno::AGAIN)
    }
}

/// Whether `fd` polls ready for `events` now (an error or hang-up counts: the call reports it).
fn ready(fd: BorrowedFd<'_>, events: PollFlags) -> Result<bool, Errno> {
    let mut fds = [PollFd::new(&fd, events)];
    loop {
        match poll(&mut fds, Some(&crate::timespec(std::time::Duration::ZERO))) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(errno),
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
    use std::os::fd::{AsFd, BorrowedFd};

    use rustix::fs::{fcntl_setfl, OFlags};
    use rustix::io::Errno;
    use rustix::pipe::{pipe_with, PipeFlags};

    use super::{polled_read, polled_write};

    type Read = fn(BorrowedFd<'_>, &mut [u8]) -> Result<usize, Errno>;
    type Write = fn(BorrowedFd<'_>, &[u8]) -> Result<usize, Errno>;

    /// A pipe whose open file blocks (O_NONBLOCK cleared, as a front-end holding the other
    /// copy can): neither a read of it empty nor a write of it full waits, with RWF_NOWAIT or
    /// polled as where the kernel does not take it.
    #[test]
    fn a_blocking_pipe_is_not_waited_for() {
        let ways: [(Read, Write); 2] = [
            (|fd, buf| super::read(fd, buf), |fd, buf| super::write(fd, buf)),
            (polled_read, polled_write),
        ];
        for (read, write) in ways {
            let (reader, writer) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
            fcntl_setfl(&reader, OFlags::empty()).expect("blocking");
            fcntl_setfl(&writer, OFlags::empty()).expect("blocking");
            let mut buf = [0u8; 8];
            assert_eq!(read(reader.as_fd(), &mut buf), Err(Errno::AGAIN));
            let chunk = [1u8; 10_000];
            let mut taken = 0;
            loop {
                match write(writer.as_fd(), &chunk) {
                    Ok(n) => taken += n,
                    Err(errno) => {
                        assert_eq!(errno, Errno::AGAIN);
                        break;
                    }
                }
                assert!(taken <= 16 << 20, "a pipe took more than any pipe holds");
            }
            assert!(taken > 0);
            assert_eq!(read(reader.as_fd(), &mut buf), Ok(8));
        }
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
