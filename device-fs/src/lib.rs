//! virtio-fs device back-end for vhu.
//!
//! This crate owns a FUSE server ([`fuse`]), a passthrough file system of a host directory
//! ([`passthrough`]) and the virtio-fs device that serves them on the std transport's virtqueues
//! ([`device`]). It must not speak the vhost-user protocol itself, nor walk rings: negotiation,
//! memory tables and vring lifecycle come from `vhu-core` through the std transport, and the
//! virtqueues from its `virtq` module.
//!
//! The pieces are independent of each other: the FUSE server reads requests through
//! [`fuse::RequestReader`] and writes replies through [`fuse::ReplyWriter`], which [`bridge`]
//! implements for virtqueue chains and which byte slices implement for tests.

pub mod bridge;
pub mod device;
pub mod fuse;
pub mod guest;
pub mod passthrough;
pub mod repeats;

pub use vhu_core;
