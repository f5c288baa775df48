//! Shared pieces of the mio driver tests: a device that records what it is asked to do, a poll
//! loop on a thread serving it, a raw client, and bounded waits.
#![allow(dead_code, unreachable_pub)]

use std::io::{ErrorKind, IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use vhu_transport_mio::vhu_core::backend::BackendSpec;
use vhu_transport_mio::vhu_core::message::VringBase;
use vhu_transport_mio::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_mio::vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestAddressSpace};
use vhu_transport_mio::vhu_transport_std::{
    Device, DeviceError, Queue, QueueContext, QueueHandler, Workers,
};
use vhu_transport_mio::{Handled, Server, Tokens};

/// Every blocking read or wait in these tests gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The serving loop stops by itself after this long, whatever the test does.
pub const LOOP_LIMIT: Duration = Duration::from_secs(60);

pub const QUEUES: usize = 2;
pub const CONFIG_SIZE: usize = 8;

pub const VERSION: u32 = 0x1;
pub const REPLY: u32 = 0x4;
pub const NEED_REPLY: u32 = 0x8;
pub const GET_FEATURES: u32 = 1;
pub const SET_OWNER: u32 = 3;
pub const SET_VRING_CALL: u32 = 13;
pub const GET_PROTOCOL_FEATURES: u32 = 15;
pub const SET_PROTOCOL_FEATURES: u32 = 16;
pub const GET_QUEUE_NUM: u32 = 17;
/// VHOST_USER_PROTOCOL_F_REPLY_ACK
pub const REPLY_ACK: u64 = 1 << 3;

const WAKE: Token = Token(0);
const LISTENER: Token = Token(1);
const FIRST_CONNECTION: usize = 10;

/// What the devices of one server were asked to do, for the tests to check.
#[derive(Debug, Default)]
pub struct Record {
    pub devices: usize,
    pub starts: Vec<u8>,
    pub stops: Vec<(u8, u16)>,
    pub resets: usize,
    pub acked: Option<VirtioFeatures>,
}

/// Moves its next-available index to the ring's `avail.idx` and signals the call eventfd when
/// it moved, as if it had consumed every available buffer.
#[derive(Debug)]
pub struct Consumer {
    next_avail: u16,
}

impl QueueHandler for Consumer {
    fn process(&mut self, queue: &QueueContext) {
        let mut idx = [0u8; 2];
        let memory = queue.memory.memory();
        if memory.read_slice(&mut idx, GuestAddress(queue.config.available + 2)).is_err() {
            let _ = queue.err.notify();
            return;
        }
        let idx = u16::from_le_bytes(idx);
        if idx != self.next_avail {
            self.next_avail = idx;
            let _ = queue.call.notify();
        }
    }

    fn base(&self) -> VringBase {
        VringBase::split(self.next_avail)
    }
}

/// A device-independent test device: two queues run by [`Consumer`]s and a fixed config space.
#[derive(Debug)]
pub struct TestDevice {
    record: Arc<Mutex<Record>>,
    workers: Workers<Consumer>,
}

impl Device for TestDevice {
    fn spec(&self) -> BackendSpec {
        let mut spec = BackendSpec::new(QUEUES, 256);
        spec.protocol_features = ProtocolFeatures::MQ
            | ProtocolFeatures::REPLY_ACK
            | ProtocolFeatures::CONFIG
            | ProtocolFeatures::CONFIGURE_MEM_SLOTS
            | ProtocolFeatures::RESET_DEVICE
            | ProtocolFeatures::STATUS;
        spec.config_size = CONFIG_SIZE as u32;
        spec
    }

    fn start_queue(&mut self, queue: Queue) -> Result<(), DeviceError> {
        let next_avail = queue.config.base.as_split().unwrap_or(0);
        self.record.lock().unwrap().starts.push(queue.index.0);
        self.workers.start(queue, Consumer { next_avail })
    }

    fn stop_queue(&mut self, index: VringIndex, _drain: bool) -> VringBase {
        let base = self.workers.stop(index).map_or(VringBase(0), |h| h.base());
        self.record.lock().unwrap().stops.push((index.0, base.as_split().unwrap_or(0)));
        base
    }

    fn set_queue_enabled(&mut self, index: VringIndex, enabled: bool) {
        self.workers.set_enabled(index, enabled);
    }

    fn replace_kick(&mut self, index: VringIndex, kick: Option<OwnedFd>) {
        self.workers.replace_kick(index, kick);
    }

    fn reset(&mut self) {
        assert!(self.workers.stop_all().is_empty(), "reset with queues running");
        let mut record = self.record.lock().unwrap();
        record.resets += 1;
        record.acked = None;
    }

    fn acked_features(&mut self, features: VirtioFeatures) {
        self.record.lock().unwrap().acked = Some(features);
    }

    fn read_config(&self, offset: u32, data: &mut [u8]) -> Result<(), DeviceError> {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = 0xc0 + offset as u8 + i as u8;
        }
        Ok(())
    }
}

impl TestDevice {
    pub fn new(record: Arc<Mutex<Record>>) -> Self {
        record.lock().unwrap().devices += 1;
        Self { record, workers: Workers::new() }
    }
}

pub fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("vhu-mio-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A server on a poll loop thread; each ended or refused connection is reported on `ended`.
pub struct Served {
    pub path: PathBuf,
    pub record: Arc<Mutex<Record>>,
    pub ended: Receiver<String>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Served {
    /// Waits until `n` more connections have ended and returns how each ended.
    pub fn wait_ended(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| self.ended.recv_timeout(TIMEOUT).unwrap_or_else(|e| panic!("end {i}: {e}")))
            .collect()
    }

    pub fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.path).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(TIMEOUT)).expect("write timeout");
        stream
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts a server with `slots` connection tokens at a fresh path; the loop also watches a
/// waker of its own (a user source next to the server's), which stops it.
pub fn serve(name: &str, slots: usize) -> Served {
    let record = Arc::new(Mutex::new(Record::default()));
    let devices = Arc::clone(&record);
    let mut served = serve_with(name, slots, move || TestDevice::new(Arc::clone(&devices)));
    served.record = record;
    served
}

/// [`serve`] with devices from `new_device` (the record then stays empty).
pub fn serve_with<D: Device + Send + 'static>(
    name: &str,
    slots: usize,
    new_device: impl FnMut() -> D + Send + 'static,
) -> Served {
    serve_configured(name, slots, new_device, |_| {})
}

/// [`serve_with`], the server set up by `configure` before it starts.
pub fn serve_configured<D: Device + Send + 'static, F: FnMut() -> D + Send + 'static>(
    name: &str,
    slots: usize,
    new_device: F,
    configure: impl FnOnce(&mut Server<D, F>),
) -> Served {
    let path = socket_path(name);
    let record = Arc::new(Mutex::new(Record::default()));
    let mut server = Server::bind(&path, new_device).expect("bind");
    configure(&mut server);
    let mut poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).expect("waker"));
    let tokens =
        Tokens { listener: LISTENER, connections: FIRST_CONNECTION..FIRST_CONNECTION + slots };
    server.register(poll.registry(), tokens).expect("register");
    let (tx, ended) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + LOOP_LIMIT;
        let mut events = Events::with_capacity(16);
        while Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100))).expect("poll");
            for event in &events {
                match server.handle_event(event).expect("server") {
                    Handled::NotOurs(WAKE) => return,
                    Handled::Ended { how, .. } => drop(tx.send(format!("{how:?}"))),
                    Handled::Accepted { refused, .. } => {
                        for error in refused {
                            let _ = tx.send(format!("refused: {error}"));
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    Served { path, record, ended, waker, thread: Some(thread) }
}

pub fn header(request: u32, flags: u32, size: u32) -> Vec<u8> {
    [request, flags, size].iter().flat_map(|w| w.to_ne_bytes()).collect()
}

pub fn frame(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = header(request, flags, payload.len() as u32);
    out.extend_from_slice(payload);
    out
}

/// Sends `bytes` with `fds` attached, in one `sendmsg`.
pub fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let sent =
        sendmsg(sock, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL).expect("sendmsg");
    assert_eq!(sent, bytes.len());
}

/// One reply: (code, flags, payload); `None` if the server closed the connection.
pub fn read_reply(sock: &mut UnixStream) -> Option<(u32, u32, Vec<u8>)> {
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

/// A reply carrying one u64 for `code`.
pub fn expect_u64(sock: &mut UnixStream, code: u32) -> u64 {
    let (got, flags, payload) = read_reply(sock).expect("a reply, not a close");
    assert_eq!((got, flags, payload.len()), (code, VERSION | REPLY, 8), "reply to {code}");
    u64::from_ne_bytes(payload.try_into().unwrap())
}

/// GET_FEATURES answers with VERSION_1 and PROTOCOL_FEATURES offered.
pub fn assert_serves(sock: &mut UnixStream) {
    use std::io::Write;
    sock.write_all(&frame(GET_FEATURES, VERSION, &[])).expect("write");
    let features = expect_u64(sock, GET_FEATURES);
    assert_eq!(features & (1 << 32 | 1 << 30), 1 << 32 | 1 << 30, "features {features:#x}");
}

pub fn assert_closed(sock: &mut UnixStream) {
    assert_eq!(read_reply(sock), None, "the server should have closed the connection");
}

pub fn memfd(len: u64) -> OwnedFd {
    let fd = memfd_create("guest-ram", MemfdFlags::CLOEXEC).expect("memfd");
    ftruncate(&fd, len).expect("ftruncate");
    fd
}

/// Bytes `sock` sent that its peer has not read yet (SIOCOUTQ: a unix stream socket counts a
/// message it sent until the reader has taken all of it).
pub fn unread(sock: &UnixStream) -> libc::c_int {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one c_int through the pointer, which names `queued`.
    let done = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    assert_eq!(done, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    queued
}

/// EOF on a non-blocking pipe's read end: no write end is open anywhere.
pub fn all_writers_closed(reader: &OwnedFd) -> bool {
    matches!(rustix::io::read(reader, &mut [0u8; 1]), Ok(0))
}

/// Polls `condition` every 5 ms for at most [`TIMEOUT`].
pub fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..(TIMEOUT.as_millis() / 5) {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}
