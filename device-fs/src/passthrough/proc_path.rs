//! A path naming an inode, for the syscalls that take only a path (the xattr family): the
//! inode's entry in the `/proc/self/fd` directory the file system opened at start, reached
//! relative to the calling thread's working directory.
//!
//! An absolute `/proc/self/fd/N` would stop resolving once the daemon pivots into the share
//! (where `/proc` is the guest's own directory, or absent), so the calling thread first leaves
//! the process-wide working directory (`unshare(CLONE_FS)`, once per thread) and moves to the
//! descriptor directory; `N` then resolves through the magic link to the inode itself, whatever
//! kind it is. Nothing else in the file system uses the working directory. This module owns
//! that rule and nothing more.

use std::cell::Cell;
use std::os::fd::AsFd;

use rustix::io::Errno;

thread_local! {
    /// Whether this thread has its own working directory.
    static OWN_CWD: Cell<bool> = const { Cell::new(false) };
}

/// Makes `proc_fd` the calling thread's working directory and returns the relative name of
/// `fd` in it. The name stays valid while `fd` is open.
pub(super) fn through(proc_fd: impl AsFd, fd: &impl std::os::fd::AsRawFd) -> Result<String, Errno> {
    if !OWN_CWD.get() {
        // SAFETY: unshare(CLONE_FS) only gives this thread its own copy of root, working
        // directory and umask; it touches no memory and no other thread's state.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
        OWN_CWD.set(true);
    }
    rustix::process::fchdir(proc_fd)?;
    Ok(fd.as_raw_fd().to_string())
}
