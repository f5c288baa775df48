//! Guest O_DIRECT: dropped by default (the host page cache serves the I/O, as virtiofsd does),
//! passed to the host with `allow_direct_io`, where every READ and WRITE must still reach the
//! file intact although the server's buffers have no particular alignment.

mod support;

use support::{args, cstr, Harness, Reply};
use vhu_device_fs::fuse::abi::{CreateIn, OpenIn, ReadIn, WriteIn, WriteOut};
use vhu_device_fs::fuse::{Handle, NodeId, Opcode};
use zerocopy::{FromBytes, IntoBytes};

const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_DIRECT: u32 = libc::O_DIRECT as u32;
const EINVAL: i32 = 22;

fn create_direct(h: &mut Harness, name: &str) -> (u64, u64) {
    let c = CreateIn { flags: O_RDWR | O_CREAT | O_DIRECT, mode: 0o100644, ..CreateIn::default() };
    let r = h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr(name)]));
    let (entry, open) =
        (r.entry(), vhu_device_fs::fuse::abi::OpenOut::read_from_bytes(&r.ok()[128..]));
    (entry.nodeid, open.expect("open_out").fh)
}

/// A WRITE from a guest file whose flags are now `flags` (Linux sends them with every write).
fn write_as(h: &mut Harness, node: u64, fh: u64, flags: u32, at: u64, data: &[u8]) -> Reply {
    let w = WriteIn { fh, offset: at, size: data.len() as u32, flags, ..WriteIn::default() };
    h.call(Opcode::Write, node, &args(&[w.as_bytes(), data]))
}

fn write(h: &mut Harness, node: u64, fh: u64, offset: u64, data: &[u8]) -> Reply {
    write_as(h, node, fh, O_RDWR | O_DIRECT, offset, data)
}

fn read_as(h: &mut Harness, node: u64, fh: u64, flags: u32, offset: u64, size: u32) -> Reply {
    let r = ReadIn { fh, offset, size, flags, ..ReadIn::default() };
    h.call(Opcode::Read, node, r.as_bytes())
}

fn read(h: &mut Harness, node: u64, fh: u64, offset: u64, size: u32) -> Vec<u8> {
    read_as(h, node, fh, O_RDWR | O_DIRECT, offset, size).ok().to_vec()
}

fn is_direct(h: &Harness, node: u64, fh: u64) -> bool {
    h.server.fs().handles().get(Handle(fh), NodeId(node), false).expect("handle").is_direct()
}

/// 4 KiB blocks of a recognisable pattern.
fn blocks(n: usize, seed: u8) -> Vec<u8> {
    (0..n * 4096).map(|i| (i / 7) as u8 ^ seed).collect()
}

#[test]
fn o_direct_is_dropped_by_default() {
    let mut h = Harness::new("direct-off");
    h.init();
    let (node, fh) = create_direct(&mut h, "f");
    assert!(!is_direct(&h, node, fh), "CREATE dropped O_DIRECT");
    // Unaligned I/O works: the host page cache serves it.
    let w = write(&mut h, node, fh, 3, b"unaligned");
    assert_eq!(WriteOut::read_from_bytes(w.ok()).expect("write_out").size, 9);
    let o = OpenIn { flags: O_RDWR | O_DIRECT, ..OpenIn::default() };
    let fh2 = h.call(Opcode::Open, node, o.as_bytes()).open().fh;
    assert!(!is_direct(&h, node, fh2), "OPEN dropped O_DIRECT");
    assert_eq!(read(&mut h, node, fh2, 3, 9), b"unaligned");
}

#[test]
fn o_direct_reaches_the_host_with_aligned_buffers() {
    let mut h = Harness::with("direct-on", |c| c.allow_direct_io = true);
    h.init();
    let (node, fh) = create_direct(&mut h, "f");
    assert!(is_direct(&h, node, fh), "CREATE kept O_DIRECT");
    // Writes at 4 KiB offsets, out of order, as fio's random writes do.
    let mut expect = vec![0u8; 8 * 4096];
    for (i, block) in [5usize, 0, 7, 2].into_iter().enumerate() {
        let data = blocks(1, i as u8 + 1);
        let w = write(&mut h, node, fh, (block * 4096) as u64, &data);
        assert_eq!(WriteOut::read_from_bytes(w.ok()).expect("write_out").size, 4096);
        expect[block * 4096..(block + 1) * 4096].copy_from_slice(&data);
    }
    let big = blocks(16, 9);
    write(&mut h, node, fh, 8 * 4096, &big).ok();
    expect.extend_from_slice(&big);
    assert_eq!(std::fs::read(h.share().join("f")).expect("host read"), expect);
    let o = OpenIn { flags: O_RDWR | O_DIRECT, ..OpenIn::default() };
    let fh2 = h.call(Opcode::Open, node, o.as_bytes()).open().fh;
    assert!(is_direct(&h, node, fh2), "OPEN kept O_DIRECT");
    assert_eq!(read(&mut h, node, fh2, 0, expect.len() as u32), expect);
    assert_eq!(read(&mut h, node, fh2, 5 * 4096, 4096), &expect[5 * 4096..6 * 4096]);
    // An unaligned offset is the host's EINVAL, as on a local O_DIRECT file.
    let unaligned = support::unaligned_direct_errno(&h.share());
    assert_eq!(write(&mut h, node, fh, 3, &blocks(1, 0)).errno(), unaligned);
}

#[test]
fn the_host_file_follows_o_direct_as_the_guest_sets_and_clears_it() {
    let mut h = Harness::with("direct-follow", |c| c.allow_direct_io = true);
    h.init();
    let (node, fh) = create_direct(&mut h, "f");
    write(&mut h, node, fh, 0, &blocks(2, 3)).ok();
    // The guest clears O_DIRECT with F_SETFL: its unaligned I/O is then as on any file.
    let w = write_as(&mut h, node, fh, O_RDWR, 3, b"unaligned");
    assert_eq!(WriteOut::read_from_bytes(w.ok()).expect("write_out").size, 9);
    assert!(!is_direct(&h, node, fh), "the host file dropped O_DIRECT with the guest's");
    assert_eq!(read_as(&mut h, node, fh, O_RDWR, 3, 9).ok(), b"unaligned");
    // It sets O_DIRECT again: the host file does too, and unaligned I/O fails as locally.
    let unaligned = support::unaligned_direct_errno(&h.share());
    let direct = read_as(&mut h, node, fh, O_RDWR | O_DIRECT, 3, 9);
    if unaligned == EINVAL {
        assert_eq!(direct.errno(), EINVAL);
    } else {
        assert_eq!(direct.ok(), b"unaligned", "served as the host serves it");
    }
    assert!(is_direct(&h, node, fh), "the host file took O_DIRECT back");
    let mut expect = blocks(2, 3);
    expect[3..12].copy_from_slice(b"unaligned");
    assert_eq!(read(&mut h, node, fh, 0, 8192), expect);
    // A file opened without O_DIRECT takes it when the guest sets it.
    let o = OpenIn { flags: O_RDWR, ..OpenIn::default() };
    let fh2 = h.call(Opcode::Open, node, o.as_bytes()).open().fh;
    assert!(!is_direct(&h, node, fh2));
    let direct = write(&mut h, node, fh2, 5, b"x");
    if unaligned == EINVAL {
        assert_eq!(direct.errno(), EINVAL);
    } else {
        expect[5] = b'x';
    }
    assert!(is_direct(&h, node, fh2));
    assert_eq!(std::fs::read(h.share().join("f")).expect("host read"), expect);
}

#[test]
fn without_allow_direct_io_the_guests_o_direct_never_reaches_the_host() {
    let mut h = Harness::new("direct-never");
    h.init();
    let o = OpenIn { flags: O_RDWR, ..OpenIn::default() };
    let (node, _) = create_direct(&mut h, "f");
    let fh = h.call(Opcode::Open, node, o.as_bytes()).open().fh;
    let w = write_as(&mut h, node, fh, O_RDWR | O_DIRECT, 3, b"unaligned");
    assert_eq!(WriteOut::read_from_bytes(w.ok()).expect("write_out").size, 9);
    assert_eq!(read_as(&mut h, node, fh, O_RDWR | O_DIRECT, 3, 9).ok(), b"unaligned");
    assert!(!is_direct(&h, node, fh));
}
