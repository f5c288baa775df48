//! The split virtqueue: consuming available chains and publishing used ones (virtio 1.2 §2.7).
//!
//! [`SplitQueue`] is plain data — ring addresses, size, the two running indices and the notification
//! bookkeeping — and every call takes the guest memory to use, so a memory-table update never has to
//! reach into the queue. It owns the ordering rules: `avail->idx` is read with acquire semantics before
//! any ring entry or descriptor, used entries are written before `used->idx` is published with release
//! semantics. It does not decide how a bad chain is answered and never signals anything itself.

use std::collections::VecDeque;
use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::chain::{walk, DescriptorChain, Spares, Visited, WalkParams};
use super::desc::{
    avail_ring_len, desc_table_len, used_ring_len, AVAIL_F_NO_INTERRUPT, MAX_QUEUE_SIZE,
    USED_F_NO_NOTIFY,
};
use super::error::{QueueError, Ring};
use super::inflight::{InflightError, InflightRegion, SplitInflight};
use super::notify::need_event;
use super::prefetch;
use super::ring_memory::RingMemory;

/// Everything that describes a split queue, as the front-end configured it and as it is saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Number of entries (a power of two, at most 32768).
    pub size: u16,
    /// Guest address of the descriptor table (16-byte aligned).
    pub desc_table: u64,
    /// Guest address of the available ring (2-byte aligned).
    pub avail_ring: u64,
    /// Guest address of the used ring (4-byte aligned).
    pub used_ring: u64,
    /// Next available entry to consume (VHOST_USER_SET_VRING_BASE).
    pub next_avail: u16,
    /// Next used entry to fill.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX was negotiated.
    pub event_idx: bool,
    /// VIRTIO_F_INDIRECT_DESC was negotiated.
    pub indirect: bool,
}

/// A validated split virtqueue.
#[derive(Clone, Debug)]
pub struct SplitQueue {
    state: QueueState,
    /// `next_used` when the driver was last notified (or when we last decided not to).
    signalled_used: Option<Wrapping<u16>>,
    /// `avail->idx` as last read. Chains up to it are known to be available, so consuming them
    /// does not read the index again: that word is the one the driver writes most, and reading
    /// it after each write moves its cache line back to the device's CPU (Linux's vhost keeps
    /// the same shadow).
    avail_seen: u16,
    visited: Visited,
    /// Where fetched and returned chains are recorded (INFLIGHT_SHMFD).
    inflight: Option<SplitInflight>,
    /// Heads a previous back-end left in flight, served before the available ring.
    resubmit: VecDeque<u16>,
    spares: Spares,
}

/// Checks that a ring at `addr` of `len` bytes is `align`-aligned and lies in guest memory.
pub(crate) fn check_ring<M: GuestMemory + ?Sized>(
    mem: &M,
    ring: Ring,
    addr: u64,
    align: u64,
    len: u64,
) -> Result<(), QueueError> {
    if addr % align != 0 {
        return Err(QueueError::Misaligned { ring, addr, align });
    }
    let fits = addr.checked_add(len).is_some()
        && usize::try_from(len)
            .is_ok_and(|l| mem.check_range(GuestAddress(addr), l, Permissions::ReadWrite));
    if fits {
        Ok(())
    } else {
        Err(QueueError::RingOutOfRange { ring, addr, len })
    }
}

impl SplitQueue {
    /// Validates `state` against `mem` (size, alignment, rings inside guest memory).
    pub fn new<M: GuestMemory + ?Sized>(state: QueueState, mem: &M) -> Result<Self, QueueError> {
        let size = state.size;
        if size == 0 || size > MAX_QUEUE_SIZE || !size.is_power_of_two() {
            return Err(QueueError::InvalidSize(size));
        }
        check_ring(mem, Ring::Descriptors, state.desc_table, 16, desc_table_len(size))?;
        check_ring(mem, Ring::Available, state.avail_ring, 2, avail_ring_len(size))?;
        check_ring(mem, Ring::Used, state.used_ring, 4, used_ring_len(size))?;
        Ok(Self {
            state,
            signalled_used: None,
            avail_seen: state.next_avail,
            visited: Visited::default(),
            inflight: None,
            resubmit: VecDeque::new(),
            spares: Spares::default(),
        })
    }

    /// Records fetched and returned chains in `region` from now on, and serves the chains it
    /// says a previous back-end left in flight before any new one (spec "Inflight I/O
    /// tracking"). When the region resumes, the next available index becomes the used index
    /// plus those chains: every chain consumed is either used or in flight. Returns how many
    /// chains are resubmitted.
    pub fn track_inflight(&mut self, region: InflightRegion) -> Result<usize, InflightError> {
        let (tracker, resumed) =
            SplitInflight::attach(region, self.state.size, self.state.next_used)?;
        self.inflight = Some(tracker);
        if let Some(heads) = resumed {
            // At most `size` heads: one per descriptor of the ring.
            let count = heads.len() as u16;
            self.state.next_avail = self.state.next_used.wrapping_add(count);
            self.avail_seen = self.state.next_avail;
            self.resubmit = heads.into();
        }
        Ok(self.resubmit.len())
    }

    /// The current state, to save (GET_VRING_BASE) or inspect.
    pub fn state(&self) -> QueueState {
        self.state
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.state.size
    }

    /// Takes back a chain that was returned, so a later [`SplitQueue::pop`] reuses its
    /// storage instead of allocating.
    pub fn recycle(&mut self, chain: DescriptorChain) {
        self.spares.put(chain);
    }

    fn avail_addr(&self, offset: u64) -> GuestAddress {
        // In range: checked against guest memory in `new`.
        GuestAddress(self.state.avail_ring.wrapping_add(offset))
    }

    fn used_addr(&self, offset: u64) -> GuestAddress {
        GuestAddress(self.state.used_ring.wrapping_add(offset))
    }

    /// Where the descriptor table, the available ring and the used ring lie (guest address and
    /// length), for a [`RingView`](super::RingView) of them.
    pub fn rings(&self) -> [(u64, u64); 3] {
        let size = self.state.size;
        [
            (self.state.desc_table, desc_table_len(size)),
            (self.state.avail_ring, avail_ring_len(size)),
            (self.state.used_ring, used_ring_len(size)),
        ]
    }

    /// `avail->idx`, read with acquire semantics.
    pub fn avail_idx<R: RingMemory + ?Sized>(&self, mem: &R) -> Result<u16, QueueError> {
        let idx = mem.load_u16(self.avail_addr(2), Ordering::Acquire)?;
        fence(Ordering::Acquire);
        Ok(idx)
    }

    /// Number of chains the driver made available and the device has not consumed, from
    /// `avail->idx` as it is now.
    pub fn pending<R: RingMemory + ?Sized>(&self, mem: &R) -> Result<u16, QueueError> {
        self.avail_now(mem).map(|(_, pending)| pending)
    }

    /// [`SplitQueue::pending`], and what is known to wait from now on.
    pub fn refresh_pending<R: RingMemory + ?Sized>(&mut self, mem: &R) -> Result<u16, QueueError> {
        let (avail_idx, pending) = self.avail_now(mem)?;
        self.avail_seen = avail_idx;
        Ok(pending)
    }

    /// `avail->idx` now, and the chains waiting by it (resubmitted ones included).
    fn avail_now<R: RingMemory + ?Sized>(&self, mem: &R) -> Result<(u16, u16), QueueError> {
        let avail_idx = self.avail_idx(mem)?;
        let pending = avail_idx.wrapping_sub(self.state.next_avail);
        if pending > self.state.size {
            return Err(QueueError::AvailIdxJump {
                avail_idx,
                next_avail: self.state.next_avail,
                pending,
                size: self.state.size,
            });
        }
        // At most `size` resubmitted heads.
        Ok((avail_idx, pending.saturating_add(self.resubmit.len() as u16)))
    }

    /// Chains known to wait without reading `avail->idx`: those up to the index as last read
    /// by [`SplitQueue::refresh_pending`], and the resubmitted ones. With a driver that only
    /// moves its index forward, never more than [`SplitQueue::pending`] says; one that moves
    /// it back does not take back chains the device already saw.
    pub fn known_pending(&self) -> u16 {
        // Never above `size`: `avail_seen` was checked when read and only `next_avail` moves
        // towards it; at most `size` resubmitted heads.
        let seen = self.avail_seen.wrapping_sub(self.state.next_avail);
        seen.saturating_add(self.resubmit.len() as u16)
    }

    /// Chains waiting: those known to, and when none is, `avail->idx` read again.
    fn available<R: RingMemory + ?Sized>(&mut self, mem: &R) -> Result<u16, QueueError> {
        match self.known_pending() {
            0 => self.refresh_pending(mem),
            known => Ok(known),
        }
    }

    /// Consumes the next available chain, if any.
    ///
    /// On a chain error the available entry is consumed (so a bad chain cannot wedge the queue) and
    /// [`QueueError::head`] names it; on [`QueueError::AvailIdxJump`] nothing is consumed.
    pub fn pop<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<Option<DescriptorChain>, QueueError> {
        let params = WalkParams {
            table: GuestAddress(self.state.desc_table),
            size: self.state.size,
            indirect: self.state.indirect,
        };
        if let Some(head) = self.resubmit.pop_front() {
            return walk(mem, &params, head, &mut self.visited, self.spares.take()).map(Some);
        }
        if self.available(mem)? == 0 {
            return Ok(None);
        }
        // The size is a power of two (checked in `new`): a mask, not a division.
        let slot = self.state.next_avail & (self.state.size - 1);
        let head_addr = self.avail_addr(4 + 2 * u64::from(slot));
        let head = mem.load_u16(head_addr, Ordering::Relaxed)?;
        self.state.next_avail = self.state.next_avail.wrapping_add(1);
        if let (Some(inflight), true) = (&mut self.inflight, head < self.state.size) {
            inflight.fetched(head).map_err(|_| QueueError::InflightRecord)?;
        }
        let chain = walk(mem, &params, head, &mut self.visited, self.spares.take());
        let known = self.known_pending();
        if known > 0 {
            prefetch::ahead(mem, self.state.size, self.state.next_avail, known);
        }
        chain.map(Some)
    }

    /// Puts `head` on the used ring with `len` bytes written and publishes `used->idx` (release).
    pub fn add_used<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let size = self.state.size;
        if head >= size {
            return Err(QueueError::UsedHeadOutOfRange { head, size });
        }
        if let Some(inflight) = &mut self.inflight {
            inflight.returning(head).map_err(|_| QueueError::InflightRecord)?;
        }
        let slot = self.state.next_used & (size - 1);
        let elem = self.used_addr(4 + 8 * u64::from(slot));
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        raw[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_bytes(elem, &raw)?;
        self.state.next_used = self.state.next_used.wrapping_add(1);
        fence(Ordering::Release);
        mem.store_u16(self.used_addr(2), self.state.next_used, Ordering::Release)?;
        if let Some(inflight) = &mut self.inflight {
            inflight
                .returned(head, self.state.next_used)
                .map_err(|_| QueueError::InflightRecord)?;
        }
        Ok(())
    }

    /// Whether the driver must be notified about the used entries published since the last call.
    ///
    /// With EVENT_IDX this compares `used_event` with the entries added since the previous decision
    /// (§2.7.10); otherwise it honours `VIRTQ_AVAIL_F_NO_INTERRUPT`.
    pub fn needs_notification<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<bool, QueueError> {
        // The used idx store must be visible before we read the driver's suppression state.
        fence(Ordering::SeqCst);
        let new = Wrapping(self.state.next_used);
        if self.state.event_idx {
            let used_event_addr = self.avail_addr(4 + 2 * u64::from(self.state.size));
            let used_event = mem.load_u16(used_event_addr, Ordering::Acquire)?;
            let old = self.signalled_used.replace(new);
            Ok(match old {
                None => true,
                Some(old) => need_event(used_event, new.0, old.0),
            })
        } else {
            // Nothing used since the last decision: nothing to announce (§2.7.7.2 notifies
            // about used buffers), whatever the flag says.
            if self.signalled_used.replace(new) == Some(new) {
                return Ok(false);
            }
            let flags = mem.load_u16(self.avail_addr(0), Ordering::Acquire)?;
            Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    /// Chains returned since the last notification decision ([`SplitQueue::needs_notification`]);
    /// `u16::MAX` before the first.
    pub fn unannounced(&self) -> u16 {
        self.signalled_used.map_or(u16::MAX, |old| self.state.next_used.wrapping_sub(old.0))
    }

    /// Asks the driver to kick again and reports whether chains arrived meanwhile.
    ///
    /// With EVENT_IDX this is the only place `avail_event` is written: while the device works
    /// through the ring it stays behind, so the driver does not kick a device that is busy anyway
    /// (§2.7.10; every chain it adds meanwhile is found before the device waits). Call before
    /// waiting on the kick eventfd; when it returns true, keep processing instead.
    pub fn enable_notification<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<bool, QueueError> {
        if self.state.event_idx {
            let at = self.used_addr(4 + 8 * u64::from(self.state.size));
            mem.store_u16(at, self.state.next_avail, Ordering::Relaxed)?;
        } else {
            mem.store_u16(self.used_addr(0), 0, Ordering::Relaxed)?;
        }
        fence(Ordering::SeqCst);
        Ok(self.pending(mem)? != 0)
    }

    /// Tells the driver that kicks are not needed while the device is busy (no-op with EVENT_IDX).
    pub fn disable_notification<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<(), QueueError> {
        if self.state.event_idx {
            return Ok(());
        }
        mem.store_u16(self.used_addr(0), USED_F_NO_NOTIFY, Ordering::Relaxed)
    }
}
