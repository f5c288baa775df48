//! A write that fails part of the way: a write-back of the guest's page cache (FUSE_WRITE_CACHE)
//! that a full disk stops half-way fails as a whole, so that the guest marks its pages failed
//! and its next fsync reports it (Linux never reads a write-back's count: a short one lost the
//! rest silently); a write of the guest's own answers the short count, as write(2) does, and
//! the guest's caller meets the error at its next write.

mod support;

use support::{args, cstr, Harness, Tmpfs};
use vhu_device_fs::fuse::abi::{CreateIn, EntryOut, OpenOut, WriteIn, WriteOut, WRITE_CACHE};
use vhu_device_fs::fuse::Opcode;
use zerocopy::{FromBytes, IntoBytes};

const ENOSPC: i32 = 28;

#[test]
fn a_write_back_a_full_disk_stops_fails_and_a_write_of_the_guests_own_is_short() {
    if !support::needs_root() {
        return;
    }
    let mut h = Harness::new("partial-write");
    // A file system of 64 KiB in the share.
    let _small = Tmpfs::mount_with(&h.share().join("small"), Some(c"size=64k"));
    h.init();
    let dir = h.lookup(1, "small").entry().nodeid;
    let c = CreateIn {
        flags: (libc::O_RDWR | libc::O_CREAT) as u32,
        mode: 0o100644,
        ..CreateIn::default()
    };
    let created = h.call(Opcode::Create, dir, &args(&[c.as_bytes(), &cstr("f")]));
    let open = OpenOut::read_from_prefix(&created.ok()[size_of::<EntryOut>()..]).expect("open");
    let (node, fh) = (created.entry().nodeid, open.0.fh);
    let data = vec![7u8; 256 * 1024];
    let write = |h: &mut Harness, write_flags: u32| {
        let w = WriteIn { fh, size: data.len() as u32, write_flags, ..WriteIn::default() };
        h.call(Opcode::Write, node, &args(&[w.as_bytes(), &data]))
    };
    assert_eq!(write(&mut h, WRITE_CACHE).errno(), ENOSPC, "a write-back fails as a whole");
    let own = write(&mut h, 0);
    let n = WriteOut::read_from_prefix(own.ok()).expect("write_out").0.size;
    assert!(n > 0 && (n as usize) < data.len(), "a short count: {n}");
}
