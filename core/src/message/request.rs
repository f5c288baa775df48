//! Front-end → back-end requests (main socket): the typed [`Request`] and its validating parser
//! (the encoder is in `request_encode`).
//!
//! Parsing checks everything the frame alone can tell: header version and flags, the request code,
//! the exact payload size of the message, its descriptor count, the NOFD bit of vring-fd payloads,
//! vring index ranges and enumerated field values. It does not check anything that depends on the
//! session (negotiated features, configured queue count, current memory table): that is the state
//! machine's job.

use zerocopy::FromBytes;

use super::codec::{self, Payload};
use super::region::{MemoryTable, Region};
use super::types::{
    config_prefix, index_nofd, ConfigFlags, InflightDesc, Iotlb, LogBase, TransferDirection,
    TransferPhase, Uuid, VringAddr, VringBase, VringFd, VringIndex,
};
use super::Incoming;
use crate::limits::{
    MAX_CRYPTO_SESSION_SIZE, MAX_FDS_PER_MSG, MAX_MEM_TABLE_REGIONS, MAX_QUEUE_SIZE,
};
use crate::wire::{self, Code, FrontendCode};
use crate::{FdToken, ProtocolFeatures, VirtioFeatures, WireError};

/// A request from the front-end, validated and typed. Borrowed data points into the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request<'a> {
    /// VHOST_USER_GET_FEATURES
    GetFeatures,
    /// VHOST_USER_SET_FEATURES
    SetFeatures(VirtioFeatures),
    /// VHOST_USER_SET_OWNER
    SetOwner,
    /// VHOST_USER_RESET_OWNER (deprecated)
    ResetOwner,
    /// VHOST_USER_SET_MEM_TABLE: the regions and one fd per region, in order.
    SetMemTable {
        /// The regions.
        table: MemoryTable<'a>,
        /// One fd per region.
        fds: &'a [FdToken],
    },
    /// VHOST_USER_SET_LOG_BASE
    SetLogBase(LogBase),
    /// VHOST_USER_SET_LOG_FD: the "log modified" eventfd.
    SetLogFd(FdToken),
    /// VHOST_USER_SET_VRING_NUM: the queue size.
    SetVringNum {
        /// The vring.
        index: VringIndex,
        /// Queue size (at most 32768).
        num: u16,
    },
    /// VHOST_USER_SET_VRING_ADDR
    SetVringAddr(VringAddr),
    /// VHOST_USER_SET_VRING_BASE
    SetVringBase {
        /// The vring.
        index: VringIndex,
        /// Split or packed encoding of the next indices.
        base: VringBase,
    },
    /// VHOST_USER_GET_VRING_BASE: stop the ring (after draining) and return its base.
    GetVringBase {
        /// The vring.
        index: VringIndex,
    },
    /// VHOST_USER_SET_VRING_KICK
    SetVringKick(VringFd),
    /// VHOST_USER_SET_VRING_CALL
    SetVringCall(VringFd),
    /// VHOST_USER_SET_VRING_ERR
    SetVringErr(VringFd),
    /// VHOST_USER_GET_PROTOCOL_FEATURES
    GetProtocolFeatures,
    /// VHOST_USER_SET_PROTOCOL_FEATURES
    SetProtocolFeatures(ProtocolFeatures),
    /// VHOST_USER_GET_QUEUE_NUM
    GetQueueNum,
    /// VHOST_USER_SET_VRING_ENABLE
    SetVringEnable {
        /// The vring.
        index: VringIndex,
        /// Enable (1) or disable (0).
        enable: bool,
    },
    /// VHOST_USER_SEND_RARP: the guest's MAC address.
    SendRarp([u8; 6]),
    /// VHOST_USER_NET_SET_MTU
    NetSetMtu(u16),
    /// VHOST_USER_SET_BACKEND_REQ_FD: the back-end channel socket.
    SetBackendReqFd(FdToken),
    /// VHOST_USER_IOTLB_MSG
    IotlbMsg(Iotlb),
    /// VHOST_USER_SET_VRING_ENDIAN
    SetVringEndian {
        /// The vring.
        index: VringIndex,
        /// Big-endian (1) or little-endian (0).
        big_endian: bool,
    },
    /// VHOST_USER_GET_CONFIG: read `size` bytes at `offset` of the config space.
    GetConfig {
        /// Offset in the config space.
        offset: u32,
        /// Bytes to read (at most 256).
        size: u32,
        /// Access flags.
        flags: ConfigFlags,
    },
    /// VHOST_USER_SET_CONFIG
    SetConfig {
        /// Offset in the config space.
        offset: u32,
        /// Access flags.
        flags: ConfigFlags,
        /// Bytes to write (at most 256).
        data: &'a [u8],
    },
    /// VHOST_USER_CREATE_CRYPTO_SESSION: the session description, carried opaquely.
    CreateCryptoSession(&'a [u8]),
    /// VHOST_USER_CLOSE_CRYPTO_SESSION
    CloseCryptoSession(u64),
    /// VHOST_USER_POSTCOPY_ADVISE
    PostcopyAdvise,
    /// VHOST_USER_POSTCOPY_LISTEN
    PostcopyListen,
    /// VHOST_USER_POSTCOPY_END
    PostcopyEnd,
    /// VHOST_USER_GET_INFLIGHT_FD: the queue count and size the area must cover.
    GetInflightFd(InflightDesc),
    /// VHOST_USER_SET_INFLIGHT_FD
    SetInflightFd {
        /// Where the area is in the fd.
        desc: InflightDesc,
        /// The shared-memory fd.
        fd: FdToken,
    },
    /// VHOST_USER_GPU_SET_SOCKET
    GpuSetSocket(FdToken),
    /// VHOST_USER_RESET_DEVICE
    ResetDevice,
    /// VHOST_USER_VRING_KICK (in-band notification)
    VringKick {
        /// The vring.
        index: VringIndex,
    },
    /// VHOST_USER_GET_MAX_MEM_SLOTS
    GetMaxMemSlots,
    /// VHOST_USER_ADD_MEM_REG
    AddMemReg {
        /// The region.
        region: Region,
        /// Its fd.
        fd: FdToken,
    },
    /// VHOST_USER_REM_MEM_REG: the fd is a compatibility allowance; it must be released.
    RemMemReg {
        /// The region, identified by guest address, user address and size.
        region: Region,
        /// A stray fd some front-ends send.
        fd: Option<FdToken>,
    },
    /// VHOST_USER_SET_STATUS: the virtio device status byte.
    SetStatus(u8),
    /// VHOST_USER_GET_STATUS
    GetStatus,
    /// VHOST_USER_GET_SHARED_OBJECT
    GetSharedObject(Uuid),
    /// VHOST_USER_SET_DEVICE_STATE_FD
    SetDeviceStateFd {
        /// Save or load.
        direction: TransferDirection,
        /// Migration phase.
        phase: TransferPhase,
        /// The pipe end to write to or read from.
        fd: FdToken,
    },
    /// VHOST_USER_CHECK_DEVICE_STATE
    CheckDeviceState,
    /// VHOST_USER_GET_SHMEM_CONFIG
    GetShmemConfig,
    /// VHOST_USER_GET_VRING_BASE_SKIP_DRAIN: stop the ring without draining.
    GetVringBaseSkipDrain {
        /// The vring.
        index: VringIndex,
    },
}

/// Parses a vring state payload into a checked index and the raw `num`.
fn vring_state(payload: &Payload<'_>) -> Result<(VringIndex, u32), WireError> {
    let state = payload.exact::<wire::VringState>()?;
    Ok((VringIndex::from_wire(payload, u64::from(state.index.get()))?, state.num.get()))
}

fn vring_bool(payload: &Payload<'_>, field: &'static str) -> Result<(VringIndex, bool), WireError> {
    let (index, num) = vring_state(payload)?;
    match num {
        0 => Ok((index, false)),
        1 => Ok((index, true)),
        other => Err(payload.invalid(field, u64::from(other))),
    }
}

fn single_region(payload: &Payload<'_>) -> Result<Region, WireError> {
    let (_, rest) = payload.prefix::<wire::SingleRegionHeader>()?;
    Region::parse_one(payload, rest)
}

impl<'a> Request<'a> {
    /// Parses one complete frame (header and payload) and the descriptors that arrived with it.
    pub fn parse(frame: &'a [u8], fds: &'a [FdToken]) -> Result<Incoming<Self>, WireError> {
        let raw = codec::split_frame(frame)?;
        let code =
            FrontendCode::from_u32(raw.request).ok_or(WireError::UnknownRequest(raw.request))?;
        let need_reply = codec::check_request_flags(Code::Frontend(code), raw.flags)?;
        let message = Self::parse_payload(code, raw.payload, fds)?;
        Ok(Incoming { message, need_reply })
    }

    /// Parses the payload of a request whose code is known.
    pub fn parse_payload(
        code: FrontendCode,
        bytes: &'a [u8],
        fds: &'a [FdToken],
    ) -> Result<Self, WireError> {
        use FrontendCode as C;
        let p = Payload { code: Code::Frontend(code), bytes };
        let no_fds = || codec::fds_exact(p.code, fds, 0);
        let request = match code {
            C::GetFeatures => {
                p.empty()?;
                no_fds()?;
                Self::GetFeatures
            }
            C::SetFeatures => {
                let bits = p.u64()?;
                no_fds()?;
                Self::SetFeatures(VirtioFeatures::from_bits_retain(bits))
            }
            C::SetOwner => {
                p.empty()?;
                no_fds()?;
                Self::SetOwner
            }
            C::ResetOwner => {
                p.empty()?;
                no_fds()?;
                Self::ResetOwner
            }
            C::SetMemTable => {
                let table = MemoryTable::parse(&p, MAX_MEM_TABLE_REGIONS)?;
                codec::fds_exact(p.code, fds, table.len())?;
                Self::SetMemTable { table, fds }
            }
            C::SetLogBase => {
                if let Ok(log) = wire::Log::ref_from_bytes(bytes) {
                    Self::SetLogBase(LogBase::Shared {
                        mmap_size: log.mmap_size.get(),
                        mmap_offset: log.mmap_offset.get(),
                        fd: codec::optional_fd(p.code, fds)?,
                    })
                } else if bytes.len() == 8 {
                    no_fds()?;
                    Self::SetLogBase(LogBase::Legacy { base: p.u64()? })
                } else {
                    return Err(p.size_error(core::mem::size_of::<wire::Log>()));
                }
            }
            C::SetLogFd => {
                p.empty()?;
                Self::SetLogFd(codec::one_fd(p.code, fds)?)
            }
            C::SetVringNum => {
                let (index, num) = vring_state(&p)?;
                no_fds()?;
                if num > MAX_QUEUE_SIZE {
                    return Err(p.invalid("queue size", u64::from(num)));
                }
                // Cannot fail: num <= 32768 was checked above.
                let num = u16::try_from(num).unwrap_or(u16::MAX);
                Self::SetVringNum { index, num }
            }
            C::SetVringAddr => {
                let addr = VringAddr::from_wire(&p, p.exact::<wire::VringAddr>()?)?;
                no_fds()?;
                Self::SetVringAddr(addr)
            }
            C::SetVringBase => {
                let (index, num) = vring_state(&p)?;
                no_fds()?;
                Self::SetVringBase { index, base: VringBase(num) }
            }
            C::GetVringBase => {
                let (index, _) = vring_state(&p)?;
                no_fds()?;
                Self::GetVringBase { index }
            }
            C::SetVringKick | C::SetVringCall | C::SetVringErr => {
                let (index, fd) = index_nofd(&p, p.u64()?, fds)?;
                let vring = VringFd { index, fd };
                match code {
                    C::SetVringKick => Self::SetVringKick(vring),
                    C::SetVringCall => Self::SetVringCall(vring),
                    _ => Self::SetVringErr(vring),
                }
            }
            C::GetProtocolFeatures => {
                p.empty()?;
                no_fds()?;
                Self::GetProtocolFeatures
            }
            C::SetProtocolFeatures => {
                let bits = p.u64()?;
                no_fds()?;
                Self::SetProtocolFeatures(ProtocolFeatures::from_bits_retain(bits))
            }
            C::GetQueueNum => {
                p.empty()?;
                no_fds()?;
                Self::GetQueueNum
            }
            C::SetVringEnable => {
                let (index, enable) = vring_bool(&p, "vring enable")?;
                no_fds()?;
                Self::SetVringEnable { index, enable }
            }
            C::SendRarp => {
                let word = p.u64()?.to_ne_bytes();
                no_fds()?;
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&word[..6]);
                Self::SendRarp(mac)
            }
            C::NetSetMtu => {
                let mtu = p.u64()?;
                no_fds()?;
                Self::NetSetMtu(u16::try_from(mtu).map_err(|_| p.invalid("mtu", mtu))?)
            }
            C::SetBackendReqFd => {
                p.empty()?;
                Self::SetBackendReqFd(codec::one_fd(p.code, fds)?)
            }
            C::IotlbMsg => {
                let msg = Iotlb::from_wire(&p, p.exact::<wire::IotlbMsg>()?)?;
                no_fds()?;
                Self::IotlbMsg(msg)
            }
            C::SetVringEndian => {
                let (index, big_endian) = vring_bool(&p, "vring endianness")?;
                no_fds()?;
                Self::SetVringEndian { index, big_endian }
            }
            C::GetConfig => {
                let (offset, flags, data) = config_prefix(&p)?;
                no_fds()?;
                Self::GetConfig { offset, size: data.len() as u32, flags }
            }
            C::SetConfig => {
                let (offset, flags, data) = config_prefix(&p)?;
                no_fds()?;
                Self::SetConfig { offset, flags, data }
            }
            C::CreateCryptoSession => {
                if bytes.is_empty() || bytes.len() > MAX_CRYPTO_SESSION_SIZE {
                    return Err(p.size_error(MAX_CRYPTO_SESSION_SIZE));
                }
                no_fds()?;
                Self::CreateCryptoSession(bytes)
            }
            C::CloseCryptoSession => {
                let id = p.u64()?;
                no_fds()?;
                Self::CloseCryptoSession(id)
            }
            C::PostcopyAdvise | C::PostcopyListen | C::PostcopyEnd => {
                p.empty()?;
                no_fds()?;
                match code {
                    C::PostcopyAdvise => Self::PostcopyAdvise,
                    C::PostcopyListen => Self::PostcopyListen,
                    _ => Self::PostcopyEnd,
                }
            }
            C::GetInflightFd => {
                let desc = InflightDesc::from_wire(p.exact::<wire::Inflight>()?);
                no_fds()?;
                Self::GetInflightFd(desc)
            }
            C::SetInflightFd => {
                let desc = InflightDesc::from_wire(p.exact::<wire::Inflight>()?);
                Self::SetInflightFd { desc, fd: codec::one_fd(p.code, fds)? }
            }
            C::GpuSetSocket => {
                p.empty()?;
                Self::GpuSetSocket(codec::one_fd(p.code, fds)?)
            }
            C::ResetDevice => {
                p.empty()?;
                no_fds()?;
                Self::ResetDevice
            }
            C::VringKick => {
                let (index, _) = vring_state(&p)?;
                no_fds()?;
                Self::VringKick { index }
            }
            C::GetMaxMemSlots => {
                p.empty()?;
                no_fds()?;
                Self::GetMaxMemSlots
            }
            C::AddMemReg => {
                let region = single_region(&p)?;
                Self::AddMemReg { region, fd: codec::one_fd(p.code, fds)? }
            }
            C::RemMemReg => {
                let region = single_region(&p)?;
                Self::RemMemReg { region, fd: codec::optional_fd(p.code, fds)? }
            }
            C::SetStatus => {
                let status = p.u64()?;
                no_fds()?;
                Self::SetStatus(
                    u8::try_from(status).map_err(|_| p.invalid("device status", status))?,
                )
            }
            C::GetStatus => {
                p.empty()?;
                no_fds()?;
                Self::GetStatus
            }
            C::GetSharedObject => {
                let object = p.exact::<wire::SharedObject>()?;
                no_fds()?;
                Self::GetSharedObject(Uuid(object.uuid))
            }
            C::SetDeviceStateFd => {
                let transfer = p.exact::<wire::DeviceStateTransfer>()?;
                let direction = match transfer.direction.get() {
                    0 => TransferDirection::Save,
                    1 => TransferDirection::Load,
                    other => return Err(p.invalid("transfer direction", u64::from(other))),
                };
                let phase = match transfer.phase.get() {
                    0 => TransferPhase::Stopped,
                    other => return Err(p.invalid("migration phase", u64::from(other))),
                };
                Self::SetDeviceStateFd { direction, phase, fd: codec::one_fd(p.code, fds)? }
            }
            C::CheckDeviceState => {
                p.empty()?;
                no_fds()?;
                Self::CheckDeviceState
            }
            C::GetShmemConfig => {
                p.empty()?;
                no_fds()?;
                Self::GetShmemConfig
            }
            C::GetVringBaseSkipDrain => {
                let (index, _) = vring_state(&p)?;
                no_fds()?;
                Self::GetVringBaseSkipDrain { index }
            }
        };
        Ok(request)
    }

    /// The request code.
    pub fn code(&self) -> FrontendCode {
        use FrontendCode as C;
        match self {
            Self::GetFeatures => C::GetFeatures,
            Self::SetFeatures(_) => C::SetFeatures,
            Self::SetOwner => C::SetOwner,
            Self::ResetOwner => C::ResetOwner,
            Self::SetMemTable { .. } => C::SetMemTable,
            Self::SetLogBase(_) => C::SetLogBase,
            Self::SetLogFd(_) => C::SetLogFd,
            Self::SetVringNum { .. } => C::SetVringNum,
            Self::SetVringAddr(_) => C::SetVringAddr,
            Self::SetVringBase { .. } => C::SetVringBase,
            Self::GetVringBase { .. } => C::GetVringBase,
            Self::SetVringKick(_) => C::SetVringKick,
            Self::SetVringCall(_) => C::SetVringCall,
            Self::SetVringErr(_) => C::SetVringErr,
            Self::GetProtocolFeatures => C::GetProtocolFeatures,
            Self::SetProtocolFeatures(_) => C::SetProtocolFeatures,
            Self::GetQueueNum => C::GetQueueNum,
            Self::SetVringEnable { .. } => C::SetVringEnable,
            Self::SendRarp(_) => C::SendRarp,
            Self::NetSetMtu(_) => C::NetSetMtu,
            Self::SetBackendReqFd(_) => C::SetBackendReqFd,
            Self::IotlbMsg(_) => C::IotlbMsg,
            Self::SetVringEndian { .. } => C::SetVringEndian,
            Self::GetConfig { .. } => C::GetConfig,
            Self::SetConfig { .. } => C::SetConfig,
            Self::CreateCryptoSession(_) => C::CreateCryptoSession,
            Self::CloseCryptoSession(_) => C::CloseCryptoSession,
            Self::PostcopyAdvise => C::PostcopyAdvise,
            Self::PostcopyListen => C::PostcopyListen,
            Self::PostcopyEnd => C::PostcopyEnd,
            Self::GetInflightFd(_) => C::GetInflightFd,
            Self::SetInflightFd { .. } => C::SetInflightFd,
            Self::GpuSetSocket(_) => C::GpuSetSocket,
            Self::ResetDevice => C::ResetDevice,
            Self::VringKick { .. } => C::VringKick,
            Self::GetMaxMemSlots => C::GetMaxMemSlots,
            Self::AddMemReg { .. } => C::AddMemReg,
            Self::RemMemReg { .. } => C::RemMemReg,
            Self::SetStatus(_) => C::SetStatus,
            Self::GetStatus => C::GetStatus,
            Self::GetSharedObject(_) => C::GetSharedObject,
            Self::SetDeviceStateFd { .. } => C::SetDeviceStateFd,
            Self::CheckDeviceState => C::CheckDeviceState,
            Self::GetShmemConfig => C::GetShmemConfig,
            Self::GetVringBaseSkipDrain { .. } => C::GetVringBaseSkipDrain,
        }
    }

    /// The descriptors to send with this request, in order.
    pub fn fds(&self) -> heapless::Vec<FdToken, MAX_FDS_PER_MSG> {
        let mut out = heapless::Vec::new();
        let one = match self {
            Self::SetMemTable { fds, .. } => {
                for fd in fds.iter().take(MAX_FDS_PER_MSG) {
                    // Cannot fail: at most MAX_FDS_PER_MSG elements are pushed.
                    let _ = out.push(*fd);
                }
                None
            }
            Self::SetLogBase(LogBase::Shared { fd, .. }) => *fd,
            Self::SetVringKick(v) | Self::SetVringCall(v) | Self::SetVringErr(v) => v.fd,
            Self::SetLogFd(fd)
            | Self::SetBackendReqFd(fd)
            | Self::GpuSetSocket(fd)
            | Self::SetInflightFd { fd, .. }
            | Self::AddMemReg { fd, .. }
            | Self::SetDeviceStateFd { fd, .. } => Some(*fd),
            Self::RemMemReg { fd, .. } => *fd,
            _ => None,
        };
        if let Some(fd) = one {
            // Cannot fail: the vector is empty here.
            let _ = out.push(fd);
        }
        out
    }
}
