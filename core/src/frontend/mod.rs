//! The vhost-user front-end (the VMM side) as a pure state machine.
//!
//! [`Frontend`] owns every protocol rule of the front-end side: the connect and restore
//! handshakes, which requests carry NEED_REPLY, the one-reply-at-a-time ordering of the main
//! socket, the checks of each reply against the request waiting for it, and the back-end channel's
//! requests and answers. It performs no I/O and holds no real descriptors: descriptors are
//! [`FdToken`]s the caller owns, and every token it receives leaves it exactly once (see
//! [`Output`]). It does not map memory, create eventfds or decide when a VMM starts or migrates a
//! device: those are the VMM's calls.
//!
//! # Driving it
//!
//! Call a VMM operation ([`Frontend::connect`], [`Frontend::set_mem_table`],
//! [`Frontend::start_vring`], ...), feed every reply from the main socket with
//! [`Frontend::handle_reply`] and every request from the back-end channel with
//! [`Frontend::handle_backend_request`]; after **every** call and input, call
//! [`Frontend::poll_output`] until it returns `None` and carry out each [`Output`] in order.
//! Requests are sent one at a time once a reply is expected: while a request waits for its reply
//! (a typed reply, or the REPLY_ACK `u64`), later requests stay queued, in order. Operations other
//! than `connect`/`restore` need the handshake done: wait for [`Event::Connected`].
//!
//! ```
//! use vhu_core::frontend::{Frontend, FrontendConfig, Output};
//! use vhu_core::{Request, VirtioFeatures};
//!
//! let mut frontend = Frontend::new(FrontendConfig::new(VirtioFeatures::empty()));
//! frontend.connect(None).unwrap();
//! let mut sent = Vec::new();
//! while let Some(output) = frontend.poll_output() {
//!     if let Output::Request { request, need_reply } = output {
//!         let mut buf = [0u8; 64];
//!         let len = request.encode_into(need_reply, &mut buf).unwrap();
//!         sent.push(buf[..len].to_vec());
//!     }
//! }
//! // SET_OWNER goes out, then GET_FEATURES, which waits for its reply.
//! assert_eq!(sent.len(), 2);
//! assert_eq!(Request::parse(&sent[1], &[]).unwrap().message, Request::GetFeatures);
//! ```

mod channel;
mod device;
mod error;
mod handshake;
mod memory;
mod output;
mod postcopy;
mod queue;
mod reply;
mod undo;
mod vrings;

pub use error::{FrontendError, ShmemConfigProblem};
pub use output::{BackendAnswer, Event, FrontendConfig, Negotiated, Output, VringSetup};
pub use queue::MAX_QUEUED_REQUESTS;

use crate::limits::{
    MAX_CONFIG_SIZE, MAX_CRYPTO_SESSION_SIZE, MAX_FDS_PER_MSG, MAX_MEM_TABLE_REGIONS, MAX_OUTPUTS,
    MAX_VRINGS,
};
use crate::message::{MemoryTable, Request};
use crate::protocol_error::{reply_kind, ReplyKind};
use crate::regions::RegionTable;
use crate::wire::{self, FrontendCode};
use crate::{FdToken, ProtocolFeatures, VirtioFeatures, VringIndex};
use arrayvec::ArrayVec;
use postcopy::{PostcopyAck, PostcopyPhase};
use queue::{Item, Queued, Queues};

/// Protocol features the front-end can drive and therefore acks when offered and wanted.
///
/// Not acked: XEN_MMAP (regions are always sent in the standard layout). PAGEFAULT is never
/// acked together with CONFIGURE_MEM_SLOTS (the newest spec forbids postcopy with memory slots):
/// a VMM that wants postcopy leaves CONFIGURE_MEM_SLOTS out of its wanted set.
pub const SUPPORTED_PROTOCOL_FEATURES: ProtocolFeatures =
    ProtocolFeatures::KNOWN.difference(ProtocolFeatures::XEN_MMAP);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing sent yet.
    Idle,
    /// `connect` or `restore` started; VMM operations wait for `Event::Connected`.
    Handshake,
    /// The handshake completed.
    Ready,
    /// The connection is closed; outputs only release tokens.
    Closed,
}

/// The request sent last, and whether it waits for a reply.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    queued: Queued,
    need_reply: bool,
    awaits: bool,
}

/// The front-end side of one vhost-user connection. See the module docs for the driving contract.
#[derive(Debug)]
pub struct Frontend {
    config: FrontendConfig,
    phase: Phase,
    negotiated: Negotiated,
    /// REPLY_ACK was acked by a SET_PROTOCOL_FEATURES already sent on this connection.
    reply_ack: bool,
    /// The back-end channel socket, held until the handshake sends or releases it.
    backend_channel: Option<FdToken>,
    regions: RegionTable,
    table_out: heapless::Vec<wire::MemoryRegion, MAX_MEM_TABLE_REGIONS>,
    table_fds: heapless::Vec<FdToken, MAX_MEM_TABLE_REGIONS>,
    config_out: heapless::Vec<u8, MAX_CONFIG_SIZE>,
    /// The CREATE_CRYPTO_SESSION payload waiting to be sent, then the session the reply
    /// returned.
    crypto: ArrayVec<u8, MAX_CRYPTO_SESSION_SIZE>,
    config_in: heapless::Vec<u8, MAX_CONFIG_SIZE>,
    /// The last GET_SHMEM_CONFIG reply.
    shmem: Option<crate::wire::ShmemConfig>,
    started: [u64; MAX_VRINGS / 64],
    logging: bool,
    /// A reset made the back-end forget the acked features; SET_FEATURES has not resent them.
    features_forgotten: bool,
    /// The view before the SET_FEATURES or SET_MEM_TABLE waiting for its status (`undo.rs`).
    before: Option<undo::Before>,
    postcopy: PostcopyPhase,
    /// Where the acknowledgement of a postcopy SET_MEM_TABLE reply stands.
    postcopy_ack: PostcopyAck,
    /// The mapping bases of the last postcopy SET_MEM_TABLE reply, in table order.
    postcopy_bases: heapless::Vec<u64, MAX_MEM_TABLE_REGIONS>,
    queues: Queues,
    in_flight: Option<InFlight>,
    releasing: heapless::Vec<FdToken, MAX_FDS_PER_MSG>,
    /// The back-end requests not answered yet, oldest first: surfaced to the VMM, or refused
    /// while earlier ones waited (their answers go out in order).
    backend_pending: heapless::Deque<channel::Unanswered, MAX_OUTPUTS>,
}

impl Frontend {
    /// A front-end for a fresh connection that will negotiate `config`.
    ///
    /// Never inlined: a caller building it in place passes that memory as the return slot, and
    /// only the few fields of a fresh front-end are written there, not the tables' room (tens
    /// of KiB); inlined, it would be built on the caller's stack and copied whole.
    #[inline(never)]
    pub fn new(config: FrontendConfig) -> Self {
        Self {
            config,
            phase: Phase::Idle,
            negotiated: Negotiated {
                offered_features: VirtioFeatures::empty(),
                features: VirtioFeatures::empty(),
                protocol_features: ProtocolFeatures::empty(),
                queues: None,
                max_mem_slots: None,
            },
            reply_ack: false,
            backend_channel: None,
            regions: RegionTable::new(),
            table_out: heapless::Vec::new(),
            table_fds: heapless::Vec::new(),
            config_out: heapless::Vec::new(),
            crypto: ArrayVec::new(),
            config_in: heapless::Vec::new(),
            shmem: None,
            started: [0; MAX_VRINGS / 64],
            logging: false,
            features_forgotten: false,
            before: None,
            postcopy: PostcopyPhase::Off,
            postcopy_ack: PostcopyAck::None,
            postcopy_bases: heapless::Vec::new(),
            queues: Queues::new(),
            in_flight: None,
            releasing: heapless::Vec::new(),
            backend_pending: heapless::Deque::new(),
        }
    }

    /// What the handshake negotiated, once [`Event::Connected`] was emitted.
    pub fn negotiated(&self) -> Option<Negotiated> {
        (self.phase == Phase::Ready).then_some(self.negotiated)
    }

    /// Whether the handshake completed and the connection is open.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Whether the connection was closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether a request waits for its reply.
    pub fn is_awaiting_reply(&self) -> bool {
        self.in_flight.is_some_and(|f| f.awaits)
    }

    /// Whether nothing is queued, nothing waits for a reply, no back-end request waits for
    /// its answer and no postcopy acknowledgement waits to go out.
    pub fn is_idle(&self) -> bool {
        self.queues.is_empty()
            && !self.is_awaiting_reply()
            && self.postcopy_ack == PostcopyAck::None
            && !self.backend_pending.iter().any(channel::Unanswered::owes_reply)
    }

    /// Whether dirty logging (VHOST_F_LOG_ALL) is on.
    pub fn is_logging(&self) -> bool {
        self.logging
    }

    /// Whether the front-end started the ring and has not stopped it since.
    pub fn is_vring_started(&self, index: VringIndex) -> bool {
        let i = usize::from(index.0);
        self.started[i / 64] & (1 << (i % 64)) != 0
    }

    /// The memory regions as the front-end sent them.
    pub fn regions(&self) -> &RegionTable {
        &self.regions
    }

    /// The next thing the caller must do, or `None` when everything is drained (or the next
    /// request must wait for a reply).
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        if self.queues.take_overflow() {
            self.queues.clear_outputs();
            self.close(FrontendError::OutputOverflow);
        }
        if let Some(item) = self.queues.pop() {
            return Some(self.render(item));
        }
        if self.phase == Phase::Closed {
            return self.poll_release().map(Output::CloseFd);
        }
        if self.is_awaiting_reply() || self.is_awaiting_registration() {
            return None;
        }
        if let Some(ack) = self.take_postcopy_ack() {
            return Some(Output::Request { request: ack, need_reply: false });
        }
        let queued = self.queues.requests.pop_front()?;
        let code = queued.code();
        let kind = reply_kind(code);
        // Spec "REPLY_ACK": with the feature acked, NEED_REPLY goes on every request that has no
        // reply of its own. Whether it was acked is known only from what this front-end sent,
        // never from GET_* replies it may not have asked for (a restore sends none).
        let mut need_reply =
            (self.reply_ack && kind == ReplyKind::AckOnly) || postcopy::always_needs_reply(code);
        let mut awaits = need_reply || kind != ReplyKind::AckOnly;
        if queued == Queued::MemTable && self.is_postcopy_listening() {
            // Spec SET_MEM_TABLE: in postcopy the back-end answers with its bases and NEED_REPLY
            // is not set.
            need_reply = false;
            awaits = true;
        }
        if let Queued::Inline(Request::SetProtocolFeatures(acked)) = queued {
            self.reply_ack = acked.contains(ProtocolFeatures::REPLY_ACK);
        }
        self.in_flight = Some(InFlight { queued, need_reply, awaits });
        if !awaits {
            self.handle_done(code, false);
        }
        Some(Output::Request { request: self.render_request(&queued), need_reply })
    }

    fn render(&self, item: Item) -> Output<'_> {
        match item {
            Item::Out(output) => output,
            // The item is queued only after the reply was stored: never EMPTY.
            Item::ShmemConfig => Output::Event(Event::ShmemConfig(
                self.shmem.as_ref().unwrap_or(&wire::ShmemConfig::EMPTY),
            )),
            Item::PostcopyBases => Output::Event(Event::PostcopyBases(&self.postcopy_bases)),
            Item::CryptoSession => Output::Event(Event::CryptoSession(&self.crypto)),
            Item::ConfigRead { offset } => {
                Output::Event(Event::ConfigRead { offset, data: &self.config_in })
            }
        }
    }

    fn render_request(&self, queued: &Queued) -> Request<'_> {
        match *queued {
            // Queued in the VMM's form, so a refusal undoes exactly what was recorded; sent in
            // the form the back-end reads ([`Frontend::wire_region`]).
            Queued::Inline(Request::AddMemReg { region, fd }) => {
                Request::AddMemReg { region: self.wire_region(region), fd }
            }
            Queued::Inline(Request::RemMemReg { region, fd }) => {
                Request::RemMemReg { region: self.wire_region(region), fd }
            }
            Queued::Inline(request) => request,
            Queued::MemTable => Request::SetMemTable {
                table: MemoryTable::Standard(&self.table_out),
                fds: &self.table_fds,
            },
            Queued::SetConfig { offset, flags } => {
                Request::SetConfig { offset, flags, data: &self.config_out }
            }
            Queued::CryptoSession => Request::CreateCryptoSession(&self.crypto),
            Queued::Barrier(_) => Request::GetFeatures,
        }
    }

    /// After a close: the tokens of requests that were never sent, one at a time.
    fn poll_release(&mut self) -> Option<FdToken> {
        loop {
            if let Some(fd) = self.releasing.pop() {
                return Some(fd);
            }
            let queued = self.queues.requests.pop_front()?;
            self.releasing = queued.fds(&self.table_fds);
        }
    }

    /// A request completed: sent without waiting (`confirmed` false) or acknowledged with 0.
    fn handle_done(&mut self, code: FrontendCode, confirmed: bool) {
        if self.phase == Phase::Handshake {
            // SET_FEATURES ends both handshakes.
            if code == FrontendCode::SetFeatures {
                self.phase = Phase::Ready;
                self.queues.push_event(Event::Connected(self.negotiated));
            }
        } else if confirmed {
            self.postcopy_step_done(code);
            self.queues.push_event(Event::Done(code));
        }
    }

    /// The one policy for errors: a failure the back-end reports on an open connection (a
    /// non-zero status, an empty GET_CONFIG reply) is an event and the session goes on; anything
    /// else — a reply that does not fit, a protocol violation, any failure during the handshake —
    /// closes the connection.
    fn fail(&mut self, error: FrontendError) {
        let reported =
            matches!(error, FrontendError::Nack { .. } | FrontendError::ConfigReadFailed { .. });
        if reported && self.phase == Phase::Ready {
            self.queues.push_event(Event::Failed(error));
        } else {
            self.close(error);
        }
    }

    fn close(&mut self, error: FrontendError) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.in_flight = None;
        self.backend_pending.clear();
        if let Some(fd) = self.backend_channel.take() {
            self.queues.push_close_fd(fd);
        }
        self.queues.push(Item::Out(Output::Close(error)));
    }

    /// Releases tokens the front-end does not hand off.
    fn release(&mut self, fds: &[FdToken]) {
        for fd in fds {
            self.queues.push_close_fd(*fd);
        }
    }

    fn require_ready(&self) -> Result<(), FrontendError> {
        match self.phase {
            Phase::Ready => Ok(()),
            Phase::Closed => Err(FrontendError::Closed),
            Phase::Idle | Phase::Handshake => Err(FrontendError::NotConnected),
        }
    }

    fn is_acked(&self, feature: ProtocolFeatures) -> bool {
        self.negotiated.protocol_features.contains(feature)
    }

    /// The handshake is done and `feature` was acked, as `code` needs.
    fn require(
        &self,
        code: FrontendCode,
        feature: ProtocolFeatures,
        name: &'static str,
    ) -> Result<(), FrontendError> {
        self.require_ready()?;
        if self.is_acked(feature) {
            Ok(())
        } else {
            Err(FrontendError::NotNegotiated { code, feature: name })
        }
    }

    /// Whether VHOST_USER_F_PROTOCOL_FEATURES was acked (rings then need SET_VRING_ENABLE).
    fn is_protocol_acked(&self) -> bool {
        self.negotiated.features.contains(VirtioFeatures::PROTOCOL_FEATURES)
    }

    /// Whether a request of `code` is queued, or sent and waiting for its reply.
    fn is_pending(&self, code: FrontendCode) -> bool {
        self.queues.is_queued(code)
            || self.in_flight.is_some_and(|f| f.awaits && f.queued.code() == code)
    }

    /// Queues `request`, which has no reply of its own, and, without REPLY_ACK, a GET_FEATURES
    /// whose reply tells the back-end handled it (as QEMU's `enforce_reply` does for a change
    /// the VMM must not outrun, such as dirty logging turned on).
    fn enqueue_confirmed(&mut self, request: Request<'static>) -> Result<(), FrontendError> {
        if self.is_acked(ProtocolFeatures::REPLY_ACK) {
            return self.enqueue(&[request]);
        }
        self.queues.reserve(2)?;
        self.queues.push_request(Queued::Inline(request));
        self.queues.push_request(Queued::Barrier(request.code()));
        Ok(())
    }

    /// Queues `requests` in order, or none of them if they do not all fit.
    fn enqueue(&mut self, requests: &[Request<'static>]) -> Result<(), FrontendError> {
        self.queues.reserve(requests.len())?;
        for request in requests {
            self.queues.push_request(Queued::Inline(*request));
        }
        Ok(())
    }

    fn set_started(&mut self, index: VringIndex, started: bool) {
        self.forget_view_before();
        let i = usize::from(index.0);
        if started {
            self.started[i / 64] |= 1 << (i % 64);
        } else {
            self.started[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Whether every ring is stopped (spec "Suspended device state").
    fn is_suspended(&self) -> bool {
        self.started.iter().all(|word| *word == 0)
    }
}
