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

/// Why a window did not do what it was asked, and whether it might have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowError {
    /// Refused by the front-end: nothing changed, and what was to be removed is not there.
    Refused(Errno),
    /// Never asked (no connection, the device stopped, no room to send): nothing changed,
    /// and nothing was learned about what is there.
    NotAsked(Errno),
    /// No answer (it did not come in time, the connection went, the device stopped): it may
    /// have been done.
    Unknown(Errno),
}

impl WindowError {
    /// The errno the guest hears.
    pub fn errno(self) -> Errno {
        match self {
            Self::Refused(errno) | Self::NotAsked(errno) | Self::Unknown(errno) => errno,
        }
    }
}

/// A DAX window the server maps file ranges into.
pub trait Window: Send + Sync {
    /// The window's size in bytes.
    fn size(&self) -> u64;
    /// Maps `fd` as `placement` says; returns once the mapping is in place, or why it is not.
    /// The range is free: the server removed whatever overlapped it.
    fn map(&self, fd: OwnedFd, placement: Placement) -> Result<(), WindowError>;
    /// Removes the mapping of `len` bytes at `moffset`, whole, as it was made.
    fn unmap(&self, moffset: u64, len: u64) -> Result<(), WindowError>;
}
