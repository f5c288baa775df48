//! The guest driver's Linux layout against vhu-fsd: a WRITE's data and a READ's room go a page
//! per descriptor in one indirect table, and the data arrives whole either way.

mod daemon;

use std::time::Duration;

use vhu_device_fs::fuse::abi::{InHeader, ReadIn, WriteIn, WriteOut};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::guest::{GuestFs, Pages, RingLayout};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromBytes, IntoBytes};

const RAM: u64 = 4 << 20;
const LAYOUT: RingLayout = RingLayout {
    ring: 0x1000,
    size: 64,
    slots: 4,
    buffers: 0x1_0000,
    request_max: 0x2_0000,
    reply_max: 0x2_0000,
};

/// (address, length, flags) of each entry of slot 0's indirect table, which ring descriptor 0
/// must point at.
fn table(memory: &GuestMemoryMmap) -> Vec<(u64, u32, u16)> {
    let mut head = [0u8; 16];
    memory.read_slice(&mut head, GuestAddress(LAYOUT.ring)).expect("descriptor 0");
    let flags = u16::from_le_bytes([head[12], head[13]]);
    assert_eq!(flags, 4, "one indirect descriptor");
    assert_eq!(u64::from_le_bytes(head[..8].try_into().expect("8")), LAYOUT.table(0));
    let len = u32::from_le_bytes(head[8..12].try_into().expect("4")) as usize;
    let mut raw = vec![0u8; len];
    memory.read_slice(&mut raw, GuestAddress(LAYOUT.table(0))).expect("table");
    raw.chunks(16)
        .map(|d| {
            let addr = u64::from_le_bytes(d[..8].try_into().expect("8"));
            let len = u32::from_le_bytes(d[8..12].try_into().expect("4"));
            (addr, len, u16::from_le_bytes([d[12], d[13]]))
        })
        .collect()
}

#[test]
fn data_goes_a_page_per_descriptor_and_arrives_whole() {
    let dir = daemon::scratch("vhu-fsd-paged", "write-read");
    std::fs::write(dir.join("share/f"), b"").expect("file");
    let _daemon = daemon::start(&dir, &["--sandbox", "none", "--seccomp", "none"]);
    let mut guest = GuestFs::connect_with(daemon::socket(&dir), RAM, &[LAYOUT]).expect("mounts");
    let node = guest.lookup(1, "f").expect("lookup").nodeid;
    let fh = guest.open(node, libc::O_RDWR as u32).expect("open");
    let (_client, ram, mut rings) = guest.into_parts();
    let ring = &mut rings[0];
    let memory = ram.memory().clone();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13 + 7) as u8).collect();
    let header = |opcode: Opcode, unique: u64| InHeader {
        opcode: opcode as u32,
        unique,
        nodeid: node,
        ..InHeader::default()
    };

    let write = WriteIn { fh, size: data.len() as u32, ..WriteIn::default() };
    let pages = Pages { request: data.len() as u32, reply: 0 };
    ring.submit_paged(header(Opcode::Write, 100), &[write.as_bytes(), &data], 24, pages)
        .expect("submits");
    let request = LAYOUT.request(0);
    let reply = LAYOUT.reply(0);
    let want = vec![
        (request, 40, 1),
        (request + 40, 40, 1),
        (request + 0x1000, 4096, 1),
        (request + 0x2000, 4096, 1),
        (request + 0x3000, 1808, 1),
        (reply, 16, 3),
        (reply + 16, 8, 2),
    ];
    assert_eq!(table(&memory), want, "Linux's layout of a 10 000-byte WRITE");
    ring.kick().expect("kick");
    let done = ring.complete(Duration::from_secs(10)).expect("reply").expect("in time");
    assert_eq!(done.errno, 0);
    let (out, _) = WriteOut::read_from_prefix(done.payload).expect("write_out");
    assert_eq!(out.size, data.len() as u32);
    assert!(std::fs::read(dir.join("share/f")).expect("host read") == data, "the file holds it");

    let read = ReadIn { fh, size: data.len() as u32, ..ReadIn::default() };
    let pages = Pages { request: 0, reply: data.len() as u32 };
    ring.submit_paged(header(Opcode::Read, 102), &[read.as_bytes()], 16 + data.len() as u32, pages)
        .expect("submits");
    let want = vec![
        (request, 40, 1),
        (request + 40, 40, 1),
        (reply, 16, 3),
        (reply + 0x1000, 4096, 3),
        (reply + 0x2000, 4096, 3),
        (reply + 0x3000, 1808, 2),
    ];
    assert_eq!(table(&memory), want, "Linux's layout of a 10 000-byte READ");
    ring.kick().expect("kick");
    let done = ring.complete(Duration::from_secs(10)).expect("reply").expect("in time");
    assert_eq!(done.errno, 0);
    assert!(done.payload == data, "the pages come back in order");
    let _ = std::fs::remove_dir_all(&dir);
}
