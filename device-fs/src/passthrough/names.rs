//! Validation of names the guest sends.
//!
//! A name is one path component: not empty, no `/` (NUL cannot occur in a `CStr`), not `.` or `..`,
//! at most 1 024 bytes (what a Linux guest sends at most); the host file system refuses a name
//! longer than it holds itself, as it would list one it holds (vfat, exfat or a FUSE mount
//! holds names past 255 bytes). Only such a name is ever handed to an `*at` call relative to a
//! node's fd, which is what keeps every operation inside the shared directory. This module does
//! no I/O.

use std::ffi::CStr;

use rustix::io::Errno;

/// Longest name accepted: Linux's FUSE client sends none longer (`FUSE_NAME_MAX`).
pub const FUSE_NAME_MAX: usize = 1024;

/// Checks that `name` is a single, ordinary path component.
///
/// `.` and `..` are refused with `EINVAL` everywhere: the Linux guest resolves them itself and
/// never sends them without EXPORT_SUPPORT, which is not claimed; `..` of the root would
/// otherwise leave the share.
pub fn validate(name: &CStr) -> Result<&CStr, Errno> {
    let bytes = name.to_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    if bytes.len() > FUSE_NAME_MAX {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_could_escape() {
        for bad in [&b"\0"[..], b".\0", b"..\0", b"a/b\0", b"/etc\0", b"../x\0"] {
            let name = CStr::from_bytes_with_nul(bad).expect("test names are NUL-terminated");
            assert_eq!(validate(name), Err(Errno::INVAL), "{name:?}");
        }
        let name = |n: usize| [b'x'].repeat(n).into_iter().chain([0]).collect::<Vec<_>>();
        let (host, long) = (name(300), name(FUSE_NAME_MAX + 1));
        let host = CStr::from_bytes_with_nul(&host).expect("one trailing NUL");
        assert!(validate(host).is_ok(), "past 255 bytes: the host file system decides");
        let long = CStr::from_bytes_with_nul(&long).expect("one trailing NUL");
        assert_eq!(validate(long), Err(Errno::NAMETOOLONG));
        assert!(validate(c"...").is_ok());
        assert!(validate(c".hidden").is_ok());
    }
}
