//! Interop: rust-vmm's `vhost` crate front-end drives our daemon over a real socket, with memfd
//! guest memory, real eventfds, a back-end channel and device-state pipes; then a second front-end
//! finds a clean device.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use common::frontend::{
    connect, event, negotiate, region, set_avail_idx, setup_ring, signalled, RAM_SIZE,
};
use common::{initial_config, memfd, serve, CONFIG_SIZE, QUEUES, TIMEOUT};
use rustix::pipe::{pipe_with, PipeFlags};
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use vmm_sys_util::eventfd::EventFd;

/// Reads one back-end request from the channel and acks it; returns its code.
fn ack_backend_request(channel: &mut UnixStream) -> u32 {
    let mut header = [0u8; 12];
    channel.read_exact(&mut header).expect("back-end request header");
    let word = |i: usize| u32::from_ne_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
    let (code, flags, size) = (word(0), word(1), word(2));
    assert_eq!(flags, 0x1 | 0x8, "version 1 with NEED_REPLY");
    let mut payload = vec![0u8; size as usize];
    channel.read_exact(&mut payload).expect("back-end request payload");
    let mut ack = Vec::new();
    for w in [code, 0x1 | 0x4, 8] {
        ack.extend_from_slice(&w.to_ne_bytes());
    }
    ack.extend_from_slice(&0u64.to_ne_bytes());
    channel.write_all(&ack).expect("ack");
    code
}

fn read_to_end_bounded(fd: OwnedFd) -> Vec<u8> {
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    for _ in 0..64 {
        assert!(common::readable(&file), "state pipe stays silent");
        let mut buf = [0u8; 256];
        match file.read(&mut buf).expect("read state") {
            0 => return out,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
    panic!("state pipe never reached EOF");
}

fn pipe() -> (OwnedFd, OwnedFd) {
    pipe_with(PipeFlags::CLOEXEC).expect("pipe")
}

#[test]
fn rust_vmm_frontend_full_session_then_clean_reconnect() {
    let served = serve("interop");
    let ram = memfd(RAM_SIZE);
    let mut frontend = connect(&served);
    negotiate(&mut frontend);
    frontend.set_mem_table(&[region(&ram, 0, RAM_SIZE)]).expect("set_mem_table");

    // The inflight area: allocated by the back-end, handed back as SET_INFLIGHT_FD, and each
    // queue's region reaches the device when its ring starts.
    let ask = VhostUserInflight { mmap_size: 0, mmap_offset: 0, num_queues: 2, queue_size: 64 };
    let (area, file) = frontend.get_inflight_fd(&ask).expect("get_inflight_fd");
    assert_eq!(area.mmap_size, vhu_transport_std::vhu_core::inflight::area_size(2, 64, false));
    assert_eq!(file.metadata().expect("fstat").len(), area.mmap_size);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    frontend.set_inflight_fd(&area, raw).expect("set_inflight_fd");

    let (calls, kicks): (Vec<EventFd>, Vec<EventFd>) =
        (0..QUEUES).map(|_| (event(), event())).unzip();
    setup_ring(&mut frontend, 0, 0, &calls[0], &kicks[0]);
    setup_ring(&mut frontend, 1, 7, &calls[1], &kicks[1]);
    assert_eq!(served.record.lock().unwrap().starts, [0, 1], "rings start on SET_VRING_KICK");
    assert_eq!(served.record.lock().unwrap().inflight, [Some(64), Some(64)]);

    // Buffers made available before the ring is enabled are processed on enable, without a kick.
    set_avail_idx(&ram, 0, 3);
    frontend.set_vring_enable(0, true).expect("enable 0");
    assert!(signalled(&calls[0]), "ring 0 processed on enable");
    // Ring 1 resumes at base 7 and processes after a kick.
    frontend.set_vring_enable(1, true).expect("enable 1");
    set_avail_idx(&ram, 1, 12);
    kicks[1].write(1).expect("kick");
    assert!(signalled(&calls[1]), "ring 1 processed after a kick");

    // Config space, with a read-only prefix the device refuses to write.
    let flags = VhostUserConfigFlags::empty();
    let (_, config) = frontend.get_config(0, CONFIG_SIZE as u32, flags, &[0; CONFIG_SIZE]).unwrap();
    assert_eq!(config, initial_config());
    assert!(frontend.set_config(0, flags, &[9; 4]).is_err(), "read-only field refused");

    // A back-end channel: writing the config makes the device send CONFIG_CHANGE_MSG.
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    frontend.set_backend_request_fd(&theirs).expect("set_backend_request_fd");
    drop(theirs);
    frontend.set_config(8, flags, &[1, 2, 3, 4]).expect("set_config");
    assert_eq!(ack_backend_request(&mut ours), 2, "BACKEND_CONFIG_CHANGE_MSG");
    let (_, config) = frontend.get_config(8, 4, flags, &[0; 4]).expect("get_config");
    assert_eq!(config, [1, 2, 3, 4]);

    // Memory hot-plug through ADD_MEM_REG / REM_MEM_REG.
    let extra = memfd(0x1_0000);
    frontend.add_mem_region(&region(&extra, RAM_SIZE, 0x1_0000)).expect("add_mem_region");
    frontend.remove_mem_region(&region(&extra, RAM_SIZE, 0x1_0000)).expect("remove_mem_region");
    assert!(frontend.remove_mem_region(&region(&extra, RAM_SIZE, 0x1_0000)).is_err(), "gone");

    // GET_VRING_BASE stops the rings and returns the bases the device reported.
    assert_eq!(frontend.get_vring_base(0).expect("base 0"), 3);
    assert_eq!(frontend.get_vring_base(1).expect("base 1"), 12);
    assert_eq!(served.record.lock().unwrap().stops, [(0, 3), (1, 12)]);

    // Suspended: save the device state through a pipe, then load a changed one.
    let (reader, writer) = pipe();
    let save = (VhostTransferStateDirection::SAVE, VhostTransferStatePhase::STOPPED);
    assert!(frontend.set_device_state_fd(save.0, save.1, writer).expect("save fd").is_none());
    let saved = read_to_end_bounded(reader);
    let mut expected = b"state:".to_vec();
    expected.extend_from_slice(&[0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 1, 2, 3, 4]);
    expected.extend_from_slice(&[0xac, 0xad, 0xae, 0xaf]);
    assert_eq!(saved, expected);
    frontend.check_device_state().expect("save succeeded");

    let mut changed = saved.clone();
    changed[6] = 0x55;
    let (reader, writer) = pipe();
    let load = (VhostTransferStateDirection::LOAD, VhostTransferStatePhase::STOPPED);
    assert!(frontend.set_device_state_fd(load.0, load.1, reader).expect("load fd").is_none());
    std::fs::File::from(writer).write_all(&changed).expect("write state");
    frontend.check_device_state().expect("load succeeded");
    assert_eq!(served.record.lock().unwrap().loaded.as_deref(), Some(&changed[..]));
    let (_, config) = frontend.get_config(0, 1, flags, &[0; 1]).expect("get_config");
    assert_eq!(config, [0x55]);

    let (reader, writer) = pipe();
    assert!(frontend.set_device_state_fd(load.0, load.1, reader).expect("load fd").is_none());
    std::fs::File::from(writer).write_all(b"garbage").expect("write state");
    assert!(frontend.check_device_state().is_err(), "bad state reported by CHECK_DEVICE_STATE");

    frontend.reset_device().expect("reset_device");
    assert_eq!(served.record.lock().unwrap().acked, None, "reset forgets features");
    drop(frontend);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
    let resets = served.record.lock().unwrap().resets;
    assert!(resets >= 2, "RESET_DEVICE and the disconnect reset the device ({resets})");

    // A second front-end starts from a clean state: default config, no rings, fresh memory.
    let mut frontend = connect(&served);
    negotiate(&mut frontend);
    let (_, config) = frontend.get_config(0, CONFIG_SIZE as u32, flags, &[0; CONFIG_SIZE]).unwrap();
    assert_eq!(config, initial_config());
    assert_eq!(frontend.get_vring_base(0).expect("stopped ring base"), 0);
    let ram = memfd(RAM_SIZE);
    frontend.set_mem_table(&[region(&ram, 0, RAM_SIZE)]).expect("set_mem_table");
    let (call, kick) = (event(), event());
    setup_ring(&mut frontend, 0, 0, &call, &kick);
    set_avail_idx(&ram, 0, 5);
    frontend.set_vring_enable(0, true).expect("enable");
    assert!(signalled(&call));
    assert_eq!(frontend.get_vring_base(0).expect("base"), 5);
    drop(frontend);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
    let record = served.record.lock().unwrap();
    assert_eq!(record.connections, 2);
    assert_eq!(record.stops, [(0, 3), (1, 12), (0, 5)]);
}
