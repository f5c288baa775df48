//! Our `Client` on the back-end channel, against a back-end written frame by frame: a request
//! of a code the front-end does not know is answered with a failure status when the back-end
//! asked for a reply (vhost-user spec, "REPLY_ACK": the back-end waits for it), and not at all
//! when it did not; requests read ahead together are all served; a request arriving in pieces
//! keeps the channel and is not waited for, and a flood of them holds no serving; a stop waits
//! at least the client's timeout; a timeout beyond the clock and a refused restore leave the
//! client usable; a back-end that takes no connection fails a connect in time.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{readable, TIMEOUT};
use vhu_transport_std::client::Client;
use vhu_transport_std::vhu_core::frontend::Negotiated;
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::{FrontendCode, ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::{recv_chunk, FrameReader, ReadAhead, ReceivedFds, RecvOutcome};

/// A back-end request code no version of the spec defines.
const UNKNOWN: u32 = 99;
/// Header flags: version 1, REPLY, NEED_REPLY.
const VERSION: u32 = 1;
const REPLY: u32 = 1 << 2;
const NEED_REPLY: u32 = 1 << 3;

/// A client restored onto `ours` with the back-end channel and without REPLY_ACK (so nothing
/// it sends waits for an answer), and the channel's back-end end, taken from the frames the
/// client sent to `theirs`.
fn restored_with_channel(ours: UnixStream, theirs: &UnixStream) -> (Client, UnixStream) {
    let mut client = Client::from_stream(ours).expect("client");
    client.set_timeout(TIMEOUT).expect("timeout");
    let channel = restore_with_channel(&mut client, theirs);
    (client, channel)
}

/// Restores `client` as [`restored_with_channel`] does; the channel's back-end end.
fn restore_with_channel(client: &mut Client, theirs: &UnixStream) -> UnixStream {
    client.restore(common::saved(ProtocolFeatures::BACKEND_REQ)).expect("restore");
    assert!(client.has_backend_channel());
    let mut fds = ReceivedFds::new();
    let mut buf = [0u8; 256];
    let channel: OwnedFd = loop {
        assert!(readable(theirs), "SET_BACKEND_REQ_FD never came");
        let n = recv_chunk(theirs, &mut buf, &mut fds).expect("the client's frames");
        assert_ne!(n, 0, "the client hung up");
        if let Some(fd) = fds.pop() {
            break fd;
        }
    };
    UnixStream::from(channel)
}

fn frame(code: u32, flags: u32, payload: u64) -> Vec<u8> {
    [code, flags, 8].iter().flat_map(|w| w.to_le_bytes()).chain(payload.to_le_bytes()).collect()
}

#[test]
fn an_unknown_backend_request_is_answered_only_when_a_reply_is_asked_for() {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (mut client, mut channel) = restored_with_channel(ours, &theirs);
    channel.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");

    // Without NEED_REPLY: handled, and nothing is sent back. (A stream socket's write is in
    // the peer's queue when it returns, so one serving finds it.)
    channel.write_all(&frame(UNKNOWN, VERSION, 0)).expect("request");
    client.serve_backend_channel().expect("serve");
    let mut reply = [0u8; 20];
    let silent = channel.read(&mut reply);
    assert!(silent.is_err(), "answered a request that asked for no reply: {silent:?}");

    // With NEED_REPLY: a REPLY of the same code carrying a failure status.
    channel.write_all(&frame(UNKNOWN, VERSION | NEED_REPLY, 0)).expect("request");
    client.serve_backend_channel().expect("serve");
    channel.read_exact(&mut reply).expect("the reply");
    let word = |i: usize| u32::from_le_bytes(reply[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!(word(0), UNKNOWN, "reply's code");
    assert_eq!(word(1), VERSION | REPLY, "reply's flags");
    assert_eq!(word(2), 8, "reply's size");
    let status = u64::from_le_bytes(reply[12..20].try_into().unwrap());
    assert_ne!(status, 0, "an unknown request reported as done");

    // The channel and the session both stay up.
    assert!(client.has_backend_channel());
    assert!(!client.is_closed());
}

/// Requests the back-end sends back to back arrive in one read: one serving answers them all
/// (the second would otherwise wait in the client, its socket never readable again).
#[test]
fn requests_read_ahead_together_are_all_served() {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (mut client, mut channel) = restored_with_channel(ours, &theirs);
    channel.set_read_timeout(Some(Duration::from_secs(2))).expect("read timeout");
    let two =
        [frame(UNKNOWN, VERSION | NEED_REPLY, 0), frame(UNKNOWN + 1, VERSION | NEED_REPLY, 0)];
    channel.write_all(&two.concat()).expect("requests");
    client.serve_backend_channel().expect("serve");
    let mut replies = [0u8; 40];
    channel.read_exact(&mut replies).expect("both answered");
    assert_eq!(u32::from_le_bytes(replies[..4].try_into().unwrap()), UNKNOWN);
    assert_eq!(u32::from_le_bytes(replies[20..24].try_into().unwrap()), UNKNOWN + 1);
}

/// A request that arrives in pieces keeps the channel: serving it does not wait for the rest
/// (a VMM's event loop calls it when the channel is readable, and a back-end that sends half a
/// request must not hold the loop), and the rest, when it comes, completes it.
#[test]
fn a_request_arriving_in_pieces_keeps_the_channel() {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (mut client, mut channel) = restored_with_channel(ours, &theirs);
    client.set_timeout(Duration::from_secs(5)).expect("timeout");
    channel.set_read_timeout(Some(Duration::from_secs(2))).expect("read timeout");
    let request = frame(UNKNOWN, VERSION | NEED_REPLY, 0);
    channel.write_all(&request[..12]).expect("the header");
    let started = std::time::Instant::now();
    client.serve_backend_channel().expect("serve");
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?}", started.elapsed());
    assert!(client.has_backend_channel(), "a slow request is no broken channel");
    channel.write_all(&request[12..]).expect("the payload");
    client.serve_backend_channel().expect("serve");
    let mut reply = [0u8; 20];
    channel.read_exact(&mut reply).expect("answered");
    assert_eq!(u32::from_le_bytes(reply[..4].try_into().unwrap()), UNKNOWN);
}

/// A back-end writing requests as fast as it can does not hold a serving of the channel: the
/// client serves what one read brought and returns, while the back-end still writes. (Served
/// until the back-end stopped, a VMM's loop spun for as long as the back-end liked.)
#[test]
fn a_flood_of_requests_does_not_hold_the_caller() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (mut client, mut channel) = restored_with_channel(ours, &theirs);
    // Requests that want no reply, twelve bytes each: no read's worth ends on a frame.
    let burst: Vec<u8> =
        (0..1024).flat_map(|_| [UNKNOWN, VERSION, 0]).flat_map(|w| w.to_le_bytes()).collect();
    channel.write_all(&burst).expect("first burst");
    let served = Arc::new(AtomicBool::new(false));
    let flooder = {
        let served = Arc::clone(&served);
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            channel.set_write_timeout(Some(Duration::from_millis(50))).expect("write timeout");
            while !served.load(Ordering::Acquire) {
                if started.elapsed() > Duration::from_secs(10) {
                    return false;
                }
                let _ = channel.write_all(&burst);
            }
            true
        })
    };
    client.serve_backend_channel().expect("serve");
    served.store(true, Ordering::Release);
    assert!(flooder.join().expect("flooder"), "served only once the back-end stopped writing");
    assert!(client.has_backend_channel());
}

/// A timeout too long for the clock means no deadline; it does not break the client.
#[test]
fn a_timeout_beyond_the_clock_is_no_deadline() {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut client = Client::from_stream(ours).expect("client");
    client.set_timeout(Duration::MAX).expect("timeout");
    let mut channel = restore_with_channel(&mut client, &theirs);
    channel.set_read_timeout(Some(Duration::from_secs(2))).expect("read timeout");
    channel.write_all(&frame(UNKNOWN, VERSION | NEED_REPLY, 0)).expect("request");
    client.serve_backend_channel().expect("served");
    let mut reply = [0u8; 20];
    channel.read_exact(&mut reply).expect("answered");
    assert!(!client.is_closed());
}

/// A handshake the front-end refuses sends nothing: it may be tried again on the same client.
#[test]
fn a_refused_restore_leaves_the_client_usable() {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut client = Client::from_stream(ours).expect("client");
    client.set_timeout(TIMEOUT).expect("timeout");
    // Protocol features without VHOST_USER_F_PROTOCOL_FEATURES: refused before sending.
    let saved = Negotiated {
        offered_features: VirtioFeatures::VERSION_1,
        features: VirtioFeatures::VERSION_1,
        protocol_features: ProtocolFeatures::BACKEND_REQ,
        queues: None,
        max_mem_slots: None,
    };
    assert!(client.restore(saved).is_err());
    let _channel = restore_with_channel(&mut client, &theirs);
    assert!(client.has_backend_channel());
}

/// A back-end that takes no connection (its backlog full) fails a connect within the timeout
/// given, instead of holding it for good.
#[test]
fn a_back_end_that_takes_no_connection_times_out() {
    use rustix::net::{bind, connect, listen, socket_with, AddressFamily, SocketAddrUnix};
    use rustix::net::{SocketFlags, SocketType};
    let path = std::env::temp_dir().join(format!("vhu-{}-full-backlog.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let address = SocketAddrUnix::new(&path).expect("address");
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let listener = socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None).unwrap();
    bind(&listener, &address).expect("bind");
    listen(&listener, 0).expect("listen");
    let mut pending = Vec::new();
    loop {
        let socket = socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None).unwrap();
        match connect(&socket, &address) {
            Ok(()) => pending.push(socket),
            Err(rustix::io::Errno::AGAIN) => break,
            Err(errno) => panic!("connect: {errno}"),
        }
        assert!(pending.len() < 1000, "the backlog never filled");
    }
    let (done, outcome) = std::sync::mpsc::channel();
    let target = path.clone();
    std::thread::spawn(move || {
        let result = Client::connect_within(&target, Duration::from_millis(100)).map(drop);
        let _ = done.send(result);
    });
    let result = outcome.recv_timeout(TIMEOUT).expect("the connect gave up");
    assert!(
        matches!(&result, Err(vhu_transport_std::ClientError::Connect { source, .. })
            if source.kind() == std::io::ErrorKind::TimedOut),
        "{result:?}"
    );
    drop(pending);
    let _ = std::fs::remove_file(&path);
}

/// A stop waits for the longer of the client's timeout and its drain bound: a drain bound set
/// shorter than the timeout does not cut a stop short (the back-end answers GET_VRING_BASE
/// after four times the drain bound, within the timeout).
#[test]
fn a_stop_waits_at_least_the_clients_timeout() {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (mut client, _channel) = restored_with_channel(ours, &theirs);
    client.set_drain_timeout(Duration::from_millis(100));
    let peer = std::thread::spawn(move || {
        let mut reader = FrameReader::new(ReadAhead::Exact);
        loop {
            match reader.recv(&theirs) {
                Ok(RecvOutcome::Frame(_)) => {}
                other => panic!("the client went: {other:?}"),
            }
            let frame = reader.frame().expect("a whole frame").to_vec();
            if frame[..4] == FrontendCode::GetVringBase.as_u32().to_le_bytes() {
                std::thread::sleep(Duration::from_millis(400));
                let base = [0u32, 7].iter().flat_map(|w| w.to_le_bytes());
                let reply: Vec<u8> = [FrontendCode::GetVringBase.as_u32(), VERSION | REPLY, 8]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .chain(base)
                    .collect();
                vhu_transport_std::send(&theirs, &reply, &[]).expect("reply");
                return;
            }
        }
    });
    let base = client.stop_vring(VringIndex(0)).expect("stopped within the client's timeout");
    assert_eq!(base, VringBase::split(7));
    peer.join().expect("the back-end answered");
}
