//! Resources a VMM hands to a back-end: guest memory on a memfd, and eventfds for kick and call.
//!
//! [`GuestRegion`] creates a memfd, maps it shared with `vm-memory` at a
//! guest-physical address, and describes it as the [`Region`] the front-end sends: its user
//! address is where this process mapped it, as a VMM's would be. The mapping stays with the
//! caller, who writes rings and buffers into it; the back-end maps the same file.
//!
//! A file this process shares is sealed at its size ([`sealed_memfd`]): the back-end maps it
//! too, and one that could shrink it would end this process with SIGBUS at its next access
//! past the new end (as QEMU seals the memfds it shares).
//!
//! This module must not talk to a back-end or check memory-table rules (overlap, slot limits):
//! the state machine checks the regions it is given.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::EventfdFlags;
use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use vhu_core::message::Region;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap, MmapRegion,
};

use super::ClientError;

/// A region and the descriptor to send with it (borrowed: the client sends a duplicate).
#[derive(Clone, Copy, Debug)]
pub struct SharedRegion<'a> {
    /// What the front-end sends.
    pub region: Region,
    /// The file that backs it.
    pub fd: BorrowedFd<'a>,
}

/// Guest memory on a memfd, mapped shared in this process; see the module docs.
#[derive(Debug)]
pub struct GuestRegion {
    fd: OwnedFd,
    memory: GuestMemoryMmap,
    region: Region,
}

impl GuestRegion {
    /// `size` bytes of fresh zeroed memory at guest-physical `guest_address`, on a memfd sealed
    /// at its size.
    pub fn new(guest_address: u64, size: u64) -> Result<Self, ClientError> {
        Self::from_file(sealed_memfd("vhu-guest-ram", size)?, guest_address, size)
    }

    /// The first `size` bytes of a file the caller made (a memfd on huge pages, a file on
    /// hugetlbfs, sealed or not as the caller decides) as guest memory at `guest_address`.
    pub fn from_file(fd: OwnedFd, guest_address: u64, size: u64) -> Result<Self, ClientError> {
        let len = usize::try_from(size).map_err(|_| ClientError::Io {
            what: "mapping the memfd",
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        let file = fd
            .try_clone()
            .map_err(|source| ClientError::Io { what: "duplicating the memfd", source })?;
        let mapping = MmapRegion::from_file(FileOffset::new(File::from(file), 0), len)
            .map_err(ClientError::Memory)?;
        let user_address = mapping.as_ptr() as u64;
        let invalid = || ClientError::Io {
            what: "placing the region in guest memory",
            source: std::io::ErrorKind::InvalidInput.into(),
        };
        let mapped =
            GuestRegionMmap::new(mapping, GuestAddress(guest_address)).ok_or_else(invalid)?;
        let memory = GuestMemoryMmap::from_regions(vec![mapped]).map_err(|_| invalid())?;
        let region = Region { guest_address, size, user_address, mmap_offset: 0, xen: None };
        Ok(Self { fd, memory, region })
    }

    /// The region as the front-end describes it.
    pub fn region(&self) -> Region {
        self.region
    }

    /// The region with its descriptor, for [`Client::set_mem_table`](super::Client::set_mem_table)
    /// and [`Client::add_mem_region`](super::Client::add_mem_region).
    pub fn share(&self) -> SharedRegion<'_> {
        SharedRegion { region: self.region, fd: self.fd.as_fd() }
    }

    /// The memfd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The mapping, to read and write guest memory with `vm-memory`'s `Bytes`.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The user address (what SET_VRING_ADDR carries) of guest-physical `guest_address`.
    pub fn host_address(&self, guest_address: u64) -> Result<u64, ClientError> {
        self.memory.get_host_address(GuestAddress(guest_address)).map(|ptr| ptr as u64).map_err(
            |_| ClientError::Io {
                what: "translating a guest address",
                source: std::io::ErrorKind::InvalidInput.into(),
            },
        )
    }

    /// The description, the memfd and the mapping.
    pub fn into_parts(self) -> (Region, OwnedFd, GuestMemoryMmap) {
        (self.region, self.fd, self.memory)
    }
}

/// A memfd of `size` bytes that can neither shrink nor grow (F_SEAL_SHRINK, F_SEAL_GROW, and
/// F_SEAL_SEAL so that no one can take that back), to share with a back-end.
pub(super) fn sealed_memfd(name: &str, size: u64) -> Result<OwnedFd, ClientError> {
    let io = |what| move |errno: rustix::io::Errno| ClientError::Io { what, source: errno.into() };
    let fd = memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(io("creating a memfd"))?;
    ftruncate(&fd, size).map_err(io("sizing a memfd"))?;
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(io("sealing a memfd"))?;
    Ok(fd)
}

/// A non-blocking, close-on-exec eventfd for a ring's kick or call notifications.
pub fn eventfd() -> Result<OwnedFd, ClientError> {
    rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|errno| ClientError::Io { what: "creating an eventfd", source: errno.into() })
}

#[cfg(test)]
mod tests {
    use super::super::LogBuffer;
    use super::GuestRegion;

    /// What a back-end that tries to resize a shared file gets.
    fn resized(fd: std::os::fd::BorrowedFd<'_>, size: u64) -> rustix::io::Result<()> {
        rustix::fs::ftruncate(fd, size)
    }

    #[test]
    fn shared_files_can_neither_shrink_nor_grow() {
        let ram = GuestRegion::new(0, 1 << 20).expect("guest memory");
        assert_eq!(resized(ram.fd(), 4096), Err(rustix::io::Errno::PERM), "shrunk");
        assert_eq!(resized(ram.fd(), 2 << 20), Err(rustix::io::Errno::PERM), "grown");
        let log = LogBuffer::new(1 << 30).expect("dirty log");
        assert_eq!(resized(log.fd(), 0), Err(rustix::io::Errno::PERM), "log shrunk");
        // The seals cannot be lifted, and the memory still works.
        let seals = rustix::fs::fcntl_get_seals(log.fd()).expect("seals");
        assert!(seals.contains(rustix::fs::SealFlags::SEAL));
        assert!(log.take_dirty().is_empty());
        use vm_memory::Bytes;
        ram.memory().write_obj(7u64, vm_memory::GuestAddress(4096)).expect("write");
    }
}
