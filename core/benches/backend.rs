//! The whole setup QEMU sends for a 2-queue vhost-user-fs device — negotiation, a 2-region memory
//! table, two rings started, then stopped — through `Backend` alone, with a driver that completes
//! every action at once. Reports setups per second; before measuring, one setup runs under a
//! counting global allocator and the process fails if it allocates.
//!
//! Run: `cargo bench -p vhu-core --bench backend`

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/qemu_setup.rs"]
mod qemu_setup;

use std::hint::black_box;

use counting_alloc::{allocations, Counting};
use criterion::{Criterion, Throughput};
use vhu_core::backend::{Action, Backend, BackendSpec, Completion, Output};
use vhu_core::message::VringBase;
use vhu_core::{FdToken, VirtioFeatures};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn spec() -> BackendSpec {
    let mut spec = BackendSpec::new(2, 1024);
    spec.features = qemu_setup::features().difference(VirtioFeatures::PROTOCOL_FEATURES);
    spec.protocol_features = qemu_setup::protocol();
    spec
}

/// Runs one session; returns how many outputs the driver handled.
fn run(spec: &BackendSpec, frames: &[(Vec<u8>, Vec<FdToken>)]) -> usize {
    let mut backend = Backend::new(spec.clone()).expect("valid spec");
    let mut outputs = 0;
    for (frame, fds) in frames {
        backend.handle_frame(frame, fds).expect("the setup is valid");
        loop {
            let mut completion = None;
            while let Some(output) = backend.poll_output() {
                outputs += 1;
                match output {
                    Output::Action(Action::StopVring { index, .. }) => {
                        completion = Some(Completion::VringStopped { index, base: VringBase(0) });
                    }
                    Output::Close(error) => panic!("closed: {error}"),
                    other => {
                        black_box(other);
                    }
                }
            }
            if !backend.is_awaiting_completion() {
                break;
            }
            let completion = completion.unwrap_or(Completion::Done(Ok(())));
            backend.handle_completion(completion).expect("completion expected");
        }
    }
    outputs
}

fn main() {
    let spec = spec();
    let mut messages = qemu_setup::setup();
    messages.extend(qemu_setup::stop());
    let frames = qemu_setup::encode(&messages);

    let before = allocations();
    let outputs = run(&spec, &frames);
    let allocations = allocations() - before;
    println!("one setup: {} messages, {outputs} outputs, {allocations} allocations", frames.len());
    assert_eq!(allocations, 0, "the back-end must not allocate");

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("backend");
    group.throughput(Throughput::Elements(1));
    group.bench_function("qemu_fs_2q_setup_and_stop", |b| {
        b.iter(|| run(&spec, black_box(&frames)));
    });
    group.finish();
    criterion.final_summary();
}
