//! Our blocking `Client` drives our own `Daemon` over a real socket: handshake with REPLY_ACK and
//! a back-end channel, memfd guest memory, two rings started and stopped with their bases
//! preserved across a restart, config space, status, memory hot-plug, device state, reset, and a
//! restore handshake on a second connection.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use common::{initial_config, serve, CONFIG_SIZE, QUEUES, TIMEOUT};
use rustix::pipe::{pipe_with, PipeFlags};
use vhu_transport_std::client::{eventfd, Client, ClientError, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::frontend::FrontendError;
use vhu_transport_std::vhu_core::message::{ConfigFlags, TransferDirection, VringBase};
use vhu_transport_std::vhu_core::{
    BackendRequest, FrontendCode, ProtocolFeatures, VirtioFeatures, VringIndex,
};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress};

const RAM: u64 = 0x10_0000;
const SIZE: u16 = 64;

fn wanted() -> (VirtioFeatures, ProtocolFeatures) {
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    (features, common::protocol_features())
}

/// Guest address of ring `q`'s descriptor table (avail +0x1000, used +0x2000).
fn ring(q: u8) -> u64 {
    0x1_0000 * (u64::from(q) + 1)
}

fn start<'a>(
    ram: &GuestRegion,
    q: u8,
    base: u16,
    call: &'a OwnedFd,
    kick: &'a OwnedFd,
) -> VringStart<'a> {
    let user = |gpa| ram.host_address(gpa).expect("ring inside guest memory");
    VringStart {
        size: SIZE,
        base: VringBase::split(base),
        descriptor: user(ring(q)),
        available: user(ring(q) + 0x1000),
        used: user(ring(q) + 0x2000),
        log: None,
        call: Some(call.as_fd()),
        kick: Some(kick.as_fd()),
    }
}

fn set_avail_idx(ram: &GuestRegion, q: u8, idx: u16) {
    ram.memory().write_obj(idx, GuestAddress(ring(q) + 0x1000 + 2)).expect("avail idx");
}

fn kick(fd: &OwnedFd) {
    rustix::io::write(fd, &1u64.to_ne_bytes()).expect("kick");
}

fn signalled(fd: &OwnedFd) -> bool {
    common::eventually(|| rustix::io::read(fd, &mut [0u8; 8]).is_ok())
}

fn connect(path: &std::path::Path) -> Client {
    let mut client = Client::connect(path).expect("connect");
    client.set_timeout(TIMEOUT).expect("timeout");
    client
}

fn read_all(fd: OwnedFd) -> Vec<u8> {
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

#[test]
fn client_drives_our_daemon_through_a_full_session() {
    let served = serve("client");
    let mut client = connect(&served.path);
    let (features, protocol) = wanted();
    let negotiated = client.handshake(features, protocol).expect("handshake");
    assert_eq!(negotiated.queues, Some(QUEUES as u16));
    assert_eq!(negotiated.max_mem_slots, Some(509));
    assert!(negotiated.protocol_features.contains(ProtocolFeatures::REPLY_ACK));
    assert!(negotiated.features.contains(VirtioFeatures::PROTOCOL_FEATURES));
    assert!(client.has_backend_channel(), "BACKEND_REQ acked");
    assert_eq!(client.held_fds(), 0);

    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");

    let fds: Vec<(OwnedFd, OwnedFd)> =
        (0..QUEUES).map(|_| (eventfd().unwrap(), eventfd().unwrap())).collect();
    for (q, base) in [(0u8, 0u16), (1, 7)] {
        // The device rescans an enabled ring at once: make its available index match the base.
        set_avail_idx(&ram, q, base);
        let (call, kick) = &fds[usize::from(q)];
        client.start_vring(VringIndex(q), start(&ram, q, base, call, kick)).expect("start");
        assert!(client.frontend().is_vring_started(VringIndex(q)));
    }
    assert_eq!(served.record.lock().unwrap().starts, [0, 1]);
    let refused = client.start_vring(VringIndex(0), start(&ram, 0, 0, &fds[0].0, &fds[0].1));
    assert!(matches!(refused, Err(ClientError::Refused(FrontendError::VringStarted { .. }))));
    assert_eq!(client.held_fds(), 0, "refused call closed its duplicates");

    // The device consumes what is made available and signals the call eventfd.
    set_avail_idx(&ram, 0, 3);
    kick(&fds[0].1);
    assert!(signalled(&fds[0].0), "ring 0 processed");
    set_avail_idx(&ram, 1, 12);
    kick(&fds[1].1);
    assert!(signalled(&fds[1].0), "ring 1 processed");

    // Config space (rings running: a suspended device sends no back-end requests): a read-only
    // prefix refused by the device, a write that notifies.
    let config = client.get_config(0, CONFIG_SIZE as u32).expect("get_config");
    assert_eq!(config, initial_config());
    let refused = client.set_config(0, &[9; 4], ConfigFlags::Writable);
    match refused {
        Err(ClientError::Failed(FrontendError::Nack { request, status })) => {
            assert_eq!(request, FrontendCode::SetConfig);
            assert_ne!(status, 0);
        }
        other => panic!("read-only write: {other:?}"),
    }
    client.set_config(8, &[1, 2, 3, 4], ConfigFlags::Writable).expect("set_config");
    let requests = client.poll_backend_requests(TIMEOUT).expect("back-end channel");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].request, BackendRequest::ConfigChangeMsg);
    assert!(requests[0].need_reply);
    assert_eq!(client.get_config(8, 4).expect("get_config"), [1, 2, 3, 4]);

    // Status.
    client.set_status(0x0f).expect("set_status");
    assert_eq!(client.get_status().expect("get_status"), 0x0f);

    // Stop both rings; restart ring 0 from its base and stop it again.
    assert_eq!(client.stop_vring(VringIndex(0)).expect("stop 0"), VringBase::split(3));
    assert_eq!(client.stop_vring(VringIndex(1)).expect("stop 1"), VringBase::split(12));
    let (call, kick_fd) = &fds[0];
    client.start_vring(VringIndex(0), start(&ram, 0, 3, call, kick_fd)).expect("restart");
    set_avail_idx(&ram, 0, 5);
    kick(kick_fd);
    assert!(signalled(call), "restarted ring processed");
    assert_eq!(client.stop_vring(VringIndex(0)).expect("stop again"), VringBase::split(5));
    assert_eq!(served.record.lock().unwrap().stops, [(0, 3), (1, 12), (0, 5)]);
    let out_of_range = client.stop_vring(VringIndex(2));
    assert!(matches!(
        out_of_range,
        Err(ClientError::Refused(FrontendError::VringOutOfRange { index: 2, rings: 2 }))
    ));

    // Memory hot-plug.
    let extra = GuestRegion::new(RAM, 0x1_0000).expect("extra memory");
    client.add_mem_region(extra.share()).expect("add_mem_region");
    client.remove_mem_region(extra.region()).expect("remove_mem_region");
    let gone = client.remove_mem_region(extra.region());
    assert!(matches!(gone, Err(ClientError::Refused(FrontendError::Memory { .. }))), "{gone:?}");

    // Device state, every ring stopped: save, then load a changed state.
    let (reader, writer) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
    let theirs = client.set_device_state_fd(TransferDirection::Save, writer).expect("save");
    assert!(theirs.is_none());
    let saved = read_all(reader);
    assert!(saved.starts_with(b"state:"));
    client.check_device_state().expect("saved");
    let mut changed = saved.clone();
    changed[6] = 0x55;
    let (reader, writer) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
    client.set_device_state_fd(TransferDirection::Load, reader).expect("load");
    std::fs::File::from(writer).write_all(&changed).expect("write state");
    client.check_device_state().expect("loaded");
    assert_eq!(client.get_config(0, 1).expect("get_config"), [0x55]);

    // Reset forgets the acked features; they are sent again before the rings restart.
    client.reset_device().expect("reset_device");
    assert_eq!(served.record.lock().unwrap().acked, None);
    client.set_features(negotiated.features).expect("set_features");
    assert!(served.record.lock().unwrap().acked.is_some());
    assert_eq!(client.held_fds(), 0);
    assert!(!client.is_closed());
    drop(client);
    assert_eq!(served.wait_ended(1), ["HungUp"]);

    // A second connection restores the saved negotiation without asking anything.
    let mut client = connect(&served.path);
    let restored = client.restore(negotiated).expect("restore");
    assert_eq!(restored.protocol_features, negotiated.protocol_features);
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    let (call, kick_fd) = &fds[1];
    set_avail_idx(&ram, 1, 12);
    client.start_vring(VringIndex(1), start(&ram, 1, 12, call, kick_fd)).expect("start");
    assert_eq!(client.stop_vring(VringIndex(1)).expect("stop"), VringBase::split(12));
    drop(client);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
    assert_eq!(served.record.lock().unwrap().connections, 2);
}

#[test]
fn handshake_without_protocol_features_and_typed_refusals() {
    let served = serve("client-plain");
    let mut client = connect(&served.path);
    let negotiated =
        client.handshake(VirtioFeatures::VERSION_1, ProtocolFeatures::empty()).expect("handshake");
    assert!(negotiated.protocol_features.is_empty());
    assert!(!client.has_backend_channel());
    let again = client.handshake(VirtioFeatures::VERSION_1, ProtocolFeatures::empty());
    assert!(matches!(again, Err(ClientError::Refused(FrontendError::AlreadyConnected))));
    let config = client.get_config(0, 4);
    assert!(matches!(
        config,
        Err(ClientError::Refused(FrontendError::NotNegotiated { feature: "CONFIG", .. }))
    ));
    // Without REPLY_ACK the requests are not confirmed, and the ring still starts.
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    let (call, kick_fd) = (eventfd().unwrap(), eventfd().unwrap());
    set_avail_idx(&ram, 0, 4);
    client.start_vring(VringIndex(0), start(&ram, 0, 4, &call, &kick_fd)).expect("start");
    assert_eq!(client.stop_vring(VringIndex(0)).expect("stop"), VringBase::split(4));
    assert_eq!(client.poll_backend_requests(Duration::from_millis(10)).unwrap(), []);
    drop(client);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn a_hang_up_is_a_typed_error_and_breaks_the_client() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut client = Client::from_stream(ours).expect("client");
    client.set_timeout(Duration::from_millis(200)).expect("timeout");
    // A peer that reads nothing and answers nothing: the handshake times out.
    let error = client.handshake(VirtioFeatures::VERSION_1, ProtocolFeatures::empty());
    assert!(
        matches!(error, Err(ClientError::Timeout { waiting: Some(FrontendCode::GetFeatures), .. })),
        "{error:?}"
    );
    assert!(client.is_closed());
    assert!(matches!(client.get_status(), Err(ClientError::Broken)));
    drop(theirs);

    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut client = Client::from_stream(ours).expect("client");
    drop(theirs);
    let error = client.handshake(VirtioFeatures::VERSION_1, ProtocolFeatures::empty());
    assert!(
        matches!(error, Err(ClientError::Send { .. } | ClientError::Disconnected { .. })),
        "{error:?}"
    );
}

/// A back-end that sends its reply a byte at a time, each well within the socket's read
/// timeout, still cannot hold a call past the client's timeout.
#[test]
fn a_reply_trickled_a_byte_at_a_time_times_out_the_call() {
    use std::io::{Read, Write};
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut client = Client::from_stream(ours).expect("client");
    client.set_timeout(Duration::from_millis(400)).expect("timeout");
    let peer = std::thread::spawn(move || {
        let mut request = [0u8; 12];
        (&theirs).read_exact(&mut request).expect("GET_FEATURES");
        // GET_FEATURES' reply: version 1 and REPLY, 8 bytes of features.
        let reply: Vec<u8> = [1u32, 1 << 2 | 1, 8]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .chain((1u64 << 32).to_le_bytes())
            .collect();
        for byte in reply {
            if (&theirs).write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    let error = client.handshake(VirtioFeatures::VERSION_1, ProtocolFeatures::empty());
    assert!(
        matches!(error, Err(ClientError::Timeout { waiting: Some(FrontendCode::GetFeatures), .. })),
        "{error:?}"
    );
    drop(client);
    peer.join().expect("the peer ends");
}

#[test]
fn call_and_err_eventfds_are_replaced_on_a_running_ring() {
    let served = serve("client-runtime");
    let mut client = connect(&served.path);
    let (features, protocol) = wanted();
    client.handshake(features, protocol).expect("handshake");
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    let (first, kick_fd) = (eventfd().unwrap(), eventfd().unwrap());
    set_avail_idx(&ram, 0, 0);
    client.start_vring(VringIndex(0), start(&ram, 0, 0, &first, &kick_fd)).expect("start");

    let drain = |fd: &OwnedFd| while rustix::io::read(fd, &mut [0u8; 8]).is_ok() {};
    // The guest masks the queue's interrupt: no call eventfd, and nothing is signalled.
    client.set_vring_call(VringIndex(0), None).expect("SET_VRING_CALL without an fd");
    drain(&first);
    set_avail_idx(&ram, 0, 2);
    kick(&kick_fd);
    std::thread::sleep(Duration::from_millis(100));
    assert!(rustix::io::read(&first, &mut [0u8; 8]).is_err(), "the old eventfd is not signalled");
    // Unmasked with a new eventfd: that one is signalled (once on replacement, so no interrupt
    // is lost, then for the next chain), the old one never again.
    let second = eventfd().unwrap();
    client.set_vring_call(VringIndex(0), Some(second.as_fd())).expect("SET_VRING_CALL");
    client.set_vring_err(VringIndex(0), Some(eventfd().unwrap().as_fd())).expect("SET_VRING_ERR");
    assert!(signalled(&second), "signalled on replacement");
    drain(&second);
    set_avail_idx(&ram, 0, 3);
    kick(&kick_fd);
    assert!(signalled(&second), "the new call eventfd is signalled");
    assert!(rustix::io::read(&first, &mut [0u8; 8]).is_err());
    assert_eq!(client.held_fds(), 0, "no descriptor left behind");
    // Requests the back-end does not offer are refused before they are sent.
    let refused = client.vring_kick(VringIndex(0));
    assert!(matches!(refused, Err(ClientError::Refused(FrontendError::NotNegotiated { .. }))));
    let refused = client.get_shmem_config();
    assert!(matches!(refused, Err(ClientError::Refused(FrontendError::NotNegotiated { .. }))));
    assert_eq!(client.stop_vring(VringIndex(0)).expect("stop"), VringBase::split(3));
    // The back-end channel is the VMM's to poll: its socket, and serving what has arrived.
    assert!(client.backend_channel_fd().is_some(), "BACKEND_REQ acked");
    assert!(client.serve_backend_channel().expect("nothing waiting").is_empty());
}

/// A table the back-end cannot map (a region past the end of its file) is refused, and the table
/// before it stays: a ring running in it goes on being served, as a front-end that goes on after
/// the refusal (QEMU logs it) needs.
#[test]
fn a_refused_table_leaves_running_rings_their_memory() {
    let served = serve("client-table-refused");
    let mut client = connect(&served.path);
    let (features, protocol) = wanted();
    client.handshake(features, protocol).expect("handshake");
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    let (call, kick_fd) = (eventfd().unwrap(), eventfd().unwrap());
    client.start_vring(VringIndex(0), start(&ram, 0, 0, &call, &kick_fd)).expect("start");
    set_avail_idx(&ram, 0, 1);
    kick(&kick_fd);
    assert!(signalled(&call), "ring 0 served");

    let mut past_end = ram.share();
    past_end.region.mmap_offset = RAM;
    let refused = client.set_mem_table(&[past_end]);
    assert!(matches!(refused, Err(ClientError::Failed(FrontendError::Nack { .. }))), "{refused:?}");
    set_avail_idx(&ram, 0, 2);
    kick(&kick_fd);
    assert!(signalled(&call), "ring 0 still served from the table before");
}
