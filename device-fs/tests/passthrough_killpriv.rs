//! Set-id bits under FUSE_HANDLE_KILLPRIV_V2 (`--killpriv-v2`): a WRITE, a truncating SETATTR or
//! an O_TRUNC OPEN that the guest marks KILL_SUIDGID clears S_ISUID and S_ISGID on the host,
//! unmarked ones (a guest caller with CAP_FSETID) keep them, and a chown always clears them.
//! Without it, an O_TRUNC OPEN by a guest user other than root clears them (the guest sends no
//! mode change of its own for it). The daemon runs as root here, so without the marks its own
//! CAP_FSETID would keep the bits.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use support::{args, Harness};
use vhu_device_fs::fuse::abi::{
    fattr, CopyFileRangeIn, CreateIn, FallocateIn, InitFlags, InitOut, OpenIn, SetattrIn, WriteIn,
    OPEN_KILL_SUIDGID, WRITE_KILL_SUIDGID,
};
use vhu_device_fs::fuse::Opcode;
use zerocopy::{FromBytes, IntoBytes};

const SETID: u32 = 0o6000;
const O_RDWR: u32 = 0o2;
const O_TRUNC: u32 = 0o1000;

/// A harness with a set-id file `f` (mode 06775, owned by 1000:1000), looked up and opened.
fn setup(tag: &str, killpriv: bool) -> Option<(Harness, u64, u64)> {
    let mut h = Harness::with(tag, |c| c.killpriv_v2 = killpriv);
    let out = h.init();
    let claimed = InitFlags::from_bits_retain(u64::from(out.flags));
    assert_eq!(claimed.contains(InitFlags::HANDLE_KILLPRIV_V2), killpriv);
    if !support::needs_root() {
        eprintln!("not root: the daemon has no CAP_FSETID to drop; skipped");
        return None;
    }
    let path = h.share().join("f");
    std::fs::write(&path, vec![1u8; 8192]).expect("host write");
    std::os::unix::fs::chown(&path, Some(1000), Some(1000)).expect("chown");
    let node = h.lookup(1, "f").entry().nodeid;
    let fh = h.call(Opcode::Open, node, OpenIn { flags: O_RDWR, ..OpenIn::default() }.as_bytes());
    let fh = fh.open().fh;
    set_mode(&h, 0o6775);
    Some((h, node, fh))
}

fn set_mode(h: &Harness, mode: u32) {
    let perms = std::fs::Permissions::from_mode(mode);
    std::fs::set_permissions(h.share().join("f"), perms).expect("chmod");
}

fn setid_bits(h: &Harness) -> u32 {
    std::fs::metadata(h.share().join("f")).expect("stat").mode() & SETID
}

fn write(h: &mut Harness, node: u64, fh: u64, flags: u32) {
    let w = WriteIn { fh, offset: 0, size: 4, write_flags: flags, ..WriteIn::default() };
    h.call(Opcode::Write, node, &args(&[w.as_bytes(), b"data"])).ok();
}

fn truncate(h: &mut Harness, node: u64, valid: u32) {
    let s = SetattrIn { valid: fattr::SIZE | valid, size: 100, ..SetattrIn::default() };
    h.call(Opcode::Setattr, node, s.as_bytes()).ok();
}

#[test]
fn marked_writes_and_truncations_clear_set_id_bits() {
    let Some((mut h, node, fh)) = setup("killpriv-on", true) else { return };
    write(&mut h, node, fh, 0);
    assert_eq!(setid_bits(&h), SETID, "an unmarked write keeps them (caller had CAP_FSETID)");
    write(&mut h, node, fh, WRITE_KILL_SUIDGID);
    assert_eq!(setid_bits(&h), 0, "a marked write clears them");

    set_mode(&h, 0o6775);
    truncate(&mut h, node, 0);
    assert_eq!(setid_bits(&h), SETID, "an unmarked truncation keeps them");
    truncate(&mut h, node, fattr::KILL_SUIDGID);
    assert_eq!(setid_bits(&h), 0, "a marked truncation clears them");

    set_mode(&h, 0o6775);
    let o = OpenIn { flags: O_RDWR | O_TRUNC, open_flags: OPEN_KILL_SUIDGID };
    h.call(Opcode::Open, node, o.as_bytes()).open();
    assert_eq!(setid_bits(&h), 0, "a marked O_TRUNC open clears them");
    assert_eq!(std::fs::metadata(h.share().join("f")).expect("stat").len(), 0);

    // The daemon's CAP_FSETID is back for the next unmarked write.
    set_mode(&h, 0o6775);
    write(&mut h, node, fh, 0);
    assert_eq!(setid_bits(&h), SETID);

    // chown clears them whatever the marks (the host kernel does).
    let s = SetattrIn { valid: fattr::UID, uid: 1001, ..SetattrIn::default() };
    h.call(Opcode::Setattr, node, s.as_bytes()).ok();
    assert_eq!(setid_bits(&h), 0, "chown clears them");
}

/// FALLOCATE and COPY_FILE_RANGE come unmarked (the guest sends nothing for the set-id bits of
/// either under HANDLE_KILLPRIV_V2): a guest user other than root is taken to lack CAP_FSETID
/// and the bits go, by the host's rule; guest root keeps them.
#[test]
fn a_user_s_fallocate_or_copy_into_a_set_id_file_clears_its_bits() {
    let Some((mut h, node, fh)) = setup("killpriv-fallocate", true) else { return };
    let fallocate = |h: &mut Harness| {
        let f = FallocateIn { fh, offset: 0, length: 16384, mode: 0, ..FallocateIn::default() };
        h.call(Opcode::Fallocate, node, f.as_bytes()).ok();
    };
    fallocate(&mut h);
    assert_eq!(setid_bits(&h), SETID, "guest root's fallocate keeps them");
    h.caller = (1000, 1000);
    // Through a read-only handle nothing changes, the bits neither.
    let ro = h.call(Opcode::Open, node, OpenIn::default().as_bytes()).open().fh;
    let f = FallocateIn { fh: ro, length: 16384, ..FallocateIn::default() };
    assert_eq!(h.call(Opcode::Fallocate, node, f.as_bytes()).errno(), libc::EBADF);
    assert_eq!(setid_bits(&h), SETID, "a refused fallocate keeps them");
    fallocate(&mut h);
    assert_eq!(setid_bits(&h), 0, "a user's fallocate clears them");
    // Set-group-ID without group execute goes or stays as for a marked WRITE (the host's rule,
    // which changed in Linux 6.2), and set-user-ID goes.
    set_mode(&h, 0o6764);
    fallocate(&mut h);
    let after_fallocate = setid_bits(&h);
    set_mode(&h, 0o6764);
    write(&mut h, node, fh, WRITE_KILL_SUIDGID);
    assert_eq!(after_fallocate, setid_bits(&h), "as after a marked write");
    assert_eq!(after_fallocate & 0o4000, 0, "set-user-ID goes");

    set_mode(&h, 0o6775);
    std::fs::write(h.share().join("src"), b"copied").expect("host write");
    h.caller = (0, 0);
    let src = h.lookup(1, "src").entry().nodeid;
    let src_fh = h.call(Opcode::Open, src, OpenIn::default().as_bytes()).open().fh;
    let copy = |h: &mut Harness| {
        let c = CopyFileRangeIn {
            fh_in: src_fh,
            nodeid_out: node,
            fh_out: fh,
            len: 6,
            ..CopyFileRangeIn::default()
        };
        h.call(Opcode::CopyFileRange, src, c.as_bytes()).ok();
    };
    copy(&mut h);
    assert_eq!(setid_bits(&h), SETID, "guest root's copy keeps them");
    h.caller = (1000, 1000);
    copy(&mut h);
    assert_eq!(setid_bits(&h), 0, "a user's copy into the file clears them");
}

#[test]
fn killpriv_v2_a_guest_did_not_take_leaves_o_trunc_to_the_uid_rule() {
    // --killpriv-v2, but a guest (before Linux 5.11) that does not offer it: it marks nothing,
    // so an O_TRUNC OPEN by a user clears the bits as without the option.
    let mut h = Harness::with("killpriv-unoffered", |c| c.killpriv_v2 = true);
    let offered = support::linux_guest_flags() - InitFlags::HANDLE_KILLPRIV_V2;
    let out = h.init_with(38, offered.bits());
    let (init, _) = InitOut::read_from_prefix(out.ok()).expect("init_out");
    let claimed = InitFlags::from_bits_retain(u64::from(init.flags));
    assert!(!claimed.contains(InitFlags::HANDLE_KILLPRIV_V2));
    if !support::needs_root() {
        return;
    }
    let path = h.share().join("f");
    std::fs::write(&path, vec![1u8; 8192]).expect("host write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o6777)).expect("chmod");
    let node = h.lookup(1, "f").entry().nodeid;
    h.caller = (1001, 1001);
    let o = OpenIn { flags: O_RDWR | O_TRUNC, open_flags: 0 };
    h.call(Opcode::Open, node, o.as_bytes()).open();
    assert_eq!(setid_bits(&h), 0, "a user's O_TRUNC open clears them");
}

#[test]
fn a_marked_create_that_truncates_an_existing_file_clears_set_id_bits() {
    let Some((mut h, _, _)) = setup("killpriv-create", true) else { return };
    let create = |h: &mut Harness, open_flags: u32| {
        let c = CreateIn { flags: O_RDWR | O_TRUNC, mode: 0o644, umask: 0, open_flags };
        h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &support::cstr("f")])).entry();
    };
    // Guest root with CAP_FSETID: unmarked, the bits stay.
    create(&mut h, 0);
    assert_eq!(setid_bits(&h), SETID, "an unmarked truncating CREATE keeps them");
    // Without it (a container's root, say): marked, they go, as with OPEN.
    create(&mut h, OPEN_KILL_SUIDGID);
    assert_eq!(setid_bits(&h), 0, "a marked truncating CREATE clears them");
}

#[test]
fn a_user_s_truncating_create_leaves_the_thread_without_cap_fsetid() {
    use vhu_device_fs::fuse::{Context, FileSystem, NodeId};
    let Some((h, _, _)) = setup("killpriv-create-user", false) else { return };
    let share = h.share().to_path_buf();
    std::fs::write(share.join("g"), b"data").expect("host write");
    std::fs::set_permissions(share.join("g"), std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    // A user truncates a file that is there already: the daemon lowers CAP_FSETID for it, on
    // a thread whose switch to the user's fsuid had lowered it already. The thread serves the
    // user's next request as it is left (only a request of the daemon's own switches back),
    // so it must not come out holding CAP_FSETID: as that user, a chmod keeping S_ISGID of a
    // group the user is not in, or a write keeping S_ISUID, would then succeed.
    let ctx = Context { uid: 1001, gid: 1001, pid: 1, supp_group: None, security: None };
    let c = CreateIn { flags: O_RDWR | O_TRUNC, mode: 0o644, umask: 0, open_flags: 0 };
    h.server.fs().create(&ctx, NodeId(1), c"g", &c).expect("create");
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).expect("field");
        line.split_whitespace().map(str::to_owned).collect::<Vec<_>>()
    };
    let effective = u64::from_str_radix(&field("CapEff:")[1], 16).expect("hex");
    let fsuid = field("Uid:")[4].clone();
    h.server.fs().credentials().as_daemon().expect("daemon ids back");
    assert_eq!(fsuid, "1001", "the create ran as the user");
    assert_eq!(effective & (1 << 4), 0, "CAP_FSETID raised for the user: {effective:x}");
}

#[test]
fn without_killpriv_v2_a_marked_write_still_clears_set_id_bits() {
    let Some((mut h, node, fh)) = setup("killpriv-off", false) else { return };
    // Page-cache writes the guest clears itself first; a direct write (FOPEN_DIRECT_IO, as with
    // --cache never) by a caller without CAP_FSETID Linux marks whatever was negotiated, and
    // leaves the bits to the server.
    write(&mut h, node, fh, 0);
    assert_eq!(setid_bits(&h), SETID, "an unmarked write keeps them");
    write(&mut h, node, fh, WRITE_KILL_SUIDGID);
    assert_eq!(setid_bits(&h), 0, "a marked write clears them");
}

#[test]
fn without_killpriv_v2_an_o_trunc_open_by_a_user_clears_set_id_bits() {
    let Some((mut h, node, _)) = setup("killpriv-off-trunc", false) else { return };
    // Guest root keeps them (it has CAP_FSETID)...
    let o = OpenIn { flags: O_RDWR | O_TRUNC, open_flags: 0 };
    h.call(Opcode::Open, node, o.as_bytes()).open();
    assert_eq!(setid_bits(&h), SETID, "guest root's truncation keeps them");
    // ... another user does not: with ATOMIC_O_TRUNC the guest sends no mode change of its own
    // for the truncation, so the server clears them as the host kernel would for that user.
    std::fs::write(h.share().join("f"), vec![1u8; 8192]).expect("host write");
    set_mode(&h, 0o6777);
    h.caller = (1001, 1001);
    h.call(Opcode::Open, node, o.as_bytes()).open();
    assert_eq!(setid_bits(&h), 0, "a user's O_TRUNC open clears them");
    assert_eq!(std::fs::metadata(h.share().join("f")).expect("stat").len(), 0);
}

#[test]
fn ctime_alone_moves_the_change_time() {
    let mut h = Harness::new("ctime");
    h.init();
    std::fs::write(h.share().join("c"), b"c").expect("host write");
    let node = h.lookup(1, "c").entry().nodeid;
    let before = std::fs::metadata(h.share().join("c")).expect("stat");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let s = SetattrIn { valid: fattr::CTIME, ..SetattrIn::default() };
    h.call(Opcode::Setattr, node, s.as_bytes()).ok();
    let after = std::fs::metadata(h.share().join("c")).expect("stat");
    let ns = |m: &std::fs::Metadata| m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128;
    assert!(ns(&after) > ns(&before), "ctime moved");
    assert_eq!(after.mtime(), before.mtime());
}

/// Whether the host kernel is `major.minor` or later.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// From Linux 6.2 the host also clears a set-group-ID bit without group execute on a write or
/// truncation by a caller outside the file's group (`setattr_should_drop_sgid`): a marked
/// truncation is judged by the guest caller's group, not by the daemon's.
#[test]
fn a_marked_truncation_judges_set_group_id_by_the_caller_s_group() {
    let Some((mut h, node, _)) = setup("killpriv-sgid-group", true) else { return };
    // `f` is 1000:1000; its group may not execute.
    h.caller = (1000, 1000);
    set_mode(&h, 0o2664);
    truncate(&mut h, node, fattr::KILL_SUIDGID);
    assert_eq!(setid_bits(&h), 0o2000, "a member of the file's group keeps it");
    // Root's group is the daemon's own: a guest user outside it loses the bit all the same.
    std::os::unix::fs::chown(h.share().join("f"), Some(0), Some(0)).expect("chown");
    set_mode(&h, 0o2666);
    h.caller = (2000, 2000);
    truncate(&mut h, node, fattr::KILL_SUIDGID);
    let expected = if kernel_at_least(6, 2) { 0 } else { 0o2000 };
    assert_eq!(setid_bits(&h), expected, "an outsider loses it where the host takes it");
}
