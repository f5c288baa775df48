//! virtio-fs device back-end for vhu.
//!
//! This crate owns the virtqueue hot path over `vm-memory` ([`virtq`]), a FUSE server ([`fuse`]) and a
//! passthrough file system of a host directory ([`passthrough`]). It must not speak the vhost-user
//! protocol itself: negotiation, memory tables and vring lifecycle come from `vhu-core` through the
//! std transport.
//!
//! The pieces are independent of each other: the FUSE server reads requests through
//! [`fuse::RequestReader`] and writes replies through [`fuse::ReplyWriter`], which [`bridge`]
//! implements for virtqueue chains and which byte slices implement for tests.

pub mod bridge;
pub mod device;
pub mod fuse;
pub mod guest;
pub mod passthrough;
pub mod virtq;

pub use vhu_core;
