//! DAX mapping requests: `fuse_setupmapping_in`, `fuse_removemapping_in` and its entries.

wire_struct! {
    /// `struct fuse_setupmapping_in`: map `len` bytes of a file at `foffset` into the DAX window
    /// at `moffset`.
    pub struct SetupMappingIn(40) {
        /// File handle, or `u64::MAX` (all ones) for "the node itself" (what Linux sends).
        pub fh: u64,
        /// Offset in the file.
        pub foffset: u64,
        /// Length of the mapping.
        pub len: u64,
        /// `SETUPMAPPING_FLAG_*`.
        pub flags: u64,
        /// Offset in the DAX window.
        pub moffset: u64,
    }
}

wire_struct! {
    /// `struct fuse_removemapping_in`: `count` [`RemoveMappingOne`] entries follow, unaligned.
    pub struct RemoveMappingIn(4) {
        /// Entries that follow.
        pub count: u32,
    }
}

wire_struct! {
    /// `struct fuse_removemapping_one`.
    pub struct RemoveMappingOne(16) {
        /// Offset in the DAX window.
        pub moffset: u64,
        /// Length.
        pub len: u64,
    }
}

/// `FUSE_SETUPMAPPING_FLAG_WRITE`: the guest may write through the mapping.
pub const SETUPMAPPING_FLAG_WRITE: u64 = 1 << 0;
/// `FUSE_SETUPMAPPING_FLAG_READ`.
pub const SETUPMAPPING_FLAG_READ: u64 = 1 << 1;
/// `FUSE_REMOVEMAPPING_MAX_ENTRY`: entries one REMOVEMAPPING may carry, a page of them (Linux
/// counts it in its own pages: 4096 entries on a 64 KiB-page guest).
pub const REMOVEMAPPING_MAX_ENTRY: u32 = 65536 / 16;
/// The `fh` of a SETUPMAPPING that names no open file: the node is mapped as itself.
pub const SETUPMAPPING_NO_HANDLE: u64 = u64::MAX;
