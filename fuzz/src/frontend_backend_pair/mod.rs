//! `frontend_backend_pair`: a [`Frontend`] and a [`Backend`] wired together in memory under an
//! arbitrary schedule of VMM operations, deliveries, driver completions and back-end API calls.
//!
//! Every request the front-end emits is encoded and parsed into the back-end with fresh tokens on
//! the receiving side (descriptors cross a socket as new numbers); the back-end's actions are
//! completed by a simulated driver whose answers the fuzzer chooses (the fitting success, a
//! failure, or a completion of the wrong kind); its replies and back-end channel requests are
//! encoded and fed back, and the VMM answers those requests as the fuzzer chooses.
//!
//! Invariants: nothing panics; the front-end passes every check of `frontend_model`; every
//! back-end output encodes and re-parses, and every token the back-end received has left it after
//! each input (it keeps none); the driver is only asked for config bytes inside the config space;
//! a stopped ring reports the base the driver gave; a config read reports the bytes the driver
//! gave. Whenever both sides are idle, nothing failed and nothing was closed, their views agree:
//! protocol and virtio features (with VHOST_F_LOG_ALL as logging is on), the memory regions, and
//! which rings are started. A Close on either side ends the run.

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use vhu_core::backend::{
    broken_dependency, Action, Backend, BackendSpec, Completion, Output,
    SUPPORTED_PROTOCOL_FEATURES as OFFERABLE,
};
use vhu_core::frontend::{Frontend, FrontendConfig};
use vhu_core::limits::MAX_FRAME_SIZE;
use vhu_core::message::{Iotlb, Region, ShmemMapping, Uuid, VringBase};
use vhu_core::{
    BackendCode, BackendRequest, FdToken, FrontendCode, ProtocolFeatures, Reply, VirtioFeatures,
    VringIndex,
};

use crate::frontend_model::{Answer, Config, Drained, Ev, Ledger, Model, Ring, Vmm};

/// Most operations one input runs.
const MAX_OPS: usize = 192;
/// Most deliveries one pump makes before the pair counts as never settling.
const MAX_PUMP_STEPS: usize = 512;
/// Most outputs one back-end drain may yield.
const MAX_BACKEND_OUTPUTS: usize = 4096;

/// The device the back-end serves.
#[derive(Arbitrary, Debug)]
struct Device {
    queues: u8,
    /// Protocol features toggled from a rich offer.
    toggle: u32,
    /// Bits selecting optional virtio features.
    features: u8,
    config_size: u8,
    slots: u8,
}

impl Device {
    fn spec(&self) -> BackendSpec {
        let mut spec = BackendSpec::new(usize::from(self.queues % 4) + 1, 256);
        let rich = spec.protocol_features
            | ProtocolFeatures::LOG_SHMFD
            | ProtocolFeatures::DEVICE_STATE
            | ProtocolFeatures::INFLIGHT_SHMFD
            | ProtocolFeatures::BACKEND_SEND_FD
            | ProtocolFeatures::SHMEM
            | ProtocolFeatures::INBAND_NOTIFICATIONS
            | ProtocolFeatures::SHARED_OBJECT
            | ProtocolFeatures::HOST_NOTIFIER
            | ProtocolFeatures::GET_VRING_BASE_INFLIGHT
            | ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN;
        let mut offered =
            (rich ^ ProtocolFeatures::from_bits_retain(u64::from(self.toggle))) & OFFERABLE;
        // Each round removes one bit, so this ends.
        while let Some((feature, _)) = broken_dependency(offered) {
            offered.remove(feature);
        }
        spec.protocol_features = offered;
        let optional = [
            VirtioFeatures::LOG_ALL,
            VirtioFeatures::RING_EVENT_IDX,
            VirtioFeatures::RING_PACKED,
            VirtioFeatures::ACCESS_PLATFORM,
            VirtioFeatures::from_bits_retain(1 << 5),
            VirtioFeatures::from_bits_retain(1 << 6),
        ];
        for (bit, feature) in optional.into_iter().enumerate() {
            if self.features & (1 << bit) == 0 {
                spec.features |= feature;
            }
        }
        spec.config_size = u32::from(self.config_size % 65);
        spec.max_mem_slots = 8 + usize::from(self.slots % 9);
        spec.shmem_sizes.extend([0x1000, 0x2000]);
        spec
    }
}

/// What the driver answers an action that completes.
#[derive(Arbitrary, Debug)]
enum DriverAnswer {
    /// The fitting success; a stopped split ring has advanced by this many buffers.
    Correct(u8),
    /// The failure form, with this status.
    Fail(u8),
    /// Any completion, most likely of the wrong kind.
    Wrong(Wrong),
}

#[derive(Arbitrary, Debug)]
enum Wrong {
    Done(bool),
    Stopped(u8, u32),
    Config(Vec<u8>),
    ConfigFailed,
    Inflight(bool),
    DeviceState(Option<bool>),
    SharedObject(bool),
    Userfaultfd(bool),
    PostcopyMapped(Vec<u64>),
}

/// A call of the device on the back-end's channel API.
#[derive(Arbitrary, Debug)]
enum Api {
    ConfigChange,
    ShmemMap(ShmemMapping),
    ShmemUnmap(ShmemMapping),
    SharedObjectAdd(u8),
    SharedObjectRemove(u8),
    SharedObjectLookup(u8),
    VringCall(u8),
    VringErr(u8),
    HostNotifier(u8, bool),
    Iotlb(Iotlb),
}

/// Which connection a delivery takes a message from.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Queue {
    ToBackend,
    ToFrontend,
    BackendChannel,
    VmmAnswer,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Vmm(Vmm),
    /// One message (or owed completion) moves.
    Deliver(Queue),
    /// Everything moves until nothing does.
    Pump,
    Api(Api),
    /// The device consumes buffers of a started ring.
    Process(u8, u8),
    /// What a VMM does first, in one step: connect if needed, one memory region, and start
    /// the first rings; then everything moves.
    Setup {
        pages: u8,
        rings: u8,
        base: u16,
    },
}

/// How the VMM answers a back-end request during a delivery.
#[derive(Arbitrary, Debug)]
struct VmmReply {
    /// Answer with the other kind (a lookup's fd for a plain request, or the reverse).
    wrong: bool,
    /// A failure status, or success.
    status: Option<u8>,
}

/// A completion the driver owes.
#[derive(Clone, Copy, Debug)]
enum Owed {
    Done,
    Stopped(VringIndex),
    Config { offset: u32, size: u32 },
    Inflight,
    DeviceState,
    SharedObject,
    Userfaultfd,
}

struct Pair {
    frontend: Frontend,
    fe: Model,
    backend: Backend,
    /// The back-end's tokens.
    be: Ledger,
    queues: usize,
    to_backend: VecDeque<(Vec<u8>, usize)>,
    to_frontend: VecDeque<(Vec<u8>, usize)>,
    channel: VecDeque<(Vec<u8>, usize)>,
    owed: Option<Owed>,
    /// The driver's base of each started ring.
    rings: Vec<Option<u32>>,
    /// The base the driver reported for the stop whose reply is on its way.
    stop: Option<(VringIndex, VringBase)>,
    /// The bytes the driver read for the config read whose reply is on its way.
    read: Option<Vec<u8>>,
    config: Vec<u8>,
    packed: bool,
    /// Nothing was refused or failed: the two views must agree when idle.
    in_sync: bool,
    /// RESET_DEVICE went out after the last SET_FEATURES.
    features_reset: bool,
    /// The session began with a restore, so the handshake asked the back-end nothing.
    restored: bool,
    closed: bool,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(device) = Device::arbitrary(&mut u) else { return };
    let Ok(config) = Config::arbitrary(&mut u) else { return };
    let Some(mut pair) = Pair::new(device.spec(), config.build()) else { return };
    for _ in 0..MAX_OPS {
        if u.is_empty() || pair.closed {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        match op {
            Op::Vmm(vmm) => {
                if matches!(vmm, Vmm::Restore(..)) && !pair.fe.connected {
                    pair.restored = true;
                }
                let drained = vmm.apply(&mut pair.frontend, &mut pair.fe, None);
                pair.take(drained);
            }
            Op::Deliver(queue) => {
                pair.deliver(queue, &mut u);
            }
            Op::Pump => pair.pump(&mut u),
            Op::Api(api) => pair.api(api),
            Op::Process(index, n) => {
                let packed = pair.packed;
                if let Some(Some(base)) = pair.rings.get_mut(usize::from(index)) {
                    if !packed {
                        *base = u32::from((*base as u16).wrapping_add(u16::from(n)));
                    }
                }
            }
            Op::Setup { pages, rings, base } => pair.setup(pages, rings, base, &mut u),
        }
        pair.check_views();
    }
    if !pair.closed {
        pair.pump(&mut u);
        pair.check_views();
    }
    pair.fe.finish(&mut pair.frontend);
    pair.be.assert_balanced();
}

impl Pair {
    fn new(spec: BackendSpec, config: FrontendConfig) -> Option<Self> {
        let queues = spec.queues;
        let config_size = spec.config_size as usize;
        let backend = Backend::new(spec).ok()?;
        Some(Self {
            frontend: Frontend::new(config),
            fe: Model::default(),
            backend,
            be: Ledger::default(),
            queues,
            to_backend: VecDeque::new(),
            to_frontend: VecDeque::new(),
            channel: VecDeque::new(),
            owed: None,
            rings: vec![None; queues],
            stop: None,
            read: None,
            config: (0..config_size).map(|i| i as u8).collect(),
            packed: false,
            in_sync: true,
            features_reset: false,
            restored: false,
            closed: false,
        })
    }

    /// Moves one message from `queue`. The driver completes what it owes before the back-end
    /// reads its next frame.
    fn deliver(&mut self, queue: Queue, u: &mut Unstructured<'_>) -> bool {
        match queue {
            Queue::ToBackend if self.backend.is_awaiting_completion() => {
                let answer = DriverAnswer::arbitrary(u).unwrap_or(DriverAnswer::Correct(0));
                self.complete(answer);
            }
            Queue::ToBackend => {
                let Some((frame, n)) = self.to_backend.pop_front() else { return false };
                let fds = self.be.arriving(n);
                if self.backend.handle_frame(&frame, &fds).is_err() {
                    self.in_sync = false;
                }
                self.drain_backend();
            }
            Queue::ToFrontend => {
                let Some((frame, n)) = self.to_frontend.pop_front() else { return false };
                let drained = self.fe.reply(&mut self.frontend, &frame, n);
                self.take(drained);
            }
            Queue::BackendChannel => {
                let Some((frame, n)) = self.channel.pop_front() else { return false };
                let drained = self.fe.backend_request(&mut self.frontend, &frame, n);
                self.take(drained);
            }
            Queue::VmmAnswer => {
                let Some(&(code, _)) = self.fe.backend_pending.front() else { return false };
                let reply =
                    VmmReply::arbitrary(u).unwrap_or(VmmReply { wrong: false, status: None });
                // The fitting kind of answer, unless the fuzzer wants the other one.
                let lookup = (code == BackendCode::SharedObjectLookup) != reply.wrong;
                let answer = if lookup {
                    Answer::SharedObject(reply.status)
                } else {
                    Answer::Done(reply.status)
                };
                let drained = Vmm::Answer(answer).apply(&mut self.frontend, &mut self.fe, None);
                self.take(drained);
            }
        }
        true
    }

    /// Connects if needed, sets one region of `pages` pages and starts `rings` rings at `base`.
    fn setup(&mut self, pages: u8, rings: u8, base: u16, u: &mut Unstructured<'_>) {
        if !self.fe.connected {
            let drained = Vmm::Connect(true).apply(&mut self.frontend, &mut self.fe, None);
            self.take(drained);
            self.pump(u);
        }
        let table = Vmm::SetMemTable(vec![(0, pages.max(1))]);
        let drained = table.apply(&mut self.frontend, &mut self.fe, None);
        self.take(drained);
        for index in 0..rings % 4 {
            let ring = Ring {
                size: 8,
                raw_size: 0,
                base: u32::from(base),
                log: false,
                call: true,
                kick: true,
            };
            let drained =
                Vmm::StartVring(index, ring).apply(&mut self.frontend, &mut self.fe, None);
            self.take(drained);
        }
        self.pump(u);
    }

    /// Moves messages until nothing moves or a side closes.
    fn pump(&mut self, u: &mut Unstructured<'_>) {
        for _ in 0..MAX_PUMP_STEPS {
            if self.closed {
                return;
            }
            let moved = self.deliver(Queue::ToBackend, u)
                || self.deliver(Queue::ToFrontend, u)
                || self.deliver(Queue::BackendChannel, u)
                || self.deliver(Queue::VmmAnswer, u);
            if !moved {
                return;
            }
        }
        panic!("the pair never settles");
    }

    /// Takes what the front-end produced: requests to the back-end, channel replies to the
    /// back-end's driver, events to check.
    fn take(&mut self, drained: Drained) {
        for frame in drained.requests {
            if frame.code == FrontendCode::SetFeatures.as_u32() {
                self.features_reset = false;
            } else if frame.code == FrontendCode::ResetDevice.as_u32() {
                self.features_reset = true;
            }
            self.to_backend.push_back((frame.bytes, frame.fds));
        }
        for reply in drained.backend_replies {
            // These tokens go to the back-end's driver, not to the state machine.
            let fds: Vec<FdToken> = (0..reply.fds as u32).map(FdToken).collect();
            let parsed = Backend::parse_backend_reply(&reply.bytes, &fds)
                .expect("the back-end side parses the front-end's channel reply");
            assert_eq!(parsed.code().as_u32(), reply.code);
        }
        for event in drained.events {
            match event {
                Ev::Failed(_) => self.in_sync = false,
                Ev::VringStopped { index, base } => {
                    if let Some(stop) = self.stop.take() {
                        assert_eq!(stop, (index, base), "the stop reports another base");
                    }
                }
                Ev::ConfigRead { data, .. } => {
                    let read = self.read.take().expect("a config read the driver never made");
                    assert_eq!(data, read, "the config read reports other bytes");
                }
                Ev::Connected(negotiated) if !self.restored => {
                    let acked = negotiated.protocol_features;
                    if acked.contains(ProtocolFeatures::MQ) {
                        assert_eq!(negotiated.queues, Some(self.queues as u16), "queue count");
                    }
                    if acked.contains(ProtocolFeatures::CONFIGURE_MEM_SLOTS) {
                        let slots = self.backend.spec().max_mem_slots as u16;
                        assert_eq!(negotiated.max_mem_slots, Some(slots), "memory slots");
                    }
                    self.packed = negotiated.features.contains(VirtioFeatures::RING_PACKED);
                }
                Ev::Connected(negotiated) => {
                    self.packed = negotiated.features.contains(VirtioFeatures::RING_PACKED);
                }
                Ev::Done(_)
                | Ev::Status(_)
                | Ev::InflightFd
                | Ev::DeviceStateFd
                | Ev::SharedObject
                | Ev::BackendRequest { .. } => {}
            }
        }
        if drained.closed {
            self.closed = true;
        }
    }

    /// Carries out the back-end's outputs.
    fn drain_backend(&mut self) {
        let mut buf = vec![0u8; MAX_FRAME_SIZE];
        let mut settled = false;
        for _ in 0..MAX_BACKEND_OUTPUTS {
            let Some(output) = self.backend.poll_output() else {
                settled = true;
                break;
            };
            match output {
                Output::Reply(reply) => {
                    let len = reply.encode_into(&mut buf).expect("reply encodes");
                    let fds = reply.fds();
                    assert_eq!(Reply::parse(&buf[..len], &fds).expect("reply re-parses"), reply);
                    for fd in &fds {
                        self.be.left(*fd);
                    }
                    self.to_frontend.push_back((buf[..len].to_vec(), fds.len()));
                }
                Output::BackendRequest { request, need_reply } => {
                    let len = request.encode_into(need_reply, &mut buf).expect("request encodes");
                    let fds = request.fds();
                    let again = BackendRequest::parse(&buf[..len], &fds).expect("re-parses");
                    assert_eq!((again.message, again.need_reply), (request, need_reply));
                    for fd in &fds {
                        self.be.left(*fd);
                    }
                    self.channel.push_back((buf[..len].to_vec(), fds.len()));
                }
                Output::Action(action) => {
                    for fd in handed_off(&action) {
                        self.be.left(fd);
                    }
                    if let Some(owed) = act(action, &mut self.rings, &mut self.config) {
                        self.owed = Some(owed);
                    }
                }
                Output::Close(_) => self.closed = true,
            }
        }
        assert!(settled, "the back-end never stops producing outputs");
        // The back-end keeps no token between inputs.
        self.be.assert_balanced();
    }
}

/// What the driver does for one action, and the completion it then owes.
fn act(action: Action<'_>, rings: &mut [Option<u32>], config: &mut [u8]) -> Option<Owed> {
    {
        match action {
            Action::StartVring { index, config, .. } => {
                let slot = rings.get_mut(usize::from(index.0)).expect("ring in range");
                assert!(slot.is_none(), "ring {} started twice", index.0);
                *slot = Some(config.base.0);
                None
            }
            Action::StopVring { index, .. } => Some(Owed::Stopped(index)),
            Action::ResetDevice => {
                rings.iter_mut().for_each(|ring| *ring = None);
                None
            }
            Action::ReadConfig { offset, size } => {
                let end = offset as usize + size as usize;
                assert!(end <= config.len(), "config read {offset}+{size} outside the space");
                Some(Owed::Config { offset, size })
            }
            Action::WriteConfig { offset, data, .. } => {
                let start = offset as usize;
                let range = start..start + data.len();
                let target = config.get_mut(range).expect("config write inside the space");
                target.copy_from_slice(data);
                Some(Owed::Done)
            }
            Action::MapRegion { .. }
            | Action::MapLog { .. }
            | Action::SetInflight { .. }
            | Action::CheckDeviceState
            | Action::Iotlb(_)
            | Action::PostcopyListen
            | Action::PostcopyEnd => Some(Owed::Done),
            Action::AllocateInflight { .. } => Some(Owed::Inflight),
            Action::SetDeviceStateFd { .. } => Some(Owed::DeviceState),
            Action::GetSharedObject(_) => Some(Owed::SharedObject),
            Action::PostcopyAdvise => Some(Owed::Userfaultfd),
            _ => None,
        }
    }
}

impl Pair {
    /// The driver answers the completion it owes.
    fn complete(&mut self, answer: DriverAnswer) {
        let owed = self.owed.take().unwrap_or(Owed::Done);
        let correct = matches!(answer, DriverAnswer::Correct(_));
        // Owed data the completion borrows; it lives until the completion is handled.
        let bytes: Vec<u8>;
        let bases: Vec<u64>;
        let completion = match answer {
            DriverAnswer::Correct(advance) => match owed {
                Owed::Done => Completion::Done(Ok(())),
                Owed::Stopped(index) => {
                    let ring = self.rings.get(usize::from(index.0)).copied().flatten();
                    let base = ring.unwrap_or(0);
                    let base = if self.packed {
                        base
                    } else {
                        u32::from((base as u16).wrapping_add(u16::from(advance)))
                    };
                    Completion::VringStopped { index, base: VringBase(base) }
                }
                Owed::Config { offset, size } => {
                    let range = offset as usize..(offset + size) as usize;
                    bytes = self.config.get(range).map(<[u8]>::to_vec).unwrap_or_default();
                    Completion::ConfigRead(Some(&bytes))
                }
                Owed::Inflight => Completion::InflightAllocated(Ok((self.be.fresh(), 0))),
                Owed::DeviceState => {
                    let fd = (advance % 2 == 1).then(|| self.be.fresh());
                    Completion::DeviceStateFd(Ok(fd))
                }
                Owed::SharedObject => Completion::SharedObject(Ok(self.be.fresh())),
                Owed::Userfaultfd => Completion::Userfaultfd(Ok(self.be.fresh())),
            },
            DriverAnswer::Fail(status) => {
                let status = u64::from(status.max(1));
                match owed {
                    Owed::Config { .. } => Completion::ConfigRead(None),
                    Owed::Inflight => Completion::InflightAllocated(Err(status)),
                    Owed::DeviceState => Completion::DeviceStateFd(Err(status as u8)),
                    Owed::SharedObject => Completion::SharedObject(Err(status)),
                    Owed::Userfaultfd => Completion::Userfaultfd(Err(status)),
                    Owed::Done | Owed::Stopped(_) => Completion::Done(Err(status)),
                }
            }
            DriverAnswer::Wrong(wrong) => match wrong {
                Wrong::Done(ok) => Completion::Done(if ok { Ok(()) } else { Err(5) }),
                Wrong::Stopped(index, base) => {
                    Completion::VringStopped { index: VringIndex(index % 4), base: VringBase(base) }
                }
                Wrong::Config(data) => {
                    bytes = data.into_iter().take(64).collect();
                    Completion::ConfigRead(Some(&bytes))
                }
                Wrong::ConfigFailed => Completion::ConfigRead(None),
                Wrong::Inflight(ok) => Completion::InflightAllocated(if ok {
                    Ok((self.be.fresh(), 0))
                } else {
                    Err(1)
                }),
                Wrong::DeviceState(fd) => Completion::DeviceStateFd(match fd {
                    Some(true) => Ok(Some(self.be.fresh())),
                    Some(false) => Ok(None),
                    None => Err(3),
                }),
                Wrong::SharedObject(ok) => {
                    Completion::SharedObject(if ok { Ok(self.be.fresh()) } else { Err(2) })
                }
                Wrong::Userfaultfd(ok) => {
                    Completion::Userfaultfd(if ok { Ok(self.be.fresh()) } else { Err(4) })
                }
                Wrong::PostcopyMapped(list) => {
                    bases = list.into_iter().take(8).collect();
                    Completion::PostcopyMapped(Ok(&bases))
                }
            },
        };
        // A token in a completion enters the back-end and leaves it with this input's outputs.
        let token = match completion {
            Completion::InflightAllocated(Ok((fd, _)))
            | Completion::DeviceStateFd(Ok(Some(fd)))
            | Completion::SharedObject(Ok(fd))
            | Completion::Userfaultfd(Ok(fd)) => Some(fd),
            _ => None,
        };
        if let Some(fd) = token {
            self.be.enter(fd, true);
        }
        let accepted = self.backend.handle_completion(completion).is_ok();
        if accepted {
            match completion {
                Completion::VringStopped { index, base } => {
                    self.stop = Some((index, base));
                    if let Some(ring) = self.rings.get_mut(usize::from(index.0)) {
                        *ring = None;
                    }
                }
                Completion::ConfigRead(data) => {
                    // The back-end sends the bytes only if there are as many as asked.
                    let asked = match owed {
                        Owed::Config { size, .. } => size as usize,
                        _ => usize::MAX,
                    };
                    self.read = data.filter(|d| d.len() == asked).map(<[u8]>::to_vec);
                }
                _ => {}
            }
        } else {
            // Still owed.
            self.owed = Some(owed);
        }
        if !correct || !accepted {
            self.in_sync = false;
        }
        self.drain_backend();
    }

    /// A call of the device on the back-end channel API.
    fn api(&mut self, api: Api) {
        let mut token = None;
        let mut fresh = |be: &mut Ledger| {
            let fd = be.fresh();
            token = Some(fd);
            fd
        };
        let result = match api {
            Api::ConfigChange => self.backend.send_config_change(),
            Api::ShmemMap(mapping) => {
                let fd = fresh(&mut self.be);
                self.backend.send_shmem_map(mapping, fd)
            }
            Api::ShmemUnmap(mapping) => self.backend.send_shmem_unmap(mapping),
            Api::SharedObjectAdd(b) => self.backend.send_shared_object_add(Uuid([b; 16])),
            Api::SharedObjectRemove(b) => self.backend.send_shared_object_remove(Uuid([b; 16])),
            Api::SharedObjectLookup(b) => self.backend.send_shared_object_lookup(Uuid([b; 16])),
            Api::VringCall(i) => self.backend.send_vring_call(VringIndex(i % 4)),
            Api::VringErr(i) => self.backend.send_vring_err(VringIndex(i % 4)),
            Api::HostNotifier(i, with_fd) => {
                let fd = with_fd.then(|| fresh(&mut self.be));
                self.backend.send_host_notifier(VringIndex(i % 4), 0x1000, 0, fd)
            }
            Api::Iotlb(msg) => self.backend.send_iotlb(msg),
        };
        // A refused call leaves the token with the caller.
        if let (Ok(()), Some(fd)) = (result, token) {
            self.be.enter(fd, true);
        }
        self.drain_backend();
    }

    /// When both sides are idle and nothing failed, they agree on what was negotiated and set up.
    fn check_views(&self) {
        let idle = !self.closed
            && self.in_sync
            && self.fe.connected
            && self.frontend.is_idle()
            && self.to_backend.is_empty()
            && self.to_frontend.is_empty()
            && self.channel.is_empty()
            && !self.backend.is_awaiting_completion();
        if !idle {
            return;
        }
        let negotiated = self.frontend.negotiated().expect("connected");
        assert_eq!(
            self.backend.acked_protocol_features(),
            negotiated.protocol_features,
            "protocol features"
        );
        let mut features = negotiated.features;
        features.set(VirtioFeatures::LOG_ALL, self.frontend.is_logging());
        let expected = (!self.features_reset).then_some(features);
        assert_eq!(self.backend.acked_features(), expected, "virtio features");
        let sorted = |regions: &mut dyn Iterator<Item = &Region>| {
            let mut list: Vec<_> =
                regions.map(|r| (r.guest_address, r.size, r.user_address, r.mmap_offset)).collect();
            list.sort_unstable();
            list
        };
        assert_eq!(
            sorted(&mut self.frontend.regions().iter()),
            sorted(&mut self.backend.regions().iter()),
            "memory regions"
        );
        for index in 0..=u8::MAX {
            let index = VringIndex(index);
            let started = self.backend.vring_state(index).is_some_and(|s| s.started);
            assert_eq!(self.frontend.is_vring_started(index), started, "ring {} started", index.0);
        }
    }
}

/// The tokens an action hands to the driver.
fn handed_off(action: &Action<'_>) -> Vec<FdToken> {
    match action {
        Action::MapRegion { fd, .. }
        | Action::MapLog { fd, .. }
        | Action::SetLogFd(fd)
        | Action::SetInflight { fd, .. }
        | Action::SetBackendChannel(fd)
        | Action::SetDeviceStateFd { fd, .. }
        | Action::CloseFd(fd) => vec![*fd],
        Action::StartVring { kick: fd, .. }
        | Action::ReplaceKick { kick: fd, .. }
        | Action::SetVringCall { fd, .. }
        | Action::SetVringErr { fd, .. } => fd.iter().copied().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
