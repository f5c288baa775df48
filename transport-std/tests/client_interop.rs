//! Interop: our `Client` drives rust-vmm's `vhost-user-backend` daemon over a real socket, with a
//! small device on its `VhostUserBackend` trait: handshake with REPLY_ACK and a back-end channel,
//! memfd guest memory, two rings started (the device handles kicks on started, enabled queues),
//! config space, rings stopped with GET_VRING_BASE returning the base, and a disconnect.

mod peer;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use peer::{connect_retrying, Peer, CONFIG, QUEUES};
use vhu_transport_std::client::{eventfd, Client, ClientError, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::frontend::FrontendError;
use vhu_transport_std::vhu_core::message::{ConfigFlags, VringBase};
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress};

const TIMEOUT: Duration = Duration::from_secs(5);
const RAM: u64 = 0x10_0000;

fn ring(q: u8) -> u64 {
    0x1_0000 * (u64::from(q) + 1)
}

fn socket(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vhu-{}-{name}.sock", std::process::id()))
}

fn kick(fd: &OwnedFd) {
    rustix::io::write(fd, &1u64.to_ne_bytes()).expect("kick");
}

/// Polls `condition` every 2 ms for at most [`TIMEOUT`].
fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..TIMEOUT.as_millis() / 2 {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    condition()
}

#[test]
fn client_drives_rust_vmm_vhost_user_backend() {
    let path = socket("peer-interop");
    let mut peer = Peer::spawn(&path);
    let mut client = Client::from_stream(connect_retrying(&path, TIMEOUT)).expect("client");
    client.set_timeout(TIMEOUT).expect("timeout");

    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    let protocol = ProtocolFeatures::MQ
        | ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::CONFIG
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS
        | ProtocolFeatures::BACKEND_REQ
        | ProtocolFeatures::STATUS;
    let negotiated = client.handshake(features, protocol).expect("handshake");
    assert_eq!(negotiated.features, features);
    let expected = protocol.difference(ProtocolFeatures::STATUS);
    assert_eq!(negotiated.protocol_features, expected, "STATUS is not offered by the peer");
    assert_eq!(negotiated.queues, Some(QUEUES as u16));
    assert_eq!(negotiated.max_mem_slots, Some(509));
    assert!(client.has_backend_channel());
    {
        let record = peer.record.lock().unwrap();
        assert_eq!(record.acked, Some(peer::FEATURES));
        assert!(record.backend_channel, "SET_BACKEND_REQ_FD reached the device");
    }
    // A feature the peer did not offer is refused on our side before anything is sent.
    assert!(matches!(
        client.get_status(),
        Err(ClientError::Refused(FrontendError::NotNegotiated { feature: "STATUS", .. }))
    ));

    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    assert_eq!(peer.record.lock().unwrap().memory_updates, 1);

    let rings: Vec<(OwnedFd, OwnedFd)> =
        (0..QUEUES).map(|_| (eventfd().unwrap(), eventfd().unwrap())).collect();
    for (q, base) in [(0u8, 0u16), (1, 5)] {
        let (call, kick_fd) = &rings[usize::from(q)];
        let user = |gpa| ram.host_address(gpa).expect("inside guest memory");
        let start = VringStart {
            size: 64,
            base: VringBase::split(base),
            descriptor: user(ring(q)),
            available: user(ring(q) + 0x1000),
            used: user(ring(q) + 0x2000),
            log: None,
            call: Some(call.as_fd()),
            kick: Some(kick_fd.as_fd()),
        };
        client.start_vring(VringIndex(q), start).expect("start_vring");
    }

    // The device sees both queues started and enabled when kicked, and consumes the buffers.
    for (q, idx) in [(0u8, 3u16), (1, 9)] {
        let address = GuestAddress(ring(q) + 0x1000 + 2);
        ram.memory().write_obj(idx, address).expect("avail idx");
        kick(&rings[usize::from(q)].1);
    }
    let both_kicked = eventually(|| {
        let kicks = &peer.record.lock().unwrap().kicks;
        [(0, 3), (1, 9)].iter().all(|(q, idx)| kicks.contains(&(*q, true, true, *idx)))
    });
    assert!(both_kicked, "{:?}", peer.record.lock().unwrap().kicks);

    let config = client.get_config(0, CONFIG.len() as u32).expect("get_config");
    assert_eq!(config, CONFIG);
    client.set_config(4, b"1234", ConfigFlags::Writable).expect("set_config");
    assert_eq!(client.get_config(0, 8).expect("get_config"), b"peer1234");
    // The peer answers a read past its config space with an empty payload: its failure answer.
    let past = client.get_config(4, 8);
    assert!(
        matches!(past, Err(ClientError::Failed(FrontendError::ConfigReadFailed { .. }))),
        "{past:?}"
    );

    // GET_VRING_BASE returns where the device stopped.
    assert_eq!(client.stop_vring(VringIndex(0)).expect("stop 0"), VringBase::split(3));
    assert_eq!(client.stop_vring(VringIndex(1)).expect("stop 1"), VringBase::split(9));
    assert_eq!(peer.record.lock().unwrap().stopped, [0, 1]);
    assert!(!client.frontend().is_vring_started(VringIndex(0)));

    // Memory hot-plug through ADD_MEM_REG / REM_MEM_REG.
    let extra = GuestRegion::new(RAM, 0x1_0000).expect("extra memory");
    client.add_mem_region(extra.share()).expect("add_mem_region");
    client.remove_mem_region(extra.region()).expect("remove_mem_region");

    // The peer refuses SET_VRING_ENABLE for a ring it does not have; our side refuses it first.
    let refused = client.set_vring_enable(VringIndex(2), true);
    assert!(matches!(refused, Err(ClientError::Refused(FrontendError::VringOutOfRange { .. }))));
    assert_eq!(client.held_fds(), 0);
    assert!(!client.is_closed());

    drop(client);
    peer.join(TIMEOUT).expect("the peer daemon ends cleanly on disconnect");
}

/// A back-end that answers a state transfer with a descriptor of its own is held to what a
/// transfer may be: `/dev/zero`, which would fill the VMM's memory, is refused as neither pipe
/// nor socket; a pipe it never closes is waited on no longer than the client's timeout.
#[test]
fn a_back_ends_own_state_descriptor_neither_fills_memory_nor_hangs() {
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    let protocol = ProtocolFeatures::REPLY_ACK | ProtocolFeatures::DEVICE_STATE;
    // Set up with the usual timeout; each wait of the transfer then gets `wait`.
    let connect = |name: &str, state: std::fs::File, wait: Duration| {
        let path = socket(name);
        let peer = Peer::spawn_with_state(&path, Some(state));
        let mut client = Client::from_stream(connect_retrying(&path, TIMEOUT)).expect("client");
        client.set_timeout(TIMEOUT).expect("timeout");
        let negotiated = client.handshake(features, protocol).expect("handshake");
        assert!(negotiated.protocol_features.contains(ProtocolFeatures::DEVICE_STATE));
        client.set_timeout(wait).expect("timeout");
        (peer, client)
    };
    let short = Duration::from_millis(300);

    let zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
    let (_peer, mut client) = connect("peer-state-zero", zero, short);
    match client.save_state() {
        Err(ClientError::Transfer(why)) => assert!(why.contains("not a pipe"), "{why}"),
        other => panic!("a state read from /dev/zero: {other:?}"),
    }

    let (read, _kept_open) = rustix::pipe::pipe().expect("pipe");
    let (_peer, mut client) = connect("peer-state-open", std::fs::File::from(read), short);
    match client.save_state() {
        Err(ClientError::Timeout { timeout, .. }) => assert_eq!(timeout, short),
        other => panic!("a state pipe never closed: {other:?}"),
    }

    // A byte now and then, each well within the wait (however late a loaded machine runs the
    // writer): the transfer's own bound ends it.
    let (read, write) = rustix::pipe::pipe().expect("pipe");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickling = std::sync::Arc::clone(&stop);
    let trickler = std::thread::spawn(move || {
        while !trickling.load(std::sync::atomic::Ordering::Relaxed) {
            if rustix::io::write(&write, b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (_peer, mut client) = connect("peer-state-trickle", std::fs::File::from(read), TIMEOUT);
    client.set_transfer_timeout(Duration::from_millis(700));
    let started = std::time::Instant::now();
    let saved = client.save_state();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    match saved {
        Err(ClientError::Timeout { timeout, .. }) => {
            assert_eq!(timeout, Duration::from_millis(700))
        }
        other => panic!("a state trickled without end: {other:?}"),
    }
    assert!(started.elapsed() < TIMEOUT, "ended by the transfer's bound");
    trickler.join().expect("trickler");
}

/// A VMM that set a back-end up before and comes back to it (here a restarted rust-vmm daemon,
/// which acks only what follows the GET_* it answered): `restore`, which asks nothing, gets no
/// ack; `reconnect` asks first, acks the saved features again, and names those the back-end no
/// longer offers.
#[test]
fn reconnect_asks_first_and_acks_the_saved_features_again() {
    // A new socket for each daemon: one that ends unlinks its path.
    let spawn = |n: u32| Peer::spawn(&socket(&format!("peer-reconnect-{n}")));
    let connect = |peer: &Peer, timeout: Duration| {
        let stream = connect_retrying(&peer.path, TIMEOUT);
        let mut client = Client::from_stream(stream).expect("client");
        client.set_timeout(timeout).expect("timeout");
        client
    };
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    let protocol = ProtocolFeatures::MQ | ProtocolFeatures::REPLY_ACK;
    let first = spawn(1);
    let saved = connect(&first, TIMEOUT).handshake(features, protocol).expect("first handshake");
    let restarted = spawn(2);
    let restored = connect(&restarted, Duration::from_millis(300)).restore(saved);
    assert!(matches!(restored, Err(ClientError::Timeout { .. })), "{restored:?}");
    let restarted = spawn(3);
    let mut client = connect(&restarted, TIMEOUT);
    let again = client.reconnect(saved).expect("reconnected");
    assert_eq!((again.features, again.protocol_features), (features, protocol));
    client.set_features(features).expect("and acked from now on");
    let restarted = spawn(4);
    let mut more = saved;
    more.protocol_features |= ProtocolFeatures::STATUS;
    let gone = connect(&restarted, TIMEOUT).reconnect(more);
    let gone_is_status = matches!(gone, Err(ClientError::FeaturesGone { features, protocol_features })
        if features.is_empty() && protocol_features == ProtocolFeatures::STATUS);
    assert!(gone_is_status, "{gone:?}");
}
