//! [`Virtqueue`]: a split or a packed queue behind one set of operations.
//!
//! The layout is fixed when a queue starts (VIRTIO_F_RING_PACKED), so a plain enum suffices; each
//! method forwards to the layout's own implementation and adds no rules of its own.

use vhu_core::backend::VringConfig;
use vhu_core::message::{PackedBase, VringBase};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::chain::DescriptorChain;
use super::error::QueueError;
use super::inflight::{InflightError, InflightRegion};
use super::packed::{PackedQueue, PackedQueueState};
use super::ring_memory::{RingMemory, RingView};
use super::split::{QueueState, SplitQueue};

/// A split ring's announcements wait only while at least this many chains wait: with fewer,
/// the device would run dry before a woken driver refills the ring.
pub const MIN_WAITING: u16 = 8;

/// A split ring's announcements wait for at most this many completions.
pub const MAX_HELD: u16 = 32;

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
    /// The ring a started vring's `config` describes (split or packed), validated against
    /// `memory`, resuming where `config.base` says. A split ring's used index is read back from
    /// guest memory: after a guest reboot it is 0 again, whatever it was when the ring stopped.
    /// `indirect`: VIRTIO_F_INDIRECT_DESC was negotiated. `Err` names what is wrong.
    pub fn from_config<M: GuestMemory + ?Sized>(
        config: &VringConfig,
        memory: &M,
        indirect: bool,
    ) -> Result<Self, &'static str> {
        if config.packed {
            let base = config.base.as_packed();
            let state = PackedQueueState {
                size: config.size,
                desc_ring: config.descriptor,
                driver_event: config.available,
                device_event: config.used,
                next_avail: base.avail_index,
                avail_wrap: base.avail_wrap,
                next_used: base.used_index,
                used_wrap: base.used_wrap,
                event_idx: config.event_idx,
                indirect,
            };
            let queue = PackedQueue::new(state, memory)
                .map_err(|_| "the packed ring or its base is invalid")?;
            return Ok(queue.into());
        }
        let next_avail = config.base.as_split().ok_or("the split ring base has bits above 15")?;
        let next_used =
            used_index(memory, config.used).ok_or("the used ring is not in guest memory")?;
        let state = QueueState {
            size: config.size,
            desc_table: config.descriptor,
            avail_ring: config.available,
            used_ring: config.used,
            next_avail,
            next_used,
            event_idx: config.event_idx,
            indirect,
        };
        let queue =
            SplitQueue::new(state, memory).map_err(|_| "the ring does not fit guest memory")?;
        Ok(queue.into())
    }

    /// Records in-flight chains in `region` (the queue's part of the INFLIGHT_SHMFD area, from
    /// [`Queue::inflight`](crate::Queue)) and resubmits, before anything new, the chains a
    /// previous back-end left in flight; see [`SplitQueue::track_inflight`] and
    /// [`PackedQueue::track_inflight`]. Returns how many are resubmitted.
    pub fn track_inflight<M: GuestMemory + ?Sized>(
        &mut self,
        region: InflightRegion,
        mem: &M,
    ) -> Result<usize, InflightError> {
        match self {
            Self::Split(q) if !region.is_packed() => q.track_inflight(region),
            Self::Packed(q) if region.is_packed() => q.track_inflight(region, mem),
            _ => Err(InflightError::Layout {
                version: 0,
                entries: region.entries(),
                expected: region.entries(),
            }),
        }
    }

    /// Where the ring stands, as GET_VRING_BASE reports it.
    pub fn base(&self) -> VringBase {
        match self {
            Self::Split(queue) => VringBase::split(queue.state().next_avail),
            Self::Packed(queue) => {
                let state = queue.state();
                VringBase::packed(PackedBase {
                    avail_index: state.next_avail,
                    avail_wrap: state.avail_wrap,
                    used_index: state.next_used,
                    used_wrap: state.used_wrap,
                })
            }
        }
    }

    /// Takes back a chain that was returned, so a later pop reuses its storage.
    pub fn recycle(&mut self, chain: DescriptorChain) {
        match self {
            Self::Split(q) => q.recycle(chain),
            Self::Packed(q) => q.recycle(chain),
        }
    }

    /// The queue's rings resolved in `mem`, for a turn's accesses ([`RingView`]).
    pub fn view<'m, M: GuestMemory + ?Sized>(&self, mem: &'m M) -> RingView<'m, M> {
        let rings = match self {
            Self::Split(q) => q.rings(),
            Self::Packed(q) => q.rings(),
        };
        RingView::new(mem, rings)
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        match self {
            Self::Split(q) => q.size(),
            Self::Packed(q) => q.size(),
        }
    }

    /// Whether VIRTIO_RING_F_INDIRECT_DESC was negotiated: a driver may then make a chain of
    /// any length one descriptor of the ring.
    pub fn indirect(&self) -> bool {
        match self {
            Self::Split(q) => q.state().indirect,
            Self::Packed(q) => q.state().indirect,
        }
    }

    /// Consumes the next available chain, if any; see [`SplitQueue::pop`] and
    /// [`PackedQueue::pop`].
    pub fn pop<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<Option<DescriptorChain>, QueueError> {
        match self {
            Self::Split(q) => q.pop(mem),
            Self::Packed(q) => q.pop(mem),
        }
    }

    /// Returns the chain `head` (its [`DescriptorChain::head`]) with `len` bytes written.
    pub fn add_used<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        match self {
            Self::Split(q) => q.add_used(mem, head, len),
            Self::Packed(q) => q.add_used(mem, head, len),
        }
    }

    /// Returns the chain `head` with `len` bytes written and notifies the driver if it asked to
    /// hear about it (EVENT_IDX, or no NO_INTERRUPT flag). While a split ring holds at least
    /// [`MIN_WAITING`] more chains, the announcement waits until as many were returned since the
    /// last one as still wait (at most [`MAX_HELD`]): the driver then has about as much to
    /// handle as the device has left, and one driver wake-up covers a group of requests instead
    /// of one each. A finished request never waits for the rest of a batch; with fewer chains
    /// waiting, and on packed rings (which do not say how many wait), it is announced at once.
    /// Virtio 1.2 §2.7.10 lets a device delay a notification; the end of every turn
    /// ([`super::end_turn`]) announces what is left.
    pub fn complete<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
        head: u16,
        len: u32,
        call: &crate::device::Notifier,
    ) -> Result<(), QueueError> {
        self.add_used(mem, head, len)?;
        if self.may_hold(mem) {
            return Ok(());
        }
        if self.needs_notification(mem)? {
            // A call eventfd that cannot be written is the front-end's loss; the ring goes on.
            let _ = call.notify();
        }
        Ok(())
    }

    /// Announces now what [`Virtqueue::complete`] held back, for a device about to start a
    /// request that may take long (a sync to disk): the requests that already finished do not
    /// wait behind it. Nothing is sent when nothing is held or the driver does not want to hear.
    pub fn announce<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
        call: &crate::device::Notifier,
    ) -> Result<(), QueueError> {
        if self.holds_announcement() && self.needs_notification(mem)? {
            let _ = call.notify();
        }
        Ok(())
    }

    /// Whether chains were returned since the driver was last notified (split rings; a packed
    /// ring announces every completion at once). Before the first notification decision
    /// nothing is held: the first completion always decides.
    pub fn holds_announcement(&self) -> bool {
        match self {
            Self::Split(q) => (1..u16::MAX).contains(&q.unannounced()),
            Self::Packed(_) => false,
        }
    }

    /// Whether the announcement of what was returned may wait for the next completion.
    fn may_hold<R: RingMemory + ?Sized>(&mut self, mem: &R) -> bool {
        match self {
            Self::Split(q) => {
                // What is known to wait decides while it is enough; the index is read again
                // only when it is not. A ring that cannot say what waits (its index jumped)
                // holds nothing back; the next pop reports it.
                let mut waiting = q.known_pending();
                if waiting < MIN_WAITING {
                    waiting = q.refresh_pending(mem).unwrap_or(0);
                }
                waiting >= MIN_WAITING && q.unannounced() < waiting.min(MAX_HELD)
            }
            Self::Packed(_) => false,
        }
    }

    /// Whether the driver must be notified about the chains returned since the last call.
    pub fn needs_notification<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<bool, QueueError> {
        match self {
            Self::Split(q) => q.needs_notification(mem),
            Self::Packed(q) => q.needs_notification(mem),
        }
    }

    /// Whether the driver made a chain available that was not consumed yet (a ring that cannot
    /// be read says yes: the next pop reports why).
    pub fn has_available<R: RingMemory + ?Sized>(&self, mem: &R) -> bool {
        match self {
            Self::Split(q) => q.pending(mem).map_or(true, |n| n > 0),
            Self::Packed(q) => q.has_available(mem).unwrap_or(true),
        }
    }

    /// Asks the driver to kick again and reports whether chains arrived meanwhile.
    pub fn enable_notification<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<bool, QueueError> {
        match self {
            Self::Split(q) => q.enable_notification(mem),
            Self::Packed(q) => q.enable_notification(mem),
        }
    }

    /// Tells the driver that kicks are not needed while the device is busy.
    pub fn disable_notification<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<(), QueueError> {
        match self {
            Self::Split(q) => q.disable_notification(mem),
            Self::Packed(q) => q.disable_notification(mem),
        }
    }
}

/// The used index a split ring holds now.
fn used_index<M: GuestMemory + ?Sized>(mem: &M, used_ring: u64) -> Option<u16> {
    let mut raw = [0u8; 2];
    mem.read_slice(&mut raw, GuestAddress(used_ring.checked_add(2)?)).ok()?;
    Some(u16::from_le_bytes(raw))
}
