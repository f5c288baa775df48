//! File operations through the FUSE server against a passthrough of a temporary directory.

mod support;

use std::collections::BTreeSet;

use support::{args, cstr, exists, parse_direntplus, parse_dirents, Harness};
use vhu_device_fs::fuse::abi::{
    fattr, AttrOut, BatchForgetIn, CreateIn, FlushIn, ForgetIn, ForgetOne, GetattrIn, Kstatfs,
    MkdirIn, MknodIn, OpenIn, ReadIn, ReleaseIn, Rename2In, RenameIn, SetattrIn, WriteIn, WriteOut,
};
use vhu_device_fs::fuse::{NodeId, Opcode};
use zerocopy::{FromBytes, IntoBytes};

const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTEMPTY: i32 = 39;
const EBADF: i32 = 9;

fn create(h: &mut Harness, parent: u64, name: &str) -> (u64, u64) {
    let c = CreateIn {
        flags: 0o2 | 0o100, // O_RDWR | O_CREAT
        mode: 0o100644,
        ..CreateIn::default()
    };
    let r = h.call(Opcode::Create, parent, &args(&[c.as_bytes(), &cstr(name)]));
    let payload = r.ok();
    assert_eq!(payload.len(), 128 + 16);
    let entry = r.entry();
    let open =
        vhu_device_fs::fuse::abi::OpenOut::read_from_bytes(&payload[128..]).expect("open_out");
    (entry.nodeid, open.fh)
}

fn write(h: &mut Harness, node: u64, fh: u64, offset: u64, data: &[u8]) -> u32 {
    let w = WriteIn { fh, offset, size: data.len() as u32, ..WriteIn::default() };
    let r = h.call(Opcode::Write, node, &args(&[w.as_bytes(), data]));
    WriteOut::read_from_bytes(r.ok()).expect("write_out").size
}

fn read(h: &mut Harness, op: Opcode, node: u64, fh: u64, offset: u64, size: u32) -> Vec<u8> {
    let r = ReadIn { fh, offset, size, ..ReadIn::default() };
    h.call(op, node, r.as_bytes()).ok().to_vec()
}

fn release(h: &mut Harness, op: Opcode, node: u64, fh: u64) {
    let r = ReleaseIn { fh, ..ReleaseIn::default() };
    h.call(op, node, r.as_bytes()).ok();
}

fn mkdir(h: &mut Harness, parent: u64, name: &str) -> u64 {
    let m = MkdirIn { mode: 0o755, umask: 0 };
    h.call(Opcode::Mkdir, parent, &args(&[m.as_bytes(), &cstr(name)])).entry().nodeid
}

fn opendir(h: &mut Harness, node: u64) -> u64 {
    h.call(Opcode::Opendir, node, OpenIn::default().as_bytes()).open().fh
}

#[test]
fn lookup_getattr_and_forget_counts() {
    let mut h = Harness::new("lookup");
    h.init();
    std::fs::write(h.share().join("file"), b"12345").expect("host write");
    let e1 = h.lookup(1, "file").entry();
    assert_ne!(e1.nodeid, 0);
    assert_eq!(e1.attr.size, 5);
    assert_eq!(e1.attr.mode & 0o170000, 0o100000);
    let e2 = h.lookup(1, "file").entry();
    assert_eq!(e1.nodeid, e2.nodeid, "same host inode, same node id");
    let inodes = h.server.fs().inodes();
    assert_eq!(inodes.lookups(NodeId(e1.nodeid)), Some(2));

    let r = h.call(Opcode::Getattr, e1.nodeid, GetattrIn::default().as_bytes());
    let attr = AttrOut::read_from_bytes(r.ok()).expect("attr_out");
    assert_eq!(attr.attr.ino, e1.attr.ino);

    assert_eq!(h.lookup(1, "missing").errno(), ENOENT);
    assert!(h.try_call(Opcode::Forget, e1.nodeid, ForgetIn { nlookup: 1 }.as_bytes()).is_none());
    assert_eq!(h.server.fs().inodes().lookups(NodeId(e1.nodeid)), Some(1));
    let batch = BatchForgetIn { count: 1, dummy: 0 };
    let one = ForgetOne { nodeid: e1.nodeid, nlookup: 1 };
    assert!(h
        .try_call(Opcode::BatchForget, 0, &args(&[batch.as_bytes(), one.as_bytes()]))
        .is_none());
    assert_eq!(h.server.fs().inodes().lookups(NodeId(e1.nodeid)), None);
    assert_eq!(h.server.fs().inodes().len(), 1, "only the root is left");
    let r = h.call(Opcode::Getattr, e1.nodeid, GetattrIn::default().as_bytes());
    assert_eq!(r.errno(), EBADF);
    // Forgetting the root is ignored.
    h.try_call(Opcode::Forget, 1, ForgetIn { nlookup: 100 }.as_bytes());
    assert_eq!(h.lookup(1, "file").header.error, 0);
}

/// A LOOKUP of a name whose inode the guest already holds answers from that node; a name the
/// host has since pointed at another inode gets that inode's node, and a symlink stays a symlink.
#[test]
fn lookup_of_a_known_inode_follows_the_name() {
    let mut h = Harness::new("relookup");
    h.init();
    let share = h.share();
    std::fs::write(share.join("a"), b"1").expect("host write");
    std::fs::write(share.join("b"), b"22").expect("host write");
    std::os::unix::fs::symlink("a", share.join("link")).expect("symlink");
    let first = h.lookup(1, "a").entry();
    assert_eq!(h.lookup(1, "a").entry().nodeid, first.nodeid);
    assert_eq!(h.server.fs().inodes().lookups(NodeId(first.nodeid)), Some(2));

    std::fs::rename(share.join("b"), share.join("a")).expect("host rename");
    let renamed = h.lookup(1, "a").entry();
    assert_ne!(renamed.nodeid, first.nodeid, "another inode, another node");
    let host_ino = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(share.join("a")).expect("host stat"),
    );
    assert_eq!((renamed.attr.size, renamed.attr.ino), (2, host_ino));
    let again = h.lookup(1, "a").entry();
    assert_eq!((again.nodeid, again.attr.size), (renamed.nodeid, 2));
    assert_eq!(h.server.fs().inodes().lookups(NodeId(renamed.nodeid)), Some(2));

    let link = h.lookup(1, "link").entry();
    let link_again = h.lookup(1, "link").entry();
    assert_eq!(link_again.nodeid, link.nodeid);
    assert_eq!(link_again.attr.mode & 0o170000, 0o120000, "not followed");
    assert_eq!(link_again.attr.size, 1);
    std::fs::remove_file(share.join("link")).expect("host unlink");
    assert_eq!(h.lookup(1, "link").errno(), ENOENT);
}

#[test]
fn create_write_read_back_and_release() {
    let mut h = Harness::new("rw");
    h.init();
    let (node, fh) = create(&mut h, 1, "hello.txt");
    assert_eq!(write(&mut h, node, fh, 0, b"hello, world"), 12);
    assert_eq!(write(&mut h, node, fh, 7, b"virtio"), 6);
    assert_eq!(read(&mut h, Opcode::Read, node, fh, 0, 4096), b"hello, virtio");
    assert_eq!(read(&mut h, Opcode::Read, node, fh, 7, 3), b"vir");
    assert_eq!(read(&mut h, Opcode::Read, node, fh, 100, 10), b"");
    let flush = FlushIn { fh, ..FlushIn::default() };
    h.call(Opcode::Flush, node, flush.as_bytes()).ok();
    release(&mut h, Opcode::Release, node, fh);
    assert!(h.server.fs().handles().is_empty());
    assert_eq!(std::fs::read(h.share().join("hello.txt")).expect("host read"), b"hello, virtio");
    // A released handle is gone.
    let r = ReadIn { fh, size: 1, ..ReadIn::default() };
    assert_eq!(h.call(Opcode::Read, node, r.as_bytes()).errno(), EBADF);

    // OPEN an existing file and read it.
    let o = OpenIn { flags: 0, open_flags: 0 };
    let fh2 = h.call(Opcode::Open, node, o.as_bytes()).open().fh;
    assert_eq!(read(&mut h, Opcode::Read, node, fh2, 0, 5), b"hello");
    // A handle cannot be used for another node.
    let other = create(&mut h, 1, "other").0;
    let r = ReadIn { fh: fh2, size: 1, ..ReadIn::default() };
    assert_eq!(h.call(Opcode::Read, other, r.as_bytes()).errno(), EBADF);

    // CREATE with O_EXCL of an existing name fails.
    let c = CreateIn { flags: 0o2 | 0o100 | 0o200, mode: 0o100644, ..CreateIn::default() };
    let r = h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr("hello.txt")]));
    assert_eq!(r.errno(), EEXIST);
    // Without O_EXCL, over an existing directory: EISDIR, as open(2) answers.
    std::fs::create_dir(h.share().join("dir")).expect("host mkdir");
    let c = CreateIn { flags: 0o2 | 0o100, mode: 0o100644, ..CreateIn::default() };
    let r = h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr("dir")]));
    assert_eq!(r.errno(), 21);
}

#[test]
fn setattr_truncates_and_chmods() {
    let mut h = Harness::new("setattr");
    h.init();
    let (node, fh) = create(&mut h, 1, "f");
    write(&mut h, node, fh, 0, b"abcdef");
    let s = SetattrIn {
        valid: fattr::SIZE | fattr::MODE,
        size: 2,
        mode: 0o600,
        ..SetattrIn::default()
    };
    let r = h.call(Opcode::Setattr, node, s.as_bytes());
    let attr = AttrOut::read_from_bytes(r.ok()).expect("attr_out").attr;
    assert_eq!(attr.size, 2);
    assert_eq!(attr.mode & 0o7777, 0o600);
    // A truncation the host refuses leaves the mode as it was, set-id bits included.
    let path = h.share().join("f");
    let setuid = std::os::unix::fs::PermissionsExt::from_mode(0o4755);
    std::fs::set_permissions(&path, setuid).expect("chmod");
    let s = SetattrIn { valid: fattr::SIZE | fattr::MODE, size: u64::MAX, mode: 0o755, ..s };
    assert_eq!(h.call(Opcode::Setattr, node, s.as_bytes()).errno(), 22, "EINVAL: no such size");
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&path).expect("stat"));
    assert_eq!(mode & 0o7777, 0o4755);
    // A truncation on behalf of a lock owner (FATTR_LOCKOWNER, for mandatory locks, which
    // Linux no longer has) is an ordinary truncation.
    let s = SetattrIn {
        valid: fattr::SIZE | fattr::FH | fattr::MTIME | fattr::LOCKOWNER,
        fh,
        size: 1,
        mtime: 1_000_000,
        lock_owner: 9,
        ..SetattrIn::default()
    };
    let attr = AttrOut::read_from_bytes(h.call(Opcode::Setattr, node, s.as_bytes()).ok())
        .expect("attr_out")
        .attr;
    assert_eq!((attr.size, attr.mtime), (1, 1_000_000));
    assert_eq!(std::fs::read(h.share().join("f")).expect("host read"), b"a");
}

#[test]
fn times_before_1970_are_set_and_shown() {
    use std::os::unix::fs::MetadataExt;
    let mut h = Harness::new("old-times");
    h.init();
    let (node, _) = create(&mut h, 1, "f");
    // 1960-01-01: the kernel sends the signed time in the unsigned field.
    let then: i64 = -315_619_200;
    let s = SetattrIn {
        valid: fattr::ATIME | fattr::MTIME,
        atime: then as u64,
        mtime: then as u64,
        ..SetattrIn::default()
    };
    let attr = AttrOut::read_from_bytes(h.call(Opcode::Setattr, node, s.as_bytes()).ok())
        .expect("attr_out")
        .attr;
    let host = std::fs::metadata(h.share().join("f")).expect("host stat");
    assert_eq!((host.mtime(), host.atime()), (then, then), "set on the host");
    assert_eq!((attr.mtime as i64, attr.atime as i64), (then, then), "shown to the guest");
}

#[test]
fn mkdir_readdir_readdirplus_and_rmdir() {
    let mut h = Harness::new("dirs");
    h.init();
    let dir = mkdir(&mut h, 1, "d");
    assert!(h.share().join("d").is_dir());
    let names: Vec<String> = (0..20).map(|i| format!("file-{i:02}")).collect();
    for n in &names {
        std::fs::write(h.share().join("d").join(n), b"x").expect("host write");
    }
    let fh = opendir(&mut h, dir);
    let all = parse_dirents(&read(&mut h, Opcode::Readdir, dir, fh, 0, 4096));
    let got: BTreeSet<String> = all.iter().map(|(n, _)| n.clone()).collect();
    let mut want: BTreeSet<String> = names.iter().cloned().collect();
    want.insert(".".into());
    want.insert("..".into());
    assert_eq!(got, want);

    // Small buffers: resume from each reply's last cookie, no duplicates, nothing lost.
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let part = parse_dirents(&read(&mut h, Opcode::Readdir, dir, fh, offset, 80));
        if part.is_empty() {
            break;
        }
        assert!(part.len() <= 2, "80 bytes hold at most two records");
        offset = part.last().expect("non-empty").1;
        seen.extend(part.into_iter().map(|(n, _)| n));
    }
    assert_eq!(seen.len(), want.len());
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), want);

    // READDIRPLUS: a reference per entry except . and ..
    let before = h.server.fs().inodes().len();
    let plus = parse_direntplus(&read(&mut h, Opcode::Readdirplus, dir, fh, 0, 1 << 16));
    assert_eq!(plus.len(), want.len());
    for (name, nodeid, _) in &plus {
        if name == "." || name == ".." {
            assert_eq!(*nodeid, 0);
        } else {
            assert_ne!(*nodeid, 0);
            assert_eq!(h.server.fs().inodes().lookups(NodeId(*nodeid)), Some(1));
        }
    }
    assert_eq!(h.server.fs().inodes().len(), before + names.len());
    // A buffer too small for one record takes no reference.
    let before = h.server.fs().inodes().len();
    assert!(read(&mut h, Opcode::Readdirplus, dir, fh, 0, 100).is_empty());
    assert_eq!(h.server.fs().inodes().len(), before);
    for (name, nodeid, _) in &plus {
        if *nodeid != 0 {
            h.try_call(Opcode::Forget, *nodeid, ForgetIn { nlookup: 1 }.as_bytes());
            assert!(!name.is_empty());
        }
    }
    release(&mut h, Opcode::Releasedir, dir, fh);

    assert_eq!(h.call(Opcode::Rmdir, 1, &cstr("d")).errno(), ENOTEMPTY);
    for n in &names {
        h.call(Opcode::Unlink, dir, &cstr(n)).ok();
    }
    assert_eq!(h.call(Opcode::Unlink, dir, &cstr("file-00")).errno(), ENOENT);
    h.call(Opcode::Rmdir, 1, &cstr("d")).ok();
    assert!(!exists(&h.share().join("d")));
}

/// A directory removed while the guest still holds a lookup reference on it takes no new names:
/// Linux answers ENOENT to every create, link or rename into it, and the server passes that on.
#[test]
fn nothing_is_created_in_a_removed_directory() {
    let mut h = Harness::new("removed-dir");
    h.init();
    let dir = mkdir(&mut h, 1, "d");
    let (file, fh) = create(&mut h, 1, "f");
    release(&mut h, Opcode::Release, file, fh);
    h.call(Opcode::Rmdir, 1, &cstr("d")).ok();
    assert!(!exists(&h.share().join("d")));

    let c = CreateIn { flags: 0o2 | 0o100, mode: 0o100644, ..CreateIn::default() };
    let r = h.call(Opcode::Create, dir, &args(&[c.as_bytes(), &cstr("new")]));
    assert_eq!(r.errno(), ENOENT, "CREATE");
    let m = MkdirIn { mode: 0o755, umask: 0 };
    assert_eq!(h.call(Opcode::Mkdir, dir, &args(&[m.as_bytes(), &cstr("sub")])).errno(), ENOENT);
    let n = MknodIn { mode: 0o010644, ..MknodIn::default() };
    assert_eq!(h.call(Opcode::Mknod, dir, &args(&[n.as_bytes(), &cstr("p")])).errno(), ENOENT);
    let r = h.call(Opcode::Symlink, dir, &args(&[&cstr("s"), &cstr("target")]));
    assert_eq!(r.errno(), ENOENT, "SYMLINK");
    let l = vhu_device_fs::fuse::abi::LinkIn { oldnodeid: file };
    assert_eq!(h.call(Opcode::Link, dir, &args(&[l.as_bytes(), &cstr("l")])).errno(), ENOENT);
    let r = RenameIn { newdir: dir };
    let r = h.call(Opcode::Rename, 1, &args(&[r.as_bytes(), &cstr("f"), &cstr("moved")]));
    assert_eq!(r.errno(), ENOENT, "RENAME");
    assert!(exists(&h.share().join("f")), "the source of the refused rename stays");
    let names: BTreeSet<String> = std::fs::read_dir(h.share())
        .expect("read share")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, BTreeSet::from(["f".to_string()]));
}

/// `touch -h` and `chown -h`: SETATTR on a symlink changes the link itself, never its target.
#[test]
fn setattr_on_a_symlink_does_not_follow_it() {
    use std::os::unix::fs::MetadataExt;
    let mut h = Harness::new("symlink-setattr");
    h.init();
    std::fs::write(h.share().join("target"), b"t").expect("host write");
    let before = std::fs::metadata(h.share().join("target")).expect("stat target");
    let l = h.call(Opcode::Symlink, 1, &args(&[&cstr("l"), &cstr("target")])).entry().nodeid;
    let s = SetattrIn {
        valid: fattr::ATIME | fattr::MTIME,
        atime: 1_000_000,
        mtime: 2_000_000,
        mtimensec: 5,
        ..SetattrIn::default()
    };
    let attr = AttrOut::read_from_bytes(h.call(Opcode::Setattr, l, s.as_bytes()).ok())
        .expect("attr_out")
        .attr;
    assert_eq!((attr.atime, attr.mtime, attr.mtimensec), (1_000_000, 2_000_000, 5));
    assert_eq!(attr.mode & 0o170000, 0o120000, "the reply describes the link");
    let link = std::fs::symlink_metadata(h.share().join("l")).expect("lstat");
    assert_eq!((link.atime(), link.mtime()), (1_000_000, 2_000_000));
    let after = std::fs::metadata(h.share().join("target")).expect("stat target");
    assert_eq!(after.mtime(), before.mtime(), "the target is untouched");
    if rustix::process::geteuid().is_root() {
        let s =
            SetattrIn { valid: fattr::UID | fattr::GID, uid: 7, gid: 8, ..SetattrIn::default() };
        h.call(Opcode::Setattr, l, s.as_bytes()).ok();
        let link = std::fs::symlink_metadata(h.share().join("l")).expect("lstat");
        assert_eq!((link.uid(), link.gid()), (7, 8));
        assert_eq!(std::fs::metadata(h.share().join("target")).expect("stat").uid(), 0);
    }
    // Linux has no lchmod: refused before anything else in the request changes.
    let s = SetattrIn { valid: fattr::MODE | fattr::UID, mode: 0o600, uid: 9, ..s };
    assert_eq!(h.call(Opcode::Setattr, l, s.as_bytes()).errno(), 95);
    let link = std::fs::symlink_metadata(h.share().join("l")).expect("lstat");
    assert_ne!(link.uid(), 9, "the owner stays");
}

#[test]
fn rename_and_rename2() {
    let mut h = Harness::new("rename");
    h.init();
    let d = mkdir(&mut h, 1, "sub");
    std::fs::write(h.share().join("a"), b"A").expect("host write");
    std::fs::write(h.share().join("b"), b"B").expect("host write");
    let r = RenameIn { newdir: d };
    h.call(Opcode::Rename, 1, &args(&[r.as_bytes(), &cstr("a"), &cstr("moved")])).ok();
    assert!(!exists(&h.share().join("a")));
    assert_eq!(std::fs::read(h.share().join("sub/moved")).expect("moved"), b"A");
    // RENAME_NOREPLACE onto an existing name.
    let r2 = Rename2In { newdir: 1, flags: 1, padding: 0 };
    let body = args(&[r2.as_bytes(), &cstr("moved"), &cstr("b")]);
    assert_eq!(h.call(Opcode::Rename2, d, &body).errno(), EEXIST);
    // RENAME_EXCHANGE swaps.
    let r2 = Rename2In { newdir: 1, flags: 2, padding: 0 };
    h.call(Opcode::Rename2, d, &args(&[r2.as_bytes(), &cstr("moved"), &cstr("b")])).ok();
    assert_eq!(std::fs::read(h.share().join("b")).expect("b"), b"A");
    assert_eq!(std::fs::read(h.share().join("sub/moved")).expect("moved"), b"B");
    // Unknown flag bits: EINVAL.
    let r2 = Rename2In { newdir: 1, flags: 0x100, padding: 0 };
    let body = args(&[r2.as_bytes(), &cstr("moved"), &cstr("c")]);
    assert_eq!(h.call(Opcode::Rename2, d, &body).errno(), 22);
}

#[test]
fn symlink_readlink_link_statfs() {
    let mut h = Harness::new("links");
    h.init();
    let e = h.call(Opcode::Symlink, 1, &args(&[&cstr("lnk"), &cstr("target/path")])).entry();
    assert_eq!(e.attr.mode & 0o170000, 0o120000);
    assert_eq!(h.call(Opcode::Readlink, e.nodeid, &[]).ok(), b"target/path");
    let (f, _) = create(&mut h, 1, "orig");
    let l = vhu_device_fs::fuse::abi::LinkIn { oldnodeid: f };
    let le = h.call(Opcode::Link, 1, &args(&[l.as_bytes(), &cstr("hard")])).entry();
    assert_eq!(le.nodeid, f, "a hard link is the same node");
    assert_eq!(le.attr.nlink, 2);
    let st = Kstatfs::read_from_bytes(h.call(Opcode::Statfs, 1, &[]).ok()).expect("statfs");
    assert!(st.bsize > 0 && st.namelen > 0);
}

#[test]
fn xattrs_are_enosys_unless_enabled() {
    let mut h = Harness::new("xattr-off");
    h.init();
    let body = args(&[&[0u8; 8], &cstr("user.k")]);
    assert_eq!(h.call(Opcode::Getxattr, 1, &body).errno(), 38);
    assert_eq!(h.call(Opcode::Listxattr, 1, &[0u8; 8]).errno(), 38);

    let mut h = Harness::with("xattr-on", |c| c.xattr = true);
    h.init();
    let (f, _) = create(&mut h, 1, "x");
    let set = vhu_device_fs::fuse::abi::SetxattrInCompat { size: 3, flags: 0 };
    let r = h.call(Opcode::Setxattr, f, &args(&[set.as_bytes(), &cstr("user.k"), b"val"]));
    if r.errno() == 95 {
        // The temporary directory's file system has no user xattrs.
        return;
    }
    r.ok();
    let q = vhu_device_fs::fuse::abi::GetxattrIn { size: 0, padding: 0 };
    let size = h.call(Opcode::Getxattr, f, &args(&[q.as_bytes(), &cstr("user.k")]));
    assert_eq!(size.ok(), &[3, 0, 0, 0, 0, 0, 0, 0]);
    let q = vhu_device_fs::fuse::abi::GetxattrIn { size: 64, padding: 0 };
    let v = h.call(Opcode::Getxattr, f, &args(&[q.as_bytes(), &cstr("user.k")]));
    assert_eq!(v.ok(), b"val");
    let list = h.call(Opcode::Listxattr, f, q.as_bytes());
    assert!(list.ok().windows(7).any(|w| w == b"user.k\0"));
    h.call(Opcode::Removexattr, f, &cstr("user.k")).ok();
    let v = h.call(Opcode::Getxattr, f, &args(&[q.as_bytes(), &cstr("user.k")]));
    assert_eq!(v.errno(), 61, "ENODATA after removal");
}

/// A guest that keeps opening without releasing runs into ENFILE, not into the daemon's own
/// descriptor limit; releasing frees the budget again.
#[test]
fn open_descriptors_are_bounded() {
    const ENFILE: i32 = 23;
    // The root, "f" and three handles.
    let mut h = Harness::with("budget", |config| config.max_open = 5);
    h.init();
    let (node, fh) = create(&mut h, 1, "f");
    let open = OpenIn { flags: 0, open_flags: 0 };
    let second = h.call(Opcode::Open, node, open.as_bytes()).open().fh;
    let third = h.call(Opcode::Open, node, open.as_bytes()).open().fh;
    assert_eq!(h.call(Opcode::Open, node, open.as_bytes()).errno(), ENFILE);
    std::fs::write(h.share().join("g"), b"").expect("host write");
    assert_eq!(h.lookup(1, "g").errno(), ENFILE, "a new inode needs a descriptor too");
    // Refused before anything is made: a retry must not meet EEXIST.
    let m = MkdirIn { mode: 0o755, umask: 0 };
    assert_eq!(h.call(Opcode::Mkdir, 1, &args(&[m.as_bytes(), &cstr("d")])).errno(), ENFILE);
    assert!(!exists(&h.share().join("d")), "the directory was not made");
    let link = vhu_device_fs::fuse::abi::LinkIn { oldnodeid: node };
    assert_eq!(h.call(Opcode::Link, 1, &args(&[link.as_bytes(), &cstr("l")])).errno(), ENFILE);
    assert!(!exists(&h.share().join("l")), "the link was not made");
    let known = h.lookup(1, "f").entry();
    assert_eq!(known.nodeid, node, "a known inode needs none");
    for handle in [fh, second] {
        let release = ReleaseIn { fh: handle, ..ReleaseIn::default() };
        assert_eq!(h.call(Opcode::Release, node, release.as_bytes()).errno(), 0);
    }
    let again = h.call(Opcode::Open, node, open.as_bytes());
    assert_eq!(again.errno(), 0);
    let _ = third;
}

/// O_TMPFILE: TMPFILE opens a file with no name (nlink 0, nothing in the directory), its data
/// can be written, and LINK gives it a name with that data.
#[test]
fn tmpfile_is_unnamed_until_linked() {
    let mut h = Harness::new("tmpfile");
    h.init();
    let c = CreateIn { flags: 0o2, mode: 0o100600, ..CreateIn::default() };
    let r = h.call(Opcode::Tmpfile, 1, &args(&[c.as_bytes(), &cstr("/")]));
    let entry = r.entry();
    let fh = vhu_device_fs::fuse::abi::OpenOut::read_from_bytes(&r.ok()[128..]).expect("open").fh;
    assert_eq!(entry.attr.nlink, 0, "no name yet");
    assert_eq!(entry.attr.mode & 0o7777, 0o600);
    assert_eq!(std::fs::read_dir(h.share()).expect("list").count(), 0, "nothing in the share");
    assert_eq!(write(&mut h, entry.nodeid, fh, 0, b"unnamed data"), 12);
    // FLUSH reports the close of a duplicate and leaves the handle usable.
    let f = FlushIn { fh, ..FlushIn::default() };
    h.call(Opcode::Flush, entry.nodeid, f.as_bytes()).ok();
    assert_eq!(read(&mut h, Opcode::Read, entry.nodeid, fh, 0, 64), b"unnamed data");
    let l = vhu_device_fs::fuse::abi::LinkIn { oldnodeid: entry.nodeid };
    let linked = h.call(Opcode::Link, 1, &args(&[l.as_bytes(), &cstr("named")])).entry();
    assert_eq!((linked.nodeid, linked.attr.nlink), (entry.nodeid, 1));
    assert_eq!(std::fs::read(h.share().join("named")).expect("host read"), b"unnamed data");
    release(&mut h, Opcode::Release, entry.nodeid, fh);
    let f = FlushIn { fh, ..FlushIn::default() };
    assert_eq!(h.call(Opcode::Flush, entry.nodeid, f.as_bytes()).errno(), EBADF);
}

/// STATX (sent by Linux when a caller wants more than the basic stats, the birth time say)
/// answers with the host's statx, the inode number as GETATTR gives it.
#[test]
fn statx_reports_the_birth_time() {
    use vhu_device_fs::fuse::abi::{StatxIn, StatxOut};
    let mut h = Harness::new("statx");
    h.init();
    std::fs::write(h.share().join("f"), b"12345").expect("host write");
    let e = h.lookup(1, "f").entry();
    const STATX_BTIME: u32 = 0x800;
    let q = StatxIn { sx_mask: STATX_BTIME | 0x7ff, ..StatxIn::default() };
    let out = StatxOut::read_from_bytes(h.call(Opcode::Statx, e.nodeid, q.as_bytes()).ok())
        .expect("statx_out");
    assert_eq!((out.stat.ino, out.stat.size), (e.attr.ino, 5));
    assert_eq!(u32::from(out.stat.mode), e.attr.mode);
    let host = std::fs::metadata(h.share().join("f")).expect("stat");
    if let Ok(created) = host.created() {
        let secs = created.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
        assert_ne!(out.stat.mask & STATX_BTIME, 0, "the birth time is reported");
        assert_eq!(out.stat.btime.tv_sec, secs as i64);
    }
    assert_eq!(h.call(Opcode::Statx, 999, q.as_bytes()).errno(), EBADF);
}

/// LSEEK answers as the host's lseek(2) does for the guest's own file: data and holes of a
/// sparse file, ENXIO past the end or before the start for SEEK_DATA and SEEK_HOLE, the end
/// for SEEK_END, EINVAL for an unknown whence.
#[test]
fn lseek_finds_data_and_holes_as_the_host_does() {
    use vhu_device_fs::fuse::abi::{LseekIn, LseekOut};
    const EINVAL: i32 = 22;
    const ENXIO: i32 = 6;
    let mut h = Harness::new("lseek");
    h.init();
    let (node, fh) = create(&mut h, 1, "sparse");
    let size = 4 << 20;
    assert_eq!(write(&mut h, node, fh, size - 4096, &[7; 4096]), 4096);
    let host = std::fs::File::open(h.share().join("sparse")).expect("open on the host");
    let mut seek = |offset: u64, whence: u32| {
        let l = LseekIn { fh, offset, whence, padding: 0 };
        let r = h.call(Opcode::Lseek, node, l.as_bytes());
        match r.header.error {
            0 => Ok(LseekOut::read_from_bytes(r.ok()).expect("lseek_out").offset),
            _ => Err(r.errno()),
        }
    };
    let (data, hole) = (3, 4);
    let host_seek = |offset: i64, whence: i32| {
        use std::os::fd::AsRawFd;
        // SAFETY: lseek on a descriptor this test owns; no memory is passed.
        let at = unsafe { libc::lseek(host.as_raw_fd(), offset, whence) };
        u64::try_from(at).map_err(|_| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    };
    for offset in [0, 4096, size - 4096, size - 1] {
        for whence in [data, hole] {
            let want = host_seek(offset as i64, whence as i32);
            assert_eq!(seek(offset, whence), want, "offset {offset} whence {whence}");
        }
    }
    assert_eq!(seek(size - 4096, data), Ok(size - 4096), "the data is where it was written");
    assert_eq!(seek(size, data), Err(ENXIO), "past the end");
    assert_eq!(seek(-1i64 as u64, data), Err(ENXIO), "a negative offset, as loff_t");
    assert_eq!(seek(-1i64 as u64, hole), Err(ENXIO));
    assert_eq!(seek(-1i64 as u64, 2), Ok(size - 1), "SEEK_END -1");
    assert_eq!(seek(0, 5), Err(EINVAL));
}

/// ACCESS asks the host with the bits the guest names (R_OK, W_OK, X_OK; F_OK is none of them)
/// and refuses others.
#[test]
fn access_checks_the_bits_it_is_given() {
    use vhu_device_fs::fuse::abi::AccessIn;
    let mut h = Harness::new("access");
    h.init();
    std::fs::write(h.share().join("f"), b"x").expect("host write");
    let node = h.lookup(1, "f").entry().nodeid;
    let access = |h: &mut Harness, mask: u32| {
        h.call(Opcode::Access, node, AccessIn { mask, padding: 0 }.as_bytes()).errno()
    };
    assert_eq!(access(&mut h, 0), 0, "F_OK: it exists");
    assert_eq!(access(&mut h, 0o4 | 0o2), 0, "readable and writable");
    // Not executable by anyone: even root is refused X_OK.
    assert_eq!(access(&mut h, 0o1), 13, "EACCES");
    assert_eq!(access(&mut h, 0o10), 22, "EINVAL for a bit that is not R_OK, W_OK or X_OK");
}
