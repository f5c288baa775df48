//! Open file and directory handles: `fh` ↔ a real (non-O_PATH) host fd.
//!
//! A handle remembers which node it was opened for, so a request naming another node is refused.
//! Directory handles carry a lock because listing moves the fd's offset. A handle a migration
//! could not reopen is *lost*: RELEASE still closes it, every other use fails with EIO. No I/O
//! beyond holding fds and setting the status flags a handle's host file takes from the guest's
//! (O_APPEND, O_DIRECT: [`HandleData::follow`]).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use rustix::fs::OFlags;
use rustix::io::Errno;

use super::dir_cursor::DirCursor;
use super::ids::IdMap;
use crate::fuse::{Handle, NodeId};

/// One open file or directory.
#[derive(Debug)]
pub struct HandleData {
    /// The open fd.
    pub fd: OwnedFd,
    /// The node it was opened for.
    pub node: NodeId,
    /// Whether it is a directory handle.
    pub is_dir: bool,
    /// The status flags it was opened with (O_APPEND, O_DSYNC, O_SYNC, O_DIRECT...).
    pub flags: OFlags,
    /// For the guest's write-backs through a handle with O_APPEND or O_DIRECT: the file opened
    /// again without them, once one came.
    pub plain: std::sync::OnceLock<OwnedFd>,
    /// Which of [`FOLLOWED`] `fd` has now (the guest may set or clear them with F_SETFL; its
    /// reads and writes say which, and `fd` follows).
    following: AtomicU32,
    /// Changes of `fd`'s status flags take it for writing (read, changed, written back); a
    /// write the guest cannot order against them holds it for reading ([`HandleData::steady`]).
    follow_lock: RwLock<()>,
    /// A directory handle's listing (its descriptor's position and what it read ahead); the
    /// lock serialises listings of the handle.
    pub(super) dir_lock: Mutex<DirCursor>,
    /// The errno of a sync the daemon made on its own (before a migration's state was saved)
    /// that failed, not yet told to the guest (0: none). The host reports a write-back error
    /// once per open file, so the daemon's sync took it from the guest's next FSYNC.
    sync_failed: AtomicI32,
}

/// The status flags a handle's host file takes from the guest's file as it is at each request:
/// `F_SETFL` in the guest changes them after the open, and FUSE is told only through the flags
/// every READ and WRITE carries (`fuse_read_in.flags`, `fuse_write_in.flags`).
pub(super) const FOLLOWED: OFlags = OFlags::APPEND.union(OFlags::DIRECT);

impl HandleData {
    /// Whether the host file has O_APPEND now.
    pub fn is_appending(&self) -> bool {
        self.has(OFlags::APPEND)
    }

    /// Whether the guest opened the file for writing (O_WRONLY or O_RDWR).
    pub fn is_writable(&self) -> bool {
        self.flags & OFlags::ACCMODE != OFlags::RDONLY
    }

    /// Whether the host file has O_DIRECT now (its I/O needs aligned buffers).
    pub fn is_direct(&self) -> bool {
        self.has(OFlags::DIRECT)
    }

    /// Keeps the host file's followed flags as they are while the guard lives: a write-back of
    /// the guest's page cache, which the guest cannot order against a change of its file's
    /// flags, decides how to write and writes under it.
    pub fn steady(&self) -> RwLockReadGuard<'_, ()> {
        self.follow_lock.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A sync the daemon made on its own failed with `errno`: the guest's next FSYNC of the
    /// handle says so ([`HandleData::take_sync_failure`]); a failure kept already stays.
    pub fn note_sync_failure(&self, errno: Errno) {
        let raw = errno.raw_os_error();
        let _ = self.sync_failed.compare_exchange(0, raw, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The failure [`HandleData::note_sync_failure`] kept, if the guest has not been told yet.
    pub fn sync_failure(&self) -> Option<Errno> {
        let raw = self.sync_failed.load(Ordering::Relaxed);
        (raw != 0).then(|| Errno::from_raw_os_error(raw))
    }

    /// The kept failure, now told to the guest (so it is no longer kept).
    pub fn take_sync_failure(&self) -> Option<Errno> {
        let raw = self.sync_failed.swap(0, Ordering::Relaxed);
        (raw != 0).then(|| Errno::from_raw_os_error(raw))
    }

    fn has(&self, flag: OFlags) -> bool {
        self.following.load(Ordering::Relaxed) & flag.bits() != 0
    }

    /// Sets or clears `flag` (O_APPEND or O_DIRECT) on the host file, as the guest's file has it
    /// now. Requests racing a change of the guest's flags are ordered by nothing on the guest
    /// side either. A host file system that refuses the change (O_DIRECT where it has none)
    /// fails the request with its errno, as `F_SETFL` on a local file would have failed.
    pub fn follow(&self, flag: OFlags, on: bool) -> Result<(), Errno> {
        debug_assert!(FOLLOWED.contains(flag) && !flag.is_empty());
        if self.has(flag) == on {
            return Ok(());
        }
        // Single-value critical section: nothing is left half-done by a panic.
        let _changing = self.follow_lock.write().unwrap_or_else(|e| e.into_inner());
        if self.has(flag) == on {
            return Ok(());
        }
        let now = rustix::fs::fcntl_getfl(&self.fd)?;
        let next = if on { now | flag } else { now - flag };
        rustix::fs::fcntl_setfl(&self.fd, next)?;
        if on {
            self.following.fetch_or(flag.bits(), Ordering::Relaxed);
        } else {
            self.following.fetch_and(!flag.bits(), Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A handle's entry: open, or lost in a migration.
#[derive(Clone, Debug)]
pub enum HandleSlot {
    /// Open.
    Open(Arc<HandleData>),
    /// Lost: what it was opened for.
    Lost {
        /// The node.
        node: NodeId,
        /// Whether it was a directory handle.
        is_dir: bool,
    },
}

impl HandleSlot {
    fn open(fd: OwnedFd, node: NodeId, is_dir: bool, flags: OFlags) -> Self {
        let plain = std::sync::OnceLock::new();
        let following = if is_dir { OFlags::empty() } else { flags & FOLLOWED };
        let following = AtomicU32::new(following.bits());
        let (follow_lock, dir_lock) = (RwLock::new(()), Mutex::new(DirCursor::new()));
        Self::Open(Arc::new(HandleData {
            fd,
            node,
            is_dir,
            flags,
            plain,
            following,
            follow_lock,
            dir_lock,
            sync_failed: AtomicI32::new(0),
        }))
    }

    fn is_for(&self, node: NodeId, is_dir: bool) -> bool {
        match self {
            Self::Open(d) => d.node == node && d.is_dir == is_dir,
            Self::Lost { node: n, is_dir: d } => *n == node && *d == is_dir,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: IdMap<HandleSlot>,
    next: u64,
    /// Handles in `map` that hold a second descriptor (`plain`).
    plain: usize,
}

/// The handle table.
#[derive(Debug, Default)]
pub struct HandleTable {
    inner: Mutex<Inner>,
}

impl HandleTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Single-map updates: nothing is left half-done by a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `fd`, a regular file of `node` opened with `flags`, and returns its new handle.
    pub fn insert_file(&self, fd: OwnedFd, node: NodeId, flags: OFlags) -> Handle {
        self.insert(HandleSlot::open(fd, node, false, flags))
    }

    /// Stores `fd`, a directory of `node`, and returns its new handle.
    pub fn insert_dir(&self, fd: OwnedFd, node: NodeId) -> Handle {
        self.insert(HandleSlot::open(fd, node, true, OFlags::empty()))
    }

    fn insert(&self, slot: HandleSlot) -> Handle {
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.map.insert(id, slot);
        Handle(id)
    }

    /// Every handle in id order, and the last id handed out.
    pub fn snapshot(&self) -> (Vec<(Handle, HandleSlot)>, u64) {
        let inner = self.lock();
        let mut all: Vec<_> =
            inner.map.iter().map(|(id, slot)| (Handle(*id), slot.clone())).collect();
        all.sort_unstable_by_key(|(h, _)| h.0);
        (all, inner.next)
    }

    /// Adds handle `h` as a migration's source had it: `fd` open for `node`, or lost without
    /// one. An id already present is left alone; new handles get ids after `last`.
    pub fn restore(&self, h: Handle, node: NodeId, is_dir: bool, fd: Option<OwnedFd>, last: u64) {
        let slot = match fd {
            Some(fd) => {
                let flags = rustix::fs::fcntl_getfl(&fd).unwrap_or(OFlags::empty());
                HandleSlot::open(fd, node, is_dir, flags)
            }
            None => HandleSlot::Lost { node, is_dir },
        };
        let mut inner = self.lock();
        inner.next = inner.next.max(last).max(h.0);
        inner.map.entry(h.0).or_insert(slot);
    }

    /// The handle `h`, which must belong to `node` and be of the right kind.
    pub fn get(&self, h: Handle, node: NodeId, is_dir: bool) -> Result<Arc<HandleData>, Errno> {
        match self.lock().map.get(&h.0) {
            Some(slot) if !slot.is_for(node, is_dir) => Err(Errno::BADF),
            Some(HandleSlot::Open(data)) => Ok(Arc::clone(data)),
            Some(HandleSlot::Lost { .. }) => Err(Errno::IO),
            None => Err(Errno::BADF),
        }
    }

    /// Whether `h` is a handle of `node` of that kind, open or lost (EBADF otherwise).
    pub fn known(&self, h: Handle, node: NodeId, is_dir: bool) -> Result<(), Errno> {
        match self.lock().map.get(&h.0) {
            Some(slot) if slot.is_for(node, is_dir) => Ok(()),
            _ => Err(Errno::BADF),
        }
    }

    /// Removes `h` (its fd closes once no request still uses it); returns the sync failure it
    /// kept for the guest, if the guest had not heard of it.
    pub fn remove(&self, h: Handle, node: NodeId, is_dir: bool) -> Result<Option<Errno>, Errno> {
        let mut inner = self.lock();
        match inner.map.get(&h.0) {
            Some(slot) if slot.is_for(node, is_dir) => {
                let mut kept = None;
                if let Some(HandleSlot::Open(data)) = inner.map.remove(&h.0) {
                    if data.plain.get().is_some() {
                        inner.plain = inner.plain.saturating_sub(1);
                    }
                    kept = data.take_sync_failure();
                }
                Ok(kept)
            }
            _ => Err(Errno::BADF),
        }
    }

    /// Drops every handle.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.plain = 0;
    }

    /// Gives `h` (handle `id` of this table, as [`HandleTable::get`] gave it) `fd` as its
    /// second, plain descriptor, unless another write-back gave it one meanwhile (then `fd`
    /// closes); returns the one it holds. Counted in [`HandleTable::len`] while the handle is in
    /// the table: one the guest released meanwhile (its RELEASE overtook this write-back) is
    /// not counted, since no removal will take it off again.
    pub fn install_plain<'h>(&self, id: Handle, h: &'h HandleData, fd: OwnedFd) -> &'h OwnedFd {
        let mut inner = self.lock();
        let mut installed = false;
        let held = h.plain.get_or_init(|| {
            installed = true;
            fd
        });
        let in_table =
            matches!(inner.map.get(&id.0), Some(HandleSlot::Open(d)) if std::ptr::eq(&**d, h));
        if installed && in_table {
            inner.plain += 1;
        }
        held
    }

    /// Host descriptors the handles hold: one each, and a second for those given a plain one.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.map.len() + inner.plain
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.lock().map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").expect("/dev/null").into()
    }

    /// A plain descriptor counts while its handle is in the table, and one installed after the
    /// guest released the handle (its RELEASE overtook the write-back) never counts: the budget
    /// cannot drift one a race at a time.
    #[test]
    fn a_plain_descriptor_counts_only_while_its_handle_is_in_the_table() {
        let table = HandleTable::default();
        let node = NodeId(2);
        let id = table.insert_file(null(), node, OFlags::WRONLY);
        let h = table.get(id, node, false).expect("open");
        table.install_plain(id, &h, null());
        assert_eq!(table.len(), 2, "the handle and its plain descriptor");
        table.remove(id, node, false).expect("released");
        assert_eq!(table.len(), 0);

        let id = table.insert_file(null(), node, OFlags::WRONLY);
        let h = table.get(id, node, false).expect("open");
        table.remove(id, node, false).expect("released before the write-back");
        table.install_plain(id, &h, null());
        assert_eq!(table.len(), 0, "nothing left counted for a released handle");
    }
}
