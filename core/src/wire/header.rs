//! The 12-byte message header (spec "Header").

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::U32;

/// The header that starts every vhost-user message: `u32 request, u32 flags, u32 size`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Header {
    /// Request code ([`FrontendCode`](super::FrontendCode) or [`BackendCode`](super::BackendCode)).
    pub request: U32,
    /// Version and flag bits ([`HeaderFlags`]).
    pub flags: U32,
    /// Payload size in bytes.
    pub size: U32,
}

bitflags! {
    /// The `flags` word of the header.
    ///
    /// Bits 0–1 are the protocol version, which must be 1; bits 4–31 are reserved and must be zero.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct HeaderFlags: u32 {
        /// Version 1, the only version the spec defines (bits 0–1).
        const VERSION_1 = 0x1;
        /// Bit 2: the message is a reply.
        const REPLY = 0x4;
        /// Bit 3: the sender asks for a `u64` acknowledgement (REPLY_ACK).
        const NEED_REPLY = 0x8;
    }
}

impl HeaderFlags {
    /// Mask of the version field.
    pub const VERSION_MASK: u32 = 0x3;
    /// Mask of the reserved bits, which must be zero.
    pub const RESERVED_MASK: u32 = !0xf;
}

impl Header {
    /// Builds a header from its three fields.
    pub fn new(request: u32, flags: HeaderFlags, size: u32) -> Self {
        Self { request: U32::new(request), flags: U32::new(flags.bits()), size: U32::new(size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_twelve_bytes() {
        assert_eq!(core::mem::size_of::<Header>(), crate::limits::HEADER_SIZE);
        let header = Header::new(1, HeaderFlags::VERSION_1 | HeaderFlags::NEED_REPLY, 8);
        assert_eq!(header.as_bytes(), &[1, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0]);
    }
}
