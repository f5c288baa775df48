//! The FUSE server answering through virtqueue chains: a split ring's, and a packed ring's
//! whose chain wraps around the ring's end.

#[path = "../../transport-std/tests/packed_driver/mod.rs"]
mod packed_driver;

use packed_driver::Driver;
use vhu_transport_std::virtq::{
    Descriptor, QueueState, Reader, SplitQueue, Writer, DESC_F_NEXT, DESC_F_WRITE,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

const SIZE: u16 = 16;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

#[test]
fn fuse_init_over_a_packed_chain() {
    use vhu_device_fs::fuse::abi::{InHeader, InitIn, InitOut, OutHeader};
    use vhu_device_fs::fuse::{Opcode, Server, ServerConfig};
    use zerocopy::FromBytes;

    let dir = std::env::temp_dir().join(format!("vhu-fs-virtq-packed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("share");
    let fs = vhu_device_fs::passthrough::PassthroughFs::new(
        vhu_device_fs::passthrough::Config::new(&dir),
    )
    .expect("fs");
    let server = Server::new(fs, ServerConfig::for_queue_size(5));

    let mut d = Driver::new(5);
    // Start at slot 3 so the four-descriptor chain wraps around the end of the ring.
    d.resume_at(3, true);
    let init = InitIn { major: 7, minor: 38, ..InitIn::default() };
    let hdr =
        InHeader { len: 40 + 64, opcode: Opcode::Init as u32, unique: 42, ..InHeader::default() };
    d.mem.write_slice(hdr.as_bytes(), GuestAddress(0x4000)).expect("header");
    d.mem.write_slice(init.as_bytes(), GuestAddress(0x4100)).expect("init_in");
    d.publish(
        11,
        &[
            (0x4000, 40, 0),
            (0x4100, 64, 0),
            (0x5000, 16, DESC_F_WRITE),
            (0x6000, 128, DESC_F_WRITE),
        ],
    );
    let mut q = d.queue(true, true);
    let chain = q.pop(&d.mem).expect("valid").expect("chain");
    let mut reader = Reader::new(&d.mem, &chain);
    let mut writer = Writer::new(&d.mem, &chain);
    let n = server.handle(&mut reader, &mut writer).expect("handled");
    assert_eq!(n, 16 + 64);
    q.add_used(&d.mem, chain.head(), n as u32).expect("used");
    assert!(q.needs_notification(&d.mem).expect("notify"));
    assert_eq!(d.take_used().map(|u| (u.id, u.len)), Some((11, 80)));
    let mut out = [0u8; 16];
    d.mem.read_slice(&mut out, GuestAddress(0x5000)).expect("out header");
    let out = OutHeader::read_from_bytes(&out).expect("out header");
    assert_eq!((out.len, out.error, out.unique), (80, 0, 42));
    let mut body = [0u8; 64];
    d.mem.read_slice(&mut body, GuestAddress(0x6000)).expect("init_out");
    let body = InitOut::read_from_bytes(&body).expect("init_out");
    assert_eq!((body.major, body.minor), (7, 38));
    let s = q.state();
    assert_eq!((s.next_avail, s.avail_wrap, s.next_used, s.used_wrap), (2, false, 2, false));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fuse_request_over_a_virtqueue() {
    use zerocopy::FromBytes;

    use vhu_device_fs::fuse::abi::{InHeader, InitIn, InitOut, OutHeader};
    use vhu_device_fs::fuse::{Opcode, Server, ServerConfig};

    let dir = std::env::temp_dir().join(format!("vhu-fs-virtq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("share");
    let fs = vhu_device_fs::passthrough::PassthroughFs::new(
        vhu_device_fs::passthrough::Config::new(&dir),
    )
    .expect("fs");
    let server = Server::new(fs, ServerConfig::for_queue_size(SIZE));

    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("test memory");
    let init = InitIn { major: 7, minor: 38, ..InitIn::default() };
    let hdr =
        InHeader { len: 40 + 64, opcode: Opcode::Init as u32, unique: 42, ..InHeader::default() };
    mem.write_slice(hdr.as_bytes(), GuestAddress(0x4000)).expect("header");
    mem.write_slice(init.as_bytes(), GuestAddress(0x4100)).expect("init_in");
    let descriptors = [
        (0x4000, 40, DESC_F_NEXT, 1),
        (0x4100, 64, DESC_F_NEXT, 2),
        (0x5000, 16, DESC_F_WRITE | DESC_F_NEXT, 3),
        (0x6000, 128, DESC_F_WRITE, 0),
    ];
    for (i, (addr, len, flags, next)) in descriptors.into_iter().enumerate() {
        let d = Descriptor::new(addr, len, flags, next);
        mem.write_slice(d.as_bytes(), GuestAddress(16 * i as u64)).expect("descriptor");
    }
    mem.write_obj(1u16.to_le(), GuestAddress(AVAIL + 2)).expect("avail idx");
    let state = QueueState {
        size: SIZE,
        desc_table: 0,
        avail_ring: AVAIL,
        used_ring: USED,
        ..QueueState::default()
    };
    let mut q = SplitQueue::new(state, &mem).expect("valid queue");
    let chain = q.pop(&mem).expect("valid").expect("chain");
    let mut reader = Reader::new(&mem, &chain);
    let mut writer = Writer::new(&mem, &chain);
    let n = server.handle(&mut reader, &mut writer).expect("handled");
    assert_eq!(n, 16 + 64);
    q.add_used(&mem, chain.head(), n as u32).expect("used");
    let mut out = [0u8; 16];
    mem.read_slice(&mut out, GuestAddress(0x5000)).expect("out header");
    let out = OutHeader::read_from_bytes(&out).expect("out header");
    assert_eq!((out.len, out.error, out.unique), (80, 0, 42));
    let mut body = [0u8; 64];
    mem.read_slice(&mut body, GuestAddress(0x6000)).expect("init_out");
    let body = InitOut::read_from_bytes(&body).expect("init_out");
    assert_eq!((body.major, body.minor, body.max_pages), (7, 38, 12));
    let _ = std::fs::remove_dir_all(&dir);
}
