//! Connect/disconnect cycles leave no descriptor and no guest-memory mapping behind: after 200
//! sessions that each map memory, hot-plug a region, start a ring, open a back-end channel and save
//! device state, the process has as many open descriptors and memfd mappings as before. This is
//! its own test binary so no other test opens or closes descriptors while it counts.

mod common;

use std::os::unix::net::UnixStream;

use common::frontend::RAM_SIZE;
use common::frontend::{connect, event, negotiate, region, set_avail_idx, setup_ring, signalled};
use common::{memfd, serve, Served};
use rustix::pipe::{pipe_with, PipeFlags};
use vhost::vhost_user::message::{VhostTransferStateDirection, VhostTransferStatePhase};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;

const CYCLES: usize = 200;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Mappings of memfd-backed memory: the guest memory the daemon mapped for its sessions.
fn memfd_mappings() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines().filter(|line| line.contains("/memfd:")).count()
}

fn cycle(served: &Served, i: usize) {
    let ram = memfd(RAM_SIZE);
    let extra = memfd(0x1_0000);
    let mut frontend = connect(served);
    negotiate(&mut frontend);
    frontend.set_mem_table(&[region(&ram, 0, RAM_SIZE)]).expect("set_mem_table");
    frontend.add_mem_region(&region(&extra, RAM_SIZE, 0x1_0000)).expect("add_mem_region");
    let (_ours, theirs) = UnixStream::pair().expect("socketpair");
    frontend.set_backend_request_fd(&theirs).expect("set_backend_request_fd");
    let (call, kick) = (event(), event());
    setup_ring(&mut frontend, 0, 0, &call, &kick);
    set_avail_idx(&ram, 0, i as u16 + 1);
    frontend.set_vring_enable(0, true).expect("enable");
    assert!(signalled(&call), "cycle {i}: ring processed");
    // Half the sessions stop the ring and save state; the others leave it running at hang-up.
    if i % 2 == 0 {
        assert_eq!(frontend.get_vring_base(0).expect("base"), i as u32 + 1);
        let (reader, writer) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
        let (save, stopped) = (VhostTransferStateDirection::SAVE, VhostTransferStatePhase::STOPPED);
        assert!(frontend.set_device_state_fd(save, stopped, writer).expect("state fd").is_none());
        // The state fits in the pipe's buffer: the save is complete when the check is answered.
        frontend.check_device_state().expect("state saved");
        drop(reader);
    }
    drop(frontend);
    assert_eq!(served.wait_ended(1), ["HungUp"], "cycle {i}");
}

#[test]
fn connect_disconnect_cycles_leak_no_descriptors() {
    let served = serve("fd-leak");
    // One warm-up session, so one-time allocations of the process are not counted.
    cycle(&served, 0);
    let (before, mapped_before) = (open_fds(), memfd_mappings());
    for i in 0..CYCLES {
        cycle(&served, i);
    }
    let after = open_fds();
    assert_eq!(before, after, "descriptors leaked over {CYCLES} sessions");
    assert_eq!(mapped_before, memfd_mappings(), "guest memory left mapped after {CYCLES} sessions");
    let record = served.record.lock().unwrap();
    assert_eq!(record.connections, CYCLES + 1);
    assert_eq!(record.starts.len(), CYCLES + 1);
    assert_eq!(record.stops.len(), CYCLES + 1, "every started queue was stopped");
}
