//! Ring wire layouts: the split and packed 16-byte descriptors, ring and event flags, ring sizes.
//!
//! This module only describes bytes (virtio 1.2 §2.7.5 and §2.8, little-endian); it does not read
//! guest memory and validates nothing. The NEXT, WRITE and INDIRECT bits are the same in both
//! layouts.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `VIRTQ_DESC_F_NEXT`: the buffer continues via the `next` field.
pub const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the buffer is device-writable (otherwise device-readable).
pub const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT`: the buffer holds a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver asks not to be interrupted (without EVENT_IDX).
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY`: the device asks not to be kicked (without EVENT_IDX).
pub const USED_F_NO_NOTIFY: u16 = 1;
/// Largest queue size a ring (split or packed) may have.
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Size of one descriptor in bytes.
pub const DESC_SIZE: u64 = 16;
/// `VIRTQ_DESC_F_AVAIL` (packed rings): equals the driver's wrap counter when made available.
pub const PACKED_DESC_F_AVAIL: u16 = 1 << 7;
/// `VIRTQ_DESC_F_USED` (packed rings): differs from AVAIL while available, equals it once used.
pub const PACKED_DESC_F_USED: u16 = 1 << 15;
/// `RING_EVENT_FLAGS_ENABLE`: notify on every event.
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// `RING_EVENT_FLAGS_DISABLE`: do not notify.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// `RING_EVENT_FLAGS_DESC`: notify once the descriptor named by `off_wrap` is reached (only with
/// VIRTIO_F_RING_EVENT_IDX).
pub const RING_EVENT_FLAGS_DESC: u16 = 2;
/// Size of a packed ring's event suppression structure (`le16 off_wrap; le16 flags`).
pub const EVENT_SUPPRESS_SIZE: u64 = 4;

/// `struct virtq_desc`: one entry of a descriptor table (direct or indirect).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct Descriptor {
    /// Guest-physical address of the buffer.
    pub addr: U64,
    /// Length of the buffer in bytes.
    pub len: U32,
    /// `VIRTQ_DESC_F_*`.
    pub flags: U16,
    /// Index of the next descriptor when `flags` has NEXT.
    pub next: U16,
}

impl Descriptor {
    /// A descriptor with these fields, for building rings in tests and drivers.
    pub fn new(addr: u64, len: u32, flags: u16, next: u16) -> Self {
        Self {
            addr: U64::new(addr),
            len: U32::new(len),
            flags: U16::new(flags),
            next: U16::new(next),
        }
    }

    /// Whether `flags` has `bit`.
    pub fn has(&self, bit: u16) -> bool {
        self.flags.get() & bit != 0
    }
}

/// `struct pvirtq_desc`: one entry of a packed descriptor ring or of a packed indirect table.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct PackedDescriptor {
    /// Guest-physical address of the buffer (unused in used descriptors).
    pub addr: U64,
    /// Length of the buffer; in a used descriptor, the bytes the device wrote.
    pub len: U32,
    /// Buffer id (meaningful in the last descriptor of a chain and in used descriptors).
    pub id: U16,
    /// `VIRTQ_DESC_F_*`, including AVAIL and USED.
    pub flags: U16,
}

impl PackedDescriptor {
    /// A descriptor with these fields, for building rings in tests and drivers.
    pub fn new(addr: u64, len: u32, id: u16, flags: u16) -> Self {
        Self { addr: U64::new(addr), len: U32::new(len), id: U16::new(id), flags: U16::new(flags) }
    }

    /// Whether `flags` has `bit`.
    pub fn has(&self, bit: u16) -> bool {
        self.flags.get() & bit != 0
    }
}

/// The AVAIL and USED bits a packed descriptor carries when the driver makes it available with
/// wrap counter `wrap`.
pub fn packed_avail_flags(wrap: bool) -> u16 {
    if wrap {
        PACKED_DESC_F_AVAIL
    } else {
        PACKED_DESC_F_USED
    }
}

/// The AVAIL and USED bits of a used packed descriptor written with wrap counter `wrap`.
pub fn packed_used_flags(wrap: bool) -> u16 {
    if wrap {
        PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED
    } else {
        0
    }
}

/// Bytes of the descriptor table for `size` entries.
pub fn desc_table_len(size: u16) -> u64 {
    DESC_SIZE * u64::from(size)
}

/// Bytes of the available ring: flags, idx, `size` heads and `used_event`.
pub fn avail_ring_len(size: u16) -> u64 {
    6 + 2 * u64::from(size)
}

/// Bytes of the used ring: flags, idx, `size` 8-byte elements and `avail_event`.
pub fn used_ring_len(size: u16) -> u64 {
    6 + 8 * u64::from(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_is_16_bytes() {
        assert_eq!(core::mem::size_of::<Descriptor>(), 16);
        let d = Descriptor::new(0x1122, 7, DESC_F_NEXT | DESC_F_WRITE, 3);
        assert_eq!(d.as_bytes(), &[0x22, 0x11, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 3, 0]);
    }

    #[test]
    fn packed_descriptor_layout() {
        assert_eq!(core::mem::size_of::<PackedDescriptor>(), 16);
        let d = PackedDescriptor::new(0x1122, 7, 9, PACKED_DESC_F_USED | DESC_F_WRITE);
        assert_eq!(d.as_bytes(), &[0x22, 0x11, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9, 0, 2, 0x80]);
        assert_eq!(packed_avail_flags(true), 0x80);
        assert_eq!(packed_avail_flags(false), 0x8000);
        assert_eq!(packed_used_flags(true), 0x8080);
    }
}
