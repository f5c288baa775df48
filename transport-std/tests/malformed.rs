//! Malformed input on a real socket from a raw client: the daemon answers with a NACK or closes
//! the connection, never panics or hangs, closes the descriptors it was sent, and serves the next
//! connection.

mod common;

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use common::{serve, Served, TIMEOUT};
use rustix::io::read;
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::pipe::{pipe_with, PipeFlags};
use vhu_transport_std::vhu_core::{Reply, Request};

const VERSION: u32 = 0x1;
const NEED_REPLY: u32 = 0x8;
const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;

fn connect(served: &Served) -> UnixStream {
    let stream = UnixStream::connect(&served.path).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("write timeout");
    stream
}

fn header(request: u32, flags: u32, size: u32) -> Vec<u8> {
    [request, flags, size].iter().flat_map(|w| w.to_ne_bytes()).collect()
}

fn frame(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = header(request, flags, payload.len() as u32);
    out.extend_from_slice(payload);
    out
}

/// Sends `bytes` with any number of descriptors in one `sendmsg`.
fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let sent =
        sendmsg(sock, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL).expect("sendmsg");
    assert_eq!(sent, bytes.len());
}

/// One reply: (code, flags, payload); `None` if the daemon closed the connection.
fn read_reply(sock: &mut UnixStream) -> Option<(u32, u32, Vec<u8>)> {
    let mut head = [0u8; 12];
    match sock.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => {
            return None
        }
        Err(e) => panic!("no reply and no close within the timeout: {e}"),
    }
    let word = |i: usize| u32::from_ne_bytes(head[i * 4..i * 4 + 4].try_into().unwrap());
    let mut payload = vec![0u8; word(2) as usize];
    sock.read_exact(&mut payload).expect("reply payload");
    Some((word(0), word(1), payload))
}

fn assert_closed(sock: &mut UnixStream) {
    assert_eq!(read_reply(sock), None, "the daemon should have closed the connection");
}

/// A failed REPLY_ACK for `code`.
fn assert_nack(sock: &mut UnixStream, code: u32) {
    let (got, flags, payload) = read_reply(sock).expect("a NACK, not a close");
    assert_eq!((got, flags, payload.len()), (code, VERSION | 0x4, 8));
    assert_ne!(u64::from_ne_bytes(payload.try_into().unwrap()), 0, "non-zero status");
}

/// GET_FEATURES still works on `sock`.
fn assert_serves(sock: &mut UnixStream) {
    let mut buf = [0u8; 64];
    let len = Request::GetFeatures.encode_into(false, &mut buf).unwrap();
    sock.write_all(&buf[..len]).expect("send GET_FEATURES");
    let (code, flags, payload) = read_reply(sock).expect("GET_FEATURES reply");
    let mut frame = header(code, flags, payload.len() as u32);
    frame.extend_from_slice(&payload);
    assert!(matches!(Reply::parse(&frame, &[]), Ok(Reply::Features(_))), "{frame:?}");
}

/// The daemon ended one connection with a reason containing `reason`, and serves the next.
fn assert_ended_then_serves(served: &Served, reason: &str) {
    let ended = served.wait_ended(1);
    assert!(ended[0].contains(reason), "ended with {ended:?}, expected {reason}");
    assert_serves(&mut connect(served));
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

/// A pipe's write end to send, and its read end, which reports EOF once every copy is closed.
fn watched() -> (OwnedFd, OwnedFd) {
    let (reader, writer) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).expect("pipe");
    (writer, reader)
}

fn all_writers_closed(reader: &OwnedFd) -> bool {
    common::eventually(|| matches!(read(reader, &mut [0u8; 1]), Ok(0)))
}

#[test]
fn bad_version_closes() {
    let served = serve("bad-version");
    let mut sock = connect(&served);
    sock.write_all(&header(GET_FEATURES, 0x2, 0)).unwrap();
    assert_closed(&mut sock);
    assert_ended_then_serves(&served, "BadVersion");
}

/// A request code nobody knows is read whole: answered with a failure when NEED_REPLY asks,
/// its descriptors closed, and the connection goes on.
#[test]
fn unknown_code_is_refused_and_the_connection_goes_on() {
    let served = serve("unknown-code");
    let mut sock = connect(&served);
    sock.write_all(&frame(999, VERSION | NEED_REPLY, &[1, 2, 3])).unwrap();
    let (code, flags, payload) = read_reply(&mut sock).expect("a refusal, not a close");
    assert_eq!((code, flags), (999, VERSION | 0x4));
    assert_eq!(payload, 95u64.to_ne_bytes(), "EOPNOTSUPP");
    let (writer, reader) = watched();
    send_with_fds(&sock, &header(1000, VERSION, 0), &[writer.as_fd()]);
    drop(writer);
    assert!(all_writers_closed(&reader), "its descriptor is closed");
    assert_serves(&mut sock);
    drop(sock);
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}

#[test]
fn oversized_payload_closes_before_reading_it() {
    let served = serve("oversized");
    let mut sock = connect(&served);
    sock.write_all(&header(SET_FEATURES, VERSION, 0x10_0000)).unwrap();
    assert_closed(&mut sock);
    assert_ended_then_serves(&served, "PayloadTooLarge");
}

#[test]
fn wrong_payload_size_is_nacked_and_the_connection_goes_on() {
    let served = serve("payload-size");
    let mut sock = connect(&served);
    sock.write_all(&frame(SET_FEATURES, VERSION | NEED_REPLY, &[0; 4])).unwrap();
    assert_nack(&mut sock, SET_FEATURES);
    assert_serves(&mut sock);
    drop(sock);
    assert_ended_then_serves(&served, "HungUp");
}

#[test]
fn fds_on_a_message_without_fds_are_refused_and_closed() {
    let served = serve("stray-fds");
    let mut sock = connect(&served);
    let (writer, probe) = watched();
    send_with_fds(&sock, &frame(SET_OWNER, VERSION | NEED_REPLY, &[]), &[writer.as_fd()]);
    drop(writer);
    assert_nack(&mut sock, SET_OWNER);
    assert!(all_writers_closed(&probe), "the daemon closed the stray descriptor");
    assert_serves(&mut sock);

    // GET_FEATURES has a typed reply that cannot carry a failure: the connection closes.
    let (writer, probe) = watched();
    send_with_fds(&sock, &frame(GET_FEATURES, VERSION, &[]), &[writer.as_fd()]);
    drop(writer);
    assert_closed(&mut sock);
    assert!(all_writers_closed(&probe));
    assert_ended_then_serves(&served, "Closed");
}

#[test]
fn too_many_fds_close_and_are_all_closed() {
    let served = serve("many-fds");
    let mut sock = connect(&served);
    let (writers, probes): (Vec<OwnedFd>, Vec<OwnedFd>) = (0..12).map(|_| watched()).unzip();
    let borrowed: Vec<BorrowedFd<'_>> = writers.iter().map(AsFd::as_fd).collect();
    send_with_fds(&sock, &frame(SET_OWNER, VERSION, &[]), &borrowed);
    drop(borrowed);
    drop(writers);
    assert_closed(&mut sock);
    assert!(probes.iter().all(all_writers_closed), "every descriptor closed");
    assert_ended_then_serves(&served, "TooManyFds");
}

#[test]
fn peer_closing_mid_header_or_mid_payload_ends_only_that_connection() {
    let served = serve("mid-frame");
    let sock = connect(&served);
    sock.try_clone().unwrap().write_all(&header(SET_FEATURES, VERSION, 8)[..6]).unwrap();
    sock.shutdown(Shutdown::Write).unwrap();
    assert_ended_then_serves(&served, "UnexpectedEof");

    let (writer, probe) = watched();
    let sock = connect(&served);
    send_with_fds(&sock, &header(SET_FEATURES, VERSION, 8), &[writer.as_fd()]);
    drop(writer);
    (&sock).write_all(&[0; 3]).unwrap();
    drop(sock);
    assert_ended_then_serves(&served, "UnexpectedEof");
    assert!(all_writers_closed(&probe), "the partial frame's descriptor was closed");
}

/// A deterministic flood of frames with valid headers, random codes and random payloads: the
/// daemon answers or closes each connection, and is still serving afterwards.
#[test]
fn random_frames_never_break_the_daemon() {
    let served = serve("random");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut connections = 0;
    let mut sent = 0;
    while sent < 400 && connections < 100 {
        connections += 1;
        let sock = connect(&served);
        let mut reader = sock.try_clone().unwrap();
        // Drain replies until the daemon closes, so it never blocks on a full socket.
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            for _ in 0..10_000 {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        for _ in 0..50 {
            let code = (next() % 50) as u32;
            let flags = VERSION | if next() % 2 == 0 { NEED_REPLY } else { 0 };
            let payload: Vec<u8> = (0..next() % 48).map(|_| next() as u8).collect();
            sent += 1;
            if (&sock).write_all(&frame(code, flags, &payload)).is_err() {
                break;
            }
        }
        let _ = sock.shutdown(Shutdown::Write);
        drain.join().expect("drain thread");
    }
    let ended = served.wait_ended(connections);
    assert_eq!(ended.len(), connections);
    assert_serves(&mut connect(&served));
    assert_eq!(served.wait_ended(1), ["HungUp"]);
}
