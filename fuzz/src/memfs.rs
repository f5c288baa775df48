//! A small, deterministic in-memory [`FileSystem`] for the FUSE target: no host I/O, bounded
//! sizes, and a consistency check the target runs after every request.
//!
//! It starts as `/file`, `/dir/nested`, `/link -> file` and `/fifo`, and supports the whole
//! trait: names and links, reads and writes, directory listings (with lookup references for
//! READDIRPLUS), extended attributes, fallocate, lseek and copy_file_range. Node and handle ids
//! count up from small numbers so that fuzzed ids hit them. A node lives while it has a name, a
//! lookup reference or an open handle.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rustix::io::Errno;
use vhu_device_fs::fuse::abi::{Attr, InitFlags, Kstatfs};
use vhu_device_fs::fuse::{
    AddError, AttrReply, Context, CopyRange, DirBuffer, DirEntry, Entry, FileSystem, FsResult,
    Handle, NodeId, Opened, SetAttr, SetTime, XattrReply,
};

const ROOT: u64 = 1;
const MAX_NODES: usize = 64;
const MAX_HANDLES: usize = 64;
const MAX_LINKS: u32 = 16;
/// Largest file.
pub(crate) const MAX_FILE: u64 = 256 << 10;
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4096;
const MAX_XATTRS: usize = 8;
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 4096;

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFIFO: u32 = 0o010_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFSOCK: u32 = 0o140_000;

const O_ACCMODE: u32 = 3;
const O_RDONLY: u32 = 0;
const O_TRUNC: u32 = 0o1000;
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;
const XATTR_CREATE: u32 = 1;
const XATTR_REPLACE: u32 = 2;

/// The initial names, for the target to pick from.
pub(crate) const NAMES: [&[u8]; 8] =
    [b"file", b"dir", b"link", b"fifo", b"nested", b"new", b".", b".."];

enum Kind {
    Dir { entries: BTreeMap<Vec<u8>, u64>, parent: u64 },
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Special,
}

struct Node {
    kind: Kind,
    /// Type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    /// Names referring to the node (a directory has at most one).
    links: u32,
    lookups: u64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    atime: (u64, u32),
    mtime: (u64, u32),
}

impl Node {
    fn new(kind: Kind, mode: u32, ctx: &Context, clock: u64) -> Self {
        Self {
            kind,
            mode,
            uid: ctx.uid,
            gid: ctx.gid,
            rdev: 0,
            links: 1,
            lookups: 0,
            xattrs: BTreeMap::new(),
            atime: (clock, 0),
            mtime: (clock, 0),
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }
}

#[derive(Clone, Copy)]
struct Open {
    node: u64,
    dir: bool,
}

struct State {
    nodes: BTreeMap<u64, Node>,
    handles: BTreeMap<u64, Open>,
    next_node: u64,
    next_handle: u64,
    /// A logical clock for timestamps.
    clock: u64,
}

/// The file system.
pub(crate) struct MemFs {
    state: Mutex<State>,
}

fn timeout() -> Duration {
    Duration::from_secs(1)
}

/// A name used for lookups: one path component.
fn component(name: &CStr) -> FsResult<&[u8]> {
    let name = name.to_bytes();
    if name.is_empty() || name.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    if name.len() > NAME_MAX {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(name)
}

/// A name for a new entry: a component other than `.` and `..`.
fn new_name(name: &CStr) -> FsResult<&[u8]> {
    let name = component(name)?;
    if name == b"." || name == b".." {
        return Err(Errno::EXIST);
    }
    Ok(name)
}

impl State {
    fn initial() -> Self {
        let ctx = Context::default();
        let mut nodes = BTreeMap::new();
        let dir = |entries: &[(&[u8], u64)], parent| Kind::Dir {
            entries: entries.iter().map(|&(n, id)| (n.to_vec(), id)).collect(),
            parent,
        };
        let root = dir(&[(b"file", 2), (b"dir", 3), (b"link", 5), (b"fifo", 6)], ROOT);
        nodes.insert(ROOT, Node::new(root, S_IFDIR | 0o755, &ctx, 0));
        nodes
            .insert(2, Node::new(Kind::File(b"hello, world\n".to_vec()), S_IFREG | 0o644, &ctx, 0));
        nodes.insert(3, Node::new(dir(&[(b"nested", 4)], ROOT), S_IFDIR | 0o755, &ctx, 0));
        nodes.insert(4, Node::new(Kind::File(vec![7; 5000]), S_IFREG | 0o600, &ctx, 0));
        nodes.insert(5, Node::new(Kind::Symlink(b"file".to_vec()), S_IFLNK | 0o777, &ctx, 0));
        nodes.insert(6, Node::new(Kind::Special, S_IFIFO | 0o644, &ctx, 0));
        Self { nodes, handles: BTreeMap::new(), next_node: 7, next_handle: 1, clock: 1 }
    }

    fn node(&self, id: NodeId) -> FsResult<&Node> {
        self.nodes.get(&id.0).ok_or(Errno::NOENT)
    }

    fn node_mut(&mut self, id: NodeId) -> FsResult<&mut Node> {
        self.nodes.get_mut(&id.0).ok_or(Errno::NOENT)
    }

    fn dir_entries(&self, id: NodeId) -> FsResult<&BTreeMap<Vec<u8>, u64>> {
        match &self.node(id)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::NOTDIR),
        }
    }

    fn dir_entries_mut(&mut self, id: NodeId) -> FsResult<&mut BTreeMap<Vec<u8>, u64>> {
        match &mut self.node_mut(id)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::NOTDIR),
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn attr(&self, id: u64) -> Attr {
        let n = &self.nodes[&id];
        let (size, nlink) = match &n.kind {
            Kind::Dir { entries, .. } => {
                let subdirs = entries.values().filter(|c| self.nodes[c].is_dir()).count() as u32;
                (4096, if n.links == 0 { 0 } else { 2 + subdirs })
            }
            Kind::File(data) => (data.len() as u64, n.links),
            Kind::Symlink(target) => (target.len() as u64, n.links),
            Kind::Special => (0, n.links),
        };
        Attr {
            ino: id,
            size,
            blocks: size.div_ceil(512),
            atime: n.atime.0,
            mtime: n.mtime.0,
            ctime: n.mtime.0,
            atimensec: n.atime.1,
            mtimensec: n.mtime.1,
            ctimensec: n.mtime.1,
            mode: n.mode,
            nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: n.rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    /// An entry for `id`, taking one lookup reference.
    fn entry(&mut self, id: u64) -> Entry {
        self.nodes.get_mut(&id).expect("entry of a live node").lookups += 1;
        Entry {
            node: NodeId(id),
            generation: 0,
            attr: self.attr(id),
            attr_timeout: timeout(),
            entry_timeout: timeout(),
        }
    }

    /// Drops `id` when nothing refers to it any more.
    fn maybe_drop(&mut self, id: u64) {
        let Some(n) = self.nodes.get(&id) else { return };
        let open = self.handles.values().any(|h| h.node == id);
        if id != ROOT && n.links == 0 && n.lookups == 0 && !open {
            self.nodes.remove(&id);
        }
    }

    fn add_node(&mut self, parent: NodeId, name: &[u8], node: Node) -> FsResult<u64> {
        if self.dir_entries(parent)?.contains_key(name) {
            return Err(Errno::EXIST);
        }
        if self.nodes.len() >= MAX_NODES {
            return Err(Errno::NOSPC);
        }
        let id = self.next_node;
        self.next_node += 1;
        let node = match node.kind {
            Kind::Dir { entries, .. } => {
                Node { kind: Kind::Dir { entries, parent: parent.0 }, ..node }
            }
            _ => node,
        };
        self.nodes.insert(id, node);
        self.dir_entries_mut(parent)?.insert(name.to_vec(), id);
        let clock = self.tick();
        self.node_mut(parent)?.mtime = (clock, 0);
        Ok(id)
    }

    fn create_node(
        &mut self,
        ctx: &Context,
        parent: NodeId,
        name: &CStr,
        kind: Kind,
        mode: u32,
    ) -> FsResult<Entry> {
        let name = new_name(name)?;
        let clock = self.clock;
        let id = self.add_node(parent, name, Node::new(kind, mode, ctx, clock))?;
        Ok(self.entry(id))
    }

    fn open(&mut self, node: NodeId, dir: bool) -> FsResult<Opened> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Errno::MFILE);
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(handle, Open { node: node.0, dir });
        Ok(Opened { handle: Handle(handle), flags: 0 })
    }

    /// The open handle `handle` of `node`, of the given kind.
    fn handle(&self, node: NodeId, handle: Handle, dir: bool) -> FsResult<Open> {
        match self.handles.get(&handle.0) {
            Some(&h) if h.node == node.0 && h.dir == dir => Ok(h),
            _ => Err(Errno::BADF),
        }
    }

    fn file_data(&mut self, node: u64) -> FsResult<&mut Vec<u8>> {
        match &mut self.nodes.get_mut(&node).ok_or(Errno::BADF)?.kind {
            Kind::File(data) => Ok(data),
            Kind::Dir { .. } => Err(Errno::ISDIR),
            _ => Err(Errno::INVAL),
        }
    }

    /// Whether `ancestor` is `id` or one of its ancestors.
    fn is_ancestor(&self, ancestor: u64, mut id: u64) -> bool {
        for _ in 0..=MAX_NODES {
            if id == ancestor {
                return true;
            }
            match self.nodes.get(&id).map(|n| &n.kind) {
                Some(Kind::Dir { parent, .. }) if id != ROOT => id = *parent,
                _ => return false,
            }
        }
        false
    }

    fn unlink_name(&mut self, parent: NodeId, name: &[u8]) -> FsResult<()> {
        let id = self.dir_entries_mut(parent)?.remove(name).ok_or(Errno::NOENT)?;
        let clock = self.tick();
        self.node_mut(parent)?.mtime = (clock, 0);
        let n = self.nodes.get_mut(&id).expect("entries name live nodes");
        n.links -= 1;
        self.maybe_drop(id);
        Ok(())
    }

    fn set_parent(&mut self, id: u64, new_parent: u64) {
        if let Some(Node { kind: Kind::Dir { parent, .. }, .. }) = self.nodes.get_mut(&id) {
            *parent = new_parent;
        }
    }

    fn rename(&mut self, from: (NodeId, &CStr), to: (NodeId, &CStr), flags: u32) -> FsResult<()> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Errno::INVAL);
        }
        let old = new_name(from.1).map_err(|_| Errno::INVAL)?;
        let new = new_name(to.1).map_err(|_| Errno::INVAL)?;
        let src = *self.dir_entries(from.0)?.get(old).ok_or(Errno::NOENT)?;
        let dst = self.dir_entries(to.0)?.get(new).copied();
        let src_dir = self.nodes[&src].is_dir();
        if src_dir && self.is_ancestor(src, to.0 .0) {
            return Err(Errno::INVAL);
        }
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Errno::NOENT)?;
            if self.nodes[&dst].is_dir() && self.is_ancestor(dst, from.0 .0) {
                return Err(Errno::INVAL);
            }
            self.dir_entries_mut(from.0)?.insert(old.to_vec(), dst);
            self.dir_entries_mut(to.0)?.insert(new.to_vec(), src);
            self.set_parent(src, to.0 .0);
            self.set_parent(dst, from.0 .0);
            return Ok(());
        }
        if let Some(dst) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Errno::EXIST);
            }
            if dst == src {
                return Ok(());
            }
            match (src_dir, &self.nodes[&dst].kind) {
                (true, Kind::Dir { entries, .. }) if !entries.is_empty() => {
                    return Err(Errno::NOTEMPTY)
                }
                (true, Kind::Dir { .. }) => {}
                (true, _) => return Err(Errno::NOTDIR),
                (false, Kind::Dir { .. }) => return Err(Errno::ISDIR),
                (false, _) => {}
            }
            self.unlink_name(to.0, new)?;
        }
        self.dir_entries_mut(from.0)?.remove(old);
        self.dir_entries_mut(to.0)?.insert(new.to_vec(), src);
        self.set_parent(src, to.0 .0);
        Ok(())
    }

    fn readdir(
        &mut self,
        node: NodeId,
        handle: Handle,
        offset: u64,
        buf: &mut DirBuffer,
        plus: bool,
    ) -> FsResult<()> {
        self.handle(node, handle, true)?;
        let Kind::Dir { entries, parent } = &self.node(node)?.kind else {
            return Err(Errno::NOTDIR);
        };
        let up = if self.nodes.contains_key(parent) { *parent } else { node.0 };
        let mut list: Vec<(Vec<u8>, u64)> = vec![(b".".to_vec(), node.0), (b"..".to_vec(), up)];
        list.extend(entries.iter().map(|(name, &id)| (name.clone(), id)));
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (name, id)) in list.iter().enumerate().skip(start) {
            let e = DirEntry {
                ino: *id,
                next_offset: i as u64 + 1,
                typ: self.nodes[id].mode >> 12,
                name,
            };
            let result = if !plus {
                buf.add(&e)
            } else if i < 2 {
                buf.add_plus(&e, None)
            } else {
                // The reference is taken only when the record went in.
                let entry = Entry {
                    node: NodeId(*id),
                    generation: 0,
                    attr: self.attr(*id),
                    attr_timeout: timeout(),
                    entry_timeout: timeout(),
                };
                let added = buf.add_plus(&e, Some(&entry));
                if added.is_ok() {
                    self.nodes.get_mut(id).expect("listed node").lookups += 1;
                }
                added
            };
            match result {
                Ok(()) | Err(AddError::BadName) => {}
                Err(AddError::Full) => break,
            }
        }
        Ok(())
    }

    /// Panics when the tree is inconsistent.
    fn check(&self) {
        let mut names: BTreeMap<u64, u32> = BTreeMap::new();
        for (&id, n) in &self.nodes {
            if let Kind::Dir { entries, .. } = &n.kind {
                for (name, child) in entries {
                    assert!(DirBuffer::is_valid_name(name) && name.len() <= NAME_MAX);
                    let c = self.nodes.get(child).expect("an entry names a live node");
                    if let Kind::Dir { parent, .. } = c.kind {
                        assert_eq!(parent, id, "a directory's parent lists it");
                    }
                    *names.entry(*child).or_default() += 1;
                }
            }
        }
        for (&id, n) in &self.nodes {
            let named = names.get(&id).copied().unwrap_or(0);
            if id == ROOT {
                assert_eq!(named, 0, "the root has no name");
                continue;
            }
            assert_eq!(n.links, named, "node {id}: link count");
            assert!(!n.is_dir() || named <= 1, "a directory has one name");
            let open = self.handles.values().any(|h| h.node == id);
            assert!(named > 0 || n.lookups > 0 || open, "node {id} kept without a reference");
            if let Kind::File(data) = &n.kind {
                assert!(data.len() as u64 <= MAX_FILE);
            }
        }
        assert!(self.nodes.len() <= MAX_NODES && self.handles.len() <= MAX_HANDLES);
    }
}

impl MemFs {
    pub(crate) fn new() -> Self {
        Self { state: Mutex::new(State::initial()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Panics when the tree is inconsistent.
    pub(crate) fn check(&self) {
        self.state().check();
    }
}

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
        let entries = s.dir_entries_mut(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EXIST);
        }
        entries.insert(name.to_vec(), node.0);
        s.node_mut(node)?.links += 1;
        Ok(s.entry(node.0))
    }

    fn open(&self, _ctx: &Context, node: NodeId, flags: u32) -> FsResult<Opened> {
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

    fn read(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        buf: &mut [u8],
    ) -> FsResult<usize> {
        let mut s = self.state();
        s.handle(node, handle, false)?;
        let data = s.file_data(node.0)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let n = (data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write(
        &self,
        _ctx: &Context,
        node: NodeId,
        handle: Handle,
        offset: u64,
        data: &[u8],
        _flags: u32,
    ) -> FsResult<usize> {
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

    fn release(&self, _ctx: &Context, node: NodeId, handle: Handle, _flags: u32) -> FsResult<()> {
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
        mode: u32,
        _flags: u32,
        umask: u32,
    ) -> FsResult<(Entry, Opened)> {
        let mut s = self.state();
        if s.handles.len() >= MAX_HANDLES {
            return Err(Errno::MFILE);
        }
        let mode = S_IFREG | (mode & !umask & 0o7777);
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
