//! The node table of the in-memory file system: the initial tree, node and directory lookups,
//! attributes, lookup references and dropping, node creation, and open handles.

use std::collections::BTreeMap;
use std::ffi::CStr;

use rustix::io::Errno;
use vhu_device_fs::fuse::abi::Attr;
use vhu_device_fs::fuse::{Context, Entry, FsResult, Handle, NodeId, Opened};

use super::{
    new_name, timeout, Kind, Node, Open, State, MAX_HANDLES, MAX_NODES, ROOT, S_IFDIR, S_IFIFO,
    S_IFLNK, S_IFREG,
};

impl State {
    pub(super) fn initial() -> Self {
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

    pub(super) fn node(&self, id: NodeId) -> FsResult<&Node> {
        self.nodes.get(&id.0).ok_or(Errno::NOENT)
    }

    pub(super) fn node_mut(&mut self, id: NodeId) -> FsResult<&mut Node> {
        self.nodes.get_mut(&id.0).ok_or(Errno::NOENT)
    }

    pub(super) fn dir_entries(&self, id: NodeId) -> FsResult<&BTreeMap<Vec<u8>, u64>> {
        match &self.node(id)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::NOTDIR),
        }
    }

    /// The entries of a directory that still has a name, for adding one: Linux refuses to
    /// create, link or rename anything into a removed directory with ENOENT (the check behind
    /// `IS_DEADDIR` in `fs/namei.c`), even while a lookup reference keeps it alive.
    pub(super) fn live_dir_entries(&self, id: NodeId) -> FsResult<&BTreeMap<Vec<u8>, u64>> {
        let entries = self.dir_entries(id)?;
        if id.0 != ROOT && self.nodes[&id.0].links == 0 {
            return Err(Errno::NOENT);
        }
        Ok(entries)
    }

    pub(super) fn dir_entries_mut(&mut self, id: NodeId) -> FsResult<&mut BTreeMap<Vec<u8>, u64>> {
        match &mut self.node_mut(id)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::NOTDIR),
        }
    }

    pub(super) fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub(super) fn attr(&self, id: u64) -> Attr {
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
    pub(super) fn entry(&mut self, id: u64) -> Entry {
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
    pub(super) fn maybe_drop(&mut self, id: u64) {
        let Some(n) = self.nodes.get(&id) else { return };
        let open = self.handles.values().any(|h| h.node == id);
        if id != ROOT && n.links == 0 && n.lookups == 0 && !open {
            self.nodes.remove(&id);
        }
    }

    pub(super) fn add_node(&mut self, parent: NodeId, name: &[u8], node: Node) -> FsResult<u64> {
        if self.live_dir_entries(parent)?.contains_key(name) {
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

    pub(super) fn create_node(
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

    pub(super) fn open(&mut self, node: NodeId, dir: bool) -> FsResult<Opened> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Errno::MFILE);
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(handle, Open { node: node.0, dir });
        Ok(Opened { handle: Handle(handle), flags: 0 })
    }

    /// The open handle `handle` of `node`, of the given kind.
    pub(super) fn handle(&self, node: NodeId, handle: Handle, dir: bool) -> FsResult<Open> {
        match self.handles.get(&handle.0) {
            Some(&h) if h.node == node.0 && h.dir == dir => Ok(h),
            _ => Err(Errno::BADF),
        }
    }

    pub(super) fn file_data(&mut self, node: u64) -> FsResult<&mut Vec<u8>> {
        match &mut self.nodes.get_mut(&node).ok_or(Errno::BADF)?.kind {
            Kind::File(data) => Ok(data),
            Kind::Dir { .. } => Err(Errno::ISDIR),
            _ => Err(Errno::INVAL),
        }
    }
}
