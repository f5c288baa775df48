//! The back-end channel through the mio server, the same scenarios as the blocking driver's:
//! requests never hold up the main socket or the event loop, every request gets a typed result,
//! and a broken channel is reported, not silently dropped.

#[path = "../../transport-std/tests/channel_peer/mod.rs"]
mod channel_peer;
mod common;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use channel_peer::{ChannelDevice, Frontend, Shared};
use vhu_transport_std::vhu_core::message::{Request, TransferDirection, TransferPhase};
use vhu_transport_std::vhu_core::{FdToken, VringIndex};

fn serve(name: &str) -> (common::Served, Frontend, Arc<Mutex<Shared>>) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let device_shared = Arc::clone(&shared);
    let mut first = true;
    // Only the first connection's device reports to the test.
    let served = common::serve_with(name, 4, move || {
        let shared = if std::mem::take(&mut first) {
            Arc::clone(&device_shared)
        } else {
            Arc::new(Mutex::new(Shared::default()))
        };
        ChannelDevice::new(shared)
    });
    let fe = Frontend::bring_up(served.connect());
    (served, fe, shared)
}

#[test]
fn an_unanswered_request_does_not_hold_up_the_main_socket() {
    let (served, fe, shared) = serve("channel-unanswered");
    // Another connection is served meanwhile too: the event loop never waits for the answer.
    let mut other = served.connect();
    channel_peer::unanswered_request_does_not_hold_up_the_main_socket(&fe, &shared);
    common::assert_serves(&mut other);
    drop(fe);
    drop(other);
    assert_eq!(served.wait_ended(2), ["HungUp", "HungUp"]);
}

#[test]
fn a_channel_made_blocking_again_holds_up_no_connection() {
    let served = common::serve_with("channel-blocking", 4, || ChannelDevice::new(Arc::default()));
    let mut other = served.connect();
    let fe = channel_peer::a_channel_made_blocking_again_holds_nothing(served.connect());
    common::assert_serves(&mut other);
    drop(fe);
    drop(other);
    assert_eq!(served.wait_ended(2), ["HungUp", "HungUp"]);
}

#[test]
fn every_request_gets_its_result() {
    let (served, fe, shared) = serve("channel-results");
    channel_peer::every_request_gets_its_result(&fe, &shared);
    drop(fe);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn a_channel_that_is_not_a_socket_is_dropped() {
    let (served, fe, shared) = serve("channel-not-socket");
    channel_peer::a_channel_that_is_not_a_socket_is_dropped(&fe, &shared);
    drop(fe);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn a_closed_channel_loses_outstanding_requests() {
    let (served, fe, shared) = serve("channel-closed");
    channel_peer::a_closed_channel_loses_outstanding_requests(fe, &shared);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn only_what_the_transport_carries_out_is_offered() {
    use vhu_transport_mio::vhu_core::ProtocolFeatures;
    use vhu_transport_mio::vhu_transport_std::session::offer::UNPERFORMED_PROTOCOL_FEATURES;
    let served = common::serve_with("offer", 2, || {
        let mut device = ChannelDevice::new(Arc::default());
        device.offer = Some(channel_peer::everything());
        device
    });
    let main = served.connect();
    let (_, protocol) = channel_peer::offered(&main);
    let (_, all) = channel_peer::everything();
    assert_eq!(protocol, all - UNPERFORMED_PROTOCOL_FEATURES);
    assert!(protocol.contains(ProtocolFeatures::DEVICE_STATE), "transfers move with the loop");
    drop(main);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn a_replaced_call_fd_is_signalled_once_on_an_enabled_ring() {
    let (served, fe, _shared) = serve("call-replaced");
    channel_peer::a_replaced_call_fd_is_signalled_once_on_an_enabled_ring(&fe);
    drop(fe);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn device_refusals_are_the_status_of_the_request() {
    let (served, fe, _shared) = serve("refusals");
    channel_peer::a_running_ring_the_device_cannot_move_is_refused(&fe);
    drop(fe);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn a_state_fd_that_is_not_a_pipe_is_refused() {
    let (served, fe, shared) = serve("state-not-pipe");
    channel_peer::a_state_fd_that_is_not_a_pipe_is_refused(&fe, &shared);
    drop(fe);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn device_state_moves_through_the_pipe_without_holding_up_the_loop() {
    let (served, fe, shared) = serve("device-state");
    // Another connection is served while the pipe waits for the front-end.
    let mut other = served.connect();
    channel_peer::device_state_moves_through_the_pipe(&fe, &shared);
    common::assert_serves(&mut other);
    drop(fe);
    drop(other);
    assert_eq!(served.wait_ended(2), ["HungUp", "HungUp"]);
}

/// The load of a device state: SET_DEVICE_STATE_FD asking for one.
const LOAD: Request<'static> = Request::SetDeviceStateFd {
    direction: TransferDirection::Load,
    phase: TransferPhase::Stopped,
    fd: FdToken(0),
};

/// Stops ring 0 and starts a load from a pipe-like pair; returns the front-end's end, through
/// which part of a state came and which it keeps open: the load cannot end yet.
fn load_under_way(fe: &Frontend) -> UnixStream {
    use std::io::Write;
    fe.call(Request::GetVringBase { index: VringIndex(0) }, &[]);
    let (ours, theirs) = UnixStream::pair().expect("a pipe-like pair");
    assert_eq!(fe.call(LOAD, &[theirs.as_fd()]), 0x100);
    drop(theirs);
    (&ours).write_all(&[1, 2, 3]).expect("some state");
    ours
}

#[test]
fn a_check_while_the_front_end_holds_its_pipe_open_fails_without_waiting() {
    let (served, fe, shared) = serve("device-state-open");
    let mut other = served.connect();
    let ours = load_under_way(&fe);
    // The check is answered at once with a failure (a blocking wait would outlast the test's
    // reply timeout), and the loop goes on serving everyone.
    assert_ne!(fe.call(Request::CheckDeviceState, &[]), 0, "an unfinished load failed");
    common::assert_serves(&mut other);
    assert!(shared.lock().unwrap().loaded.is_none(), "nothing was loaded");
    drop(ours);
    drop(fe);
    drop(other);
    assert_eq!(served.wait_ended(2), ["HungUp", "HungUp"]);
}

/// A load from a pipe whose read end the front-end also kept, and made blocking again once the
/// load began (O_NONBLOCK is the open file's, which both copies share): the state comes in
/// pieces, and the loop reads each as it comes without waiting for the next, serving the other
/// connection meanwhile.
#[test]
fn a_load_from_a_pipe_made_blocking_again_holds_up_no_connection() {
    use rustix::pipe::{pipe_with, PipeFlags};
    let (served, fe, shared) = serve("device-state-blocking");
    let mut other = served.connect();
    fe.call(Request::GetVringBase { index: VringIndex(0) }, &[]);
    let (theirs, ours) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
    assert_eq!(fe.call(LOAD, &[theirs.as_fd()]), 0x100);
    rustix::io::write(&ours, &[1, 2, 3]).expect("some state");
    common::assert_serves(&mut other);
    std::thread::sleep(std::time::Duration::from_millis(50));
    rustix::fs::fcntl_setfl(&theirs, rustix::fs::OFlags::empty()).expect("blocking again");
    rustix::io::write(&ours, &[4, 5, 6]).expect("more state");
    std::thread::sleep(std::time::Duration::from_millis(50));
    common::assert_serves(&mut other);
    assert_ne!(fe.call(Request::CheckDeviceState, &[]), 0, "an unfinished load failed");
    assert!(shared.lock().unwrap().loaded.is_none(), "nothing was loaded");
    drop((ours, theirs));
    drop(fe);
    drop(other);
    assert_eq!(served.wait_ended(2), ["HungUp", "HungUp"]);
}

/// Starts a load the front-end keeps open ([`load_under_way`]), has `interrupt` end it, then
/// closes the front-end's end: whatever `interrupt` did, nothing reaches the device, and
/// CHECK_DEVICE_STATE reports no successful load.
fn interrupted_load(name: &str, interrupt: impl FnOnce(&Frontend)) {
    let (served, fe, shared) = serve(name);
    let ours = load_under_way(&fe);
    interrupt(&fe);
    drop(ours);
    assert_ne!(fe.call(Request::CheckDeviceState, &[]), 0, "no load to report");
    assert!(shared.lock().unwrap().loaded.is_none(), "nothing was loaded");
    drop(fe);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

/// A ring started while a load is still under way (the front-end kept its end of the pipe
/// open) ends the load as failed: the device is no longer suspended.
#[test]
fn a_ring_started_during_a_load_fails_it() {
    interrupted_load("device-state-restarted", |fe| {
        assert_eq!(fe.kick_again(), 0, "the ring starts again");
    });
}

/// RESET_DEVICE ends a load still under way: nothing is loaded into the reset device.
#[test]
fn a_reset_during_a_load_fails_it() {
    interrupted_load("device-state-reset", |fe| {
        assert_eq!(fe.call(Request::ResetDevice, &[]), 0, "the device resets");
    });
}

/// A new SET_DEVICE_STATE_FD ends a load still under way even when it is refused itself: the
/// front-end gave up on the first.
#[test]
fn a_refused_second_transfer_ends_the_first() {
    interrupted_load("device-state-second", |fe| {
        let flags = rustix::fs::MemfdFlags::CLOEXEC;
        let file = rustix::fs::memfd_create("state", flags).expect("memfd");
        assert_eq!(fe.call(LOAD, &[file.as_fd()]) & 0xff, 22, "not a pipe: EINVAL");
    });
}

/// Runs `scenario` on a server whose first connection's device reports its stops only when
/// the test says so: that connection, brought up, and a second one.
fn with_slow_stops(name: &str, scenario: fn(&Frontend, &Arc<Mutex<Shared>>, &UnixStream)) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let device_shared = Arc::clone(&shared);
    let mut first = true;
    let served = common::serve_with(name, 4, move || {
        let shared = if std::mem::take(&mut first) {
            Arc::clone(&device_shared)
        } else {
            Arc::new(Mutex::new(Shared::default()))
        };
        let mut device = ChannelDevice::new(shared);
        device.slow_stop = true;
        device
    });
    let fe = Frontend::bring_up(served.connect());
    let other = served.connect();
    scenario(&fe, &shared, &other);
    drop(fe);
    drop(other);
    assert_eq!(served.wait_ended(2), ["HungUp", "HungUp"]);
}

#[test]
fn a_slow_stop_holds_up_only_its_connection() {
    with_slow_stops("slow-stop", channel_peer::a_slow_stop_holds_up_only_its_connection);
}

#[test]
fn a_slow_reset_holds_up_only_its_connection() {
    with_slow_stops("slow-reset", channel_peer::a_slow_reset_holds_up_only_its_connection);
}
