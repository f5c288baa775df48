//! The [`FileSystem`] implementation of the in-memory file system: each request locks the state
//! and runs the operation, with the limits and errors a real file system would give.

use std::collections::BTreeMap;
use std::ffi::CStr;

use rustix::io::Errno;
use vhu_device_fs::fuse::abi::{CreateIn, InitFlags, Kstatfs};
use vhu_device_fs::fuse::{
    AttrReply, Context, CopyRange, DirBuffer, Entry, FileSystem, FsResult, Handle, NodeId, Opened,
    ReadTarget, SetAttr, SetTime, WriteFlags, WriteSource, XattrReply,
};

use super::{
    component, new_name, timeout, Kind, MemFs, State, MAX_FILE, MAX_HANDLES, MAX_LINKS, MAX_NODES,
    MAX_XATTRS, NAME_MAX, O_ACCMODE, O_RDONLY, O_TRUNC, PATH_MAX, S_IFBLK, S_IFCHR, S_IFDIR,
    S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, XATTR_CREATE, XATTR_NAME_MAX, XATTR_REPLACE,
    XATTR_SIZE_MAX,
};

impl FileSystem for MemFs {
    fn init(&self, _offered: InitFlags) -> FsResult<InitFlags> {
        Ok(InitFlags::DO_READDIRPLUS
            | InitFlags::READDIRPLUS_AUTO
            | InitFlags::ATOMIC_O_TRUNC
            | InitFlags::PARALLEL_DIROPS)
    }

    fn destroy(&self) {
        *self.state() = State::initial();
    }

    fn lookup(&self, _ctx: &Context, parent: NodeId, name: &CStr) -> FsResult<Entry> {
        let mut s = self.state();
        let name = component(name)?;
        let id = match (name, &s.node(parent)?.kind) {
            (b".", Kind::Dir { .. }) => parent.0,
            (b"..", Kind::Dir { parent: up, .. }) => *up,
            (_, Kind::Dir { entries, .. }) => *entries.get(name).ok_or(Errno::NOENT)?,
            _ => return Err(Errno::NOTDIR),
        };
        if !s.nodes.contains_key(&id) {
            // `..` of a removed directory whose parent is gone.
            return Err(Errno::NOENT);
        }
        Ok(s.entry(id))
    }

    fn forget(&self, node: NodeId, count: u64) {
        let mut s = self.state();
        if let Some(n) = s.nodes.get_mut(&node.0) {
            n.lookups = n.lookups.saturating_sub(count);
            s.maybe_drop(node.0);
        }
    }

    fn getattr(&self, _ctx: &Context, node: NodeId, handle: Option<Handle>) -> FsResult<AttrReply> {
        let s = self.state();
        s.node(node)?;
        if let Some(h) = handle {
            if s.handles.get(&h.0).is_none_or(|o| o.node != node.0) {
                return Err(Errno::BADF);
            }
        }
        Ok(AttrReply { attr: s.attr(node.0), timeout: timeout() })
    }

    fn setattr(&self, _ctx: &Context, node: NodeId, set: &SetAttr) -> FsResult<AttrReply> {
        let mut s = self.state();
        s.node(node)?;
        if let Some(h) = set.handle {
            if s.handles.get(&h.0).is_none_or(|o| o.node != node.0) {
                return Err(Errno::BADF);
            }
        }
        if let Some(size) = set.size {
            if size > MAX_FILE {
                return Err(Errno::FBIG);
            }
            s.file_data(node.0)?.resize(size as usize, 0);
        }
        let clock = s.tick();
        let now = (clock, 0);
        let n = s.node_mut(node)?;
        if let Some(mode) = set.mode {
            n.mode = (n.mode & S_IFMT) | (mode & 0o7777);
        }
        n.uid = set.uid.unwrap_or(n.uid);
        n.gid = set.gid.unwrap_or(n.gid);
        let time = |t: SetTime| match t {
            SetTime::Now => now,
            SetTime::At(secs, nsecs) => (secs, nsecs.min(999_999_999)),
        };
        if let Some(t) = set.atime {
            n.atime = time(t);
        }
        if let Some(t) = set.mtime {
            n.mtime = time(t);
        }
        Ok(AttrReply { attr: s.attr(node.0), timeout: timeout() })
    }

    fn readlink(&self, _ctx: &Context, node: NodeId) -> FsResult<Vec<u8>> {
        match &self.state().node(node)?.kind {
            Kind::Symlink(target) => Ok(target.clone()),
            _ => Err(Errno::INVAL),
        }
    }

    fn symlink(
        &self,
        ctx: &Context,
        target: &CStr,
        parent: NodeId,
        name: &CStr,
    ) -> FsResult<Entry> {
        let target = target.to_bytes();
        if target.is_empty() {
            return Err(Errno::NOENT);
        }
        if target.len() >= PATH_MAX {
            return Err(Errno::NAMETOOLONG);
        }
        let kind = Kind::Symlink(target.to_vec());
        self.state().create_node(ctx, parent, name, kind, S_IFLNK | 0o777)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: NodeId,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> FsResult<Entry> {
        let kind = match mode & S_IFMT {
            0 | S_IFREG => Kind::File(Vec::new()),
            S_IFIFO | S_IFCHR | S_IFBLK | S_IFSOCK => Kind::Special,
            _ => return Err(Errno::INVAL),
        };
        let typ = if mode & S_IFMT == 0 { S_IFREG } else { mode & S_IFMT };
        let mut s = self.state();
        let entry = s.create_node(ctx, parent, name, kind, typ | (mode & !umask & 0o7777))?;
        s.node_mut(entry.node)?.rdev = rdev;
        let attr = s.attr(entry.node.0);
        Ok(Entry { attr, ..entry })
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: NodeId,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> FsResult<Entry> {
        let kind = Kind::Dir { entries: BTreeMap::new(), parent: parent.0 };
        self.state().create_node(ctx, parent, name, kind, S_IFDIR | (mode & !umask & 0o7777))
    }

    fn unlink(&self, _ctx: &Context, parent: NodeId, name: &CStr) -> FsResult<()> {
        let mut s = self.state();
        let name = component(name)?;
        let id = *s.dir_entries(parent)?.get(name).ok_or(Errno::NOENT)?;
        if s.nodes[&id].is_dir() {
            return Err(Errno::ISDIR);
        }
        s.unlink_name(parent, name)
    }

    fn rmdir(&self, _ctx: &Context, parent: NodeId, name: &CStr) -> FsResult<()> {
        let mut s = self.state();
        let name = component(name)?;
        match name {
            b"." => return Err(Errno::INVAL),
            b".." => return Err(Errno::NOTEMPTY),
            _ => {}
        }
        let id = *s.dir_entries(parent)?.get(name).ok_or(Errno::NOENT)?;
        match &s.nodes[&id].kind {
            Kind::Dir { entries, .. } if entries.is_empty() => {}
            Kind::Dir { .. } => return Err(Errno::NOTEMPTY),
            _ => return Err(Errno::NOTDIR),
        }
        s.unlink_name(parent, name)
    }

    fn rename(
        &self,
        _ctx: &Context,
        from: (NodeId, &CStr),
        to: (NodeId, &CStr),
        flags: u32,
    ) -> FsResult<()> {
        self.state().rename(from, to, flags)
    }

    fn link(&self, _ctx: &Context, node: NodeId, parent: NodeId, name: &CStr) -> FsResult<Entry> {
        let mut s = self.state();
        let name = new_name(name)?;
        let n = s.node(node)?;
        if n.is_dir() {
            return Err(Errno::PERM);
        }
        if n.links == 0 {
            return Err(Errno::NOENT);
        }
        if n.links >= MAX_LINKS {
            return Err(Errno::MLINK);
        }
        if s.live_dir_entries(parent)?.contains_key(name) {
            return Err(Errno::EXIST);
        }
        s.dir_entries_mut(parent)?.insert(name.to_vec(), node.0);
        s.node_mut(node)?.links += 1;
        Ok(s.entry(node.0))
    }

    fn open(&self, _ctx: &Context, node: NodeId, flags: u32, _: u32) -> FsResult<Opened> {
        let mut s = self.state();
        match s.node(node)?.kind {
            Kind::File(_) => {}
            Kind::Dir { .. } => return Err(Errno::ISDIR),
            Kind::Symlink(_) => return Err(Errno::LOOP),
            Kind::Special => return Err(Errno::NXIO),
        }
        let opened = s.open(node, false)?;
        if flags & O_TRUNC != 0 && flags & O_ACCMODE != O_RDONLY {
            s.file_data(node.0)?.clear();
        }
        Ok(opened)
    }

    fn mapping_fd(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Option<Handle>,
        _writable: bool,
    ) -> FsResult<std::os::fd::OwnedFd> {
        let s = self.state();
        if let Some(handle) = handle {
            s.handle(node, handle, false)?;
        }
        if !matches!(s.node(node)?.kind, Kind::File(_)) {
            return Err(Errno::NODEV);
        }
        // The model window maps nothing: any descriptor stands for the file.
        let null = std::fs::File::open("/dev/null").map_err(|_| Errno::IO)?;
        Ok(null.into())
    }

    fn read(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        _flags: u32,
        dst: &mut dyn ReadTarget,
    ) -> FsResult<usize> {
        let mut s = self.state();
        s.handle(node, handle, false)?;
        let data = s.file_data(node.0)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let n = (data.len() - start).min(dst.room());
        dst.copy_in(&data[start..start + n]).map_err(|_| Errno::IO)
    }

    fn write(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        src: &mut dyn WriteSource,
        _flags: WriteFlags,
    ) -> FsResult<usize> {
        let mut data = vec![0; src.len()];
        src.copy_out(&mut data).map_err(|_| Errno::IO)?;
        let data = &data[..];
        let mut s = self.state();
        s.handle(node, handle, false)?;
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::FBIG)?;
        if end > MAX_FILE {
            return Err(Errno::FBIG);
        }
        let clock = s.tick();
        let file = s.file_data(node.0)?;
        let (start, end) = (offset as usize, end as usize);
        if file.len() < end {
            file.resize(end, 0);
        }
        file[start..end].copy_from_slice(data);
        s.node_mut(node)?.mtime = (clock, 0);
        Ok(data.len())
    }

    fn statfs(&self, _ctx: &Context, node: NodeId) -> FsResult<Kstatfs> {
        let s = self.state();
        s.node(node)?;
        let used = s.nodes.len() as u64;
        Ok(Kstatfs {
            blocks: 1024,
            bfree: 512,
            bavail: 512,
            files: MAX_NODES as u64,
            ffree: MAX_NODES as u64 - used,
            bsize: 4096,
            namelen: NAME_MAX as u32,
            frsize: 4096,
            ..Kstatfs::default()
        })
    }

    fn release(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        _flags: u32,
        _release_flags: u32,
        _lock_owner: u64,
    ) -> FsResult<()> {
        let mut s = self.state();
        s.handle(node, handle, false)?;
        s.handles.remove(&handle.0);
        s.maybe_drop(node.0);
        Ok(())
    }

    fn fsync(&self, _ctx: &Context, node: NodeId, handle: Handle, _datasync: bool) -> FsResult<()> {
        self.state().handle(node, handle, false).map(drop)
    }

    fn flush(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        _lock_owner: u64,
    ) -> FsResult<()> {
        self.state().handle(node, handle, false).map(drop)
    }

    fn opendir(&self, _ctx: &Context, node: NodeId, _flags: u32) -> FsResult<Opened> {
        let mut s = self.state();
        s.dir_entries(node)?;
        s.open(node, true)
    }

    fn readdir(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        buf: &mut DirBuffer,
    ) -> FsResult<()> {
        self.state().readdir(node, handle, offset, buf, false)
    }

    fn readdirplus(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        buf: &mut DirBuffer,
    ) -> FsResult<()> {
        self.state().readdir(node, handle, offset, buf, true)
    }

    fn releasedir(&self, _ctx: &Context, node: NodeId, handle: Handle) -> FsResult<()> {
        let mut s = self.state();
        s.handle(node, handle, true)?;
        s.handles.remove(&handle.0);
        s.maybe_drop(node.0);
        Ok(())
    }

    fn fsyncdir(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        _datasync: bool,
    ) -> FsResult<()> {
        self.state().handle(node, handle, true).map(drop)
    }

    fn access(&self, _ctx: &Context, node: NodeId, mask: u32) -> FsResult<()> {
        self.state().node(node)?;
        if mask & !7 != 0 {
            return Err(Errno::INVAL);
        }
        Ok(())
    }

    fn create(
        &self,
        ctx: &Context,
        parent: NodeId,
        name: &CStr,
        args: &CreateIn,
    ) -> FsResult<(Entry, Opened)> {
        let mut s = self.state();
        if s.handles.len() >= MAX_HANDLES {
            return Err(Errno::MFILE);
        }
        let mode = S_IFREG | (args.mode & !args.umask & 0o7777);
        let entry = s.create_node(ctx, parent, name, Kind::File(Vec::new()), mode)?;
        let opened = s.open(entry.node, false)?;
        Ok((entry, opened))
    }

    fn setxattr(
        &self,
        _ctx: &Context,
        node: NodeId,
        name: &CStr,
        value: &[u8],
        flags: u32,
        _setxattr_flags: u32,
    ) -> FsResult<()> {
        let mut s = self.state();
        let name = name.to_bytes();
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(Errno::RANGE);
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(Errno::TOOBIG);
        }
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
            return Err(Errno::INVAL);
        }
        let n = s.node_mut(node)?;
        let exists = n.xattrs.contains_key(name);
        if exists && flags & XATTR_CREATE != 0 {
            return Err(Errno::EXIST);
        }
        if !exists && flags & XATTR_REPLACE != 0 {
            return Err(Errno::NODATA);
        }
        if !exists && n.xattrs.len() >= MAX_XATTRS {
            return Err(Errno::NOSPC);
        }
        n.xattrs.insert(name.to_vec(), value.to_vec());
        Ok(())
    }

    fn getxattr(
        &self,
        _ctx: &Context,
        node: NodeId,
        name: &CStr,
        size: u32,
    ) -> FsResult<XattrReply> {
        let s = self.state();
        let value = s.node(node)?.xattrs.get(name.to_bytes()).ok_or(Errno::NODATA)?;
        sized(value.clone(), size)
    }

    fn listxattr(&self, _ctx: &Context, node: NodeId, size: u32) -> FsResult<XattrReply> {
        let s = self.state();
        let mut list = Vec::new();
        for name in s.node(node)?.xattrs.keys() {
            list.extend_from_slice(name);
            list.push(0);
        }
        sized(list, size)
    }

    fn removexattr(&self, _ctx: &Context, node: NodeId, name: &CStr) -> FsResult<()> {
        let mut s = self.state();
        s.node_mut(node)?.xattrs.remove(name.to_bytes()).map(drop).ok_or(Errno::NODATA)
    }

    fn fallocate(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> FsResult<()> {
        let mut s = self.state();
        s.handle(node, handle, false)?;
        if mode != 0 {
            return Err(Errno::OPNOTSUPP);
        }
        if length == 0 {
            return Err(Errno::INVAL);
        }
        let end = offset.checked_add(length).ok_or(Errno::FBIG)?;
        if end > MAX_FILE {
            return Err(Errno::FBIG);
        }
        let file = s.file_data(node.0)?;
        if (file.len() as u64) < end {
            file.resize(end as usize, 0);
        }
        Ok(())
    }

    fn lseek(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        whence: u32,
    ) -> FsResult<u64> {
        let mut s = self.state();
        s.handle(node, handle, false)?;
        let size = s.file_data(node.0)?.len() as u64;
        let signed = i64::try_from(offset).map_err(|_| Errno::INVAL);
        match whence {
            0 => signed.map(|o| o as u64),
            2 => {
                let end = (size as i64).checked_add(offset as i64).ok_or(Errno::INVAL)?;
                u64::try_from(end).map_err(|_| Errno::INVAL)
            }
            3 if offset < size => Ok(offset),
            4 if offset < size => Ok(size),
            3 | 4 => Err(Errno::NXIO),
            _ => Err(Errno::INVAL),
        }
    }

    fn copy_file_range(&self, _ctx: &Context, r: &CopyRange) -> FsResult<usize> {
        let mut s = self.state();
        if r.flags != 0 {
            return Err(Errno::INVAL);
        }
        s.handle(r.node_in, r.handle_in, false)?;
        s.handle(r.node_out, r.handle_out, false)?;
        let src = s.file_data(r.node_in.0)?;
        let start = usize::try_from(r.offset_in).unwrap_or(usize::MAX).min(src.len());
        let n = (src.len() - start).min(usize::try_from(r.len).unwrap_or(usize::MAX));
        let chunk = src[start..start + n].to_vec();
        let end = r.offset_out.checked_add(n as u64).ok_or(Errno::FBIG)?;
        if end > MAX_FILE {
            return Err(Errno::FBIG);
        }
        let dst = s.file_data(r.node_out.0)?;
        if dst.len() < end as usize {
            dst.resize(end as usize, 0);
        }
        dst[r.offset_out as usize..end as usize].copy_from_slice(&chunk);
        Ok(n)
    }

    fn syncfs(&self, _ctx: &Context, node: NodeId) -> FsResult<()> {
        self.state().node(node).map(drop)
    }
}

/// An xattr value or list answered for a buffer of `size` bytes (0: the size only).
fn sized(data: Vec<u8>, size: u32) -> FsResult<XattrReply> {
    if size == 0 {
        return Ok(XattrReply::Size(data.len() as u32));
    }
    if data.len() > size as usize {
        return Err(Errno::RANGE);
    }
    Ok(XattrReply::Data(data))
}
