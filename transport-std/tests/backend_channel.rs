//! The back-end channel through the blocking driver: requests never hold up the main socket,
//! every request gets a typed result, and a broken channel is reported, not silently dropped.

mod channel_peer;

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use channel_peer::{ChannelDevice, Frontend, Shared};
use vhu_transport_std::{Connection, SessionError};

/// A connection served by the blocking driver on a thread.
fn serve() -> (Frontend, Arc<Mutex<Shared>>, JoinHandle<Result<(), SessionError>>) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let device_shared = Arc::clone(&shared);
    let thread = std::thread::spawn(move || {
        let mut device = ChannelDevice { shared: device_shared };
        let result = Connection::new(&mut device, theirs).and_then(Connection::run);
        result
    });
    (Frontend::bring_up(ours), shared, thread)
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
fn a_closed_channel_loses_outstanding_requests() {
    let (fe, shared, thread) = serve();
    channel_peer::a_closed_channel_loses_outstanding_requests(fe, &shared);
    thread.join().expect("no panic").expect("clean end");
}
