//! The inode table: guest node ids ↔ host inodes held open as O_PATH fds, with lookup counts.
//!
//! Keyed both by node id and by host (dev, ino), so a second lookup of the same host inode returns
//! the same node id and bumps its count. FORGET decrements; at zero the entry and its fd are
//! dropped. The root is pinned and never forgotten. This module does no path resolution.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::io::Errno;

use super::attr::InodeKey;
use crate::fuse::NodeId;

/// `S_IFMT` and the file types the passthrough distinguishes.
pub(super) const S_IFMT: u32 = 0o170000;
/// Directory.
pub(super) const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub(super) const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub(super) const S_IFLNK: u32 = 0o120000;

/// One host inode the guest knows about.
#[derive(Debug)]
pub struct Inode {
    /// O_PATH | O_NOFOLLOW fd of the inode.
    pub fd: OwnedFd,
    /// Host identity.
    pub key: InodeKey,
    /// The host mount it was reached through.
    pub mnt_id: u64,
    /// `S_IFMT` bits of its mode (the type never changes).
    pub kind: u32,
}

impl Inode {
    /// Whether the inode is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == S_IFDIR
    }
}

#[derive(Debug)]
struct Slot {
    inode: Arc<Inode>,
    lookups: u64,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<u64, Slot>,
    by_key: HashMap<InodeKey, u64>,
    next_id: u64,
}

/// The table, shareable between request queues.
#[derive(Debug, Default)]
pub struct InodeTable {
    inner: Mutex<Inner>,
}

impl InodeTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps are updated together under the lock; a panic cannot leave one half-done
        // because no code between the two updates can panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the root (node id 1), replacing any previous state.
    pub fn reset(&self, root: Inode) {
        let mut inner = self.lock();
        inner.by_id.clear();
        inner.by_key.clear();
        inner.by_key.insert(root.key, NodeId::ROOT.0);
        inner.by_id.insert(NodeId::ROOT.0, Slot { inode: Arc::new(root), lookups: 1 });
        inner.next_id = NodeId::ROOT.0 + 1;
    }

    /// The inode behind `node`.
    pub fn get(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        self.lock().by_id.get(&node.0).map(|s| Arc::clone(&s.inode)).ok_or(Errno::BADF)
    }

    /// Records one lookup of `inode`: an existing node for the same host inode gains a reference
    /// (and the new fd is dropped), otherwise a new node is created with one reference.
    pub fn lookup(&self, inode: Inode) -> NodeId {
        let mut inner = self.lock();
        if let Some(&id) = inner.by_key.get(&inode.key) {
            if let Some(slot) = inner.by_id.get_mut(&id) {
                slot.lookups = slot.lookups.saturating_add(1);
                return NodeId(id);
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.by_key.insert(inode.key, id);
        inner.by_id.insert(id, Slot { inode: Arc::new(inode), lookups: 1 });
        NodeId(id)
    }

    /// Drops `count` references; the node goes away at zero. Unknown nodes and the root are ignored.
    pub fn forget(&self, node: NodeId, count: u64) {
        if node == NodeId::ROOT {
            return;
        }
        let mut inner = self.lock();
        let Some(slot) = inner.by_id.get_mut(&node.0) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(count);
        if slot.lookups == 0 {
            let key = slot.inode.key;
            inner.by_id.remove(&node.0);
            if inner.by_key.get(&key) == Some(&node.0) {
                inner.by_key.remove(&key);
            }
        }
    }

    /// Up to a few inodes on host device `dev` (for opening one of them).
    pub(super) fn on_device(&self, dev: u64) -> Vec<Arc<Inode>> {
        let inner = self.lock();
        let on = inner.by_id.values().filter(|s| s.inode.key.0 == dev);
        on.map(|s| Arc::clone(&s.inode)).take(8).collect()
    }

    /// Lookup count of `node`, if it exists.
    pub fn lookups(&self, node: NodeId) -> Option<u64> {
        self.lock().by_id.get(&node.0).map(|s| s.lookups)
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether the table is empty (never true once the root is installed).
    pub fn is_empty(&self) -> bool {
        self.lock().by_id.is_empty()
    }
}
