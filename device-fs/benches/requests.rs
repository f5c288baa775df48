//! What one FUSE request costs vhu-fsd's queue path in-process — chain popped from a split ring,
//! request handled by the passthrough server, reply returned — for READ and WRITE of 4 KiB,
//! LOOKUP and GETATTR, with a counting allocator: each path's steady state allocates nothing.
//!
//! `cargo bench -p vhu-device-fs --bench requests` prints the allocations per request of each,
//! then criterion's times; `... --bench requests -- count read_4k 1000` serves 1 000 READs
//! untimed, for counting instructions.

#[path = "../../core/benches/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocations, Counting};
use criterion::{Criterion, Throughput};
use vhu_device_fs::fuse::abi::{
    EntryOut, GetattrIn, InHeader, InitIn, OpenIn, OpenOut, ReadIn, WriteIn,
};
use vhu_device_fs::fuse::{Opcode, Server, ServerConfig};
use vhu_device_fs::passthrough::{Config, PassthroughFs};
use vhu_transport_std::virtq::{
    serve_turn, Descriptor, QueueState, Reader, RingPoll, SplitQueue, Virtqueue, Writer,
    DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE,
};
use vhu_transport_std::Notifier;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromBytes, IntoBytes};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SIZE: u16 = 256;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const TABLE: u64 = 0x8000;
const REQUEST: u64 = 0x10_000;
const DATA: u64 = 0x20_000;
const REPLY: u64 = 0x30_000;

/// A guest with one request queue whose every chain is, as Linux's virtio-fs driver lays it
/// out, one indirect table: the request header, its arguments, its data (WRITE), the reply
/// header, its payload.
struct Guest {
    mem: GuestMemoryMmap,
    queue: Virtqueue,
    avail: u16,
    server: Server<PassthroughFs>,
    unique: u64,
    call: Notifier,
}

impl Guest {
    fn new(dir: &std::path::Path) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_000)]).expect("memory");
        let state = QueueState {
            size: SIZE,
            desc_table: 0,
            avail_ring: AVAIL,
            used_ring: USED,
            indirect: true,
            ..QueueState::default()
        };
        let queue = Virtqueue::from(SplitQueue::new(state, &mem).expect("ring"));
        let fs = PassthroughFs::new(Config::new(dir)).expect("file system");
        let server = Server::new(fs, ServerConfig::for_queue_size(SIZE));
        Self { mem, queue, avail: 0, server, unique: 0, call: Notifier::new() }
    }

    /// Sends one request and returns its reply payload.
    fn call(&mut self, opcode: Opcode, node: u64, args: &[u8], data: u32, reply: u32) -> Vec<u8> {
        self.unique += 2;
        let len = 40 + args.len() as u32 + data;
        let header = InHeader {
            len,
            opcode: opcode as u32,
            unique: self.unique,
            nodeid: node,
            ..InHeader::default()
        };
        let mem = &self.mem;
        mem.write_slice(header.as_bytes(), GuestAddress(REQUEST)).expect("header");
        mem.write_slice(args, GuestAddress(REQUEST + 64)).expect("args");
        let mut chain = vec![(REQUEST, 40, 0)];
        if !args.is_empty() {
            chain.push((REQUEST + 64, args.len() as u32, 0));
        }
        if data > 0 {
            chain.push((DATA, data, 0));
        }
        chain.push((REPLY, 16, DESC_F_WRITE));
        chain.push((REPLY + 16, reply, DESC_F_WRITE));
        for (i, (addr, len, flags)) in chain.iter().enumerate() {
            let flags = if i + 1 < chain.len() { flags | DESC_F_NEXT } else { *flags };
            let d = Descriptor::new(*addr, *len, flags, i as u16 + 1);
            let at = GuestAddress(TABLE + 16 * i as u64);
            mem.write_slice(d.as_bytes(), at).expect("descriptor");
        }
        let table = Descriptor::new(TABLE, 16 * chain.len() as u32, DESC_F_INDIRECT, 0);
        mem.write_slice(table.as_bytes(), GuestAddress(0)).expect("head descriptor");
        self.serve_one();
        let mut out = vec![0u8; reply as usize];
        self.mem.read_slice(&mut out, GuestAddress(REPLY + 16)).expect("reply");
        out
    }

    /// Makes the chain at head 0 available again and serves it as vhu-fsd's queue does (one
    /// serving turn, each request's reply returned at once).
    fn serve_one(&mut self) {
        self.serve_turn_of(1);
    }

    /// Makes the chain at head 0 available `k` times and serves them in one turn, as a queue
    /// with `k` requests waiting does (the same chain each time: enough to count instructions).
    fn serve_turn_of(&mut self, k: u16) {
        for _ in 0..k {
            let slot = u64::from(self.avail % SIZE);
            self.mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * slot)).expect("avail");
            self.avail = self.avail.wrapping_add(1);
        }
        self.mem.write_obj(self.avail, GuestAddress(AVAIL + 2)).expect("avail idx");
        let (mem, server, call) = (&self.mem, &self.server, &self.call);
        // No polling: each turn serves the chains made available.
        let mut poll = RingPoll::with_max(std::time::Duration::ZERO);
        serve_turn(&mut self.queue, mem, call, &mut poll, |queue, view, chain| {
            let mut reader = Reader::new(view, chain);
            let mut writer = Writer::new(view, chain);
            let n = server.handle(&mut reader, &mut writer).expect("handled");
            queue.complete(view, chain.head(), n as u32, call)
        })
        .expect("served");
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("vhu-fs-bench-requests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("share");
    std::fs::write(dir.join("f"), vec![7u8; 1 << 20]).expect("file");
    let mut guest = Guest::new(&dir);
    let init = InitIn { major: 7, minor: 38, ..InitIn::default() };
    guest.call(Opcode::Init, 0, init.as_bytes(), 0, 64);
    let entry = guest.call(Opcode::Lookup, 1, b"f\0", 0, 128);
    let node = EntryOut::read_from_prefix(&entry).expect("entry").0.nodeid;
    let open = guest.call(Opcode::Open, node, OpenIn { flags: 2, open_flags: 0 }.as_bytes(), 0, 16);
    let fh = OpenOut::read_from_prefix(&open).expect("open").0.fh;

    let read = ReadIn { fh, offset: 8192, size: 4096, ..ReadIn::default() };
    let write = WriteIn { fh, offset: 8192, size: 4096, ..WriteIn::default() };
    type Case = (&'static str, Opcode, u64, Vec<u8>, u32, u32);
    let cases: Vec<Case> = vec![
        ("read_4k", Opcode::Read, node, read.as_bytes().to_vec(), 0, 4096),
        ("write_4k", Opcode::Write, node, write.as_bytes().to_vec(), 4096, 8),
        ("lookup", Opcode::Lookup, 1, b"f\0".to_vec(), 0, 128),
        ("getattr", Opcode::Getattr, node, GetattrIn::default().as_bytes().to_vec(), 0, 104),
    ];
    // `count CASE N [K]`: serve N turns of K requests (1 by default) of CASE untimed and exit,
    // for an instruction counter (callgrind: the difference between two counts over the
    // difference of N times K is one request).
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, case, n, rest @ ..] = args.as_slice() {
        if mode == "count" {
            let per_turn = rest.first().map_or(1, |k| k.parse::<u16>().expect("requests a turn"));
            assert!((1..=SIZE).contains(&per_turn), "1 to {SIZE} requests a turn");
            let (_, opcode, node, body, data, reply) = cases
                .iter()
                .find(|c| c.0 == case.as_str())
                .expect("a case: read_4k, write_4k, lookup or getattr");
            guest.call(*opcode, *node, body, *data, *reply);
            for _ in 0..n.parse::<u32>().expect("a turn count") {
                guest.serve_turn_of(per_turn);
            }
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    }
    for (name, opcode, node, args, data, reply) in &cases {
        // The first request may fill caches; the steady state is what counts.
        guest.call(*opcode, *node, args, *data, *reply);
        let before = allocations();
        for _ in 0..100 {
            guest.serve_one();
        }
        let per_request = (allocations() - before) as f64 / 100.0;
        println!("{name}: {per_request} allocations per request");
        assert_eq!(per_request, 0.0, "{name} must not allocate");
    }

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("requests");
    group.throughput(Throughput::Elements(1));
    for (name, opcode, node, args, data, reply) in &cases {
        guest.call(*opcode, *node, args, *data, *reply);
        group.bench_function(*name, |b| b.iter(|| guest.serve_one()));
    }
    group.finish();
    criterion.final_summary();
    let _ = std::fs::remove_dir_all(&dir);
}
