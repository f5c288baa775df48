//! File I/O arguments: open, read, write, release, flush, fsync, create and the range operations.

/// FOPEN_* bits of `fuse_open_out.open_flags`.
pub mod fopen {
    /// FOPEN_DIRECT_IO: bypass the guest page cache.
    pub const DIRECT_IO: u32 = 1 << 0;
    /// FOPEN_KEEP_CACHE: keep cached data on open.
    pub const KEEP_CACHE: u32 = 1 << 1;
    /// FOPEN_NONSEEKABLE.
    pub const NONSEEKABLE: u32 = 1 << 2;
    /// FOPEN_CACHE_DIR (OPENDIR only).
    pub const CACHE_DIR: u32 = 1 << 3;
    /// FOPEN_STREAM.
    pub const STREAM: u32 = 1 << 4;
    /// FOPEN_NOFLUSH.
    pub const NOFLUSH: u32 = 1 << 5;
}

/// FSYNC_FDATASYNC: sync data only.
pub const FSYNC_FDATASYNC: u32 = 1 << 0;
/// FUSE_OPEN_KILL_SUIDGID (`fuse_open_in.open_flags`): clear set-id bits on an O_TRUNC open.
pub const OPEN_KILL_SUIDGID: u32 = 1 << 0;
/// FUSE_WRITE_CACHE: a write-back write.
pub const WRITE_CACHE: u32 = 1 << 0;
/// FUSE_WRITE_LOCKOWNER: `lock_owner` is valid.
pub const WRITE_LOCKOWNER: u32 = 1 << 1;
/// FUSE_WRITE_KILL_SUIDGID.
pub const WRITE_KILL_SUIDGID: u32 = 1 << 2;
/// FUSE_RELEASE_FLUSH.
pub const RELEASE_FLUSH: u32 = 1 << 0;

wire_struct! {
    /// `struct fuse_open_in` (OPEN and OPENDIR).
    pub struct OpenIn(8) {
        /// `open(2)` flags.
        pub flags: u32,
        /// FUSE_OPEN_* flags (7.33).
        pub open_flags: u32,
    }
}

wire_struct! {
    /// `struct fuse_open_out`.
    pub struct OpenOut(16) {
        /// File handle.
        pub fh: u64,
        /// FOPEN_* flags.
        pub open_flags: u32,
        /// Passthrough backing id (7.40); 0 here.
        pub backing_id: i32,
    }
}

wire_struct! {
    /// `struct fuse_create_in`; the name follows.
    pub struct CreateIn(16) {
        /// `open(2)` flags.
        pub flags: u32,
        /// Mode of the new file.
        pub mode: u32,
        /// Caller's umask.
        pub umask: u32,
        /// FUSE_OPEN_* flags.
        pub open_flags: u32,
    }
}

wire_struct! {
    /// `struct fuse_read_in` (READ and READDIR/READDIRPLUS).
    pub struct ReadIn(40) {
        /// File handle.
        pub fh: u64,
        /// Offset (a directory cookie for READDIR).
        pub offset: u64,
        /// Bytes requested.
        pub size: u32,
        /// FUSE_READ_* flags.
        pub read_flags: u32,
        /// Lock owner.
        pub lock_owner: u64,
        /// `open(2)` flags of the file.
        pub flags: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_write_in`; the data follows.
    pub struct WriteIn(40) {
        /// File handle.
        pub fh: u64,
        /// Offset.
        pub offset: u64,
        /// Bytes of data.
        pub size: u32,
        /// FUSE_WRITE_* flags.
        pub write_flags: u32,
        /// Lock owner.
        pub lock_owner: u64,
        /// `open(2)` flags of the file.
        pub flags: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_write_out` (WRITE and COPY_FILE_RANGE).
    pub struct WriteOut(8) {
        /// Bytes written.
        pub size: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_release_in` (RELEASE and RELEASEDIR).
    pub struct ReleaseIn(24) {
        /// File handle.
        pub fh: u64,
        /// `open(2)` flags.
        pub flags: u32,
        /// FUSE_RELEASE_* flags.
        pub release_flags: u32,
        /// Lock owner.
        pub lock_owner: u64,
    }
}

wire_struct! {
    /// `struct fuse_flush_in`.
    pub struct FlushIn(24) {
        /// File handle.
        pub fh: u64,
        /// Unused.
        pub unused: u32,
        /// Padding.
        pub padding: u32,
        /// Lock owner.
        pub lock_owner: u64,
    }
}

wire_struct! {
    /// `struct fuse_fsync_in` (FSYNC and FSYNCDIR).
    pub struct FsyncIn(16) {
        /// File handle.
        pub fh: u64,
        /// FSYNC_FDATASYNC.
        pub fsync_flags: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_access_in`.
    pub struct AccessIn(8) {
        /// `access(2)` mask.
        pub mask: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_fallocate_in`.
    pub struct FallocateIn(32) {
        /// File handle.
        pub fh: u64,
        /// Offset.
        pub offset: u64,
        /// Length.
        pub length: u64,
        /// `fallocate(2)` mode.
        pub mode: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_lseek_in`.
    pub struct LseekIn(24) {
        /// File handle.
        pub fh: u64,
        /// Offset.
        pub offset: u64,
        /// SEEK_* whence.
        pub whence: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_lseek_out`.
    pub struct LseekOut(8) {
        /// Resulting offset.
        pub offset: u64,
    }
}

wire_struct! {
    /// `struct fuse_copy_file_range_in`.
    pub struct CopyFileRangeIn(56) {
        /// Source file handle.
        pub fh_in: u64,
        /// Source offset.
        pub off_in: u64,
        /// Destination node.
        pub nodeid_out: u64,
        /// Destination file handle.
        pub fh_out: u64,
        /// Destination offset.
        pub off_out: u64,
        /// Bytes to copy.
        pub len: u64,
        /// `copy_file_range(2)` flags.
        pub flags: u64,
    }
}

wire_struct! {
    /// `struct fuse_interrupt_in`.
    pub struct InterruptIn(8) {
        /// `unique` of the request to interrupt.
        pub unique: u64,
    }
}

wire_struct! {
    /// `struct fuse_syncfs_in`.
    pub struct SyncfsIn(8) {
        /// Padding.
        pub padding: u64,
    }
}
