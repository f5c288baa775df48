//! SCM_RIGHTS send and frame reading over real socket pairs with real descriptors.
//!
//! Leak checks use pipes: once every copy of a pipe's write end is closed, its read end reports
//! EOF. That holds whatever other tests running in parallel do with descriptor numbers.

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::event::{eventfd, EventfdFlags};
use rustix::fs::{fstat, memfd_create, MemfdFlags};
use rustix::io::{read, write};
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::pipe::{pipe_with, PipeFlags};
use vhu_transport_std::frame_reader::{FrameReader, ReadAhead};
use vhu_transport_std::scm::{send, RecvOutcome, ScmError, RECV_CONTROL_FDS};
use vhu_transport_std::vhu_core::limits::MAX_FDS_PER_MSG;
use vhu_transport_std::vhu_core::WireError;

fn header(request: u32, flags: u32, size: u32) -> Vec<u8> {
    [request, flags, size].iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// A frame with a valid header (version 1) and the given payload.
fn frame(request: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = header(request, 1, payload.len() as u32);
    out.extend_from_slice(payload);
    out
}

/// A pipe's write end to send, and the read end that reports whether every copy of it is closed.
fn watched() -> (OwnedFd, OwnedFd) {
    let (reader, writer) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).expect("pipe");
    (writer, reader)
}

fn all_writers_closed(reader: &OwnedFd) -> bool {
    matches!(read(reader, &mut [0u8; 1]), Ok(0))
}

fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let (a, b) = (fstat(a).expect("fstat"), fstat(b).expect("fstat"));
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

fn greedy() -> FrameReader {
    FrameReader::new(ReadAhead::Greedy)
}

fn event() -> OwnedFd {
    eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd")
}

/// Sends `bytes` with any number of descriptors, bypassing `send`'s limit.
fn send_raw(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let sent = sendmsg(sock, &[std::io::IoSlice::new(bytes)], &mut control, SendFlags::empty())
        .expect("sendmsg");
    assert_eq!(sent, bytes.len());
}

#[test]
fn frame_with_two_fds_arrives_with_exactly_those_fds() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let memfd = memfd_create("scm-test", MemfdFlags::CLOEXEC).expect("memfd");
    let efd = event();
    let bytes = frame(5, &7u64.to_ne_bytes());
    send(&a, &bytes, &[memfd.as_fd(), efd.as_fd()]).expect("send");

    let mut reader = greedy();
    assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(20));
    assert_eq!(reader.frame(), Some(&bytes[..]));
    let fds = reader.take_fds();
    assert_eq!(fds.len(), 2);
    assert!(same_file(fds[0].as_fd(), memfd.as_fd()));
    assert!(!same_file(fds[1].as_fd(), memfd.as_fd()));
    write(&fds[1], &5u64.to_ne_bytes()).expect("write through the received eventfd");
    let mut counter = [0u8; 8];
    read(&efd, &mut counter).expect("read through the original eventfd");
    assert_eq!(u64::from_ne_bytes(counter), 5);
}

#[test]
fn back_to_back_frames_each_get_their_own_fds() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (memfd, efd) = (memfd_create("one", MemfdFlags::CLOEXEC).expect("memfd"), event());
    let (first, second, third) = (frame(1, b"abcd"), frame(2, &[]), frame(3, &[9; 8]));

    for read_ahead in [ReadAhead::Greedy, ReadAhead::Exact] {
        let (pipe_w, pipe_r) = watched();
        send(&a, &first, &[pipe_w.as_fd()]).expect("send");
        send(&a, &second, &[]).expect("send");
        send(&a, &third, &[efd.as_fd(), memfd.as_fd()]).expect("send");
        drop(pipe_w);

        let mut reader = FrameReader::new(read_ahead);
        assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(16));
        assert_eq!(reader.frame(), Some(&first[..]));
        assert_eq!(reader.fds().len(), 1);
        write(&reader.fds()[0], b"x").expect("write through the received pipe end");
        assert_eq!(read(&pipe_r, &mut [0u8; 1]).expect("read"), 1);

        // The next call clears the finished frame and the descriptors nobody took (closing them).
        assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(12));
        assert_eq!(reader.frame(), Some(&second[..]));
        assert!(reader.fds().is_empty());
        assert!(all_writers_closed(&pipe_r));
        // Greedy: the second and third frames came with one recvmsg.
        assert_eq!(reader.has_buffered(), read_ahead == ReadAhead::Greedy);

        assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(20));
        assert_eq!(reader.frame(), Some(&third[..]));
        let fds = reader.take_fds();
        assert_eq!(fds.len(), 2);
        assert!(same_file(fds[1].as_fd(), memfd.as_fd()));
        assert!(same_file(fds[0].as_fd(), efd.as_fd()));
        assert!(!reader.has_buffered());
    }
}

/// A whole frame read ahead is known as one ([`FrameReader::has_whole_frame`]); part of one is
/// bytes held, not a frame to serve without the socket.
#[test]
fn a_frame_read_ahead_whole_is_told_from_part_of_one() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (first, second, third) = (frame(1, &[1; 8]), frame(2, &[]), frame(3, &[3; 8]));
    let bytes = [&first[..], &second[..], &third[..15]].concat();
    send(&a, &bytes, &[]).expect("send");
    let mut reader = greedy();
    assert!(!reader.has_whole_frame(), "nothing handed out yet");
    assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(20));
    assert!(reader.has_whole_frame(), "the second came whole");
    assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(12));
    assert!(reader.has_buffered() && !reader.has_whole_frame(), "three bytes of the third");
    send(&a, &third[15..], &[]).expect("send");
    assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(20));
    assert_eq!(reader.frame(), Some(&third[..]));
    assert!(!reader.has_whole_frame());
}

#[test]
fn a_burst_read_at_once_gives_the_descriptors_to_the_frame_they_came_with() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let efd = event();
    let frames: Vec<Vec<u8>> = (1..=5).map(|i| frame(i, &[i as u8; 8])).collect();
    for (i, bytes) in frames.iter().enumerate() {
        let fds = if i == 2 { vec![efd.as_fd()] } else { Vec::new() };
        send(&a, bytes, &fds).expect("send");
    }
    let mut reader = greedy();
    for (i, bytes) in frames.iter().enumerate() {
        assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(20));
        assert_eq!(reader.frame(), Some(&bytes[..]));
        let fds = reader.take_fds();
        if i == 2 {
            assert_eq!(fds.len(), 1, "frame {i}");
            assert!(same_file(fds[0].as_fd(), efd.as_fd()));
        } else {
            assert!(fds.is_empty(), "frame {i} got {} descriptors", fds.len());
        }
    }
    // The first recvmsg ended with the chunk that carried the descriptor; the second took the
    // rest.
    assert!(!reader.has_buffered());
    b.set_nonblocking(true).expect("nonblocking");
    assert!(matches!(reader.recv(&b), Err(ScmError::Io(_))));
    assert!(!reader.has_buffered(), "a drained socket leaves nothing to replay");
    let last = frame(6, &[]);
    send(&a, &last, &[]).expect("send");
    assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(12));
    assert_eq!(reader.frame(), Some(&last[..]));
}

#[test]
fn oversize_header_is_refused_before_the_body_is_read() {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let body = [0x5au8; 100];
    let mut bytes = header(5, 1, 100);
    bytes.extend_from_slice(&body);
    a.write_all(&bytes).expect("write");

    let mut reader = FrameReader::with_max_payload(ReadAhead::Exact, 64);
    match reader.recv(&b) {
        Err(ScmError::Wire(WireError::PayloadTooLarge { size: 100, max: 64 })) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(reader.is_idle());
    let mut rest = [0u8; 100];
    b.read_exact(&mut rest).expect("the body is still in the socket");
    assert_eq!(rest, body);
    b.set_nonblocking(true).expect("nonblocking");
    assert_eq!(
        b.read(&mut [0u8; 1]).map_err(|e| e.kind()).expect_err("nothing else"),
        std::io::ErrorKind::WouldBlock
    );
}

#[test]
fn bad_version_is_a_wire_error() {
    let (mut a, b) = UnixStream::pair().expect("socketpair");
    a.write_all(&header(1, 2, 0)).expect("write");
    match greedy().recv(&b) {
        Err(ScmError::Wire(WireError::BadVersion { version: 2, .. })) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn eof_at_a_boundary_is_closed_and_inside_a_frame_is_an_error() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    send(&a, &frame(1, &[]), &[]).expect("send");
    drop(a);
    let mut reader = greedy();
    assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(12));
    assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Closed);

    let (mut a, b) = UnixStream::pair().expect("socketpair");
    a.write_all(&header(1, 1, 8)[..5]).expect("write");
    drop(a);
    match greedy().recv(&b) {
        Err(ScmError::UnexpectedEof { got: 5, wanted: 12 }) => {}
        other => panic!("unexpected {other:?}"),
    }

    let (a, b) = UnixStream::pair().expect("socketpair");
    let (pipe_w, pipe_r) = watched();
    send(&a, &frame(1, &[1; 8])[..15], &[pipe_w.as_fd()]).expect("send");
    drop((a, pipe_w));
    let mut reader = greedy();
    match reader.recv(&b) {
        Err(ScmError::UnexpectedEof { got: 15, wanted: 20 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(reader.is_idle());
    assert!(reader.fds().is_empty());
    assert!(all_writers_closed(&pipe_r));
}

#[test]
fn fds_with_the_payload_chunk_are_refused_and_closed() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let bytes = frame(5, &3u64.to_ne_bytes());
    let (head_w, head_r) = watched();
    let (late_w, late_r) = watched();
    send(&a, &bytes[..12], &[head_w.as_fd()]).expect("send header");
    send(&a, &bytes[12..], &[late_w.as_fd()]).expect("send payload");
    drop((head_w, late_w));

    let mut reader = greedy();
    match reader.recv(&b) {
        Err(ScmError::FdsMidFrame { fds: 1, offset: 12 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(reader.fds().is_empty());
    assert!(reader.is_idle());
    assert!(all_writers_closed(&late_r));
    assert!(all_writers_closed(&head_r), "the header's descriptor is closed too");
}

#[test]
fn fds_in_the_middle_of_a_header_are_refused() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    b.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
    let bytes = frame(1, &[]);
    let (late_w, late_r) = watched();
    send(&a, &bytes[..5], &[]).expect("send");
    let mut reader = greedy();
    // The first five bytes are consumed by a recvmsg of their own before the rest is sent (a
    // single recvmsg would take both chunks and, with them, the descriptors of the second one).
    assert!(matches!(reader.recv(&b), Err(ScmError::Io(_))));
    send(&a, &bytes[5..], &[late_w.as_fd()]).expect("send");
    drop(late_w);
    match reader.recv(&b) {
        Err(ScmError::FdsMidFrame { fds: 1, offset: 5 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(all_writers_closed(&late_r));
}

#[test]
fn descriptors_trickled_inside_an_unfinished_frame_are_refused_at_once() {
    for read_ahead in [ReadAhead::Greedy, ReadAhead::Exact] {
        let (a, b) = UnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).expect("non-blocking");
        b.set_nonblocking(true).expect("non-blocking");
        // A header announcing 4 KiB, then the payload a byte at a time, each byte with a
        // descriptor: the frame never ends, so only an eager check bounds what is held.
        send(&a, &header(1, 1, 4096), &[]).expect("send header");
        let mut reader = FrameReader::new(read_ahead);
        assert!(matches!(reader.recv(&b), Err(ScmError::Io(_))), "{read_ahead:?}");
        let (late_w, late_r) = watched();
        send(&a, &[0], &[late_w.as_fd()]).expect("send a byte");
        drop(late_w);
        // Refused with the first such byte, not kept while the reader waits for the rest.
        match reader.recv(&b) {
            Err(ScmError::FdsMidFrame { fds: 1, offset: 12 }) => {}
            other => panic!("unexpected {other:?} with {read_ahead:?}"),
        }
        assert!(reader.is_idle());
        assert!(all_writers_closed(&late_r), "no copy is held with {read_ahead:?}");
    }
}

#[test]
fn more_than_eight_fds_are_refused_and_closed() {
    for count in [MAX_FDS_PER_MSG + 1, RECV_CONTROL_FDS + 8] {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..count).map(|_| watched()).collect();
        let writers: Vec<BorrowedFd<'_>> = pipes.iter().map(|(w, _)| w.as_fd()).collect();
        send_raw(&a, &frame(1, &[]), &writers);
        drop(writers);
        let readers: Vec<OwnedFd> = pipes.into_iter().map(|(_, r)| r).collect();

        let mut reader = greedy();
        match reader.recv(&b) {
            Err(ScmError::TooManyFds { max: MAX_FDS_PER_MSG, got }) => assert_eq!(got, count),
            Err(ScmError::TruncatedControl { fds_received }) => {
                assert!(count > RECV_CONTROL_FDS);
                assert!((RECV_CONTROL_FDS..count).contains(&fds_received));
            }
            other => panic!("unexpected {other:?} for {count} fds"),
        }
        assert!(reader.fds().is_empty());
        assert!(reader.is_idle());
        for (i, reader) in readers.iter().enumerate() {
            assert!(all_writers_closed(reader), "descriptor {i} of {count} leaked");
        }
    }
}

#[test]
fn exactly_eight_fds_are_accepted() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let events: Vec<OwnedFd> = (0..MAX_FDS_PER_MSG).map(|_| event()).collect();
    let borrowed: Vec<BorrowedFd<'_>> = events.iter().map(AsFd::as_fd).collect();
    send(&a, &frame(1, &[]), &borrowed).expect("send");
    let mut reader = greedy();
    assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(12));
    let fds = reader.take_fds();
    assert_eq!(fds.len(), MAX_FDS_PER_MSG);
    assert!(fds.iter().zip(&events).all(|(got, sent)| same_file(got.as_fd(), sent.as_fd())));
}

#[test]
fn send_refuses_what_it_cannot_carry() {
    let (a, _b) = UnixStream::pair().expect("socketpair");
    let events: Vec<OwnedFd> = (0..=MAX_FDS_PER_MSG).map(|_| event()).collect();
    let borrowed: Vec<BorrowedFd<'_>> = events.iter().map(AsFd::as_fd).collect();
    match send(&a, b"x", &borrowed) {
        Err(ScmError::TooManyFds { max: MAX_FDS_PER_MSG, got }) => assert_eq!(got, 9),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(send(&a, &[], &borrowed[..1]), Err(ScmError::FdsWithoutBytes { fds: 1 })));
    send(&a, &[], &[]).expect("nothing to send is fine");
}

#[test]
fn send_to_a_closed_peer_is_an_error_not_a_signal() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    drop(b);
    assert!(matches!(send(&a, &frame(1, &[]), &[]), Err(ScmError::Io(_))));
}

#[test]
fn a_timed_out_receive_resumes_the_partial_frame() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    b.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
    let efd = event();
    let bytes = frame(4, &[1, 2, 3, 4]);
    send(&a, &bytes[..3], &[efd.as_fd()]).expect("send");

    let mut reader = greedy();
    assert!(matches!(reader.recv(&b), Err(ScmError::Io(_))));
    assert!(!reader.is_idle());
    // The unfinished frame waits for the socket: nothing is there to read without it.
    assert!(!reader.has_buffered());
    send(&a, &bytes[3..14], &[]).expect("send");
    assert!(matches!(reader.recv(&b), Err(ScmError::Io(_))));
    send(&a, &bytes[14..], &[]).expect("send");
    assert_eq!(reader.recv(&b).expect("recv"), RecvOutcome::Frame(16));
    assert_eq!(reader.frame(), Some(&bytes[..]));
    let fds = reader.take_fds();
    assert_eq!(fds.len(), 1, "the header's descriptor was kept across the retries");
    assert!(same_file(fds[0].as_fd(), efd.as_fd()));
}

#[test]
fn a_large_send_completes_and_attaches_fds_once() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let payload: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected = payload.clone();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut fds_seen = 0;
        let mut buf = vec![0u8; 64 << 10];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        loop {
            let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
            let msg = rustix::net::recvmsg(
                &b,
                &mut [std::io::IoSliceMut::new(&mut buf)],
                &mut control,
                rustix::net::RecvFlags::CMSG_CLOEXEC,
            )
            .expect("recvmsg");
            for message in control.drain() {
                if let rustix::net::RecvAncillaryMessage::ScmRights(fds) = message {
                    fds_seen += fds.count();
                }
            }
            if msg.bytes == 0 {
                return (got, fds_seen);
            }
            got.extend_from_slice(&buf[..msg.bytes]);
        }
    });
    let efd = event();
    send(&a, &payload, &[efd.as_fd()]).expect("send");
    drop(a);
    let (got, fds_seen) = reader.join().expect("reader");
    assert_eq!(fds_seen, 1);
    assert!(got == expected, "bytes arrive complete and in order");
}

#[test]
fn bursts_and_frames_larger_than_the_buffer_arrive_whole_and_in_order() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    // Frames of every size around the reader's starting buffer and its growth, the largest
    // payload included, sent back to back; every seventh carries a descriptor.
    let sizes: Vec<usize> =
        (0..60).map(|i| (i * 331) % 4097).chain([4096, 0, 1012, 1013]).collect();
    let frames: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| frame(i as u32, &(0..n).map(|j| (i + j) as u8).collect::<Vec<u8>>()))
        .collect();
    for read_ahead in [ReadAhead::Greedy, ReadAhead::Exact] {
        let (writer, reader_end) = (a.try_clone().expect("clone"), &b);
        let to_send = frames.clone();
        let sender = std::thread::spawn(move || {
            let efd = event();
            for (i, bytes) in to_send.iter().enumerate() {
                let fds: &[BorrowedFd<'_>] = if i % 7 == 0 { &[efd.as_fd()] } else { &[] };
                send(&writer, bytes, fds).expect("send");
            }
        });
        let mut reader = FrameReader::new(read_ahead);
        for (i, expected) in frames.iter().enumerate() {
            assert_eq!(
                reader.recv(reader_end).expect("recv"),
                RecvOutcome::Frame(expected.len()),
                "frame {i} ({read_ahead:?})"
            );
            assert_eq!(reader.frame(), Some(&expected[..]), "frame {i} ({read_ahead:?})");
            assert_eq!(reader.fds().len(), usize::from(i % 7 == 0), "frame {i} ({read_ahead:?})");
        }
        sender.join().expect("sender");
        assert!(reader.is_idle());
    }
}
