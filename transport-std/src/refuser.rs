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

    /// Refuses connections for as long as the returned guard lives; `None` when the thread is
    /// gone (it is then dropped, and the daemon starts another for the next connection).
    pub(crate) fn refusing(mut self) -> Option<Refusing> {
        self.control.write_all(&[REFUSE]).is_ok().then_some(Refusing(Some(self)))
    }

    /// Stops refusing and returns once the thread no longer accepts; `false` when the thread is
    /// gone.
    fn pause(&mut self) -> bool {
        let mut ack = [0u8];
        self.control.write_all(&[PAUSE]).is_ok()
            && self.control.read_exact(&mut ack).is_ok()
            && ack[0] == PAUSE
    }
}

/// A refusing thread at work; dropped (also while a session unwinds), it pauses the thread.
#[derive(Debug)]
pub(crate) struct Refusing(Option<Refuser>);

impl Refusing {
    /// Pauses the thread and gives it back, or `None` when it is gone.
    pub(crate) fn end(mut self) -> Option<Refuser> {
        let mut refuser = self.0.take()?;
        refuser.pause().then_some(refuser)
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        if let Some(refuser) = &mut self.0 {
            refuser.pause();
        }
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
        // Refusing, until the daemon says otherwise. When its word and a connection are seen
        // together, its word comes first: that connection is the next front-end, for the daemon
        // to accept.
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
            if !fds[1].revents().is_empty() {
                match listener.accept() {
                    // Accepted and dropped: the connection is closed.
                    Ok(_) => log::warn!("refused a second front-end: one is being served"),
                    // Out of descriptors, say: the connection stays queued and the listener
                    // readable; try again in a moment instead of spinning.
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        }
    }
}
