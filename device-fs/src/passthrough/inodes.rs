//! The inode table: guest node ids ↔ host inodes held open as O_PATH fds, with lookup counts.
//!
//! Keyed both by node id and by host (dev, ino), so a second lookup of the same host inode returns
//! the same node id and bumps its count. FORGET decrements; at zero the entry and its fd are
//! dropped. The root is pinned and never forgotten. A node a migration could not bring back is
//! *lost*: it keeps its id and lookup count so FORGET still balances, and every use of it fails
//! with EIO. This module does no path resolution.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::io::Errno;

use super::attr::InodeKey;
use super::host_keys::HostMap;
use super::ids::IdMap;
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
    /// `None`: lost in a migration.
    inode: Option<Arc<Inode>>,
    lookups: u64,
}

/// One node as [`InodeTable::snapshot`] sees it.
#[derive(Debug)]
pub struct NodeSnapshot {
    /// Its id.
    pub node: NodeId,
    /// The inode (`None`: lost).
    pub inode: Option<Arc<Inode>>,
    /// Lookups the guest holds.
    pub lookups: u64,
}

/// What makes two lookups the same node: the host inode and the mount it was reached through.
/// One file seen through two mounts (a read-only bind mount of a writable directory, say) is
/// two nodes, each opening through its own mount, so neither lends the other its access.
type Identity = (InodeKey, u64);

impl Inode {
    fn identity(&self) -> Identity {
        (self.key, self.mnt_id)
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_id: IdMap<Slot>,
    by_key: HostMap<Identity, u64>,
    next_id: u64,
}

impl Inner {
    /// One more lookup of the node holding `identity`, if there is one.
    fn add_lookup(&mut self, identity: Identity) -> Option<NodeId> {
        let id = *self.by_key.get(&identity)?;
        let slot = self.by_id.get_mut(&id)?;
        slot.lookups = slot.lookups.saturating_add(1);
        Some(NodeId(id))
    }
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

    /// Installs the root (node id 1), replacing any previous state. Ids go on from where they
    /// were: a FORGET or LOOKUP of the session before (served on another queue after the
    /// reset) then names no node of the next one.
    pub fn reset(&self, root: Inode) {
        let mut inner = self.lock();
        inner.by_id.clear();
        inner.by_key.clear();
        inner.by_key.insert(root.identity(), NodeId::ROOT.0);
        inner.by_id.insert(NodeId::ROOT.0, Slot { inode: Some(Arc::new(root)), lookups: 1 });
        inner.next_id = inner.next_id.max(NodeId::ROOT.0 + 1);
    }

    /// Every node but the root, in id order, and the id the next new node gets.
    pub fn snapshot(&self) -> (Vec<NodeSnapshot>, u64) {
        let inner = self.lock();
        let mut nodes: Vec<NodeSnapshot> = inner
            .by_id
            .iter()
            .filter(|(id, _)| **id != NodeId::ROOT.0)
            .map(|(id, slot)| NodeSnapshot {
                node: NodeId(*id),
                inode: slot.inode.clone(),
                lookups: slot.lookups,
            })
            .collect();
        nodes.sort_unstable_by_key(|n| n.node.0);
        (nodes, inner.next_id)
    }

    /// Adds a node with its id and lookup count as a migration's source had them (`None`: lost).
    /// The root and ids already present are left alone; new nodes get ids from `next_id` on.
    pub fn restore(&self, node: NodeId, inode: Option<Inode>, lookups: u64, next_id: u64) {
        let mut inner = self.lock();
        if node == NodeId::ROOT || inner.by_id.contains_key(&node.0) || lookups == 0 {
            return;
        }
        if let Some(inode) = &inode {
            inner.by_key.entry(inode.identity()).or_insert(node.0);
        }
        inner.by_id.insert(node.0, Slot { inode: inode.map(Arc::new), lookups });
        inner.next_id = inner.next_id.max(next_id).max(node.0.saturating_add(1));
    }

    /// The inode behind `node`.
    pub fn get(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        match self.lock().by_id.get(&node.0) {
            Some(Slot { inode: Some(inode), .. }) => Ok(Arc::clone(inode)),
            Some(Slot { inode: None, .. }) => Err(Errno::IO),
            None => Err(Errno::BADF),
        }
    }

    /// Records one lookup of `inode`: an existing node for the same host inode gains a reference
    /// (and the new fd is dropped), otherwise a new node is created with one reference.
    pub fn lookup(&self, inode: Inode) -> NodeId {
        let mut inner = self.lock();
        if let Some(node) = inner.add_lookup(inode.identity()) {
            return node;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.by_key.insert(inode.identity(), id);
        inner.by_id.insert(id, Slot { inode: Some(Arc::new(inode)), lookups: 1 });
        NodeId(id)
    }

    /// Records one more lookup of the node that holds the host inode `key` reached through
    /// mount `mnt_id`, if there is one.
    pub fn lookup_known(&self, key: InodeKey, mnt_id: u64) -> Option<NodeId> {
        self.lock().add_lookup((key, mnt_id))
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
            let key = slot.inode.as_ref().map(|inode| inode.identity());
            inner.by_id.remove(&node.0);
            if let Some(key) = key.filter(|key| inner.by_key.get(key) == Some(&node.0)) {
                inner.by_key.remove(&key);
            }
        }
    }

    /// Up to a few inodes on each host device the table holds one on (for opening one of
    /// them), in one pass over the table.
    pub(super) fn by_device(&self) -> std::collections::HashMap<u64, Vec<Arc<Inode>>> {
        let inner = self.lock();
        let mut by_device = std::collections::HashMap::<u64, Vec<Arc<Inode>>>::new();
        for inode in inner.by_id.values().filter_map(|s| s.inode.as_ref()) {
            let some = by_device.entry(inode.key.0).or_default();
            if some.len() < 8 {
                some.push(Arc::clone(inode));
            }
        }
        by_device
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
