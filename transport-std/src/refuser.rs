//! While a front-end is served, every other connection to the daemon's socket is accepted and
//! closed at once: a back-end serves one front-end, and a second one sees its connection end
//! instead of waiting unanswered behind the first.
//!
//! One thread per daemon does it, started with the first connection and kept from one
//! connection to the next (a thread started per connection costs more than the rest of a
//! connect). The daemon tells it over a socket pair when to refuse and when to pause, and waits
//! for it to pause before it accepts the next front-end itself; closing its end stops the
//! thread.
//!
//! This module owns only that thread; the daemon owns the listener and the connection served.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread::JoinHandle;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;

/// Control bytes, daemon to thread; the thread echoes [`PAUSE`] once it has paused.
const REFUSE: u8 = b'r';
const PAUSE: u8 = b'p';

/// The refusing thread; see the module docs.
#[derive(Debug)]
pub(crate) struct Refuser {
    control: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl Refuser {
    /// Starts the thread for `listener`, paused; `None` when it cannot be started (later
    /// connections then wait in the backlog, as they would anyway).
    pub(crate) fn start(listener: &UnixListener) -> Option<Self> {
        let listener = listener.try_clone().ok()?;
        let (control, theirs) = UnixStream::pair().ok()?;
        let thread = std::thread::Builder::new()
            .name("vhu-refuse".into())
            .spawn(move || run(&listener, theirs))
            .ok()?;
        Some(Self { control, thread: Some(thread) })
    }

    /// Refuses connections until [`Refuser::pause`]; `false` when the thread is gone.
    pub(crate) fn refuse(&mut self) -> bool {
        self.control.write_all(&[REFUSE]).is_ok()
    }

    /// Stops refusing and returns once the thread no longer accepts; `false` when the thread is
    /// gone.
    pub(crate) fn pause(&mut self) -> bool {
        let mut ack = [0u8];
        self.control.write_all(&[PAUSE]).is_ok()
            && self.control.read_exact(&mut ack).is_ok()
            && ack[0] == PAUSE
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        // The thread reads end-of-file on its end and returns.
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: paused until told to refuse, then refusing until told to pause; returns when
/// the control socket ends or fails.
fn run(listener: &UnixListener, mut control: UnixStream) {
    let mut byte = [0u8];
    loop {
        // Paused: the daemon accepts.
        match control.read(&mut byte) {
            Ok(1) if byte[0] == REFUSE => {}
            Ok(1) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => return,
        }
        // Refusing, until the daemon says otherwise. Its word comes first: a connection that
        // arrives as the served one ends is the next front-end, for the daemon to accept.
        loop {
            let mut fds =
                [PollFd::new(&control, PollFlags::IN), PollFd::new(listener, PollFlags::IN)];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => return,
            }
            if !fds[0].revents().is_empty() {
                match control.read(&mut byte) {
                    Ok(1) if byte[0] == PAUSE => {
                        if control.write_all(&[PAUSE]).is_err() {
                            return;
                        }
                        break;
                    }
                    Ok(1) => continue,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    _ => return,
                }
            }
            if !fds[1].revents().is_empty() && listener.accept().is_ok() {
                // Accepted and dropped: the connection is closed.
                log::warn!("refused a second front-end: one is being served");
            }
        }
    }
}
