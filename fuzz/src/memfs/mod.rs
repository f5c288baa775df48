//! A small, deterministic in-memory [`FileSystem`] for the FUSE target: no host I/O, bounded
//! sizes, and a consistency check the target runs after every request.
//!
//! It starts as `/file`, `/dir/nested`, `/link -> file` and `/fifo`, and supports the whole
//! trait: names and links, reads and writes, directory listings (with lookup references for
//! READDIRPLUS), extended attributes, fallocate, lseek and copy_file_range. Node and handle ids
//! count up from small numbers so that fuzzed ids hit them. A node lives while it has a name, a
//! lookup reference or an open handle.
//!
//! This module holds the limits and the node, handle and tree types; the tree's operations, its
//! consistency check and the [`FileSystem`] implementation live in the submodules.
//!
//! [`FileSystem`]: vhu_device_fs::fuse::FileSystem

mod check;
mod fs;
mod namespace;
mod readdir;
mod state;

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rustix::io::Errno;
use vhu_device_fs::fuse::{Context, FsResult};

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
