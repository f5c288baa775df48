//! Attributes: `fuse_attr`, entry and attr replies, GETATTR/SETATTR arguments and STATFS.

/// GETATTR_FH: `fuse_getattr_in.fh` is valid.
pub const GETATTR_FH: u32 = 1 << 0;

/// FATTR_* bits of `fuse_setattr_in.valid`.
pub mod fattr {
    /// FATTR_MODE.
    pub const MODE: u32 = 1 << 0;
    /// FATTR_UID.
    pub const UID: u32 = 1 << 1;
    /// FATTR_GID.
    pub const GID: u32 = 1 << 2;
    /// FATTR_SIZE.
    pub const SIZE: u32 = 1 << 3;
    /// FATTR_ATIME.
    pub const ATIME: u32 = 1 << 4;
    /// FATTR_MTIME.
    pub const MTIME: u32 = 1 << 5;
    /// FATTR_FH.
    pub const FH: u32 = 1 << 6;
    /// FATTR_ATIME_NOW.
    pub const ATIME_NOW: u32 = 1 << 7;
    /// FATTR_MTIME_NOW.
    pub const MTIME_NOW: u32 = 1 << 8;
    /// FATTR_LOCKOWNER.
    pub const LOCKOWNER: u32 = 1 << 9;
    /// FATTR_CTIME.
    pub const CTIME: u32 = 1 << 10;
    /// FATTR_KILL_SUIDGID.
    pub const KILL_SUIDGID: u32 = 1 << 11;
}

wire_struct! {
    /// `struct fuse_attr`.
    pub struct Attr(88) {
        /// Inode number.
        pub ino: u64,
        /// Size in bytes.
        pub size: u64,
        /// 512-byte blocks.
        pub blocks: u64,
        /// Access time, seconds.
        pub atime: u64,
        /// Modification time, seconds.
        pub mtime: u64,
        /// Change time, seconds.
        pub ctime: u64,
        /// Access time, nanoseconds.
        pub atimensec: u32,
        /// Modification time, nanoseconds.
        pub mtimensec: u32,
        /// Change time, nanoseconds.
        pub ctimensec: u32,
        /// File type and mode.
        pub mode: u32,
        /// Link count.
        pub nlink: u32,
        /// Owner.
        pub uid: u32,
        /// Group.
        pub gid: u32,
        /// Device number.
        pub rdev: u32,
        /// Preferred I/O size.
        pub blksize: u32,
        /// FUSE_ATTR_* flags.
        pub flags: u32,
    }
}

wire_struct! {
    /// `struct fuse_entry_out`: reply to LOOKUP and the creating operations.
    pub struct EntryOut(128) {
        /// Node id (0: negative entry).
        pub nodeid: u64,
        /// Generation of the node id.
        pub generation: u64,
        /// Entry cache timeout, seconds.
        pub entry_valid: u64,
        /// Attribute cache timeout, seconds.
        pub attr_valid: u64,
        /// Entry cache timeout, nanoseconds.
        pub entry_valid_nsec: u32,
        /// Attribute cache timeout, nanoseconds.
        pub attr_valid_nsec: u32,
        /// Attributes.
        pub attr: Attr,
    }
}

wire_struct! {
    /// `struct fuse_attr_out`: reply to GETATTR and SETATTR.
    pub struct AttrOut(104) {
        /// Attribute cache timeout, seconds.
        pub attr_valid: u64,
        /// Attribute cache timeout, nanoseconds.
        pub attr_valid_nsec: u32,
        /// Padding.
        pub dummy: u32,
        /// Attributes.
        pub attr: Attr,
    }
}

wire_struct! {
    /// `struct fuse_getattr_in`.
    pub struct GetattrIn(16) {
        /// GETATTR_FH.
        pub getattr_flags: u32,
        /// Padding.
        pub dummy: u32,
        /// File handle (with GETATTR_FH).
        pub fh: u64,
    }
}

wire_struct! {
    /// `struct fuse_setattr_in`.
    pub struct SetattrIn(88) {
        /// FATTR_* bits saying which fields are valid.
        pub valid: u32,
        /// Padding.
        pub padding: u32,
        /// File handle (with FATTR_FH).
        pub fh: u64,
        /// New size.
        pub size: u64,
        /// Lock owner (with FATTR_LOCKOWNER).
        pub lock_owner: u64,
        /// Access time, seconds.
        pub atime: u64,
        /// Modification time, seconds.
        pub mtime: u64,
        /// Change time, seconds.
        pub ctime: u64,
        /// Access time, nanoseconds.
        pub atimensec: u32,
        /// Modification time, nanoseconds.
        pub mtimensec: u32,
        /// Change time, nanoseconds.
        pub ctimensec: u32,
        /// New mode.
        pub mode: u32,
        /// Unused.
        pub unused4: u32,
        /// New owner.
        pub uid: u32,
        /// New group.
        pub gid: u32,
        /// Unused.
        pub unused5: u32,
    }
}

wire_struct! {
    /// `struct fuse_kstatfs`, the whole of `fuse_statfs_out`.
    pub struct Kstatfs(80) {
        /// Total blocks.
        pub blocks: u64,
        /// Free blocks.
        pub bfree: u64,
        /// Blocks available to unprivileged users.
        pub bavail: u64,
        /// Total inodes.
        pub files: u64,
        /// Free inodes.
        pub ffree: u64,
        /// Block size.
        pub bsize: u32,
        /// Longest name.
        pub namelen: u32,
        /// Fragment size.
        pub frsize: u32,
        /// Padding.
        pub padding: u32,
        /// Spare.
        pub spare: [u32; 6],
    }
}

/// `struct fuse_statfs_out`.
pub type StatfsOut = Kstatfs;
