//! The [`FileSystem`] implementation: for each operation, whose identity it runs under (the
//! guest caller's for creations, the daemon's for the rest) and which module serves it. No
//! operation logic lives here.

use std::ffi::CStr;

use crate::fuse::{ReadTarget, WriteSource};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustix::io::Errno;

use super::{acl, attr, names, PassthroughFs};
use crate::fuse::abi::{CreateIn, InitFlags, Kstatfs, Statx};
use crate::fuse::{
    AttrReply, Context, CopyRange, DirBuffer, Entry, FileSystem, FsResult, Handle, Lock,
    LockRequest, LockStatus, LockWait, NodeId, Opened, SetAttr, WriteFlags, XattrReply,
};

impl FileSystem for PassthroughFs {
    fn init(&self, offered: InitFlags) -> FsResult<InitFlags> {
        let groups = offered.contains(InitFlags::CREATE_SUPP_GROUP);
        self.supp_groups_known.store(groups, Ordering::Relaxed);
        // An ACL that drops a caller's S_ISGID needs SETXATTR_EXT to say so (Linux 5.16):
        // without it the daemon, which keeps CAP_FSETID, would leave the bit in place.
        let acl_flags = InitFlags::POSIX_ACL | InitFlags::DONT_MASK | InitFlags::SETXATTR_EXT;
        let acl_on = self.config.posix_acl.decide(offered.contains(acl_flags))?;
        self.acl_on.store(acl_on, Ordering::Relaxed);
        let mut flags = InitFlags::ATOMIC_O_TRUNC
            | InitFlags::PARALLEL_DIROPS
            | InitFlags::AUTO_INVAL_DATA
            | InitFlags::ASYNC_DIO;
        if self.config.readdirplus {
            flags |= InitFlags::DO_READDIRPLUS | InitFlags::READDIRPLUS_AUTO;
        }
        if self.config.credentials.is_enabled() {
            flags |= InitFlags::CREATE_SUPP_GROUP;
        }
        let killpriv = self.config.killpriv_v2 && offered.contains(InitFlags::HANDLE_KILLPRIV_V2);
        self.killpriv_on.store(killpriv, Ordering::Relaxed);
        if killpriv {
            flags |= InitFlags::HANDLE_KILLPRIV_V2;
        }
        let writeback = self.config.writeback && offered.contains(InitFlags::WRITEBACK_CACHE);
        self.writeback_on.store(writeback, Ordering::Relaxed);
        if writeback {
            flags |= InitFlags::WRITEBACK_CACHE;
        }
        if self.config.allow_mmap {
            flags |= InitFlags::DIRECT_IO_ALLOW_MMAP;
        }
        if self.config.announce_submounts {
            flags |= InitFlags::SUBMOUNTS;
        }
        if acl_on {
            flags |= acl_flags;
        }
        let labels =
            self.config.security_label.decide(offered.contains(InitFlags::SECURITY_CTX))?;
        self.labels_on.store(labels, Ordering::Relaxed);
        if labels {
            flags |= InitFlags::SECURITY_CTX;
        }
        let auto = |n: super::Negotiation| n == super::Negotiation::Auto;
        super::negotiation::warn_untaken(
            offered,
            &[
                (self.config.writeback, InitFlags::WRITEBACK_CACHE, "--writeback"),
                (self.config.allow_mmap, InitFlags::DIRECT_IO_ALLOW_MMAP, "--allow-mmap"),
                (self.config.killpriv_v2, InitFlags::HANDLE_KILLPRIV_V2, "--killpriv-v2"),
                (self.config.announce_submounts, InitFlags::SUBMOUNTS, "announced submounts"),
                (auto(self.config.posix_acl), acl_flags, "--posix-acl=auto"),
                (
                    auto(self.config.security_label),
                    InitFlags::SECURITY_CTX,
                    "--security-label=auto",
                ),
            ],
        );
        let (posix, flock) = self.locking();
        if posix {
            flags |= InitFlags::POSIX_LOCKS;
        }
        if flock {
            flags |= InitFlags::FLOCK_LOCKS;
        }
        Ok(flags)
    }
    fn destroy(&self) {
        self.locks.clear();
        self.handles.clear();
        self.unheard_sync_failures.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // The root is reopened through the descriptor kept since start-up; should even that
        // fail, the old table stays in place rather than leave the guest without a root.
        if let Err(errno) = self.install_root() {
            log::error!("reopening the share's root for a new session failed: {errno}");
        }
    }
    fn lookup(&self, _: &Context, parent: NodeId, name: &CStr) -> FsResult<Entry> {
        self.as_daemon(|| {
            let dir = self.dir_inode(parent)?;
            self.lookup_at(&dir, names::validate(name)?)
        })
    }
    fn forget(&self, node: NodeId, count: u64) {
        self.inodes.forget(node, count);
    }
    fn getattr(&self, _: &Context, node: NodeId, _: Option<Handle>) -> FsResult<AttrReply> {
        self.as_daemon(|| self.attr_reply(&*self.inode(node)?))
    }
    fn statx(
        &self,
        _: &Context,
        node: NodeId,
        _: Option<Handle>,
        sync: u32,
        mask: u32,
    ) -> FsResult<(Statx, Duration)> {
        self.as_daemon(|| {
            let inode = self.inode(node)?;
            let (mut st, key) = attr::statx_fd(&inode.fd, sync, mask)?;
            st.ino = self.devices.guest_ino(key);
            st.uid = self.config.uid_map.to_guest(st.uid);
            st.gid = self.config.gid_map.to_guest(st.gid);
            Ok((st, self.config.timeout))
        })
    }
    fn setattr(&self, ctx: &Context, node: NodeId, set: &SetAttr) -> FsResult<AttrReply> {
        self.as_daemon(|| self.do_setattr(self.changer(ctx), node, set))
    }
    fn readlink(&self, _: &Context, node: NodeId) -> FsResult<Vec<u8>> {
        self.as_daemon(|| self.do_readlink(node))
    }
    fn symlink(
        &self,
        ctx: &Context,
        target: &CStr,
        parent: NodeId,
        name: &CStr,
    ) -> FsResult<Entry> {
        let entry = self.as_caller(ctx, || self.do_symlink(target, parent, name))?;
        self.labelled(ctx, parent, Some(name), entry, None)
    }
    fn mknod(
        &self,
        ctx: &Context,
        p: NodeId,
        n: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> FsResult<Entry> {
        let mode = self.creation_mode(p, mode, umask)?;
        let entry = self.as_caller(ctx, || self.do_mknod(p, n, mode, rdev))?;
        self.labelled(ctx, p, Some(n), entry, None)
    }
    fn mkdir(&self, ctx: &Context, p: NodeId, n: &CStr, mode: u32, umask: u32) -> FsResult<Entry> {
        let mode = self.creation_mode(p, mode, umask)?;
        let entry = self.as_caller(ctx, || self.do_mkdir(p, n, mode))?;
        self.labelled(ctx, p, Some(n), entry, None)
    }
    fn unlink(&self, _: &Context, parent: NodeId, name: &CStr) -> FsResult<()> {
        self.as_daemon(|| self.do_unlink(parent, name, false))
    }
    fn rmdir(&self, _: &Context, parent: NodeId, name: &CStr) -> FsResult<()> {
        self.as_daemon(|| self.do_unlink(parent, name, true))
    }
    fn rename(
        &self,
        ctx: &Context,
        from: (NodeId, &CStr),
        to: (NodeId, &CStr),
        flags: u32,
    ) -> FsResult<()> {
        // The whiteout is a creation: the caller's, mapped as any creation is (before the
        // rename, so a caller without host ids renames nothing).
        let whiteout = flags & rustix::fs::RenameFlags::WHITEOUT.bits() != 0;
        let owner = if whiteout && self.config.credentials.is_enabled() {
            Some((self.config.uid_map.to_host(ctx.uid)?, self.config.gid_map.to_host(ctx.gid)?))
        } else {
            None
        };
        self.as_daemon(|| {
            self.do_rename(from, to, flags)?;
            if let Some(owner) = owner {
                self.own_whiteout(from, owner);
            }
            Ok(())
        })
    }
    fn link(&self, _: &Context, node: NodeId, parent: NodeId, name: &CStr) -> FsResult<Entry> {
        self.as_daemon(|| self.do_link(node, parent, name))
    }
    fn open(&self, ctx: &Context, node: NodeId, flags: u32, open_flags: u32) -> FsResult<Opened> {
        self.as_daemon(|| self.do_open(self.changer(ctx), node, flags, open_flags))
    }
    fn read(
        &self,
        _: &Context,
        n: NodeId,
        h: Handle,
        off: u64,
        flags: u32,
        dst: &mut dyn ReadTarget,
    ) -> FsResult<usize> {
        self.as_daemon(|| self.do_read(n, h, off, flags, dst))
    }
    fn write(
        &self,
        ctx: &Context,
        n: NodeId,
        h: Handle,
        off: u64,
        src: &mut dyn WriteSource,
        flags: WriteFlags,
    ) -> FsResult<usize> {
        self.as_daemon(|| self.do_write(self.changer(ctx), n, h, off, src, flags))
    }
    fn statfs(&self, _: &Context, node: NodeId) -> FsResult<Kstatfs> {
        self.as_daemon(|| attr::statfs_fd(&self.inode(node)?.fd))
    }
    fn release(
        &self,
        _: &Context,
        node: NodeId,
        handle: Handle,
        _: u32,
        release_flags: u32,
        lock_owner: u64,
    ) -> FsResult<()> {
        let flock_unlock = release_flags & crate::fuse::abi::RELEASE_FLOCK_UNLOCK != 0;
        let flush = release_flags & crate::fuse::abi::RELEASE_FLUSH != 0;
        // A handle that is not this node's releases no lock (a lost one still does).
        self.handles.known(handle, node, false)?;
        self.locks.release(node.0, handle, lock_owner, flock_unlock, flush);
        let kept = self.as_daemon(|| self.handles.remove(handle, node, false))?;
        if let Some(errno) = kept {
            self.keep_unheard_sync_failure(node, errno);
        }
        Ok(())
    }
    fn fsync(&self, _: &Context, node: NodeId, handle: Handle, datasync: bool) -> FsResult<()> {
        self.as_daemon(|| self.do_fsync(node, handle, datasync, false))
    }
    fn flush(&self, _: &Context, node: NodeId, handle: Handle, owner: u64) -> FsResult<()> {
        self.as_daemon(|| {
            self.handles.known(handle, node, false)?;
            self.locks.flush(node.0, owner);
            self.do_flush(node, handle)
        })
    }
    fn getlk(&self, _: &Context, node: NodeId, req: &LockRequest) -> FsResult<Lock> {
        self.as_daemon(|| {
            self.handles.get(req.handle, node, false)?;
            if req.flock || !self.locking().0 {
                return Err(Errno::NOSYS);
            }
            self.locks.getlk(node.0, req, || self.lock_fd(node, false))
        })
    }
    fn setlk(
        &self,
        _: &Context,
        node: NodeId,
        req: &LockRequest,
        wait: Option<LockWait>,
    ) -> FsResult<LockStatus> {
        self.as_daemon(|| {
            let writable = self.handles.get(req.handle, node, false)?.is_writable();
            let (posix, flock) = self.locking();
            if !(if req.flock { flock } else { posix }) {
                return Err(Errno::NOSYS);
            }
            self.locks.setlk(node.0, req, wait, writable, |write| self.lock_fd(node, write))
        })
    }
    fn opendir(&self, _: &Context, node: NodeId, _: u32) -> FsResult<Opened> {
        self.as_daemon(|| self.do_opendir(node))
    }
    fn readdir(
        &self,
        _: &Context,
        n: NodeId,
        h: Handle,
        off: u64,
        buf: &mut DirBuffer,
    ) -> FsResult<()> {
        self.as_daemon(|| self.do_readdir(n, h, off, buf, false))
    }
    fn readdirplus(
        &self,
        _: &Context,
        n: NodeId,
        h: Handle,
        off: u64,
        buf: &mut DirBuffer,
    ) -> FsResult<()> {
        self.as_daemon(|| self.do_readdir(n, h, off, buf, true))
    }
    fn releasedir(&self, _: &Context, node: NodeId, handle: Handle) -> FsResult<()> {
        self.as_daemon(|| self.handles.remove(handle, node, true)).map(drop)
    }
    fn fsyncdir(&self, _: &Context, node: NodeId, handle: Handle, datasync: bool) -> FsResult<()> {
        self.as_daemon(|| self.do_fsync(node, handle, datasync, true))
    }
    fn access(&self, ctx: &Context, node: NodeId, mask: u32) -> FsResult<()> {
        self.as_caller_alone(ctx, || self.do_access(node, mask))
    }
    fn create(
        &self,
        ctx: &Context,
        p: NodeId,
        n: &CStr,
        args: &CreateIn,
    ) -> FsResult<(Entry, Opened)> {
        let mode = self.creation_mode(p, args.mode, args.umask)?;
        // Truncating a file that is there already clears its set-id bits as an O_TRUNC OPEN
        // would (a caller other than guest root runs without CAP_FSETID already).
        let kill = self.open_kills(ctx.uid, args.open_flags);
        let (entry, opened, created) = self
            .as_caller(ctx, || self.do_create(self.changer(ctx), p, n, mode, args.flags, kill))?;
        if !created {
            // An existing file keeps the label it has.
            return Ok((entry, opened));
        }
        Ok((self.labelled(ctx, p, Some(n), entry, Some(opened.handle))?, opened))
    }
    fn tmpfile(
        &self,
        ctx: &Context,
        p: NodeId,
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> FsResult<(Entry, Opened)> {
        let mode = self.creation_mode(p, mode, umask)?;
        let (entry, opened) = self.as_caller(ctx, || self.do_tmpfile(p, mode, flags))?;
        Ok((self.labelled(ctx, p, None, entry, Some(opened.handle))?, opened))
    }
    fn setxattr(
        &self,
        _: &Context,
        node: NodeId,
        name: &CStr,
        value: &[u8],
        flags: u32,
        setxattr_flags: u32,
    ) -> FsResult<()> {
        self.as_daemon(|| {
            self.do_setxattr(node, name, value, flags)?;
            let kill_sgid = setxattr_flags & crate::fuse::abi::SETXATTR_ACL_KILL_SGID != 0;
            if kill_sgid && self.acl_on.load(Ordering::Relaxed) && name.to_bytes() == acl::ACCESS {
                self.clear_sgid(node)?;
            }
            Ok(())
        })
    }
    fn getxattr(&self, _: &Context, node: NodeId, name: &CStr, size: u32) -> FsResult<XattrReply> {
        self.as_daemon(|| self.do_getxattr(node, name, size))
    }
    fn listxattr(&self, _: &Context, node: NodeId, size: u32) -> FsResult<XattrReply> {
        self.as_daemon(|| self.do_listxattr(node, size))
    }
    fn removexattr(&self, _: &Context, node: NodeId, name: &CStr) -> FsResult<()> {
        self.as_daemon(|| self.do_removexattr(node, name))
    }
    fn fallocate(
        &self,
        ctx: &Context,
        n: NodeId,
        h: Handle,
        mode: u32,
        off: u64,
        len: u64,
    ) -> FsResult<()> {
        self.as_daemon(|| self.do_fallocate(self.changer(ctx), n, h, mode, off, len))
    }
    fn lseek(&self, _: &Context, n: NodeId, h: Handle, off: u64, whence: u32) -> FsResult<u64> {
        self.as_daemon(|| self.do_lseek(n, h, off, whence))
    }
    fn copy_file_range(&self, ctx: &Context, range: &CopyRange) -> FsResult<usize> {
        self.as_daemon(|| self.do_copy_file_range(self.changer(ctx), range))
    }
    fn syncfs(&self, _: &Context, node: NodeId) -> FsResult<()> {
        self.as_daemon(|| self.sync_all(node))
    }
    fn mapping_fd(
        &self,
        _: &Context,
        node: NodeId,
        handle: Option<Handle>,
        writable: bool,
    ) -> FsResult<std::os::fd::OwnedFd> {
        self.as_daemon(|| self.do_mapping_fd(node, handle, writable))
    }
}
