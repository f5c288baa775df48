//! One poll loop serves several connections at once: a peer stalled in the middle of a frame
//! does not hold up another, malformed input closes only the connection that sent it, and a
//! connection beyond the server's tokens is refused while the others go on.

mod common;

use std::io::Write;
use std::os::fd::AsFd;

use common::{
    assert_closed, assert_serves, expect_u64, frame, header, send_with_fds, serve, GET_FEATURES,
    GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, REPLY_ACK, SET_OWNER, VERSION,
};
use rustix::pipe::{pipe_with, PipeFlags};

#[test]
fn a_peer_idle_mid_frame_does_not_block_another() {
    let served = serve("idle", 4);
    let mut idle = served.connect();
    let request = frame(GET_PROTOCOL_FEATURES, VERSION, &[]);
    idle.write_all(&request[..5]).expect("half a header");

    let mut busy = served.connect();
    for _ in 0..10 {
        assert_serves(&mut busy);
        busy.write_all(&frame(GET_PROTOCOL_FEATURES, VERSION, &[])).expect("write");
        assert_ne!(expect_u64(&mut busy, GET_PROTOCOL_FEATURES) & REPLY_ACK, 0);
    }
    // Both connections are open at once, each with its own device.
    assert_eq!(served.record.lock().unwrap().devices, 2);

    idle.write_all(&request[5..]).expect("the rest of the frame");
    assert_ne!(expect_u64(&mut idle, GET_PROTOCOL_FEATURES) & REPLY_ACK, 0);
    drop(busy);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
    assert_serves(&mut idle);
    drop(idle);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let served = serve("malformed", 8);
    let mut good = served.connect();
    let partial = frame(GET_FEATURES, VERSION, &[]);
    good.write_all(&partial[..7]).expect("a partial frame stays pending meanwhile");

    // A bad version in the header.
    let mut bad = served.connect();
    bad.write_all(&header(GET_FEATURES, 0x2, 0)).expect("write");
    assert_closed(&mut bad);
    // A payload larger than any message, refused before it is read.
    let mut bad = served.connect();
    bad.write_all(&header(GET_FEATURES, VERSION, 1 << 20)).expect("write");
    assert_closed(&mut bad);
    // A descriptor that arrives in the middle of a frame.
    let mut bad = served.connect();
    let (probe, stray) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).expect("pipe");
    let owner = frame(SET_OWNER, VERSION, &[]);
    bad.write_all(&owner[..4]).expect("write");
    // Sent with the descriptor only once the server has read these bytes (one read taking
    // both would see the descriptor with the frame's first byte).
    assert!(common::eventually(|| common::unread(&bad) == 0), "the first bytes were read");
    send_with_fds(&bad, &owner[4..], &[stray.as_fd()]);
    drop(stray);
    assert_closed(&mut bad);
    assert!(common::eventually(|| common::all_writers_closed(&probe)), "stray fd closed");
    // EOF in the middle of a frame.
    let mut bad = served.connect();
    bad.write_all(&owner[..6]).expect("write");
    bad.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_closed(&mut bad);

    let ended = served.wait_ended(4);
    assert!(ended.iter().all(|e| e.starts_with("Closed(Session(Recv")), "{ended:?}");
    // A well-formed request the back-end closes on: GET_QUEUE_NUM before MQ is negotiated.
    let mut bad = served.connect();
    bad.write_all(&frame(GET_QUEUE_NUM, VERSION, &[])).expect("write");
    assert_closed(&mut bad);
    let ended = served.wait_ended(1);
    assert!(ended[0].starts_with("Closed(Session(Closed(NotNegotiated"), "{ended:?}");
    good.write_all(&partial[7..]).expect("the rest");
    assert_ne!(expect_u64(&mut good, GET_FEATURES), 0);
    assert_serves(&mut good);
    drop(good);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn a_connection_beyond_the_tokens_is_refused() {
    let served = serve("full", 2);
    let mut first = served.connect();
    let mut second = served.connect();
    assert_serves(&mut first);
    assert_serves(&mut second);
    let mut third = served.connect();
    assert_closed(&mut third);
    let ended = served.wait_ended(1);
    assert!(ended[0].starts_with("refused: no free connection token"), "{ended:?}");
    drop(second);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
    // The freed token serves the next connection.
    let mut fourth = served.connect();
    assert_serves(&mut fourth);
    assert_serves(&mut first);
}
