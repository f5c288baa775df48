//! Errors of the virtqueue layer.
//!
//! Every value a guest driver controls (ring indices, descriptor addresses, lengths, flags) is
//! untrusted; each way it can be wrong has its own variant carrying the offending values. This module
//! only describes failures: whether a bad chain is returned with length 0 or the device is marked as
//! needing a reset is the caller's decision.

use std::fmt;

/// Which part of a virtqueue an address belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// The descriptor table.
    Descriptors,
    /// The available (driver) ring.
    Available,
    /// The used (device) ring.
    Used,
    /// The driver event suppression structure of a packed ring.
    DriverEvent,
    /// The device event suppression structure of a packed ring.
    DeviceEvent,
}

impl fmt::Display for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Descriptors => "descriptor table",
            Self::Available => "available ring",
            Self::Used => "used ring",
            Self::DriverEvent => "driver event suppression area",
            Self::DeviceEvent => "device event suppression area",
        })
    }
}

/// A virtqueue that cannot be set up or a descriptor chain that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue size is zero, above 32768, or (split rings) not a power of two (virtio 1.2 §2.7).
    #[error("invalid queue size {0}")]
    InvalidSize(u16),
    /// A fetched or returned chain could not be recorded in the inflight region.
    #[error("the inflight region could not be updated")]
    InflightRecord,
    /// A ring address does not have the alignment its layout requires (§2.7, §2.8.10).
    #[error("{ring} at {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// The ring.
        ring: Ring,
        /// Its guest address.
        addr: u64,
        /// The required alignment.
        align: u64,
    },
    /// A ring does not lie entirely inside guest memory.
    #[error("{ring} [{addr:#x}, +{len:#x}) is not in guest memory")]
    RingOutOfRange {
        /// The ring.
        ring: Ring,
        /// Its guest address.
        addr: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// Reading or writing guest memory failed (the range is not, or no longer, mapped).
    #[error("guest memory access [{addr:#x}, +{len:#x}) failed")]
    Memory {
        /// Start of the access.
        addr: u64,
        /// Length of the access.
        len: u64,
    },
    /// `avail->idx` claims more new entries than the ring holds.
    #[error(
        "avail idx {avail_idx} is {pending} entries ahead of {next_avail} (queue size {size})"
    )]
    AvailIdxJump {
        /// The index the driver published.
        avail_idx: u16,
        /// The next entry the device would consume.
        next_avail: u16,
        /// `avail_idx - next_avail` (wrapping).
        pending: u16,
        /// The queue size.
        size: u16,
    },
    /// A chain head or `next` field names a descriptor outside its table.
    #[error("chain {head}: descriptor index {index} outside a table of {table_len}")]
    IndexOutOfRange {
        /// Head of the chain.
        head: u16,
        /// The offending index.
        index: u32,
        /// Entries in the table (queue size, or indirect table length).
        table_len: u32,
    },
    /// The chain visits the same descriptor twice.
    #[error("chain {head}: descriptor {index} visited twice (loop)")]
    Loop {
        /// Head of the chain.
        head: u16,
        /// The descriptor reached again.
        index: u32,
    },
    /// The chain has more descriptors than the queue size allows (§2.7.5.3.1).
    #[error("chain {head}: more than {max} descriptors")]
    ChainTooLong {
        /// Head of the chain.
        head: u16,
        /// The limit (the queue size).
        max: u32,
    },
    /// An indirect table contains another indirect descriptor (§2.7.5.3.1).
    #[error("chain {head}: nested indirect descriptor at index {index}")]
    NestedIndirect {
        /// Head of the chain.
        head: u16,
        /// Index of the descriptor inside the indirect table.
        index: u32,
    },
    /// A descriptor has both INDIRECT and NEXT set (§2.7.5.3.1).
    #[error("chain {head}: descriptor {index} has both INDIRECT and NEXT")]
    IndirectWithNext {
        /// Head of the chain.
        head: u16,
        /// Index of the descriptor.
        index: u32,
    },
    /// An indirect table length is zero or not a multiple of 16.
    #[error("chain {head}: indirect table length {len} is not a non-zero multiple of 16")]
    IndirectLength {
        /// Head of the chain.
        head: u16,
        /// The descriptor's `len`.
        len: u32,
    },
    /// The indirect feature was not negotiated but the driver used an indirect descriptor.
    #[error("chain {head}: indirect descriptor without VIRTIO_F_INDIRECT_DESC")]
    IndirectNotNegotiated {
        /// Head of the chain.
        head: u16,
    },
    /// A device-readable descriptor follows a device-writable one (§2.7.4.2).
    #[error("chain {head}: readable descriptor {index} after a writable one")]
    ReadableAfterWritable {
        /// Head of the chain.
        head: u16,
        /// Index of the readable descriptor.
        index: u32,
    },
    /// A buffer's `addr + len` overflows the address space or lies outside guest memory.
    #[error("chain {head}: buffer [{addr:#x}, +{len:#x}) is not in guest memory")]
    BufferOutOfRange {
        /// Head of the chain.
        head: u16,
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// The readable or the writable part of a chain adds up to more than `u32::MAX` bytes.
    #[error("chain {head}: total length overflows u32")]
    LengthOverflow {
        /// Head of the chain.
        head: u16,
    },
    /// A used entry names a descriptor head outside the queue.
    #[error("used entry for head {head} outside a queue of {size}")]
    UsedHeadOutOfRange {
        /// The head given.
        head: u16,
        /// The queue size.
        size: u16,
    },
    /// A packed ring's starting available or used index is not below the queue size.
    #[error("ring index {index} outside a queue of {size}")]
    BaseOutOfRange {
        /// The index given.
        index: u16,
        /// The queue size.
        size: u16,
    },
    /// A used entry names a packed-ring buffer id the device is not processing.
    #[error("used entry for buffer id {id}, which is not in flight")]
    UsedIdNotInFlight {
        /// The buffer id given.
        id: u16,
    },
    /// The driver made descriptors available over ones the device has not returned yet: more
    /// than the queue size would be in flight. Nothing is consumed.
    #[error("more than {size} descriptors in flight")]
    InFlightOverflow {
        /// The queue size.
        size: u16,
    },
    /// The driver made a packed-ring chain available under a buffer id the device has not
    /// returned yet. Nothing is consumed.
    #[error("buffer id {id} made available again while still in flight")]
    IdInFlight {
        /// The buffer id.
        id: u16,
    },
}

impl QueueError {
    /// The chain an error is about (split: head index, packed: buffer id), when the chain was
    /// consumed.
    ///
    /// A caller can then return that chain with length 0 (or mark the device as needing a reset).
    pub fn head(&self) -> Option<u16> {
        match *self {
            Self::IndexOutOfRange { head, .. }
            | Self::Loop { head, .. }
            | Self::ChainTooLong { head, .. }
            | Self::NestedIndirect { head, .. }
            | Self::IndirectWithNext { head, .. }
            | Self::IndirectLength { head, .. }
            | Self::IndirectNotNegotiated { head }
            | Self::ReadableAfterWritable { head, .. }
            | Self::BufferOutOfRange { head, .. }
            | Self::LengthOverflow { head } => Some(head),
            _ => None,
        }
    }
}
