//! Typed values exchanged between the server and a [`FileSystem`](super::FileSystem).
//!
//! These are the server's decoded view of request arguments and the pieces a file system returns;
//! converting them to wire structs is done here, choosing what a file system answers is not.

use std::time::Duration;

use super::abi::{fattr, Attr, AttrOut, EntryOut, SetattrIn};

/// Result of a file-system operation: an errno on failure.
pub type FsResult<T> = Result<T, rustix::io::Errno>;

/// A guest-visible node id (`nodeid` in the FUSE headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    /// FUSE_ROOT_ID.
    pub const ROOT: Self = Self(super::abi::ROOT_ID);
}

/// A file or directory handle (`fh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u64);

/// How a WRITE is to be done (`fuse_write_in`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteFlags {
    /// FUSE_WRITE_* (`write_flags`).
    pub write: u32,
    /// The guest file's open flags (`flags`), with O_DSYNC or O_SYNC when the guest asked
    /// this one write to be synchronous (`pwritev2` with RWF_DSYNC, a `sync` mount).
    pub file: u32,
}

impl WriteFlags {
    /// FUSE_WRITE_CACHE: a write-back of the guest's page cache through a handle the guest
    /// kernel picked among the file's writable ones, whatever that handle's own flags.
    pub fn cache(self) -> bool {
        self.write & super::abi::WRITE_CACHE != 0
    }

    /// FUSE_WRITE_KILL_SUIDGID.
    pub fn kill_suidgid(self) -> bool {
        self.write & super::abi::WRITE_KILL_SUIDGID != 0
    }
}

/// A security context the guest wants a new inode to carry (FUSE_SECURITY_CTX extension): an
/// attribute name such as `security.selinux` and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityContext {
    /// The attribute name.
    pub name: std::ffi::CString,
    /// The label.
    pub value: Vec<u8>,
}

/// The credentials and process a request came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Caller's uid.
    pub uid: u32,
    /// Caller's gid.
    pub gid: u32,
    /// Caller's pid.
    pub pid: u32,
    /// The supplementary group the guest named for a create (FUSE_CREATE_SUPP_GROUP extension):
    /// the caller is a member and it owns the parent directory.
    pub supp_group: Option<u32>,
    /// The label a created inode must carry (CREATE, MKNOD, MKDIR, SYMLINK, TMPFILE with
    /// SECURITY_CTX negotiated).
    pub security: Option<SecurityContext>,
}

/// A looked-up or created directory entry; each one returned takes one lookup reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Node id (0 for a negative entry).
    pub node: NodeId,
    /// Generation of the node id.
    pub generation: u64,
    /// Attributes.
    pub attr: Attr,
    /// How long the guest may cache the attributes.
    pub attr_timeout: Duration,
    /// How long the guest may cache the name.
    pub entry_timeout: Duration,
}

impl Entry {
    /// The `fuse_entry_out` for this entry.
    pub fn to_wire(&self) -> EntryOut {
        EntryOut {
            nodeid: self.node.0,
            generation: self.generation,
            entry_valid: self.entry_timeout.as_secs(),
            attr_valid: self.attr_timeout.as_secs(),
            entry_valid_nsec: self.entry_timeout.subsec_nanos(),
            attr_valid_nsec: self.attr_timeout.subsec_nanos(),
            attr: self.attr,
        }
    }
}

/// Attributes with their cache timeout (GETATTR and SETATTR replies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrReply {
    /// Attributes.
    pub attr: Attr,
    /// How long the guest may cache them.
    pub timeout: Duration,
}

impl AttrReply {
    /// The `fuse_attr_out` for this reply.
    pub fn to_wire(&self) -> AttrOut {
        AttrOut {
            attr_valid: self.timeout.as_secs(),
            attr_valid_nsec: self.timeout.subsec_nanos(),
            dummy: 0,
            attr: self.attr,
        }
    }
}

/// An opened file or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The handle the guest passes back.
    pub handle: Handle,
    /// FOPEN_* flags.
    pub flags: u32,
}

/// A timestamp to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// The current time (FATTR_*TIME_NOW).
    Now,
    /// Seconds and nanoseconds since the epoch.
    At(u64, u32),
}

/// The changes a SETATTR asks for; `None` means "leave unchanged".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// The handle the guest has open, if any (FATTR_FH).
    pub handle: Option<Handle>,
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
    /// FATTR_CTIME: the change time must move to now (Linux cannot set it to another value).
    pub ctime: bool,
    /// FATTR_KILL_SUIDGID: a truncation or owner change must clear set-id bits.
    pub kill_suidgid: bool,
}

impl SetAttr {
    /// Decodes `fuse_setattr_in` according to its `valid` bits.
    pub fn from_wire(w: &SetattrIn) -> Self {
        let has = |bit: u32| w.valid & bit != 0;
        let time = |set: u32, now: u32, secs: u64, nsecs: u32| {
            if has(now) {
                Some(SetTime::Now)
            } else if has(set) {
                Some(SetTime::At(secs, nsecs))
            } else {
                None
            }
        };
        Self {
            handle: has(fattr::FH).then_some(Handle(w.fh)),
            mode: has(fattr::MODE).then_some(w.mode),
            uid: has(fattr::UID).then_some(w.uid),
            gid: has(fattr::GID).then_some(w.gid),
            size: has(fattr::SIZE).then_some(w.size),
            atime: time(fattr::ATIME, fattr::ATIME_NOW, w.atime, w.atimensec),
            mtime: time(fattr::MTIME, fattr::MTIME_NOW, w.mtime, w.mtimensec),
            ctime: has(fattr::CTIME),
            kill_suidgid: has(fattr::KILL_SUIDGID),
        }
    }
}

/// Reply to GETXATTR / LISTXATTR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// The size of the value or list (the request asked with size 0).
    Size(u32),
    /// The value or the NUL-separated list of names.
    Data(Vec<u8>),
}

/// Arguments of COPY_FILE_RANGE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyRange {
    /// Source node and handle.
    pub node_in: NodeId,
    /// Source handle.
    pub handle_in: Handle,
    /// Source offset.
    pub offset_in: u64,
    /// Destination node.
    pub node_out: NodeId,
    /// Destination handle.
    pub handle_out: Handle,
    /// Destination offset.
    pub offset_out: u64,
    /// Bytes to copy.
    pub len: u64,
    /// Flags (must be 0 today).
    pub flags: u64,
}

/// One entry of a directory listing, as a file system reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// Inode number.
    pub ino: u64,
    /// Cookie of the entry after this one.
    pub next_offset: u64,
    /// File type (`mode >> 12`, the `DT_*` value).
    pub typ: u32,
    /// The name, without NUL.
    pub name: &'a [u8],
}
