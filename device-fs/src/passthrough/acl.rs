//! POSIX ACLs (`--posix-acl`): FUSE_POSIX_ACL with DONT_MASK and SETXATTR_EXT.
//!
//! With ACLs negotiated the guest enforces them itself and stores them as the
//! `system.posix_acl_access` / `system.posix_acl_default` attributes, which pass to the host
//! unchanged. It also stops applying the caller's umask to the modes it sends (DONT_MASK), so the
//! server applies it, but only where the parent directory has no default ACL: a default ACL
//! replaces the umask (POSIX.1e). Setting an access ACL for a caller outside the file's group
//! clears S_ISGID when the guest asks (SETXATTR_ACL_KILL_SGID). This module decides modes and
//! names; the passthrough performs the calls.

/// The access ACL attribute.
pub(super) const ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL attribute of a directory.
pub(super) const DEFAULT: &std::ffi::CStr = c"system.posix_acl_default";

/// The mode to create with: the guest's `mode` less `umask`, unless ACLs are off (the guest
/// masked already) or the parent has a default ACL (which takes the umask's place).
pub(super) fn creation_mode(acl_on: bool, parent_has_default: bool, mode: u32, umask: u32) -> u32 {
    if acl_on && !parent_has_default {
        mode & !(umask & 0o777)
    } else {
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_umask_applies_only_without_a_default_acl() {
        assert_eq!(creation_mode(true, false, 0o100666, 0o022), 0o100644);
        assert_eq!(creation_mode(true, true, 0o100666, 0o077), 0o100666);
        assert_eq!(creation_mode(false, false, 0o100640, 0o077), 0o100640, "guest masked");
        assert_eq!(creation_mode(true, false, 0o042777, 0o7022), 0o042755, "only permission bits");
    }
}
