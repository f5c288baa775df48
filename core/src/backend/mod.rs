//! The vhost-user back-end as a pure state machine.
//!
//! [`Backend`] owns every protocol rule of the back-end side: negotiation, REPLY_ACK, the memory
//! table, the vring lifecycle, config, status, inflight tracking, device-state transfer and the
//! back-end channel. It performs no I/O and holds no real descriptors.
//!
//! # Driving it
//!
//! Feed one complete frame with [`Backend::handle_frame`] (or a [`Completion`] with
//! [`Backend::handle_completion`]), then call [`Backend::poll_output`] until it returns `None`,
//! carrying out each [`Output`] in order: send replies, execute actions, close on
//! [`Output::Close`]. Do this after **every** input. When an action says it completes (for example
//! [`Action::StopVring`]), report the outcome with `handle_completion` before feeding the next
//! frame; the reply the front-end waits for follows the completion.
//!
//! ```
//! use vhu_core::backend::{Backend, BackendSpec, Output};
//! use vhu_core::{Reply, Request};
//!
//! let mut backend = Backend::new(BackendSpec::new(2, 1024)).expect("valid spec");
//! let mut buf = [0u8; 64];
//! let len = Request::GetFeatures.encode_into(false, &mut buf).unwrap();
//! backend.handle_frame(&buf[..len], &[]).unwrap();
//! match backend.poll_output() {
//!     Some(Output::Reply(Reply::Features(features))) => assert!(!features.is_empty()),
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert!(backend.poll_output().is_none());
//! ```

mod channel;
mod device;
mod memory;
mod output;
mod outstanding;
mod postcopy;
mod queue;
mod spec;
mod vrings;

pub use output::{Action, Completion, Output, VringConfig};
pub use outstanding::{BackendOutcome, BackendRequestId, BackendResult, MAX_OUTSTANDING};
pub use spec::{
    broken_dependency, conflict, BackendSpec, CheckedSpec, SpecError, CONFLICTS, DEPENDENCIES,
    SUPPORTED_PROTOCOL_FEATURES,
};

use arrayvec::ArrayVec;
use zerocopy::FromBytes;

use crate::message::{ConfigFlags, Region, Reply, Request, VringAddr};
use crate::protocol_error::{disposition, reply_kind, Disposition, ReplyKind};
use crate::regions::RegionTable;
use crate::vring::RingState;
use crate::wire::{self, FrontendCode, Header};
use crate::{FdToken, ProtocolError, ProtocolFeatures, VirtioFeatures, VringIndex, WireError};
use queue::{Item, OutputQueue};
use vrings::Vring;

/// A request waiting for a completion from the driver.
#[derive(Clone, Debug)]
enum Pending {
    /// SET_MEM_TABLE: maps issued for the staged table.
    MemTable,
    /// ADD_MEM_REG: map issued for this region.
    AddRegion(Region),
    /// SET_LOG_BASE: map issued; the reply echoes the log description.
    Log,
    /// GET_VRING_BASE (`skip_drain` false) or GET_VRING_BASE_SKIP_DRAIN.
    StopVring { index: VringIndex, skip_drain: bool },
    /// GET_CONFIG of `size` bytes at `offset`.
    ConfigRead { offset: u32, size: u32, flags: ConfigFlags },
    /// SET_CONFIG, IOTLB_MSG, SET_INFLIGHT_FD, CHECK_DEVICE_STATE, RESET_DEVICE: an ack or
    /// status follows.
    Status(FrontendCode),
    /// SET_VRING_ADDR that moves (or changes the logging of) a started ring to these
    /// addresses: the device runs it there once it took them.
    MoveVring(VringAddr),
    /// SET_VRING_KICK or VRING_KICK (`code`) that starts ring `index`: an ack or status
    /// follows, and a ring the device could not start is not started.
    StartVring { code: FrontendCode, index: VringIndex },
    /// GET_INFLIGHT_FD.
    Inflight(crate::message::InflightDesc),
    /// SET_DEVICE_STATE_FD.
    DeviceState,
    /// SET_BACKEND_REQ_FD: whether the driver took the channel's socket.
    BackendChannel,
    /// GET_SHARED_OBJECT.
    SharedObject,
    /// POSTCOPY_ADVISE.
    Userfaultfd,
}

/// The back-end side of one vhost-user connection. See the module docs for the driving contract.
#[derive(Debug)]
pub struct Backend {
    spec: BackendSpec,
    /// The GET_SHMEM_CONFIG reply, built when asked for.
    shmem: Option<wire::ShmemConfig>,
    owned: bool,
    acked_features: Option<VirtioFeatures>,
    acked_protocol: ProtocolFeatures,
    regions: RegionTable,
    staged: heapless::Vec<Region, { crate::limits::MAX_MEM_TABLE_REGIONS }>,
    vrings: ArrayVec<Vring, { crate::limits::MAX_QUEUES }>,
    status: u8,
    backend_channel: bool,
    outstanding: outstanding::Outstanding,
    logging: bool,
    pending: Option<(Pending, bool)>,
    outputs: OutputQueue,
    config: [u8; crate::limits::MAX_CONFIG_SIZE],
    config_len: usize,
    log_reply: [u8; 16],
    postcopy: postcopy::Postcopy,
}

impl Backend {
    /// A back-end for a fresh connection.
    pub fn new(spec: BackendSpec) -> Result<Self, SpecError> {
        Ok(Self::from_checked(spec.check()?))
    }

    /// A back-end for a fresh connection, from a spec already checked: infallible, so a
    /// transport can build it straight into the memory that keeps it.
    ///
    /// Never inlined: a caller building it in place passes that memory as the return slot, and
    /// only the few fields of a fresh back-end are written there, not the tables' room (tens of
    /// KiB); inlined, it would be built on the caller's stack and copied whole.
    #[inline(never)]
    pub fn from_checked(spec: CheckedSpec) -> Self {
        let CheckedSpec(spec) = spec;
        Self {
            spec,
            shmem: None,
            owned: false,
            acked_features: None,
            acked_protocol: ProtocolFeatures::empty(),
            regions: RegionTable::new(),
            staged: heapless::Vec::new(),
            // Laid out by the first frame (`lay_out_vrings`): filled here, they would be built
            // aside and copied, 16 KiB of room with them.
            vrings: ArrayVec::new(),
            status: 0,
            backend_channel: false,
            outstanding: outstanding::Outstanding::new(),
            logging: false,
            pending: None,
            outputs: OutputQueue::new(),
            config: [0; crate::limits::MAX_CONFIG_SIZE],
            config_len: 0,
            log_reply: [0; 16],
            postcopy: postcopy::Postcopy::new(),
        }
    }

    /// The spec this back-end serves.
    pub fn spec(&self) -> &BackendSpec {
        &self.spec
    }

    /// The virtio features acked by SET_FEATURES, if it was received.
    pub fn acked_features(&self) -> Option<VirtioFeatures> {
        self.acked_features
    }

    /// The protocol features acked by SET_PROTOCOL_FEATURES.
    pub fn acked_protocol_features(&self) -> ProtocolFeatures {
        self.acked_protocol
    }

    /// The current memory regions.
    pub fn regions(&self) -> &RegionTable {
        &self.regions
    }

    /// A ring's started/enabled state, if the index is in range.
    pub fn vring_state(&self, index: VringIndex) -> Option<RingState> {
        let i = usize::from(index.0);
        // Before the first frame the rings are not laid out yet: each has its initial state.
        (i < self.spec.queues)
            .then(|| self.vrings.get(i).map_or_else(RingState::default, |v| v.state))
    }

    /// Lays the rings out, in their initial state, before the first frame is handled.
    fn lay_out_vrings(&mut self) {
        if self.vrings.is_empty() {
            for _ in 0..self.spec.queues {
                // Cannot fail: validate() bounds queues by MAX_QUEUES, the capacity.
                let _ = self.vrings.try_push(Vring::default());
            }
        }
    }

    /// Whether every ring is stopped (spec "Suspended device state").
    pub fn is_suspended(&self) -> bool {
        self.vrings.iter().all(|v| !v.state.started)
    }

    /// Whether a completion is owed before the next frame.
    pub fn is_awaiting_completion(&self) -> bool {
        self.pending.is_some()
    }

    /// The request whose completion is owed, if any: a driver that cannot carry out an action
    /// answers it with the failure form of the completion that request expects.
    pub fn pending_request(&self) -> Option<FrontendCode> {
        self.pending.as_ref().map(|(pending, _)| pending_code(pending))
    }

    /// The next thing the driver must do, or `None` when everything is drained.
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        let item = self.outputs.pop(&self.vrings)?;
        Some(match item {
            Item::Out(out) => out,
            Item::ConfigReply { offset, flags } => Output::Reply(Reply::Config {
                offset,
                flags,
                data: &self.config[..self.config_len],
            }),
            Item::WriteConfig { offset, migration } => Output::Action(Action::WriteConfig {
                offset,
                data: &self.config[..self.config_len],
                migration,
            }),
            Item::LogReply => Output::Reply(Reply::LogBase(&self.log_reply)),
            // Queued only after the configuration was built: never EMPTY.
            Item::ShmemReply => Output::Reply(Reply::ShmemConfig(
                self.shmem.as_ref().unwrap_or(&wire::ShmemConfig::EMPTY),
            )),
            Item::PostcopyReply => Output::Reply(Reply::MemTableBases(self.postcopy.table())),
        })
    }

    /// Handles one complete frame and the descriptors that arrived with it.
    ///
    /// An `Err` has already been acted on (a NACK or a [`Output::Close`] is queued, and every token
    /// of the frame released); it is returned for logging.
    pub fn handle_frame(&mut self, frame: &[u8], fds: &[FdToken]) -> Result<(), ProtocolError> {
        self.lay_out_vrings();
        let header = Header::read_from_prefix(frame).ok().map(|(h, _)| h);
        let code = header.and_then(|h| FrontendCode::from_u32(h.request.get()));
        let need_reply =
            header.is_some_and(|h| h.flags.get() & wire::HeaderFlags::NEED_REPLY.bits() != 0);
        if let Some((pending, _)) = &self.pending {
            let error = ProtocolError::CompletionPending(pending_code(pending));
            return Err(self.refuse(code, need_reply, fds, error));
        }
        if self.postcopy.is_ack_due() {
            return self.postcopy_ack(frame, fds);
        }
        let incoming = match Request::parse(frame, fds) {
            Ok(incoming) => incoming,
            Err(WireError::UnknownRequest(request)) => {
                return Err(self.refuse_unknown(request, need_reply, fds));
            }
            Err(error) => return Err(self.refuse(code, need_reply, fds, error.into())),
        };
        let request = incoming.message;
        let code = request.code();
        let replies_before = self.outputs.replies();
        match self.dispatch(request, incoming.need_reply) {
            Ok(()) => {
                // REPLY_ACK (spec "REPLY_ACK"): a request with NEED_REPLY that produced no reply
                // of its own gets the u64 ack, whatever was negotiated or asked before.
                let replied = self.outputs.replies() != replies_before;
                if incoming.need_reply && !replied && self.pending.is_none() {
                    self.outputs.push_reply(Reply::Ack { request: code, status: 0 });
                }
                Ok(())
            }
            Err(error) => Err(self.refuse(Some(code), incoming.need_reply, fds, error)),
        }
    }

    /// Handles the driver's answer to the pending action.
    pub fn handle_completion(&mut self, completion: Completion<'_>) -> Result<(), ProtocolError> {
        let Some((pending, need_reply)) = self.pending.take() else {
            self.release_completion_fds(&completion);
            return Err(ProtocolError::UnexpectedCompletion);
        };
        self.complete(pending, need_reply, completion)
    }

    /// Refuses a request: releases its tokens and answers as [`disposition`] decides.
    fn refuse(
        &mut self,
        code: Option<FrontendCode>,
        need_reply: bool,
        fds: &[FdToken],
        error: ProtocolError,
    ) -> ProtocolError {
        for fd in fds {
            self.outputs.push_action(Action::CloseFd(*fd));
        }
        // While postcopy listens, a SET_MEM_TABLE owes the bases reply, which has no failure
        // form (reference "SET_MEM_TABLE": a reply in postcopy only, without NEED_REPLY): a
        // refused table cannot be answered, and the front-end would wait for good.
        let unanswerable = code == Some(FrontendCode::SetMemTable) && self.postcopy.is_listening();
        match (disposition(code, &error), code) {
            (Disposition::Nack, Some(code)) if !unanswerable => self.nack(code, need_reply, &error),
            _ => self.outputs.push_close(error),
        }
        error
    }

    /// Refuses a request whose code core does not know. Its frame was read whole (the header
    /// gives its length), so the stream is intact: the failure is answered when NEED_REPLY asks
    /// for it (spec "REPLY_ACK"), and the session goes on.
    fn refuse_unknown(&mut self, request: u32, need_reply: bool, fds: &[FdToken]) -> ProtocolError {
        for fd in fds {
            self.outputs.push_action(Action::CloseFd(*fd));
        }
        let error = ProtocolError::Wire(WireError::UnknownRequest(request));
        if need_reply {
            self.outputs.push(Item::Out(Output::Nack { request, status: error.status() }));
        }
        error
    }

    /// Sends the failure form of `code`'s answer.
    fn nack(&mut self, code: FrontendCode, need_reply: bool, error: &ProtocolError) {
        let status = error.status();
        match reply_kind(code) {
            ReplyKind::AckOnly if need_reply => {
                self.outputs.push_reply(Reply::Ack { request: code, status });
            }
            ReplyKind::AckOnly => {}
            ReplyKind::WithStatus => {
                let reply = match code {
                    FrontendCode::SetDeviceStateFd => {
                        Reply::DeviceStateFd { error: status.clamp(1, 0xff) as u8, fd: None }
                    }
                    FrontendCode::GetSharedObject => Reply::SharedObject { status, fd: None },
                    // A zero-sized area without fd: QEMU then goes on without inflight tracking.
                    FrontendCode::GetInflightFd => Reply::InflightFd {
                        desc: crate::message::InflightDesc {
                            mmap_size: 0,
                            mmap_offset: 0,
                            num_queues: 0,
                            queue_size: 0,
                        },
                        fd: None,
                    },
                    FrontendCode::GetConfig => {
                        // An empty config reply is the spec's failure answer to GET_CONFIG.
                        self.config_len = 0;
                        self.outputs
                            .push(Item::ConfigReply { offset: 0, flags: ConfigFlags::Writable });
                        return;
                    }
                    _ => Reply::Ack { request: code, status },
                };
                self.outputs.push_reply(reply);
            }
            ReplyKind::Typed => self.outputs.push_close(*error),
        }
    }

    fn release_completion_fds(&mut self, completion: &Completion<'_>) {
        let fd = match completion {
            Completion::InflightAllocated(Ok((fd, _))) => Some(*fd),
            Completion::DeviceStateFd(Ok(Some(fd))) => Some(*fd),
            Completion::SharedObject(Ok(fd)) | Completion::Userfaultfd(Ok(fd)) => Some(*fd),
            _ => None,
        };
        if let Some(fd) = fd {
            self.outputs.push_action(Action::CloseFd(fd));
        }
    }

    fn await_completion(&mut self, pending: Pending, need_reply: bool) {
        self.pending = Some((pending, need_reply));
    }

    fn acked_features_or_empty(&self) -> VirtioFeatures {
        self.acked_features.unwrap_or(VirtioFeatures::empty())
    }

    fn protocol_acked(&self, feature: ProtocolFeatures) -> bool {
        self.acked_protocol.contains(feature)
    }

    /// Requires `feature` to be acked for `code`.
    fn require(
        &self,
        code: FrontendCode,
        feature: ProtocolFeatures,
        name: &'static str,
    ) -> Result<(), ProtocolError> {
        if self.protocol_acked(feature) {
            Ok(())
        } else {
            Err(ProtocolError::NotNegotiated { code, feature: name })
        }
    }

    fn dispatch(&mut self, request: Request<'_>, need_reply: bool) -> Result<(), ProtocolError> {
        use Request as R;
        match request {
            R::GetFeatures => self.get_features(),
            R::SetFeatures(features) => self.set_features(features),
            R::SetOwner => self.set_owner(),
            R::ResetOwner => self.reset_owner(),
            R::GetProtocolFeatures => self.get_protocol_features(),
            R::SetProtocolFeatures(features) => self.set_protocol_features(features),
            R::GetQueueNum => self.get_queue_num(),
            R::SetMemTable { table, fds } => self.set_mem_table(table, fds, need_reply),
            R::GetMaxMemSlots => self.get_max_mem_slots(),
            R::AddMemReg { region, fd } => self.add_mem_reg(region, fd, need_reply),
            R::RemMemReg { region, fd } => self.rem_mem_reg(region, fd),
            R::SetLogBase(log) => self.set_log_base(log, need_reply),
            R::SetLogFd(fd) => self.set_log_fd(fd),
            R::SetVringNum { index, num } => self.set_vring_num(index, num),
            R::SetVringAddr(addr) => self.set_vring_addr(addr, need_reply),
            R::SetVringBase { index, base } => self.set_vring_base(index, base),
            R::GetVringBase { index } => self.get_vring_base(index, false, need_reply),
            R::GetVringBaseSkipDrain { index } => self.get_vring_base(index, true, need_reply),
            R::SetVringKick(vring) => self.set_vring_kick(vring.index, vring.fd, need_reply),
            R::VringKick { index } => self.vring_kick(index, need_reply),
            R::SetVringCall(vring) => self.set_vring_fd(FrontendCode::SetVringCall, vring),
            R::SetVringErr(vring) => self.set_vring_fd(FrontendCode::SetVringErr, vring),
            R::SetVringEnable { index, enable } => self.set_vring_enable(index, enable),
            R::SetVringEndian { index, big_endian } => self.set_vring_endian(index, big_endian),
            R::GetConfig { offset, size, flags } => {
                self.get_config(offset, size, flags, need_reply)
            }
            R::SetConfig { offset, flags, data } => {
                self.set_config(offset, flags, data, need_reply)
            }
            R::SetStatus(status) => self.set_status(status),
            R::GetStatus => self.get_status(),
            R::ResetDevice => self.reset_device(need_reply),
            R::GetInflightFd(desc) => self.get_inflight_fd(desc, need_reply),
            R::SetInflightFd { desc, fd } => self.set_inflight_fd(desc, fd, need_reply),
            R::SetBackendReqFd(fd) => self.set_backend_req_fd(fd, need_reply),
            R::GetSharedObject(uuid) => self.get_shared_object(uuid, need_reply),
            R::SetDeviceStateFd { direction, phase, fd } => {
                self.set_device_state_fd(direction, phase, fd, need_reply)
            }
            R::CheckDeviceState => self.check_device_state(need_reply),
            R::GetShmemConfig => self.get_shmem_config(),
            R::IotlbMsg(msg) => self.iotlb_msg(msg, need_reply),
            R::SendRarp(mac) => self.send_rarp(mac),
            R::NetSetMtu(mtu) => self.net_set_mtu(mtu),
            R::CreateCryptoSession(_) | R::CloseCryptoSession(_) => {
                Err(ProtocolError::NotNegotiated {
                    code: request.code(),
                    feature: "CRYPTO_SESSION",
                })
            }
            R::PostcopyAdvise => self.postcopy_advise(need_reply),
            R::PostcopyListen => self.postcopy_step(FrontendCode::PostcopyListen, need_reply),
            R::PostcopyEnd => self.postcopy_step(FrontendCode::PostcopyEnd, need_reply),
            R::GpuSetSocket(_) => Err(ProtocolError::Unsupported(FrontendCode::GpuSetSocket)),
        }
    }
}

fn pending_code(pending: &Pending) -> FrontendCode {
    match pending {
        Pending::MemTable => FrontendCode::SetMemTable,
        Pending::AddRegion(_) => FrontendCode::AddMemReg,
        Pending::Log => FrontendCode::SetLogBase,
        Pending::StopVring { skip_drain: false, .. } => FrontendCode::GetVringBase,
        Pending::StopVring { skip_drain: true, .. } => FrontendCode::GetVringBaseSkipDrain,
        Pending::ConfigRead { .. } => FrontendCode::GetConfig,
        Pending::Status(code) | Pending::StartVring { code, .. } => *code,
        Pending::MoveVring { .. } => FrontendCode::SetVringAddr,
        Pending::Inflight(_) => FrontendCode::GetInflightFd,
        Pending::DeviceState => FrontendCode::SetDeviceStateFd,
        Pending::BackendChannel => FrontendCode::SetBackendReqFd,
        Pending::SharedObject => FrontendCode::GetSharedObject,
        Pending::Userfaultfd => FrontendCode::PostcopyAdvise,
    }
}
