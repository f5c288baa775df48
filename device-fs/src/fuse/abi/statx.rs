//! STATX arguments (`fuse_statx_in`, `fuse_statx_out`, `fuse_statx`, `fuse_sx_time`; 7.39 layouts,
//! sent by Linux whatever minor was agreed when a caller asks for more than the basic stats).

wire_struct! {
    /// `fuse_statx_in`.
    pub struct StatxIn(24) {
        /// FUSE_GETATTR_* flags (GETATTR_FH: `fh` is valid).
        pub getattr_flags: u32,
        /// Reserved.
        pub reserved: u32,
        /// File handle.
        pub fh: u64,
        /// AT_STATX_* synchronisation flags.
        pub sx_flags: u32,
        /// STATX_* fields asked for.
        pub sx_mask: u32,
    }
}

wire_struct! {
    /// `fuse_sx_time`.
    pub struct SxTime(16) {
        /// Seconds.
        pub tv_sec: i64,
        /// Nanoseconds.
        pub tv_nsec: u32,
        /// Reserved.
        pub reserved: i32,
    }
}

wire_struct! {
    /// `fuse_statx`.
    pub struct Statx(256) {
        /// STATX_* fields filled in.
        pub mask: u32,
        /// Preferred I/O size.
        pub blksize: u32,
        /// STATX_ATTR_* flags.
        pub attributes: u64,
        /// Link count.
        pub nlink: u32,
        /// Owner.
        pub uid: u32,
        /// Group.
        pub gid: u32,
        /// File type and mode.
        pub mode: u16,
        /// Spare.
        pub spare0: u16,
        /// Inode number.
        pub ino: u64,
        /// Size in bytes.
        pub size: u64,
        /// 512-byte blocks.
        pub blocks: u64,
        /// STATX_ATTR_* flags the file system supports.
        pub attributes_mask: u64,
        /// Access time.
        pub atime: SxTime,
        /// Birth time.
        pub btime: SxTime,
        /// Change time.
        pub ctime: SxTime,
        /// Modification time.
        pub mtime: SxTime,
        /// Device major (special files).
        pub rdev_major: u32,
        /// Device minor (special files).
        pub rdev_minor: u32,
        /// Major of the containing device.
        pub dev_major: u32,
        /// Minor of the containing device.
        pub dev_minor: u32,
        /// Spare.
        pub spare2: [u64; 14],
    }
}

wire_struct! {
    /// `fuse_statx_out`.
    pub struct StatxOut(288) {
        /// Attribute cache timeout, seconds.
        pub attr_valid: u64,
        /// Attribute cache timeout, nanoseconds.
        pub attr_valid_nsec: u32,
        /// Flags.
        pub flags: u32,
        /// Spare.
        pub spare: [u64; 2],
        /// The result.
        pub stat: Statx,
    }
}
