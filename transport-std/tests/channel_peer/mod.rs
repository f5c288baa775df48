//! A front-end written frame by frame, as QEMU behaves on the back-end channel (it answers when
//! it gets to it, and meanwhile blocks on its own requests), and a device that sends back-end
//! requests on demand and records their results. Shared by the blocking driver's and the mio
//! server's channel tests, which run the same scenarios.
#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::event::{eventfd, EventfdFlags};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use vhu_transport_std::vhu_core::backend::BackendSpec;
use vhu_transport_std::vhu_core::message::{
    MemoryTable, Uuid, VringAddr, VringAddrFlags, VringBase, VringFd,
};
use vhu_transport_std::vhu_core::wire::{self, U64};
use vhu_transport_std::vhu_core::{
    BackendCode, FdToken, FrontendCode, ProtocolFeatures, Request, VirtioFeatures, VringIndex,
};
use vhu_transport_std::vm_memory::{GuestAddressSpace, GuestMemoryBackend};
use vhu_transport_std::{
    send, BackendRequests, Device, DeviceError, DeviceRequest, FrameReader, Queue, QueueStopped,
    ReadAhead, RecvOutcome, RequestError, RequestResult, RequestTicket,
};

mod state;
pub use state::{a_state_fd_that_is_not_a_pipe_is_refused, device_state_moves_through_the_pipe};

/// Every wait in these scenarios gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(5);

const RAM: u64 = 0x10_0000;
const UADDR: u64 = 0x7f00_0000_0000;

/// How a request ended, as the device saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Refused(String),
    Sent,
    Acked(u64),
    Object { status: u64, fd: bool },
    Lost,
}

/// What the device shares with the test.
#[derive(Debug, Default)]
pub struct Shared {
    pub requests: Option<BackendRequests>,
    pub results: Vec<(RequestTicket, Seen)>,
    /// The state the device saves, and the last state it loaded.
    pub state: Vec<u8>,
    pub loaded: Option<Vec<u8>>,
    /// A stop the device has not reported yet (with `slow_stop`).
    pub pending_stop: Option<QueueStopped>,
    /// Times the device was reset.
    pub resets: usize,
}

/// One queue that does nothing; back-end requests are pushed by the test through `shared`.
/// `offer` replaces the spec's features when set.
#[derive(Debug)]
pub struct ChannelDevice {
    pub shared: Arc<Mutex<Shared>>,
    pub offer: Option<(VirtioFeatures, ProtocolFeatures)>,
    /// How many times more the queue refuses to start.
    pub refuse_starts: u32,
    /// A stop is reported only when the test says so (`Shared::pending_stop`).
    pub slow_stop: bool,
    /// While a queue runs, a thread keeps looking at guest memory as a worker would and records
    /// the fewest regions it ever saw here.
    pub fewest_regions: Option<Arc<AtomicUsize>>,
    watcher: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl ChannelDevice {
    pub fn new(shared: Arc<Mutex<Shared>>) -> Self {
        Self {
            shared,
            offer: None,
            refuse_starts: 0,
            slow_stop: false,
            fewest_regions: None,
            watcher: None,
        }
    }

    fn stop_watching(&mut self) {
        if let Some((stop, thread)) = self.watcher.take() {
            stop.store(true, Ordering::Relaxed);
            thread.join().expect("the watcher does not panic");
        }
    }
}

impl Device for ChannelDevice {
    fn spec(&self) -> BackendSpec {
        let mut spec = BackendSpec::new(1, 256);
        spec.protocol_features = protocol();
        if let Some((features, protocol)) = self.offer {
            spec.features = features;
            spec.protocol_features = protocol;
        }
        spec.config_size = 8;
        spec
    }

    fn connected(&mut self, requests: BackendRequests) {
        self.shared.lock().unwrap().requests = Some(requests);
    }

    fn backend_result(&mut self, ticket: RequestTicket, result: RequestResult) {
        let seen = match result {
            RequestResult::Refused(error) => Seen::Refused(error.to_string()),
            RequestResult::Sent => Seen::Sent,
            RequestResult::Acked(status) => Seen::Acked(status),
            RequestResult::SharedObject { status, fd } => Seen::Object { status, fd: fd.is_some() },
            RequestResult::Lost => Seen::Lost,
            other => panic!("unknown result {other:?}"),
        };
        self.shared.lock().unwrap().results.push((ticket, seen));
    }

    fn start_queue(&mut self, queue: Queue) -> Result<(), DeviceError> {
        if self.refuse_starts > 0 {
            self.refuse_starts -= 1;
            return Err(DeviceError::Queue { index: queue.index.0, reason: "refused by the test" });
        }
        if let Some(fewest) = self.fewest_regions.clone() {
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = Arc::clone(&stop);
            let memory = queue.memory;
            let thread = std::thread::spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    fewest.fetch_min(memory.memory().num_regions(), Ordering::Relaxed);
                }
            });
            self.watcher = Some((stop, thread));
        }
        Ok(())
    }

    fn stop_queue(&mut self, _index: VringIndex, _drain: bool) -> VringBase {
        self.stop_watching();
        VringBase::split(0)
    }

    fn stop_queue_then(&mut self, index: VringIndex, drain: bool, done: QueueStopped) {
        if self.slow_stop {
            self.shared.lock().unwrap().pending_stop = Some(done);
        } else {
            done.stopped(self.stop_queue(index, drain));
        }
    }

    fn set_queue_enabled(&mut self, _index: VringIndex, _enabled: bool) {}

    fn replace_kick(&mut self, _index: VringIndex, _kick: Option<OwnedFd>) {}

    fn reset(&mut self) {
        self.stop_watching();
        self.shared.lock().unwrap().resets += 1;
    }

    fn save_state(&mut self, out: &mut dyn std::io::Write) -> Result<(), DeviceError> {
        let state = self.shared.lock().unwrap().state.clone();
        out.write_all(&state)?;
        Ok(())
    }

    fn load_state(&mut self, input: &mut dyn std::io::Read) -> Result<(), DeviceError> {
        let mut state = Vec::new();
        input.read_to_end(&mut state)?;
        self.shared.lock().unwrap().loaded = Some(state);
        Ok(())
    }
}

fn protocol() -> ProtocolFeatures {
    ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::BACKEND_REQ
        | ProtocolFeatures::BACKEND_SEND_FD
        | ProtocolFeatures::CONFIG
        | ProtocolFeatures::SHARED_OBJECT
        | ProtocolFeatures::DEVICE_STATE
        | ProtocolFeatures::RESET_DEVICE
}

/// The front-end: the main socket and its end of the back-end channel.
pub struct Frontend {
    pub main: UnixStream,
    pub channel: UnixStream,
    _memory: OwnedFd,
    _kick: OwnedFd,
}

/// One frame read from a socket: code, flags, payload and descriptors.
pub type Frame = (u32, u32, Vec<u8>, Vec<OwnedFd>);

fn read_frame(socket: &UnixStream, what: &str) -> Frame {
    // Exact: nothing is read beyond this frame, so a fresh reader per frame loses nothing.
    let mut reader = FrameReader::new(ReadAhead::Exact);
    let outcome = reader.recv(socket);
    match outcome.unwrap_or_else(|e| panic!("{what} within the timeout: {e}")) {
        RecvOutcome::Frame(_) => {}
        RecvOutcome::Closed => panic!("the peer closed the socket"),
    }
    let fds = reader.take_fds().into_iter().collect();
    let frame = reader.frame().expect("a complete frame");
    let word = |i: usize| u32::from_ne_bytes(frame[i * 4..i * 4 + 4].try_into().unwrap());
    (word(0), word(1), frame[12..].to_vec(), fds)
}

fn u64_of(payload: &[u8]) -> u64 {
    u64::from_ne_bytes(payload[..8].try_into().expect("a u64 payload"))
}

/// Sends `request` with NEED_REPLY and its descriptors on `main`, without waiting.
pub fn post(main: &UnixStream, request: Request<'_>, fds: &[BorrowedFd<'_>]) {
    let mut buf = vec![0u8; 4096];
    let len = request.encode_into(true, &mut buf).expect("request encodes");
    send(main, &buf[..len], fds).expect("send a request");
}

/// Sends `request` with NEED_REPLY and its descriptors on `main`; returns the reply's `u64`.
pub fn call(main: &UnixStream, request: Request<'_>, fds: &[BorrowedFd<'_>]) -> u64 {
    post(main, request, fds);
    answer_to(main, request)
}

/// Reads the reply to `request` on `main`; its `u64`.
pub fn answer_to(main: &UnixStream, request: Request<'_>) -> u64 {
    let what = format!("the reply to {:?}", request.code());
    let (code, _, payload, _) = read_frame(main, &what);
    assert_eq!(code, request.code().as_u32(), "the reply answers the request");
    u64_of(&payload)
}

impl Frontend {
    /// Sends `request` with NEED_REPLY and its descriptors; returns the reply's `u64`.
    pub fn call(&self, request: Request<'_>, fds: &[BorrowedFd<'_>]) -> u64 {
        call(&self.main, request, fds)
    }

    /// Negotiates, hands over the channel and memory, and starts ring 0, so the device may send
    /// back-end requests (a suspended device may not).
    pub fn bring_up(main: UnixStream) -> Self {
        let (fe, started) = Self::bring_up_status(main);
        assert_eq!(started, 0, "the ring starts");
        fe
    }

    /// [`Frontend::bring_up`], returning the status of the SET_VRING_KICK that starts ring 0.
    pub fn bring_up_status(main: UnixStream) -> (Self, u64) {
        let (fe, started, _) = Self::bring_up_sharing(main);
        (fe, started)
    }

    /// [`Frontend::bring_up_status`], and a copy of the channel's end the back-end got: the
    /// open file both share.
    pub fn bring_up_sharing(main: UnixStream) -> (Self, u64, UnixStream) {
        main.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (channel, theirs) = UnixStream::pair().expect("socketpair");
        channel.set_read_timeout(Some(TIMEOUT)).unwrap();
        let memory = memfd_create("ram", MemfdFlags::CLOEXEC).expect("memfd");
        ftruncate(&memory, RAM).expect("size");
        let kick = eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd");
        let fe = Self { main, channel, _memory: memory, _kick: kick };
        let features = fe.call(Request::GetFeatures, &[]);
        assert_ne!(features & VirtioFeatures::PROTOCOL_FEATURES.bits(), 0);
        fe.call(Request::GetProtocolFeatures, &[]);
        assert_eq!(fe.call(Request::SetProtocolFeatures(protocol()), &[]), 0);
        assert_eq!(fe.call(Request::SetOwner, &[]), 0);
        let acked = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
        assert_eq!(fe.call(Request::SetFeatures(acked), &[]), 0);
        assert_eq!(fe.call(Request::SetBackendReqFd(FdToken(0)), &[theirs.as_fd()]), 0);
        assert_eq!(fe.set_mem_table(), 0);
        let index = VringIndex(0);
        assert_eq!(fe.call(Request::SetVringNum { index, num: 256 }, &[]), 0);
        let addr = VringAddr {
            index,
            flags: VringAddrFlags::empty(),
            descriptor: UADDR,
            available: UADDR + 0x1000,
            used: UADDR + 0x2000,
            log: 0,
        };
        assert_eq!(fe.call(Request::SetVringAddr(addr), &[]), 0);
        assert_eq!(fe.call(Request::SetVringBase { index, base: VringBase::split(0) }, &[]), 0);
        let kick = Request::SetVringKick(VringFd { index, fd: Some(FdToken(0)) });
        let started = fe.call(kick, &[fe._kick.as_fd()]);
        (fe, started, theirs)
    }

    /// SET_VRING_KICK for ring 0 again, with a new eventfd; its status.
    pub fn kick_again(&self) -> u64 {
        let kick = eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd");
        let request = Request::SetVringKick(VringFd { index: VringIndex(0), fd: Some(FdToken(0)) });
        self.call(request, &[kick.as_fd()])
    }

    /// SET_MEM_TABLE with the one region of guest memory; its status.
    pub fn set_mem_table(&self) -> u64 {
        let regions = [wire::MemoryRegion {
            guest_address: U64::new(0),
            size: U64::new(RAM),
            user_address: U64::new(UADDR),
            mmap_offset: U64::new(0),
        }];
        let table =
            Request::SetMemTable { table: MemoryTable::Standard(&regions), fds: &[FdToken(0)] };
        self.call(table, &[self._memory.as_fd()])
    }

    /// Reads the next back-end request on the channel.
    pub fn next_backend_request(&self) -> Frame {
        read_frame(&self.channel, "a back-end request")
    }

    /// Answers a back-end request with `status`, and `fd` where the answer carries one.
    pub fn answer(&self, code: BackendCode, status: u64, fd: Option<BorrowedFd<'_>>) {
        let mut bytes: Vec<u8> =
            [code.as_u32(), 0x1 | 0x4, 8].iter().flat_map(|w| w.to_ne_bytes()).collect();
        bytes.extend_from_slice(&status.to_ne_bytes());
        send(&self.channel, &bytes, fd.as_slice()).expect("answer on the channel");
    }
}

/// A front-end that kept a copy of the channel's end it sent clears O_NONBLOCK on it (the flag
/// is the open file's, shared with the back-end's copy), then sends half an answer: the
/// back-end reads what came without waiting for the rest, and goes on serving the main socket.
pub fn a_channel_made_blocking_again_holds_nothing(main: UnixStream) -> Frontend {
    let (fe, started, theirs) = Frontend::bring_up_sharing(main);
    assert_eq!(started, 0);
    rustix::fs::fcntl_setfl(&theirs, rustix::fs::OFlags::empty()).expect("F_SETFL");
    let mut half: Vec<u8> = [BackendCode::ConfigChangeMsg.as_u32(), 0x1 | 0x4, 8]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    half.extend_from_slice(&[0; 4]);
    send(&fe.channel, &half, &[]).expect("half an answer");
    for _ in 0..3 {
        assert_ne!(fe.call(Request::GetFeatures, &[]), 0, "the main socket is served");
    }
    drop(theirs);
    fe
}

/// The device's results so far, waiting until there are `n`.
pub fn results(shared: &Arc<Mutex<Shared>>, n: usize) -> Vec<(RequestTicket, Seen)> {
    for _ in 0..(TIMEOUT.as_millis() / 5) {
        if shared.lock().unwrap().results.len() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    shared.lock().unwrap().results.clone()
}

fn push(shared: &Arc<Mutex<Shared>>, request: DeviceRequest) -> RequestTicket {
    let requests = shared.lock().unwrap().requests.clone().expect("the device is connected");
    requests.push(request).expect("queued")
}

/// QEMU answers the channel only when it gets to it: while a back-end request waits for its
/// answer, the front-end's own requests on the main socket are still served.
pub fn unanswered_request_does_not_hold_up_the_main_socket(
    fe: &Frontend,
    shared: &Arc<Mutex<Shared>>,
) {
    let ticket = push(shared, DeviceRequest::ConfigChange);
    let (code, flags, _, _) = fe.next_backend_request();
    assert_eq!(code, BackendCode::ConfigChangeMsg.as_u32());
    assert_ne!(flags & 0x8, 0, "NEED_REPLY is set with REPLY_ACK");
    // Not answered yet: the main socket goes on.
    for _ in 0..3 {
        assert_ne!(fe.call(Request::GetFeatures, &[]), 0);
        assert_eq!(fe.call(Request::SetVringEnable { index: VringIndex(0), enable: true }, &[]), 0);
    }
    assert!(shared.lock().unwrap().results.is_empty(), "no result before the answer");
    fe.answer(BackendCode::ConfigChangeMsg, 0, None);
    assert_eq!(results(shared, 1), [(ticket, Seen::Acked(0))]);
}

/// Each request ends in its own typed result: refusals, failures and a descriptor that comes
/// back with a shared-object lookup.
pub fn every_request_gets_its_result(fe: &Frontend, shared: &Arc<Mutex<Shared>>) {
    let refused = push(shared, DeviceRequest::VringCall(VringIndex(0)));
    let add = push(shared, DeviceRequest::SharedObjectAdd(Uuid([1; 16])));
    let lookup = push(shared, DeviceRequest::SharedObjectLookup(Uuid([1; 16])));
    let (code, ..) = fe.next_backend_request();
    assert_eq!(code, BackendCode::SharedObjectAdd.as_u32());
    let (code, ..) = fe.next_backend_request();
    assert_eq!(code, BackendCode::SharedObjectLookup.as_u32());
    fe.answer(BackendCode::SharedObjectAdd, 17, None);
    let object = memfd_create("object", MemfdFlags::CLOEXEC).expect("memfd");
    fe.answer(BackendCode::SharedObjectLookup, 0, Some(object.as_fd()));
    let got = results(shared, 3);
    assert_eq!(got.len(), 3, "{got:?}");
    let find = |ticket| got.iter().find(|(t, _)| *t == ticket).map(|(_, s)| s.clone());
    assert!(
        matches!(find(refused), Some(Seen::Refused(why)) if why.contains("INBAND_NOTIFICATIONS")),
        "{got:?}"
    );
    assert_eq!(find(add), Some(Seen::Acked(17)));
    assert_eq!(find(lookup), Some(Seen::Object { status: 0, fd: true }));
}

/// A channel the front-end closes loses what was outstanding, refuses what comes later, and
/// leaves the main socket served.
/// Everything this device can offer: every feature core supports (less the contradictory
/// PAGEFAULT, and SHMEM: it has no shared-memory regions), and the virtio features that need
/// the transport.
pub fn everything() -> (VirtioFeatures, ProtocolFeatures) {
    use vhu_transport_std::vhu_core::backend::SUPPORTED_PROTOCOL_FEATURES;
    let features = VirtioFeatures::VERSION_1
        | VirtioFeatures::LOG_ALL
        | VirtioFeatures::ACCESS_PLATFORM
        | VirtioFeatures::RING_EVENT_IDX;
    (features, SUPPORTED_PROTOCOL_FEATURES - ProtocolFeatures::PAGEFAULT - ProtocolFeatures::SHMEM)
}

/// What a front-end is offered on `main`: (virtio features, protocol features).
pub fn offered(main: &UnixStream) -> (VirtioFeatures, ProtocolFeatures) {
    main.set_read_timeout(Some(TIMEOUT)).unwrap();
    let features = VirtioFeatures::from_bits_retain(call(main, Request::GetFeatures, &[]));
    let protocol =
        ProtocolFeatures::from_bits_retain(call(main, Request::GetProtocolFeatures, &[]));
    (features, protocol)
}

pub fn a_closed_channel_loses_outstanding_requests(fe: Frontend, shared: &Arc<Mutex<Shared>>) {
    let outstanding = push(shared, DeviceRequest::ConfigChange);
    let (code, ..) = fe.next_backend_request();
    assert_eq!(code, BackendCode::ConfigChangeMsg.as_u32());
    let Frontend { main, channel, _memory, _kick } = fe;
    drop(channel);
    assert_eq!(results(shared, 1), [(outstanding, Seen::Lost)]);
    // Nothing can carry a request now: the handle says so at once.
    let requests = shared.lock().unwrap().requests.clone().expect("the device is connected");
    let later = requests.push(DeviceRequest::ConfigChange);
    assert!(matches!(later, Err(RequestError::NoChannel)), "{later:?}");
    let fe = Frontend { main, channel: UnixStream::pair().unwrap().0, _memory, _kick };
    assert_ne!(fe.call(Request::GetFeatures, &[]), 0);
    let _ = FrontendCode::GetFeatures;
}

/// A channel descriptor that is not a stream socket (here a memfd, which no event loop can
/// watch) is refused: REPLY_ACK's answer is EINVAL, the channel it replaced is closed, the
/// connection goes on, the device hears there is no channel, and a real socket sent afterwards
/// carries requests. The same socket sent again and again (a new descriptor of one socket each
/// time) keeps working too.
pub fn a_channel_that_is_not_a_socket_is_dropped(fe: &Frontend, shared: &Arc<Mutex<Shared>>) {
    let file = memfd_create("not-a-socket", MemfdFlags::CLOEXEC).expect("memfd");
    let set = Request::SetBackendReqFd(FdToken(0));
    assert_eq!(fe.call(set, &[file.as_fd()]), 22, "EINVAL: the descriptor is no channel");
    let mut closed = [0u8; 1];
    let old = (&fe.channel).read(&mut closed);
    assert!(matches!(old, Ok(0)), "the replaced channel is closed: {old:?}");
    // The connection is still served, and the device knows at once there is no channel.
    assert_ne!(fe.call(Request::GetFeatures, &[]), 0);
    let requests = shared.lock().unwrap().requests.clone().expect("the device is connected");
    let refused = requests.push(DeviceRequest::ConfigChange);
    assert!(matches!(refused, Err(RequestError::NoChannel)), "{refused:?}");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.set_read_timeout(Some(TIMEOUT)).unwrap();
    for _ in 0..3 {
        assert_eq!(fe.call(set, &[theirs.as_fd()]), 0);
    }
    drop(theirs);
    let ticket = push(shared, DeviceRequest::ConfigChange);
    let (code, ..) = read_frame(&ours, "a request on the new channel");
    assert_eq!(code, BackendCode::ConfigChangeMsg.as_u32());
    assert_ne!(fe.call(Request::GetFeatures, &[]), 0);
    drop(ours);
    assert_eq!(results(shared, 1), [(ticket, Seen::Lost)], "its channel closed unanswered");
}

/// An eventfd's counter, read without blocking (0 when not signalled).
fn counter(fd: &OwnedFd) -> u64 {
    let mut buf = [0u8; 8];
    match rustix::io::read(fd, &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

/// A call descriptor replaced on a running ring: signalled once when the ring is enabled (a
/// notification the device sent on the old one just before may be lost otherwise), not while
/// it is disabled.
pub fn a_replaced_call_fd_is_signalled_once_on_an_enabled_ring(fe: &Frontend) {
    let index = VringIndex(0);
    let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK;
    let disabled = eventfd(0, flags).expect("eventfd");
    let set_call = Request::SetVringCall(VringFd { index, fd: Some(FdToken(0)) });
    assert_eq!(fe.call(set_call, &[disabled.as_fd()]), 0);
    assert_eq!(counter(&disabled), 0, "the ring is disabled");
    assert_eq!(fe.call(Request::SetVringEnable { index, enable: true }, &[]), 0);
    let enabled = eventfd(0, flags).expect("eventfd");
    assert_eq!(fe.call(set_call, &[enabled.as_fd()]), 0);
    assert_eq!(counter(&enabled), 1, "one notification on the new descriptor");
    assert_eq!(counter(&disabled), 0, "none on the old one");
}

/// A device that cannot do what a request asks makes its status non-zero: new addresses for a
/// running ring this device cannot move are refused, and the session goes on.
pub fn a_running_ring_the_device_cannot_move_is_refused(fe: &Frontend) {
    let addr = VringAddr {
        index: VringIndex(0),
        flags: VringAddrFlags::LOG,
        descriptor: UADDR,
        available: UADDR + 0x1000,
        used: UADDR + 0x2000,
        log: 0x4000,
    };
    assert_eq!(fe.call(Request::SetVringAddr(addr), &[]), 95, "EOPNOTSUPP");
    assert_ne!(fe.call(Request::GetFeatures, &[]), 0);
}

/// SET_MEM_TABLE while a ring runs swaps the whole table at once: a worker looking at guest
/// memory meanwhile never finds it empty or partial.
pub fn a_new_memory_table_is_swapped_in_whole(fe: &Frontend, fewest: &AtomicUsize) {
    assert_eq!(fe.call(Request::SetVringEnable { index: VringIndex(0), enable: true }, &[]), 0);
    for _ in 0..200 {
        assert_eq!(fe.set_mem_table(), 0);
    }
    assert_eq!(fewest.load(Ordering::Relaxed), 1, "a running ring saw a table being rebuilt");
}

/// A queue that takes a while to stop: GET_VRING_BASE waits for it, frames that arrive meanwhile
/// wait in the socket, and other connections are served all the while.
pub fn a_slow_stop_holds_up_only_its_connection(
    fe: &Frontend,
    shared: &Arc<Mutex<Shared>>,
    other: &UnixStream,
) {
    let stop = Request::GetVringBase { index: VringIndex(0) };
    let pending = held_stop(fe, shared, other, stop);
    pending.stopped(VringBase::split(5));
    let state = answer_to(&fe.main, stop);
    assert_eq!((state as u32, state >> 32), (0, 5), "ring 0 stopped where the device said");
    assert_ne!(answer_to(&fe.main, Request::GetFeatures), 0, "the frame that waited is served");
}

/// Posts `request`, which stops ring 0, and a GET_FEATURES behind it; returns the stop the
/// device holds once another front-end was served meanwhile and this one got no reply.
fn held_stop(
    fe: &Frontend,
    shared: &Arc<Mutex<Shared>>,
    other: &UnixStream,
    request: Request<'_>,
) -> QueueStopped {
    post(&fe.main, request, &[]);
    post(&fe.main, Request::GetFeatures, &[]);
    for _ in 0..(TIMEOUT.as_millis() / 5) {
        if shared.lock().unwrap().pending_stop.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pending = shared.lock().unwrap().pending_stop.take().expect("the stop reached the device");
    // Another front-end is served while this one waits.
    assert_ne!(call(other, Request::GetFeatures, &[]), 0);
    fe.main.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let waiting = std::io::Read::read(&mut &fe.main, &mut byte);
    assert!(
        matches!(&waiting, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no reply before the queue stopped: {waiting:?}"
    );
    fe.main.set_nonblocking(false).unwrap();
    pending
}

/// RESET_DEVICE with ring 0 still stopping: the ack waits for the queue and the device's
/// reset after it, and another front-end is served meanwhile (an event loop never waits for
/// a queue's requests in flight).
pub fn a_slow_reset_holds_up_only_its_connection(
    fe: &Frontend,
    shared: &Arc<Mutex<Shared>>,
    other: &UnixStream,
) {
    let pending = held_stop(fe, shared, other, Request::ResetDevice);
    assert_eq!(shared.lock().unwrap().resets, 0, "not reset while its queue still runs");
    pending.stopped(VringBase::split(5));
    assert_eq!(answer_to(&fe.main, Request::ResetDevice), 0, "reset");
    assert_eq!(shared.lock().unwrap().resets, 1, "reset once its queue stopped");
    assert_ne!(answer_to(&fe.main, Request::GetFeatures), 0, "the frame that waited is served");
}
