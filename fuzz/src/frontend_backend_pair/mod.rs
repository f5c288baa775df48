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
//!
//! An input starting with `SCRIPT` is a script instead (see `script`): the seed corpus uses
//! it to spell out whole sessions, every choice of the driver and the VMM the fitting success.

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use vhu_core::backend::{
    broken_dependency, conflict, Action, Backend, BackendOutcome, BackendSpec, Completion, Output,
    SUPPORTED_PROTOCOL_FEATURES as OFFERABLE,
};
use vhu_core::frontend::{Frontend, FrontendConfig};
use vhu_core::limits::MAX_FRAME_SIZE;
use vhu_core::message::{Iotlb, Region, ShmemMapping, Uuid, VringBase};
use vhu_core::{
    BackendCode, BackendRequest, FdToken, FrontendCode, ProtocolFeatures, Reply, VirtioFeatures,
    VringIndex,
};

use crate::cursor::SCRIPT;
use crate::frontend_model::{Answer, Config, Drained, Ev, Ledger, Model, Ring, Unanswered, Vmm};

mod driver;

use driver::{act, handed_off};
mod script;
mod seeds;

pub use seeds::seeds;

/// Most operations one input runs.
const MAX_OPS: usize = 192;
/// Most deliveries one pump makes, beyond [`STEPS_PER_QUEUED`] for each message already queued
/// when it starts, before the pair counts as never settling.
const MAX_PUMP_STEPS: usize = 512;
/// Deliveries one queued message may take: itself, its reply, a driver's completion, and what
/// the front-end held back behind it. Operations queue without delivering (a front-end without
/// REPLY_ACK sends a ring's whole set-up at once, and a back-end refuses each silently), so a
/// long input can leave hundreds queued for one pump to move.
const STEPS_PER_QUEUED: usize = 8;
/// Most outputs one back-end drain may yield.
const MAX_BACKEND_OUTPUTS: usize = 4096;

/// The device the back-end serves.
#[derive(Arbitrary, Clone, Debug)]
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
        while let Some((feature, _)) = conflict(offered) {
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
        // Dirty logging is offered only with its descriptor (`SpecError::LogWithoutShmfd`).
        if !offered.contains(ProtocolFeatures::LOG_SHMFD) {
            spec.features.remove(VirtioFeatures::LOG_ALL);
        }
        spec.config_size = u32::from(self.config_size % 65);
        spec.max_mem_slots = 8 + usize::from(self.slots % 9);
        spec.shmem_sizes.extend([0x1000, 0x2000]);
        spec
    }
}

/// What the driver answers an action that completes.
#[derive(Arbitrary, Clone, Debug)]
enum DriverAnswer {
    /// The fitting success; a stopped split ring has advanced by this many buffers.
    Correct(u8),
    /// The failure form, with this status.
    Fail(u8),
    /// Any completion, most likely of the wrong kind.
    Wrong(Wrong),
}

#[derive(Arbitrary, Clone, Debug)]
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
#[derive(Arbitrary, Clone, Debug)]
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

#[derive(Arbitrary, Clone, Debug)]
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
#[derive(Arbitrary, Clone, Debug)]
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
    /// The start of this ring: a failure leaves it stopped.
    Started(VringIndex),
    Stopped(VringIndex),
    Config {
        offset: u32,
        size: u32,
    },
    Inflight,
    DeviceState,
    SharedObject,
    Userfaultfd,
    /// The regions of a memory table (this many): mapped, or mapped and registered for
    /// postcopy, whichever the back-end waits for.
    Mapped(usize),
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

/// Directory of the seed corpus, relative to this crate's manifest.
pub const CORPUS_DIR: &str = "corpus/frontend_backend_pair";

/// Runs one input: `arbitrary` data, or a script (see `script`) when it starts with
/// `SCRIPT`.
pub fn run(data: &[u8]) {
    if let Some((&SCRIPT, rest)) = data.split_first() {
        if let Some(pair) = script::decode(rest).and_then(|(d, c, ops)| script::play(&d, &c, ops)) {
            pair.finish();
        }
        return;
    }
    let mut u = Unstructured::new(data);
    let Ok(device) = Device::arbitrary(&mut u) else { return };
    let Ok(config) = Config::arbitrary(&mut u) else { return };
    let Some(mut pair) = Pair::new(device.spec(), config.build()) else { return };
    for _ in 0..MAX_OPS {
        if u.is_empty() || pair.closed {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        pair.op(op, &mut u);
    }
    pair.settle(&mut u);
    pair.finish();
}

impl Pair {
    /// Runs one operation and compares the views.
    fn op(&mut self, op: Op, u: &mut Unstructured<'_>) {
        match op {
            Op::Vmm(vmm) => {
                if matches!(vmm, Vmm::Restore(..)) && !self.fe.connected {
                    self.restored = true;
                }
                let drained = vmm.apply(&mut self.frontend, &mut self.fe, None);
                self.take(drained);
            }
            Op::Deliver(queue) => {
                self.deliver(queue, u);
            }
            Op::Pump => self.pump(u),
            Op::Api(api) => self.api(api),
            Op::Process(index, n) => {
                let packed = self.packed;
                if let Some(Some(base)) = self.rings.get_mut(usize::from(index)) {
                    if !packed {
                        *base = u32::from((*base as u16).wrapping_add(u16::from(n)));
                    }
                }
            }
            Op::Setup { pages, rings, base } => self.setup(pages, rings, base, u),
        }
        self.check_views();
    }

    /// After the last operation: everything moves, and the views are compared once more.
    fn settle(&mut self, u: &mut Unstructured<'_>) {
        if !self.closed {
            self.pump(u);
            self.check_views();
        }
    }

    /// Ends both sides: every token has left each of them.
    fn finish(mut self) {
        self.fe.finish(&mut self.frontend);
        self.be.assert_balanced();
    }

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
                let Some(&Unanswered::Surfaced(code, _)) = self.fe.backend_pending.front() else {
                    return false;
                };
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
        let queued = self.to_backend.len() + self.to_frontend.len() + self.channel.len();
        for _ in 0..MAX_PUMP_STEPS + STEPS_PER_QUEUED * queued {
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
            // The answer goes back to the back-end as its driver would feed it.
            let fds = self.be.arriving(reply.fds);
            let parsed = Backend::parse_backend_reply(&reply.bytes, &fds)
                .expect("the back-end side parses the front-end's channel reply");
            assert_eq!(parsed.code().as_u32(), reply.code);
            if let Ok(result) = self.backend.handle_backend_reply(&reply.bytes, &fds) {
                assert_eq!(result.request, parsed.code(), "an answer matched to another request");
            }
            self.drain_backend();
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
                | Ev::ShmemConfig(_)
                | Ev::InflightFd { .. }
                | Ev::DeviceStateFd { .. }
                | Ev::SharedObject
                | Ev::BackendRequest { .. }
                | Ev::PostcopyAdvised { .. }
                | Ev::PostcopyBases(_)
                | Ev::CryptoSession(_) => {}
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
                Output::Nack { request, status } => {
                    assert_ne!(status, 0, "a refusal has a failure status");
                    let len = vhu_core::message::encode_status(request, status, &mut buf)
                        .expect("status encodes");
                    self.to_frontend.push_back((buf[..len].to_vec(), 0));
                }
                Output::BackendRequest { id, request, need_reply } => {
                    let len = request.encode_into(need_reply, &mut buf).expect("request encodes");
                    let fds = request.fds();
                    let again = BackendRequest::parse(&buf[..len], &fds).expect("re-parses");
                    assert_eq!((again.message, again.need_reply), (request, need_reply));
                    for fd in &fds {
                        self.be.left(*fd);
                    }
                    self.channel.push_back((buf[..len].to_vec(), fds.len()));
                    self.backend.handle_backend_sent(id);
                }
                Output::BackendResult(result) => {
                    if let BackendOutcome::SharedObject { fd: Some(fd), .. } = result.outcome {
                        self.be.left(fd);
                    }
                }
                Output::Action(action) => {
                    for fd in handed_off(&action) {
                        self.be.left(fd);
                    }
                    if let Some(owed) = act(action, &mut self.rings, &mut self.config) {
                        self.owed = Some(match (owed, self.owed) {
                            (Owed::Mapped(_), Some(Owed::Mapped(n))) => Owed::Mapped(n + 1),
                            (owed, _) => owed,
                        });
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

#[cfg(test)]
mod tests;
