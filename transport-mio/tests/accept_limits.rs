//! A server out of descriptors: `accept` failing is a refusal, not the end of the server, and
//! the front-end left waiting is accepted once a connection ends and frees what it held. Its
//! own test binary: it lowers the whole process's descriptor limit.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{socket_path, Record, TestDevice};
use mio::{Events, Poll, Token};
use vhu_transport_mio::{ConnectionError, Handled, Server, Tokens};

/// Polls for up to `limit`, handing every event to the server, until `done` says so; returns
/// what the server did.
fn serve_until<D: vhu_transport_std::Device, F: FnMut() -> D>(
    server: &mut Server<D, F>,
    poll: &mut Poll,
    limit: Duration,
    mut done: impl FnMut(&[Handled]) -> bool,
) -> Vec<Handled> {
    let mut events = Events::with_capacity(16);
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    while !done(&seen) && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(20))).expect("poll");
        for event in &events {
            seen.push(server.handle_event(event).expect("the server goes on"));
        }
    }
    seen
}

fn accepted(seen: &[Handled]) -> usize {
    seen.iter()
        .map(|h| match h {
            Handled::Accepted { accepted, .. } => accepted.len(),
            _ => 0,
        })
        .sum()
}

/// The lowest descriptor number not in use: with the open-file limit there, nothing more opens.
fn lowest_free_fd() -> u64 {
    let probe = rustix::io::dup(rustix::stdio::stderr()).expect("dup");
    std::os::fd::AsRawFd::as_raw_fd(&probe) as u64
}

#[test]
fn running_out_of_descriptors_pauses_accepting_until_a_connection_ends() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let path = socket_path("emfile");
    let record = Arc::new(Mutex::new(Record::default()));
    let mut server =
        Server::bind(&path, move || TestDevice::new(Arc::clone(&record))).expect("bind");
    let mut poll = Poll::new().expect("poll");
    let tokens = Tokens { listener: Token(100), connections: 0..4 };
    server.register(poll.registry(), tokens).expect("register");
    let wait = Duration::from_secs(5);

    let first = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    let seen = serve_until(&mut server, &mut poll, wait, |seen| accepted(seen) == 1);
    assert_eq!(accepted(&seen), 1, "{seen:?}");

    // A second front-end connects while the process cannot open one more descriptor.
    let second = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    let normal = getrlimit(Resource::Nofile);
    let full = Rlimit { current: Some(lowest_free_fd()), maximum: normal.maximum };
    setrlimit(Resource::Nofile, full).expect("lower the limit");
    let refused = |seen: &[Handled]| {
        seen.iter().any(|h| {
            matches!(h, Handled::Accepted { refused, .. }
                if refused.iter().any(|e| matches!(e, ConnectionError::Accept(_))))
        })
    };
    let seen = serve_until(&mut server, &mut poll, wait, refused);
    setrlimit(Resource::Nofile, normal).expect("restore the limit");
    assert!(refused(&seen), "{seen:?}");
    assert_eq!(server.connections(), 1);
    // Nothing tries again on its own: retrying at once would only spin.
    let seen = serve_until(&mut server, &mut poll, Duration::from_millis(200), |_| false);
    assert_eq!(accepted(&seen), 0, "{seen:?}");

    // The first connection ends: the waiting one is accepted.
    drop(first);
    let seen = serve_until(&mut server, &mut poll, wait, |seen| accepted(seen) == 1);
    assert_eq!(accepted(&seen), 1, "{seen:?}");
    assert_eq!(server.connections(), 1);
    drop(second);
}
