//! Errors of the protocol layer, and the one policy that decides what each costs the connection.
//!
//! A [`ProtocolError`] says what the peer (or the driver) did wrong, with the values involved.
//! [`disposition`] is the single place that decides between answering with a failure and going on
//! ([`Disposition::Nack`]) or closing the connection ([`Disposition::Close`]). The state machines
//! call it; nothing else chooses.

use crate::regions::RegionError;
use crate::wire::{FrontendCode, HeaderFlags};
use crate::{ProtocolFeatures, VirtioFeatures, WireError};

/// A request the state machine refuses, or a misuse of its API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame could not be parsed.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// The message needs a feature that was not negotiated (or not offered).
    #[error("{code}: needs {feature}, which is not negotiated")]
    NotNegotiated {
        /// The message.
        code: FrontendCode,
        /// The missing feature, by its spec name.
        feature: &'static str,
    },
    /// SET_FEATURES acked bits the back-end did not offer.
    #[error("acked virtio features {acked:?} are not a subset of the offered {offered:?}")]
    FeaturesNotOffered {
        /// What was offered.
        offered: VirtioFeatures,
        /// What was acked.
        acked: VirtioFeatures,
    },
    /// SET_PROTOCOL_FEATURES acked bits the back-end did not offer.
    #[error("acked protocol features {acked:?} are not a subset of the offered {offered:?}")]
    ProtocolFeaturesNotOffered {
        /// What was offered.
        offered: ProtocolFeatures,
        /// What was acked.
        acked: ProtocolFeatures,
    },
    /// A protocol feature was acked without the features it depends on.
    #[error("protocol feature {feature:?} needs {missing:?}")]
    ProtocolFeatureDependency {
        /// The feature acked.
        feature: ProtocolFeatures,
        /// What it needs and lacks.
        missing: ProtocolFeatures,
    },
    /// Two protocol features that must not be acked together.
    #[error("protocol features {first:?} and {second:?} cannot be negotiated together")]
    ProtocolFeatureConflict {
        /// One feature.
        first: ProtocolFeatures,
        /// The other.
        second: ProtocolFeatures,
    },
    /// During postcopy, the front-end did not acknowledge the SET_MEM_TABLE reply with its `u64`.
    #[error("expected the front-end's acknowledgement of the postcopy memory table")]
    PostcopyAckMissing,
    /// SET_OWNER on a session that already has an owner.
    #[error("the session already has an owner")]
    AlreadyOwned,
    /// A vring index beyond the device's queue count.
    #[error("{code}: vring {index} out of range, the device has {queues} queues")]
    VringOutOfRange {
        /// The message.
        code: FrontendCode,
        /// The index.
        index: u8,
        /// The queue count.
        queues: usize,
    },
    /// A queue size the device cannot use.
    #[error(
        "vring {index}: invalid queue size {num} (max {max}, split rings need a power of two)"
    )]
    InvalidQueueSize {
        /// The ring.
        index: u8,
        /// The size asked for.
        num: u16,
        /// The device's maximum.
        max: u16,
    },
    /// A message that may only change a stopped ring arrived for a started one.
    #[error("{code}: vring {index} is started")]
    VringStarted {
        /// The message.
        code: FrontendCode,
        /// The ring.
        index: u8,
    },
    /// A ring was started before its size or addresses were set.
    #[error("vring {index} cannot start: its {missing} is not set")]
    VringNotConfigured {
        /// The ring.
        index: u8,
        /// What is missing ("size" or "address").
        missing: &'static str,
    },
    /// A ring base that does not fit the ring: over 16 bits for a split ring, a position past
    /// the ring's size for a packed one.
    #[error("vring {index}: base {base:#x} does not fit the ring's layout and size")]
    InvalidVringBase {
        /// The ring.
        index: u8,
        /// The raw base.
        base: u32,
    },
    /// A memory region or address was refused.
    #[error("{code}: {error}")]
    Memory {
        /// The message.
        code: FrontendCode,
        /// What was wrong.
        error: RegionError,
    },
    /// A message that is only valid while the device is suspended (all rings stopped).
    #[error("{code}: the device is not suspended")]
    NotSuspended {
        /// The message.
        code: FrontendCode,
    },
    /// A config-space access outside the device's config space.
    #[error(
        "config access at {offset} of {size} bytes exceeds the {config_size}-byte config space"
    )]
    ConfigOutOfRange {
        /// Offset asked for.
        offset: u32,
        /// Size asked for.
        size: u32,
        /// The device's config size.
        config_size: u32,
    },
    /// A message this back-end does not implement (and never offered a feature for).
    #[error("{0} is not supported")]
    Unsupported(FrontendCode),
    /// The driver reported that carrying out the request failed.
    #[error("{code}: the device failed with status {status}")]
    DeviceFailed {
        /// The message.
        code: FrontendCode,
        /// The driver's status code.
        status: u64,
    },
    /// A frame arrived while a completion was still owed: the driver must complete first.
    #[error("a {0} completion is still pending")]
    CompletionPending(FrontendCode),
    /// GET_INFLIGHT_FD for more queues or larger queues than the device has.
    #[error("inflight area for {num_queues} queues of {queue_size} exceeds the device")]
    InvalidInflight {
        /// Queues asked for.
        num_queues: u16,
        /// Queue size asked for.
        queue_size: u16,
    },
    /// A completion that does not answer the pending request.
    #[error("unexpected completion")]
    UnexpectedCompletion,
    /// A back-end request needs the back-end channel, which was not set up.
    #[error("no back-end channel (SET_BACKEND_REQ_FD) is set up")]
    NoBackendChannel,
    /// A back-end request was made while the device is suspended, when the spec forbids it.
    #[error("the device is suspended: no back-end requests may be sent")]
    Suspended,
    /// A back-end request needs a protocol feature that was not negotiated.
    #[error("the back-end request needs {0}, which is not negotiated")]
    BackendFeature(&'static str),
    /// Too many back-end requests await their results.
    #[error("{0} back-end requests already await their results")]
    BackendBusy(usize),
    /// The front-end answered on the back-end channel a request that awaits no answer.
    #[error("the front-end answered {0} on the back-end channel, which awaits no answer")]
    UnexpectedBackendReply(crate::wire::BackendCode),
    /// The driver let outputs pile up without draining them; the session cannot go on.
    #[error("outputs were not drained after an input")]
    OutputOverflow,
}

impl ProtocolError {
    /// A non-zero status for the REPLY_ACK `u64`, errno-like by kind.
    pub fn status(&self) -> u64 {
        const ENOENT: u64 = 2;
        const EBUSY: u64 = 16;
        const EEXIST: u64 = 17;
        const EINVAL: u64 = 22;
        const ENOSPC: u64 = 28;
        const EFAULT: u64 = 14;
        const ERANGE: u64 = 34;
        const ENOTSUP: u64 = 95;
        match self {
            Self::NotNegotiated { .. }
            | Self::Unsupported(_)
            | Self::Wire(WireError::UnknownRequest(_)) => ENOTSUP,
            Self::AlreadyOwned => EEXIST,
            Self::VringStarted { .. } | Self::NotSuspended { .. } | Self::CompletionPending(_) => {
                EBUSY
            }
            Self::VringOutOfRange { .. } | Self::ConfigOutOfRange { .. } => ERANGE,
            Self::Memory { error: RegionError::Full { .. }, .. } => ENOSPC,
            Self::Memory { error: RegionError::NotFound { .. }, .. } => ENOENT,
            Self::Memory { error: RegionError::Unmapped { .. }, .. } => EFAULT,
            Self::DeviceFailed { status, .. } if *status != 0 => *status,
            _ => EINVAL,
        }
    }
}

/// What a refused request costs the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Answer with a failure where the message has an answer (the REPLY_ACK status, or the
    /// failure form of its reply) and go on.
    Nack,
    /// Close the connection: the stream cannot be trusted, the spec says so, or the message's
    /// reply has no way to express failure and the front-end waits for it.
    Close,
}

pub use crate::wire::ReplyKind;

/// The reply kind of each request (spec "Front-end message types"; QEMU also waits for the `u64`
/// of POSTCOPY_LISTEN/END and IOTLB_MSG), from the table of codes.
pub fn reply_kind(code: FrontendCode) -> ReplyKind {
    code.reply_kind()
}

/// Whether `error` leaves the byte stream without a trusted message boundary, or shows a peer
/// that lost track of the session (a request that claims to be a reply): either way the
/// connection cannot go on. Reserved flag bits alone leave the stream intact: such a message
/// is refused as its kind is. For both directions (the back-end's requests, the front-end's).
pub(crate) fn breaks_stream(error: &WireError) -> bool {
    match error {
        WireError::ReservedFlags { flags } => flags & HeaderFlags::REPLY.bits() != 0,
        WireError::TruncatedHeader { .. }
        | WireError::BadVersion { .. }
        | WireError::FrameLength { .. }
        | WireError::PayloadTooLarge { .. }
        | WireError::UnexpectedReplyFlag { .. } => true,
        _ => false,
    }
}

/// The policy: what refusing `code` for `error` costs. `code` is `None` when the frame's header
/// could not be read.
pub fn disposition(code: Option<FrontendCode>, error: &ProtocolError) -> Disposition {
    match error {
        ProtocolError::Wire(wire) if breaks_stream(wire) => Disposition::Close,
        // Spec (INBAND_NOTIFICATIONS): negotiating it without BACKEND_REQ and REPLY_ACK is an
        // error and the back-end should close the connection.
        ProtocolError::ProtocolFeatureDependency { feature, .. }
            if feature.contains(ProtocolFeatures::INBAND_NOTIFICATIONS) =>
        {
            Disposition::Close
        }
        // A driver that feeds frames while owing a completion has lost track of the session.
        ProtocolError::CompletionPending(_)
        | ProtocolError::OutputOverflow
        | ProtocolError::PostcopyAckMissing => Disposition::Close,
        _ => match code.map(reply_kind) {
            None | Some(ReplyKind::Typed) => Disposition::Close,
            Some(ReplyKind::AckOnly | ReplyKind::WithStatus) => Disposition::Nack,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_streams_close() {
        let error = ProtocolError::Wire(WireError::BadVersion { version: 2, flags: 2 });
        assert_eq!(disposition(Some(FrontendCode::SetOwner), &error), Disposition::Close);
        let error = ProtocolError::Wire(WireError::UnknownRequest(99));
        assert_eq!(disposition(None, &error), Disposition::Close);
    }

    #[test]
    fn refusals_without_typed_replies_nack() {
        let error = ProtocolError::Unsupported(FrontendCode::GpuSetSocket);
        assert_eq!(disposition(Some(FrontendCode::GpuSetSocket), &error), Disposition::Nack);
        let error = ProtocolError::NotNegotiated { code: FrontendCode::GetQueueNum, feature: "MQ" };
        assert_eq!(disposition(Some(FrontendCode::GetQueueNum), &error), Disposition::Close);
        let error = ProtocolError::NotSuspended { code: FrontendCode::SetDeviceStateFd };
        assert_eq!(disposition(Some(FrontendCode::SetDeviceStateFd), &error), Disposition::Nack);
    }

    #[test]
    fn inband_without_prerequisites_closes() {
        let error = ProtocolError::ProtocolFeatureDependency {
            feature: ProtocolFeatures::INBAND_NOTIFICATIONS,
            missing: ProtocolFeatures::REPLY_ACK,
        };
        assert_eq!(
            disposition(Some(FrontendCode::SetProtocolFeatures), &error),
            Disposition::Close
        );
    }

    #[test]
    fn statuses_are_non_zero() {
        let errors = [
            ProtocolError::AlreadyOwned,
            ProtocolError::Unsupported(FrontendCode::GpuSetSocket),
            ProtocolError::DeviceFailed { code: FrontendCode::SetConfig, status: 0 },
            ProtocolError::DeviceFailed { code: FrontendCode::SetConfig, status: 5 },
        ];
        for error in errors {
            assert_ne!(error.status(), 0, "{error}");
        }
    }
}
