//! File I/O operations: OPEN, READ, WRITE, RELEASE, FSYNC, FLUSH, CREATE, TMPFILE, ACCESS,
//! FALLOCATE, LSEEK and COPY_FILE_RANGE.
//!
//! Each function decodes, calls the file system and encodes; READ sizes are clamped to `max_write`.

use rustix::io::Errno;

use super::{OpResult, Reply, Request, Server};
use crate::fuse::abi::{
    AccessIn, CopyFileRangeIn, CreateIn, EntryOut, FallocateIn, FlushIn, FsyncIn, LseekIn,
    LseekOut, OpenIn, OpenOut, OutHeader, ReadIn, ReleaseIn, WriteIn, WriteOut, FSYNC_FDATASYNC,
};
use crate::fuse::filesystem::FileSystem;
use crate::fuse::io::{ReplyTarget, ReplyWriter, RequestReader, RequestSource};
use crate::fuse::types::{CopyRange, Entry, Handle, NodeId, Opened, WriteFlags};
use zerocopy::IntoBytes;

fn open_out(o: Opened) -> OpenOut {
    OpenOut { fh: o.handle.0, open_flags: o.flags, backing_id: 0 }
}

/// The CREATE / TMPFILE reply: `fuse_entry_out` then `fuse_open_out`.
fn entry_and_open((entry, opened): (Entry, Opened)) -> Reply {
    let entry_out: EntryOut = entry.to_wire();
    Reply::of_parts(&[entry_out.as_bytes(), open_out(opened).as_bytes()])
}

fn write_out(n: usize) -> Result<Reply, Errno> {
    let size = u32::try_from(n).map_err(|_| Errno::OVERFLOW)?;
    Ok(Reply::of(&WriteOut { size, padding: 0 }))
}

impl<F: FileSystem> Server<F> {
    pub(super) fn do_open(&self, mut req: Request<'_>) -> OpResult {
        let args: OpenIn = req.take()?;
        // O_ACCMODE other than O_RDONLY, or O_TRUNC, would change the file.
        if self.config.read_only && (args.flags & 0o3 != 0 || args.flags & 0o1000 != 0) {
            return Err(Errno::ROFS);
        }
        let opened = self.fs.open(&req.ctx(), req.node(), args.flags, args.open_flags)?;
        Ok(Reply::of(&open_out(opened)))
    }

    /// READ: the data goes from the file straight into the reply's buffers, behind the header
    /// written once its length is known.
    pub(super) fn do_read(&self, mut req: Request<'_>, writer: &mut dyn ReplyWriter) -> OpResult {
        let args: ReadIn = req.take()?;
        let header = size_of::<OutHeader>();
        let room = writer.remaining().saturating_sub(header);
        let size = (args.size.min(self.config().max_read()) as usize).min(room);
        let mut target = ReplyTarget { writer, skip: header, len: size };
        let (ctx, node, fh) = (req.ctx(), req.node(), Handle(args.fh));
        let n = self.fs.read(&ctx, node, fh, args.offset, args.flags, &mut target)?;
        Ok(Reply::Placed(n.min(size)))
    }

    /// WRITE: the data goes from the request's buffers straight to the file when it was left
    /// there (`unread` bytes of it), else from the body.
    pub(super) fn do_write(
        &self,
        mut req: Request<'_>,
        reader: &mut dyn RequestReader,
        unread: Option<usize>,
    ) -> OpResult {
        let args: WriteIn = req.take()?;
        let size = args.size as usize;
        let (ctx, node, fh) = (req.ctx(), req.node(), Handle(args.fh));
        let flags = WriteFlags { write: args.write_flags, file: args.flags };
        let n = match unread {
            Some(unread) => {
                // The header's length must account for exactly the data announced.
                if size != unread {
                    return Err(Errno::INVAL);
                }
                let mut source = RequestSource { reader, len: size };
                self.fs.write(&ctx, node, fh, args.offset, &mut source, flags)?
            }
            None => {
                let mut data = req.bytes(size)?;
                self.fs.write(&ctx, node, fh, args.offset, &mut data, flags)?
            }
        };
        write_out(n)
    }

    pub(super) fn do_release(&self, mut req: Request<'_>) -> OpResult {
        let args: ReleaseIn = req.take()?;
        let (fh, flags) = (Handle(args.fh), args.flags);
        self.fs.release(&req.ctx(), req.node(), fh, flags, args.release_flags, args.lock_owner)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_fsync(&self, mut req: Request<'_>) -> OpResult {
        let args: FsyncIn = req.take()?;
        let datasync = args.fsync_flags & FSYNC_FDATASYNC != 0;
        self.fs.fsync(&req.ctx(), req.node(), Handle(args.fh), datasync)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_flush(&self, mut req: Request<'_>) -> OpResult {
        let args: FlushIn = req.take()?;
        self.fs.flush(&req.ctx(), req.node(), Handle(args.fh), args.lock_owner)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_create(&self, mut req: Request<'_>) -> OpResult {
        let args: CreateIn = req.take()?;
        let name = req.name()?;
        self.creation_security(&mut req)?;
        let created = self.fs.create(&req.ctx(), req.node(), name, &args)?;
        Ok(entry_and_open(created))
    }

    pub(super) fn do_tmpfile(&self, mut req: Request<'_>) -> OpResult {
        let args: CreateIn = req.take()?;
        // The kernel sends the name of the dentry it made up; the file gets none.
        req.name()?;
        self.creation_security(&mut req)?;
        let created = self.fs.tmpfile(&req.ctx(), req.node(), args.mode, args.flags, args.umask)?;
        Ok(entry_and_open(created))
    }

    pub(super) fn do_access(&self, mut req: Request<'_>) -> OpResult {
        let args: AccessIn = req.take()?;
        self.fs.access(&req.ctx(), req.node(), args.mask)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_fallocate(&self, mut req: Request<'_>) -> OpResult {
        let a: FallocateIn = req.take()?;
        self.fs.fallocate(&req.ctx(), req.node(), Handle(a.fh), a.mode, a.offset, a.length)?;
        Ok(Reply::empty())
    }

    pub(super) fn do_lseek(&self, mut req: Request<'_>) -> OpResult {
        let a: LseekIn = req.take()?;
        let offset = self.fs.lseek(&req.ctx(), req.node(), Handle(a.fh), a.offset, a.whence)?;
        Ok(Reply::of(&LseekOut { offset }))
    }

    pub(super) fn do_copy_file_range(&self, mut req: Request<'_>) -> OpResult {
        let a: CopyFileRangeIn = req.take()?;
        let range = CopyRange {
            node_in: req.node(),
            handle_in: Handle(a.fh_in),
            offset_in: a.off_in,
            node_out: NodeId(a.nodeid_out),
            handle_out: Handle(a.fh_out),
            offset_out: a.off_out,
            len: a.len,
            flags: a.flags,
        };
        let n = self.fs.copy_file_range(&req.ctx(), &range)?;
        write_out(n)
    }
}
