//! Namespace operations: READLINK, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME(2), LINK.
//!
//! Every name is validated and used only relative to its parent's O_PATH fd; a created entry is
//! looked up again without following symlinks to take its reference.

use std::ffi::CStr;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, Uid};
use rustix::io::Errno;

use super::attr::decode_dev;
use super::names::validate;
use super::PassthroughFs;
use crate::fuse::{Entry, NodeId};

impl PassthroughFs {
    pub(super) fn do_readlink(&self, node: NodeId) -> Result<Vec<u8>, Errno> {
        let inode = self.inode(node)?;
        if inode.kind != super::inodes::S_IFLNK {
            return Err(Errno::INVAL);
        }
        let target = rustix::fs::readlinkat(&inode.fd, c"", Vec::new())?;
        Ok(target.into_bytes())
    }

    pub(super) fn do_symlink(
        &self,
        target: &CStr,
        parent: NodeId,
        name: &CStr,
    ) -> Result<Entry, Errno> {
        let name = validate(name)?;
        let dir = self.dir_inode(parent)?;
        self.check_open_budget()?;
        // The target is stored as text and resolved only by the guest, never by us.
        rustix::fs::symlinkat(target, &dir.fd, name)?;
        self.open_made(&dir, name)
    }

    pub(super) fn do_mknod(
        &self,
        parent: NodeId,
        name: &CStr,
        mode: u32,
        rdev: u32,
    ) -> Result<Entry, Errno> {
        let name = validate(name)?;
        let dir = self.dir_inode(parent)?;
        self.check_open_budget()?;
        let (major, minor) = decode_dev(rdev);
        rustix::fs::mknodat(
            &dir.fd,
            name,
            FileType::from_raw_mode(mode),
            Mode::from_raw_mode(mode),
            rustix::fs::makedev(major, minor),
        )?;
        self.open_made(&dir, name)
    }

    pub(super) fn do_mkdir(&self, parent: NodeId, name: &CStr, mode: u32) -> Result<Entry, Errno> {
        let name = validate(name)?;
        let dir = self.dir_inode(parent)?;
        self.check_open_budget()?;
        rustix::fs::mkdirat(&dir.fd, name, Mode::from_raw_mode(mode))?;
        self.open_made(&dir, name)
    }

    pub(super) fn do_unlink(&self, parent: NodeId, name: &CStr, dir: bool) -> Result<(), Errno> {
        let name = validate(name)?;
        let parent = self.dir_inode(parent)?;
        let flags = if dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        rustix::fs::unlinkat(&parent.fd, name, flags)
    }

    pub(super) fn do_rename(
        &self,
        (from_dir, from_name): (NodeId, &CStr),
        (to_dir, to_name): (NodeId, &CStr),
        flags: u32,
    ) -> Result<(), Errno> {
        let flags = RenameFlags::from_bits(flags).ok_or(Errno::INVAL)?;
        let (from_name, to_name) = (validate(from_name)?, validate(to_name)?);
        let from = self.dir_inode(from_dir)?;
        let to = self.dir_inode(to_dir)?;
        rustix::fs::renameat_with(&from.fd, from_name, &to.fd, to_name, flags)
    }

    /// Gives the whiteout a RENAME_WHITEOUT left at `from`'s name to `owner` (host ids), as a
    /// local file system makes it the renamer's (an overlayfs upper layer on the share whose
    /// mounter is not root); the rename itself runs as the daemon. Only the inode found there
    /// is changed, and only if it is a whiteout (a character device 0:0). The rename is done
    /// whatever happens here, so a failure is a warning.
    pub(super) fn own_whiteout(&self, (dir, name): (NodeId, &CStr), (uid, gid): (u32, u32)) {
        let give = || {
            let dir = self.dir_inode(dir)?;
            let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(&dir.fd, validate(name)?, flags, Mode::empty())?;
            let st = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::CharacterDevice || st.st_rdev != 0 {
                return Ok(());
            }
            // In a set-group-ID directory the whiteout took the directory's group, as a local
            // one would; only its owner is the caller's then.
            let inherits = rustix::fs::fstat(&dir.fd)?.st_mode & libc::S_ISGID != 0;
            let gid = (!inherits).then(|| Gid::from_raw(gid));
            let uid = Some(Uid::from_raw(uid));
            rustix::fs::chownat(&fd, c"", uid, gid, AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)
        };
        if let Err(errno) = give() {
            log::warn!("RENAME_WHITEOUT: the whiteout stays the daemon's: {errno}");
        }
    }

    pub(super) fn do_link(
        &self,
        node: NodeId,
        parent: NodeId,
        name: &CStr,
    ) -> Result<Entry, Errno> {
        let name = validate(name)?;
        let inode = self.inode(node)?;
        if inode.is_dir() {
            return Err(Errno::PERM);
        }
        let dir = self.dir_inode(parent)?;
        self.check_open_budget()?;
        // Linking an O_PATH fd by its /proc entry needs no CAP_DAC_READ_SEARCH; the magic link
        // names the inode itself, so nothing is resolved by path.
        rustix::fs::linkat(
            &self.proc_fd,
            Self::proc_name(&inode),
            &dir.fd,
            name,
            AtFlags::SYMLINK_FOLLOW,
        )?;
        self.open_made(&dir, name)
    }
}
