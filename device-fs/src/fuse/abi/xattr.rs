//! Extended-attribute arguments.

/// FUSE_SETXATTR_ACL_KILL_SGID (`fuse_setxattr_in.setxattr_flags`): setting this access ACL
/// must also clear S_ISGID (the caller is neither in the group nor privileged).
pub const SETXATTR_ACL_KILL_SGID: u32 = 1 << 0;

wire_struct! {
    /// `struct fuse_setxattr_in` as sent when SETXATTR_EXT was not replied; name and value follow.
    pub struct SetxattrInCompat(8) {
        /// Value length.
        pub size: u32,
        /// `setxattr(2)` flags.
        pub flags: u32,
    }
}

wire_struct! {
    /// `struct fuse_setxattr_in` (with SETXATTR_EXT).
    pub struct SetxattrIn(16) {
        /// Value length.
        pub size: u32,
        /// `setxattr(2)` flags.
        pub flags: u32,
        /// FUSE_SETXATTR_* flags.
        pub setxattr_flags: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_getxattr_in` (GETXATTR and LISTXATTR); for GETXATTR the name follows.
    pub struct GetxattrIn(8) {
        /// Buffer size; 0 asks for the size only.
        pub size: u32,
        /// Padding.
        pub padding: u32,
    }
}

wire_struct! {
    /// `struct fuse_getxattr_out`: the size reply when the request's size was 0.
    pub struct GetxattrOut(8) {
        /// Size of the value or list.
        pub size: u32,
        /// Padding.
        pub padding: u32,
    }
}
