//! The front-end side shared by `frontend_session` and `frontend_backend_pair`: a ledger of
//! descriptor tokens, a model that checks every output of a [`Frontend`] against the protocol
//! rules, and the VMM operations a fuzzer chooses.
//!
//! Ownership rule checked (see `vhu_core::frontend::Output`): a token given to a VMM call that
//! succeeds, or arriving with a frame, has entered the front-end; it leaves it exactly once, in an
//! emitted request's fds, an event, a back-end channel reply or a `CloseFd`. A token given to a
//! call that fails stays with the caller and must never come out. Tokens of a frame leave during
//! the same step; the others leave at the latest when nothing is queued any more.

use std::collections::{BTreeMap, VecDeque};

use arbitrary::Arbitrary;
use vhu_core::backend::broken_dependency;
use vhu_core::frontend::{
    BackendAnswer, Event, Frontend, FrontendConfig, FrontendError, Negotiated, Output, VringSetup,
    SUPPORTED_PROTOCOL_FEATURES,
};
use vhu_core::message::{
    ConfigFlags, InflightDesc, Region, TransferDirection, Uuid, VringAddr, VringAddrFlags,
    VringBase,
};
use vhu_core::{
    reply_kind, BackendCode, BackendReply, BackendRequest, FdToken, FrontendCode, ProtocolFeatures,
    ReplyKind, Request, VirtioFeatures, VringIndex,
};

/// Addresses are drawn near this base so that rings land inside regions.
pub(crate) const RAM: u64 = 0x7f00_0000_0000;

/// Most outputs one drain may yield before the front-end counts as never settling.
const MAX_OUTPUTS_PER_DRAIN: usize = 4096;

/// A region in slot `slot` of `pages` 64 KiB pages (0 pages is an invalid, empty region).
pub(crate) fn region(slot: u8, pages: u8) -> Region {
    let base = u64::from(slot) << 24;
    Region {
        guest_address: base,
        size: u64::from(pages) << 16,
        user_address: RAM + base,
        mmap_offset: 0,
        xen: None,
    }
}

/// What one side holds of each token: how often it entered and left.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    entered: u8,
    left: u8,
    /// Arrived with a frame or a completion: must leave during the same step.
    transient: bool,
}

/// The descriptor tokens one state machine received and released.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    next: u32,
    entries: BTreeMap<FdToken, Entry>,
}

impl Ledger {
    /// A token the caller owns; it enters only once [`Ledger::enter`] says so.
    pub(crate) fn fresh(&mut self) -> FdToken {
        self.next += 1;
        let fd = FdToken(self.next);
        self.entries.insert(fd, Entry::default());
        fd
    }

    /// `n` tokens arriving with a frame: they enter at once and must leave during the step.
    pub(crate) fn arriving(&mut self, n: usize) -> Vec<FdToken> {
        (0..n)
            .map(|_| {
                let fd = self.fresh();
                self.enter(fd, true);
                fd
            })
            .collect()
    }

    /// The state machine took `fd`.
    pub(crate) fn enter(&mut self, fd: FdToken, transient: bool) {
        let entry = self.entries.entry(fd).or_default();
        assert_eq!(entry.entered, 0, "token {fd:?} entered twice");
        entry.entered = 1;
        entry.transient = transient;
    }

    /// The state machine handed `fd` off or released it.
    pub(crate) fn left(&mut self, fd: FdToken) {
        let entry = self.entries.entry(fd).or_default();
        assert_eq!(
            entry.entered, 1,
            "token {fd:?} left without entering (it stays with the caller)"
        );
        assert_eq!(entry.left, 0, "token {fd:?} left twice");
        entry.left = 1;
    }

    /// Every token that arrived with an input has left.
    pub(crate) fn assert_transients_left(&self) {
        for (fd, entry) in &self.entries {
            if entry.transient {
                assert_eq!(entry.left, entry.entered, "token {fd:?} of an input still held");
            }
        }
    }

    /// Every token that entered has left.
    pub(crate) fn assert_balanced(&self) {
        for (fd, entry) in &self.entries {
            assert_eq!(entry.left, entry.entered, "token {fd:?} still held");
        }
    }
}

/// A request sent and waiting for its reply, with what the reply must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Its code.
    pub(crate) code: FrontendCode,
    /// NEED_REPLY was set.
    pub(crate) need_reply: bool,
    /// What the reply must echo.
    pub(crate) detail: Detail,
}

/// The parts of a waiting request its reply is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detail {
    None,
    Vring(VringIndex),
    Config { offset: u32, size: u32 },
    DeviceState,
}

/// An event with borrowed data copied out.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ev {
    Connected(Negotiated),
    Done(FrontendCode),
    Failed(FrontendError),
    VringStopped { index: VringIndex, base: VringBase },
    ConfigRead { offset: u32, data: Vec<u8> },
    Status(u8),
    InflightFd,
    DeviceStateFd,
    SharedObject,
    BackendRequest { request: BackendRequest, need_reply: bool },
}

/// The input a drain follows, which decides what may come out.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A VMM call.
    Call,
    /// A reply, accepted (`Some` with the request it answered) or refused (`None`).
    Reply(Option<Sent>),
    /// A back-end request, accepted or refused; `reply` is the code a refusal may answer.
    BackendRequest { accepted: bool, reply: Option<BackendCode> },
    /// An answer to a back-end request; the reply it must produce, if any.
    Answer(Option<BackendCode>),
}

/// One request the front-end emitted, encoded, with its tokens.
#[derive(Debug)]
pub(crate) struct Frame {
    /// The encoded frame.
    pub(crate) bytes: Vec<u8>,
    /// How many tokens travel with it.
    pub(crate) fds: usize,
    /// The request code (a front-end code for a request, a back-end code for a channel reply).
    pub(crate) code: u32,
}

/// What one drain produced, owned.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    /// Requests for the main socket, in order.
    pub(crate) requests: Vec<Frame>,
    /// Replies for the back-end channel, in order.
    pub(crate) backend_replies: Vec<Frame>,
    /// Events for the VMM, in order.
    pub(crate) events: Vec<Ev>,
    /// The front-end closed.
    pub(crate) closed: bool,
}

/// The protocol feature each request needs acked before the front-end may send it.
fn needs(code: FrontendCode) -> Option<ProtocolFeatures> {
    use FrontendCode as C;
    use ProtocolFeatures as P;
    Some(match code {
        C::GetQueueNum => P::MQ,
        C::GetMaxMemSlots | C::AddMemReg | C::RemMemReg => P::CONFIGURE_MEM_SLOTS,
        C::SetLogBase => P::LOG_SHMFD,
        C::SetBackendReqFd => P::BACKEND_REQ,
        C::GetConfig | C::SetConfig => P::CONFIG,
        C::GetInflightFd | C::SetInflightFd => P::INFLIGHT_SHMFD,
        C::ResetDevice => P::RESET_DEVICE,
        C::VringKick => P::INBAND_NOTIFICATIONS,
        C::SetStatus | C::GetStatus => P::STATUS,
        C::GetSharedObject => P::SHARED_OBJECT,
        C::SetDeviceStateFd | C::CheckDeviceState => P::DEVICE_STATE,
        C::GetVringBaseSkipDrain => P::GET_VRING_BASE_SKIP_DRAIN,
        _ => return None,
    })
}

/// The model of one front-end connection: what it was given, what it sent, what it waits for.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// The front-end's tokens.
    pub(crate) ledger: Ledger,
    /// The request on the wire that waits for its reply.
    pub(crate) awaiting: Option<Sent>,
    /// The last SET_PROTOCOL_FEATURES sent acked REPLY_ACK.
    reply_ack: bool,
    /// The protocol features the last SET_PROTOCOL_FEATURES sent.
    sent_protocol: Option<ProtocolFeatures>,
    /// The features the last SET_FEATURES sent.
    pub(crate) sent_features: Option<VirtioFeatures>,
    /// [`Event::Connected`] was emitted.
    pub(crate) connected: bool,
    /// [`Output::Close`] was emitted.
    pub(crate) closed: bool,
    /// The outcome the handshake reported.
    pub(crate) negotiated: Option<Negotiated>,
    /// Back-end requests surfaced and not answered yet, and whether the back-end waits.
    pub(crate) backend_pending: VecDeque<(BackendCode, bool)>,
}

impl Model {
    /// After a VMM call that was given `fds`: they entered if it succeeded.
    pub(crate) fn call(
        &mut self,
        frontend: &mut Frontend,
        fds: &[FdToken],
        result: Result<(), FrontendError>,
    ) -> Drained {
        if result.is_ok() {
            for fd in fds {
                self.ledger.enter(*fd, false);
            }
        }
        self.drain(frontend, Step::Call)
    }

    /// Feeds a reply frame that arrives with `nfds` descriptors.
    pub(crate) fn reply(&mut self, frontend: &mut Frontend, frame: &[u8], nfds: usize) -> Drained {
        let fds = self.ledger.arriving(nfds);
        let awaited = self.awaiting;
        let result = frontend.handle_reply(frame, &fds);
        let step = match result {
            Ok(()) => {
                let sent = awaited.expect("a reply was accepted while no request waits");
                let code = frame_code(frame);
                assert_eq!(code, Some(sent.code.as_u32()), "accepted a reply to another request");
                self.awaiting = None;
                Step::Reply(Some(sent))
            }
            Err(_) => Step::Reply(None),
        };
        let drained = self.drain(frontend, step);
        if result.is_err() {
            assert!(self.closed, "a refused reply must close the connection: {result:?}");
        }
        drained
    }

    /// Feeds a back-end channel request frame that arrives with `nfds` descriptors.
    pub(crate) fn backend_request(
        &mut self,
        frontend: &mut Frontend,
        frame: &[u8],
        nfds: usize,
    ) -> Drained {
        let fds = self.ledger.arriving(nfds);
        let result = frontend.handle_backend_request(frame, &fds);
        // A refusal answers only if the header names a code and the back-end waits.
        let code = frame_code(frame).and_then(BackendCode::from_u32);
        let flags = frame.get(4..8).and_then(|f| f.try_into().ok()).map(u32::from_ne_bytes);
        let need_reply = flags.is_some_and(|f| f & 0x8 != 0);
        let waits = need_reply || code == Some(BackendCode::SharedObjectLookup);
        let step = Step::BackendRequest {
            accepted: result.is_ok(),
            reply: code.filter(|_| waits && !self.closed),
        };
        let drained = self.drain(frontend, step);
        if result.is_ok() {
            let surfaced =
                drained.events.iter().filter(|e| matches!(e, Ev::BackendRequest { .. })).count();
            assert_eq!(surfaced, 1, "an accepted back-end request is one event");
        }
        drained
    }

    /// The VMM answers the oldest back-end request.
    pub(crate) fn answer(&mut self, frontend: &mut Frontend, answer: BackendAnswer) -> Drained {
        let front = self.backend_pending.front().copied();
        let result = frontend.handle_backend_answer(answer);
        let mut expect = None;
        if result.is_ok() {
            let (code, waits) = front.expect("an answer was accepted with nothing to answer");
            self.backend_pending.pop_front();
            if let BackendAnswer::SharedObject(Ok(fd)) = answer {
                assert_eq!(code, BackendCode::SharedObjectLookup, "fd answer to {code}");
                self.ledger.enter(fd, false);
            }
            expect = waits.then_some(code);
        }
        let drained = self.drain(frontend, Step::Answer(expect));
        if expect.is_some() {
            assert_eq!(drained.backend_replies.len(), 1, "a waiting back-end got no reply");
        }
        drained
    }

    /// Ends the connection: a frame that cannot parse closes it, then every token must be out.
    pub(crate) fn finish(&mut self, frontend: &mut Frontend) {
        let _ = self.reply(frontend, &[], 0);
        assert!(self.closed && frontend.is_closed(), "a malformed reply must close");
        self.ledger.assert_balanced();
    }

    fn drain(&mut self, frontend: &mut Frontend, step: Step) -> Drained {
        let mut out = Drained::default();
        let mut buf = vec![0u8; vhu_core::limits::MAX_FRAME_SIZE];
        let mut answer_reply = match step {
            Step::Answer(code) => code,
            Step::BackendRequest { accepted: false, reply } => reply,
            _ => None,
        };
        let mut settled = false;
        for _ in 0..MAX_OUTPUTS_PER_DRAIN {
            let Some(output) = frontend.poll_output() else {
                settled = true;
                break;
            };
            if self.closed {
                match output {
                    Output::CloseFd(fd) => {
                        self.ledger.left(fd);
                        continue;
                    }
                    other => panic!("after Close only CloseFd may follow, got {other:?}"),
                }
            }
            match output {
                Output::Request { request, need_reply } => {
                    let frame = self.on_request(&request, need_reply, &mut buf);
                    out.requests.push(frame);
                }
                Output::BackendReply(reply) => {
                    let expected = answer_reply.take();
                    assert_eq!(
                        expected,
                        Some(reply.code()),
                        "back-end reply {reply:?} answers no waiting request"
                    );
                    let len = reply.encode_into(&mut buf).expect("back-end reply encodes");
                    let fds: Vec<FdToken> = reply.fds().into_iter().collect();
                    let again = BackendReply::parse(&buf[..len], &fds).expect("reply re-parses");
                    assert_eq!(again, reply);
                    for fd in &fds {
                        self.ledger.left(*fd);
                    }
                    out.backend_replies.push(Frame {
                        bytes: buf[..len].to_vec(),
                        fds: fds.len(),
                        code: reply.code().as_u32(),
                    });
                }
                Output::Event(event) => {
                    let ev = self.on_event(event, step);
                    out.events.push(ev);
                }
                Output::CloseFd(fd) => self.ledger.left(fd),
                Output::Close(_) => {
                    self.closed = true;
                    self.awaiting = None;
                    self.backend_pending.clear();
                    out.closed = true;
                }
            }
        }
        assert!(settled, "the front-end never stops producing outputs");
        self.after_drain(frontend);
        out
    }

    fn on_request(&mut self, request: &Request<'_>, need_reply: bool, buf: &mut [u8]) -> Frame {
        let code = request.code();
        assert!(
            self.awaiting.is_none(),
            "{code} sent while {:?} waits for its reply",
            self.awaiting
        );
        let kind = reply_kind(code);
        assert_eq!(
            need_reply,
            self.reply_ack && kind == ReplyKind::AckOnly,
            "{code}: NEED_REPLY must be set exactly when REPLY_ACK was acked and there is no reply"
        );
        let acked = self.sent_protocol.unwrap_or(ProtocolFeatures::empty());
        if let Some(feature) = needs(code) {
            assert!(acked.contains(feature), "{code} sent without {feature:?} acked");
        }
        let len = request.encode_into(need_reply, buf).expect("request encodes");
        let fds = request.fds();
        let again = Request::parse(&buf[..len], &fds).expect("request re-parses");
        assert_eq!(again.message, *request, "request changed through the wire");
        assert_eq!(again.need_reply, need_reply);
        for fd in &fds {
            self.ledger.left(*fd);
        }
        let detail = match *request {
            Request::SetProtocolFeatures(features) => {
                assert!(self.sent_features.is_none(), "protocol features after SET_FEATURES");
                assert!(SUPPORTED_PROTOCOL_FEATURES.contains(features), "acked {features:?}");
                assert_eq!(broken_dependency(features), None, "acked {features:?}");
                self.reply_ack = features.contains(ProtocolFeatures::REPLY_ACK);
                self.sent_protocol = Some(features);
                Detail::None
            }
            Request::SetFeatures(features) => {
                self.sent_features = Some(features);
                Detail::None
            }
            Request::SetVringEnable { .. } => {
                let features = self.sent_features.unwrap_or(VirtioFeatures::empty());
                assert!(
                    features.contains(VirtioFeatures::PROTOCOL_FEATURES),
                    "SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES"
                );
                Detail::None
            }
            Request::GetVringBase { index } | Request::GetVringBaseSkipDrain { index } => {
                Detail::Vring(index)
            }
            Request::GetConfig { offset, size, .. } => Detail::Config { offset, size },
            Request::SetDeviceStateFd { .. } => Detail::DeviceState,
            _ => Detail::None,
        };
        if need_reply || kind != ReplyKind::AckOnly {
            self.awaiting = Some(Sent { code, need_reply, detail });
        }
        Frame { bytes: buf[..len].to_vec(), fds: fds.len(), code: code.as_u32() }
    }

    fn on_event(&mut self, event: Event<'_>, step: Step) -> Ev {
        // Events that answer a request come only from the reply to it.
        let answered = |code: FrontendCode| match step {
            Step::Reply(Some(sent)) if sent.code == code => sent,
            _ => panic!("event answering {code} in step {step:?}"),
        };
        match event {
            Event::Connected(negotiated) => {
                assert!(!self.connected, "connected twice");
                self.connected = true;
                assert_eq!(
                    negotiated.protocol_features,
                    self.sent_protocol.unwrap_or(ProtocolFeatures::empty()),
                    "reported protocol features differ from those sent"
                );
                assert_eq!(Some(negotiated.features), self.sent_features, "features differ");
                assert!(!negotiated.features.contains(VirtioFeatures::LOG_ALL));
                self.negotiated = Some(negotiated);
                Ev::Connected(negotiated)
            }
            Event::Done(code) => {
                answered(code);
                Ev::Done(code)
            }
            Event::Failed(error) => {
                assert!(matches!(step, Step::Reply(Some(_))), "{error:?} outside a reply");
                if let FrontendError::Nack { request, status } = error {
                    answered(request);
                    assert_ne!(status, 0, "a failure with status 0");
                }
                Ev::Failed(error)
            }
            Event::VringStopped { index, base } => {
                let Step::Reply(Some(sent)) = step else {
                    panic!("VringStopped outside a reply");
                };
                assert!(matches!(
                    sent.code,
                    FrontendCode::GetVringBase | FrontendCode::GetVringBaseSkipDrain
                ));
                assert_eq!(sent.detail, Detail::Vring(index), "stopped another ring");
                Ev::VringStopped { index, base }
            }
            Event::ConfigRead { offset, data } => {
                let sent = answered(FrontendCode::GetConfig);
                let size = u32::try_from(data.len()).expect("config fits u32");
                assert_eq!(sent.detail, Detail::Config { offset, size }, "config read mismatch");
                Ev::ConfigRead { offset, data: data.to_vec() }
            }
            Event::Status(status) => {
                answered(FrontendCode::GetStatus);
                Ev::Status(status)
            }
            Event::InflightFd { desc, fd } => {
                answered(FrontendCode::GetInflightFd);
                assert_eq!(desc.mmap_size == 0, fd.is_none(), "inflight fd without area");
                if let Some(fd) = fd {
                    self.ledger.left(fd);
                }
                Ev::InflightFd
            }
            Event::DeviceStateFd { fd, .. } => {
                let sent = answered(FrontendCode::SetDeviceStateFd);
                assert_eq!(sent.detail, Detail::DeviceState);
                if let Some(fd) = fd {
                    self.ledger.left(fd);
                }
                Ev::DeviceStateFd
            }
            Event::SharedObject { fd, .. } => {
                answered(FrontendCode::GetSharedObject);
                self.ledger.left(fd);
                Ev::SharedObject
            }
            Event::BackendRequest { request, need_reply } => {
                assert!(
                    matches!(step, Step::BackendRequest { accepted: true, .. }),
                    "back-end request event in step {step:?}"
                );
                for fd in request.fds() {
                    self.ledger.left(fd);
                }
                let lookup = request.code() == BackendCode::SharedObjectLookup;
                assert!(!lookup || need_reply, "a lookup always waits for its answer");
                self.backend_pending.push_back((request.code(), need_reply));
                Ev::BackendRequest { request, need_reply }
            }
            other => panic!("unknown event {other:?}"),
        }
    }

    fn after_drain(&mut self, frontend: &Frontend) {
        self.ledger.assert_transients_left();
        assert_eq!(frontend.is_closed(), self.closed, "closed state");
        assert_eq!(frontend.is_connected(), self.connected && !self.closed, "connected state");
        assert_eq!(frontend.is_awaiting_reply(), self.awaiting.is_some(), "awaiting state");
        if self.closed || (self.connected && self.awaiting.is_none()) {
            // Nothing can be queued: every token given to the front-end is out.
            self.ledger.assert_balanced();
        }
        if !self.closed {
            let waits = self.backend_pending.iter().any(|(_, waits)| *waits);
            let idle = self.awaiting.is_none() && !waits;
            assert_eq!(frontend.is_idle(), idle, "idle state");
        }
    }
}

/// The request code in a frame's header, if it has one.
fn frame_code(frame: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = frame.get(..4)?.try_into().ok()?;
    Some(u32::from_ne_bytes(bytes))
}

/// How the fuzzer picks a saved negotiation for a restore.
#[derive(Arbitrary, Debug)]
pub(crate) struct Saved {
    /// Use the outcome of the last handshake, if there was one.
    last: bool,
    offered: u64,
    features: u64,
    protocol: u32,
    /// Keep only the protocol bits the front-end supports.
    supported_only: bool,
    queues: Option<u8>,
    slots: Option<u16>,
}

impl Saved {
    pub(crate) fn negotiated(&self, last: Option<Negotiated>) -> Negotiated {
        if let Some(last) = last.filter(|_| self.last) {
            return last;
        }
        let mut protocol = ProtocolFeatures::from_bits_retain(u64::from(self.protocol));
        if self.supported_only {
            protocol &= SUPPORTED_PROTOCOL_FEATURES;
        }
        Negotiated {
            offered_features: VirtioFeatures::from_bits_retain(self.offered),
            features: VirtioFeatures::from_bits_retain(self.features),
            protocol_features: protocol,
            queues: self.queues.map(u16::from),
            max_mem_slots: self.slots,
        }
    }
}

/// How the fuzzer configures a front-end.
#[derive(Arbitrary, Debug)]
pub(crate) struct Config {
    device_features: u64,
    /// Protocol features toggled from the default set.
    toggle: u32,
    protocol_features: bool,
}

impl Config {
    pub(crate) fn build(&self) -> FrontendConfig {
        let mut config =
            FrontendConfig::new(VirtioFeatures::from_bits_retain(self.device_features));
        config.protocol_features ^= ProtocolFeatures::from_bits_retain(u64::from(self.toggle));
        if !self.protocol_features {
            config.features.remove(VirtioFeatures::PROTOCOL_FEATURES);
        }
        config
    }
}

/// A ring as the VMM sets it up.
#[derive(Arbitrary, Debug)]
pub(crate) struct Ring {
    /// log2 of the queue size, or a raw size when above 15.
    pub(crate) size: u8,
    pub(crate) raw_size: u16,
    pub(crate) base: u32,
    pub(crate) log: bool,
    pub(crate) call: bool,
    pub(crate) kick: bool,
}

/// The VMM's answer to the oldest back-end request.
#[derive(Arbitrary, Debug)]
pub(crate) enum Answer {
    Done(Option<u8>),
    SharedObject(Option<u8>),
}

/// One call of the VMM on the front-end.
#[derive(Arbitrary, Debug)]
pub(crate) enum Vmm {
    Connect(bool),
    Restore(Saved, bool),
    SetMemTable(Vec<(u8, u8)>),
    AddRegion(u8, u8),
    /// Remove the region at this position of the front-end's table (or a made-up one).
    RemoveRegion(u8),
    StartVring(u8, Ring),
    StopVring(u8),
    StopVringSkipDrain(u8),
    SetVringEnable(u8, bool),
    SetVringCall(u8, bool),
    SetVringErr(u8, bool),
    SetVringAddr(u8, bool),
    VringKick(u8),
    SetFeatures(u64),
    /// The features the handshake acked, with these bits dropped.
    SetNegotiatedFeatures(u64),
    SetLogging(bool),
    GetConfig(u8, u16),
    SetConfig(u8, Vec<u8>, ConfigFlags),
    SetStatus(u8),
    GetStatus,
    ResetDevice,
    GetSharedObject(u8),
    SetDeviceStateFd(TransferDirection),
    CheckDeviceState,
    SetLogBase(u16),
    SetLogFd,
    GetInflightFd(u8, u16),
    SetInflightFd(u16),
    Answer(Answer),
}

impl Vmm {
    /// Makes the call, with fresh tokens from the model's ledger, and drains the front-end.
    pub(crate) fn apply(
        self,
        frontend: &mut Frontend,
        model: &mut Model,
        last: Option<Negotiated>,
    ) -> Drained {
        let mut fds = Vec::new();
        let mut fresh = |model: &mut Model| {
            let fd = model.ledger.fresh();
            fds.push(fd);
            fd
        };
        let v = VringIndex;
        let result = match self {
            Self::Connect(channel) => {
                let channel = channel.then(|| fresh(model));
                frontend.connect(channel)
            }
            Self::Restore(saved, channel) => {
                let channel = channel.then(|| fresh(model));
                frontend.restore(saved.negotiated(last), channel)
            }
            Self::SetMemTable(regions) => {
                let table: Vec<(Region, FdToken)> = regions
                    .iter()
                    .take(10)
                    .map(|(slot, pages)| (region(*slot, *pages), fresh(model)))
                    .collect();
                frontend.set_mem_table(&table)
            }
            Self::AddRegion(slot, pages) => {
                let fd = fresh(model);
                frontend.add_mem_region(region(slot, pages), fd)
            }
            Self::RemoveRegion(pick) => {
                let regions: Vec<Region> = frontend.regions().iter().copied().collect();
                let chosen = match regions.len() {
                    0 => region(pick, 1),
                    n => regions[usize::from(pick) % n],
                };
                frontend.remove_mem_region(chosen)
            }
            Self::StartVring(index, ring) => {
                let ring_base = RAM + (u64::from(index) << 16);
                let size = if ring.size > 15 { ring.raw_size } else { 1 << ring.size };
                let setup = VringSetup {
                    size,
                    base: VringBase(ring.base),
                    descriptor: ring_base,
                    available: ring_base + 0x4000,
                    used: ring_base + 0x8000,
                    log: ring.log.then_some(0x1000),
                    call: ring.call.then(|| fresh(model)),
                    kick: ring.kick.then(|| fresh(model)),
                };
                frontend.start_vring(v(index), setup)
            }
            Self::StopVring(index) => frontend.stop_vring(v(index)),
            Self::StopVringSkipDrain(index) => frontend.stop_vring_skip_drain(v(index)),
            Self::SetVringEnable(index, enable) => frontend.set_vring_enable(v(index), enable),
            Self::SetVringCall(index, fd) => {
                let fd = fd.then(|| fresh(model));
                frontend.set_vring_call(v(index), fd)
            }
            Self::SetVringErr(index, fd) => {
                let fd = fd.then(|| fresh(model));
                frontend.set_vring_err(v(index), fd)
            }
            Self::SetVringAddr(index, log) => {
                let ring_base = RAM + (u64::from(index) << 16);
                frontend.set_vring_addr(VringAddr {
                    index: v(index),
                    flags: if log { VringAddrFlags::LOG } else { VringAddrFlags::empty() },
                    descriptor: ring_base,
                    used: ring_base + 0x8000,
                    available: ring_base + 0x4000,
                    log: 0x1000,
                })
            }
            Self::VringKick(index) => frontend.vring_kick(v(index)),
            Self::SetFeatures(bits) => {
                frontend.set_features(VirtioFeatures::from_bits_retain(bits))
            }
            Self::SetNegotiatedFeatures(drop) => {
                let features = frontend.negotiated().map_or(VirtioFeatures::empty(), |n| {
                    n.features.difference(VirtioFeatures::from_bits_retain(drop))
                });
                frontend.set_features(features)
            }
            Self::SetLogging(on) => frontend.set_logging(on),
            Self::GetConfig(offset, size) => {
                frontend.get_config(u32::from(offset), u32::from(size % 300))
            }
            Self::SetConfig(offset, data, flags) => {
                let data: Vec<u8> = data.into_iter().take(300).collect();
                frontend.set_config(u32::from(offset), &data, flags)
            }
            Self::SetStatus(status) => frontend.set_status(status),
            Self::GetStatus => frontend.get_status(),
            Self::ResetDevice => frontend.reset_device(),
            Self::GetSharedObject(byte) => frontend.get_shared_object(Uuid([byte; 16])),
            Self::SetDeviceStateFd(direction) => {
                let fd = fresh(model);
                frontend.set_device_state_fd(direction, fd)
            }
            Self::CheckDeviceState => frontend.check_device_state(),
            Self::SetLogBase(pages) => {
                let fd = fresh(model);
                frontend.set_log_base(u64::from(pages) << 12, 0, fd)
            }
            Self::SetLogFd => {
                let fd = fresh(model);
                frontend.set_log_fd(fd)
            }
            Self::GetInflightFd(queues, size) => frontend.get_inflight_fd(u16::from(queues), size),
            Self::SetInflightFd(pages) => {
                let fd = fresh(model);
                let desc = InflightDesc {
                    mmap_size: u64::from(pages) << 12,
                    mmap_offset: 0,
                    num_queues: 2,
                    queue_size: 256,
                };
                frontend.set_inflight_fd(desc, fd)
            }
            Self::Answer(answer) => {
                let answer = match answer {
                    Answer::Done(None) => BackendAnswer::Done(Ok(())),
                    Answer::Done(Some(status)) => BackendAnswer::Done(Err(u64::from(status))),
                    Answer::SharedObject(None) => BackendAnswer::SharedObject(Ok(fresh(model))),
                    Answer::SharedObject(Some(status)) => {
                        BackendAnswer::SharedObject(Err(u64::from(status)))
                    }
                };
                return model.answer(frontend, answer);
            }
        };
        model.call(frontend, &fds, result)
    }
}
