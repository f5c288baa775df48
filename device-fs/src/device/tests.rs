//! A packed ring served by `FsQueue` and `FsDevice`: started at a base, processed, stopped, and
//! the base reflects the work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vhu_core::backend::VringConfig;
use vhu_core::message::{PackedBase, VringBase};
use vhu_core::{VirtioFeatures, VringIndex};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic};
use vhu_transport_std::{Device, LoggedMemory, Notifier, Queue, QueueContext, QueueHandler};
use zerocopy::{FromBytes, IntoBytes};

use super::{FsConfig, FsDevice, FsQueue};
use crate::fuse::abi::{InHeader, InitIn};
use crate::fuse::{Opcode, Server, ServerConfig};
use crate::passthrough::{Config, PassthroughFs};
use vhu_transport_std::virtq::{
    packed_avail_flags, PackedDescriptor, DESC_F_NEXT, DESC_F_WRITE, PACKED_DESC_F_AVAIL,
    PACKED_DESC_F_USED,
};

const SIZE: u16 = 5;
const RING: u64 = 0;
const DRIVER_EVENT: u64 = 0x1000;
const DEVICE_EVENT: u64 = 0x1100;
const INIT_ID: u16 = 11;
const BAD_ID: u16 = 5;

/// The ring resumes at slot 3 of a lap with clear wrap counters.
const START: PackedBase =
    PackedBase { avail_index: 3, avail_wrap: false, used_index: 3, used_wrap: false };

fn server(tag: &str) -> (Server<PassthroughFs>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("vhu-fs-device-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("share");
    let fs = PassthroughFs::new(Config::new(&dir)).expect("fs");
    (Server::new(fs, ServerConfig::for_queue_size(SIZE)), dir)
}

fn write_desc(mem: &LoggedMemory, slot: u16, desc: PackedDescriptor) {
    let at = GuestAddress(RING + 16 * u64::from(slot));
    mem.write_slice(desc.as_bytes(), at).expect("descriptor");
}

fn read_desc(mem: &LoggedMemory, slot: u16) -> PackedDescriptor {
    let mut raw = [0u8; 16];
    mem.read_slice(&mut raw, GuestAddress(RING + 16 * u64::from(slot))).expect("descriptor");
    PackedDescriptor::read_from_bytes(&raw).expect("16 bytes")
}

/// A FUSE INIT in slots 3, 4, 0, 1 (across the end of the ring), then a chain whose buffer is
/// outside guest memory in slot 2. Heads are written last.
fn guest() -> LoggedMemory {
    let mem = LoggedMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory");
    let init = InitIn { major: 7, minor: 38, ..InitIn::default() };
    let hdr =
        InHeader { len: 40 + 64, opcode: Opcode::Init as u32, unique: 1, ..InHeader::default() };
    mem.write_slice(hdr.as_bytes(), GuestAddress(0x4000)).expect("header");
    mem.write_slice(init.as_bytes(), GuestAddress(0x4100)).expect("init_in");
    let lap = |wrap: bool, flags: u16| packed_avail_flags(wrap) | flags;
    write_desc(&mem, 4, PackedDescriptor::new(0x4100, 64, 0, lap(false, DESC_F_NEXT)));
    let write_next = DESC_F_WRITE | DESC_F_NEXT;
    write_desc(&mem, 0, PackedDescriptor::new(0x5000, 16, 0, lap(true, write_next)));
    write_desc(&mem, 1, PackedDescriptor::new(0x6000, 128, INIT_ID, lap(true, DESC_F_WRITE)));
    write_desc(&mem, 2, PackedDescriptor::new(0xffff_0000, 8, BAD_ID, lap(true, 0)));
    write_desc(&mem, 3, PackedDescriptor::new(0x4000, 40, 0, lap(false, DESC_F_NEXT)));
    mem
}

fn config() -> VringConfig {
    VringConfig {
        size: SIZE,
        descriptor: RING,
        available: DRIVER_EVENT,
        used: DEVICE_EVENT,
        log: None,
        base: VringBase::packed(START),
        packed: true,
        event_idx: true,
        big_endian: false,
        iova: false,
    }
}

/// Both chains were returned: INIT at slot 3 (previous lap) with its reply length, the bad one
/// at slot 2 with length 0.
fn assert_used(mem: &LoggedMemory) {
    let init = read_desc(mem, 3);
    assert_eq!((init.id.get(), init.len.get(), init.flags.get()), (INIT_ID, 80, DESC_F_WRITE));
    let bad = read_desc(mem, 2);
    let used = PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED;
    assert_eq!((bad.id.get(), bad.len.get(), bad.flags.get()), (BAD_ID, 0, used));
}

/// A worker's context for queue 1 over `mem`.
fn context(mem: LoggedMemory) -> QueueContext {
    QueueContext {
        index: VringIndex(1),
        config: config(),
        memory: GuestMemoryAtomic::new(mem),
        call: Notifier::new(),
        err: Notifier::new(),
        waker: vhu_transport_std::QueueWaker::detached().expect("eventfd"),
    }
}

/// A handler of queue 1 over the [`guest`] ring, serving on a pool of `pool` threads, its
/// context, and the share to remove afterwards.
fn handler(tag: &str, pool: usize) -> (FsQueue, QueueContext, std::path::PathBuf) {
    let (server, dir) = server(tag);
    let config_of =
        FsConfig { num_request_queues: 1, tag: None, thread_pool_size: pool, dax_window: 0 };
    let device = FsDevice::new(config_of, server);
    let mem = guest();
    let ring = device.build_queue(VringIndex(1), &config(), &mem).expect("valid ring");
    let handler = FsQueue::new(ring, Arc::clone(&device.server)).with_pool(pool);
    (handler, context(mem), dir)
}

const END: PackedBase =
    PackedBase { avail_index: 3, avail_wrap: true, used_index: 3, used_wrap: true };

#[test]
fn fs_queue_round_trips_a_packed_base() {
    let (mut handler, ctx, dir) = handler("queue", 0);
    assert_eq!(handler.base(), VringBase::packed(START), "nothing processed yet");
    handler.process(&ctx);
    assert!(!handler.has_more(), "two chains fit one batch");
    assert_used(&ctx.memory.memory());
    assert_eq!(handler.base().as_packed(), END);
    assert_eq!(handler.base(), VringBase::packed(END));
    let _ = std::fs::remove_dir_all(dir);
}

/// With a worker pool the INIT chain is answered on a pool thread; stopping the ring waits for
/// it, so the base reported covers every chain taken from the ring.
#[test]
fn a_pooled_queue_answers_everything_before_it_stops() {
    let (mut handler, ctx, dir) = handler("pool", 2);
    handler.process(&ctx);
    handler.stopped(&ctx);
    // Both used, in the order they finished: the bad chain (answered at once, one descriptor)
    // at slot 3, then INIT at slot 4.
    let memory = ctx.memory.memory();
    let used: Vec<(u16, u32)> = [3, 4]
        .map(|slot| read_desc(&memory, slot))
        .iter()
        .map(|d| (d.id.get(), d.len.get()))
        .collect();
    assert_eq!(used, [(BAD_ID, 0), (INIT_ID, 80)]);
    assert_eq!(handler.base(), VringBase::packed(END));
    let _ = std::fs::remove_dir_all(dir);
}

/// A pool thread returns the chain it answered to the ring itself and notifies the driver: the
/// worker, once it handed the chain over, is not needed again (it is not even woken here).
#[test]
fn a_pool_thread_returns_its_chain_and_notifies() {
    let (mut handler, ctx, dir) = handler("pool-returns", 2);
    let call = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).expect("eventfd");
    let driver = call.try_clone().expect("dup");
    ctx.call.set(Some(call));
    handler.process(&ctx);
    let deadline = Instant::now() + Duration::from_secs(10);
    // The bad chain was returned by the worker at once (slot 3), INIT by the pool (slot 4).
    let used = |slot| {
        let d = read_desc(&ctx.memory.memory(), slot);
        (d.id.get(), d.len.get())
    };
    while used(4) != (INIT_ID, 80) {
        assert!(Instant::now() < deadline, "the pool thread did not return INIT's chain");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(used(3), (BAD_ID, 0));
    let mut count = [0u8; 8];
    // The notification follows the used entry under the ring's lock; give it the moment.
    while rustix::io::read(&driver, &mut count).is_err() {
        assert!(Instant::now() < deadline, "the driver was not notified");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(u64::from_ne_bytes(count) >= 1);
    handler.stopped(&ctx);
    assert_eq!(handler.base(), VringBase::packed(END));
    let _ = std::fs::remove_dir_all(dir);
}

/// A pool of one thread would serve one request at a time as the queue's worker does: the
/// worker serves them itself, so both chains are used, in ring order, when `process` returns.
#[test]
fn a_pool_of_one_is_the_queue_worker() {
    let (mut handler, ctx, dir) = handler("pool-of-one", 1);
    handler.process(&ctx);
    assert_used(&ctx.memory.memory());
    assert_eq!(handler.base(), VringBase::packed(END));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fs_device_round_trips_a_packed_base() {
    let (server, dir) = server("device");
    let mut device = FsDevice::new(
        FsConfig { num_request_queues: 1, tag: None, thread_pool_size: 0, dax_window: 0 },
        server,
    );
    assert!(device.spec().features.contains(VirtioFeatures::RING_PACKED));
    device.acked_features(
        VirtioFeatures::VERSION_1 | VirtioFeatures::RING_PACKED | VirtioFeatures::RING_EVENT_IDX,
    );
    let memory = GuestMemoryAtomic::new(guest());
    let queue = Queue {
        index: VringIndex(1),
        config: config(),
        kick: None,
        call: Notifier::new(),
        err: Notifier::new(),
        enabled: true,
        memory: memory.clone(),
        inflight: None,
    };
    device.start_queue(queue).expect("started");
    // Requests are sized for the request queue's descriptors: its size less the header overhead.
    assert_eq!(device.server().config().max_pages, SIZE - 4);
    // The worker processes an enabled queue at once; wait for the last used descriptor.
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_desc(&memory.memory(), 2).flags.get() & PACKED_DESC_F_USED == 0 {
        assert!(Instant::now() < deadline, "the worker did not process the ring");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A logging switch (core's verdict) is honoured; a ring moved while it runs, or logged
    // elsewhere, is refused, as is any change to a queue no longer running.
    let mut logged = config();
    logged.log = Some(logged.used);
    assert!(device.update_queue(VringIndex(1), logged, true).is_ok(), "QEMU's way to log");
    assert!(device.update_queue(VringIndex(1), config(), true).is_ok(), "and to stop");
    let mut moved = config();
    moved.used += 0x1000;
    assert!(matches!(
        device.update_queue(VringIndex(1), moved, false),
        Err(vhu_transport_std::DeviceError::Unsupported)
    ));
    let base = device.stop_queue(VringIndex(1), true);
    assert!(device.update_queue(VringIndex(1), config(), true).is_err(), "not running any more");
    assert_used(&memory.memory());
    assert_eq!(base.as_packed(), END);
    // A bad base is refused.
    let mut bad = config();
    bad.base = VringBase::packed(PackedBase { avail_index: SIZE, ..START });
    let ring = device.build_queue(VringIndex(1), &bad, &*memory.memory());
    assert!(ring.is_err());
    let _ = std::fs::remove_dir_all(dir);
}
