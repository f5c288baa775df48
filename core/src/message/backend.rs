//! Back-end → front-end requests on the back-end channel (opened by SET_BACKEND_REQ_FD), and the
//! front-end's replies to them: [`BackendRequest`] and [`BackendReply`].
//!
//! The channel carries at most 8 descriptors per message (spec "Back-end communication"). Whether
//! each message's feature was negotiated is for the state machines to check.

use super::codec::{self, Encoder, Payload};
use super::types::{index_nofd, index_nofd_word, Iotlb, ShmemMapping, Uuid, VringIndex};
use super::Incoming;
use crate::limits::MAX_FDS_PER_MSG;
use crate::wire::{self, BackendCode, Code, HeaderFlags, U32, U64};
use crate::{FdToken, WireError};

/// A request from the back-end to the front-end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum BackendRequest {
    /// VHOST_USER_BACKEND_IOTLB_MSG (miss or access failure).
    IotlbMsg(Iotlb),
    /// VHOST_USER_BACKEND_CONFIG_CHANGE_MSG: the device config changed; the front-end re-reads it.
    ConfigChangeMsg,
    /// VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG: map (with fd) or unmap (without) a notifier area.
    VringHostNotifierMsg {
        /// The vring.
        index: VringIndex,
        /// Size of the area (the host page size).
        size: u64,
        /// Offset of the area in the fd.
        offset: u64,
        /// The fd to map; `None` de-registers the notifier.
        fd: Option<FdToken>,
    },
    /// VHOST_USER_BACKEND_VRING_CALL (in-band notification).
    VringCall {
        /// The vring.
        index: VringIndex,
    },
    /// VHOST_USER_BACKEND_VRING_ERR (in-band notification).
    VringErr {
        /// The vring.
        index: VringIndex,
    },
    /// VHOST_USER_BACKEND_SHARED_OBJECT_ADD
    SharedObjectAdd(Uuid),
    /// VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE
    SharedObjectRemove(Uuid),
    /// VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP
    SharedObjectLookup(Uuid),
    /// VHOST_USER_BACKEND_SHMEM_MAP
    ShmemMap {
        /// What to map where.
        mapping: ShmemMapping,
        /// The fd to map from.
        fd: FdToken,
    },
    /// VHOST_USER_BACKEND_SHMEM_UNMAP (`shm_offset` and `len` name a whole mapping).
    ShmemUnmap(ShmemMapping),
}

impl BackendRequest {
    /// Parses one complete frame from the back-end channel.
    pub fn parse(frame: &[u8], fds: &[FdToken]) -> Result<Incoming<Self>, WireError> {
        let raw = codec::split_frame(frame)?;
        let code =
            BackendCode::from_u32(raw.request).ok_or(WireError::UnknownRequest(raw.request))?;
        let need_reply = codec::check_request_flags(Code::Backend(code), raw.flags)?;
        let message = Self::parse_payload(code, raw.payload, fds)?;
        Ok(Incoming { message, need_reply })
    }

    /// Parses the payload of a back-end request whose code is known.
    pub fn parse_payload(
        code: BackendCode,
        bytes: &[u8],
        fds: &[FdToken],
    ) -> Result<Self, WireError> {
        use BackendCode as C;
        let p = Payload { code: Code::Backend(code), bytes };
        if fds.len() > MAX_FDS_PER_MSG {
            return Err(WireError::TooManyFds {
                code: p.code,
                max: MAX_FDS_PER_MSG,
                got: fds.len(),
            });
        }
        let no_fds = || codec::fds_exact(p.code, fds, 0);
        let vring = |p: &Payload<'_>| -> Result<VringIndex, WireError> {
            let state = p.exact::<wire::VringState>()?;
            codec::fds_exact(p.code, fds, 0)?;
            VringIndex::from_wire(p, u64::from(state.index.get()))
        };
        let uuid = |p: &Payload<'_>| -> Result<Uuid, WireError> {
            let object = p.exact::<wire::SharedObject>()?;
            codec::fds_exact(p.code, fds, 0)?;
            Ok(Uuid(object.uuid))
        };
        let request = match code {
            C::IotlbMsg => {
                let msg = Iotlb::from_wire(&p, p.exact::<wire::IotlbMsg>()?)?;
                no_fds()?;
                Self::IotlbMsg(msg)
            }
            C::ConfigChangeMsg => {
                p.empty()?;
                no_fds()?;
                Self::ConfigChangeMsg
            }
            C::VringHostNotifierMsg => {
                let area = p.exact::<wire::VringArea>()?;
                let (index, fd) = index_nofd(&p, area.index.get(), fds)?;
                Self::VringHostNotifierMsg {
                    index,
                    size: area.size.get(),
                    offset: area.offset.get(),
                    fd,
                }
            }
            C::VringCall => Self::VringCall { index: vring(&p)? },
            C::VringErr => Self::VringErr { index: vring(&p)? },
            C::SharedObjectAdd => Self::SharedObjectAdd(uuid(&p)?),
            C::SharedObjectRemove => Self::SharedObjectRemove(uuid(&p)?),
            C::SharedObjectLookup => Self::SharedObjectLookup(uuid(&p)?),
            C::ShmemMap => {
                let mapping = ShmemMapping::from_wire(&p, p.exact::<wire::ShmemMap>()?)?;
                Self::ShmemMap { mapping, fd: codec::one_fd(p.code, fds)? }
            }
            C::ShmemUnmap => {
                let mapping = ShmemMapping::from_wire(&p, p.exact::<wire::ShmemMap>()?)?;
                no_fds()?;
                Self::ShmemUnmap(mapping)
            }
        };
        Ok(request)
    }

    /// The request code.
    pub fn code(&self) -> BackendCode {
        use BackendCode as C;
        match self {
            Self::IotlbMsg(_) => C::IotlbMsg,
            Self::ConfigChangeMsg => C::ConfigChangeMsg,
            Self::VringHostNotifierMsg { .. } => C::VringHostNotifierMsg,
            Self::VringCall { .. } => C::VringCall,
            Self::VringErr { .. } => C::VringErr,
            Self::SharedObjectAdd(_) => C::SharedObjectAdd,
            Self::SharedObjectRemove(_) => C::SharedObjectRemove,
            Self::SharedObjectLookup(_) => C::SharedObjectLookup,
            Self::ShmemMap { .. } => C::ShmemMap,
            Self::ShmemUnmap(_) => C::ShmemUnmap,
        }
    }

    /// The descriptors to send with this request.
    pub fn fds(&self) -> heapless::Vec<FdToken, MAX_FDS_PER_MSG> {
        let mut out = heapless::Vec::new();
        let fd = match self {
            Self::VringHostNotifierMsg { fd, .. } => *fd,
            Self::ShmemMap { fd, .. } => Some(*fd),
            _ => None,
        };
        if let Some(fd) = fd {
            // Cannot fail: the vector is empty here.
            let _ = out.push(fd);
        }
        out
    }

    /// Encodes the request into `buf` and returns the frame length. `need_reply` sets NEED_REPLY.
    pub fn encode_into(&self, need_reply: bool, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut flags = HeaderFlags::VERSION_1;
        flags.set(HeaderFlags::NEED_REPLY, need_reply);
        let mut e = Encoder::new(buf, self.code().as_u32(), flags);
        match *self {
            Self::IotlbMsg(msg) => e.put_value(&msg.to_wire()),
            Self::ConfigChangeMsg => {}
            Self::VringHostNotifierMsg { index, size, offset, fd } => {
                e.put_value(&wire::VringArea {
                    index: U64::new(index_nofd_word(index, fd)),
                    size: U64::new(size),
                    offset: U64::new(offset),
                });
            }
            Self::VringCall { index } | Self::VringErr { index } => {
                e.put_value(&wire::VringState { index: U32::new(index.as_u32()), num: U32::ZERO });
            }
            Self::SharedObjectAdd(uuid)
            | Self::SharedObjectRemove(uuid)
            | Self::SharedObjectLookup(uuid) => e.put(&uuid.0),
            Self::ShmemMap { mapping, .. } | Self::ShmemUnmap(mapping) => {
                e.put_value(&mapping.to_wire());
            }
        }
        e.finish()
    }
}

/// The front-end's reply to a back-end request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum BackendReply {
    /// The `u64` acknowledgement (REPLY_ACK): 0 on success.
    Ack {
        /// The request acknowledged.
        request: BackendCode,
        /// 0 on success, non-zero on failure.
        status: u64,
    },
    /// BACKEND_SHARED_OBJECT_LOOKUP: a status and, on success, the object's dma-buf fd.
    SharedObjectLookup {
        /// 0 on success.
        status: u64,
        /// The dma-buf fd.
        fd: Option<FdToken>,
    },
}

impl BackendReply {
    /// Parses one complete reply frame from the back-end channel.
    pub fn parse(frame: &[u8], fds: &[FdToken]) -> Result<Self, WireError> {
        let raw = codec::split_frame(frame)?;
        let code =
            BackendCode::from_u32(raw.request).ok_or(WireError::UnknownRequest(raw.request))?;
        codec::check_reply_flags(Code::Backend(code), raw.flags)?;
        let p = Payload { code: Code::Backend(code), bytes: raw.payload };
        let status = p.u64()?;
        if code == BackendCode::SharedObjectLookup {
            Ok(Self::SharedObjectLookup { status, fd: codec::optional_fd(p.code, fds)? })
        } else {
            codec::fds_exact(p.code, fds, 0)?;
            Ok(Self::Ack { request: code, status })
        }
    }

    /// The code of the request this reply answers.
    pub fn code(&self) -> BackendCode {
        match self {
            Self::Ack { request, .. } => *request,
            Self::SharedObjectLookup { .. } => BackendCode::SharedObjectLookup,
        }
    }

    /// The descriptors to send with this reply.
    pub fn fds(&self) -> Option<FdToken> {
        match self {
            Self::Ack { .. } => None,
            Self::SharedObjectLookup { fd, .. } => *fd,
        }
    }

    /// Encodes the reply into `buf` with flags VERSION|REPLY and returns the frame length.
    pub fn encode_into(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut e =
            Encoder::new(buf, self.code().as_u32(), HeaderFlags::VERSION_1 | HeaderFlags::REPLY);
        match *self {
            Self::Ack { status, .. } | Self::SharedObjectLookup { status, .. } => e.put_u64(status),
        }
        e.finish()
    }
}
