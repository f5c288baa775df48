//! SIGINT, SIGTERM and SIGHUP end a benchmark cleanly: the back-end being measured is killed,
//! the share (two 64 MiB data files on `/dev/shm`, which is memory) is removed, and the bench
//! exits with 128 plus the signal's number, as a shell reports a process a signal ended. A
//! comparison runs for minutes; one interrupted at the keyboard or by a time limit must not
//! leave its files or a back-end behind.
//!
//! The handler is installed before the share is laid out, and waits for the layout to finish
//! (a signal that removed the directory while files were still being made would leave the rest
//! behind). It kills the back-end and waits for it to die before it removes the share, so no
//! request of the back-end's can make a file there afterwards; the bench's own host lanes can
//! make none once the share's directory is gone. This module owns no measurement: it only
//! knows the share's directory and the back-end running now.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, PoisonError};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// What a terminating signal cleans up.
struct Leftovers {
    /// The share's directory, once it is chosen.
    dir: Option<PathBuf>,
    /// The back-end running now (its pid while it is not reaped).
    backend: Option<u32>,
}

static LEFTOVERS: Mutex<Leftovers> = Mutex::new(Leftovers { dir: None, backend: None });

fn leftovers() -> MutexGuard<'static, Leftovers> {
    LEFTOVERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Installs the handler (see the module docs).
pub(crate) fn clean_up_on_termination() -> Result<(), String> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // Held until exit: the main thread reaps no back-end and lays out nothing more.
                let left = leftovers();
                let backend = left.backend.and_then(|pid| i32::try_from(pid).ok());
                if let Some(pid) = backend.and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    // Not reaped yet (the lock says so): the pid is still the back-end's.
                    let _ =
                        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
                }
                if let Some(dir) = &left.dir {
                    remove(dir);
                }
                eprintln!("vhu-fs-bench: stopped by signal {signal}; the share was removed");
                std::process::exit(128 + signal);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("starting the signal thread: {e}"))
}

/// Removes `dir`, again while a host lane of the bench's own was making a file in it as it went.
fn remove(dir: &Path) {
    for _ in 0..10 {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// While held, a terminating signal waits.
pub(crate) struct Held {
    _guard: MutexGuard<'static, Leftovers>,
}

/// The share is being laid out in `dir`: hold signals until the returned guard is dropped.
pub(crate) fn laying_out(dir: PathBuf) -> Held {
    let mut left = leftovers();
    left.dir = Some(dir);
    Held { _guard: left }
}

/// Starts the back-end `command`, recorded as the one running now before any signal can look.
pub(crate) fn start_backend(command: &mut Command) -> std::io::Result<Child> {
    let mut left = leftovers();
    let child = command.spawn()?;
    left.backend = Some(child.id());
    Ok(child)
}

/// Reaps `child` if it exited and says how; once reaped, a signal no longer kills its pid
/// (which the system may give to another process).
pub(crate) fn try_reap(child: &mut Child) -> Option<ExitStatus> {
    let mut left = leftovers();
    let status = child.try_wait().ok().flatten();
    if status.is_some() {
        left.backend = None;
    }
    status
}

/// Kills `child` and reaps it.
pub(crate) fn kill_and_reap(child: &mut Child) {
    let mut left = leftovers();
    let _ = child.kill();
    let _ = child.wait();
    left.backend = None;
}
