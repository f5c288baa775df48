//! Extended attributes through `/proc/self/fd` entries ([`proc_path`]; the O_PATH fd cannot be
//! used directly).
//!
//! Every kind of inode carries xattrs: the entry's magic link lands on the inode itself, so a
//! symlink's or a device's attributes (an LSM label the guest gave it) are reached without opening
//! or following anything, and a FIFO is never opened. With xattrs disabled every operation answers
//! ENOSYS so the guest stops asking. Each call holds the inode it works on for its whole duration,
//! so a concurrent FORGET cannot close the fd and let its number name another file midway. Names go
//! through `--xattrmap` when one is given ([`super::xattrmap`]); without one, the guest may not
//! write or remove `trusted.*` and `security.*` attributes: on the host they would grant privileges
//! (file capabilities, LSM labels, overlayfs metadata), so they are refused with EPERM rather than
//! written raw. A map that lets them through is the operator's explicit wish.

use std::ffi::{CStr, CString};
use std::sync::Arc;

use rustix::fs::XattrFlags;
use rustix::io::Errno;

use super::inodes::Inode;
use super::{proc_path, PassthroughFs};
use crate::fuse::{NodeId, XattrReply};

/// Largest value or list accepted (`XATTR_SIZE_MAX`).
const XATTR_SIZE_MAX: u32 = 65536;

/// Name spaces the guest may read but never write on the host.
const PROTECTED: [&[u8]; 2] = [b"trusted.", b"security."];

/// The `/proc/self/fd` entry of an inode, valid on this thread while the inode is held.
struct Target {
    path: String,
    /// Keeps the fd (and so its number) open until the call is done.
    _inode: Arc<Inode>,
}

/// The one protected attribute the guest may remove: a file capability. Removing it only takes
/// privilege away, and the guest kernel removes it before a write, truncation or change of
/// owner by a caller that may not keep it (`cap_inode_killpriv`), which would fail otherwise.
const REMOVABLE: &[u8] = b"security.capability";

/// Refuses a write or removal of a protected attribute.
fn writable(name: &CStr) -> Result<(), Errno> {
    let name = name.to_bytes();
    if PROTECTED.iter().any(|p| name.starts_with(p)) {
        return Err(Errno::PERM);
    }
    Ok(())
}

impl PassthroughFs {
    /// The host name of a guest attribute name, for reading (`write` false) or changing it.
    fn host_xattr_name(&self, name: &CStr, write: bool) -> Result<CString, Errno> {
        let Some(map) = &self.config.xattrmap else {
            if write {
                writable(name)?;
            }
            return Ok(name.to_owned());
        };
        // Mapped names are built from the guest's name and the map's prefixes: no NUL inside.
        CString::new(map.to_host(name.to_bytes())?).map_err(|_| Errno::INVAL)
    }

    fn xattr_target(&self, node: NodeId) -> Result<Target, Errno> {
        if !self.config.xattr && self.config.posix_acl == super::Negotiation::Never {
            return Err(Errno::NOSYS);
        }
        let inode = self.inode(node)?;
        let path = proc_path::through(&self.proc_fd, &inode.fd)?;
        Ok(Target { path, _inode: inode })
    }

    pub(super) fn do_setxattr(
        &self,
        node: NodeId,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> Result<(), Errno> {
        let target = self.xattr_target(node)?;
        let name = self.host_xattr_name(name, true)?;
        let flags = XattrFlags::from_bits(flags).ok_or(Errno::INVAL)?;
        rustix::fs::setxattr(&target.path, &name, value, flags)
    }

    pub(super) fn do_getxattr(
        &self,
        node: NodeId,
        name: &CStr,
        size: u32,
    ) -> Result<XattrReply, Errno> {
        let target = self.xattr_target(node)?;
        let path = &target.path;
        // A name the map refuses has no attribute to read (virtiofsd answers the same).
        let name = self.host_xattr_name(name, false).map_err(|e| match e {
            Errno::PERM => Errno::NODATA,
            e => e,
        })?;
        let name = &*name;
        if size == 0 {
            let n = rustix::fs::getxattr_query(path, name)?;
            return Ok(XattrReply::Size(u32::try_from(n).map_err(|_| Errno::RANGE)?));
        }
        let mut buf = vec![0u8; size.min(XATTR_SIZE_MAX) as usize];
        let n = rustix::fs::getxattr(path, name, &mut buf[..])?;
        buf.truncate(n);
        Ok(XattrReply::Data(buf))
    }

    pub(super) fn do_listxattr(&self, node: NodeId, size: u32) -> Result<XattrReply, Errno> {
        let target = self.xattr_target(node)?;
        let path = &target.path;
        let Some(map) = &self.config.xattrmap else {
            if size == 0 {
                let n = rustix::fs::listxattr_query(path)?;
                return Ok(XattrReply::Size(u32::try_from(n).map_err(|_| Errno::RANGE)?));
            }
            let mut buf = vec![0u8; size.min(XATTR_SIZE_MAX) as usize];
            let n = rustix::fs::listxattr(path, &mut buf[..])?;
            buf.truncate(n);
            return Ok(XattrReply::Data(buf));
        };
        // Mapped names differ in length: the guest's list is built from the whole host list.
        let mut host = vec![0u8; XATTR_SIZE_MAX as usize];
        let n = rustix::fs::listxattr(path, &mut host[..])?;
        let mut list = Vec::new();
        for name in host[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if let Some(shown) = map.to_guest(name).filter(|s| !s.is_empty()) {
                list.extend_from_slice(shown);
                list.push(0);
            }
        }
        let len = u32::try_from(list.len()).map_err(|_| Errno::RANGE)?;
        match size {
            0 => Ok(XattrReply::Size(len)),
            s if s < len => Err(Errno::RANGE),
            _ => Ok(XattrReply::Data(list)),
        }
    }

    pub(super) fn do_removexattr(&self, node: NodeId, name: &CStr) -> Result<(), Errno> {
        let target = self.xattr_target(node)?;
        let removable = self.config.xattrmap.is_none() && name.to_bytes() == REMOVABLE;
        let name = self.host_xattr_name(name, !removable)?;
        rustix::fs::removexattr(&target.path, &name)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::fuse::{Context, FileSystem};
    use crate::passthrough::Config;

    /// Deterministic form of the two-queue race: a FORGET between taking the target and the
    /// syscall must not let the path name another file.
    #[test]
    fn a_target_keeps_its_inode_through_a_forget() {
        let dir = std::env::temp_dir().join(format!("vhu-xattr-keep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("victim"), b"v").expect("write");
        std::fs::write(dir.join("other"), b"o").expect("write");
        let victim = std::fs::metadata(dir.join("victim")).expect("stat").ino();
        let mut config = Config::new(&dir);
        config.xattr = true;
        let fs = PassthroughFs::new(config).expect("passthrough");
        let entry = fs.lookup(&Context::default(), NodeId::ROOT, c"victim").expect("lookup");
        let target = fs.xattr_target(entry.node).expect("target");
        fs.forget(entry.node, 1);
        assert_eq!(fs.inodes().lookups(entry.node), None, "the node is gone");
        // Files opened now take the lowest free descriptor numbers.
        let others: Vec<std::fs::File> =
            (0..8).map(|_| std::fs::File::open(dir.join("other")).expect("open")).collect();
        let through = std::fs::metadata(&target.path).expect("stat through the target").ino();
        assert_eq!(through, victim, "the target still names the victim");
        drop((others, target, fs));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
