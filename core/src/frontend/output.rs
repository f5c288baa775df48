//! What the front-end state machine asks of its caller ([`Output`], [`Event`]), the values the VMM
//! passes in ([`FrontendConfig`], [`VringSetup`], [`BackendAnswer`]) and the negotiated state it
//! saves for a restore ([`Negotiated`]).
//!
//! Ownership of descriptors: a token in a [`Output::Request`] (its [`Request::fds`]), in an
//! [`Event`] or in a [`Output::BackendReply`] is handed to the caller, who sends it or keeps it; a
//! token the front-end does not hand off is released with [`Output::CloseFd`]. Every token the
//! front-end receives leaves it exactly once, by one of those ways. Nothing here holds state.

use crate::message::{
    BackendReply, BackendRequest, InflightDesc, Request, TransferDirection, Uuid, VringBase,
};
use crate::{FdToken, ProtocolFeatures, VirtioFeatures, VringIndex};

use super::FrontendError;

/// One thing the caller must do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Encode this request with [`Request::encode_into`]`(need_reply, ..)` and send it on the main
    /// socket with its [`Request::fds`] (handed off: close them once sent, or keep them).
    Request {
        /// The request.
        request: Request<'a>,
        /// Set NEED_REPLY (REPLY_ACK is acked and the request has no reply of its own).
        need_reply: bool,
    },
    /// Encode this reply with [`BackendReply::encode_into`] and send it on the back-end channel
    /// with its [`BackendReply::fds`] (handed off).
    BackendReply(BackendReply),
    /// Answer a back-end request whose code core does not know, sent with NEED_REPLY, with the
    /// `u64` failure `status` on the back-end channel: encode it with
    /// [`encode_status`](crate::message::encode_status).
    BackendNack {
        /// The request's code, as it came.
        request: u32,
        /// The non-zero status.
        status: u64,
    },
    /// Something the VMM must know or act on.
    Event(Event<'a>),
    /// Release a token the front-end does not hand off.
    CloseFd(FdToken),
    /// Close the connection after the outputs before this one; the error says why. Outputs after
    /// it only release tokens.
    Close(FrontendError),
}

/// What the VMM learns from the back-end.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The handshake completed: what was negotiated. Save it for [`Frontend::restore`].
    ///
    /// [`Frontend::restore`]: super::Frontend::restore
    Connected(Negotiated),
    /// The back-end confirmed a request: its REPLY_ACK `u64` was 0, or its reply said success
    /// (SET_LOG_BASE, CHECK_DEVICE_STATE). Requests sent without NEED_REPLY get no such event,
    /// but for dirty logging turned on without REPLY_ACK (SET_FEATURES with VHOST_F_LOG_ALL,
    /// SET_VRING_ADDR with VHOST_VRING_F_LOG): a GET_FEATURES follows them, and its reply is
    /// their confirmation.
    Done(crate::FrontendCode),
    /// The back-end refused a request, or answered in a way the session survives; the
    /// connection goes on.
    Failed(FrontendError),
    /// GET_VRING_BASE (or GET_VRING_BASE_SKIP_DRAIN) answered: the ring stopped here. Pass the
    /// base to the next start of the ring.
    VringStopped {
        /// The ring.
        index: VringIndex,
        /// Where it stopped, in the encoding the ring uses.
        base: VringBase,
    },
    /// GET_CONFIG answered with the bytes read.
    ConfigRead {
        /// Offset in the config space.
        offset: u32,
        /// The bytes.
        data: &'a [u8],
    },
    /// GET_STATUS answered.
    Status(u8),
    /// GET_SHMEM_CONFIG answered: the size of each shared-memory region, by shmid (0: none).
    ShmemConfig(&'a crate::wire::ShmemConfig),
    /// GET_INFLIGHT_FD answered: the area the back-end allocated and its fd (handed off; `None`
    /// when the size is 0, meaning no inflight tracking).
    InflightFd {
        /// Where the area is in the fd.
        desc: InflightDesc,
        /// The shared-memory fd.
        fd: Option<FdToken>,
    },
    /// SET_DEVICE_STATE_FD accepted. If the back-end returned its own end of the transfer
    /// channel (handed off), transfer over it instead of the one sent (spec "Migrating back-end
    /// state").
    DeviceStateFd {
        /// Save or load.
        direction: TransferDirection,
        /// The back-end's fd.
        fd: Option<FdToken>,
    },
    /// POSTCOPY_ADVISE answered: the back-end's userfaultfd (handed off). The VMM reads the
    /// back-end's page faults from it and wakes them once the pages arrived.
    PostcopyAdvised {
        /// The userfaultfd.
        userfaultfd: FdToken,
    },
    /// A SET_MEM_TABLE sent while postcopy listens was answered: the back-end's mapping base of
    /// each region, in the order the table had them. Register them with the fault handling,
    /// then call [`Frontend::postcopy_bases_registered`]: the back-end may fault as soon as its
    /// acknowledgement arrives, so nothing is sent until then.
    ///
    /// [`Frontend::postcopy_bases_registered`]: super::Frontend::postcopy_bases_registered
    PostcopyBases(&'a [u64]),
    /// CREATE_CRYPTO_SESSION answered: the session as the back-end returned it, the size of the
    /// one sent, in the layout the VMM used (in QEMU's, the session id is its last 8 bytes,
    /// negative when the back-end refused).
    CryptoSession(&'a [u8]),
    /// GET_SHARED_OBJECT answered with the object's dma-buf fd (handed off).
    SharedObject {
        /// The object.
        uuid: Uuid,
        /// Its fd.
        fd: FdToken,
    },
    /// A request from the back-end channel. Act on it, then answer with
    /// [`Frontend::handle_backend_answer`] (a reply is sent only if the back-end asked for one).
    /// Tokens in the request are handed off.
    ///
    /// [`Frontend::handle_backend_answer`]: super::Frontend::handle_backend_answer
    BackendRequest {
        /// The request.
        request: BackendRequest,
        /// The back-end waits for the answer (NEED_REPLY, or a lookup, which always replies).
        need_reply: bool,
    },
}

/// What the front-end wants to negotiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendConfig {
    /// Virtio features wanted (acked if offered, and VIRTIO_F_ACCESS_PLATFORM only with REPLY_ACK
    /// and BACKEND_REQ acked too). Include VHOST_USER_F_PROTOCOL_FEATURES to
    /// negotiate protocol features. VHOST_F_LOG_ALL is never acked by the handshake: it is switched
    /// with [`Frontend::set_logging`](super::Frontend::set_logging).
    pub features: VirtioFeatures,
    /// Protocol features wanted (acked if offered, supported and their dependencies hold).
    pub protocol_features: ProtocolFeatures,
    /// The host's page size in bytes: the only size a host-notifier area
    /// (BACKEND_VRING_HOST_NOTIFIER_MSG with a descriptor) may have, as the front-end maps
    /// exactly one page of it (QEMU refuses any other size with EINVAL). [`FrontendConfig::new`]
    /// assumes 4 KiB; a transport that knows the host sets the real one.
    pub host_page_size: u64,
    /// Rings one queue of GET_QUEUE_NUM's answer stands for: 1 for most devices, 2 for a net
    /// device, whose back-ends count queue pairs (DPDK; QEMU compares the answer with its
    /// pairs). Ring indices are bounded by the answer times this (and 256).
    pub rings_per_queue: u8,
}

impl FrontendConfig {
    /// Wants VERSION_1, VHOST_USER_F_PROTOCOL_FEATURES and `device_features`, and the protocol
    /// features of bits 0–19 every device can use (MQ, LOG_SHMFD, REPLY_ACK, BACKEND_REQ, CONFIG,
    /// BACKEND_SEND_FD, HOST_NOTIFIER, INFLIGHT_SHMFD, RESET_DEVICE, CONFIGURE_MEM_SLOTS, STATUS,
    /// SHARED_OBJECT, DEVICE_STATE). Bits 20 and up are left out: their numbering moved while in
    /// review and a peer may mean another feature by them. Add CRYPTO_SESSION for a crypto
    /// device; for postcopy, add PAGEFAULT and remove CONFIGURE_MEM_SLOTS (the spec forbids the
    /// pair, so PAGEFAULT is dropped while both are wanted).
    pub fn new(device_features: VirtioFeatures) -> Self {
        Self {
            features: VirtioFeatures::VERSION_1
                | VirtioFeatures::PROTOCOL_FEATURES
                | device_features,
            protocol_features: ProtocolFeatures::MQ
                | ProtocolFeatures::LOG_SHMFD
                | ProtocolFeatures::REPLY_ACK
                | ProtocolFeatures::BACKEND_REQ
                | ProtocolFeatures::CONFIG
                | ProtocolFeatures::BACKEND_SEND_FD
                | ProtocolFeatures::HOST_NOTIFIER
                | ProtocolFeatures::INFLIGHT_SHMFD
                | ProtocolFeatures::RESET_DEVICE
                | ProtocolFeatures::CONFIGURE_MEM_SLOTS
                | ProtocolFeatures::STATUS
                | ProtocolFeatures::SHARED_OBJECT
                | ProtocolFeatures::DEVICE_STATE,
            host_page_size: 4096,
            rings_per_queue: 1,
        }
    }
}

/// The outcome of a handshake, as [`Event::Connected`] reports it and [`Frontend::restore`]
/// takes it back after a migration or reconnect.
///
/// [`Frontend::restore`]: super::Frontend::restore
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Virtio features GET_FEATURES offered.
    pub offered_features: VirtioFeatures,
    /// Virtio features acked by SET_FEATURES (with VHOST_USER_F_PROTOCOL_FEATURES when protocol
    /// features are in use, which the guest must never see; without VHOST_F_LOG_ALL).
    pub features: VirtioFeatures,
    /// Protocol features acked by SET_PROTOCOL_FEATURES.
    pub protocol_features: ProtocolFeatures,
    /// Queue count from GET_QUEUE_NUM (MQ).
    pub queues: Option<u16>,
    /// Memory slots from GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS), capped at the front-end's own
    /// table size.
    pub max_mem_slots: Option<u16>,
}

/// Everything needed to start one ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VringSetup {
    /// Queue size.
    pub size: u16,
    /// Where to resume: 0 for a new ring, or the base of the last [`Event::VringStopped`].
    pub base: VringBase,
    /// User address of the descriptor table (sent as the guest address the memory table maps
    /// it to when GPA_ADDRESSES is acked; likewise the two rings below).
    pub descriptor: u64,
    /// User address of the used ring.
    pub used: u64,
    /// User address of the available ring.
    pub available: u64,
    /// Guest-physical address for dirty-logging used-ring writes (sets VHOST_VRING_F_LOG).
    pub log: Option<u64>,
    /// The call eventfd (handed off in SET_VRING_CALL); `None` sends the NOFD bit.
    pub call: Option<FdToken>,
    /// The kick eventfd (handed off in SET_VRING_KICK); `None` sends the NOFD bit (polling).
    pub kick: Option<FdToken>,
}

/// The VMM's answer to an [`Event::BackendRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendAnswer {
    /// Every back-end request but a lookup: success, or a non-zero failure status.
    Done(Result<(), u64>),
    /// BACKEND_SHARED_OBJECT_LOOKUP: the object's dma-buf fd (handed off), or a failure status.
    SharedObject(Result<FdToken, u64>),
}
