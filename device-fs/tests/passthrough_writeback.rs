//! Where writes land. Write-backs of the guest's page cache (FUSE_WRITE_CACHE): the guest
//! kernel sends a dirty page through whichever writable handle of the file it picks, so the
//! handle's own O_APPEND or O_DIRECT must not move or refuse it (a page written back by `msync`
//! of a shared mapping of a file also open with O_APPEND lands where it belongs, a short last
//! page through an O_DIRECT handle is written whole). Ordinary writes through the same handles
//! keep their flags, and append as the guest's file says at the time of the write (F_SETFL may
//! have changed O_APPEND since the open). The read-write handles the writeback cache opens for
//! a writer are the daemon's: a CREATE that finds its name taken checks the caller's own access.

mod support;

use support::{args, Harness};
use vhu_device_fs::fuse::abi::{OpenIn, ReleaseIn, WriteIn, WriteOut, WRITE_CACHE};
use vhu_device_fs::fuse::{Handle, NodeId, Opcode};
use zerocopy::{FromBytes, IntoBytes};

const O_RDONLY: u32 = 0;
const O_RDWR: u32 = 0o2;
const O_APPEND: u32 = 0o2000;
const O_DIRECT: u32 = libc::O_DIRECT as u32;
const EBADF: i32 = 9;

/// A share with `f` holding `len` bytes of 0xAA, looked up; its node.
fn file(h: &mut Harness, len: usize) -> u64 {
    h.init();
    std::fs::write(h.share().join("f"), vec![0xAA; len]).expect("host write");
    h.lookup(1, "f").entry().nodeid
}

fn open(h: &mut Harness, node: u64, flags: u32) -> u64 {
    h.call(Opcode::Open, node, OpenIn { flags, ..OpenIn::default() }.as_bytes()).open().fh
}

/// WRITE of `data` at `offset`, with FUSE_WRITE_* `flags` and the guest file's open flags
/// `file` (`fuse_write_in.flags`, as Linux sends them); the size written or `-errno`.
fn write(
    h: &mut Harness,
    node: u64,
    fh: u64,
    offset: u64,
    data: &[u8],
    (flags, file): (u32, u32),
) -> i64 {
    let size = data.len() as u32;
    let w = WriteIn { fh, offset, size, write_flags: flags, flags: file, ..WriteIn::default() };
    let reply = h.call(Opcode::Write, node, &args(&[w.as_bytes(), data]));
    match reply.errno() {
        0 => i64::from(WriteOut::read_from_bytes(reply.ok()).expect("write_out").size),
        errno => -i64::from(errno),
    }
}

#[test]
fn a_write_back_through_an_append_handle_lands_at_its_offset() {
    let mut h = Harness::new("writeback-append");
    let node = file(&mut h, 8192);
    let fh = open(&mut h, node, O_RDWR | O_APPEND);
    // The guest's own write through the handle appends, as O_APPEND says.
    assert_eq!(write(&mut h, node, fh, 0, b"tail", (0, O_RDWR | O_APPEND)), 4);
    let host = std::fs::read(h.share().join("f")).expect("host read");
    assert_eq!((host.len(), &host[8192..]), (8196, &b"tail"[..]));
    // A write-back of page 0 replaces page 0.
    let back = (WRITE_CACHE, O_RDWR | O_APPEND);
    assert_eq!(write(&mut h, node, fh, 0, &[0x55; 4096], back), 4096);
    let host = std::fs::read(h.share().join("f")).expect("host read");
    assert_eq!(host.len(), 8196, "the file did not grow");
    assert!(host[..4096].iter().all(|b| *b == 0x55), "page 0 written in place");
    assert!(host[4096..8192].iter().all(|b| *b == 0xAA));
    // A read-only handle takes no write-back either.
    let ro = open(&mut h, node, O_RDONLY);
    assert_eq!(write(&mut h, node, ro, 0, &[1; 16], (WRITE_CACHE, O_RDONLY)), -i64::from(EBADF));
}

/// The second descriptor a write-back through an O_APPEND handle needs is the guest's like
/// every other: it counts in the open-file budget, and goes with the handle's release.
#[test]
fn a_write_backs_descriptor_counts_in_the_budget() {
    const ENFILE: i32 = 23;
    // The root, "f", the handle and its write-back descriptor.
    let mut h = Harness::with("writeback-budget", |config| config.max_open = 4);
    let node = file(&mut h, 4096);
    let fh = open(&mut h, node, O_RDWR | O_APPEND);
    assert_eq!(write(&mut h, node, fh, 0, &[0x55; 4096], (WRITE_CACHE, O_RDWR | O_APPEND)), 4096);
    let refused =
        h.call(Opcode::Open, node, OpenIn { flags: O_RDONLY, ..OpenIn::default() }.as_bytes());
    assert_eq!(refused.errno(), ENFILE, "the write-back's descriptor took the last place");
    let release = ReleaseIn { fh, ..ReleaseIn::default() };
    assert_eq!(h.call(Opcode::Release, node, release.as_bytes()).errno(), 0);
    // Both of the handle's descriptors went with it: room for two opens.
    let _ = open(&mut h, node, O_RDONLY);
    let _ = open(&mut h, node, O_RDONLY);
}

#[test]
fn a_write_back_through_a_direct_handle_needs_no_alignment() {
    let mut h = Harness::with("writeback-direct", |c| c.allow_direct_io = true);
    let node = file(&mut h, 4096);
    let fh = open(&mut h, node, O_RDWR | O_DIRECT);
    // The handle is O_DIRECT on the host: an unaligned write of its own is as the host's
    // file system takes it (refused where it checks alignment).
    let direct = O_RDWR | O_DIRECT;
    let own = match support::unaligned_direct_errno(&h.share()) {
        0 => 1000,
        errno => -i64::from(errno),
    };
    assert_eq!(write(&mut h, node, fh, 3, &[1; 1000], (0, direct)), own);
    // The last, short page of a write-back goes through.
    assert_eq!(write(&mut h, node, fh, 4096, &[0x66; 1000], (WRITE_CACHE, direct)), 1000);
    let host = std::fs::read(h.share().join("f")).expect("host read");
    assert_eq!(host.len(), 5096);
    assert!(host[4096..].iter().all(|b| *b == 0x66));
}

/// A write the guest asked to be synchronous (RWF_DSYNC: O_DSYNC in `fuse_write_in.flags`)
/// takes the path that syncs it and is written. (Which sync it gets is `files.rs`'s unit test;
/// durability itself is not visible from here.)
#[test]
fn a_write_asked_to_be_synchronous_is_written() {
    let mut h = Harness::new("writeback-dsync");
    let node = file(&mut h, 0);
    let fh = open(&mut h, node, O_RDWR);
    let data = b"durable";
    let w = WriteIn {
        fh,
        size: data.len() as u32,
        flags: O_RDWR | libc::O_DSYNC as u32,
        ..WriteIn::default()
    };
    let reply = h.call(Opcode::Write, node, &args(&[w.as_bytes(), data]));
    assert_eq!(WriteOut::read_from_bytes(reply.ok()).expect("write_out").size, 7);
    assert_eq!(std::fs::read(h.share().join("f")).expect("host read"), data);
}

/// The guest may set or clear O_APPEND with F_SETFL after the open, which FUSE does not tell; its
/// writes carry the file's flags of the moment, and land as they say: at the offset once
/// O_APPEND is cleared, at the host file's end once it is set. With the writeback cache the
/// guest places appends itself, at the offsets it sends.
#[test]
fn writes_append_as_the_guests_file_says_now() {
    const O_WRONLY: u32 = 0o1;
    let mut h = Harness::new("append-now");
    let node = file(&mut h, 0);
    std::fs::write(h.share().join("f"), b"0123456789").expect("seed");
    let host = |h: &Harness| std::fs::read(h.share().join("f")).expect("host read");
    let appending = open(&mut h, node, O_WRONLY | O_APPEND);
    // The handle's own host file follows the guest's flags: no descriptor is opened for it
    // (the guest holds only as many as its open files). Only descriptors naming this share's
    // file are counted: tests running beside this one open and close their own meanwhile.
    let path = std::fs::canonicalize(h.share().join("f")).expect("canonical path");
    let descriptors = || {
        let fds = std::fs::read_dir("/proc/self/fd").expect("fd dir");
        fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).filter(|l| *l == path).count()
    };
    let before = descriptors();
    assert_eq!(write(&mut h, node, appending, 0, b"AAAA", (0, O_WRONLY)), 4);
    assert_eq!(host(&h), b"AAAA456789", "O_APPEND cleared: written at the offset");
    assert_eq!(write(&mut h, node, appending, 0, b"tail", (0, O_WRONLY | O_APPEND)), 4);
    assert_eq!(host(&h), b"AAAA456789tail", "O_APPEND still on: appended");
    let plain = open(&mut h, node, O_WRONLY);
    // Another writer made the file longer than the guest knows: appends go to the real end.
    std::fs::OpenOptions::new()
        .append(true)
        .open(h.share().join("f"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"+"))
        .expect("host append");
    assert_eq!(write(&mut h, node, plain, 14, b"more", (0, O_WRONLY | O_APPEND)), 4);
    assert_eq!(host(&h), b"AAAA456789tail+more", "O_APPEND set: appended");
    assert_eq!(write(&mut h, node, plain, 0, b"BB", (0, O_WRONLY)), 2);
    assert_eq!(host(&h), b"BBAA456789tail+more");
    // `plain` was opened since `before`: one more, and nothing else.
    assert_eq!(descriptors(), before + 1, "no descriptor opened for a change of O_APPEND");

    let mut h = Harness::with("append-writeback", |c| c.writeback = true);
    let node = file(&mut h, 0);
    std::fs::write(h.share().join("f"), b"0123456789").expect("seed");
    let fh = open(&mut h, node, O_WRONLY | O_APPEND);
    assert_eq!(write(&mut h, node, fh, 10, b"end", (0, O_WRONLY | O_APPEND)), 3);
    assert_eq!(write(&mut h, node, fh, 2, b"xy", (0, O_WRONLY | O_APPEND)), 2);
    assert_eq!(host(&h), b"01xy456789end", "the guest's offsets");
}

/// `--writeback` offers the writeback cache; a guest that does not take it writes as without
/// it: its O_APPEND file appends on the host, and its write-only file stays write-only there.
#[test]
fn a_writeback_cache_the_guest_did_not_take_changes_nothing() {
    use vhu_device_fs::fuse::abi::InitFlags;
    const O_WRONLY: u32 = 0o1;
    let mut h = Harness::with("writeback-refused", |c| c.writeback = true);
    let without = support::linux_guest_flags() - InitFlags::WRITEBACK_CACHE;
    h.init_with(38, without.bits()).ok();
    std::fs::write(h.share().join("f"), b"0123456789").expect("seed");
    let node = h.lookup(1, "f").entry().nodeid;
    let fh = open(&mut h, node, O_WRONLY | O_APPEND);
    let handle = h.server.fs().handles().get(Handle(fh), NodeId(node), false).expect("handle");
    let host_flags = rustix::fs::fcntl_getfl(&handle.fd).expect("F_GETFL");
    assert_eq!(host_flags & rustix::fs::OFlags::ACCMODE, rustix::fs::OFlags::WRONLY);
    assert!(host_flags.contains(rustix::fs::OFlags::APPEND));
    assert_eq!(write(&mut h, node, fh, 2, b"end", (0, O_WRONLY | O_APPEND)), 3);
    assert_eq!(std::fs::read(h.share().join("f")).expect("host read"), b"0123456789end");
}

/// COPY_FILE_RANGE copies at the offsets it names, also into a file the guest opened with
/// O_APPEND and cleared it on since (the guest kernel sends no copy to a file it has with
/// O_APPEND; the host refuses one to a file opened with it).
#[test]
fn copies_land_at_their_offset() {
    use vhu_device_fs::fuse::abi::CopyFileRangeIn;
    const O_WRONLY: u32 = 0o1;
    let mut h = Harness::new("copy-range");
    let from = file(&mut h, 0);
    std::fs::write(h.share().join("f"), b"0123456789").expect("seed");
    std::fs::write(h.share().join("g"), b"abcdefghij").expect("seed");
    let to = h.lookup(1, "g").entry().nodeid;
    let fh_in = open(&mut h, from, O_RDONLY);
    let fh_out = open(&mut h, to, O_WRONLY | O_APPEND);
    let copy =
        CopyFileRangeIn { fh_in, off_in: 2, nodeid_out: to, fh_out, off_out: 0, len: 4, flags: 0 };
    let reply = h.call(vhu_device_fs::fuse::Opcode::CopyFileRange, from, copy.as_bytes());
    assert_eq!(reply.errno(), 0, "copied");
    assert_eq!(WriteOut::read_from_bytes(reply.ok()).expect("write_out").size, 4);
    assert_eq!(std::fs::read(h.share().join("g")).expect("host read"), b"2345efghij");
}

/// A CREATE that finds the name taken (the guest's negative entry was stale) opens the file if
/// the caller may open it for what it asked: write-only access to a file it may not read is
/// enough, though the writeback cache opens it read-write, as OPEN does; no write access is not.
#[test]
fn a_create_finding_a_write_only_file_opens_it_for_a_writer() {
    use vhu_device_fs::fuse::abi::CreateIn;
    let mut h = Harness::with("writeback-create-existing", |c| c.writeback = true);
    h.init();
    if !support::needs_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    for (name, mode) in [("w", 0o622), ("r", 0o644)] {
        std::fs::write(h.share().join(name), b"kept").expect("host write");
        let perms = std::fs::Permissions::from_mode(mode);
        std::fs::set_permissions(h.share().join(name), perms).expect("chmod");
    }
    h.caller = (1000, 1000);
    let create = |h: &mut Harness, name: &str| {
        let c = CreateIn { flags: 0o1, mode: 0o644, umask: 0, open_flags: 0 };
        h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &support::cstr(name)]))
    };
    let reply = create(&mut h, "w");
    assert_eq!(reply.errno(), 0, "a writer opens a file it may write");
    assert_eq!(create(&mut h, "r").errno(), libc::EACCES, "one it may not write stays closed");
}
