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
    let chain =
        [(0x4000, 40, 0), (0x4100, 64, 0), (0x5000, 16, DESC_F_WRITE), (0x6000, 128, DESC_F_WRITE)];
    assert_eq!(serve_chain(&server, &mem, &chain), 16 + 64);
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

/// Lays `descriptors` out as one chain (head 0) on a fresh split ring, lets `server` handle it
/// and returns the bytes it wrote.
fn serve_chain(
    server: &vhu_device_fs::fuse::Server<vhu_device_fs::passthrough::PassthroughFs>,
    mem: &GuestMemoryMmap,
    descriptors: &[(u64, u32, u16)],
) -> usize {
    for (i, &(addr, len, flags)) in descriptors.iter().enumerate() {
        let last = i + 1 == descriptors.len();
        let flags = if last { flags } else { flags | DESC_F_NEXT };
        let d = Descriptor::new(addr, len, flags, i as u16 + 1);
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
    let mut q = SplitQueue::new(state, mem).expect("valid queue");
    let chain = q.pop(mem).expect("valid").expect("chain");
    let mut reader = Reader::new(mem, &chain);
    let mut writer = Writer::new(mem, &chain);
    server.handle(&mut reader, &mut writer).expect("handled")
}

#[test]
fn read_and_write_data_move_between_the_file_and_scattered_guest_buffers() {
    use vhu_device_fs::fuse::abi::{
        EntryOut, InHeader, InitIn, OpenIn, OpenOut, OutHeader, ReadIn, WriteIn, WriteOut,
    };
    use vhu_device_fs::fuse::{Opcode, Server, ServerConfig};
    use zerocopy::FromBytes;

    let dir = std::env::temp_dir().join(format!("vhu-fs-rings-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("share");
    std::fs::write(dir.join("f"), b"").expect("file");
    let fs = vhu_device_fs::passthrough::PassthroughFs::new(
        vhu_device_fs::passthrough::Config::new(&dir),
    )
    .expect("fs");
    let server = Server::new(fs, ServerConfig::for_queue_size(SIZE));
    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40000)]).expect("test memory");
    let (request, reply) = (0x4000u64, 0x5000u64);
    let mut unique = 0;
    let mut call = |opcode: Opcode,
                    node: u64,
                    args: &[u8],
                    data: &[(u64, u32)],
                    out: &[(u64, u32)]| {
        unique += 2;
        let data_len: u32 = data.iter().map(|d| d.1).sum();
        let len = 40 + args.len() as u32 + data_len;
        let hdr =
            InHeader { len, opcode: opcode as u32, unique, nodeid: node, ..InHeader::default() };
        mem.write_slice(hdr.as_bytes(), GuestAddress(request)).expect("header");
        mem.write_slice(args, GuestAddress(request + 40)).expect("args");
        let mut chain = vec![(request, 40 + args.len() as u32, 0)];
        chain.extend(data.iter().map(|&(a, l)| (a, l, 0)));
        chain.extend(out.iter().map(|&(a, l)| (a, l, DESC_F_WRITE)));
        let n = serve_chain(&server, &mem, &chain);
        let mut head = [0u8; 16];
        mem.read_slice(&mut head, GuestAddress(out[0].0)).expect("reply header");
        let head = OutHeader::read_from_bytes(&head).expect("reply header");
        assert_eq!((head.len as usize, head.unique), (n, unique), "{opcode:?}");
        head.error
    };
    let init = InitIn { major: 7, minor: 38, ..InitIn::default() };
    assert_eq!(call(Opcode::Init, 0, init.as_bytes(), &[], &[(reply, 16 + 64)]), 0);
    assert_eq!(call(Opcode::Lookup, 1, b"f\0", &[], &[(reply, 16 + 128)]), 0);
    let mut entry = [0u8; 128];
    mem.read_slice(&mut entry, GuestAddress(reply + 16)).expect("entry");
    let node = EntryOut::read_from_bytes(&entry).expect("entry").nodeid;
    let open = OpenIn { flags: 2, open_flags: 0 };
    assert_eq!(call(Opcode::Open, node, open.as_bytes(), &[], &[(reply, 32)]), 0);
    let mut opened = [0u8; 16];
    mem.read_slice(&mut opened, GuestAddress(reply + 16)).expect("open_out");
    let fh = OpenOut::read_from_bytes(&opened).expect("open_out").fh;

    // 10 000 bytes in two guest buffers go to the file at offset 100.
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    mem.write_slice(&data[..3000], GuestAddress(0x8000)).expect("data");
    mem.write_slice(&data[3000..], GuestAddress(0xa000)).expect("data");
    let write = WriteIn { fh, offset: 100, size: 10_000, ..WriteIn::default() };
    let parts = [(0x8000, 3000), (0xa000, 7000)];
    assert_eq!(call(Opcode::Write, node, write.as_bytes(), &parts, &[(reply, 24)]), 0);
    let mut out = [0u8; 8];
    mem.read_slice(&mut out, GuestAddress(reply + 16)).expect("write_out");
    assert_eq!(WriteOut::read_from_bytes(&out).expect("write_out").size, 10_000);
    let on_disk = std::fs::read(dir.join("f")).expect("file");
    assert_eq!((&on_disk[..100], &on_disk[100..]), (&[0u8; 100][..], &data[..]));

    // Read back into a header buffer and three scattered ones, past the end of the file.
    let read = ReadIn { fh, offset: 100, size: 12_000, ..ReadIn::default() };
    let room = [(reply, 16), (0x10000, 4096), (0x14000, 100), (0x18000, 7804)];
    assert_eq!(call(Opcode::Read, node, read.as_bytes(), &[], &room), 0);
    let mut got = Vec::new();
    for &(addr, len) in &room[1..] {
        let mut part = vec![0u8; len as usize];
        mem.read_slice(&mut part, GuestAddress(addr)).expect("data");
        got.extend(part);
    }
    assert_eq!(&got[..10_000], &data[..], "the file's bytes, in order, across the buffers");

    // A WRITE whose data is not the size its arguments announce is refused, the file untouched.
    let short = WriteIn { fh, offset: 0, size: 5000, ..WriteIn::default() };
    let errno = call(Opcode::Write, node, short.as_bytes(), &[(0x8000, 3000)], &[(reply, 24)]);
    assert_eq!(errno, -22);
    assert_eq!(std::fs::read(dir.join("f")).expect("file"), on_disk);

    // An offset no file has (past i64::MAX) is EINVAL, as pread(2) and pwrite(2) answer it.
    let far = 1u64 << 63;
    let read = ReadIn { fh, offset: far, size: 4096, ..ReadIn::default() };
    assert_eq!(call(Opcode::Read, node, read.as_bytes(), &[], &room), -22);
    let write = WriteIn { fh, offset: far, size: 3000, ..WriteIn::default() };
    let errno = call(Opcode::Write, node, write.as_bytes(), &[(0x8000, 3000)], &[(reply, 24)]);
    assert_eq!(errno, -22);
    assert_eq!(std::fs::read(dir.join("f")).expect("file"), on_disk);
    let _ = std::fs::remove_dir_all(&dir);
}
