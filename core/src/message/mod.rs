//! Typed, validated vhost-user messages of both channels.
//!
//! [`Request`] and [`Reply`] travel on the main socket, [`BackendRequest`] and [`BackendReply`] on
//! the back-end channel. Each has one `parse(frame, fds)` that validates everything a frame can tell
//! and one `encode_into(buf)` that writes into a caller-owned buffer; `fds()` lists the descriptors
//! that travel with an encoded message. Nothing here allocates or keeps session state.

mod backend;
mod codec;
mod region;
mod reply;
mod request;
mod request_encode;
mod types;

pub use backend::{BackendReply, BackendRequest};
pub(crate) use codec::check_version;
pub use region::{MemoryTable, Region, XenMapping};
pub use reply::{encode_status, Reply};
pub use request::Request;
pub use types::{
    ConfigFlags, InflightDesc, Iotlb, IotlbKind, IotlbPerm, LogBase, PackedBase, ShmemMapping,
    TransferDirection, TransferPhase, Uuid, VringAddr, VringAddrFlags, VringBase, VringFd,
    VringIndex,
};

/// A parsed request and whether its sender asked for an acknowledgement (NEED_REPLY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming<T> {
    /// The message.
    pub message: T,
    /// NEED_REPLY was set.
    pub need_reply: bool,
}
