//! Security labels (`--security-label`, FUSE_SECURITY_CTX): the label the guest's LSM computed
//! for a new inode is stored as the attribute it names (renamed by `--xattrmap` when a map is
//! given) right after the creation, only on an inode this request created. Only LSM label names
//! are taken ([`LABEL_NAMES`]): a guest naming `security.capability` or `trusted.*` would grant
//! host privileges, and is refused with EPERM. A creation whose label cannot be stored is
//! undone (the name removed if it still names that inode, the reference and handle dropped) and
//! fails, so no inode is left unlabelled for the guest to find.

use std::ffi::{CStr, CString};

use rustix::fs::AtFlags;
use rustix::io::Errno;

use super::inodes::Inode;
use super::{proc_path, PassthroughFs};
use crate::fuse::{Context, Entry, FsResult, Handle, NodeId};

/// The attributes Linux security modules label inodes with (SELinux, Smack).
pub(super) const LABEL_NAMES: [&[u8]; 2] = [b"security.selinux", b"security.SMACK64"];

impl PassthroughFs {
    /// Labels the inode `entry` just created as `name` in `parent` (no name: TMPFILE) when
    /// labels were negotiated and the guest sent one; undoes the creation when that fails.
    pub(super) fn labelled(
        &self,
        ctx: &Context,
        parent: NodeId,
        name: Option<&CStr>,
        entry: Entry,
        handle: Option<Handle>,
    ) -> FsResult<Entry> {
        let Some(label) = ctx.security.as_ref().filter(|_| self.labels_on()) else {
            return Ok(entry);
        };
        if name.is_some() && handle.is_none() && !self.made_for(ctx, entry.node) {
            // MKDIR, MKNOD and SYMLINK take their entry by name after creating it: a rename
            // over the name in between hands them someone else's inode, which must get neither
            // the guest's label nor the undo below. What this request made is gone meanwhile.
            self.inodes.forget(entry.node, 1);
            return Err(Errno::NOENT);
        }
        let stored = self.as_daemon(|| {
            if !LABEL_NAMES.contains(&label.name.to_bytes()) {
                return Err(Errno::PERM);
            }
            let host_name = match &self.config.xattrmap {
                Some(map) => {
                    CString::new(map.to_host(label.name.to_bytes())?).map_err(|_| Errno::INVAL)?
                }
                None => label.name.clone(),
            };
            let inode = self.inode(entry.node)?;
            let path = proc_path::through(&self.proc_fd, &inode.fd)?;
            rustix::fs::setxattr(path, &host_name, &label.value, rustix::fs::XattrFlags::empty())
        });
        let Err(error) = stored else { return Ok(entry) };
        // Undone as the daemon: the caller may not be allowed to remove what it just created
        // (a directory in a sticky one, say), and nothing unlabelled may stay.
        let _ = self.as_daemon(|| {
            let (Some(name), Ok(dir), Ok(made)) =
                (name, self.dir_inode(parent), self.inode(entry.node))
            else {
                return Ok(());
            };
            // Only while the name still names the inode made here: another creator's file
            // renamed over it meanwhile stays.
            if !names_inode(&dir, name, &made) {
                return Ok(());
            }
            let flags = if made.is_dir() { AtFlags::REMOVEDIR } else { AtFlags::empty() };
            rustix::fs::unlinkat(&dir.fd, name, flags)
        });
        if let Some(handle) = handle {
            let _ = self.handles.remove(handle, entry.node, false);
        }
        self.inodes.forget(entry.node, 1);
        Err(error)
    }
}

impl PassthroughFs {
    /// Whether the inode of `node` is owned as a creation for `ctx` makes it owned: one swapped
    /// in under the name by another user is not.
    fn made_for(&self, ctx: &Context, node: NodeId) -> bool {
        let Ok(uid) = self.config.uid_map.to_host(ctx.uid) else { return false };
        let Ok(inode) = self.inode(node) else { return false };
        super::attr::stat_fd(&inode.fd)
            .is_ok_and(|st| st.attr.uid == self.config.credentials.creator(uid))
    }
}

/// Whether `name` in `dir` is `inode` right now.
fn names_inode(dir: &Inode, name: &CStr, inode: &Inode) -> bool {
    let flags = AtFlags::SYMLINK_NOFOLLOW;
    rustix::fs::statat(&dir.fd, name, flags).is_ok_and(|st| {
        rustix::fs::makedev(rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev))
            == inode.key.0
            && st.st_ino == inode.key.1
    })
}
