//! Device configuration and shared-memory payloads.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{U32, U64};
use crate::limits::MAX_SHMEM_REGIONS;

/// "Device config space" prefix: `u32 offset, u32 size, u32 flags`, then `size` bytes of config.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ConfigHeader {
    /// Offset into the device configuration space.
    pub offset: U32,
    /// Number of configuration bytes that follow.
    pub size: U32,
    /// 0: a front-end write of writable fields; 1: a write during live migration.
    pub flags: U32,
}

/// "VhostUserShMemConfig": `u32 nregions, u32 padding, u64 memory_sizes[256]` (GET_SHMEM_CONFIG reply,
/// 2056 bytes). The array index is the shmid.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ShmemConfig {
    /// Number of regions with a non-zero size.
    pub nregions: U32,
    /// Padding, zero.
    pub padding: U32,
    /// Size of each shared-memory region, by shmid (0: no region).
    pub memory_sizes: [U64; MAX_SHMEM_REGIONS],
}

impl ShmemConfig {
    /// No region.
    pub const EMPTY: Self = Self {
        nregions: U32::ZERO,
        padding: U32::ZERO,
        memory_sizes: [U64::ZERO; MAX_SHMEM_REGIONS],
    };

    /// The configuration of regions of `sizes` bytes, by shmid (0: no region; at most
    /// [`MAX_SHMEM_REGIONS`] are read).
    pub fn from_sizes(sizes: &[u64]) -> Self {
        let mut config = Self::EMPTY;
        for (slot, size) in config.memory_sizes.iter_mut().zip(sizes) {
            *slot = U64::new(*size);
        }
        let nregions = config.memory_sizes.iter().filter(|s| s.get() != 0).count() as u32;
        config.nregions = U32::new(nregions);
        config
    }
}

/// "VhostUserMMap": `u8 shmid, u8 padding[7], u64 fd_offset, u64 shm_offset, u64 len, u64 flags`
/// (BACKEND_SHMEM_MAP / BACKEND_SHMEM_UNMAP, 40 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ShmemMap {
    /// Shared-memory region id.
    pub shmid: u8,
    /// Padding, zero.
    pub padding: [u8; 7],
    /// Offset in the fd to map from.
    pub fd_offset: U64,
    /// Offset in the shared-memory region to map at.
    pub shm_offset: U64,
    /// Length of the mapping.
    pub len: U64,
    /// Bit 0: the mapping is writable.
    pub flags: U64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(core::mem::size_of::<ConfigHeader>(), 12);
        assert_eq!(core::mem::size_of::<ShmemConfig>(), 2056);
        assert_eq!(core::mem::size_of::<ShmemMap>(), 40);
    }
}
