//! Guest locks forwarded to the host: POSIX byte-range locks as open-file-description (OFD)
//! locks, BSD `flock` locks as `flock(2)`, so a host process and the guest see each other's locks.
//!
//! The host's lock owner is an open file description. Each guest owner (FUSE `lock_owner`: a
//! guest process for POSIX locks, a guest open file for flock) of each node gets one description
//! of its own, opened on the inode, so guest owners conflict with each other and with host
//! processes exactly as local ones would, and one owner's locks merge and split as POSIX says.
//! Closing an owner's description drops its locks: FLUSH does that for POSIX locks (a `close(2)`
//! in the guest drops the process's locks on the file), RELEASE with FLOCK_UNLOCK for flock.
//! An open-file-description lock of the guest (`F_OFD_SETLK`: the owner is the guest's open
//! file) goes when that file is released; Linux sends no FLUSH or unlock for it, so RELEASE of
//! a handle drops every POSIX owner that only ever locked through that handle.
//!
//! A SETLKW whose lock is held is retried on a thread of its own until it is granted or
//! cancelled (INTERRUPT, RELEASE of its handle, the end of the session; a FLUSH of its owner
//! drops what the owner held and lets the wait go on, as a `close(2)` in another thread does), so
//! no queue worker ever blocks on a lock. One that would wait, through guest owners holding what
//! it asks for and waiting in turn, for its own owner is refused with EDEADLK, as Linux refuses
//! it for local POSIX locks: Linux's virtio-fs never interrupts a request, so a guest caller in
//! such a cycle would otherwise wait for good. (Host processes' locks are not seen.)
//! Descriptions are read-only unless the owner asks a POSIX lock through a handle the guest
//! opened for writing, so the daemon's privileges never hold open for writing a file the guest
//! may only read ([`Locks::setlk`]). One owner holds at most
//! [`Ranges::KEPT`](super::lock_ranges::Ranges::KEPT) byte ranges apart (ENOLCK past it;
//! touching ranges of one type are one, as the kernel joins them). This
//! module opens no descriptors itself: the caller passes the opener of a node's description.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use super::lock_ranges::Ranges;
use crate::fuse::{Cancel, Handle, Lock, LockRequest, LockStatus, LockType, LockWait, LOCK_TO_EOF};

/// Most SETLKW waits at once; past it a wait is refused with ENOLCK.
pub(super) const MAX_WAITS: usize = 256;
/// How often a lock request makes its owner again when FLUSH or RELEASE on another queue drops
/// it between its making and the attempt.
const OWNER_ATTEMPTS: usize = 8;
/// The longest pause between two attempts of a waiting SETLKW.
const MAX_BACKOFF: Duration = Duration::from_millis(20);

/// (node, owner, flock): whose description it is.
type Key = (u64, u64, bool);

/// A SETLKW in progress.
struct Waiting {
    key: Key,
    /// What it asks for.
    lock: Lock,
    handle: Handle,
    cancel: Cancel,
    /// Gone once the waiting thread ended.
    alive: Weak<()>,
}

/// One guest owner's description and what it holds through it, changed together: each lock
/// and unlock is tried on the description and recorded under the one mutex, so the record is
/// what the host holds, and a description replaced by a writable one
/// ([`Locks::make_writable`]) is never used once it went.
struct Held {
    fd: Arc<OwnedFd>,
    /// The description is open for writing (write locks need it).
    writable: bool,
    ranges: Ranges,
}

impl Held {
    /// One non-blocking attempt on the description, recorded when it succeeded. A flock
    /// conversion that fails has dropped the lock it was converting (flock(2): the old lock
    /// goes first; Linux does both under one lock and keeps neither), and so does the record.
    fn apply(&mut self, lock: &Lock, flock: bool) -> Result<(), Errno> {
        if let Err(errno) = attempt(&self.fd, lock, flock) {
            if flock && errno == Errno::AGAIN {
                self.ranges = Ranges::default();
            }
            return Err(errno);
        }
        let (start, end) = if flock { (0, LOCK_TO_EOF) } else { (lock.start, lock.end) };
        match lock.typ {
            LockType::Unlock => self.ranges.give_back(start, end),
            LockType::Read | LockType::Write => self.ranges.take(start, end, lock.typ),
        }
        Ok(())
    }
}

/// One guest owner: its description and locks, and how the guest asked for them.
struct Owner {
    /// Shared with a SETLKW waiting on the owner's behalf, which adds what it gets.
    held: Arc<Mutex<Held>>,
    /// The guest handles its locks were asked through, up to [`Owner::HANDLES`].
    handles: Vec<Handle>,
    /// It asked through more: it is never taken for an owner of one handle.
    many: bool,
    /// The guest's pid of its last lock request (`fuse_file_lock.pid`): what a GETLK of
    /// another guest owner reports as the holder.
    pid: u32,
}

impl Owner {
    const HANDLES: usize = 16;

    /// Notes that a lock was asked through `handle`.
    fn asked_through(&mut self, handle: Handle) {
        if self.handles.contains(&handle) {
            return;
        }
        if self.handles.len() < Self::HANDLES {
            self.handles.push(handle);
        } else {
            self.many = true;
        }
    }

    /// `handle` is released: whether the owner asked through it and no other.
    fn released(&mut self, handle: Handle) -> bool {
        let before = self.handles.len();
        self.handles.retain(|h| *h != handle);
        before == 1 && self.handles.is_empty() && !self.many
    }
}

fn lock_held(held: &Mutex<Held>) -> MutexGuard<'_, Held> {
    // Each change replaces the range list whole and the descriptor in one store: a panic
    // cannot leave them half-changed. (Lock order: the table's `inner`, then an owner's.)
    held.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Inner {
    ofds: HashMap<Key, Owner>,
    waits: Vec<Waiting>,
}

impl Inner {
    /// Whether POSIX owner `me` waiting for `lock` would wait for itself: through a guest
    /// owner holding part of what it asks for, which waits for a lock held by another, and so
    /// on (POSIX: EDEADLK). Owners are the guest's lock owners, whatever the file.
    fn closes_cycle(&self, me: Key, lock: &Lock) -> bool {
        let mut pending = vec![(me, *lock)];
        let mut seen = vec![me.1];
        while let Some((waiter, wanted)) = pending.pop() {
            let blockers = self.ofds.iter().filter(|(key, owner)| {
                key.0 == waiter.0
                    && !key.2
                    && key.1 != waiter.1
                    && lock_held(&owner.held).ranges.conflicts(&wanted)
            });
            for (blocker, _) in blockers {
                if blocker.1 == me.1 {
                    return true;
                }
                if seen.contains(&blocker.1) {
                    continue;
                }
                seen.push(blocker.1);
                let its_waits = self.waits.iter().filter(|w| {
                    w.key.1 == blocker.1
                        && !w.key.2
                        && w.alive.strong_count() > 0
                        && !w.cancel.is_cancelled()
                });
                pending.extend(its_waits.map(|w| (w.key, w.lock)));
            }
        }
        false
    }
}

/// The locks the guest holds or waits for, by owner.
#[derive(Default)]
pub(super) struct Locks {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Locks")
            .field("owners", &inner.ofds.len())
            .field("waits", &inner.waits.len())
            .finish()
    }
}

impl Locks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each update is one insert or removal: a panic cannot leave the table half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Descriptions held (they count against the guest's descriptor budget).
    pub(super) fn len(&self) -> usize {
        self.lock().ofds.len()
    }

    /// Owners that hold a lock now or wait for one: what a migration cannot carry. An owner
    /// whose description stays after it unlocked everything holds nothing.
    pub(super) fn holding(&self) -> usize {
        let mut inner = self.lock();
        inner.waits.retain(|w| w.alive.strong_count() > 0);
        let holding = inner.ofds.values().filter(|o| !lock_held(&o.held).ranges.is_empty()).count();
        holding + inner.waits.len()
    }

    /// The description of `key`, opened with `open` for a new owner; notes `handle` as one
    /// the owner asks through, and `pid` as the guest process asking.
    fn ofd(
        &self,
        key: Key,
        (handle, pid): (Handle, u32),
        open: impl FnOnce() -> Result<OwnedFd, Errno>,
    ) -> Result<Arc<Mutex<Held>>, Errno> {
        let note = |o: &mut Owner| {
            o.asked_through(handle);
            o.pid = pid;
            Arc::clone(&o.held)
        };
        if let Some(owner) = self.lock().ofds.get_mut(&key) {
            return Ok(note(owner));
        }
        let fd = open()?;
        let writable = is_writable(&fd)?;
        let held = Held { fd: Arc::new(fd), writable, ranges: Ranges::default() };
        let held = Arc::new(Mutex::new(held));
        let mut inner = self.lock();
        let fresh = Owner { held, handles: Vec::new(), many: false, pid };
        Ok(note(inner.ofds.entry(key).or_insert(fresh)))
    }

    /// Makes a POSIX owner's description writable for a write lock: an owner that locked
    /// through a read-only handle first has a read-only description, which can hold only read
    /// locks. A writable one from `open` takes the same read locks first (they share with the
    /// old description's) and then replaces it, with the owner's mutex held throughout, so the
    /// owner holds every byte all along and nothing of the owner's — a request on another
    /// queue, a waiting SETLKW, which reads the description at each try — uses the old one
    /// afterwards. A description `open` could only make read-only answers a write lock as the
    /// host does (EBADF).
    fn make_writable(
        held: &Mutex<Held>,
        open: impl FnOnce() -> Result<OwnedFd, Errno>,
    ) -> Result<(), Errno> {
        if lock_held(held).writable {
            return Ok(());
        }
        let fresh = open()?;
        if !is_writable(&fresh)? {
            return Err(Errno::BADF);
        }
        let mut held = lock_held(held);
        if held.writable {
            return Ok(());
        }
        for &(start, end, _) in &held.ranges.0 {
            // Only read locks: the old description could hold nothing else.
            let lock = Lock { start, end, typ: LockType::Read, pid: 0 };
            ofd_fcntl(&fresh, libc::F_OFD_SETLK, &lock).map_err(|_| Errno::NOLCK)?;
        }
        // The new description holds them all: the old one lets go of its own now (closing it,
        // with its last user, would too).
        let old = std::mem::replace(&mut held.fd, Arc::new(fresh));
        unlock_all(&old, false);
        held.writable = true;
        Ok(())
    }

    /// GETLK of a POSIX lock: what conflicts with `req.lock` for this owner.
    pub(super) fn getlk(
        &self,
        node: u64,
        req: &LockRequest,
        open: impl FnOnce() -> Result<OwnedFd, Errno>,
    ) -> Result<Lock, Errno> {
        // An owner without a description holds nothing: a fresh one sees every other lock. An
        // owner's is asked under its lock, so it is the one the owner holds its locks on.
        let existing = self.lock().ofds.get(&(node, req.owner, false)).map(|o| Arc::clone(&o.held));
        let found = match existing {
            Some(held) => ofd_fcntl(&*lock_held(&held).fd, libc::F_OFD_GETLK, &req.lock)?,
            None => ofd_fcntl(open()?, libc::F_OFD_GETLK, &req.lock)?,
        };
        if found.typ == LockType::Unlock {
            return Ok(Lock { typ: LockType::Unlock, ..req.lock });
        }
        // The holder is a guest process when another guest owner holds a lock of the type
        // the host found where it found it (and the request asks): its pid, as the guest's
        // kernel would report a local holder's. A host process has no pid in the guest (0).
        let start = found.start.max(req.lock.start);
        let end = found.end.min(req.lock.end).max(start);
        let inner = self.lock();
        let holder = inner.ofds.iter().find(|(key, owner)| {
            key.0 == node
                && !key.2
                && key.1 != req.owner
                && lock_held(&owner.held).ranges.holds(start, end, found.typ)
        });
        Ok(Lock { pid: holder.map_or(0, |(_, owner)| owner.pid), ..found })
    }

    /// SETLK / SETLKW: takes, changes or drops the lock; waits off this thread when asked.
    /// `writable`: the guest's handle is open for writing; `open(write)` opens a description
    /// (for writing when `write`, as far as the daemon may), which only a POSIX owner asking
    /// through a writable handle gets: flock locks and read locks need none.
    pub(super) fn setlk(
        &self,
        node: u64,
        req: &LockRequest,
        wait: Option<LockWait>,
        writable: bool,
        open: impl Fn(bool) -> Result<OwnedFd, Errno>,
    ) -> Result<LockStatus, Errno> {
        let key = (node, req.owner, req.flock);
        let (lock, flock) = (req.lock, req.flock);
        if lock.typ == LockType::Unlock {
            let inner = self.lock();
            // An owner without a description holds nothing to unlock.
            let Some(owner) = inner.ofds.get(&key) else { return Ok(LockStatus::Done) };
            let mut held = lock_held(&owner.held);
            if !flock && held.ranges.would_exceed(lock.start, lock.end, None) {
                return Err(Errno::NOLCK);
            }
            held.apply(&lock, flock)?;
            return Ok(LockStatus::Done);
        }
        let write = writable && !flock;
        for _ in 0..OWNER_ATTEMPTS {
            let held = self.ofd(key, (req.handle, lock.pid), || open(write))?;
            if write && lock.typ == LockType::Write {
                Self::make_writable(&held, || open(true))?;
            }
            // From here to the wait's registration under the table's lock: a FLUSH or RELEASE
            // of the owner on another queue comes before (the owner is made afresh) or after
            // (it finds the lock recorded, or the wait registered), never in between.
            let mut inner = self.lock();
            if !inner.ofds.get(&key).is_some_and(|o| Arc::ptr_eq(&o.held, &held)) {
                continue;
            }
            {
                let mut held = lock_held(&held);
                if !flock && held.ranges.would_exceed(lock.start, lock.end, Some(lock.typ)) {
                    return Err(Errno::NOLCK);
                }
                match held.apply(&lock, flock) {
                    Err(Errno::AGAIN) => {}
                    Ok(()) => return Ok(LockStatus::Done),
                    Err(errno) => return Err(errno),
                }
            }
            let Some(wait) = wait else { return Err(Errno::AGAIN) };
            inner.waits.retain(|w| w.alive.strong_count() > 0);
            if inner.waits.len() >= MAX_WAITS {
                return Err(Errno::NOLCK);
            }
            if !flock && inner.closes_cycle(key, &lock) {
                return Err(Errno::DEADLK);
            }
            let alive = Arc::new(());
            let (handle, cancel) = (req.handle, wait.cancel.clone());
            let weak = Arc::downgrade(&alive);
            inner.waits.push(Waiting { key, lock, handle, cancel, alive: weak });
            drop(inner);
            std::thread::Builder::new()
                .name("vhu-lock-wait".into())
                .spawn(move || {
                    let _alive = alive;
                    wait_for(&held, &lock, flock, wait);
                })
                .map_err(|_| Errno::NOLCK)?;
            return Ok(LockStatus::Waiting);
        }
        // The owner kept being dropped by other requests as soon as it was made.
        Err(Errno::NOLCK)
    }

    /// FLUSH by `owner`: its POSIX locks on the node are dropped. A SETLKW of the same owner
    /// still waiting goes on waiting (a `close(2)` in another thread does not interrupt a
    /// blocked F_SETLKW), on the same description, which then stays.
    pub(super) fn flush(&self, node: u64, owner: u64) {
        let key = (node, owner, false);
        let mut inner = self.lock();
        inner.waits.retain(|w| w.alive.strong_count() > 0);
        let waiting = inner.waits.iter().any(|w| w.key == key && !w.cancel.is_cancelled());
        // The description stays for a waiter; what it held is dropped all the same.
        let held = match waiting {
            true => inner.ofds.get(&key).map(|o| Arc::clone(&o.held)),
            false => inner.ofds.remove(&key).map(|o| o.held),
        };
        drop(inner);
        if let Some(held) = held {
            let mut held = lock_held(&held);
            unlock_all(&held.fd, false);
            held.ranges = Ranges::default();
        }
    }

    /// RELEASE of `handle`: its waits end, and the POSIX owners that locked through it alone
    /// (a guest open file's own OFD locks) are dropped; with `flock_unlock` the owner's flock
    /// lock is dropped, with `flush` its POSIX locks.
    pub(super) fn release(
        &self,
        node: u64,
        handle: Handle,
        owner: u64,
        flock_unlock: bool,
        flush: bool,
    ) {
        let mut gone = Vec::new();
        {
            let mut inner = self.lock();
            for w in inner.waits.iter().filter(|w| w.key.0 == node && w.handle == handle) {
                w.cancel.cancel();
            }
            for (key, o) in inner.ofds.iter_mut().filter(|(k, _)| k.0 == node && !k.2) {
                if o.released(handle) {
                    gone.push(*key);
                }
            }
        }
        for key in gone {
            self.drop_owner(key);
        }
        if flock_unlock {
            self.drop_owner((node, owner, true));
        }
        if flush {
            self.drop_owner((node, owner, false));
        }
    }

    /// The end of the session: every wait ends and every lock is dropped.
    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.waits.iter().for_each(|w| w.cancel.cancel());
        inner.waits.clear();
        let ofds: Vec<_> = inner.ofds.drain().collect();
        drop(inner);
        for ((_, _, flock), owner) in ofds {
            unlock_all(&lock_held(&owner.held).fd, flock);
        }
    }

    fn drop_owner(&self, key: Key) {
        let mut inner = self.lock();
        inner.waits.iter().filter(|w| w.key == key).for_each(|w| w.cancel.cancel());
        let owner = inner.ofds.remove(&key);
        drop(inner);
        // Explicitly, not only by closing: a cancelled waiter may hold the description a
        // little longer.
        if let Some(owner) = owner {
            unlock_all(&lock_held(&owner.held).fd, key.2);
        }
    }
}

/// One non-blocking attempt; EAGAIN when the lock is held elsewhere.
fn attempt(fd: &OwnedFd, lock: &Lock, flock: bool) -> Result<(), Errno> {
    if flock {
        let op = match lock.typ {
            LockType::Read => FlockOperation::NonBlockingLockShared,
            LockType::Write => FlockOperation::NonBlockingLockExclusive,
            LockType::Unlock => FlockOperation::NonBlockingUnlock,
        };
        return rustix::fs::flock(fd, op).map_err(|e| {
            if e == Errno::WOULDBLOCK {
                Errno::AGAIN
            } else {
                e
            }
        });
    }
    match ofd_fcntl(fd, libc::F_OFD_SETLK, lock) {
        // POSIX allows EACCES for a lock held elsewhere.
        Err(Errno::ACCESS) => Err(Errno::AGAIN),
        other => other.map(drop),
    }
}

/// Retries until the lock is taken (and recorded in `held`, on whichever description the owner
/// has at that try), an error other than EAGAIN comes, or the wait is cancelled.
fn wait_for(held: &Mutex<Held>, lock: &Lock, flock: bool, wait: LockWait) {
    let mut pause = Duration::from_millis(1);
    let result = loop {
        let mut held = lock_held(held);
        // Checked under the owner's lock: a RELEASE or the session's end cancels before it
        // takes the owner's lock to let go of everything, so a cancelled wait never takes a
        // lock after that.
        if wait.cancel.is_cancelled() {
            break Err(Errno::INTR);
        }
        // The owner may have taken other ranges while this one waited: the bound holds for
        // a granted wait as for a lock taken at once.
        if !flock && held.ranges.would_exceed(lock.start, lock.end, Some(lock.typ)) {
            break Err(Errno::NOLCK);
        }
        match held.apply(lock, flock) {
            Err(Errno::AGAIN) => {}
            other => break other,
        }
        drop(held);
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_BACKOFF);
    };
    wait.finish(result);
}

fn unlock_all(fd: &OwnedFd, flock: bool) {
    let all = Lock { start: 0, end: LOCK_TO_EOF, typ: LockType::Unlock, pid: 0 };
    // Unlocking what is not held succeeds; a failure here leaves the close to drop the locks.
    let _ = attempt(fd, &all, flock);
}

/// `fcntl(fd, cmd, &flock)` with an F_OFD_* command; returns the lock the kernel wrote back.
fn ofd_fcntl(fd: impl AsFd, cmd: libc::c_int, lock: &Lock) -> Result<Lock, Errno> {
    let len = if lock.end >= LOCK_TO_EOF { 0 } else { lock.end - lock.start + 1 };
    // `Lock::from_wire` keeps start <= end <= i64::MAX, so both fit an off_t.
    let mut fl = libc::flock {
        l_type: lock.typ.raw() as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: i64::try_from(lock.start).map_err(|_| Errno::INVAL)?,
        l_len: i64::try_from(len).map_err(|_| Errno::INVAL)?,
        l_pid: 0,
    };
    let fd = fd.as_fd();
    // SAFETY: the F_OFD_* commands read and write exactly one `struct flock`, which `fl` is, and
    // `fd` is borrowed (open) for the whole call.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if rc < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
    }
    let typ =
        LockType::from_raw(u32::try_from(fl.l_type).map_err(|_| Errno::IO)?).ok_or(Errno::IO)?;
    let start = u64::try_from(fl.l_start).map_err(|_| Errno::IO)?;
    let end = match u64::try_from(fl.l_len).map_err(|_| Errno::IO)? {
        0 => LOCK_TO_EOF,
        n => start.saturating_add(n - 1).min(LOCK_TO_EOF),
    };
    // Holders are host processes or other descriptions: no guest pid to report.
    Ok(Lock { start, end, typ, pid: 0 })
}

/// Whether `fd` is open for writing.
fn is_writable(fd: &OwnedFd) -> Result<bool, Errno> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    Ok(flags & rustix::fs::OFlags::ACCMODE != rustix::fs::OFlags::RDONLY)
}

/// Whether the host file system under `dir` (an fd opened for reading) takes OFD locks and
/// flock locks: (posix, flock).
pub(super) fn probe(dir: &OwnedFd) -> (bool, bool) {
    let whole = Lock { start: 0, end: LOCK_TO_EOF, typ: LockType::Read, pid: 0 };
    let posix = ofd_fcntl(dir, libc::F_OFD_GETLK, &whole).is_ok();
    let flock = rustix::fs::flock(dir, FlockOperation::NonBlockingLockShared).is_ok()
        && rustix::fs::flock(dir, FlockOperation::NonBlockingUnlock).is_ok();
    (posix, flock)
}
