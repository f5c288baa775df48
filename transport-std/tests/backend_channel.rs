//! The back-end channel through the blocking driver: requests never hold up the main socket,
//! every request gets a typed result, and a broken channel is reported, not silently dropped.

mod channel_peer;

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use channel_peer::{ChannelDevice, Frontend, Shared};
use vhu_transport_std::session::offer::{UNPERFORMED_FEATURES, UNPERFORMED_PROTOCOL_FEATURES};
use vhu_transport_std::vhu_core::{ProtocolFeatures, Request, VirtioFeatures, VringIndex};
use vhu_transport_std::{Connection, SessionError};

type Served = JoinHandle<Result<(), SessionError>>;

/// `device` serving a connection through the blocking driver on a thread; the front-end's end.
fn spawn(mut device: ChannelDevice) -> (UnixStream, Served) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let thread = std::thread::spawn(move || {
        let result = Connection::new(&mut device, theirs).and_then(Connection::run);
        result
    });
    (ours, thread)
}

/// A connection brought up to a started ring, its device reporting to the returned `Shared`.
fn serve() -> (Frontend, Arc<Mutex<Shared>>, Served) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (ours, thread) = spawn(ChannelDevice::new(Arc::clone(&shared)));
    (Frontend::bring_up(ours), shared, thread)
}

#[test]
fn a_channel_made_blocking_again_holds_nothing() {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (ours, thread) = spawn(ChannelDevice::new(Arc::clone(&shared)));
    let fe = channel_peer::a_channel_made_blocking_again_holds_nothing(ours);
    drop(fe);
    thread.join().expect("no panic").expect("the driver ends when the front-end hangs up");
}

#[test]
fn an_unanswered_request_does_not_hold_up_the_main_socket() {
    let (fe, shared, thread) = serve();
    channel_peer::unanswered_request_does_not_hold_up_the_main_socket(&fe, &shared);
    drop(fe);
    thread.join().expect("no panic").expect("the driver ends when the front-end hangs up");
}

#[test]
fn every_request_gets_its_result() {
    let (fe, shared, thread) = serve();
    channel_peer::every_request_gets_its_result(&fe, &shared);
    drop(fe);
    thread.join().expect("no panic").expect("clean end");
}

#[test]
fn a_channel_that_is_not_a_socket_is_dropped() {
    let (fe, shared, thread) = serve();
    channel_peer::a_channel_that_is_not_a_socket_is_dropped(&fe, &shared);
    drop(fe);
    thread.join().expect("no panic").expect("clean end");
}

#[test]
fn a_closed_channel_loses_outstanding_requests() {
    let (fe, shared, thread) = serve();
    channel_peer::a_closed_channel_loses_outstanding_requests(fe, &shared);
    thread.join().expect("no panic").expect("clean end");
}

#[test]
fn only_what_the_transport_carries_out_is_offered() {
    let mut device = ChannelDevice::new(Arc::default());
    device.offer = Some(channel_peer::everything());
    let (ours, thread) = spawn(device);
    let (features, protocol) = channel_peer::offered(&ours);
    let (all_features, all_protocol) = channel_peer::everything();
    assert_eq!(features, (all_features - UNPERFORMED_FEATURES) | VirtioFeatures::PROTOCOL_FEATURES);
    assert_eq!(protocol, all_protocol - UNPERFORMED_PROTOCOL_FEATURES);
    assert!(
        protocol.contains(ProtocolFeatures::DEVICE_STATE),
        "the blocking driver runs transfers"
    );
    assert!(
        protocol.contains(ProtocolFeatures::LOG_SHMFD)
            && features.contains(VirtioFeatures::LOG_ALL),
        "the transport keeps the dirty log of what a device writes"
    );
    assert!(
        protocol.contains(ProtocolFeatures::INFLIGHT_SHMFD),
        "the area is the transport's to carry, the records the device's to keep"
    );
    drop(ours);
    thread.join().expect("no panic").expect("clean end");
}

#[test]
fn a_replaced_call_fd_is_signalled_once_on_an_enabled_ring() {
    let (fe, _shared, thread) = serve();
    channel_peer::a_replaced_call_fd_is_signalled_once_on_an_enabled_ring(&fe);
    drop(fe);
    thread.join().expect("no panic").expect("clean end");
}

#[test]
fn device_refusals_are_the_status_of_the_request() {
    let (fe, _shared, thread) = serve();
    channel_peer::a_running_ring_the_device_cannot_move_is_refused(&fe);
    drop(fe);
    thread.join().expect("no panic").expect("clean end");

    // A queue the device refuses to start: SET_VRING_KICK is not acked 0, and the ring is not
    // started: it takes a new size, and a new kick starts it.
    let mut device = ChannelDevice::new(Arc::default());
    device.refuse_starts = 1;
    let (ours, thread) = spawn(device);
    let (fe, started) = Frontend::bring_up_status(ours);
    assert_eq!(started, 22, "EINVAL from the device's refusal");
    let num = Request::SetVringNum { index: VringIndex(0), num: 128 };
    assert_eq!(fe.call(num, &[]), 0, "a ring that did not start takes a new size");
    assert_eq!(fe.kick_again(), 0, "and starts on a new kick");
    assert_ne!(fe.call(Request::GetFeatures, &[]), 0);
    drop(fe);
    thread.join().expect("no panic").expect("clean end");
}

#[test]
fn a_new_memory_table_is_swapped_in_whole() {
    let fewest = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let mut device = ChannelDevice::new(Arc::default());
    device.fewest_regions = Some(Arc::clone(&fewest));
    let (ours, thread) = spawn(device);
    let fe = Frontend::bring_up(ours);
    channel_peer::a_new_memory_table_is_swapped_in_whole(&fe, &fewest);
    drop(fe);
    thread.join().expect("no panic").expect("clean end");
}

#[test]
fn a_state_fd_that_is_not_a_pipe_is_refused() {
    let (fe, shared, thread) = serve();
    channel_peer::a_state_fd_that_is_not_a_pipe_is_refused(&fe, &shared);
    drop(fe);
    thread.join().expect("no panic").expect("clean end");
}

#[test]
fn device_state_moves_through_the_pipe() {
    let (fe, shared, thread) = serve();
    channel_peer::device_state_moves_through_the_pipe(&fe, &shared);
    drop(fe);
    thread.join().expect("no panic").expect("clean end");
}
