//! The blocking adapter: one front-end connection on a blocking socket, served by a
//! [`Session`] on the calling thread.
//!
//! [`Connection::run`] waits with `poll` for the main socket, the device's request eventfd and the
//! back-end channel socket; a readable main socket goes first (a front-end blocked on a reply is
//! never kept behind a back-end request), one frame at a time, its replies written before the next
//! wait. Frames already read ahead are handled without a wait, and when the main socket is the
//! only source of work (no back-end channel is open, so no device request can come) the
//! connection simply blocks reading it: one system call per frame instead of two or three.
//! Before any blocking wait the sources are checked for a moment ([`crate::spin`]), so a
//! front-end in the middle of a burst of requests does not find the back-end asleep. A reply the front-end does not read within [`REPLY_TIMEOUT`] ends the connection.
//! Device-state transfers are enabled: they run, blocking, after the reply of
//! SET_DEVICE_STATE_FD.
//!
//! Ending a connection — the peer hung up, an I/O error, a malformed stream, `Output::Close` —
//! drops the session, which stops every running queue, resets the device, and drops every mapping
//! and descriptor of the session.
//!
//! This module must not decide protocol questions nor carry out outputs: it only waits.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use vhu_core::backend::Backend;

use crate::device::Device;
use crate::session::{BackendRequests, Read, Session, SessionError, Style};

/// How long a reply may wait for a front-end that does not read its socket.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One front-end connection served by a [`Device`]. See the module docs.
pub struct Connection<'d, D: Device + ?Sized> {
    session: Session<D, &'d mut D>,
    socket: UnixStream,
    /// Whether the last thing handled was a front-end frame: more of its burst may follow.
    after_frame: bool,
}

impl<D: Device + ?Sized> std::fmt::Debug for Connection<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("session", &self.session).finish_non_exhaustive()
    }
}

impl<'d, D: Device + ?Sized> Connection<'d, D> {
    /// A fresh back-end for `socket`, a connected blocking stream socket.
    pub fn new(device: &'d mut D, socket: UnixStream) -> Result<Self, SessionError> {
        // A front-end that sends requests but never reads the replies must not park the daemon
        // in sendmsg forever: after REPLY_TIMEOUT the reply fails and the connection ends.
        socket.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(SessionError::Setup)?;
        let session = Session::new(device, Style::Blocking)?;
        Ok(Self { session, socket, after_frame: true })
    }

    /// A handle through which the device asks for back-end requests.
    pub fn backend_requests(&self) -> BackendRequests {
        self.session.backend_requests()
    }

    /// The state machine, for inspection.
    pub fn backend(&self) -> &Backend {
        self.session.backend()
    }

    /// Serves the connection until the peer hangs up (`Ok`) or it must close (`Err`). Either way
    /// the session's queues, mappings and descriptors are gone when this returns.
    pub fn run(mut self) -> Result<(), SessionError> {
        self.serve()
    }

    /// Serves the connection until the peer hangs up (`Ok`) or it must close (`Err`), keeping
    /// the session: its teardown happens when the connection is dropped.
    pub fn serve(&mut self) -> Result<(), SessionError> {
        while self.handle_next()? {}
        Ok(())
    }

    /// Waits for the next frame, device request or channel answer and handles it; `Ok(false)`
    /// when the peer hung up at a frame boundary.
    pub fn handle_next(&mut self) -> Result<bool, SessionError> {
        let (main, other) = if self.session.has_buffered_input() {
            (true, false)
        } else if self.session.main_socket_only() {
            // The blocking read follows either way; a request that comes during the spin is
            // read without sleeping first.
            crate::spin::until_ready(&mut [PollFd::new(&self.socket, PollFlags::IN)], None);
            (true, false)
        } else {
            self.wait()
        };
        if main {
            if self.session.read(self.socket.as_fd(), 1)? == Read::HungUp {
                return Ok(false);
            }
            if let Some(code) = self.session.unsent_reply() {
                // The blocking send already waited REPLY_TIMEOUT.
                return Err(SessionError::SendTimeout { code });
            }
        }
        if other {
            self.session.service()?;
        }
        self.after_frame = main;
        Ok(true)
    }

    /// Blocks until the main socket (first) or another source is ready. It spins first only
    /// after a front-end frame, where more of a burst is likely at once (control traffic comes
    /// in bursts). A device's requests come at its own pace (a DAX mapping per guest fault) and
    /// the front-end's answers to them after its own work (a `mmap`): spinning for either cost
    /// a spin per request and won nothing (`vhu-fs-bench --dax`, BENCHMARKS.md).
    fn wait(&self) -> (bool, bool) {
        let spin = self.after_frame;
        let channel_events = if self.session.channel_wants_write() {
            PollFlags::IN | PollFlags::OUT
        } else {
            PollFlags::IN
        };
        let mut fds = [
            PollFd::new(&self.socket, PollFlags::IN),
            PollFd::from_borrowed_fd(self.session.requests_fd(), PollFlags::IN),
            PollFd::from_borrowed_fd(
                self.session.channel_fd().unwrap_or(self.session.requests_fd()),
                channel_events,
            ),
        ];
        while !(spin && crate::spin::until_ready(&mut fds, None)) {
            match poll(&mut fds, None) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                // The socket read reports whatever is wrong.
                Err(_) => return (true, false),
            }
        }
        let main = !fds[0].revents().is_empty();
        let other = !fds[1].revents().is_empty() || !fds[2].revents().is_empty();
        (main, other)
    }
}
