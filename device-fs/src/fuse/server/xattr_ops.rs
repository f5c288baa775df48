//! Extended-attribute operations: SETXATTR, GETXATTR, LISTXATTR and REMOVEXATTR.
//!
//! The SETXATTR argument is 16 bytes (with FUSE_SETXATTR_* flags) when SETXATTR_EXT was
//! negotiated and 8 otherwise; everything else is decode, call, encode.

use super::{OpResult, Reply, Request, Server, Session};
use crate::fuse::abi::{GetxattrIn, GetxattrOut, InitFlags, SetxattrIn, SetxattrInCompat};
use crate::fuse::filesystem::FileSystem;
use crate::fuse::types::XattrReply;

fn xattr_reply(r: XattrReply) -> Reply {
    match r {
        XattrReply::Size(size) => Reply::of(&GetxattrOut { size, padding: 0 }),
        XattrReply::Data(data) => Reply::Payload(data),
    }
}

impl<F: FileSystem> Server<F> {
    pub(super) fn do_setxattr(&self, mut req: Request<'_>, session: &Session) -> OpResult {
        let ext = session.flags.is_some_and(|f| f.contains(InitFlags::SETXATTR_EXT));
        let (size, flags, setxattr_flags) = if ext {
            let a: SetxattrIn = req.take()?;
            (a.size, a.flags, a.setxattr_flags)
        } else {
            let a: SetxattrInCompat = req.take()?;
            (a.size, a.flags, 0)
        };
        let name = req.name()?;
        let value = req.bytes(size as usize)?;
        self.fs.setxattr(&req.ctx(), req.node(), name, value, flags, setxattr_flags)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_getxattr(&self, mut req: Request<'_>) -> OpResult {
        let a: GetxattrIn = req.take()?;
        let name = req.name()?;
        self.fs.getxattr(&req.ctx(), req.node(), name, a.size).map(xattr_reply)
    }

    pub(super) fn do_listxattr(&self, mut req: Request<'_>) -> OpResult {
        let a: GetxattrIn = req.take()?;
        self.fs.listxattr(&req.ctx(), req.node(), a.size).map(xattr_reply)
    }

    pub(super) fn do_removexattr(&self, mut req: Request<'_>) -> OpResult {
        let name = req.name()?;
        self.fs.removexattr(&req.ctx(), req.node(), name)?;
        Ok(Reply::empty())
    }
}
