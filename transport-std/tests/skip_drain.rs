//! GET_VRING_BASE_SKIP_DRAIN for real: a device holds some chains when the front-end stops its
//! ring without draining; the front-end reconnects, hands the same inflight area back, and the
//! device — its ring attached to the area — serves the chains it held before anything new, in
//! the order it first fetched them.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use vhu_transport_std::client::{eventfd, Client, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::backend::BackendSpec;
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::virtq::{Descriptor, Virtqueue, DESC_F_WRITE};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestAddressSpace};
use vhu_transport_std::{
    Daemon, Device, DeviceError, Listen, Queue, QueueContext, QueueHandler, Workers,
};

const RAM: u64 = 0x10_0000;
const SIZE: u16 = 16;
const DESC: u64 = 0x1_0000;
const AVAIL: u64 = DESC + 0x1000;
const USED: u64 = DESC + 0x2000;

/// Returns every chain, except that while `hold` is set it keeps the odd heads in flight.
struct Holder {
    ring: Virtqueue,
    hold: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<u16>>>,
}

impl QueueHandler for Holder {
    fn process(&mut self, ctx: &QueueContext) {
        let memory = ctx.memory.memory();
        while let Ok(Some(chain)) = self.ring.pop(&*memory) {
            let head = chain.head();
            self.seen.lock().unwrap().push(head);
            if self.hold.load(Ordering::SeqCst) && head % 2 == 1 {
                continue;
            }
            self.ring.complete(&*memory, head, 0, &ctx.call).expect("used");
        }
    }

    fn base(&self) -> VringBase {
        self.ring.base()
    }
}

struct Holding {
    workers: Workers<Holder>,
    hold: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<u16>>>,
}

fn protocol() -> ProtocolFeatures {
    ProtocolFeatures::MQ
        | ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::INFLIGHT_SHMFD
        | ProtocolFeatures::GET_VRING_BASE_INFLIGHT
        | ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN
}

impl Device for Holding {
    fn spec(&self) -> BackendSpec {
        let mut spec = BackendSpec::new(1, 64);
        spec.protocol_features = protocol();
        spec
    }

    fn start_queue(&mut self, mut queue: Queue) -> Result<(), DeviceError> {
        let memory = queue.memory.memory();
        let index = queue.index.0;
        let mut ring = Virtqueue::from_config(&queue.config, &*memory, false)
            .map_err(|reason| DeviceError::Queue { index, reason })?;
        let region = queue.inflight.take().expect("the front-end set an inflight area");
        ring.track_inflight(region, &*memory).expect("the region fits the ring");
        drop(memory);
        let holder = Holder { ring, hold: Arc::clone(&self.hold), seen: Arc::clone(&self.seen) };
        self.workers.start(queue, holder)
    }

    fn stop_queue(&mut self, index: VringIndex, _drain: bool) -> VringBase {
        self.workers.stop(index).map_or(VringBase(0), |h| h.base())
    }

    fn set_queue_enabled(&mut self, index: VringIndex, enabled: bool) {
        self.workers.set_enabled(index, enabled);
    }

    fn replace_kick(&mut self, index: VringIndex, kick: Option<OwnedFd>) {
        self.workers.replace_kick(index, kick);
    }

    fn reset(&mut self) {
        self.workers.stop_all();
    }
}

fn used_idx(ram: &GuestRegion) -> u16 {
    ram.memory().read_obj(GuestAddress(USED + 2)).expect("used idx")
}

fn used_id(ram: &GuestRegion, slot: u64) -> u32 {
    ram.memory().read_obj(GuestAddress(USED + 4 + 8 * slot)).expect("used id")
}

fn connect(path: &std::path::Path) -> Client {
    let mut client = Client::connect(path).expect("connect");
    client.set_timeout(common::TIMEOUT).expect("timeout");
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    let negotiated = client.handshake(features, protocol()).expect("handshake");
    assert!(negotiated.protocol_features.contains(ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN));
    client
}

#[test]
fn chains_left_in_flight_by_a_skip_drain_stop_are_served_after_reconnecting() {
    let path = std::env::temp_dir().join(format!("vhu-skip-drain-{}.sock", std::process::id()));
    let hold = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let device =
        Holding { workers: Workers::new(), hold: Arc::clone(&hold), seen: Arc::clone(&seen) };
    let mut daemon = Daemon::new(device, Listen::Path(path.clone())).expect("daemon");
    let (ended, ends) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = daemon.serve(|end| ended.send(format!("{end:?}")).is_ok());
    });

    // The guest: four chains of one writable buffer each, heads 0 to 3.
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    for head in 0..4u16 {
        let d = Descriptor::new(0x8_0000 + 0x100 * u64::from(head), 0x100, DESC_F_WRITE, 0);
        let at = GuestAddress(DESC + 16 * u64::from(head));
        ram.memory().write_slice(zerocopy::IntoBytes::as_bytes(&d), at).expect("descriptor");
        ram.memory().write_obj(head, GuestAddress(AVAIL + 4 + 2 * u64::from(head))).expect("avail");
    }
    ram.memory().write_obj(4u16, GuestAddress(AVAIL + 2)).expect("avail idx");
    let (call, kick) = (eventfd().expect("call"), eventfd().expect("kick"));
    let user = |gpa| ram.host_address(gpa).expect("ring inside guest memory");
    let start = |base: u16| VringStart {
        size: SIZE,
        base: VringBase::split(base),
        descriptor: user(DESC),
        available: user(AVAIL),
        used: user(USED),
        log: None,
        call: Some(call.as_fd()),
        kick: Some(kick.as_fd()),
    };

    // The daemon listens once `Daemon::new` returned.
    let mut client = connect(&path);
    let (desc, area) = client.get_inflight_fd(1, SIZE).expect("get_inflight_fd");
    let area = area.expect("an area");
    client.set_inflight_fd(desc, area.as_fd()).expect("set_inflight_fd");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    client.start_vring(VringIndex(0), start(0)).expect("start");
    let returned = common::eventually(|| used_idx(&ram) == 2);
    assert!(returned, "the even heads come back: {:?}, used {}", seen.lock(), used_idx(&ram));
    let base = client.stop_vring_skip_drain(VringIndex(0)).expect("skip-drain stop");
    assert_eq!(base, VringBase::split(4), "every chain was fetched");
    drop(client);
    assert_eq!(ends.recv_timeout(common::TIMEOUT).expect("first connection ends"), "HungUp");

    // A new connection with the same area: the held chains come back first, in fetch order.
    hold.store(false, Ordering::SeqCst);
    let mut client = connect(&path);
    client.set_inflight_fd(desc, area.as_fd()).expect("set_inflight_fd again");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    client.start_vring(VringIndex(0), start(4)).expect("restart");
    assert!(common::eventually(|| used_idx(&ram) == 4), "the held chains are returned");
    assert_eq!((used_id(&ram, 2), used_id(&ram, 3)), (1, 3));
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3, 1, 3], "nothing fetched twice but the held");
    drop(client);
    let _ = std::fs::remove_file(&path);
}
