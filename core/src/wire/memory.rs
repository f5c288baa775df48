//! Memory payloads: memory regions and tables, dirty log, inflight description.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{U16, U32, U64};

/// "Memory region description": `u64 guest_address, u64 size, u64 user_address, u64 mmap_offset`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct MemoryRegion {
    /// Guest-physical address of the region.
    pub guest_address: U64,
    /// Size in bytes.
    pub size: U64,
    /// Front-end user (virtual) address of the region.
    pub user_address: U64,
    /// Offset of the region in the fd that backs it.
    pub mmap_offset: U64,
}

/// A memory region with the two extra fields of VHOST_USER_PROTOCOL_F_XEN_MMAP: `u32 flags, u32 domid`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct XenMemoryRegion {
    /// The standard region fields.
    pub region: MemoryRegion,
    /// Xen mapping flags (foreign / grant, read-only).
    pub xen_mmap_flags: U32,
    /// Xen domain id.
    pub domid: U32,
}

/// "Multiple memory regions description" prefix: `u32 nregions, u32 padding`, then the regions.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct MemoryTableHeader {
    /// Number of regions that follow.
    pub nregions: U32,
    /// Padding, zero.
    pub padding: U32,
}

/// "Single memory region description" prefix: `u64 padding`, then one region (ADD_MEM_REG,
/// REM_MEM_REG).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SingleRegionHeader {
    /// Padding, zero.
    pub padding: U64,
}

/// "Log description": `u64 mmap_size, u64 mmap_offset` (SET_LOG_BASE).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Log {
    /// Size of the dirty-log area.
    pub mmap_size: U64,
    /// Offset of the area in the fd.
    pub mmap_offset: U64,
}

/// "Inflight description": `u64 mmap_size, u64 mmap_offset, u16 num_queues, u16 queue_size`, padded
/// to 24 bytes as QEMU checks exactly (a packed 20-byte struct breaks QEMU).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Inflight {
    /// Size of the inflight area.
    pub mmap_size: U64,
    /// Offset of the area in the fd.
    pub mmap_offset: U64,
    /// Number of queues the area covers.
    pub num_queues: U16,
    /// Size of each queue.
    pub queue_size: U16,
    /// Tail padding of the C struct.
    pub padding: [u8; 4],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(core::mem::size_of::<MemoryRegion>(), 32);
        assert_eq!(core::mem::size_of::<XenMemoryRegion>(), 40);
        assert_eq!(core::mem::size_of::<MemoryTableHeader>(), 8);
        assert_eq!(core::mem::size_of::<SingleRegionHeader>(), 8);
        assert_eq!(core::mem::size_of::<Log>(), 16);
        assert_eq!(core::mem::size_of::<Inflight>(), 24);
    }
}
