//! SIGTERM/SIGINT/SIGHUP: remove the socket the daemon bound and its pid file (when this
//! process owns them), then exit with status 0. Until a handler is installed they are held
//! (blocked, so they stay pending): one that comes while the daemon sets itself up takes effect
//! as soon as it can, and never kills it halfway with the socket left behind.

use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vhu_transport_std::SocketFile;

/// Blocks (`hold`) or unblocks the termination signals for the calling thread and the threads
/// and processes it starts afterwards.
pub(crate) fn hold_termination(hold: bool) {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use; the calls only
    // read it and change this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [SIGTERM, SIGINT, SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        let how = if hold { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Installs the handler, then lets held signals through.
pub(crate) fn exit_cleanly_on_termination(socket: Option<Arc<SocketFile>>) -> Result<(), String> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    let thread = std::thread::Builder::new().name("vhu-fsd-signals".into()).spawn(move || {
        if signals.forever().next().is_some() {
            if let Some(socket) = &socket {
                socket.remove();
            }
            std::process::exit(0);
        }
    });
    thread.map_err(|e| format!("starting the signal thread: {e}"))?;
    hold_termination(false);
    Ok(())
}
