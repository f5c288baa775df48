//! Guest identity through the passthrough: inodes are created with the caller's ids, set-group-ID
//! directories behave as on a local file system (CVE-2022-0358), supplementary groups come only
//! from the FUSE_CREATE_SUPP_GROUP extension, and everything else keeps the daemon's ids.
//!
//! These tests need root (CI runs them as root); without it they check that credentials are off.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use support::{args, cstr, is_root, supp_group_ext, Harness};
use vhu_device_fs::fuse::abi::{
    fattr, AttrOut, CreateIn, GetattrIn, InitFlags, MkdirIn, MknodIn, SetattrIn,
};
use vhu_device_fs::fuse::Opcode;
use zerocopy::{FromBytes, IntoBytes};

const EACCES: i32 = 13;
const EINVAL: i32 = 22;
const USER: (u32, u32) = (1000, 1000);
/// A group the user is not in.
const OTHER_GROUP: u32 = 4242;
const S_ISGID: u32 = 0o2000;

/// Root is required; a run without it (outside CI) only checks that switching is off.
fn root_or_skip(h: &Harness) -> bool {
    if is_root() {
        assert!(h.server.fs().credentials().is_enabled(), "root switches credentials");
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI runs the identity tests as root");
    assert!(!h.server.fs().credentials().is_enabled());
    eprintln!("not root: guest credentials are off, identity checks skipped");
    false
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A host directory `name` in the share with the given owner and mode, looked up.
fn host_dir(h: &mut Harness, name: &str, uid: u32, gid: u32, mode: u32) -> u64 {
    let path = h.share().join(name);
    std::fs::create_dir(&path).expect("host mkdir");
    chown(&path, uid, gid);
    chmod(&path, mode);
    h.lookup(1, name).entry().nodeid
}

fn mkdir(h: &mut Harness, parent: u64, name: &str, mode: u32, ext: &[u8]) -> support::Reply {
    let m = MkdirIn { mode, umask: 0 };
    h.call_ext(Opcode::Mkdir, parent, &args(&[m.as_bytes(), &cstr(name)]), ext)
}

fn create(h: &mut Harness, parent: u64, name: &str, mode: u32, ext: &[u8]) -> support::Reply {
    let c = CreateIn { flags: 0o2 | 0o100 | 0o200, mode: 0o100000 | mode, ..CreateIn::default() };
    h.call_ext(Opcode::Create, parent, &args(&[c.as_bytes(), &cstr(name)]), ext)
}

fn meta(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).expect("host stat")
}

#[test]
fn a_guest_user_creates_files_it_owns() {
    let mut h = Harness::new("id-owner");
    h.init();
    if !root_or_skip(&h) {
        return;
    }
    let open = host_dir(&mut h, "open", 0, 0, 0o777);
    h.caller = USER;
    let d = mkdir(&mut h, open, "d", 0o755, &[]).entry();
    assert_eq!((d.attr.uid, d.attr.gid), USER, "MKDIR reply carries the caller's ids");
    create(&mut h, d.nodeid, "f", 0o644, &[]).entry();
    let n = MknodIn { mode: 0o010640, ..MknodIn::default() };
    h.call(Opcode::Mknod, d.nodeid, &args(&[n.as_bytes(), &cstr("fifo")])).entry();
    h.call(Opcode::Symlink, d.nodeid, &args(&[&cstr("l"), &cstr("f")])).entry();
    for name in ["open/d", "open/d/f", "open/d/fifo", "open/d/l"] {
        let m = meta(&h.share().join(name));
        assert_eq!((m.uid(), m.gid()), USER, "{name} is owned by the guest user");
    }
    assert_eq!(meta(&h.share().join("open/d")).mode() & 0o7777, 0o755);
    assert_eq!(meta(&h.share().join("open/d/f")).mode() & 0o7777, 0o644);
}

#[test]
fn the_host_refuses_what_the_caller_may_not_do() {
    let mut h = Harness::new("id-refused");
    h.init();
    if !root_or_skip(&h) {
        return;
    }
    let closed = host_dir(&mut h, "closed", 0, 0, 0o755);
    h.caller = USER;
    assert_eq!(mkdir(&mut h, closed, "d", 0o755, &[]).errno(), EACCES);
    assert_eq!(create(&mut h, closed, "f", 0o644, &[]).errno(), EACCES);
    assert!(!h.share().join("closed/d").exists() && !h.share().join("closed/f").exists());
    // Guest root keeps root's powers.
    h.caller = (0, 0);
    mkdir(&mut h, closed, "d", 0o755, &[]).entry();
    let m = meta(&h.share().join("closed/d"));
    assert_eq!((m.uid(), m.gid()), (0, 0));
}

/// CVE-2022-0358: a file created with S_ISGID in a set-group-ID directory by a caller outside
/// the directory's group must lose S_ISGID. A daemon creating as root, or keeping root's
/// supplementary groups, leaves a set-group-ID file of a group the user is not in.
#[test]
fn sgid_is_dropped_for_a_caller_outside_the_group() {
    let mut h = Harness::new("id-sgid");
    h.init();
    if !root_or_skip(&h) {
        return;
    }
    let dir = host_dir(&mut h, "sgid", 0, OTHER_GROUP, 0o777 | S_ISGID);
    h.caller = USER;
    let f = create(&mut h, dir, "f", 0o755 | S_ISGID, &[]).entry();
    assert_eq!(f.attr.gid, OTHER_GROUP, "the group is inherited from the directory");
    assert_eq!(f.attr.mode & S_ISGID, 0, "S_ISGID dropped in the reply");
    let m = meta(&h.share().join("sgid/f"));
    assert_eq!((m.uid(), m.gid(), m.mode() & S_ISGID), (USER.0, OTHER_GROUP, 0));
    // A directory inherits both the group and S_ISGID, whoever creates it.
    mkdir(&mut h, dir, "sub", 0o755, &[]).entry();
    let m = meta(&h.share().join("sgid/sub"));
    assert_eq!((m.uid(), m.gid()), (USER.0, OTHER_GROUP));
    assert_ne!(m.mode() & S_ISGID, 0);
    // A member of the group, named by the supplementary-group extension, keeps S_ISGID.
    create(&mut h, dir, "g", 0o755 | S_ISGID, &supp_group_ext(OTHER_GROUP)).entry();
    assert_ne!(meta(&h.share().join("sgid/g")).mode() & S_ISGID, 0);
}

/// The group a guest named for a creation is the creation's: the daemon's next operation on the
/// thread runs without it.
#[test]
fn a_callers_supplementary_group_is_gone_when_the_thread_acts_as_the_daemon() {
    let mut h = Harness::new("id-groups-after");
    h.init();
    if !root_or_skip(&h) {
        return;
    }
    let group_dir = host_dir(&mut h, "team", 0, OTHER_GROUP, 0o770);
    h.caller = USER;
    // Made through the group (the directory is the group's alone).
    mkdir(&mut h, group_dir, "b", 0o755, &supp_group_ext(OTHER_GROUP)).entry();
    let groups = || {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        let line = status.lines().find(|l| l.starts_with("Groups:")).expect("Groups");
        line.split_whitespace().skip(1).map(str::to_owned).collect::<Vec<_>>()
    };
    h.call(Opcode::Getattr, group_dir, GetattrIn::default().as_bytes()).ok();
    assert_eq!(groups(), Vec::<String>::new(), "the daemon's GETATTR ran without it");
    // Nor does a new thread act as the daemon with the groups the process started with.
    let fresh = std::thread::scope(|s| {
        s.spawn(|| {
            let inherited = [rustix::process::Gid::from_raw(OTHER_GROUP)];
            rustix::thread::set_thread_groups(&inherited).expect("setgroups");
            h.server.fs().credentials().as_daemon().expect("as the daemon");
            groups()
        })
        .join()
        .expect("thread")
    });
    assert_eq!(fresh, Vec::<String>::new(), "a new thread's daemon has no group");
}

#[test]
fn supplementary_group_comes_from_the_extension_only() {
    let mut h = Harness::new("id-groups");
    h.init();
    if !root_or_skip(&h) {
        return;
    }
    let group_dir = host_dir(&mut h, "team", 0, OTHER_GROUP, 0o770);
    h.caller = USER;
    // Not named: the user is not in the group as far as the host knows.
    assert_eq!(mkdir(&mut h, group_dir, "a", 0o755, &[]).errno(), EACCES);
    let e = mkdir(&mut h, group_dir, "b", 0o755, &supp_group_ext(OTHER_GROUP)).entry();
    assert_eq!(
        (e.attr.uid, e.attr.gid),
        USER,
        "the group is the caller's own; the directory only needed membership"
    );
    // The group is not kept for the next request.
    assert_eq!(mkdir(&mut h, group_dir, "c", 0o755, &[]).errno(), EACCES);
    // A malformed extension is refused.
    let mut bad = supp_group_ext(OTHER_GROUP);
    bad[8] = 2; // two groups announced, one present
    assert_eq!(mkdir(&mut h, group_dir, "d", 0o755, &bad).errno(), EINVAL);
    bad[0] = 24; // a record longer than the extensions
    assert_eq!(mkdir(&mut h, group_dir, "d", 0o755, &bad).errno(), EINVAL);
}

/// A guest without CREATE_SUPP_GROUP cannot name the group: it checked the caller's groups
/// itself, so the create goes through with the caller as owner.
#[test]
fn without_the_extension_the_guest_check_stands() {
    let mut h = Harness::new("id-old-guest");
    let old = support::linux_guest_flags() - InitFlags::CREATE_SUPP_GROUP;
    h.init_with(38, old.bits()).ok();
    if !root_or_skip(&h) {
        return;
    }
    let group_dir = host_dir(&mut h, "team", 0, OTHER_GROUP, 0o770);
    h.caller = USER;
    let e = mkdir(&mut h, group_dir, "a", 0o755, &[]).entry();
    assert_eq!(e.attr.uid, USER.0);
    // Set-group-ID stripping still follows the caller's own groups.
    let dir = host_dir(&mut h, "sgid", 0, OTHER_GROUP, 0o777 | S_ISGID);
    h.caller = USER;
    let f = create(&mut h, dir, "f", 0o755 | S_ISGID, &[]).entry();
    assert_eq!(f.attr.mode & S_ISGID, 0);
}

/// CREATE of a name that already exists opens a file the guest never checked: a caller lent
/// CAP_DAC_OVERRIDE (the guest could not name its groups) must not open it past its mode.
#[test]
fn create_of_an_existing_file_is_checked_by_the_host() {
    let mut h = Harness::new("id-existing");
    let old = support::linux_guest_flags() - InitFlags::CREATE_SUPP_GROUP;
    h.init_with(38, old.bits()).ok();
    if !root_or_skip(&h) {
        return;
    }
    let open = host_dir(&mut h, "open", 0, 0, 0o777);
    let secret = h.share().join("open/secret");
    std::fs::write(&secret, b"root only").expect("host write");
    chmod(&secret, 0o600);
    h.caller = USER;
    let c = CreateIn { flags: 0o2 | 0o100, mode: 0o100644, ..CreateIn::default() };
    let r = h.call(Opcode::Create, open, &args(&[c.as_bytes(), &cstr("secret")]));
    assert_eq!(r.errno(), EACCES, "not opened for the guest user");
    // A file the user may open is opened as before.
    std::fs::write(h.share().join("open/public"), b"p").expect("host write");
    chmod(&h.share().join("open/public"), 0o666);
    let r = h.call(Opcode::Create, open, &args(&[c.as_bytes(), &cstr("public")]));
    r.entry();
}

/// Everything but creation runs as the daemon: the guest checked permissions with the caller's
/// full group list, which the host does not have.
#[test]
fn other_operations_keep_the_daemon_ids() {
    let mut h = Harness::new("id-daemon");
    h.init();
    if !root_or_skip(&h) {
        return;
    }
    let private = host_dir(&mut h, "private", 0, 0, 0o700);
    std::fs::write(h.share().join("private/x"), b"x").expect("host write");
    h.caller = USER;
    // A creation as the user first, then a lookup in a directory only root may search.
    let open = host_dir(&mut h, "open", 0, 0, 0o777);
    mkdir(&mut h, open, "d", 0o755, &[]).entry();
    let x = h.lookup(private, "x").entry();
    // SETATTR: chgrp to a group the guest says the user is in.
    let s = SetattrIn { valid: fattr::GID, gid: OTHER_GROUP, ..SetattrIn::default() };
    let attr = AttrOut::read_from_bytes(h.call(Opcode::Setattr, x.nodeid, s.as_bytes()).ok())
        .expect("attr_out")
        .attr;
    assert_eq!(attr.gid, OTHER_GROUP);
}

/// Credentials are per thread: a queue serving another user on another thread is unaffected.
#[test]
fn credentials_are_per_thread() {
    let mut h = Harness::new("id-threads");
    h.init();
    if !root_or_skip(&h) {
        return;
    }
    let open = host_dir(&mut h, "open", 0, 0, 0o777);
    std::thread::scope(|scope| {
        let users: Vec<_> = (0..4u32)
            .map(|i| {
                let mut t = h.sharing();
                scope.spawn(move || {
                    t.caller = (2000 + i, 3000 + i);
                    for n in 0..20 {
                        mkdir(&mut t, open, &format!("u{i}-{n}"), 0o755, &[]).entry();
                    }
                })
            })
            .collect();
        users.into_iter().for_each(|u| u.join().expect("thread"));
    });
    for i in 0..4u32 {
        for n in 0..20 {
            let m = meta(&h.share().join(format!("open/u{i}-{n}")));
            assert_eq!((m.uid(), m.gid()), (2000 + i, 3000 + i));
        }
    }
    // The harness thread kept the daemon's ids throughout.
    h.caller = (0, 0);
    mkdir(&mut h, open, "root", 0o755, &[]).entry();
    assert_eq!(meta(&h.share().join("open/root")).uid(), 0);
}

/// A daemon that cannot take other ids (credentials off) keeps serving: every creation is the
/// daemon's own, and CREATE_SUPP_GROUP is not offered.
#[test]
fn with_credentials_off_files_are_the_daemons() {
    use vhu_device_fs::passthrough::Credentials;
    let mut h = Harness::with("id-off", |c| c.credentials = Credentials::disabled());
    let out = h.init();
    let claimed = InitFlags::from_bits_retain(u64::from(out.flags) | (u64::from(out.flags2) << 32));
    assert!(!claimed.contains(InitFlags::CREATE_SUPP_GROUP));
    h.caller = USER;
    mkdir(&mut h, 1, "d", 0o755, &[]).entry();
    create(&mut h, 1, "f", 0o644, &[]).entry();
    let me = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    for name in ["d", "f"] {
        let m = meta(&h.share().join(name));
        assert_eq!((m.uid(), m.gid()), me, "{name} belongs to the daemon");
    }
}

/// A whiteout RENAME_WHITEOUT leaves behind (an overlayfs upper layer on the share) is a
/// creation: the renaming guest user's, as on a local file system, while the rename itself
/// runs as the daemon.
#[test]
fn a_rename_whiteout_belongs_to_the_renamer() {
    use std::os::unix::fs::FileTypeExt;
    use vhu_device_fs::fuse::abi::Rename2In;
    const RENAME_WHITEOUT: u32 = 4;
    let mut h = Harness::new("id-whiteout");
    h.init();
    if !root_or_skip(&h) {
        return;
    }
    let open = host_dir(&mut h, "open", 0, 0, 0o777);
    std::fs::write(h.share().join("open/a"), b"a").expect("file");
    chown(&h.share().join("open/a"), USER.0, USER.1);
    h.caller = USER;
    let r2 = Rename2In { newdir: open, flags: RENAME_WHITEOUT, padding: 0 };
    let body = args(&[r2.as_bytes(), &cstr("a"), &cstr("b")]);
    assert_eq!(h.call(Opcode::Rename2, open, &body).errno(), 0);
    let whiteout = meta(&h.share().join("open/a"));
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0, "a whiteout");
    assert_eq!((whiteout.uid(), whiteout.gid()), USER, "the renamer's");
    assert_eq!(std::fs::read(h.share().join("open/b")).expect("moved"), b"a");
    // In a set-group-ID directory it takes the directory's group, as a local one does.
    h.caller = (0, 0);
    let sgid = host_dir(&mut h, "sgid", 0, OTHER_GROUP, 0o2777);
    std::fs::write(h.share().join("sgid/a"), b"a").expect("file");
    h.caller = USER;
    let r2 = Rename2In { newdir: sgid, flags: RENAME_WHITEOUT, padding: 0 };
    let body = args(&[r2.as_bytes(), &cstr("a"), &cstr("b")]);
    assert_eq!(h.call(Opcode::Rename2, sgid, &body).errno(), 0);
    let whiteout = meta(&h.share().join("sgid/a"));
    assert_eq!((whiteout.uid(), whiteout.gid()), (USER.0, OTHER_GROUP), "the directory's group");
}

/// ACCESS is answered for the caller, by its ids alone: a guest user is refused what the mode
/// does not give it (the daemon, root, would be let in), and guest root is let in as root.
#[test]
fn access_is_judged_by_the_caller_s_ids() {
    use vhu_device_fs::fuse::abi::AccessIn;
    let mut h = Harness::new("id-access");
    h.init();
    if !root_or_skip(&h) {
        return;
    }
    let path = h.share().join("f");
    std::fs::write(&path, b"f").expect("host write");
    chown(&path, 0, USER.1);
    chmod(&path, 0o640);
    let node = h.lookup(1, "f").entry().nodeid;
    let access = |h: &mut Harness, mask: u32| {
        h.call(Opcode::Access, node, AccessIn { mask, padding: 0 }.as_bytes()).errno()
    };
    h.caller = USER;
    assert_eq!(access(&mut h, 0o4), 0, "the file's group may read");
    assert_eq!(access(&mut h, 0o2), EACCES, "but not write");
    h.caller = (USER.0, OTHER_GROUP);
    assert_eq!(access(&mut h, 0o4), EACCES, "others may not read");
    h.caller = (0, 0);
    assert_eq!(access(&mut h, 0o4 | 0o2), 0, "root may read and write");
    assert_eq!(access(&mut h, 0o1), EACCES, "nor root execute what no one may");
}
