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

/// Size of the split rings below.
const SPLIT_SIZE: u16 = 64;

/// A split ring of queue 1 with one chain per request of `requests` (chain `i` is a header of
/// that opcode for the root and room for its reply, at descriptors `2i` and `2i + 1`), its
/// available ring listing `heads`, handled on a pool of `pool` threads. Returns the handler,
/// its context, a call eventfd the driver reads, and the share to remove afterwards; the
/// driver publishes with [`publish`].
fn split_ring(
    tag: &str,
    pool: usize,
    requests: &[Opcode],
    heads: &[u16],
) -> (FsQueue, QueueContext, rustix::fd::OwnedFd, std::path::PathBuf) {
    use vhu_transport_std::virtq::Descriptor;
    let (server, dir) = server(tag);
    let config_of =
        FsConfig { num_request_queues: 1, tag: None, thread_pool_size: pool, dax_window: 0 };
    let device = FsDevice::new(config_of, server);
    let mem = LoggedMemory::from_ranges(&[(GuestAddress(0), 0x40000)]).expect("memory");
    for (i, op) in requests.iter().enumerate() {
        let (request, reply) = (0x8000 + 0x100 * i as u64, 0x20000 + 0x100 * i as u64);
        let unique = 2 + 2 * i as u64;
        let hdr =
            InHeader { len: 56, opcode: *op as u32, unique, nodeid: 1, ..InHeader::default() };
        mem.write_slice(hdr.as_bytes(), GuestAddress(request)).expect("header");
        let next = 2 * i as u16 + 1;
        let chain = [
            Descriptor::new(request, 56, DESC_F_NEXT, next),
            Descriptor::new(reply, 0x100, DESC_F_WRITE, 0),
        ];
        mem.write_slice(chain.as_bytes(), GuestAddress(32 * i as u64)).expect("descriptors");
    }
    for (slot, head) in heads.iter().enumerate() {
        mem.write_obj(2 * *head, GuestAddress(SPLIT_AVAIL + 4 + 2 * slot as u64)).expect("entry");
    }
    let config = VringConfig {
        size: SPLIT_SIZE,
        descriptor: 0,
        available: SPLIT_AVAIL,
        used: SPLIT_AVAIL + 0x1000,
        base: VringBase::split(0),
        packed: false,
        event_idx: false,
        ..config()
    };
    let ring = device.build_queue(VringIndex(1), &config, &mem).expect("valid ring");
    let handler = FsQueue::new(ring, Arc::clone(&device.server)).with_pool(pool);
    let ctx = QueueContext { config, ..context(mem) };
    let call = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).expect("eventfd");
    ctx.call.set(Some(call.try_clone().expect("dup")));
    (handler, ctx, call, dir)
}

/// Where the split rings' available ring lies.
const SPLIT_AVAIL: u64 = 0x4000;

/// The driver makes `idx` chains available in all.
fn publish(ctx: &QueueContext, idx: u16) {
    ctx.memory.memory().write_obj(idx, GuestAddress(SPLIT_AVAIL + 2)).expect("avail idx");
}

/// Notifications the driver got since it last looked.
fn notifications(call: &rustix::fd::OwnedFd) -> u64 {
    let mut count = [0u8; 8];
    rustix::io::read(call, &mut count).map_or(0, |_| u64::from_ne_bytes(count))
}

/// Holds whoever passes it until it is dropped.
#[derive(Default)]
struct Gate(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    fn pass(gate: &(std::sync::Mutex<bool>, std::sync::Condvar)) {
        let mut open = gate.0.lock().unwrap();
        while !*open {
            open = gate.1.wait(open).unwrap();
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

/// A driver that makes one chain available again and again (virtio 1.2 §2.7.13 forbids it)
/// while the pool's threads are busy: the worker takes one queue's worth for the pool and then
/// no more until the pool settles some, instead of queueing jobs without end; once the pool
/// drains, serving goes on where it stopped.
#[test]
fn a_full_pool_takes_no_more_chains_from_the_ring() {
    let heads = [0; SPLIT_SIZE as usize];
    let (mut handler, ctx, _call, dir) = split_ring("pool-full", 2, &[Opcode::Getattr], &heads);
    // Both pool threads busy until the test lets them go (also when it fails: the gate opens
    // when dropped, so the pool's threads can end).
    let gate = Gate::default();
    for _ in 0..2 {
        let gate = Arc::clone(&gate.0);
        assert!(handler.run_on_pool(move || Gate::pass(&gate)));
    }
    publish(&ctx, SPLIT_SIZE);
    handler.process(&ctx);
    assert_eq!(handler.in_pool(), usize::from(SPLIT_SIZE), "a queue's worth handed over");
    // A queue's worth more (as far as the driver may go ahead of the device).
    publish(&ctx, 2 * SPLIT_SIZE);
    for _ in 0..3 {
        handler.process(&ctx);
        assert_eq!(handler.in_pool(), usize::from(SPLIT_SIZE), "no more while the pool is full");
        assert!(!handler.has_more(), "and the worker waits to be woken");
    }
    assert!(!ctx.waker.is_woken(), "nothing woke the worker yet");
    drop(gate);
    let deadline = Instant::now() + Duration::from_secs(10);
    while handler.in_pool() > 0 {
        assert!(Instant::now() < deadline, "the pool settles its chains");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(ctx.waker.is_woken(), "the pool's first settled chain woke the worker");
    handler.process(&ctx);
    handler.stopped(&ctx);
    assert_eq!(
        handler.base(),
        VringBase::split(2 * SPLIT_SIZE),
        "serving went on where it stopped"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// With many chains waiting, a queue announces its completions in groups; a request that may
/// wait for long, on storage (here an FSYNC) or on the front-end (a SETUPMAPPING), is preceded
/// by an announcement of those held back, so a guest never waits for a slow request to hear of
/// the quick ones before it.
#[test]
fn completions_are_announced_before_a_request_that_may_wait_long() {
    let count = |tag: &str, fifth: Opcode| {
        let mut requests = [Opcode::Getattr; 20];
        requests[4] = fifth;
        let heads: Vec<u16> = (0..20).collect();
        let (mut handler, ctx, call, dir) = split_ring(tag, 0, &requests, &heads);
        publish(&ctx, 20);
        handler.process(&ctx);
        let _ = std::fs::remove_dir_all(dir);
        notifications(&call)
    };
    let quick = count("announce-quick", Opcode::Getattr);
    let fsync = count("announce-fsync", Opcode::Fsync);
    assert!(quick < 20, "completions are grouped ({quick} notifications for 20)");
    assert!(fsync > quick, "one more, before the FSYNC ({fsync} against {quick})");
    let mapping = count("announce-mapping", Opcode::SetupMapping);
    assert!(mapping > quick, "one more, before the SETUPMAPPING ({mapping} against {quick})");
}
