//! Names in the in-memory file system: unlinking, re-parenting, ancestry and rename (with
//! RENAME_NOREPLACE and RENAME_EXCHANGE).

use std::ffi::CStr;

use rustix::io::Errno;
use vhu_device_fs::fuse::{FsResult, NodeId};

use super::{new_name, Kind, Node, State, MAX_NODES, RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT};

impl State {
    /// Whether `ancestor` is `id` or one of its ancestors.
    pub(super) fn is_ancestor(&self, ancestor: u64, mut id: u64) -> bool {
        for _ in 0..=MAX_NODES {
            if id == ancestor {
                return true;
            }
            match self.nodes.get(&id).map(|n| &n.kind) {
                Some(Kind::Dir { parent, .. }) if id != ROOT => id = *parent,
                _ => return false,
            }
        }
        false
    }

    pub(super) fn unlink_name(&mut self, parent: NodeId, name: &[u8]) -> FsResult<()> {
        let id = self.dir_entries_mut(parent)?.remove(name).ok_or(Errno::NOENT)?;
        let clock = self.tick();
        self.node_mut(parent)?.mtime = (clock, 0);
        let n = self.nodes.get_mut(&id).expect("entries name live nodes");
        n.links -= 1;
        self.maybe_drop(id);
        Ok(())
    }

    pub(super) fn set_parent(&mut self, id: u64, new_parent: u64) {
        if let Some(Node { kind: Kind::Dir { parent, .. }, .. }) = self.nodes.get_mut(&id) {
            *parent = new_parent;
        }
    }

    pub(super) fn rename(
        &mut self,
        from: (NodeId, &CStr),
        to: (NodeId, &CStr),
        flags: u32,
    ) -> FsResult<()> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Errno::INVAL);
        }
        let old = new_name(from.1).map_err(|_| Errno::INVAL)?;
        let new = new_name(to.1).map_err(|_| Errno::INVAL)?;
        let src = *self.dir_entries(from.0)?.get(old).ok_or(Errno::NOENT)?;
        let dst = self.live_dir_entries(to.0)?.get(new).copied();
        let src_dir = self.nodes[&src].is_dir();
        if src_dir && self.is_ancestor(src, to.0 .0) {
            return Err(Errno::INVAL);
        }
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Errno::NOENT)?;
            if self.nodes[&dst].is_dir() && self.is_ancestor(dst, from.0 .0) {
                return Err(Errno::INVAL);
            }
            self.dir_entries_mut(from.0)?.insert(old.to_vec(), dst);
            self.dir_entries_mut(to.0)?.insert(new.to_vec(), src);
            self.set_parent(src, to.0 .0);
            self.set_parent(dst, from.0 .0);
            return Ok(());
        }
        if let Some(dst) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Errno::EXIST);
            }
            if dst == src {
                return Ok(());
            }
            match (src_dir, &self.nodes[&dst].kind) {
                (true, Kind::Dir { entries, .. }) if !entries.is_empty() => {
                    return Err(Errno::NOTEMPTY)
                }
                (true, Kind::Dir { .. }) => {}
                (true, _) => return Err(Errno::NOTDIR),
                (false, Kind::Dir { .. }) => return Err(Errno::ISDIR),
                (false, _) => {}
            }
            self.unlink_name(to.0, new)?;
        }
        self.dir_entries_mut(from.0)?.remove(old);
        self.dir_entries_mut(to.0)?.insert(new.to_vec(), src);
        self.set_parent(src, to.0 .0);
        Ok(())
    }
}
