//! Errors of the front-end state machine.
//!
//! A [`FrontendError`] says what the back-end sent that does not fit the session (a reply nobody
//! waits for, a malformed payload, a back-end request for a feature that was not negotiated), what
//! the back-end refused (a non-zero status), or why a call of the VMM cannot be honoured now, with
//! the values involved. This module does not decide what an error costs the connection: the
//! `Frontend` decides that in one place (`Frontend::fail`).

use crate::regions::RegionError;
use crate::wire::{BackendCode, FrontendCode};
use crate::{ProtocolFeatures, VirtioFeatures, WireError};

/// A reply or back-end request the front-end refuses, a failure the back-end reported, or a call
/// the front-end cannot make now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrontendError {
    /// A reply or back-end request could not be parsed.
    #[error("malformed message from the back-end: {0}")]
    Wire(#[from] WireError),
    /// A reply arrived while no request was waiting for one.
    #[error("unexpected reply to {code}: no request waits for a reply")]
    UnexpectedReply {
        /// The request the reply claims to answer.
        code: FrontendCode,
    },
    /// A reply answers another request than the one waiting.
    #[error("reply to {got} while {expected} waits for its reply")]
    WrongReply {
        /// The request waiting.
        expected: FrontendCode,
        /// The request the reply answers.
        got: FrontendCode,
    },
    /// The reply has the right code but not the form the waiting request is answered with.
    #[error("{code}: unexpected reply payload ({what})")]
    UnexpectedPayload {
        /// The request waiting.
        code: FrontendCode,
        /// What was received instead.
        what: &'static str,
    },
    /// GET_VRING_BASE (or its skip-drain variant) was answered for another ring.
    #[error("{code}: reply for vring {got}, vring {expected} was asked")]
    WrongVring {
        /// The request waiting.
        code: FrontendCode,
        /// The ring asked for.
        expected: u8,
        /// The ring the reply names.
        got: u8,
    },
    /// GET_CONFIG was answered with another offset or size than asked (spec: the reply has
    /// exactly the requested size, or size 0 on failure).
    #[error("GET_CONFIG: {got} bytes at {got_offset} returned, {size} bytes at {offset} asked")]
    ConfigMismatch {
        /// Offset asked for.
        offset: u32,
        /// Size asked for.
        size: u32,
        /// Offset of the reply.
        got_offset: u32,
        /// Size of the reply.
        got: usize,
    },
    /// GET_SHMEM_CONFIG was answered with a table that breaks the spec's rules for it
    /// ("VHOST_USER_GET_SHMEM_CONFIG": `nregions` counts the regions of non-zero size — taken
    /// here when it counts more, never fewer —, each size is a multiple of the page size, and
    /// the answer never changes on one connection).
    #[error("GET_SHMEM_CONFIG: {problem}")]
    ShmemConfigInvalid {
        /// Which rule the table breaks.
        problem: ShmemConfigProblem,
    },
    /// The back-end answered GET_CONFIG with an empty payload: it could not read its config.
    #[error("GET_CONFIG of {size} bytes at {offset}: the back-end could not read its config")]
    ConfigReadFailed {
        /// Offset asked for.
        offset: u32,
        /// Size asked for.
        size: u32,
    },
    /// The back-end reported failure: a non-zero REPLY_ACK `u64` or reply status.
    #[error("{request}: the back-end failed with status {status}")]
    Nack {
        /// The request that failed.
        request: FrontendCode,
        /// The status the back-end sent.
        status: u64,
    },
    /// The back-end reported a value the front-end cannot use.
    #[error("{code}: the back-end reported {value}, outside {min}..={max}")]
    OutOfRange {
        /// The request answered.
        code: FrontendCode,
        /// The value reported.
        value: u64,
        /// The smallest usable value.
        min: u64,
        /// The largest usable value.
        max: u64,
    },
    /// The call needs a feature that was not negotiated.
    #[error("{code}: needs {feature}, which is not negotiated")]
    NotNegotiated {
        /// The request the call would send.
        code: FrontendCode,
        /// The missing feature, by its spec name.
        feature: &'static str,
    },
    /// The call needs a completed handshake (wait for `Event::Connected`).
    #[error("the handshake has not completed")]
    NotConnected,
    /// `connect` or `restore` was called on a session that already started one.
    #[error("the handshake was already started")]
    AlreadyConnected,
    /// The connection was closed; nothing more can be sent.
    #[error("the connection is closed")]
    Closed,
    /// Saved protocol features that this front-end cannot drive or that break a dependency.
    #[error("saved protocol features {0:?} are unsupported or miss a prerequisite")]
    InconsistentFeatures(ProtocolFeatures),
    /// BACKEND_REQ is to be acked but no back-end channel socket was given.
    #[error("BACKEND_REQ needs the back-end channel socket")]
    NoBackendChannel,
    /// The call would queue more requests than fit; drain outputs and feed replies first.
    #[error("{needed} more requests do not fit the queue of {capacity}")]
    QueueFull {
        /// Requests the call needs to queue.
        needed: usize,
        /// Capacity of the queue.
        capacity: usize,
    },
    /// The one buffer this message is staged in holds a message that was not sent yet.
    #[error("a {0} is already queued")]
    Busy(FrontendCode),
    /// More regions than one SET_MEM_TABLE carries.
    #[error("SET_MEM_TABLE takes at most {max} regions, {got} given")]
    TooManyRegions {
        /// Regions given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A memory region the front-end refuses to send.
    #[error("{code}: {error}")]
    Memory {
        /// The request.
        code: FrontendCode,
        /// What is wrong with the region.
        error: RegionError,
    },
    /// A vring index beyond the rings the back-end reported (GET_QUEUE_NUM's queues times
    /// `FrontendConfig::rings_per_queue`).
    #[error("vring {index} out of range, the back-end has {rings} rings")]
    VringOutOfRange {
        /// The index.
        index: u8,
        /// The rings.
        rings: u16,
    },
    /// A ring size virtio does not allow (1..=32768).
    #[error("vring {index}: queue size {size} outside 1..=32768")]
    InvalidQueueSize {
        /// The ring.
        index: u8,
        /// The size asked for.
        size: u16,
    },
    /// The ring is started; this call is only valid for a stopped ring.
    #[error("{code}: vring {index} is started")]
    VringStarted {
        /// The request.
        code: FrontendCode,
        /// The ring.
        index: u8,
    },
    /// The call is only valid while the device is suspended (all rings stopped).
    #[error("{code}: every ring must be stopped first")]
    NotSuspended {
        /// The request.
        code: FrontendCode,
    },
    /// RESET_DEVICE or RESET_OWNER made the back-end forget the acked virtio features: a ring
    /// starts only once SET_FEATURES sent them again (the layout and EVENT_IDX depend on them).
    #[error("{code}: the back-end forgot the features on reset; send SET_FEATURES first")]
    FeaturesForgotten {
        /// The request.
        code: FrontendCode,
    },
    /// SET_FEATURES with bits the back-end did not offer.
    #[error("virtio features {requested:?} are not a subset of the offered {offered:?}")]
    FeaturesNotOffered {
        /// What the back-end offered.
        offered: VirtioFeatures,
        /// What was asked for.
        requested: VirtioFeatures,
    },
    /// A config-space transfer larger than the config space can be.
    #[error("config transfer of {size} bytes exceeds {max}")]
    ConfigTooLarge {
        /// Bytes asked for.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A back-end request needs a feature that was not negotiated.
    #[error("{code}: needs {feature}, which is not negotiated")]
    BackendNotNegotiated {
        /// The back-end request.
        code: BackendCode,
        /// The missing feature, by its spec name.
        feature: &'static str,
    },
    /// A host-notifier area whose size is not the host's page size (spec
    /// "VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG": the front-end maps one page of it).
    #[error(
        "{code}: a host-notifier area of {size} bytes, but the host's page size is {page_size}"
    )]
    BackendNotifierSize {
        /// The back-end request.
        code: BackendCode,
        /// The size the back-end gave.
        size: u64,
        /// The host's page size.
        page_size: u64,
    },
    /// A shared-memory mapping of no bytes, past the end of its region (the size
    /// GET_SHMEM_CONFIG gave, `None` when not asked), or wrapping around in the region or (a
    /// map) in its file.
    #[error(
        "{code}: {len} bytes at {shm_offset:#x} of shared-memory region {shmid} (of {size:?} \
         bytes), from {fd_offset:#x} of the file, are no range in either"
    )]
    BackendShmemOutOfRange {
        /// The back-end request.
        code: BackendCode,
        /// The region.
        shmid: u8,
        /// Where in it.
        shm_offset: u64,
        /// Where in the file (meaningless for an unmap).
        fd_offset: u64,
        /// Bytes.
        len: u64,
        /// The region's size, if known.
        size: Option<u64>,
    },
    /// A back-end request names a ring the back-end does not have.
    #[error("{code}: vring {index} out of range, the back-end has {rings} rings")]
    BackendVringOutOfRange {
        /// The back-end request.
        code: BackendCode,
        /// The index.
        index: u8,
        /// The rings.
        rings: u16,
    },
    /// An answer was given while no back-end request waits for one.
    #[error("no back-end request waits for an answer")]
    NoBackendRequest,
    /// The answer does not fit the back-end request waiting (a lookup needs an fd or a status).
    #[error("{0} needs another kind of answer")]
    WrongBackendAnswer(BackendCode),
    /// A postcopy step out of the spec's order (spec "Migration": POSTCOPY_ADVISE, then
    /// POSTCOPY_LISTEN, then POSTCOPY_END).
    #[error("{code}: needs {needs} first")]
    PostcopyOutOfOrder {
        /// The request the call would send.
        code: FrontendCode,
        /// The step that must come before it.
        needs: &'static str,
    },
    /// The postcopy SET_MEM_TABLE reply does not describe the regions that were sent (their
    /// count, guest address, size or offset differ); only the user address may change.
    #[error("SET_MEM_TABLE postcopy reply: region {index} does not match the region sent")]
    PostcopyBasesMismatch {
        /// The first region that differs (the count, when that differs).
        index: usize,
    },
    /// A payload outside the size the message allows.
    #[error("{code}: payload of {size} bytes outside {min}..={max}")]
    PayloadSize {
        /// The request.
        code: FrontendCode,
        /// Bytes given.
        size: usize,
        /// Smallest size.
        min: usize,
        /// Largest size.
        max: usize,
    },
    /// The caller let outputs pile up without draining them; the session cannot go on.
    #[error("outputs were not drained after an input")]
    OutputOverflow,
}

impl FrontendError {
    /// A non-zero status for refusing a back-end request, errno-like by kind.
    pub fn status(&self) -> u64 {
        const EINVAL: u64 = 22;
        const ERANGE: u64 = 34;
        const ENOTSUP: u64 = 95;
        match self {
            Self::BackendNotNegotiated { .. } | Self::NotNegotiated { .. } => ENOTSUP,
            Self::Wire(WireError::UnknownRequest(_)) => ENOTSUP,
            Self::BackendVringOutOfRange { .. }
            | Self::VringOutOfRange { .. }
            | Self::BackendShmemOutOfRange { .. } => ERANGE,
            Self::Nack { status, .. } if *status != 0 => *status,
            _ => EINVAL,
        }
    }

    /// Whether the error leaves the byte stream without a trusted message boundary.
    pub(super) fn is_stream_broken(&self) -> bool {
        matches!(self, Self::Wire(wire) if crate::protocol_error::breaks_stream(wire))
    }
}

/// How a GET_SHMEM_CONFIG answer breaks the rules ([`FrontendError::ShmemConfigInvalid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShmemConfigProblem {
    /// `nregions` is below the number of regions with a non-zero size.
    #[error("nregions is {nregions}, but {sized} regions have a size")]
    RegionCount {
        /// `nregions` as sent.
        nregions: u32,
        /// Regions with a non-zero size.
        sized: u32,
    },
    /// A region's size is not a multiple of the host's page size.
    #[error("region {shmid} has {size} bytes, not a multiple of the {page_size}-byte page")]
    NotPageSized {
        /// The region.
        shmid: u8,
        /// Its size.
        size: u64,
        /// The host's page size.
        page_size: u64,
    },
    /// The answer differs from the one given earlier on this connection.
    #[error("the answer changed since the last GET_SHMEM_CONFIG")]
    Changed,
}
