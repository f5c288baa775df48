//! `--xattrmap` through the passthrough: guest names are renamed, refused or passed as the
//! rules say, listings show only what the rules let through, and host attributes outside the
//! mapped prefix stay hidden.

mod support;

use support::{args, cstr, Harness};
use vhu_device_fs::fuse::abi::{GetxattrIn, SetxattrInCompat};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::passthrough::XattrMap;
use zerocopy::IntoBytes;

const EPERM: i32 = 1;
const EOPNOTSUPP: i32 = 95;
const ERANGE: i32 = 34;
const ENODATA: i32 = 61;

fn harness(tag: &str, map: &str) -> Option<(Harness, u64)> {
    let map: XattrMap = map.parse().expect("map");
    let mut h = Harness::with(tag, |c| {
        c.xattr = true;
        c.xattrmap = Some(map);
    });
    h.init();
    let path = h.share().join("f");
    std::fs::write(&path, b"f").expect("host write");
    if rustix::fs::setxattr(&path, "user.host-only", b"h", rustix::fs::XattrFlags::empty()).is_err()
    {
        eprintln!("the temporary directory's file system has no user xattrs; skipped");
        return None;
    }
    let node = h.lookup(1, "f").entry().nodeid;
    Some((h, node))
}

fn set(h: &mut Harness, node: u64, name: &str, value: &[u8]) -> i32 {
    let s = SetxattrInCompat { size: value.len() as u32, flags: 0 };
    h.call(Opcode::Setxattr, node, &args(&[s.as_bytes(), &cstr(name), value])).errno()
}

fn get(h: &mut Harness, node: u64, name: &str) -> Result<Vec<u8>, i32> {
    let g = GetxattrIn { size: 256, padding: 0 };
    let r = h.call(Opcode::Getxattr, node, &args(&[g.as_bytes(), &cstr(name)]));
    if r.header.error == 0 {
        Ok(r.ok().to_vec())
    } else {
        Err(r.errno())
    }
}

fn list(h: &mut Harness, node: u64, size: u32) -> Result<Vec<String>, i32> {
    let g = GetxattrIn { size, padding: 0 };
    let r = h.call(Opcode::Listxattr, node, g.as_bytes());
    if r.header.error != 0 {
        return Err(r.errno());
    }
    let body = r.ok();
    if size == 0 {
        return Ok(vec![format!("{}", u32::from_ne_bytes(body[..4].try_into().expect("size")))]);
    }
    Ok(body
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into())
        .collect())
}

fn host_get(h: &Harness, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 256];
    let n = rustix::fs::getxattr(h.share().join("f"), name, &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

#[test]
fn everything_is_kept_under_one_host_prefix() {
    let Some((mut h, f)) = harness("xmap-all", ":map::user.virtiofs.:") else { return };
    assert_eq!(set(&mut h, f, "trusted.overlay.opaque", b"y"), 0);
    assert_eq!(set(&mut h, f, "security.capability", b"cap"), 0);
    assert_eq!(host_get(&h, "user.virtiofs.trusted.overlay.opaque"), Some(b"y".to_vec()));
    assert_eq!(host_get(&h, "trusted.overlay.opaque"), None, "never written raw");
    assert_eq!(host_get(&h, "user.virtiofs.security.capability"), Some(b"cap".to_vec()));
    assert_eq!(get(&mut h, f, "trusted.overlay.opaque"), Ok(b"y".to_vec()));
    let mut names = list(&mut h, f, 4096).expect("list");
    names.sort();
    assert_eq!(names, ["security.capability", "trusted.overlay.opaque"], "host-only hidden");
    let want = "security.capability\0trusted.overlay.opaque\0".len();
    assert_eq!(list(&mut h, f, 0), Ok(vec![want.to_string()]), "the size of the mapped list");
    assert_eq!(list(&mut h, f, 10), Err(ERANGE));
    assert_eq!(h.call(Opcode::Removexattr, f, &cstr("trusted.overlay.opaque")).errno(), 0);
    assert_eq!(host_get(&h, "user.virtiofs.trusted.overlay.opaque"), None);
}

#[test]
fn a_remapped_namespace_cannot_be_reached_directly() {
    let Some((mut h, f)) = harness("xmap-one", "/map/trusted./user.virtiofs./") else { return };
    assert_eq!(set(&mut h, f, "trusted.a", b"1"), 0);
    assert_eq!(host_get(&h, "user.virtiofs.trusted.a"), Some(b"1".to_vec()));
    assert_eq!(set(&mut h, f, "user.virtiofs.trusted.b", b"2"), EPERM, "no bypass");
    // Reading a name the map refuses finds no attribute, as virtiofsd answers: the guest's LSM
    // and `cp -a` take ENODATA as 'none', EPERM as a failure.
    assert_eq!(get(&mut h, f, "user.virtiofs.trusted.a"), Err(ENODATA), "no bypass either");
    assert_eq!(set(&mut h, f, "user.plain", b"3"), 0);
    assert_eq!(host_get(&h, "user.plain"), Some(b"3".to_vec()));
    let mut names = list(&mut h, f, 4096).expect("list");
    names.sort();
    assert_eq!(names, ["trusted.a", "user.host-only", "user.plain"]);
}

#[test]
fn unsupported_names_and_no_map() {
    let Some((mut h, f)) =
        harness("xmap-unsup", ":unsupported:all:security.:security.: :ok:all:::")
    else {
        return;
    };
    assert_eq!(set(&mut h, f, "security.selinux", b"x"), EOPNOTSUPP);
    assert_eq!(get(&mut h, f, "user.host-only"), Ok(b"h".to_vec()));
    // Without a map, protected names are refused for writing.
    let mut plain = Harness::with("xmap-none", |c| c.xattr = true);
    plain.init();
    std::fs::write(plain.share().join("g"), b"g").expect("host write");
    let g = plain.lookup(1, "g").entry().nodeid;
    assert_eq!(set(&mut plain, g, "security.capability", b"x"), EPERM);
}

/// A share whose `user.virtiofs.` prefix holds the guest's attributes, with file `f` carrying a
/// (renamed) `security.capability` and open for writing: its node and handle. `None` where the
/// temporary directory's file system has no user xattrs.
fn with_capability(tag: &str, killpriv_v2: bool) -> Option<(Harness, u64, u64)> {
    use vhu_device_fs::fuse::abi::OpenIn;
    let map: XattrMap = ":map::user.virtiofs.:".parse().expect("map");
    let mut h = Harness::with(tag, |c| {
        c.xattr = true;
        c.killpriv_v2 = killpriv_v2;
        c.xattrmap = Some(map);
    });
    h.init();
    std::fs::write(h.share().join("f"), b"data").expect("host write");
    let f = h.lookup(1, "f").entry().nodeid;
    if set(&mut h, f, "security.capability", b"cap") == EOPNOTSUPP {
        return None;
    }
    let open = OpenIn { flags: 0o2, ..OpenIn::default() };
    let fh = h.call(Opcode::Open, f, open.as_bytes()).open().fh;
    Some((h, f, fh))
}

/// CVE-2021-20263: with KILLPRIV_V2 the server clears file capabilities; a capability the map
/// renamed is not the host kernel's to clear, so the server removes the renamed copy itself on a
/// marked write, a marked truncation and a chown.
#[test]
fn a_renamed_capability_does_not_survive_a_change() {
    use vhu_device_fs::fuse::abi::{fattr, SetattrIn, WriteIn, WRITE_KILL_SUIDGID};
    let Some((mut h, f, fh)) = with_capability("xmap-killpriv", true) else { return };
    let held = Some(b"cap".to_vec());
    assert_eq!(host_get(&h, "user.virtiofs.security.capability"), held, "an open changes nothing");
    let w = WriteIn { fh, size: 1, write_flags: WRITE_KILL_SUIDGID, ..WriteIn::default() };
    h.call(Opcode::Write, f, &args(&[w.as_bytes(), b"x"])).ok();
    assert_eq!(host_get(&h, "user.virtiofs.security.capability"), None, "gone after a write");
    // A write by a caller with CAP_FSETID comes without the kill flag: the capability goes
    // all the same, as the host's own would.
    assert_eq!(set(&mut h, f, "security.capability", b"cap"), 0);
    let w = WriteIn { fh, size: 1, write_flags: 0, ..WriteIn::default() };
    h.call(Opcode::Write, f, &args(&[w.as_bytes(), b"y"])).ok();
    assert_eq!(host_get(&h, "user.virtiofs.security.capability"), None, "gone after root's write");
    assert_eq!(set(&mut h, f, "security.capability", b"cap"), 0);
    let s = SetattrIn { valid: fattr::SIZE | fattr::KILL_SUIDGID, size: 1, ..SetattrIn::default() };
    h.call(Opcode::Setattr, f, s.as_bytes()).ok();
    assert_eq!(host_get(&h, "user.virtiofs.security.capability"), None, "gone after a truncation");
    assert_eq!(set(&mut h, f, "security.capability", b"cap"), 0);
    let s = SetattrIn { valid: fattr::GID, gid: 0, ..SetattrIn::default() };
    h.call(Opcode::Setattr, f, s.as_bytes()).ok();
    assert_eq!(host_get(&h, "user.virtiofs.security.capability"), None, "gone after a chown");
    truncating_opens_drop_it(&mut h, f);
    other_changes_drop_it(&mut h, f, fh);
    // Other attributes stay.
    assert_eq!(set(&mut h, f, "user.keep", b"k"), 0);
    h.call(Opcode::Setattr, f, s.as_bytes()).ok();
    assert_eq!(host_get(&h, "user.virtiofs.user.keep"), Some(b"k".to_vec()));
}

/// FALLOCATE of `f` and a COPY_FILE_RANGE into it change its contents as a write does: the
/// renamed capability goes each time.
fn other_changes_drop_it(h: &mut Harness, f: u64, fh: u64) {
    use vhu_device_fs::fuse::abi::{CopyFileRangeIn, FallocateIn};
    assert_eq!(set(h, f, "security.capability", b"cap"), 0);
    let grow = FallocateIn { fh, offset: 0, length: 8192, ..FallocateIn::default() };
    assert_eq!(h.call(Opcode::Fallocate, f, grow.as_bytes()).errno(), 0);
    assert_eq!(host_get(h, "user.virtiofs.security.capability"), None, "gone after FALLOCATE");
    assert_eq!(set(h, f, "security.capability", b"cap"), 0);
    let copy = CopyFileRangeIn {
        fh_in: fh,
        off_in: 0,
        nodeid_out: f,
        fh_out: fh,
        off_out: 4096,
        len: 1,
        flags: 0,
    };
    let r = h.call(Opcode::CopyFileRange, f, copy.as_bytes());
    assert_eq!(r.errno(), 0, "copied");
    assert_eq!(host_get(h, "user.virtiofs.security.capability"), None, "gone after a copy into it");
}

/// Opening `f` (the share's "f") with O_TRUNC truncates it, by OPEN or by CREATE of the existing
/// name: the renamed capability goes each time.
fn truncating_opens_drop_it(h: &mut Harness, f: u64) {
    use vhu_device_fs::fuse::abi::{CreateIn, OpenIn};
    for op in [Opcode::Open, Opcode::Create] {
        assert_eq!(set(h, f, "security.capability", b"cap"), 0);
        let trunc = 0o1000 | 0o1;
        match op {
            Opcode::Open => {
                h.call(op, f, OpenIn { flags: trunc, ..OpenIn::default() }.as_bytes()).open();
            }
            _ => {
                let c = CreateIn { flags: trunc | 0o100, mode: 0o100644, ..CreateIn::default() };
                h.call(op, 1, &args(&[c.as_bytes(), b"f\0"])).ok();
            }
        }
        assert_eq!(host_get(h, "user.virtiofs.security.capability"), None, "{op:?} O_TRUNC");
    }
}

/// Without KILLPRIV_V2 the guest removes a capability itself before a write through its page
/// cache, but a direct write (`--cache=never` gives every file FOPEN_DIRECT_IO) comes without
/// that: the server removes the renamed copy all the same, as the host kernel removes the real
/// attribute on any write.
#[test]
fn a_renamed_capability_does_not_survive_a_direct_write_without_killpriv() {
    use vhu_device_fs::fuse::abi::WriteIn;
    let Some((mut h, f, fh)) = with_capability("xmap-no-killpriv", false) else { return };
    assert_eq!(host_get(&h, "user.virtiofs.security.capability"), Some(b"cap".to_vec()));
    let w = WriteIn { fh, size: 1, flags: 0o2, ..WriteIn::default() };
    h.call(Opcode::Write, f, &args(&[w.as_bytes(), b"x"])).ok();
    assert_eq!(host_get(&h, "user.virtiofs.security.capability"), None, "gone after a write");
    let g = GetxattrIn { size: 64, ..GetxattrIn::default() };
    let got = h.call(Opcode::Getxattr, f, &args(&[g.as_bytes(), &cstr("security.capability")]));
    assert_eq!(got.errno(), ENODATA, "the guest sees it gone");
    truncating_opens_drop_it(&mut h, f);
}

/// A symlink's and a FIFO's attributes (a label the guest's LSM gave them) are read through the
/// inode itself: the link is not followed (its target does not even exist) and the FIFO is not
/// opened (that would block).
#[test]
fn attributes_of_symlinks_and_fifos_are_reached_without_following_or_opening() {
    if !support::is_root() {
        return; // trusted.* attributes need CAP_SYS_ADMIN
    }
    let mut h = Harness::with("xattr-kinds", |c| c.xattr = true);
    h.init();
    let (link, fifo) = (h.share().join("l"), h.share().join("p"));
    std::os::unix::fs::symlink("nowhere", &link).expect("symlink");
    support::mkfifo(&fifo, 0o600);
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::lsetxattr(&link, "trusted.label", b"L", flags).expect("symlink label");
    rustix::fs::setxattr(&fifo, "trusted.label", b"P", flags).expect("fifo label");
    let l = h.lookup(1, "l").entry().nodeid;
    let p = h.lookup(1, "p").entry().nodeid;
    assert_eq!(get(&mut h, l, "trusted.label"), Ok(b"L".to_vec()));
    assert_eq!(get(&mut h, p, "trusted.label"), Ok(b"P".to_vec()));
    assert!(list(&mut h, l, 4096).expect("list").contains(&"trusted.label".to_string()));
    // Writing protected names stays refused without a map, whatever the kind.
    assert_eq!(set(&mut h, l, "trusted.other", b"x"), EPERM);
}

/// POSIX ACL attributes while the guest did not take FUSE_POSIX_ACL: Linux still forwards
/// them, unchecked before 6.2 and never enforced, so they are refused and hidden, by the guest's
/// name, with a map that would store them under another name or without any.
#[test]
fn acl_attributes_pass_only_with_acls_negotiated() {
    let acl: Vec<u8> = [2u32, 0x0007_0001, u32::MAX, 0x0004_0004, u32::MAX, 0x0004_0020, u32::MAX]
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .collect();
    let name = "system.posix_acl_access";
    for map in [None, Some(":map::user.virtiofs.:")] {
        let mut h = Harness::with("xattr-acl-off", |c| {
            c.xattr = true;
            c.xattrmap = map.map(|m| m.parse().expect("map"));
        });
        h.init();
        let path = h.share().join("f");
        std::fs::write(&path, b"f").expect("host write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .expect("chmod");
        let host = rustix::fs::setxattr(&path, name, &acl, rustix::fs::XattrFlags::empty());
        let guest_named = format!("user.virtiofs.{name}");
        let stored =
            rustix::fs::setxattr(&path, &guest_named, b"x", rustix::fs::XattrFlags::empty());
        if host.is_err() || stored.is_err() {
            assert!(std::env::var_os("CI").is_none(), "no ACLs or user xattrs on {path:?}");
            eprintln!("the temporary directory's file system has no ACLs; skipped");
            return;
        }
        let node = h.lookup(1, "f").entry().nodeid;
        // group::rwx: a set that went through would make the mode 0774.
        let mut wider = acl.clone();
        wider[14] = 7;
        assert_eq!(set(&mut h, node, name, &wider), EOPNOTSUPP, "{map:?}: set");
        assert_eq!(get(&mut h, node, name), Err(EOPNOTSUPP), "{map:?}: get");
        let listed = list(&mut h, node, 4096).expect("list");
        assert!(!listed.iter().any(|n| n == name), "{map:?}: listed {listed:?}");
        let removed = h.call(Opcode::Removexattr, node, &cstr(name)).errno();
        assert_eq!(removed, EOPNOTSUPP, "{map:?}: remove");
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&path).expect("stat"));
        assert_eq!(mode & 0o777, 0o744, "{map:?}: the host's own ACL stays as it was");
    }
}
