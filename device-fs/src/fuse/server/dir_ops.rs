//! Directory operations: OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR and SYNCFS.
//!
//! READDIR buffers are bounded by the request's `size`, by `max_write` and by the reply's room;
//! the record format is `DirBuffer`'s business.

use super::{OpResult, Reply, Request, Server};
use crate::fuse::abi::{FsyncIn, OpenIn, OpenOut, ReadIn, ReleaseIn, FSYNC_FDATASYNC};
use crate::fuse::dirent::DirBuffer;
use crate::fuse::filesystem::FileSystem;
use crate::fuse::types::Handle;

impl<F: FileSystem> Server<F> {
    pub(super) fn do_opendir(&self, mut req: Request<'_>) -> OpResult {
        let args: OpenIn = req.take()?;
        let o = self.fs.opendir(&req.ctx(), req.node(), args.flags)?;
        Ok(Reply::of(&OpenOut { fh: o.handle.0, open_flags: o.flags, backing_id: 0 }))
    }

    /// READDIR and READDIRPLUS, filling at most `room` bytes (what the reply's buffers hold
    /// after its header): an entry READDIRPLUS took a reference for must reach the guest.
    pub(super) fn do_readdir(&self, mut req: Request<'_>, plus: bool, room: usize) -> OpResult {
        let args: ReadIn = req.take()?;
        let size = (args.size.min(self.config().max_write()) as usize).min(room);
        let mut buf = DirBuffer::new(size);
        let (ctx, node, fh) = (req.ctx(), req.node(), Handle(args.fh));
        if plus {
            self.fs.readdirplus(&ctx, node, fh, args.offset, &mut buf)?;
        } else {
            self.fs.readdir(&ctx, node, fh, args.offset, &mut buf)?;
        }
        Ok(Reply::Payload(buf.bytes().to_vec()))
    }

    pub(super) fn do_releasedir(&self, mut req: Request<'_>) -> OpResult {
        let args: ReleaseIn = req.take()?;
        self.fs.releasedir(&req.ctx(), req.node(), Handle(args.fh))?;
        Ok(Reply::empty())
    }

    pub(super) fn do_fsyncdir(&self, mut req: Request<'_>) -> OpResult {
        let args: FsyncIn = req.take()?;
        let datasync = args.fsync_flags & FSYNC_FDATASYNC != 0;
        self.fs.fsyncdir(&req.ctx(), req.node(), Handle(args.fh), datasync)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_syncfs(&self, req: Request<'_>) -> OpResult {
        self.fs.syncfs(&req.ctx(), req.node())?;
        Ok(Reply::empty())
    }
}
