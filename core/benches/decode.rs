//! Decoding and validating the control-plane messages QEMU sends to set up a 2-queue
//! vhost-user-fs device, through `FrameDecoder` and `Request::parse`.
//!
//! Before measuring, the setup is decoded once under a counting global allocator and the number
//! of allocations is printed; the process fails if it is not zero.
//!
//! Run: `cargo bench -p vhu-core --bench decode`

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/qemu_setup.rs"]
mod qemu_setup;

use std::hint::black_box;

use counting_alloc::{allocations, Counting};
use criterion::{Criterion, Throughput};
use vhu_core::{FdToken, FrameDecoder, Progress, Request};

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let frames = qemu_setup::encode(&qemu_setup::setup());
    let mut decoder = FrameDecoder::new();

    let before = allocations();
    let acc = decode_all(&mut decoder, &frames);
    let allocations = allocations() - before;
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
