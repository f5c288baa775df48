//! The [`FileSystem`] trait a FUSE server dispatches to.
//!
//! One method per FUSE operation, with decoded, typed arguments. Every method has a default that
//! answers `ENOSYS`, so an implementation provides only what it supports and the guest falls back
//! for the rest. Methods take `&self` so one file system can serve several queues; implementations
//! synchronise internally. Names arrive exactly as the guest sent them: validating them is the
//! implementation's job.

use std::ffi::CStr;

use rustix::io::Errno;

use std::time::Duration;

use super::abi::{CreateIn, InitFlags, Kstatfs, Statx};
use super::dirent::DirBuffer;
use super::io::{ReadTarget, WriteSource};
use super::lock::{Lock, LockRequest, LockStatus, LockWait};
use super::types::{
    AttrReply, Context, CopyRange, Entry, FsResult, Handle, NodeId, Opened, SetAttr, WriteFlags,
    XattrReply,
};

/// A file system served over FUSE.
#[allow(unused_variables)]
pub trait FileSystem {
    /// The optional INIT capabilities this file system implements (readdirplus, writeback, ...).
    ///
    /// Called on INIT with what the guest offered; the server claims only flags it also supports.
    fn init(&self, offered: InitFlags) -> FsResult<InitFlags> {
        Ok(InitFlags::empty())
    }
    /// The session ends (DESTROY or a new INIT): drop every node and handle.
    fn destroy(&self) {}
    /// LOOKUP: resolve `name` in `parent`, taking one lookup reference.
    fn lookup(&self, ctx: &Context, parent: NodeId, name: &CStr) -> FsResult<Entry> {
        Err(Errno::NOSYS)
    }
    /// FORGET: drop `count` lookup references.
    fn forget(&self, node: NodeId, count: u64) {}
    /// BATCH_FORGET: drop references of several nodes.
    fn batch_forget(&self, items: &[(NodeId, u64)]) {
        for &(node, count) in items {
            self.forget(node, count);
        }
    }
    /// GETATTR.
    fn getattr(&self, ctx: &Context, node: NodeId, handle: Option<Handle>) -> FsResult<AttrReply> {
        Err(Errno::NOSYS)
    }
    /// STATX: extended attributes (birth time and the rest) for `mask`; `sync` carries the
    /// AT_STATX_* flags. The reply's timeout is the attribute cache timeout.
    fn statx(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Option<Handle>,
        sync: u32,
        mask: u32,
    ) -> FsResult<(Statx, Duration)> {
        Err(Errno::NOSYS)
    }
    /// SETATTR.
    fn setattr(&self, ctx: &Context, node: NodeId, set: &SetAttr) -> FsResult<AttrReply> {
        Err(Errno::NOSYS)
    }
    /// READLINK: the link's target.
    fn readlink(&self, ctx: &Context, node: NodeId) -> FsResult<Vec<u8>> {
        Err(Errno::NOSYS)
    }
    /// SYMLINK: create `name` in `parent` pointing at `target`.
    fn symlink(
        &self,
        ctx: &Context,
        target: &CStr,
        parent: NodeId,
        name: &CStr,
    ) -> FsResult<Entry> {
        Err(Errno::NOSYS)
    }
    /// MKNOD (`mode` includes the file type; the guest's `umask` is passed along).
    fn mknod(
        &self,
        ctx: &Context,
        parent: NodeId,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> FsResult<Entry> {
        Err(Errno::NOSYS)
    }
    /// MKDIR.
    fn mkdir(
        &self,
        ctx: &Context,
        parent: NodeId,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> FsResult<Entry> {
        Err(Errno::NOSYS)
    }
    /// UNLINK.
    fn unlink(&self, ctx: &Context, parent: NodeId, name: &CStr) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// RMDIR.
    fn rmdir(&self, ctx: &Context, parent: NodeId, name: &CStr) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// RENAME (`flags` 0) and RENAME2 (RENAME_NOREPLACE / EXCHANGE / WHITEOUT).
    fn rename(
        &self,
        ctx: &Context,
        from: (NodeId, &CStr),
        to: (NodeId, &CStr),
        flags: u32,
    ) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// LINK: a new name for `node`.
    fn link(&self, ctx: &Context, node: NodeId, parent: NodeId, name: &CStr) -> FsResult<Entry> {
        Err(Errno::NOSYS)
    }
    /// OPEN with `open(2)` flags and FUSE_OPEN_* `open_flags` (FUSE_OPEN_KILL_SUIDGID).
    fn open(&self, ctx: &Context, node: NodeId, flags: u32, open_flags: u32) -> FsResult<Opened> {
        Err(Errno::NOSYS)
    }
    /// READ up to `dst.room()` bytes at `offset` into `dst`; returns the bytes read. `flags`
    /// are the `open(2)` flags the guest's file has now (`fuse_read_in.flags`: `F_SETFL` may
    /// have changed them since the open).
    fn read(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        flags: u32,
        dst: &mut dyn ReadTarget,
    ) -> FsResult<usize> {
        Err(Errno::NOSYS)
    }
    /// WRITE what `src` holds at `offset`; returns the bytes written.
    fn write(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        src: &mut dyn WriteSource,
        flags: WriteFlags,
    ) -> FsResult<usize> {
        Err(Errno::NOSYS)
    }
    /// STATFS.
    fn statfs(&self, ctx: &Context, node: NodeId) -> FsResult<Kstatfs> {
        Err(Errno::NOSYS)
    }
    /// RELEASE: the last reference to an open file went away. `release_flags` are
    /// FUSE_RELEASE_* (FLUSH: drop `lock_owner`'s POSIX locks too; FLOCK_UNLOCK: drop its flock).
    fn release(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Handle,
        flags: u32,
        release_flags: u32,
        lock_owner: u64,
    ) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// FSYNC.
    fn fsync(&self, ctx: &Context, node: NodeId, handle: Handle, datasync: bool) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// FLUSH: a `close(2)` of a descriptor of the open file.
    fn flush(&self, ctx: &Context, node: NodeId, handle: Handle, lock_owner: u64) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// GETLK: the first lock held by another owner that conflicts with `req.lock`, or
    /// `req.lock` itself with [`LockType::Unlock`](super::LockType::Unlock) when none does.
    fn getlk(&self, ctx: &Context, node: NodeId, req: &LockRequest) -> FsResult<Lock> {
        Err(Errno::NOSYS)
    }
    /// SETLK (`wait` is `None`) and SETLKW: take, change or release `req.lock` without blocking
    /// the caller. A lock held elsewhere is EAGAIN for SETLK; for SETLKW the call returns
    /// [`LockStatus::Waiting`] and `wait` is finished later, with EINTR if it is cancelled.
    fn setlk(
        &self,
        ctx: &Context,
        node: NodeId,
        req: &LockRequest,
        wait: Option<LockWait>,
    ) -> FsResult<LockStatus> {
        Err(Errno::NOSYS)
    }
    /// OPENDIR.
    fn opendir(&self, ctx: &Context, node: NodeId, flags: u32) -> FsResult<Opened> {
        Err(Errno::NOSYS)
    }
    /// READDIR: add entries from cookie `offset` until `buf` is full or the directory ends.
    fn readdir(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        buf: &mut DirBuffer,
    ) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// READDIRPLUS: like READDIR, each entry other than `.` and `..` taking a lookup reference.
    fn readdirplus(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        buf: &mut DirBuffer,
    ) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// RELEASEDIR.
    fn releasedir(&self, ctx: &Context, node: NodeId, handle: Handle) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// FSYNCDIR.
    fn fsyncdir(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Handle,
        datasync: bool,
    ) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// ACCESS with an `access(2)` mask.
    fn access(&self, ctx: &Context, node: NodeId, mask: u32) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// CREATE: atomically create and open `name`, as `args` says (mode, `open(2)` flags, the
    /// caller's umask and FUSE_OPEN_* flags).
    fn create(
        &self,
        ctx: &Context,
        parent: NodeId,
        name: &CStr,
        args: &CreateIn,
    ) -> FsResult<(Entry, Opened)> {
        Err(Errno::NOSYS)
    }
    /// TMPFILE: create an unnamed file in `parent` (`O_TMPFILE`) and open it; a LINK may give it
    /// a name later.
    fn tmpfile(
        &self,
        ctx: &Context,
        parent: NodeId,
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> FsResult<(Entry, Opened)> {
        Err(Errno::NOSYS)
    }
    /// SETXATTR (`flags` are XATTR_CREATE/XATTR_REPLACE; `setxattr_flags` FUSE_SETXATTR_*, only
    /// with SETXATTR_EXT).
    fn setxattr(
        &self,
        ctx: &Context,
        node: NodeId,
        name: &CStr,
        value: &[u8],
        flags: u32,
        setxattr_flags: u32,
    ) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// GETXATTR: the value, or its size when `size` is 0; ERANGE when it exceeds `size`.
    fn getxattr(
        &self,
        ctx: &Context,
        node: NodeId,
        name: &CStr,
        size: u32,
    ) -> FsResult<XattrReply> {
        Err(Errno::NOSYS)
    }
    /// LISTXATTR: the NUL-separated names, or their size when `size` is 0.
    fn listxattr(&self, ctx: &Context, node: NodeId, size: u32) -> FsResult<XattrReply> {
        Err(Errno::NOSYS)
    }
    /// REMOVEXATTR.
    fn removexattr(&self, ctx: &Context, node: NodeId, name: &CStr) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// FALLOCATE with a `fallocate(2)` mode.
    fn fallocate(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// LSEEK (SEEK_DATA / SEEK_HOLE and the classic whences); returns the new offset.
    fn lseek(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        whence: u32,
    ) -> FsResult<u64> {
        Err(Errno::NOSYS)
    }
    /// COPY_FILE_RANGE; returns the bytes copied.
    fn copy_file_range(&self, ctx: &Context, range: &CopyRange) -> FsResult<usize> {
        Err(Errno::NOSYS)
    }
    /// SYNCFS: flush the file system containing `node`.
    fn syncfs(&self, ctx: &Context, node: NodeId) -> FsResult<()> {
        Err(Errno::NOSYS)
    }
    /// SETUPMAPPING's source: a descriptor of the regular file `node` (through `handle` when the
    /// guest named one) that can be mapped for reading, and for writing too if `writable`.
    fn mapping_fd(
        &self,
        ctx: &Context,
        node: NodeId,
        handle: Option<Handle>,
        writable: bool,
    ) -> FsResult<std::os::fd::OwnedFd> {
        Err(Errno::NOSYS)
    }
}
