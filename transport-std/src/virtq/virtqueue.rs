//! [`Virtqueue`]: a split or a packed queue behind one set of operations.
//!
//! The layout is fixed when a queue starts (VIRTIO_F_RING_PACKED), so a plain enum suffices; each
//! method forwards to the layout's own implementation and adds no rules of its own.

use vm_memory::GuestMemory;

use super::chain::DescriptorChain;
use super::error::QueueError;
use super::packed::PackedQueue;
use super::split::SplitQueue;

/// A validated virtqueue of either layout.
#[derive(Clone, Debug)]
pub enum Virtqueue {
    /// A split ring (§2.7).
    Split(SplitQueue),
    /// A packed ring (§2.8).
    Packed(PackedQueue),
}

impl From<SplitQueue> for Virtqueue {
    fn from(queue: SplitQueue) -> Self {
        Self::Split(queue)
    }
}

impl From<PackedQueue> for Virtqueue {
    fn from(queue: PackedQueue) -> Self {
        Self::Packed(queue)
    }
}

impl Virtqueue {
    /// Queue size.
    pub fn size(&self) -> u16 {
        match self {
            Self::Split(q) => q.size(),
            Self::Packed(q) => q.size(),
        }
    }

    /// Consumes the next available chain, if any; see [`SplitQueue::pop`] and
    /// [`PackedQueue::pop`].
    pub fn pop<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Option<DescriptorChain>, QueueError> {
        match self {
            Self::Split(q) => q.pop(mem),
            Self::Packed(q) => q.pop(mem),
        }
    }

    /// Returns the chain `head` (its [`DescriptorChain::head`]) with `len` bytes written.
    pub fn add_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        match self {
            Self::Split(q) => q.add_used(mem, head, len),
            Self::Packed(q) => q.add_used(mem, head, len),
        }
    }

    /// Whether the driver must be notified about the chains returned since the last call.
    pub fn needs_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, QueueError> {
        match self {
            Self::Split(q) => q.needs_notification(mem),
            Self::Packed(q) => q.needs_notification(mem),
        }
    }

    /// Asks the driver to kick again and reports whether chains arrived meanwhile.
    pub fn enable_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, QueueError> {
        match self {
            Self::Split(q) => q.enable_notification(mem),
            Self::Packed(q) => q.enable_notification(mem),
        }
    }

    /// Tells the driver that kicks are not needed while the device is busy.
    pub fn disable_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<(), QueueError> {
        match self {
            Self::Split(q) => q.disable_notification(mem),
            Self::Packed(q) => q.disable_notification(mem),
        }
    }
}
