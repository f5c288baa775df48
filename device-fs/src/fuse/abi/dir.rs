//! Namespace arguments (mkdir, mknod, rename, link, forget) and directory entry records.

/// Offset of the name inside a READDIR record (`FUSE_NAME_OFFSET`).
pub const DIRENT_NAME_OFFSET: usize = 24;
/// Offset of the name inside a READDIRPLUS record.
pub const DIRENTPLUS_NAME_OFFSET: usize = 152;

wire_struct! {
    /// `struct fuse_forget_in`.
    pub struct ForgetIn(8) {
        /// Lookups to drop.
        pub nlookup: u64,
    }
}

wire_struct! {
    /// `struct fuse_forget_one`.
    pub struct ForgetOne(16) {
        /// Node.
        pub nodeid: u64,
        /// Lookups to drop.
        pub nlookup: u64,
    }
}

wire_struct! {
    /// `struct fuse_batch_forget_in`; `count` [`ForgetOne`] follow.
    pub struct BatchForgetIn(8) {
        /// Number of entries.
        pub count: u32,
        /// Padding.
        pub dummy: u32,
    }
}

wire_struct! {
    /// `struct fuse_mkdir_in`; the name follows.
    pub struct MkdirIn(8) {
        /// Mode.
        pub mode: u32,
        /// Caller's umask.
        pub umask: u32,
    }
}

wire_struct! {
    /// `struct fuse_mknod_in`; the name follows.
    pub struct MknodIn(16) {
        /// Mode including the file type.
        pub mode: u32,
        /// Device number.
        pub rdev: u32,
        /// Caller's umask.
        pub umask: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_rename_in`; old and new names follow.
    pub struct RenameIn(8) {
        /// New parent directory.
        pub newdir: u64,
    }
}

wire_struct! {
    /// `struct fuse_rename2_in`; old and new names follow.
    pub struct Rename2In(16) {
        /// New parent directory.
        pub newdir: u64,
        /// RENAME_* flags.
        pub flags: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_link_in`; the new name follows.
    pub struct LinkIn(8) {
        /// The node to link.
        pub oldnodeid: u64,
    }
}

wire_struct! {
    /// `struct fuse_dirent` without its name.
    pub struct Dirent(24) {
        /// Inode number.
        pub ino: u64,
        /// Cookie of the next entry.
        pub off: u64,
        /// Name length.
        pub namelen: u32,
        /// `mode >> 12`.
        pub typ: u32,
    }
}

wire_struct! {
    /// `struct fuse_direntplus` without its name.
    pub struct Direntplus(152) {
        /// Entry as for LOOKUP (nodeid 0: no entry information).
        pub entry_out: super::EntryOut,
        /// The directory entry.
        pub dirent: Dirent,
    }
}
