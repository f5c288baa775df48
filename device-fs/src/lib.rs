//! virtio-fs device back-end for vhu.
//!
//! This crate will own the virtqueue hot path over `vm-memory`, a FUSE passthrough server of a host
//! directory and the `vhu-fsd` daemon that QEMU connects to. It must not speak the vhost-user protocol
//! itself: negotiation, memory tables and vring lifecycle come from `vhu-core` through the std transport.
//!
//! Nothing is exported yet; the protocol layer it builds on lives in [`vhu_core`].

pub use vhu_core;
