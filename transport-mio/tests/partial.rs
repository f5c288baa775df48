//! A raw client on a real socket exercises the non-blocking read and write paths: frames dribbled
//! byte by byte across many readiness events, descriptors sent with a header whose payload comes
//! later, several frames in one write (more than one event's frame budget), and a peer that
//! reads its replies late.

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::time::Duration;

use common::{
    expect_u64, frame, read_reply, send_with_fds, serve, GET_FEATURES, GET_PROTOCOL_FEATURES,
    NEED_REPLY, REPLY_ACK, SET_PROTOCOL_FEATURES, SET_VRING_CALL, VERSION,
};
use rustix::pipe::{pipe_with, PipeFlags};

fn dribble(sock: &mut std::os::unix::net::UnixStream, bytes: &[u8]) {
    for byte in bytes {
        sock.write_all(std::slice::from_ref(byte)).expect("write one byte");
        std::thread::sleep(Duration::from_millis(3));
    }
}

#[test]
fn frames_sent_byte_by_byte_are_reassembled() {
    let served = serve("dribble", 4);
    let mut sock = served.connect();
    dribble(&mut sock, &frame(GET_FEATURES, VERSION, &[]));
    let features = expect_u64(&mut sock, GET_FEATURES);
    assert_ne!(features & (1 << 32), 0, "VERSION_1 offered: {features:#x}");

    // A frame with a payload, split inside the header and inside the payload.
    let request = frame(SET_PROTOCOL_FEATURES, VERSION | NEED_REPLY, &(1u64 << 3).to_ne_bytes());
    dribble(&mut sock, &request);
    assert_eq!(expect_u64(&mut sock, SET_PROTOCOL_FEATURES), 0, "REPLY_ACK success");
    drop(sock);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn descriptors_stay_with_a_frame_completed_by_later_events() {
    let served = serve("fd-split", 4);
    let mut sock = served.connect();
    // A pipe's write end stands in for the call eventfd: its read end tells when every copy of
    // it is closed.
    let (probe, call) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).expect("pipe");
    // SET_VRING_CALL for ring 1: the fd travels with the header, the payload comes later.
    let request = frame(SET_VRING_CALL, VERSION | NEED_REPLY, &1u64.to_ne_bytes());
    send_with_fds(&sock, &request[..12], &[call.as_fd()]);
    drop(call);
    std::thread::sleep(Duration::from_millis(50));
    dribble(&mut sock, &request[12..]);
    assert_eq!(expect_u64(&mut sock, SET_VRING_CALL), 0, "the ring took the descriptor");
    common::assert_serves(&mut sock);
    assert!(!common::all_writers_closed(&probe), "the ring holds the descriptor");
    drop(sock);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
    assert!(common::all_writers_closed(&probe), "closing the connection closed it");
}

#[test]
fn several_frames_in_one_write_are_answered_in_order() {
    let served = serve("batch", 4);
    let mut sock = served.connect();
    let mut batch = frame(GET_PROTOCOL_FEATURES, VERSION, &[]);
    batch.extend(frame(GET_FEATURES, VERSION, &[]));
    sock.write_all(&batch).expect("write two frames");
    let protocol = expect_u64(&mut sock, GET_PROTOCOL_FEATURES);
    assert_ne!(protocol & REPLY_ACK, 0, "REPLY_ACK offered: {protocol:#x}");
    assert_ne!(expect_u64(&mut sock, GET_FEATURES) & (1 << 32), 0);

    // Far more frames than one event handles: the rest must be read on later events.
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend(frame(GET_FEATURES, VERSION, &[]));
        batch.extend(frame(GET_PROTOCOL_FEATURES, VERSION, &[]));
    }
    sock.write_all(&batch).expect("write 200 frames");
    for i in 0..100 {
        assert_ne!(expect_u64(&mut sock, GET_FEATURES), 0, "pair {i}");
        assert_ne!(expect_u64(&mut sock, GET_PROTOCOL_FEATURES) & REPLY_ACK, 0, "pair {i}");
    }
    drop(sock);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn a_peer_that_reads_late_gets_every_reply_in_order() {
    const PAIRS: usize = 20_000;
    let served = serve("backlog", 4);
    let mut sock = served.connect();
    let mut writer = sock.try_clone().expect("clone");
    // About 480 KiB of requests and 800 KiB of replies: more than the socket buffers and the
    // outbox limit hold, so the server must stop reading and resume once the replies drain.
    let thread = std::thread::spawn(move || {
        let mut batch = Vec::new();
        for _ in 0..PAIRS {
            batch.extend(frame(GET_FEATURES, VERSION, &[]));
            batch.extend(frame(GET_PROTOCOL_FEATURES, VERSION, &[]));
        }
        writer.write_all(&batch).expect("write every frame");
    });
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..PAIRS {
        assert_ne!(expect_u64(&mut sock, GET_FEATURES), 0, "pair {i}");
        assert_ne!(expect_u64(&mut sock, GET_PROTOCOL_FEATURES) & REPLY_ACK, 0, "pair {i}");
    }
    thread.join().expect("writer");
    common::assert_serves(&mut sock);
    drop(sock);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn a_half_closed_peer_still_gets_its_replies() {
    let served = serve("half-close", 4);
    let mut sock = served.connect();
    sock.write_all(&frame(GET_PROTOCOL_FEATURES, VERSION, &[])).expect("write");
    sock.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_ne!(expect_u64(&mut sock, GET_PROTOCOL_FEATURES) & REPLY_ACK, 0);
    assert_eq!(read_reply(&mut sock), None, "closed after the reply");
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}
