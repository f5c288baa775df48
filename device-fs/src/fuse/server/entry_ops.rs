//! Namespace and attribute operations: LOOKUP, FORGET, BATCH_FORGET, GETATTR, SETATTR, READLINK,
//! SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, RENAME2, LINK and STATFS.
//!
//! Each function decodes its arguments, calls the file system and encodes the reply; none of them
//! interprets names (the file system validates them).

use zerocopy::FromBytes;

use super::{OpResult, Reply, Request, Server};
use crate::fuse::abi::{
    BatchForgetIn, ForgetIn, ForgetOne, GetattrIn, LinkIn, MkdirIn, MknodIn, Rename2In, RenameIn,
    SetattrIn, StatxIn, StatxOut, GETATTR_FH,
};
use crate::fuse::filesystem::FileSystem;
use crate::fuse::types::{Entry, Handle, NodeId, SetAttr};

#[inline]
fn entry(e: Entry) -> Reply {
    Reply::of(&e.to_wire())
}

impl<F: FileSystem> Server<F> {
    pub(super) fn do_lookup(&self, mut req: Request<'_>) -> OpResult {
        let name = req.name()?;
        // Built in the result's place: through `map` the reply was copied into it.
        let found = self.fs.lookup(&req.ctx(), req.node(), name)?;
        Ok(entry(found))
    }

    pub(super) fn do_forget(&self, mut req: Request<'_>) -> OpResult {
        if let Ok(f) = req.take::<ForgetIn>() {
            self.fs.forget(req.node(), f.nlookup);
        }
        Ok(Reply::None)
    }

    pub(super) fn do_batch_forget(&self, mut req: Request<'_>) -> OpResult {
        let Ok(batch) = req.take::<BatchForgetIn>() else {
            return Ok(Reply::None);
        };
        // Only as many entries as are really present, whatever `count` claims.
        let items: Vec<(NodeId, u64)> = req
            .rest()
            .chunks_exact(size_of::<ForgetOne>())
            .take(batch.count as usize)
            .filter_map(|raw| ForgetOne::read_from_bytes(raw).ok())
            .map(|one| (NodeId(one.nodeid), one.nlookup))
            .collect();
        self.fs.batch_forget(&items);
        Ok(Reply::None)
    }

    pub(super) fn do_getattr(&self, mut req: Request<'_>) -> OpResult {
        let args: GetattrIn = req.take()?;
        let handle = (args.getattr_flags & GETATTR_FH != 0).then_some(Handle(args.fh));
        let attr = self.fs.getattr(&req.ctx(), req.node(), handle)?;
        Ok(Reply::of(&attr.to_wire()))
    }

    pub(super) fn do_statx(&self, mut req: Request<'_>) -> OpResult {
        let args: StatxIn = req.take()?;
        let handle = (args.getattr_flags & GETATTR_FH != 0).then_some(Handle(args.fh));
        let (stat, timeout) =
            self.fs.statx(&req.ctx(), req.node(), handle, args.sx_flags, args.sx_mask)?;
        Ok(Reply::of(&StatxOut {
            attr_valid: timeout.as_secs(),
            attr_valid_nsec: timeout.subsec_nanos(),
            stat,
            ..StatxOut::default()
        }))
    }

    pub(super) fn do_setattr(&self, mut req: Request<'_>) -> OpResult {
        let args: SetattrIn = req.take()?;
        let set = SetAttr::from_wire(&args);
        let attr = self.fs.setattr(&req.ctx(), req.node(), &set)?;
        Ok(Reply::of(&attr.to_wire()))
    }

    pub(super) fn do_readlink(&self, req: Request<'_>) -> OpResult {
        self.fs.readlink(&req.ctx(), req.node()).map(Reply::Payload)
    }

    pub(super) fn do_symlink(&self, mut req: Request<'_>) -> OpResult {
        let name = req.name()?;
        let target = req.name()?;
        self.creation_security(&mut req)?;
        self.fs.symlink(&req.ctx(), target, req.node(), name).map(entry)
    }

    pub(super) fn do_mknod(&self, mut req: Request<'_>) -> OpResult {
        let args: MknodIn = req.take()?;
        let name = req.name()?;
        self.creation_security(&mut req)?;
        self.fs.mknod(&req.ctx(), req.node(), name, args.mode, args.rdev, args.umask).map(entry)
    }

    pub(super) fn do_mkdir(&self, mut req: Request<'_>) -> OpResult {
        let args: MkdirIn = req.take()?;
        let name = req.name()?;
        self.creation_security(&mut req)?;
        self.fs.mkdir(&req.ctx(), req.node(), name, args.mode, args.umask).map(entry)
    }

    pub(super) fn do_unlink(&self, mut req: Request<'_>) -> OpResult {
        let name = req.name()?;
        self.fs.unlink(&req.ctx(), req.node(), name)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_rmdir(&self, mut req: Request<'_>) -> OpResult {
        let name = req.name()?;
        self.fs.rmdir(&req.ctx(), req.node(), name)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_rename(&self, mut req: Request<'_>) -> OpResult {
        let args: RenameIn = req.take()?;
        self.rename_common(req, args.newdir, 0)
    }

    pub(super) fn do_rename2(&self, mut req: Request<'_>) -> OpResult {
        let args: Rename2In = req.take()?;
        self.rename_common(req, args.newdir, args.flags)
    }

    fn rename_common(&self, mut req: Request<'_>, newdir: u64, flags: u32) -> OpResult {
        let old = req.name()?;
        let new = req.name()?;
        self.fs.rename(&req.ctx(), (req.node(), old), (NodeId(newdir), new), flags)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_link(&self, mut req: Request<'_>) -> OpResult {
        let args: LinkIn = req.take()?;
        let name = req.name()?;
        self.fs.link(&req.ctx(), NodeId(args.oldnodeid), req.node(), name).map(entry)
    }

    pub(super) fn do_statfs(&self, req: Request<'_>) -> OpResult {
        let st = self.fs.statfs(&req.ctx(), req.node())?;
        Ok(Reply::of(&st))
    }
}
