//! Our `Client` starting and stopping a ring against a back-end written frame by frame: a
//! started ring is kicked once (spec "Starting and stopping rings": front-ends should, for
//! back-ends that start a ring at its first kick). The back-end refuses the
//! SET_VRING_ENABLE(0) sent first: GET_VRING_BASE stops the ring all the same (spec "Starting
//! and stopping rings"), and its base is what `stop_vring` returns, since nothing else could
//! resume the ring. A ring whose requests in flight take longer to finish than any other answer
//! is waited for as long as the client's drain bound says.

mod common;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::TIMEOUT;
use vhu_transport_std::client::{eventfd, Client, ClientError, VringStart};
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::{FrontendCode, ProtocolFeatures, VringIndex};
use vhu_transport_std::{FrameReader, ReadAhead, RecvOutcome};

/// Header flags: version 1, REPLY, NEED_REPLY.
const VERSION: u32 = 1;
const REPLY: u32 = 1 << 2;
const NEED_REPLY: u32 = 1 << 3;

/// Answers every frame on `socket` until the client hangs up: a GET_VRING_BASE with base 42,
/// a SET_VRING_ENABLE(0) asking for an ack with status 1 (refused), anything else asking for
/// one with 0; GET_VRING_BASE is answered after `drain`. Returns the codes it saw.
fn back_end(socket: UnixStream, drain: Duration) -> Vec<u32> {
    let mut seen = Vec::new();
    let mut reader = FrameReader::new(ReadAhead::Exact);
    loop {
        match reader.recv(&socket) {
            Ok(RecvOutcome::Frame(_)) => {}
            Ok(RecvOutcome::Closed) | Err(_) => return seen,
        }
        let frame = reader.frame().expect("a whole frame").to_vec();
        let word = |i: usize| u32::from_le_bytes(frame[i * 4..i * 4 + 4].try_into().unwrap());
        let (code, flags) = (word(0), word(1));
        seen.push(code);
        let payload: Option<Vec<u8>> = if code == FrontendCode::GetVringBase.as_u32() {
            std::thread::sleep(drain);
            Some([word(3), 42].iter().flat_map(|w| w.to_le_bytes()).collect())
        } else if flags & NEED_REPLY == 0 {
            None
        } else if code == FrontendCode::SetVringEnable.as_u32() && word(4) == 0 {
            Some(1u64.to_le_bytes().to_vec())
        } else {
            Some(0u64.to_le_bytes().to_vec())
        };
        if let Some(payload) = payload {
            let header = [code, VERSION | REPLY, payload.len() as u32];
            let reply: Vec<u8> =
                header.iter().flat_map(|w| w.to_le_bytes()).chain(payload).collect();
            if vhu_transport_std::send(&socket, &reply, &[]).is_err() {
                return seen;
            }
        }
    }
}

#[test]
fn a_refused_disable_still_returns_the_base() {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let peer = std::thread::spawn(move || back_end(theirs, Duration::ZERO));
    let mut client = Client::from_stream(ours).expect("client");
    client.set_timeout(TIMEOUT).expect("timeout");
    client.restore(common::saved(ProtocolFeatures::REPLY_ACK)).expect("restored");
    let base = client.stop_vring(VringIndex(0)).expect("the ring stopped at its base");
    assert_eq!(base, VringBase::split(42));
    drop(client);
    let seen = peer.join().expect("the back-end ends");
    let enable = seen.iter().position(|c| *c == FrontendCode::SetVringEnable.as_u32());
    let get_base = seen.iter().position(|c| *c == FrontendCode::GetVringBase.as_u32());
    assert!(enable.is_some() && enable < get_base, "disable, then GET_VRING_BASE: {seen:?}");
}

/// A stop whose answer takes three times the client's timeout (the back-end finishing requests
/// in flight) returns the base; past the drain bound it is a timeout.
#[test]
fn a_stop_waits_for_the_drain_longer_than_for_other_answers() {
    let wait = Duration::from_millis(200);
    let stop = |drain_timeout: Option<Duration>| {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let peer = std::thread::spawn(move || back_end(theirs, 3 * wait));
        let mut client = Client::from_stream(ours).expect("client");
        client.set_timeout(wait).expect("timeout");
        if let Some(bound) = drain_timeout {
            client.set_drain_timeout(bound);
        }
        client.restore(common::saved(ProtocolFeatures::REPLY_ACK)).expect("restored");
        let stopped = client.stop_vring(VringIndex(0));
        drop(client);
        peer.join().expect("the back-end ends");
        stopped
    };
    assert_eq!(stop(None).expect("stopped after the drain"), VringBase::split(42));
    let timed_out = stop(Some(wait + wait / 2));
    assert!(
        matches!(timed_out, Err(ClientError::Timeout { timeout, .. }) if timeout == wait + wait / 2),
        "{timed_out:?}"
    );
}

/// A ring the client started, and enabled, is kicked once: the kick eventfd the back-end got
/// holds one kick (this back-end never reads it).
#[test]
fn a_started_ring_is_kicked_once() {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let peer = std::thread::spawn(move || back_end(theirs, Duration::ZERO));
    let mut client = Client::from_stream(ours).expect("client");
    client.set_timeout(TIMEOUT).expect("timeout");
    client.restore(common::saved(ProtocolFeatures::REPLY_ACK)).expect("restored");
    client.stop_vring(VringIndex(0)).expect("stopped");
    let kick = eventfd().expect("kick eventfd");
    let start = VringStart {
        size: 256,
        base: VringBase::split(42),
        descriptor: 0x1_0000,
        used: 0x1_2000,
        available: 0x1_1000,
        log: None,
        call: None,
        kick: Some(kick.as_fd()),
    };
    client.start_vring(VringIndex(0), start).expect("started");
    let mut count = [0u8; 8];
    assert_eq!(rustix::io::read(&kick, &mut count), Ok(8), "kicked");
    assert_eq!(u64::from_ne_bytes(count), 1, "once");
    drop(client);
    let seen = peer.join().expect("the back-end ends");
    let last = |code: FrontendCode| seen.iter().rposition(|c| *c == code.as_u32());
    assert!(last(FrontendCode::SetVringKick) < last(FrontendCode::SetVringEnable), "{seen:?}");
}
