//! The descriptors the daemon inherits from its launcher: the `--fd` socket, checked before the
//! daemon opens any of its own, and the others, which the process serving the guest does not
//! keep.
//!
//! A launcher that leaves a descriptor of its own open across exec (a directory, a control
//! socket, a disk image) hands it to the daemon, and no mount namespace or changed root takes it
//! away: a daemon a guest took over could reach through it what the sandbox hides. The daemon
//! itself uses none of them (the shared directory is opened by its path), but one may matter
//! while the daemon lives: libvirt keeps its lock on the daemon's pid file through a descriptor
//! it leaves open, and reads the daemon as gone once that lock is let go. So the numbers are
//! listed first thing (those open without close-on-exec: what came through exec; a library
//! the daemon calls before the fork, such as a name service's, opens its own with the flag),
//! and the namespace sandbox's serving child
//! closes them right after the fork, while the parent, which waits outside for the child, keeps
//! them (a lock a process holds is not the child's to drop). In `chroot` and `none` mode one
//! process serves and holds them. This module owns the list; forking is the sandbox's.

/// Whether `--fd`'s descriptor is open and not stdio. Checked before the daemon opens
/// descriptors of its own too (the log's socket), which would otherwise take the number of one
/// a launcher failed to pass and be taken for it.
pub(crate) fn check_open(fd: i32) -> Result<(), String> {
    if fd <= 2 || fd_flags(fd).is_none() {
        return Err(format!("--fd {fd}: not an open descriptor other than stdio"));
    }
    Ok(())
}

/// The descriptor flags of `fd` (FD_CLOEXEC), if it is open.
fn fd_flags(fd: i32) -> Option<i32> {
    // SAFETY: F_GETFD only reads the descriptor's flags; an unused number gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    (flags >= 0).then_some(flags)
}

/// The descriptors above stdio open now without close-on-exec: what the launcher passed. Called
/// first thing in `main`; without a readable `/proc/self/fd` none is listed (and the daemon
/// says so once its log is open). `--fd`'s is among them: [`leaked`] leaves it out.
pub(crate) fn passed() -> Result<Vec<i32>, std::io::Error> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own descriptor is among those listed, closed by now.
    let across_exec = |fd: i32| fd_flags(fd).is_some_and(|flags| flags & libc::FD_CLOEXEC == 0);
    Ok(listed.into_iter().filter(|fd| *fd > 2 && across_exec(*fd)).collect())
}

/// Of the descriptors [`passed`] listed, those the daemon was not told of (all but `keep`,
/// `--fd`).
pub(crate) fn leaked(passed: Vec<i32>, keep: Option<i32>) -> Vec<i32> {
    passed.into_iter().filter(|fd| Some(*fd) != keep).collect()
}

/// Closes `leaked` (what [`leaked`] listed), in the namespace sandbox's child right after the
/// fork: the process has one thread, and none of its own descriptors can have taken those
/// numbers, which stayed open all along.
pub(crate) fn close(leaked: &[i32]) {
    for fd in leaked {
        // SAFETY: a descriptor inherited from the launcher that nothing in the process owns
        // or uses (see above); closing it touches no memory.
        unsafe { libc::close(*fd) };
    }
}
