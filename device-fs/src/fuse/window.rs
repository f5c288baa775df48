//! The DAX window — the virtio-fs device's shared-memory region 0, "cache" (virtio spec "File
//! System Device", "Device Operation: DAX Window") — as the FUSE server reaches it: a file range
//! put into the window, and taken out again.
//!
//! The device implements [`Window`] with whatever its transport offers (a vhost-user back-end asks
//! the front-end with BACKEND_SHMEM_MAP and BACKEND_SHMEM_UNMAP); the server keeps the record of
//! what is mapped where and decides what to ask ([`super::Server`]'s SETUPMAPPING and
//! REMOVEMAPPING). This module must not decide which ranges are valid: the server checks them
//! before it asks.

use std::os::fd::OwnedFd;

use rustix::io::Errno;

/// Where a file range goes in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Offset in the file.
    pub foffset: u64,
    /// Offset in the window.
    pub moffset: u64,
    /// Length.
    pub len: u64,
    /// Whether the guest may write through the mapping.
    pub writable: bool,
}

/// A DAX window the server maps file ranges into.
pub trait Window: Send + Sync {
    /// The window's size in bytes.
    fn size(&self) -> u64;
    /// Maps `fd` as `placement` says; returns once the mapping is in place, or why it is not.
    /// The range is free: the server removed whatever overlapped it.
    fn map(&self, fd: OwnedFd, placement: Placement) -> Result<(), Errno>;
    /// Removes the mapping of `len` bytes at `moffset`, whole, as it was made.
    fn unmap(&self, moffset: u64, len: u64) -> Result<(), Errno>;
}
