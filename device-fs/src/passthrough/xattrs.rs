//! Extended attributes through `/proc/self/fd/N` paths (the O_PATH fd cannot be used directly).
//!
//! Only regular files and directories carry xattrs here; with xattrs disabled every operation
//! answers ENOSYS so the guest stops asking.

use std::ffi::CStr;

use rustix::fs::XattrFlags;
use rustix::io::Errno;

use super::inodes::{Inode, S_IFDIR, S_IFREG};
use super::PassthroughFs;
use crate::fuse::{NodeId, XattrReply};

/// Largest value or list accepted (`XATTR_SIZE_MAX`).
const XATTR_SIZE_MAX: u32 = 65536;

impl PassthroughFs {
    fn xattr_path(&self, node: NodeId) -> Result<String, Errno> {
        if !self.config.xattr {
            return Err(Errno::NOSYS);
        }
        let inode: std::sync::Arc<Inode> = self.inode(node)?;
        match inode.kind {
            S_IFREG | S_IFDIR => Ok(format!("/proc/self/fd/{}", Self::proc_name(&inode))),
            _ => Err(Errno::OPNOTSUPP),
        }
    }

    pub(super) fn do_setxattr(
        &self,
        node: NodeId,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> Result<(), Errno> {
        let path = self.xattr_path(node)?;
        let flags = XattrFlags::from_bits(flags).ok_or(Errno::INVAL)?;
        rustix::fs::setxattr(path, name, value, flags)
    }

    pub(super) fn do_getxattr(
        &self,
        node: NodeId,
        name: &CStr,
        size: u32,
    ) -> Result<XattrReply, Errno> {
        let path = self.xattr_path(node)?;
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
        let path = self.xattr_path(node)?;
        if size == 0 {
            let n = rustix::fs::listxattr_query(path)?;
            return Ok(XattrReply::Size(u32::try_from(n).map_err(|_| Errno::RANGE)?));
        }
        let mut buf = vec![0u8; size.min(XATTR_SIZE_MAX) as usize];
        let n = rustix::fs::listxattr(path, &mut buf[..])?;
        buf.truncate(n);
        Ok(XattrReply::Data(buf))
    }

    pub(super) fn do_removexattr(&self, node: NodeId, name: &CStr) -> Result<(), Errno> {
        let path = self.xattr_path(node)?;
        rustix::fs::removexattr(path, name)
    }
}
