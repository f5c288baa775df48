//! Back-end → front-end replies on the main socket: the typed [`Reply`], its parser and its encoder.
//!
//! A reply's header carries the code of the request it answers and exactly the flags VERSION|REPLY
//! (QEMU's front-end fails any other value). Which payload a reply carries follows from that code
//! and, for the few requests that may get either a typed reply or a REPLY_ACK `u64`, from the size.

use super::codec::{self, Encoder, Payload};
use super::region::{MemoryTable, Region};
use super::types::{config_header, config_prefix, ConfigFlags, InflightDesc};
use super::types::{VringBase, VringIndex};
use crate::limits::{
    MAX_CRYPTO_SESSION_SIZE, MAX_FDS_PER_MSG, MAX_MEM_TABLE_REGIONS, MAX_SHMEM_REGIONS,
};
use crate::wire::{self, Code, FrontendCode, HeaderFlags, U32};
use crate::{FdToken, ProtocolFeatures, VirtioFeatures, WireError};

/// Bit 8 of the SET_DEVICE_STATE_FD reply: the back-end returns no fd of its own.
const DEVICE_STATE_NO_FD: u64 = 1 << 8;

/// A reply from the back-end to a front-end request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply<'a> {
    /// GET_FEATURES: the features the back-end offers.
    Features(VirtioFeatures),
    /// GET_PROTOCOL_FEATURES: the protocol features the back-end offers.
    ProtocolFeatures(ProtocolFeatures),
    /// SET_MEM_TABLE during postcopy: the regions with the back-end's mapping bases.
    MemTableBases(MemoryTable<'a>),
    /// SET_LOG_BASE with LOG_SHMFD. The payload is not specified (DPDK sends 0 bytes, libvhost-user
    /// 8, rust-vmm 16), so it is carried as bytes and a reader must accept any size.
    LogBase(&'a [u8]),
    /// GET_VRING_BASE: the ring's base, after it stopped.
    VringBase {
        /// The vring.
        index: VringIndex,
        /// Split or packed encoding.
        base: VringBase,
    },
    /// GET_QUEUE_NUM: the number of queues the back-end supports.
    QueueNum(u64),
    /// GET_CONFIG: the bytes read; an empty `data` means the read failed.
    Config {
        /// Offset in the config space.
        offset: u32,
        /// Access flags echoed from the request.
        flags: ConfigFlags,
        /// The config bytes.
        data: &'a [u8],
    },
    /// CREATE_CRYPTO_SESSION: the session description with its id, carried opaquely.
    CryptoSession(&'a [u8]),
    /// POSTCOPY_ADVISE: the userfaultfd.
    PostcopyAdvise {
        /// The userfaultfd.
        userfaultfd: FdToken,
    },
    /// GET_INFLIGHT_FD: the area the back-end allocated and, unless its size is 0, its fd.
    InflightFd {
        /// Where the area is.
        desc: InflightDesc,
        /// The shared-memory fd; `None` exactly when `desc.mmap_size` is 0.
        fd: Option<FdToken>,
    },
    /// GET_MAX_MEM_SLOTS
    MaxMemSlots(u64),
    /// ADD_MEM_REG during legacy postcopy: the region with the back-end's mapping base.
    AddMemRegBase(Region),
    /// GET_STATUS: the virtio device status byte.
    Status(u8),
    /// GET_SHARED_OBJECT: 0 and the object's dma-buf fd, or an error and no fd.
    SharedObject {
        /// 0 on success.
        status: u64,
        /// The dma-buf fd.
        fd: Option<FdToken>,
    },
    /// SET_DEVICE_STATE_FD: an error code (bits 0–7) and optionally the back-end's own fd.
    DeviceStateFd {
        /// 0 on success.
        error: u8,
        /// The back-end's end of the transfer channel; `None` sets bit 8 ("use yours").
        fd: Option<FdToken>,
    },
    /// GET_SHMEM_CONFIG: the shared-memory region sizes, viewed in place.
    ShmemConfig(&'a wire::ShmemConfig),
    /// GET_VRING_BASE_SKIP_DRAIN: the ring's base, after it stopped without draining.
    VringBaseSkipDrain {
        /// The vring.
        index: VringIndex,
        /// Split or packed encoding.
        base: VringBase,
    },
    /// The `u64` status of a request without a typed reply: the REPLY_ACK acknowledgement, and the
    /// replies of IOTLB_MSG, POSTCOPY_LISTEN, POSTCOPY_END and CHECK_DEVICE_STATE. 0 is success.
    Ack {
        /// The request acknowledged.
        request: FrontendCode,
        /// 0 on success, non-zero on failure.
        status: u64,
    },
}

fn vring_reply(p: &Payload<'_>) -> Result<(VringIndex, VringBase), WireError> {
    let state = p.exact::<wire::VringState>()?;
    Ok((VringIndex::from_wire(p, u64::from(state.index.get()))?, VringBase(state.num.get())))
}

impl<'a> Reply<'a> {
    /// Parses one complete reply frame and the descriptors that arrived with it.
    pub fn parse(frame: &'a [u8], fds: &'a [FdToken]) -> Result<Self, WireError> {
        let raw = codec::split_frame(frame)?;
        let code =
            FrontendCode::from_u32(raw.request).ok_or(WireError::UnknownRequest(raw.request))?;
        codec::check_reply_flags(Code::Frontend(code), raw.flags)?;
        Self::parse_payload(code, raw.payload, fds)
    }

    /// Parses the payload of a reply to `code`.
    pub fn parse_payload(
        code: FrontendCode,
        bytes: &'a [u8],
        fds: &'a [FdToken],
    ) -> Result<Self, WireError> {
        use FrontendCode as C;
        let p = Payload { code: Code::Frontend(code), bytes };
        let no_fds = || codec::fds_exact(p.code, fds, 0);
        let ack = |p: &Payload<'_>| -> Result<Self, WireError> {
            let status = p.u64()?;
            codec::fds_exact(p.code, fds, 0)?;
            Ok(Self::Ack { request: code, status })
        };
        let reply = match code {
            C::GetFeatures => {
                let bits = p.u64()?;
                no_fds()?;
                Self::Features(VirtioFeatures::from_bits_retain(bits))
            }
            C::GetProtocolFeatures => {
                let bits = p.u64()?;
                no_fds()?;
                Self::ProtocolFeatures(ProtocolFeatures::from_bits_retain(bits))
            }
            // The `u64` ack, or the postcopy form of an empty table (`nregions` 0 and its
            // padding): the same eight bytes, read as the ack.
            C::SetMemTable if bytes.len() == 8 => ack(&p)?,
            C::SetMemTable => {
                let table = MemoryTable::parse(&p, MAX_MEM_TABLE_REGIONS)?;
                no_fds()?;
                Self::MemTableBases(table)
            }
            C::SetLogBase => {
                no_fds()?;
                Self::LogBase(bytes)
            }
            C::GetVringBase => {
                let (index, base) = vring_reply(&p)?;
                no_fds()?;
                Self::VringBase { index, base }
            }
            C::GetVringBaseSkipDrain => {
                let (index, base) = vring_reply(&p)?;
                no_fds()?;
                Self::VringBaseSkipDrain { index, base }
            }
            C::GetQueueNum => {
                let n = p.u64()?;
                no_fds()?;
                Self::QueueNum(n)
            }
            // libvhost-user answers a failed read with no payload at all: the same failure as
            // the spec's empty config.
            C::GetConfig if bytes.is_empty() => {
                no_fds()?;
                Self::Config { offset: 0, flags: ConfigFlags::Writable, data: &[] }
            }
            C::GetConfig => {
                let (offset, flags, data) = config_prefix(&p)?;
                no_fds()?;
                Self::Config { offset, flags, data }
            }
            C::CreateCryptoSession => {
                if bytes.is_empty() || bytes.len() > MAX_CRYPTO_SESSION_SIZE {
                    return Err(p.size_error(MAX_CRYPTO_SESSION_SIZE));
                }
                no_fds()?;
                Self::CryptoSession(bytes)
            }
            C::PostcopyAdvise if bytes.is_empty() => {
                Self::PostcopyAdvise { userfaultfd: codec::one_fd(p.code, fds)? }
            }
            C::GetInflightFd => {
                let desc = InflightDesc::from_wire(p.exact::<wire::Inflight>()?);
                let fd = if desc.mmap_size == 0 {
                    no_fds()?;
                    None
                } else {
                    Some(codec::one_fd(p.code, fds)?)
                };
                Self::InflightFd { desc, fd }
            }
            C::GetMaxMemSlots => {
                let n = p.u64()?;
                no_fds()?;
                Self::MaxMemSlots(n)
            }
            C::AddMemReg if bytes.len() == 8 => ack(&p)?,
            C::AddMemReg => {
                let (_, rest) = p.prefix::<wire::SingleRegionHeader>()?;
                let region = Region::parse_one(&p, rest)?;
                no_fds()?;
                Self::AddMemRegBase(region)
            }
            C::GetStatus => {
                let status = p.u64()?;
                no_fds()?;
                Self::Status(u8::try_from(status).map_err(|_| p.invalid("device status", status))?)
            }
            C::GetSharedObject => {
                let status = p.u64()?;
                Self::SharedObject { status, fd: codec::optional_fd(p.code, fds)? }
            }
            C::SetDeviceStateFd => {
                let word = p.u64()?;
                if word & !(0xff | DEVICE_STATE_NO_FD) != 0 {
                    return Err(p.invalid("device state reply", word));
                }
                let fd = if word & DEVICE_STATE_NO_FD != 0 {
                    no_fds()?;
                    None
                } else {
                    Some(codec::one_fd(p.code, fds)?)
                };
                Self::DeviceStateFd { error: (word & 0xff) as u8, fd }
            }
            C::GetShmemConfig => {
                let config = p.exact::<wire::ShmemConfig>()?;
                no_fds()?;
                let n = config.nregions.get();
                if n as usize > MAX_SHMEM_REGIONS {
                    return Err(p.invalid("shmem nregions", u64::from(n)));
                }
                Self::ShmemConfig(config)
            }
            _ => ack(&p)?,
        };
        Ok(reply)
    }

    /// The code of the request this reply answers.
    pub fn code(&self) -> FrontendCode {
        use FrontendCode as C;
        match self {
            Self::Features(_) => C::GetFeatures,
            Self::ProtocolFeatures(_) => C::GetProtocolFeatures,
            Self::MemTableBases(_) => C::SetMemTable,
            Self::LogBase(_) => C::SetLogBase,
            Self::VringBase { .. } => C::GetVringBase,
            Self::QueueNum(_) => C::GetQueueNum,
            Self::Config { .. } => C::GetConfig,
            Self::CryptoSession(_) => C::CreateCryptoSession,
            Self::PostcopyAdvise { .. } => C::PostcopyAdvise,
            Self::InflightFd { .. } => C::GetInflightFd,
            Self::MaxMemSlots(_) => C::GetMaxMemSlots,
            Self::AddMemRegBase(_) => C::AddMemReg,
            Self::Status(_) => C::GetStatus,
            Self::SharedObject { .. } => C::GetSharedObject,
            Self::DeviceStateFd { .. } => C::SetDeviceStateFd,
            Self::ShmemConfig(_) => C::GetShmemConfig,
            Self::VringBaseSkipDrain { .. } => C::GetVringBaseSkipDrain,
            Self::Ack { request, .. } => *request,
        }
    }

    /// The descriptors to send with this reply.
    pub fn fds(&self) -> heapless::Vec<FdToken, MAX_FDS_PER_MSG> {
        let mut out = heapless::Vec::new();
        let fd = match self {
            Self::PostcopyAdvise { userfaultfd } => Some(*userfaultfd),
            Self::InflightFd { fd, .. }
            | Self::SharedObject { fd, .. }
            | Self::DeviceStateFd { fd, .. } => *fd,
            _ => None,
        };
        if let Some(fd) = fd {
            // Cannot fail: the vector is empty here.
            let _ = out.push(fd);
        }
        out
    }

    /// Encodes the reply into `buf` with flags VERSION|REPLY and returns the frame length.
    pub fn encode_into(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let code = self.code();
        let too_long =
            |what, got, max| Err(WireError::TooLong { code: Code::Frontend(code), what, got, max });
        let mut e = Encoder::new(buf, code.as_u32(), HeaderFlags::VERSION_1 | HeaderFlags::REPLY);
        match *self {
            Self::Features(features) => e.put_u64(features.bits()),
            Self::ProtocolFeatures(features) => e.put_u64(features.bits()),
            Self::MemTableBases(table) => {
                if table.len() > MAX_MEM_TABLE_REGIONS {
                    return too_long("region count", table.len(), MAX_MEM_TABLE_REGIONS);
                }
                table.encode(&mut e);
            }
            Self::LogBase(bytes) => e.put(bytes),
            Self::VringBase { index, base } | Self::VringBaseSkipDrain { index, base } => {
                e.put_value(&wire::VringState {
                    index: U32::new(index.as_u32()),
                    num: U32::new(base.0),
                });
            }
            Self::QueueNum(n) | Self::MaxMemSlots(n) => e.put_u64(n),
            Self::Config { offset, flags, data } => {
                if data.len() > crate::limits::MAX_CONFIG_SIZE {
                    return too_long("config size", data.len(), crate::limits::MAX_CONFIG_SIZE);
                }
                e.put_value(&config_header(offset, data.len(), flags));
                e.put(data);
            }
            Self::CryptoSession(bytes) => {
                if bytes.is_empty() || bytes.len() > MAX_CRYPTO_SESSION_SIZE {
                    return too_long("crypto session", bytes.len(), MAX_CRYPTO_SESSION_SIZE);
                }
                e.put(bytes);
            }
            Self::PostcopyAdvise { .. } => {}
            Self::InflightFd { desc, fd } => {
                if (desc.mmap_size == 0) != fd.is_none() {
                    return Err(WireError::InvalidValue {
                        code: Code::Frontend(code),
                        field: "inflight mmap_size without fd",
                        value: desc.mmap_size,
                    });
                }
                e.put_value(&desc.to_wire());
            }
            Self::AddMemRegBase(region) => {
                e.put_u64(0);
                region.encode(&mut e);
            }
            Self::Status(status) => e.put_u64(u64::from(status)),
            Self::SharedObject { status, .. } => e.put_u64(status),
            Self::DeviceStateFd { error, fd } => {
                e.put_u64(u64::from(error) | if fd.is_none() { DEVICE_STATE_NO_FD } else { 0 });
            }
            Self::ShmemConfig(config) => e.put_value(config),
            Self::Ack { status, .. } => e.put_u64(status),
        }
        e.finish()
    }
}

/// Encodes a `u64` status answering request `request` (a code that need not be known) into
/// `buf` with flags VERSION|REPLY; returns the frame length.
pub fn encode_status(request: u32, status: u64, buf: &mut [u8]) -> Result<usize, WireError> {
    let mut e = Encoder::new(buf, request, HeaderFlags::VERSION_1 | HeaderFlags::REPLY);
    e.put_u64(status);
    e.finish()
}
