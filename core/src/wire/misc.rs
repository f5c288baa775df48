//! IOTLB, device-state transfer and shared-object payloads.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{U32, U64};

/// `struct vhost_iotlb_msg`: `u64 iova, u64 size, u64 uaddr, u8 perm, u8 type`, padded to 32 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IotlbMsg {
    /// I/O virtual address.
    pub iova: U64,
    /// Size of the range.
    pub size: U64,
    /// Front-end user address the range maps to.
    pub user_address: U64,
    /// Access permission: 1 read, 2 write, 3 read-write.
    pub perm: u8,
    /// Message type: 1 miss, 2 update, 3 invalidate, 4 access failure.
    pub kind: u8,
    /// Tail padding of the C struct.
    pub padding: [u8; 6],
}

/// "Transfer state description": `u32 direction, u32 phase` (SET_DEVICE_STATE_FD).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DeviceStateTransfer {
    /// 0: save (back-end writes), 1: load (back-end reads).
    pub direction: U32,
    /// Migration phase; 0 is "stopped", the only one defined.
    pub phase: U32,
}

/// "VhostUserShared": a 16-byte UUID naming a shared object (GET_SHARED_OBJECT,
/// BACKEND_SHARED_OBJECT_*). Its first three fields are big-endian as in RFC 4122; it is carried as
/// bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SharedObject {
    /// The UUID bytes.
    pub uuid: [u8; 16],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(core::mem::size_of::<IotlbMsg>(), 32);
        assert_eq!(core::mem::size_of::<DeviceStateTransfer>(), 8);
        assert_eq!(core::mem::size_of::<SharedObject>(), 16);
    }
}
