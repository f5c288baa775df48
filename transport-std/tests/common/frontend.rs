//! A rust-vmm `vhost` front-end session against the test daemon: negotiation, memory and rings.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::io::pwrite;
use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Served, QUEUES, TIMEOUT};

pub const RAM_SIZE: u64 = 0x10_0000;
pub const USER: u64 = 0x7000_0000_0000;
pub const QUEUE_SIZE: u16 = 64;

/// Guest address of queue `q`'s descriptor table; avail is 0x1000 above, used 0x2000 above.
pub fn ring(q: usize) -> u64 {
    0x1_0000 * (q as u64 + 1)
}

pub fn set_avail_idx(ram: &OwnedFd, q: usize, idx: u16) {
    pwrite(ram, &idx.to_le_bytes(), ring(q) + 0x1000 + 2).expect("pwrite avail idx");
}

pub fn connect(served: &Served) -> Frontend {
    let stream = UnixStream::connect(&served.path).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    Frontend::from_stream(stream, QUEUES as u64)
}

pub fn region(fd: &OwnedFd, guest: u64, size: u64) -> VhostUserMemoryRegionInfo {
    VhostUserMemoryRegionInfo {
        guest_phys_addr: guest,
        memory_size: size,
        userspace_addr: USER + guest,
        mmap_offset: 0,
        mmap_handle: fd.as_raw_fd(),
    }
}

/// GET_FEATURES .. SET_FEATURES with every offered protocol feature, then NEED_REPLY on.
pub fn negotiate(frontend: &mut Frontend) {
    let features = frontend.get_features().expect("get_features");
    assert_ne!(features & (1 << 32), 0, "VERSION_1 offered");
    assert_ne!(features & (1 << 30), 0, "PROTOCOL_FEATURES offered");
    frontend.set_owner().expect("set_owner");
    let protocol = frontend.get_protocol_features().expect("get_protocol_features");
    assert!(protocol.contains(VhostUserProtocolFeatures::REPLY_ACK));
    assert!(protocol.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS));
    frontend.set_protocol_features(protocol).expect("set_protocol_features");
    frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    frontend.set_features((1 << 32) | (1 << 30)).expect("set_features");
    assert_eq!(frontend.get_queue_num().expect("get_queue_num"), QUEUES as u64);
    assert_eq!(frontend.get_max_mem_slots().expect("get_max_mem_slots"), 509);
}

pub fn setup_ring(frontend: &mut Frontend, q: usize, base: u16, call: &EventFd, kick: &EventFd) {
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

pub fn event() -> EventFd {
    EventFd::new(EFD_NONBLOCK).expect("eventfd")
}

pub fn signalled(call: &EventFd) -> bool {
    super::eventually(|| call.read().is_ok())
}
