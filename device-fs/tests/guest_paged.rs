//! The guest driver's Linux layout against vhu-fsd: a WRITE's data and a READ's room go a page
//! per descriptor in one indirect table, and the data arrives whole either way.

mod daemon;

use std::time::Duration;

use vhu_device_fs::fuse::abi::{InHeader, ReadIn, WriteIn, WriteOut};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::guest::{GuestFs, GuestRing, Pages, RingLayout};
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

/// vhu-fsd serving a scratch share holding an empty file `f`, mounted with one ring of
/// [`LAYOUT`], `f` opened read-write; the daemon lives as long as the value.
struct Mounted {
    dir: std::path::PathBuf,
    _daemon: daemon::Running,
    _client: vhu_transport_std::client::Client,
    ram: vhu_transport_std::client::GuestRegion,
    ring: GuestRing,
    node: u64,
    fh: u64,
}

impl Mounted {
    fn new(case: &str) -> Self {
        let dir = daemon::scratch("vhu-fsd-paged", case);
        std::fs::write(dir.join("share/f"), b"").expect("file");
        let daemon = daemon::start(&dir, &["--sandbox", "none", "--seccomp", "none"]);
        let mut guest =
            GuestFs::connect_with(daemon::socket(&dir), RAM, &[LAYOUT]).expect("mounts");
        let node = guest.lookup(1, "f").expect("lookup").nodeid;
        let fh = guest.open(node, libc::O_RDWR as u32).expect("open");
        let (client, ram, mut rings) = guest.into_parts();
        let ring = rings.remove(0);
        Self { dir, _daemon: daemon, _client: client, ram, ring, node, fh }
    }

    /// `f`'s node, its handle, guest memory and the ring.
    fn parts(&mut self) -> (u64, u64, GuestMemoryMmap, &mut GuestRing) {
        (self.node, self.fh, self.ram.memory().clone(), &mut self.ring)
    }
}

/// The header of a request about `node`.
fn request_header(node: u64, opcode: Opcode, unique: u64) -> InHeader {
    InHeader { opcode: opcode as u32, unique, nodeid: node, ..InHeader::default() }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn data_goes_a_page_per_descriptor_and_arrives_whole() {
    let mut m = Mounted::new("write-read");
    let dir = m.dir.clone();
    let (node, fh, memory, ring) = m.parts();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13 + 7) as u8).collect();
    let header = |opcode: Opcode, unique: u64| request_header(node, opcode, unique);

    let write = WriteIn { fh, size: data.len() as u32, ..WriteIn::default() };
    let pages = Pages { request: data.len() as u32, ..Pages::default() };
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
    let pages = Pages { reply: data.len() as u32, ..Pages::default() };
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
}

#[test]
fn data_in_place_is_sent_from_and_left_in_guest_pages() {
    let mut m = Mounted::new("in-place");
    let dir = m.dir.clone();
    let (node, fh, memory, ring) = m.parts();
    // Watching the used ring before sleeping changes nothing of what arrives.
    ring.set_poll(Duration::from_micros(50));
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 + 5) as u8).collect();
    let header = |opcode: Opcode, unique: u64| request_header(node, opcode, unique);
    assert!(ring.lay_request_data(&vec![0; LAYOUT.request_max as usize]).is_err(), "too large");
    ring.lay_request_data(&data).expect("lays");

    // The body is the arguments only; the data comes from the slot's pages.
    let write = WriteIn { fh, size: data.len() as u32, ..WriteIn::default() };
    let pages = Pages { request: data.len() as u32, reply: 0, in_place: true };
    ring.submit_paged(header(Opcode::Write, 200), &[write.as_bytes()], 24, pages).expect("submits");
    let mut head = [0u8; 40];
    memory.read_slice(&mut head, GuestAddress(LAYOUT.request(0))).expect("header");
    assert_eq!(
        u32::from_le_bytes(head[..4].try_into().expect("4")),
        80 + 10_000,
        "len counts the data"
    );
    assert_eq!(table(&memory)[2], (LAYOUT.request(0) + 0x1000, 4096, 1), "data from its page");
    ring.kick().expect("kick");
    let done = ring.complete(Duration::from_secs(10)).expect("reply").expect("in time");
    assert_eq!((done.errno, done.len()), (0, 8));
    let (out, _) = WriteOut::read_from_prefix(done.payload).expect("write_out");
    assert_eq!(out.size, data.len() as u32);
    assert!(std::fs::read(dir.join("share/f")).expect("host read") == data, "the file holds it");

    // The reply's pages are not copied out, but read where they are.
    let read = ReadIn { fh, offset: 1, size: 9_000, ..ReadIn::default() };
    let pages = Pages { request: 0, reply: 9_000, in_place: true };
    ring.submit_paged(header(Opcode::Read, 202), &[read.as_bytes()], 16 + 9_000, pages)
        .expect("submits");
    ring.kick().expect("kick");
    let done = ring.complete(Duration::from_secs(10)).expect("reply").expect("in time");
    assert_eq!((done.errno, done.payload.len(), done.len()), (0, 0, 9_000));
    let mut back = vec![0u8; 9_000];
    done.read_at(0, &mut back).expect("reads");
    assert!(back == data[1..9_001], "the pages hold the data in order");
    let mut tail = [0u8; 8];
    done.read_at(8_992, &mut tail).expect("reads the tail");
    assert_eq!(tail, data[8_993..9_001]);
    assert!(done.read_at(8_993, &mut tail).is_err(), "past the end");
}

/// Without VIRTIO_RING_F_INDIRECT_DESC a request goes in one descriptor: data laid in place is
/// copied after its arguments, and the header's length counts it.
#[test]
fn without_indirect_descriptors_laid_data_follows_the_arguments() {
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).expect("ram");
    let mut ring = GuestRing::new(memory.clone(), LAYOUT, (false, false)).expect("ring");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
    ring.lay_request_data(&data).expect("lays");
    let write = WriteIn { fh: 1, size: data.len() as u32, ..WriteIn::default() };
    let pages = Pages { request: data.len() as u32, reply: 0, in_place: true };
    ring.submit_paged(request_header(2, Opcode::Write, 300), &[write.as_bytes()], 24, pages)
        .expect("submits");
    let mut sent = vec![0u8; 80 + data.len()];
    memory.read_slice(&mut sent, GuestAddress(LAYOUT.request(0))).expect("the request");
    assert_eq!(u32::from_le_bytes(sent[..4].try_into().expect("4")), 80 + 10_000);
    assert_eq!(&sent[40..80], write.as_bytes());
    assert!(sent[80..] == data[..], "the data after the arguments");
}
