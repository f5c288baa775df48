//! POSIX ACLs (`--posix-acl`): negotiation, the umask the server applies once the guest stops
//! masking (DONT_MASK) unless a default ACL takes its place, and S_ISGID cleared when the guest
//! sets an access ACL for a caller outside the group (SETXATTR_EXT, ACL_KILL_SGID), and
//! creations a named-group entry lets a guest user make.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use support::{args, cstr, is_root, linux_guest_flags, Harness};
use vhu_device_fs::fuse::abi::{
    CreateIn, InitFlags, InitOut, MkdirIn, SetxattrIn, SETXATTR_ACL_KILL_SGID,
};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::passthrough::Negotiation;
use zerocopy::{FromBytes, IntoBytes};

const EPROTO: i32 = 71;
const ACL_FLAGS: InitFlags =
    InitFlags::POSIX_ACL.union(InitFlags::DONT_MASK).union(InitFlags::SETXATTR_EXT);

/// An ACL attribute value: version 2, then (tag, perm, id) entries.
fn acl_of(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// An ACL of entries that name no one (user, group and other classes, the mask).
fn acl(entries: &[(u16, u16)]) -> Vec<u8> {
    acl_of(&entries.iter().map(|&(tag, perm)| (tag, perm, u32::MAX)).collect::<Vec<_>>())
}

/// user::rwx group::r-x other::r--
fn minimal(group: u16) -> Vec<u8> {
    acl(&[(0x01, 7), (0x04, group), (0x20, 4)])
}

fn harness(tag: &str, mode: Negotiation) -> Harness {
    Harness::with(tag, |c| c.posix_acl = mode)
}

fn claimed(out: &InitOut) -> InitFlags {
    InitFlags::from_bits_retain(u64::from(out.flags))
}

#[test]
fn acls_are_negotiated_as_asked() {
    let mut h = harness("acl-auto", Negotiation::Auto);
    assert!(claimed(&h.init()).contains(ACL_FLAGS));
    let mut h = harness("acl-never", Negotiation::Never);
    assert!(!claimed(&h.init()).intersects(ACL_FLAGS));
    let mut h = harness("acl-always", Negotiation::Always);
    let old = linux_guest_flags() - InitFlags::POSIX_ACL;
    assert_eq!(h.init_with(38, old.bits()).errno(), EPROTO, "required but not offered");
    let mut h = harness("acl-auto-old", Negotiation::Auto);
    let out = InitOut::read_from_prefix(h.init_with(38, old.bits()).ok()).expect("init").0;
    assert!(!claimed(&out).contains(InitFlags::POSIX_ACL));
    // A guest that cannot say an ACL drops the caller's S_ISGID (no SETXATTR_EXT: Linux
    // before 5.16) gets no ACLs either: the daemon's CAP_FSETID would keep the bit.
    let before_ext = linux_guest_flags() - InitFlags::SETXATTR_EXT;
    let mut h = harness("acl-auto-no-ext", Negotiation::Auto);
    let out = InitOut::read_from_prefix(h.init_with(38, before_ext.bits()).ok()).expect("init").0;
    assert!(!claimed(&out).contains(InitFlags::POSIX_ACL));
    let mut h = harness("acl-always-no-ext", Negotiation::Always);
    assert_eq!(h.init_with(38, before_ext.bits()).errno(), EPROTO, "always, but no SETXATTR_EXT");
}

#[test]
fn the_server_applies_the_umask_unless_a_default_acl_does() {
    let mut h = harness("acl-umask", Negotiation::Auto);
    h.init();
    let m = MkdirIn { mode: 0o777, umask: 0o022 };
    h.call(Opcode::Mkdir, 1, &args(&[m.as_bytes(), &cstr("plain")])).entry();
    assert_eq!(std::fs::metadata(h.share().join("plain")).expect("stat").mode() & 0o777, 0o755);
    // A directory with a default ACL: it decides, the umask does not.
    let dir = h.share().join("inherit");
    std::fs::create_dir(&dir).expect("mkdir");
    let set = rustix::fs::setxattr(
        &dir,
        "system.posix_acl_default",
        &minimal(5),
        rustix::fs::XattrFlags::empty(),
    );
    if set.is_err() {
        eprintln!("the temporary directory's file system has no ACLs; skipped");
        return;
    }
    let d = h.lookup(1, "inherit").entry().nodeid;
    let c = CreateIn { flags: 0o101, mode: 0o100666, umask: 0o077, ..CreateIn::default() };
    h.call(Opcode::Create, d, &args(&[c.as_bytes(), &cstr("f")])).entry();
    let mode = std::fs::metadata(dir.join("f")).expect("stat").mode() & 0o777;
    assert_eq!(mode, 0o644, "rw- from user::rwx, r-- from group::r-x and other::r--, no umask");
}

#[test]
fn an_access_acl_set_for_an_outsider_clears_sgid() {
    let mut h = harness("acl-sgid", Negotiation::Auto);
    h.init();
    let path = h.share().join("f");
    std::fs::write(&path, b"f").expect("write");
    let node = h.lookup(1, "f").entry().nodeid;
    let set = |h: &mut Harness, flags: u32| {
        let value = minimal(7);
        let s =
            SetxattrIn { size: value.len() as u32, flags: 0, setxattr_flags: flags, padding: 0 };
        let name = cstr("system.posix_acl_access");
        h.call(Opcode::Setxattr, node, &args(&[s.as_bytes(), &name, &value])).errno()
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o2775)).expect("chmod");
    if set(&mut h, 0) == 95 {
        eprintln!("the temporary directory's file system has no ACLs; skipped");
        return;
    }
    assert_ne!(std::fs::metadata(&path).expect("stat").mode() & 0o2000, 0, "kept without the flag");
    assert_eq!(set(&mut h, SETXATTR_ACL_KILL_SGID), 0);
    assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o2000, 0, "cleared with it");
}

/// A directory whose ACL lets a group in that is neither the directory's nor the caller's own
/// (`group:4242:rwx`): a guest user in that group may create there, and the guest says so by
/// sending the request. Linux names only the parent's group in CREATE_SUPP_GROUP, so the host
/// cannot judge this by the caller's ids: the creation keeps CAP_DAC_OVERRIDE, as without the
/// extension, and the file is still the caller's.
#[test]
fn a_named_group_entry_lets_the_guest_user_create() {
    const USER: (u32, u32) = (1000, 1000);
    let mut h = harness("acl-named-group", Negotiation::Auto);
    h.init();
    if !is_root() {
        eprintln!("not root: guest credentials are off; skipped");
        return;
    }
    let dir = h.share().join("team");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // user::rwx group::r-x group:4242:rwx mask::rwx other::r-x
    let value = acl_of(&[
        (0x01, 7, u32::MAX),
        (0x04, 5, u32::MAX),
        (0x08, 7, 4242),
        (0x10, 7, u32::MAX),
        (0x20, 5, u32::MAX),
    ]);
    let flags = rustix::fs::XattrFlags::empty();
    match rustix::fs::setxattr(&dir, "system.posix_acl_access", &value, flags) {
        Err(rustix::io::Errno::OPNOTSUPP) => {
            eprintln!("the temporary directory's file system has no ACLs; skipped");
            return;
        }
        set => set.expect("set the ACL"),
    }
    let team = h.lookup(1, "team").entry().nodeid;
    h.caller = USER;
    let m = MkdirIn { mode: 0o755, umask: 0 };
    let made = h.call(Opcode::Mkdir, team, &args(&[m.as_bytes(), &cstr("made")])).entry();
    assert_eq!((made.attr.uid, made.attr.gid), USER, "the caller's");
    let c = CreateIn { flags: 0o1 | 0o100, mode: 0o100644, ..CreateIn::default() };
    let file = h.call(Opcode::Create, team, &args(&[c.as_bytes(), &cstr("file")])).entry();
    assert_eq!(file.attr.uid, USER.0);
    let meta = std::fs::metadata(dir.join("file")).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), USER, "owned by the caller on the host");
}
