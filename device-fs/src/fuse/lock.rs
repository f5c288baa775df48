//! Typed lock requests (GETLK, SETLK, SETLKW) and the handle of a lock being waited for.
//!
//! A SETLKW must not block the thread serving a queue: a file system that finds the lock held
//! returns [`LockStatus::Waiting`] and later calls the [`LockWait`] it was given, from whatever
//! thread noticed the lock was free, or with EINTR once the wait is cancelled (INTERRUPT,
//! RELEASE, the end of the session). This module only describes; it waits for nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::io::Errno;

use super::abi::FileLock;
use super::types::{FsResult, Handle};

/// The last byte of a lock that runs to the end of the file (`OFFSET_MAX`).
pub const LOCK_TO_EOF: u64 = i64::MAX as u64;

/// F_RDLCK, F_WRLCK or F_UNLCK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockType {
    /// A shared (read) lock.
    Read,
    /// An exclusive (write) lock.
    Write,
    /// No lock: release the range (or, in a GETLK reply, nothing conflicts).
    Unlock,
}

impl LockType {
    /// From the `fcntl` value (0, 1, 2 on Linux).
    pub fn from_raw(typ: u32) -> Option<Self> {
        match typ {
            0 => Some(Self::Read),
            1 => Some(Self::Write),
            2 => Some(Self::Unlock),
            _ => None,
        }
    }

    /// The `fcntl` value.
    pub fn raw(self) -> u32 {
        match self {
            Self::Read => 0,
            Self::Write => 1,
            Self::Unlock => 2,
        }
    }
}

/// A byte range lock: `start..=end` (`end` = [`LOCK_TO_EOF`] for the rest of the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
    /// The lock's type.
    pub typ: LockType,
    /// The holder's pid as the guest numbers it (0 when unknown, as for host processes).
    pub pid: u32,
}

impl Lock {
    /// Decodes `fuse_file_lock`; EINVAL for an unknown type or a range that ends before it
    /// starts or past [`LOCK_TO_EOF`].
    pub fn from_wire(w: &FileLock) -> Result<Self, Errno> {
        let typ = LockType::from_raw(w.typ).ok_or(Errno::INVAL)?;
        if w.start > w.end || w.end > LOCK_TO_EOF {
            return Err(Errno::INVAL);
        }
        Ok(Self { start: w.start, end: w.end, typ, pid: w.pid })
    }

    /// The `fuse_file_lock` of this lock.
    pub fn to_wire(&self) -> FileLock {
        FileLock { start: self.start, end: self.end, typ: self.typ.raw(), pid: self.pid }
    }
}

/// One GETLK / SETLK / SETLKW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRequest {
    /// The open file the guest locks through.
    pub handle: Handle,
    /// The lock owner: the guest process (POSIX) or open file (flock).
    pub owner: u64,
    /// The lock.
    pub lock: Lock,
    /// A BSD `flock(2)` lock (whole file, owned by the open file) rather than a POSIX one.
    pub flock: bool,
}

/// What a SETLK / SETLKW did.
#[derive(Debug, PartialEq, Eq)]
pub enum LockStatus {
    /// Done: the lock was taken, changed or released.
    Done,
    /// Held elsewhere: the [`LockWait`] will be called when it is taken or the wait ends.
    Waiting,
}

/// Whether a wait has been cancelled, and whether it has reported its outcome; shared by the
/// waiter and whoever cancels it.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<WaitFlags>);

#[derive(Debug, Default)]
struct WaitFlags {
    cancelled: AtomicBool,
    finished: AtomicBool,
}

impl Cancel {
    /// Cancels the wait: the waiter finishes with EINTR.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
    }

    /// Whether the wait was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Whether `other` is this same wait's (a clone of it), not another's.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether the wait has reported its outcome ([`LockWait::finish`] returned).
    pub fn is_finished(&self) -> bool {
        self.0.finished.load(Ordering::Acquire)
    }
}

/// A SETLKW being waited for: its cancel flag and what to call with the outcome.
pub struct LockWait {
    /// Set when the wait must end (INTERRUPT, RELEASE, end of session).
    pub cancel: Cancel,
    done: Box<dyn FnOnce(FsResult<()>) + Send>,
}

impl std::fmt::Debug for LockWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockWait").field("cancel", &self.cancel).finish_non_exhaustive()
    }
}

impl LockWait {
    /// A wait that calls `done` with its outcome, once.
    pub fn new(cancel: Cancel, done: impl FnOnce(FsResult<()>) + Send + 'static) -> Self {
        Self { cancel, done: Box::new(done) }
    }

    /// Reports the outcome; the wait is finished once that is done.
    pub fn finish(self, result: FsResult<()>) {
        (self.done)(result);
        self.cancel.0.finished.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_locks_are_checked() {
        let w = FileLock { start: 10, end: LOCK_TO_EOF, typ: 1, pid: 7 };
        let lock = Lock::from_wire(&w).expect("valid");
        assert_eq!(lock.typ, LockType::Write);
        assert_eq!(lock.to_wire(), w);
        for bad in [
            FileLock { typ: 3, ..w },
            FileLock { start: 5, end: 4, ..w },
            FileLock { end: LOCK_TO_EOF + 1, ..w },
        ] {
            assert_eq!(Lock::from_wire(&bad), Err(Errno::INVAL));
        }
    }

    #[test]
    fn a_wait_reports_once_and_sees_its_cancel() {
        let (tx, rx) = std::sync::mpsc::channel();
        let cancel = Cancel::default();
        let wait = LockWait::new(cancel.clone(), move |r| tx.send(r).expect("send"));
        assert!(!wait.cancel.is_cancelled());
        cancel.cancel();
        assert!(wait.cancel.is_cancelled());
        assert!(!cancel.is_finished());
        wait.finish(Err(Errno::INTR));
        assert!(cancel.is_finished(), "finished once the outcome went out");
        assert_eq!(rx.recv().expect("outcome"), Err(Errno::INTR));
    }
}
