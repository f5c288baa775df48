//! Lock arguments: GETLK, SETLK and SETLKW (`fuse_lk_in`, `fuse_lk_out`, `fuse_file_lock`).

/// FUSE_LK_FLOCK (`fuse_lk_in.lk_flags`): a BSD `flock(2)` lock rather than a POSIX one.
pub const LK_FLOCK: u32 = 1 << 0;
/// FUSE_RELEASE_FLOCK_UNLOCK (`fuse_release_in.release_flags`): drop the owner's flock lock.
pub const RELEASE_FLOCK_UNLOCK: u32 = 1 << 1;

wire_struct! {
    /// `fuse_file_lock`: a byte range, inclusive at both ends (`end` = `i64::MAX` for "to the
    /// end of the file"), with its type (F_RDLCK 0, F_WRLCK 1, F_UNLCK 2) and holder pid.
    pub struct FileLock(24) {
        /// First byte.
        pub start: u64,
        /// Last byte.
        pub end: u64,
        /// F_RDLCK, F_WRLCK or F_UNLCK.
        pub typ: u32,
        /// Process holding it (in the guest's numbering).
        pub pid: u32,
    }
}

wire_struct! {
    /// `fuse_lk_in`.
    pub struct LkIn(48) {
        /// File handle.
        pub fh: u64,
        /// Lock owner.
        pub owner: u64,
        /// The lock.
        pub lk: FileLock,
        /// FUSE_LK_* flags.
        pub lk_flags: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `fuse_lk_out`.
    pub struct LkOut(24) {
        /// The conflicting lock, or F_UNLCK.
        pub lk: FileLock,
    }
}
