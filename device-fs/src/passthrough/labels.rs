//! Security labels (`--security-label`, FUSE_SECURITY_CTX): the label the guest's LSM computed
//! for a new inode is stored as the attribute it names (`security.selinux`, say; renamed by
//! `--xattrmap` when a map is given) right after the creation. A creation whose label cannot be
//! stored is undone (the name removed, the reference and handle dropped) and fails, so no inode
//! is left unlabelled for the guest to find.

use std::ffi::{CStr, CString};

use rustix::fs::AtFlags;
use rustix::io::Errno;

use super::PassthroughFs;
use crate::fuse::{Context, Entry, FsResult, Handle, NodeId};

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
        let stored = self.as_daemon(|| {
            let host_name = match &self.config.xattrmap {
                Some(map) => {
                    CString::new(map.to_host(label.name.to_bytes())?).map_err(|_| Errno::INVAL)?
                }
                None => label.name.clone(),
            };
            let inode = self.inode(entry.node)?;
            let path = format!("/proc/self/fd/{}", Self::proc_name(&inode));
            rustix::fs::setxattr(path, &host_name, &label.value, rustix::fs::XattrFlags::empty())
        });
        let Err(error) = stored else { return Ok(entry) };
        // Undone as the daemon: the caller may not be allowed to remove what it just created
        // (a directory in a sticky one, say), and nothing unlabelled may stay.
        let _ = self.as_daemon(|| {
            if let (Some(name), Ok(dir)) = (name, self.dir_inode(parent)) {
                let flags = if entry.attr.mode & 0o170000 == 0o040000 {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rustix::fs::unlinkat(&dir.fd, name, flags)?;
            }
            Ok(())
        });
        if let Some(handle) = handle {
            let _ = self.handles.remove(handle, entry.node, false);
        }
        self.inodes.forget(entry.node, 1);
        Err(error)
    }
}
