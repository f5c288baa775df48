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
//! written raw. A map that lets them through is the operator's explicit wish. With uid/gid
//! translation (`--translate-uid`/`--translate-gid`) POSIX ACL attributes are refused
//! (EOPNOTSUPP) and left out of lists: their entries name ids the translation never sees, so a
//! guest could grant host ids it may not own files as, and would read host ids raw.
//!
//! POSIX ACL attributes pass only while the guest took FUSE_POSIX_ACL: without it Linux still
//! forwards them as plain attributes (whatever its version) but neither checks who sets them
//! before 6.2 nor enforces them, so a guest user could set an ACL on another user's file, which
//! the host would apply as the daemon and reflect in the file's mode. They are refused
//! (EOPNOTSUPP) and left out of lists then, by the guest's name, whatever a map makes of it.

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

/// POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`): entries hold ids.
const ACL_PREFIX: &[u8] = b"system.posix_acl_";

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
        if self.acls_hidden() && name.to_bytes().starts_with(ACL_PREFIX) {
            return Err(Errno::OPNOTSUPP);
        }
        let host = match &self.config.xattrmap {
            None => {
                if write {
                    writable(name)?;
                }
                name.to_owned()
            }
            // Mapped names are built from the guest's name and the map's prefixes: no NUL inside.
            Some(map) => CString::new(map.to_host(name.to_bytes())?).map_err(|_| Errno::INVAL)?,
        };
        // The host's ACLs hold host ids (a map that stores the guest's ACLs under another name
        // keeps guest ids, which need no translation).
        if self.ids_translated() && host.to_bytes().starts_with(ACL_PREFIX) {
            return Err(Errno::OPNOTSUPP);
        }
        Ok(host)
    }

    /// Whether the guest's ACL attributes are refused: it did not take FUSE_POSIX_ACL.
    fn acls_hidden(&self) -> bool {
        !self.acl_on.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether guest and host ids differ (`--translate-uid`/`--translate-gid`).
    fn ids_translated(&self) -> bool {
        !(self.config.uid_map.is_identity() && self.config.gid_map.is_identity())
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
        let hide_acls = self.ids_translated();
        let hide_guest_acls = self.acls_hidden();
        let map = self.config.xattrmap.as_ref();
        if map.is_none() && !hide_acls && !hide_guest_acls {
            if size == 0 {
                let n = rustix::fs::listxattr_query(path)?;
                return Ok(XattrReply::Size(u32::try_from(n).map_err(|_| Errno::RANGE)?));
            }
            let mut buf = vec![0u8; size.min(XATTR_SIZE_MAX) as usize];
            let n = rustix::fs::listxattr(path, &mut buf[..])?;
            buf.truncate(n);
            return Ok(XattrReply::Data(buf));
        }
        // Mapped or hidden names change the list's length: it is built from the whole host list.
        let mut host = vec![0u8; XATTR_SIZE_MAX as usize];
        let n = rustix::fs::listxattr(path, &mut host[..])?;
        let mut list = Vec::new();
        for name in host[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if hide_acls && name.starts_with(ACL_PREFIX) {
                continue;
            }
            let shown = match map {
                Some(map) => map.to_guest(name),
                None => Some(name),
            };
            let shown = shown.filter(|s| !(hide_guest_acls && s.starts_with(ACL_PREFIX)));
            if let Some(shown) = shown.filter(|s| !s.is_empty()) {
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

    /// With uid translation, ACLs (whose entries hold untranslated ids) are neither read,
    /// listed nor written; without it they pass as any attribute.
    #[test]
    fn acls_are_refused_under_id_translation() {
        // A valid access ACL: version 2; owner rw-, user 1000 r--, group r--, mask r--, other r--.
        let entry = |tag: u16, perm: u16, id: u32| {
            [tag.to_le_bytes().as_slice(), &perm.to_le_bytes(), &id.to_le_bytes()].concat()
        };
        let acl = [
            2u32.to_le_bytes().to_vec(),
            entry(0x01, 6, u32::MAX),
            entry(0x02, 4, 1000),
            entry(0x04, 4, u32::MAX),
            entry(0x10, 4, u32::MAX),
            entry(0x20, 4, u32::MAX),
        ]
        .concat();
        let name = c"system.posix_acl_access";
        for translated in [false, true] {
            let dir = std::env::temp_dir()
                .join(format!("vhu-xattr-acl-{}-{translated}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            std::fs::write(dir.join("f"), b"f").expect("write");
            if rustix::fs::setxattr(dir.join("f"), name, &acl, XattrFlags::empty()).is_err() {
                // A host file system without ACLs: nothing to hide (CI's has them).
                assert!(std::env::var_os("CI").is_none(), "no ACLs on {}", dir.display());
                let _ = std::fs::remove_dir_all(&dir);
                return;
            }
            let mut config = Config::new(&dir);
            config.xattr = true;
            if translated {
                let rules = ["map:1000:201000:100".parse().expect("rule")];
                config.uid_map = crate::passthrough::IdMap::new(&rules).expect("map");
            }
            let fs = PassthroughFs::new(config).expect("passthrough");
            // As a guest that took FUSE_POSIX_ACL.
            fs.acl_on.store(true, std::sync::atomic::Ordering::Relaxed);
            let ctx = Context::default();
            let node = fs.lookup(&ctx, NodeId::ROOT, c"f").expect("lookup").node;
            let read = fs.getxattr(&ctx, node, name, 4096);
            let listed = match fs.listxattr(&ctx, node, 4096).expect("list") {
                XattrReply::Data(list) => list.split(|b| *b == 0).any(|n| n == name.to_bytes()),
                XattrReply::Size(_) => unreachable!("a size was given"),
            };
            let written = fs.setxattr(&ctx, node, name, &acl, 0, 0);
            if translated {
                assert_eq!(read.err(), Some(Errno::OPNOTSUPP));
                assert!(!listed, "hidden from the list");
                assert_eq!(written, Err(Errno::OPNOTSUPP));
            } else {
                assert!(matches!(read, Ok(XattrReply::Data(ref v)) if *v == acl), "{read:?}");
                assert!(listed);
                assert_eq!(written, Ok(()));
            }
            drop(fs);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A map that stores the guest's ACLs under another name keeps them in guest ids: with
    /// translation they are still written and read back as the guest wrote them.
    #[test]
    fn acls_stored_under_a_mapped_name_pass_under_translation() {
        let dir = std::env::temp_dir().join(format!("vhu-xattr-acl-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("f"), b"f").expect("write");
        let mut config = Config::new(&dir);
        config.xattr = true;
        config.xattrmap = Some(":map::user.virtiofs.:".parse().expect("map"));
        config.uid_map =
            crate::passthrough::IdMap::new(&["map:1000:201000:100".parse().expect("rule")])
                .expect("map");
        let fs = PassthroughFs::new(config).expect("passthrough");
        fs.acl_on.store(true, std::sync::atomic::Ordering::Relaxed);
        let ctx = Context::default();
        let node = fs.lookup(&ctx, NodeId::ROOT, c"f").expect("lookup").node;
        let (name, value) = (c"system.posix_acl_access", b"opaque to the host".as_slice());
        if rustix::fs::setxattr(dir.join("f"), c"user.probe", b"", XattrFlags::empty()).is_err() {
            // A host file system without user attributes (tmpfs before 6.6; CI's has them).
            assert!(std::env::var_os("CI").is_none(), "no user xattrs on {}", dir.display());
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        assert_eq!(fs.setxattr(&ctx, node, name, value, 0, 0), Ok(()));
        let read = fs.getxattr(&ctx, node, name, 4096);
        assert!(matches!(read, Ok(XattrReply::Data(ref v)) if v == value), "{read:?}");
        drop(fs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
