//! Interop: rust-vmm's `vhost` front-end drives the mio server over a real socket: handshake,
//! memory table on a memfd, rings started with bases, processed, and stopped with the bases the
//! device reached; then a second front-end finds a fresh device. A front-end that cuts its
//! guest memory short takes neither the process nor the other front-ends down.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};

use common::{eventually, memfd, serve, Served, CONFIG_SIZE, QUEUES};
use rustix::fs::ftruncate;
use rustix::io::pwrite;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhu_transport_mio::vhu_transport_std::bus_guard;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const RAM_SIZE: u64 = 0x10_0000;
const USER: u64 = 0x7000_0000_0000;
const QUEUE_SIZE: u16 = 64;

/// Guest address of queue `q`'s descriptor table; avail is 0x1000 above, used 0x2000 above.
fn ring(q: usize) -> u64 {
    0x1_0000 * (q as u64 + 1)
}

fn set_avail_idx(ram: &OwnedFd, q: usize, idx: u16) {
    pwrite(ram, &idx.to_le_bytes(), ring(q) + 0x1000 + 2).expect("pwrite avail idx");
}

fn connect(served: &Served) -> Frontend {
    Frontend::from_stream(served.connect(), QUEUES as u64)
}

fn event() -> EventFd {
    EventFd::new(EFD_NONBLOCK).expect("eventfd")
}

fn signalled(call: &EventFd) -> bool {
    eventually(|| call.read().is_ok())
}

fn negotiate(frontend: &mut Frontend) {
    let features = frontend.get_features().expect("get_features");
    assert_ne!(features & (1 << 32), 0, "VERSION_1 offered");
    assert_ne!(features & (1 << 30), 0, "PROTOCOL_FEATURES offered");
    frontend.set_owner().expect("set_owner");
    let protocol = frontend.get_protocol_features().expect("get_protocol_features");
    assert!(protocol.contains(VhostUserProtocolFeatures::REPLY_ACK));
    frontend.set_protocol_features(protocol).expect("set_protocol_features");
    frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    frontend.set_features((1 << 32) | (1 << 30)).expect("set_features");
    assert_eq!(frontend.get_queue_num().expect("get_queue_num"), QUEUES as u64);
}

fn set_mem_table(frontend: &mut Frontend, ram: &OwnedFd) {
    let region = VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: RAM_SIZE,
        userspace_addr: USER,
        mmap_offset: 0,
        mmap_handle: ram.as_raw_fd(),
    };
    frontend.set_mem_table(&[region]).expect("set_mem_table");
}

fn setup_ring(frontend: &mut Frontend, q: usize, base: u16, call: &EventFd, kick: &EventFd) {
    let config = VringConfigData {
        queue_max_size: QUEUE_SIZE,
        queue_size: QUEUE_SIZE,
        flags: 0,
        desc_table_addr: USER + ring(q),
        avail_ring_addr: USER + ring(q) + 0x1000,
        used_ring_addr: USER + ring(q) + 0x2000,
        log_addr: None,
    };
    frontend.set_vring_num(q, QUEUE_SIZE).expect("set_vring_num");
    frontend.set_vring_addr(q, &config).expect("set_vring_addr");
    frontend.set_vring_base(q, base).expect("set_vring_base");
    frontend.set_vring_call(q, call).expect("set_vring_call");
    frontend.set_vring_kick(q, kick).expect("set_vring_kick");
}

#[test]
fn rust_vmm_frontend_session_then_clean_reconnect() {
    let served = serve("interop", 4);
    let ram = memfd(RAM_SIZE);
    let mut frontend = connect(&served);
    negotiate(&mut frontend);
    set_mem_table(&mut frontend, &ram);
    assert!(served.record.lock().unwrap().acked.is_some(), "SET_FEATURES reached the device");

    let (calls, kicks): (Vec<EventFd>, Vec<EventFd>) =
        (0..QUEUES).map(|_| (event(), event())).unzip();
    setup_ring(&mut frontend, 0, 0, &calls[0], &kicks[0]);
    setup_ring(&mut frontend, 1, 7, &calls[1], &kicks[1]);
    assert_eq!(served.record.lock().unwrap().starts, [0, 1], "rings start on SET_VRING_KICK");

    // Buffers made available before enabling are processed on enable; ring 1 after a kick.
    set_avail_idx(&ram, 0, 3);
    frontend.set_vring_enable(0, true).expect("enable 0");
    assert!(signalled(&calls[0]), "ring 0 processed on enable");
    // Ring 1's index shows its base when enabled (its scan then signals nothing, so the call
    // below is the kick's, from a scan that saw 12).
    set_avail_idx(&ram, 1, 7);
    frontend.set_vring_enable(1, true).expect("enable 1");
    set_avail_idx(&ram, 1, 12);
    kicks[1].write(1).expect("kick");
    assert!(signalled(&calls[1]), "ring 1 processed after a kick");

    let flags = VhostUserConfigFlags::empty();
    let (_, config) =
        frontend.get_config(0, CONFIG_SIZE as u32, flags, &[0; CONFIG_SIZE]).expect("get_config");
    assert_eq!(config, [0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7]);

    // GET_VRING_BASE stops each ring and answers with where the device stopped.
    assert_eq!(frontend.get_vring_base(0).expect("base 0"), 3);
    assert_eq!(frontend.get_vring_base(1).expect("base 1"), 12);
    assert_eq!(served.record.lock().unwrap().stops, [(0, 3), (1, 12)]);
    // A stopped ring restarts from a new base (the ring already shows it as available).
    set_avail_idx(&ram, 0, 20);
    setup_ring(&mut frontend, 0, 20, &calls[0], &kicks[0]);
    assert_eq!(frontend.get_vring_base(0).expect("base 0 again"), 20);

    frontend.reset_device().expect("reset_device");
    assert_eq!(served.record.lock().unwrap().acked, None, "reset forgets features");
    drop(frontend);
    assert_eq!(served.wait_ended(1), ["HungUp"]);

    // A second front-end gets a fresh device and back-end: stopped rings, fresh memory.
    let mut frontend = connect(&served);
    negotiate(&mut frontend);
    assert_eq!(frontend.get_vring_base(0).expect("stopped ring base"), 0);
    let ram = memfd(RAM_SIZE);
    set_mem_table(&mut frontend, &ram);
    let (call, kick) = (event(), event());
    setup_ring(&mut frontend, 0, 0, &call, &kick);
    set_avail_idx(&ram, 0, 5);
    frontend.set_vring_enable(0, true).expect("enable");
    assert!(signalled(&call));
    assert_eq!(frontend.get_vring_base(0).expect("base"), 5);
    drop(frontend);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
    let record = served.record.lock().unwrap();
    assert_eq!(record.devices, 2, "one device per connection");
    assert_eq!(record.stops, [(0, 3), (1, 12), (0, 20), (0, 5)]);
    assert!(record.resets >= 3, "RESET_DEVICE and each disconnect reset ({})", record.resets);
}

#[test]
fn a_front_end_cutting_its_memory_short_leaves_the_process_and_the_others_served() {
    let served = serve("truncated", 4);
    let (ram_a, ram_b) = (memfd(RAM_SIZE), memfd(RAM_SIZE));
    let (mut a, mut b) = (connect(&served), connect(&served));
    let (call_a, kick_a, call_b, kick_b) = (event(), event(), event(), event());
    for (frontend, ram, call, kick) in
        [(&mut a, &ram_a, &call_a, &kick_a), (&mut b, &ram_b, &call_b, &kick_b)]
    {
        negotiate(frontend);
        set_mem_table(frontend, ram);
        setup_ring(frontend, 0, 0, call, kick);
        frontend.set_vring_enable(0, true).expect("enable");
    }
    // A truncates the file behind its guest memory, then has the device look at its ring: the
    // access past the file's end raises SIGBUS in this very process.
    let before = bus_guard::absorbed();
    ftruncate(&ram_a, 0).expect("truncate");
    kick_a.write(1).expect("kick");
    assert!(eventually(|| bus_guard::absorbed() > before), "the fault was absorbed");
    // The process is alive, B is served, and A's connection still answers.
    set_avail_idx(&ram_b, 0, 4);
    kick_b.write(1).expect("kick");
    assert!(signalled(&call_b), "the other front-end's ring is processed");
    assert_eq!(b.get_vring_base(0).expect("base"), 4);
    a.get_features().expect("the front-end that misbehaved still gets answers");
    drop((a, b));
    assert_eq!(served.wait_ended(2), ["HungUp", "HungUp"]);
}
