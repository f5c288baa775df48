//! Typed values carried by messages: indices, vring descriptions and small enums (memory regions
//! are in `region`).
//!
//! Each type is validated when built from its wire struct (`from_wire`) and converts back without
//! loss (`to_wire`). Nothing here knows which features were negotiated.

use bitflags::bitflags;

use super::codec::Payload;
use crate::limits::{MAX_CONFIG_SIZE, MAX_VRINGS};
use crate::wire::{self, U16, U32, U64};
use crate::{FdToken, WireError};

/// Index of a vring. The vring-fd payloads address at most 256 rings, so the index is 8 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VringIndex(pub u8);

impl VringIndex {
    pub(crate) fn from_wire(payload: &Payload<'_>, raw: u64) -> Result<Self, WireError> {
        u8::try_from(raw).map(Self).map_err(|_| WireError::VringIndexOutOfRange {
            code: payload.code,
            index: raw,
            max: MAX_VRINGS - 1,
        })
    }

    /// The index as the `u32` of a vring state payload.
    pub fn as_u32(self) -> u32 {
        u32::from(self.0)
    }
}

/// Bit 8 of the vring-fd `u64` payload: no fd accompanies the message.
pub(crate) const VRING_NOFD: u64 = 1 << 8;
const VRING_IDX_MASK: u64 = 0xff;

/// The vring-fd payload of SET_VRING_KICK / SET_VRING_CALL / SET_VRING_ERR: an index and, unless the
/// NOFD bit (bit 8) is set, one fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VringFd {
    /// The vring.
    pub index: VringIndex,
    /// The eventfd; `None` when the NOFD bit is set (polling, or no notification).
    pub fd: Option<FdToken>,
}

/// Decodes a `u64` index|NOFD word, checking the bits above 8 and the fd count against NOFD.
pub(crate) fn index_nofd(
    payload: &Payload<'_>,
    raw: u64,
    fds: &[FdToken],
) -> Result<(VringIndex, Option<FdToken>), WireError> {
    if raw & !(VRING_IDX_MASK | VRING_NOFD) != 0 {
        return Err(payload.invalid("vring index/flags", raw));
    }
    let index = VringIndex((raw & VRING_IDX_MASK) as u8);
    let fd = if raw & VRING_NOFD != 0 {
        super::codec::fds_exact(payload.code, fds, 0)?;
        None
    } else {
        Some(super::codec::one_fd(payload.code, fds)?)
    };
    Ok((index, fd))
}

/// Encodes an index|NOFD word.
pub(crate) fn index_nofd_word(index: VringIndex, fd: Option<FdToken>) -> u64 {
    u64::from(index.0) | if fd.is_none() { VRING_NOFD } else { 0 }
}

/// The `num` of SET_VRING_BASE / the GET_VRING_BASE reply.
///
/// Split rings use bits 0–15 (next available index). Packed rings use bits 0–14 (available index),
/// bit 15 (available wrap counter), bits 16–30 (used index) and bit 31 (used wrap counter). Which one
/// applies depends on VIRTIO_F_RING_PACKED, which only the state machine knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VringBase(pub u32);

/// The four fields of a packed-ring base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PackedBase {
    /// Next available descriptor index (15 bits).
    pub avail_index: u16,
    /// Available ring wrap counter.
    pub avail_wrap: bool,
    /// Next used descriptor index (15 bits).
    pub used_index: u16,
    /// Used ring wrap counter.
    pub used_wrap: bool,
}

impl VringBase {
    /// A split-ring base: the next available index.
    pub fn split(next_avail: u16) -> Self {
        Self(u32::from(next_avail))
    }

    /// A packed-ring base; indices are truncated to their 15 bits.
    pub fn packed(base: PackedBase) -> Self {
        Self(
            u32::from(base.avail_index & 0x7fff)
                | u32::from(base.avail_wrap) << 15
                | u32::from(base.used_index & 0x7fff) << 16
                | u32::from(base.used_wrap) << 31,
        )
    }

    /// The split-ring next available index, or `None` if bits 16–31 are set.
    pub fn as_split(self) -> Option<u16> {
        u16::try_from(self.0).ok()
    }

    /// The packed-ring fields.
    pub fn as_packed(self) -> PackedBase {
        PackedBase {
            avail_index: (self.0 & 0x7fff) as u16,
            avail_wrap: self.0 & (1 << 15) != 0,
            used_index: ((self.0 >> 16) & 0x7fff) as u16,
            used_wrap: self.0 & (1 << 31) != 0,
        }
    }
}

bitflags! {
    /// `flags` of the vring address description.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct VringAddrFlags: u32 {
        /// VHOST_VRING_F_LOG (bit 0): log writes to the used ring at `log`.
        const LOG = 1 << 0;
    }
}

/// SET_VRING_ADDR: where the three parts of a ring are, in front-end user addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VringAddr {
    /// The vring.
    pub index: VringIndex,
    /// Flags.
    pub flags: VringAddrFlags,
    /// Descriptor table.
    pub descriptor: u64,
    /// Used ring.
    pub used: u64,
    /// Available ring.
    pub available: u64,
    /// Guest-physical address of the used ring for dirty logging.
    pub log: u64,
}

impl VringAddr {
    pub(crate) fn from_wire(
        payload: &Payload<'_>,
        raw: &wire::VringAddr,
    ) -> Result<Self, WireError> {
        let flags = VringAddrFlags::from_bits(raw.flags.get())
            .ok_or_else(|| payload.invalid("vring address flags", u64::from(raw.flags.get())))?;
        Ok(Self {
            index: VringIndex::from_wire(payload, u64::from(raw.index.get()))?,
            flags,
            descriptor: raw.descriptor.get(),
            used: raw.used.get(),
            available: raw.available.get(),
            log: raw.log.get(),
        })
    }

    pub(crate) fn to_wire(self) -> wire::VringAddr {
        wire::VringAddr {
            index: U32::new(self.index.as_u32()),
            flags: U32::new(self.flags.bits()),
            descriptor: U64::new(self.descriptor),
            used: U64::new(self.used),
            available: U64::new(self.available),
            log: U64::new(self.log),
        }
    }
}

/// SET_LOG_BASE payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum LogBase {
    /// The 16-byte log description QEMU sends; with LOG_SHMFD it comes with the fd to map.
    Shared {
        /// Size of the log area.
        mmap_size: u64,
        /// Offset of the area in the fd.
        mmap_offset: u64,
        /// The shared-memory fd (LOG_SHMFD).
        fd: Option<FdToken>,
    },
    /// The 8-byte payload of legacy front-ends (the spec's table still lists a `u64`).
    Legacy {
        /// The raw value.
        base: u64,
    },
}

/// IOTLB access permission (`perm` of `vhost_iotlb_msg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum IotlbPerm {
    /// No access (VHOST_ACCESS_NONE, used by invalidations).
    None = 0,
    /// VHOST_ACCESS_RO.
    ReadOnly = 1,
    /// VHOST_ACCESS_WO.
    WriteOnly = 2,
    /// VHOST_ACCESS_RW.
    ReadWrite = 3,
}

/// IOTLB message type (`type` of `vhost_iotlb_msg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum IotlbKind {
    /// VHOST_IOTLB_MISS.
    Miss = 1,
    /// VHOST_IOTLB_UPDATE.
    Update = 2,
    /// VHOST_IOTLB_INVALIDATE.
    Invalidate = 3,
    /// VHOST_IOTLB_ACCESS_FAIL.
    AccessFail = 4,
}

/// An IOTLB message (IOTLB_MSG, BACKEND_IOTLB_MSG).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Iotlb {
    /// I/O virtual address.
    pub iova: u64,
    /// Size of the range.
    pub size: u64,
    /// Front-end user address.
    pub user_address: u64,
    /// Access permission.
    pub perm: IotlbPerm,
    /// Message type.
    pub kind: IotlbKind,
}

impl Iotlb {
    pub(crate) fn from_wire(
        payload: &Payload<'_>,
        raw: &wire::IotlbMsg,
    ) -> Result<Self, WireError> {
        let perm = match raw.perm {
            0 => IotlbPerm::None,
            1 => IotlbPerm::ReadOnly,
            2 => IotlbPerm::WriteOnly,
            3 => IotlbPerm::ReadWrite,
            other => return Err(payload.invalid("iotlb perm", u64::from(other))),
        };
        let kind = match raw.kind {
            1 => IotlbKind::Miss,
            2 => IotlbKind::Update,
            3 => IotlbKind::Invalidate,
            4 => IotlbKind::AccessFail,
            other => return Err(payload.invalid("iotlb type", u64::from(other))),
        };
        Ok(Self {
            iova: raw.iova.get(),
            size: raw.size.get(),
            user_address: raw.user_address.get(),
            perm,
            kind,
        })
    }

    pub(crate) fn to_wire(self) -> wire::IotlbMsg {
        wire::IotlbMsg {
            iova: U64::new(self.iova),
            size: U64::new(self.size),
            user_address: U64::new(self.user_address),
            perm: self.perm as u8,
            kind: self.kind as u8,
            padding: [0; 6],
        }
    }
}

/// `flags` of a config-space transfer (values, not bits: spec "Device config space").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ConfigFlags {
    /// 0: a front-end access to the writable fields.
    Writable = 0,
    /// 1: a write during live migration, which may touch read-only fields.
    Migration = 1,
}

impl ConfigFlags {
    pub(crate) fn from_wire(payload: &Payload<'_>, raw: u32) -> Result<Self, WireError> {
        match raw {
            0 => Ok(Self::Writable),
            1 => Ok(Self::Migration),
            other => Err(payload.invalid("config flags", u64::from(other))),
        }
    }
}

/// Parses a config header and checks its size field against the bytes that follow and the limit.
pub(crate) fn config_prefix<'a>(
    payload: &Payload<'a>,
) -> Result<(u32, ConfigFlags, &'a [u8]), WireError> {
    let (header, data) = payload.prefix::<wire::ConfigHeader>()?;
    let size = header.size.get();
    if size as usize > MAX_CONFIG_SIZE {
        return Err(WireError::ConfigTooLarge { code: payload.code, size, max: MAX_CONFIG_SIZE });
    }
    if data.len() != size as usize {
        return Err(payload.size_error(core::mem::size_of::<wire::ConfigHeader>() + size as usize));
    }
    let flags = ConfigFlags::from_wire(payload, header.flags.get())?;
    Ok((header.offset.get(), flags, data))
}

pub(crate) fn config_header(offset: u32, size: usize, flags: ConfigFlags) -> wire::ConfigHeader {
    wire::ConfigHeader {
        offset: U32::new(offset),
        size: U32::new(u32::try_from(size).unwrap_or(u32::MAX)),
        flags: U32::new(flags as u32),
    }
}

/// The inflight description of GET_INFLIGHT_FD / SET_INFLIGHT_FD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct InflightDesc {
    /// Size of the inflight area (0 in the GET_INFLIGHT_FD request).
    pub mmap_size: u64,
    /// Offset of the area in its fd.
    pub mmap_offset: u64,
    /// Number of queues.
    pub num_queues: u16,
    /// Queue size.
    pub queue_size: u16,
}

impl InflightDesc {
    pub(crate) fn from_wire(raw: &wire::Inflight) -> Self {
        Self {
            mmap_size: raw.mmap_size.get(),
            mmap_offset: raw.mmap_offset.get(),
            num_queues: raw.num_queues.get(),
            queue_size: raw.queue_size.get(),
        }
    }

    pub(crate) fn to_wire(self) -> wire::Inflight {
        wire::Inflight {
            mmap_size: U64::new(self.mmap_size),
            mmap_offset: U64::new(self.mmap_offset),
            num_queues: U16::new(self.num_queues),
            queue_size: U16::new(self.queue_size),
            padding: [0; 4],
        }
    }
}

/// A shared object's UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Uuid(pub [u8; 16]);

/// Direction of a device-state transfer (SET_DEVICE_STATE_FD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TransferDirection {
    /// 0: the back-end saves its state into the fd.
    Save = 0,
    /// 1: the back-end loads its state from the fd.
    Load = 1,
}

/// Migration phase of a device-state transfer; the spec defines only "stopped".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TransferPhase {
    /// 0: the device is suspended.
    Stopped = 0,
}

/// A shared-memory mapping (BACKEND_SHMEM_MAP / BACKEND_SHMEM_UNMAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ShmemMapping {
    /// Shared-memory region id.
    pub shmid: u8,
    /// Offset in the fd.
    pub fd_offset: u64,
    /// Offset in the region.
    pub shm_offset: u64,
    /// Length.
    pub len: u64,
    /// Flag bit 0: the mapping is writable.
    pub writable: bool,
}

impl ShmemMapping {
    pub(crate) fn from_wire(
        payload: &Payload<'_>,
        raw: &wire::ShmemMap,
    ) -> Result<Self, WireError> {
        let flags = raw.flags.get();
        if flags & !1 != 0 {
            return Err(payload.invalid("shmem map flags", flags));
        }
        Ok(Self {
            shmid: raw.shmid,
            fd_offset: raw.fd_offset.get(),
            shm_offset: raw.shm_offset.get(),
            len: raw.len.get(),
            writable: flags & 1 != 0,
        })
    }

    pub(crate) fn to_wire(self) -> wire::ShmemMap {
        wire::ShmemMap {
            shmid: self.shmid,
            padding: [0; 7],
            fd_offset: U64::new(self.fd_offset),
            shm_offset: U64::new(self.shm_offset),
            len: U64::new(self.len),
            flags: U64::new(u64::from(self.writable)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_base_round_trips_all_fields() {
        let base = PackedBase {
            avail_index: 0x1234,
            avail_wrap: true,
            used_index: 0x7ffe,
            used_wrap: false,
        };
        let raw = VringBase::packed(base);
        assert_eq!(raw.0, 0x1234 | 1 << 15 | 0x7ffe << 16);
        assert_eq!(raw.as_packed(), base);
        assert_eq!(VringBase::split(7).as_split(), Some(7));
        assert_eq!(VringBase(0x1_0000).as_split(), None);
    }
}
