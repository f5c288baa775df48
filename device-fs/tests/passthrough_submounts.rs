//! Host mounts inside the share: a tmpfs mounted in the share is announced as a submount (the
//! guest gives it its own st_dev), its files never share an inode number with the share's own,
//! directory listings agree with lookups, and SYNCFS covers it. Mounting needs root (CI).

mod support;

use support::{Harness, ReadOnlyBind, Tmpfs};
use vhu_device_fs::fuse::abi::{OpenIn, ReadIn, SyncfsIn};
use vhu_device_fs::fuse::Opcode;
use zerocopy::IntoBytes;

const ATTR_SUBMOUNT: u32 = 1;

/// A share with `plain/` on the share's file system and `mnt/`, a tmpfs, each holding one file.
fn setup(tag: &str, announce: bool) -> Option<(Harness, Tmpfs)> {
    if !support::needs_root() {
        return None;
    }
    let mut h = Harness::with(tag, |c| c.announce_submounts = announce);
    h.init();
    std::fs::create_dir(h.share().join("plain")).expect("mkdir");
    std::fs::write(h.share().join("plain/a"), b"share").expect("write");
    let tmpfs = Tmpfs::mount(&h.share().join("mnt"));
    std::fs::write(h.share().join("mnt/b"), b"tmpfs").expect("write");
    Some((h, tmpfs))
}

#[test]
fn a_host_mount_is_announced_as_a_submount() {
    let Some((mut h, _tmpfs)) = setup("submount-on", true) else { return };
    let mnt = h.lookup(1, "mnt").entry();
    assert_eq!(mnt.attr.flags & ATTR_SUBMOUNT, ATTR_SUBMOUNT, "the mount point is a submount");
    let plain = h.lookup(1, "plain").entry();
    assert_eq!(plain.attr.flags & ATTR_SUBMOUNT, 0, "a plain directory is not");
    let b = h.lookup(mnt.nodeid, "b").entry();
    assert_eq!(b.attr.flags & ATTR_SUBMOUNT, 0, "a file inside it is not");
    let a = h.lookup(plain.nodeid, "a").entry();
    assert_ne!(a.attr.ino, b.attr.ino);
}

#[test]
fn inode_numbers_never_collide_across_host_file_systems() {
    let Some((mut h, _tmpfs)) = setup("submount-ino", false) else { return };
    let mnt = h.lookup(1, "mnt").entry();
    assert_eq!(mnt.attr.flags & ATTR_SUBMOUNT, 0, "not announced");
    // The share's own files keep their host numbers.
    let plain = h.lookup(1, "plain").entry();
    let share = h.share();
    let host_ino = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(share.join(p)).expect("stat").ino()
    };
    assert_eq!(plain.attr.ino, host_ino("plain"));
    // The tmpfs's do not, and are all distinct from every share number.
    let b = h.lookup(mnt.nodeid, "b").entry();
    assert_ne!(b.attr.ino, host_ino("mnt/b"));
    assert_ne!(mnt.attr.ino, host_ino("mnt"));
    let mut seen = std::collections::BTreeSet::new();
    for ino in [plain.attr.ino, mnt.attr.ino, b.attr.ino, 1] {
        assert!(seen.insert(ino), "guest inode {ino} appears twice");
    }
    // READDIR reports the same numbers as LOOKUP.
    let fh = h.call(Opcode::Opendir, mnt.nodeid, OpenIn::default().as_bytes()).open().fh;
    let r = ReadIn { fh, size: 4096, ..ReadIn::default() };
    let names = h.call(Opcode::Readdir, mnt.nodeid, r.as_bytes());
    let listed = parse_dirents_with_ino(names.ok());
    assert_eq!(listed.get("b"), Some(&b.attr.ino));
    // SYNCFS of the one file system the guest sees opens and flushes both host ones.
    h.call(Opcode::Syncfs, 1, SyncfsIn::default().as_bytes()).ok();
}

/// name → d_ino of a READDIR payload.
fn parse_dirents_with_ino(mut buf: &[u8]) -> std::collections::BTreeMap<String, u64> {
    use vhu_device_fs::fuse::abi::Dirent;
    use zerocopy::FromBytes;
    let mut out = std::collections::BTreeMap::new();
    while !buf.is_empty() {
        let (d, rest) = Dirent::read_from_prefix(buf).expect("dirent header");
        let name = String::from_utf8_lossy(&rest[..d.namelen as usize]).into_owned();
        out.insert(name, d.ino);
        buf = &buf[(24 + d.namelen as usize).div_ceil(8) * 8..];
    }
    out
}

/// One file reached through a writable directory and through a read-only bind mount of it is
/// two nodes, whichever the guest looks up first: the bind mount never lends the writable
/// mount's access, and the writable one never takes the bind's refusal.
#[test]
fn a_read_only_bind_mount_stays_read_only_whichever_path_came_first() {
    use vhu_device_fs::fuse::abi::OpenIn;
    const EROFS: i32 = 30;
    for writable_first in [true, false] {
        if !support::needs_root() {
            return;
        }
        let tag = if writable_first { "bind-ro-after" } else { "bind-ro-before" };
        let mut h = Harness::new(tag);
        h.init();
        std::fs::create_dir(h.share().join("data")).expect("mkdir");
        std::fs::write(h.share().join("data/f"), b"host").expect("write");
        let _bind = ReadOnlyBind::mount(&h.share().join("data"), &h.share().join("ro"));
        let order = if writable_first { ["data", "ro"] } else { ["ro", "data"] };
        let first = h.lookup(1, order[0]).entry().nodeid;
        let second = h.lookup(1, order[1]).entry().nodeid;
        assert_ne!(first, second, "{order:?}: one inode, two mounts, two nodes");
        let (data, ro) = if writable_first { (first, second) } else { (second, first) };
        let open_for_write = |h: &mut Harness, dir: u64| {
            let file = h.lookup(dir, "f").entry().nodeid;
            let open = OpenIn { flags: libc::O_WRONLY as u32, ..OpenIn::default() };
            h.call(Opcode::Open, file, open.as_bytes())
        };
        assert_eq!(open_for_write(&mut h, ro).errno(), EROFS, "{order:?}: through the bind");
        open_for_write(&mut h, data).open();
        // The fast path for names already known keeps the mounts apart too.
        assert_eq!(h.lookup(1, "ro").entry().nodeid, ro);
        assert_eq!(h.lookup(1, "data").entry().nodeid, data);
    }
}
