//! Our `Client` against our `Daemon` leaves no descriptor behind: after 50 sessions that each
//! open a back-end channel, share memory, start and stop two rings, read config, save device
//! state and reset, the process has as many open descriptors as before, and the client's table is
//! empty after every call. Its own test binary, so no other test opens or closes descriptors while
//! it counts.

mod common;

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use common::{serve, Served, CONFIG_SIZE, TIMEOUT};
use rustix::pipe::{pipe_with, PipeFlags};
use vhu_transport_std::client::{eventfd, Client, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::message::{TransferDirection, VringBase};
use vhu_transport_std::vhu_core::{VirtioFeatures, VringIndex};

const CYCLES: usize = 50;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

fn cycle(served: &Served, i: usize) {
    let ram = GuestRegion::new(0, 0x10_0000).expect("guest memory");
    let mut client = Client::connect(&served.path).expect("connect");
    client.set_timeout(TIMEOUT).expect("timeout");
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    client.handshake(features, common::protocol_features()).expect("handshake");
    assert!(client.has_backend_channel());
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    let rings: Vec<(OwnedFd, OwnedFd)> =
        (0..2).map(|_| (eventfd().unwrap(), eventfd().unwrap())).collect();
    for (q, (call, kick)) in rings.iter().enumerate() {
        let gpa = 0x1_0000 * (q as u64 + 1);
        let mut start =
            VringStart::split(64, ram.host_address(gpa).unwrap(), call.as_fd(), kick.as_fd());
        start.base = VringBase::split(0);
        client.start_vring(VringIndex(q as u8), start).expect("start");
        assert_eq!(client.held_fds(), 0, "cycle {i}");
    }
    assert_eq!(client.get_config(0, CONFIG_SIZE as u32).expect("config").len(), CONFIG_SIZE);
    // Half the sessions hang up with the rings running.
    if i % 2 == 0 {
        for q in 0..2 {
            client.stop_vring(VringIndex(q)).expect("stop");
        }
        let (reader, writer) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
        client.set_device_state_fd(TransferDirection::Save, writer).expect("save");
        let mut file = std::fs::File::from(reader);
        let mut eof = false;
        for _ in 0..64 {
            assert!(common::readable(&file), "cycle {i}: state pipe stays silent");
            if file.read(&mut [0u8; 256]).expect("state") == 0 {
                eof = true;
                break;
            }
        }
        assert!(eof, "cycle {i}: state pipe never reached EOF");
        client.check_device_state().expect("saved");
        client.reset_device().expect("reset");
    }
    assert_eq!(client.held_fds(), 0, "cycle {i}");
    drop(client);
    assert_eq!(served.wait_ended(1), ["HungUp"], "cycle {i}");
}

#[test]
fn client_sessions_leak_no_descriptors() {
    let served = serve("client-fd-leak");
    cycle(&served, 0);
    let before = open_fds();
    for i in 0..CYCLES {
        cycle(&served, i);
    }
    assert_eq!(open_fds(), before, "descriptors leaked over {CYCLES} sessions");
    let record = served.record.lock().unwrap();
    assert_eq!(record.connections, CYCLES + 1);
    assert_eq!(record.starts.len(), 2 * (CYCLES + 1));
    assert_eq!(record.stops.len(), 2 * (CYCLES + 1), "every started queue was stopped");
}
