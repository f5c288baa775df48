//! Request codes of both channels (spec "Front-end message types", "Back-end message types"):
//! one table per channel, from which the code enum, its names and how each message is answered
//! are all derived, so adding a message touches one line.

use core::fmt;

/// How a request is answered, which decides how a failure can be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// No reply unless NEED_REPLY asks for the `u64` ack.
    AckOnly,
    /// Always answered, in a form that can carry a failure status.
    WithStatus,
    /// Always answered, in a form that cannot say "failed".
    Typed,
}

macro_rules! codes {
    (
        $(#[$meta:meta])* $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $spec:literal, $kind:ident, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        #[repr(u32)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every code of this channel, in numeric order.
            pub const ALL: &'static [Self] = &[ $( Self::$variant, )+ ];

            /// The code for a raw request number, or `None` if the spec defines none.
            pub const fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $( $value => Some(Self::$variant), )+
                    _ => None,
                }
            }

            /// The raw request number.
            pub const fn as_u32(self) -> u32 {
                self as u32
            }

            /// The spec's name for this message (`VHOST_USER_...`).
            pub const fn spec_name(self) -> &'static str {
                match self {
                    $( Self::$variant => $spec, )+
                }
            }

            /// How the receiver answers this message.
            pub const fn reply_kind(self) -> ReplyKind {
                match self {
                    $( Self::$variant => ReplyKind::$kind, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} ({})", self.spec_name(), self.as_u32())
            }
        }
    };
}

codes! {
    /// Requests sent by the front-end on the main socket (ids 1–45).
    FrontendCode {
        /// VHOST_USER_GET_FEATURES
        GetFeatures = 1 => "VHOST_USER_GET_FEATURES", Typed,
        /// VHOST_USER_SET_FEATURES
        SetFeatures = 2 => "VHOST_USER_SET_FEATURES", AckOnly,
        /// VHOST_USER_SET_OWNER
        SetOwner = 3 => "VHOST_USER_SET_OWNER", AckOnly,
        /// VHOST_USER_RESET_OWNER (deprecated)
        ResetOwner = 4 => "VHOST_USER_RESET_OWNER", AckOnly,
        /// VHOST_USER_SET_MEM_TABLE
        SetMemTable = 5 => "VHOST_USER_SET_MEM_TABLE", AckOnly,
        /// VHOST_USER_SET_LOG_BASE
        SetLogBase = 6 => "VHOST_USER_SET_LOG_BASE", Typed,
        /// VHOST_USER_SET_LOG_FD
        SetLogFd = 7 => "VHOST_USER_SET_LOG_FD", AckOnly,
        /// VHOST_USER_SET_VRING_NUM
        SetVringNum = 8 => "VHOST_USER_SET_VRING_NUM", AckOnly,
        /// VHOST_USER_SET_VRING_ADDR
        SetVringAddr = 9 => "VHOST_USER_SET_VRING_ADDR", AckOnly,
        /// VHOST_USER_SET_VRING_BASE
        SetVringBase = 10 => "VHOST_USER_SET_VRING_BASE", AckOnly,
        /// VHOST_USER_GET_VRING_BASE
        GetVringBase = 11 => "VHOST_USER_GET_VRING_BASE", Typed,
        /// VHOST_USER_SET_VRING_KICK
        SetVringKick = 12 => "VHOST_USER_SET_VRING_KICK", AckOnly,
        /// VHOST_USER_SET_VRING_CALL
        SetVringCall = 13 => "VHOST_USER_SET_VRING_CALL", AckOnly,
        /// VHOST_USER_SET_VRING_ERR
        SetVringErr = 14 => "VHOST_USER_SET_VRING_ERR", AckOnly,
        /// VHOST_USER_GET_PROTOCOL_FEATURES
        GetProtocolFeatures = 15 => "VHOST_USER_GET_PROTOCOL_FEATURES", Typed,
        /// VHOST_USER_SET_PROTOCOL_FEATURES
        SetProtocolFeatures = 16 => "VHOST_USER_SET_PROTOCOL_FEATURES", AckOnly,
        /// VHOST_USER_GET_QUEUE_NUM
        GetQueueNum = 17 => "VHOST_USER_GET_QUEUE_NUM", Typed,
        /// VHOST_USER_SET_VRING_ENABLE
        SetVringEnable = 18 => "VHOST_USER_SET_VRING_ENABLE", AckOnly,
        /// VHOST_USER_SEND_RARP
        SendRarp = 19 => "VHOST_USER_SEND_RARP", AckOnly,
        /// VHOST_USER_NET_SET_MTU
        NetSetMtu = 20 => "VHOST_USER_NET_SET_MTU", AckOnly,
        /// VHOST_USER_SET_BACKEND_REQ_FD (formerly SET_SLAVE_REQ_FD)
        SetBackendReqFd = 21 => "VHOST_USER_SET_BACKEND_REQ_FD", AckOnly,
        /// VHOST_USER_IOTLB_MSG
        IotlbMsg = 22 => "VHOST_USER_IOTLB_MSG", WithStatus,
        /// VHOST_USER_SET_VRING_ENDIAN
        SetVringEndian = 23 => "VHOST_USER_SET_VRING_ENDIAN", AckOnly,
        /// VHOST_USER_GET_CONFIG
        GetConfig = 24 => "VHOST_USER_GET_CONFIG", WithStatus,
        /// VHOST_USER_SET_CONFIG
        SetConfig = 25 => "VHOST_USER_SET_CONFIG", AckOnly,
        /// VHOST_USER_CREATE_CRYPTO_SESSION
        CreateCryptoSession = 26 => "VHOST_USER_CREATE_CRYPTO_SESSION", Typed,
        /// VHOST_USER_CLOSE_CRYPTO_SESSION
        CloseCryptoSession = 27 => "VHOST_USER_CLOSE_CRYPTO_SESSION", AckOnly,
        /// VHOST_USER_POSTCOPY_ADVISE
        PostcopyAdvise = 28 => "VHOST_USER_POSTCOPY_ADVISE", WithStatus,
        /// VHOST_USER_POSTCOPY_LISTEN
        PostcopyListen = 29 => "VHOST_USER_POSTCOPY_LISTEN", AckOnly,
        /// VHOST_USER_POSTCOPY_END
        PostcopyEnd = 30 => "VHOST_USER_POSTCOPY_END", WithStatus,
        /// VHOST_USER_GET_INFLIGHT_FD
        GetInflightFd = 31 => "VHOST_USER_GET_INFLIGHT_FD", WithStatus,
        /// VHOST_USER_SET_INFLIGHT_FD
        SetInflightFd = 32 => "VHOST_USER_SET_INFLIGHT_FD", AckOnly,
        /// VHOST_USER_GPU_SET_SOCKET
        GpuSetSocket = 33 => "VHOST_USER_GPU_SET_SOCKET", AckOnly,
        /// VHOST_USER_RESET_DEVICE
        ResetDevice = 34 => "VHOST_USER_RESET_DEVICE", AckOnly,
        /// VHOST_USER_VRING_KICK
        VringKick = 35 => "VHOST_USER_VRING_KICK", AckOnly,
        /// VHOST_USER_GET_MAX_MEM_SLOTS
        GetMaxMemSlots = 36 => "VHOST_USER_GET_MAX_MEM_SLOTS", Typed,
        /// VHOST_USER_ADD_MEM_REG
        AddMemReg = 37 => "VHOST_USER_ADD_MEM_REG", AckOnly,
        /// VHOST_USER_REM_MEM_REG
        RemMemReg = 38 => "VHOST_USER_REM_MEM_REG", AckOnly,
        /// VHOST_USER_SET_STATUS
        SetStatus = 39 => "VHOST_USER_SET_STATUS", AckOnly,
        /// VHOST_USER_GET_STATUS
        GetStatus = 40 => "VHOST_USER_GET_STATUS", Typed,
        /// VHOST_USER_GET_SHARED_OBJECT
        GetSharedObject = 41 => "VHOST_USER_GET_SHARED_OBJECT", WithStatus,
        /// VHOST_USER_SET_DEVICE_STATE_FD
        SetDeviceStateFd = 42 => "VHOST_USER_SET_DEVICE_STATE_FD", WithStatus,
        /// VHOST_USER_CHECK_DEVICE_STATE
        CheckDeviceState = 43 => "VHOST_USER_CHECK_DEVICE_STATE", WithStatus,
        /// VHOST_USER_GET_SHMEM_CONFIG
        GetShmemConfig = 44 => "VHOST_USER_GET_SHMEM_CONFIG", Typed,
        /// VHOST_USER_GET_VRING_BASE_SKIP_DRAIN (id 45; an early draft said 44, which is
        /// GET_SHMEM_CONFIG)
        GetVringBaseSkipDrain = 45 => "VHOST_USER_GET_VRING_BASE_SKIP_DRAIN", Typed,
    }
}

codes! {
    /// Requests sent by the back-end on the channel opened by SET_BACKEND_REQ_FD (ids 1–10).
    BackendCode {
        /// VHOST_USER_BACKEND_IOTLB_MSG
        IotlbMsg = 1 => "VHOST_USER_BACKEND_IOTLB_MSG", AckOnly,
        /// VHOST_USER_BACKEND_CONFIG_CHANGE_MSG
        ConfigChangeMsg = 2 => "VHOST_USER_BACKEND_CONFIG_CHANGE_MSG", AckOnly,
        /// VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG
        VringHostNotifierMsg = 3 => "VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG", AckOnly,
        /// VHOST_USER_BACKEND_VRING_CALL
        VringCall = 4 => "VHOST_USER_BACKEND_VRING_CALL", AckOnly,
        /// VHOST_USER_BACKEND_VRING_ERR
        VringErr = 5 => "VHOST_USER_BACKEND_VRING_ERR", AckOnly,
        /// VHOST_USER_BACKEND_SHARED_OBJECT_ADD
        SharedObjectAdd = 6 => "VHOST_USER_BACKEND_SHARED_OBJECT_ADD", AckOnly,
        /// VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE
        SharedObjectRemove = 7 => "VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE", AckOnly,
        /// VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP
        SharedObjectLookup = 8 => "VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP", WithStatus,
        /// VHOST_USER_BACKEND_SHMEM_MAP
        ShmemMap = 9 => "VHOST_USER_BACKEND_SHMEM_MAP", AckOnly,
        /// VHOST_USER_BACKEND_SHMEM_UNMAP
        ShmemUnmap = 10 => "VHOST_USER_BACKEND_SHMEM_UNMAP", AckOnly,
    }
}

/// A request code of either channel, for error context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// A front-end request (main socket).
    Frontend(FrontendCode),
    /// A back-end request (back-end channel).
    Backend(BackendCode),
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frontend(code) => code.fmt(f),
            Self::Backend(code) => code.fmt(f),
        }
    }
}

impl From<FrontendCode> for Code {
    fn from(code: FrontendCode) -> Self {
        Self::Frontend(code)
    }
}

impl From<BackendCode> for Code {
    fn from(code: BackendCode) -> Self {
        Self::Backend(code)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn reply_kinds_come_from_the_table() {
        assert_eq!(FrontendCode::GetFeatures.reply_kind(), ReplyKind::Typed);
        assert_eq!(FrontendCode::GetConfig.reply_kind(), ReplyKind::WithStatus);
        assert_eq!(FrontendCode::SetOwner.reply_kind(), ReplyKind::AckOnly);
        assert_eq!(BackendCode::SharedObjectLookup.reply_kind(), ReplyKind::WithStatus);
        assert_eq!(BackendCode::ConfigChangeMsg.reply_kind(), ReplyKind::AckOnly);
        let typed = FrontendCode::ALL.iter().filter(|c| c.reply_kind() == ReplyKind::Typed).count();
        assert_eq!(typed, 10, "GET_* with typed replies, CREATE_CRYPTO_SESSION and SET_LOG_BASE");
    }

    use super::*;

    #[test]
    fn frontend_codes_are_dense_1_to_45() {
        assert_eq!(FrontendCode::ALL.len(), 45);
        for (i, code) in FrontendCode::ALL.iter().enumerate() {
            assert_eq!(code.as_u32(), i as u32 + 1);
            assert_eq!(FrontendCode::from_u32(i as u32 + 1), Some(*code));
            assert!(code.spec_name().starts_with("VHOST_USER_"));
        }
        assert_eq!(FrontendCode::from_u32(0), None);
        assert_eq!(FrontendCode::from_u32(46), None);
        assert_eq!(FrontendCode::GetShmemConfig.as_u32(), 44);
        assert_eq!(FrontendCode::GetVringBaseSkipDrain.as_u32(), 45);
    }

    #[test]
    fn backend_codes_are_dense_1_to_10() {
        assert_eq!(BackendCode::ALL.len(), 10);
        for (i, code) in BackendCode::ALL.iter().enumerate() {
            assert_eq!(code.as_u32(), i as u32 + 1);
            assert_eq!(BackendCode::from_u32(i as u32 + 1), Some(*code));
            assert!(code.spec_name().starts_with("VHOST_USER_BACKEND_"));
        }
        assert_eq!(BackendCode::from_u32(11), None);
        assert_eq!(BackendCode::from_u32(1002), None);
    }
}
