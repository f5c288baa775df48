//! Decoding and validating the control-plane messages QEMU sends to set up a 2-queue
//! vhost-user-fs device, through `FrameDecoder` and `Request::parse`.
//!
//! Before measuring, the setup is decoded once under a counting global allocator and the number
//! of allocations is printed; the process fails if it is not zero.
//!
//! Run: `cargo bench -p vhu-core --bench decode`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, Throughput};
use vhu_core::message::{MemoryTable, VringAddr, VringAddrFlags, VringBase, VringFd};
use vhu_core::wire::{MemoryRegion, U64};
use vhu_core::{
    FdToken, FrameDecoder, Progress, ProtocolFeatures, Request, VirtioFeatures, VringIndex,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const fn region(gpa: u64, size: u64, uaddr: u64, offset: u64) -> MemoryRegion {
    MemoryRegion {
        guest_address: U64::new(gpa),
        size: U64::new(size),
        user_address: U64::new(uaddr),
        mmap_offset: U64::new(offset),
    }
}

static REGIONS: [MemoryRegion; 2] = [
    region(0, 0x8000_0000, 0x7f00_0000_0000, 0),
    region(0x1_0000_0000, 0x8000_0000, 0x7f00_8000_0000, 0x8000_0000),
];
static FDS: [FdToken; 2] = [FdToken(20), FdToken(21)];

/// The messages in the order QEMU's vhost-user-fs front-end sends them (NEED_REPLY where QEMU sets
/// it with REPLY_ACK negotiated), encoded once.
fn setup_frames() -> Vec<(Vec<u8>, Vec<FdToken>)> {
    let features = VirtioFeatures::VERSION_1
        | VirtioFeatures::PROTOCOL_FEATURES
        | VirtioFeatures::RING_EVENT_IDX
        | VirtioFeatures::RING_INDIRECT_DESC;
    let protocol = ProtocolFeatures::MQ
        | ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::BACKEND_REQ
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS;
    let mut messages: Vec<(Request<'static>, bool)> = vec![
        (Request::GetFeatures, false),
        (Request::GetProtocolFeatures, false),
        (Request::SetProtocolFeatures(protocol), false),
        (Request::GetQueueNum, false),
        (Request::GetMaxMemSlots, false),
        (Request::SetBackendReqFd(FdToken(1)), true),
        (Request::SetOwner, false),
        (Request::GetFeatures, false),
        (Request::SetVringCall(VringFd { index: VringIndex(0), fd: Some(FdToken(2)) }), false),
        (Request::SetVringCall(VringFd { index: VringIndex(1), fd: Some(FdToken(3)) }), false),
        (Request::SetFeatures(features), true),
        (Request::SetMemTable { table: MemoryTable::Standard(&REGIONS), fds: &FDS }, true),
    ];
    for q in 0..2u8 {
        let index = VringIndex(q);
        let base = 0x7f00_0000_0000 + u64::from(q) * 0x10000;
        messages.extend([
            (Request::SetVringNum { index, num: 1024 }, true),
            (Request::SetVringBase { index, base: VringBase::split(0) }, true),
            (
                Request::SetVringAddr(VringAddr {
                    index,
                    flags: VringAddrFlags::empty(),
                    descriptor: base,
                    used: base + 0x6000,
                    available: base + 0x4000,
                    log: 0,
                }),
                true,
            ),
            (Request::SetVringKick(VringFd { index, fd: Some(FdToken(4 + u32::from(q))) }), false),
            (Request::SetVringCall(VringFd { index, fd: Some(FdToken(6 + u32::from(q))) }), false),
            (Request::SetVringEnable { index, enable: true }, true),
        ]);
    }
    messages
        .into_iter()
        .map(|(request, need_reply)| {
            let mut buf = vec![0u8; 512];
            let len = request.encode_into(need_reply, &mut buf).expect("setup message encodes");
            buf.truncate(len);
            (buf, request.fds().to_vec())
        })
        .collect()
}

/// Streams each frame through the decoder, as a transport does, and parses it. Returns a value
/// derived from every parsed message so nothing is optimised away.
fn decode_all(decoder: &mut FrameDecoder, frames: &[(Vec<u8>, Vec<FdToken>)]) -> u64 {
    let mut acc = 0u64;
    for (bytes, fds) in frames {
        let (_, progress) = decoder.push(bytes).expect("valid frame");
        assert!(matches!(progress, Progress::Ready(_)));
        let frame = decoder.frame().expect("frame ready");
        let incoming = Request::parse(frame, fds).expect("valid message");
        acc = acc.wrapping_add(u64::from(incoming.message.code().as_u32()));
        acc = acc.wrapping_add(u64::from(incoming.need_reply));
        black_box(&incoming);
        decoder.clear();
    }
    acc
}

fn main() {
    let frames = setup_frames();
    let mut decoder = FrameDecoder::new();

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let acc = decode_all(&mut decoder, &frames);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "setup of {} messages decoded with {allocations} allocations (checksum {acc})",
        frames.len()
    );
    assert_eq!(allocations, 0, "decoding must not allocate");

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("control_plane");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function("qemu_fs_2q_setup", |b| {
        b.iter(|| decode_all(&mut decoder, black_box(&frames)));
    });
    group.finish();
    criterion.final_summary();
}
