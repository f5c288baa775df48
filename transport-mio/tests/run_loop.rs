//! [`Server::run`], the convenience loop: it serves connections and hands every event, the
//! caller's own sources included, to the caller's callback, which decides when to stop.

mod common;

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use common::{assert_serves, socket_path, Record, TestDevice, TIMEOUT};
use mio::{Poll, Token, Waker};
use vhu_transport_mio::{Handled, Server, Tokens};

const WAKE: Token = Token(7);

#[test]
fn run_serves_until_the_callback_stops_it() {
    let path = socket_path("run");
    let record = Arc::new(Mutex::new(Record::default()));
    let devices = Arc::clone(&record);
    let mut server =
        Server::bind(&path, move || TestDevice::new(Arc::clone(&devices))).expect("bind");
    assert_eq!(server.path(), Some(path.as_path()));
    let mut poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).expect("waker"));
    let tokens = Tokens { listener: Token(100), connections: 0..4 };
    server.register(poll.registry(), tokens.clone()).expect("register");
    assert!(server.register(poll.registry(), tokens).is_err(), "registered twice");

    let thread = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let result = server.run(&mut poll, |handled| {
            seen.push(format!("{handled:?}"));
            match handled {
                Handled::Ended { .. } | Handled::NotOurs(WAKE) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        });
        (result.map_err(|e| e.to_string()), seen, server.connections())
    });
    // A watchdog: if the loop is still running after the timeout, the waker stops it.
    let watchdog = Arc::clone(&waker);
    std::thread::spawn(move || {
        std::thread::sleep(TIMEOUT);
        let _ = watchdog.wake();
    });

    let mut sock = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    sock.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_serves(&mut sock);
    drop(sock);
    let (result, seen, open) = thread.join().expect("loop thread");
    assert_eq!(result, Ok(()));
    assert!(seen.first().is_some_and(|s| s.starts_with("Accepted")), "{seen:?}");
    assert!(seen.last().is_some_and(|s| s.contains("HungUp")), "{seen:?}");
    assert_eq!(open, 0);
    assert_eq!(record.lock().unwrap().resets, 1, "the device was reset on disconnect");
}

#[test]
fn bad_tokens_are_refused() {
    let path = socket_path("tokens");
    let record = Arc::new(Mutex::new(Record::default()));
    let mut server =
        Server::bind(&path, move || TestDevice::new(Arc::clone(&record))).expect("bind");
    let poll = Poll::new().expect("poll");
    let overlapping = Tokens { listener: Token(3), connections: 0..4 };
    assert!(server.register(poll.registry(), overlapping).is_err());
    let empty = Tokens { listener: Token(3), connections: 4..4 };
    assert!(server.register(poll.registry(), empty).is_err());
    drop(server);
    assert!(!path.exists(), "the bound path is removed");
}

/// A bound server's socket is as a daemon's ([`vhu_transport_std::SocketFile`]): its user's
/// alone whatever the umask (whoever connects acts as the VMM), never taken from a live server,
/// taken over when the server that made it is gone, and removed with the server.
#[test]
fn a_bound_socket_is_the_users_alone_and_never_taken_from_a_live_server() {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path("socket-file");
    let record = Arc::new(Mutex::new(Record::default()));
    let device = || {
        let record = Arc::clone(&record);
        move || TestDevice::new(Arc::clone(&record))
    };
    let server = Server::bind(&path, device()).expect("bind");
    let mode = std::fs::metadata(&path).expect("the socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    match Server::bind(&path, device()) {
        Err(vhu_transport_mio::ServerError::Bind { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}")
        }
        other => panic!("a live server's socket was taken: {other:?}"),
    }
    assert!(path.exists(), "the live server's socket stays");
    drop(server);
    assert!(!path.exists(), "removed with the server");
    // A socket whose server is gone (one that never held the pid file's lock) is taken over.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("a stale socket"));
    let server = Server::bind(&path, device()).expect("a stale socket is taken over");
    drop(server);
    assert!(!path.exists());
}
