//! Request and reply headers, INIT and its flag bits.

/// Protocol major version.
pub const KERNEL_VERSION: u32 = 7;
/// The minor version this server speaks.
pub const KERNEL_MINOR_VERSION: u32 = 38;
/// The oldest minor version this server accepts.
pub const MIN_KERNEL_MINOR_VERSION: u32 = 27;
/// `FUSE_ROOT_ID`.
pub const ROOT_ID: u64 = 1;
/// Size of `fuse_init_in` before 7.36 (no `flags2`).
pub const INIT_IN_COMPAT_SIZE: usize = 16;

wire_struct! {
    /// `struct fuse_in_header`.
    pub struct InHeader(40) {
        /// Total request length including this header.
        pub len: u32,
        /// Opcode.
        pub opcode: u32,
        /// Request id, echoed in the reply.
        pub unique: u64,
        /// Target node.
        pub nodeid: u64,
        /// Caller's uid.
        pub uid: u32,
        /// Caller's gid.
        pub gid: u32,
        /// Caller's pid.
        pub pid: u32,
        /// Length of request extensions in units of 8 bytes (7.38).
        pub total_extlen: u16,
        /// Padding.
        pub padding: u16,
    }
}

wire_struct! {
    /// `struct fuse_out_header`.
    pub struct OutHeader(16) {
        /// Total reply length including this header.
        pub len: u32,
        /// 0 or a negative errno.
        pub error: i32,
        /// The request's `unique`.
        pub unique: u64,
    }
}

wire_struct! {
    /// `struct fuse_init_in` (64 bytes since 7.36; older guests send the first 16).
    pub struct InitIn(64) {
        /// Major version.
        pub major: u32,
        /// Minor version.
        pub minor: u32,
        /// Readahead the guest wants.
        pub max_readahead: u32,
        /// Flags, bits 0–31.
        pub flags: u32,
        /// Flags, bits 32–63 (only with INIT_EXT).
        pub flags2: u32,
        /// Unused.
        pub unused: [u32; 11],
    }
}

wire_struct! {
    /// `struct fuse_init_out`.
    pub struct InitOut(64) {
        /// Major version.
        pub major: u32,
        /// Minor version.
        pub minor: u32,
        /// Readahead granted.
        pub max_readahead: u32,
        /// Flags, bits 0–31.
        pub flags: u32,
        /// Background request limit.
        pub max_background: u16,
        /// Background congestion threshold.
        pub congestion_threshold: u16,
        /// Largest WRITE payload.
        pub max_write: u32,
        /// Timestamp granularity in ns.
        pub time_gran: u32,
        /// Largest request in pages (with MAX_PAGES).
        pub max_pages: u16,
        /// DAX mapping alignment (with MAP_ALIGNMENT).
        pub map_alignment: u16,
        /// Flags, bits 32–63.
        pub flags2: u32,
        /// Stacking depth (with PASSTHROUGH).
        pub max_stack_depth: u32,
        /// Request timeout (with REQUEST_TIMEOUT).
        pub request_timeout: u16,
        /// Unused.
        pub unused: [u16; 11],
    }
}

bitflags::bitflags! {
    /// INIT flags as one 64-bit set (`flags | flags2 << 32`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct InitFlags: u64 {
        /// FUSE_ASYNC_READ.
        const ASYNC_READ = 1 << 0;
        /// FUSE_POSIX_LOCKS.
        const POSIX_LOCKS = 1 << 1;
        /// FUSE_FILE_OPS.
        const FILE_OPS = 1 << 2;
        /// FUSE_ATOMIC_O_TRUNC.
        const ATOMIC_O_TRUNC = 1 << 3;
        /// FUSE_EXPORT_SUPPORT.
        const EXPORT_SUPPORT = 1 << 4;
        /// FUSE_BIG_WRITES.
        const BIG_WRITES = 1 << 5;
        /// FUSE_DONT_MASK.
        const DONT_MASK = 1 << 6;
        /// FUSE_SPLICE_WRITE.
        const SPLICE_WRITE = 1 << 7;
        /// FUSE_SPLICE_MOVE.
        const SPLICE_MOVE = 1 << 8;
        /// FUSE_SPLICE_READ.
        const SPLICE_READ = 1 << 9;
        /// FUSE_FLOCK_LOCKS.
        const FLOCK_LOCKS = 1 << 10;
        /// FUSE_HAS_IOCTL_DIR.
        const HAS_IOCTL_DIR = 1 << 11;
        /// FUSE_AUTO_INVAL_DATA.
        const AUTO_INVAL_DATA = 1 << 12;
        /// FUSE_DO_READDIRPLUS.
        const DO_READDIRPLUS = 1 << 13;
        /// FUSE_READDIRPLUS_AUTO.
        const READDIRPLUS_AUTO = 1 << 14;
        /// FUSE_ASYNC_DIO.
        const ASYNC_DIO = 1 << 15;
        /// FUSE_WRITEBACK_CACHE.
        const WRITEBACK_CACHE = 1 << 16;
        /// FUSE_NO_OPEN_SUPPORT.
        const NO_OPEN_SUPPORT = 1 << 17;
        /// FUSE_PARALLEL_DIROPS.
        const PARALLEL_DIROPS = 1 << 18;
        /// FUSE_HANDLE_KILLPRIV.
        const HANDLE_KILLPRIV = 1 << 19;
        /// FUSE_POSIX_ACL.
        const POSIX_ACL = 1 << 20;
        /// FUSE_ABORT_ERROR.
        const ABORT_ERROR = 1 << 21;
        /// FUSE_MAX_PAGES.
        const MAX_PAGES = 1 << 22;
        /// FUSE_CACHE_SYMLINKS.
        const CACHE_SYMLINKS = 1 << 23;
        /// FUSE_NO_OPENDIR_SUPPORT.
        const NO_OPENDIR_SUPPORT = 1 << 24;
        /// FUSE_EXPLICIT_INVAL_DATA.
        const EXPLICIT_INVAL_DATA = 1 << 25;
        /// FUSE_MAP_ALIGNMENT.
        const MAP_ALIGNMENT = 1 << 26;
        /// FUSE_SUBMOUNTS.
        const SUBMOUNTS = 1 << 27;
        /// FUSE_HANDLE_KILLPRIV_V2.
        const HANDLE_KILLPRIV_V2 = 1 << 28;
        /// FUSE_SETXATTR_EXT.
        const SETXATTR_EXT = 1 << 29;
        /// FUSE_INIT_EXT: `flags2` is valid.
        const INIT_EXT = 1 << 30;
        /// FUSE_INIT_RESERVED.
        const INIT_RESERVED = 1 << 31;
        /// FUSE_SECURITY_CTX.
        const SECURITY_CTX = 1 << 32;
        /// FUSE_HAS_INODE_DAX.
        const HAS_INODE_DAX = 1 << 33;
        /// FUSE_CREATE_SUPP_GROUP.
        const CREATE_SUPP_GROUP = 1 << 34;
        /// FUSE_HAS_EXPIRE_ONLY.
        const HAS_EXPIRE_ONLY = 1 << 35;
        /// FUSE_DIRECT_IO_ALLOW_MMAP.
        const DIRECT_IO_ALLOW_MMAP = 1 << 36;
        /// FUSE_PASSTHROUGH.
        const PASSTHROUGH = 1 << 37;
        /// FUSE_NO_EXPORT_SUPPORT.
        const NO_EXPORT_SUPPORT = 1 << 38;
        /// FUSE_HAS_RESEND.
        const HAS_RESEND = 1 << 39;
        /// FUSE_ALLOW_IDMAP.
        const ALLOW_IDMAP = 1 << 40;
        /// FUSE_OVER_IO_URING.
        const OVER_IO_URING = 1 << 41;
        /// FUSE_REQUEST_TIMEOUT.
        const REQUEST_TIMEOUT = 1 << 42;
    }
}
