//! Zero-copy wire structs of the vhost-user protocol, one file per payload family.
//!
//! Every struct is `#[repr(C)]` over native-endian, alignment-1 integers, so it can be viewed in place
//! in any byte buffer (no `packed` structs, no `unsafe_code`, no copies). This module only describes layouts and
//! request codes; it does not validate field values. [`crate::message`] builds typed, validated
//! messages from these structs.
//!
//! Layouts follow the vhost-user specification, section "Message types" and the payload descriptions
//! under "Message specification"; sizes are checked by the tests at the bottom of each file.

mod code;
mod config;
mod header;
mod memory;
mod misc;
mod vring;

pub use code::{BackendCode, Code, FrontendCode, ReplyKind};
pub use config::{ConfigHeader, ShmemConfig, ShmemMap};
pub use header::{Header, HeaderFlags};
pub use memory::{
    Inflight, Log, MemoryRegion, MemoryTableHeader, SingleRegionHeader, XenMemoryRegion,
};
pub use misc::{DeviceStateTransfer, IotlbMsg, SharedObject};
pub use vring::{VringAddr, VringArea, VringState};

/// A native-endian `u16` with alignment 1.
pub type U16 = zerocopy::byteorder::native_endian::U16;
/// A native-endian `u32` with alignment 1.
pub type U32 = zerocopy::byteorder::native_endian::U32;
/// A native-endian `u64` with alignment 1.
pub type U64 = zerocopy::byteorder::native_endian::U64;
