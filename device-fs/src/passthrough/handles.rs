//! Open file and directory handles: `fh` ↔ a real (non-O_PATH) host fd.
//!
//! A handle remembers which node it was opened for, so a request naming another node is refused.
//! Directory handles carry a lock because listing moves the fd's offset. No I/O beyond holding fds.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::io::Errno;

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
    /// Whether the fd was opened with O_DIRECT (its I/O needs aligned buffers).
    pub direct: bool,
    /// Serialises seek + getdents on a directory handle.
    pub dir_lock: Mutex<()>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<u64, Arc<HandleData>>,
    next: u64,
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

    /// Stores `fd` and returns its new handle.
    pub fn insert(&self, fd: OwnedFd, node: NodeId, is_dir: bool) -> Handle {
        let direct = !is_dir
            && rustix::fs::fcntl_getfl(&fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::DIRECT));
        let data = HandleData { fd, node, is_dir, direct, dir_lock: Mutex::new(()) };
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.map.insert(id, Arc::new(data));
        Handle(id)
    }

    /// The handle `h`, which must belong to `node` and be of the right kind.
    pub fn get(&self, h: Handle, node: NodeId, is_dir: bool) -> Result<Arc<HandleData>, Errno> {
        let data = self.lock().map.get(&h.0).cloned().ok_or(Errno::BADF)?;
        if data.node != node || data.is_dir != is_dir {
            return Err(Errno::BADF);
        }
        Ok(data)
    }

    /// Removes `h` (its fd closes once no request still uses it).
    pub fn remove(&self, h: Handle, node: NodeId, is_dir: bool) -> Result<(), Errno> {
        let mut inner = self.lock();
        match inner.map.get(&h.0) {
            Some(d) if d.node == node && d.is_dir == is_dir => {
                inner.map.remove(&h.0);
                Ok(())
            }
            _ => Err(Errno::BADF),
        }
    }

    /// Drops every handle.
    pub fn clear(&self) {
        self.lock().map.clear();
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.lock().map.is_empty()
    }
}
