//! Vring payloads: vring state, vring address and the host-notifier area.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{U32, U64};

/// "A vring state description": `u32 index, u32 num`.
///
/// Payload of SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE (request and reply), SET_VRING_ENABLE,
/// SET_VRING_ENDIAN, VRING_KICK, GET_VRING_BASE_SKIP_DRAIN and BACKEND_VRING_CALL/ERR.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VringState {
    /// Vring index.
    pub index: U32,
    /// A number whose meaning depends on the message (size, base, enable flag, ...).
    pub num: U32,
}

/// "A vring address description": `u32 index, u32 flags, u64 desc, u64 used, u64 avail, u64 log`
/// (40 bytes; older spec tables show a phantom `size` column).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VringAddr {
    /// Vring index.
    pub index: U32,
    /// Bit 0: VHOST_VRING_F_LOG (log used-ring writes).
    pub flags: U32,
    /// Descriptor table, a front-end user address.
    pub descriptor: U64,
    /// Used ring, a front-end user address.
    pub used: U64,
    /// Available ring, a front-end user address.
    pub available: U64,
    /// Guest-physical address of the used ring, for dirty logging.
    pub log: U64,
}

/// "Vring area description": `u64 index|NOFD, u64 size, u64 offset`
/// (BACKEND_VRING_HOST_NOTIFIER_MSG).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VringArea {
    /// Bits 0–7: vring index; bit 8: no fd (de-register the notifier).
    pub index: U64,
    /// Size of the notifier area; must be the host page size.
    pub size: U64,
    /// Offset of the area in the fd.
    pub offset: U64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(core::mem::size_of::<VringState>(), 8);
        assert_eq!(core::mem::size_of::<VringAddr>(), 40);
        assert_eq!(core::mem::size_of::<VringArea>(), 24);
    }
}
