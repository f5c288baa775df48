//! The packed virtqueue: consuming available chains and writing used descriptors (virtio 1.2 §2.8).
//!
//! [`PackedQueue`] is plain data like the split queue: ring addresses, size, the next available
//! and next used positions with their wrap counters, and the notification bookkeeping; every call
//! takes the guest memory to use. It owns the ordering rules: a head descriptor's flags are read
//! with acquire semantics before anything else of its chain, and a used descriptor's flags are
//! written last with release semantics. It does not decide how a bad chain is answered and never
//! signals anything itself.
//!
//! A chain occupies consecutive ring slots linked by NEXT; its buffer id is in its last
//! descriptor. Used descriptors are written at the next used position, which then skips as many
//! slots as the chain occupied, so the queue remembers that count per buffer id until the chain is
//! returned. A malformed chain is still consumed and remembered, so it can be returned (with
//! length 0) and the ring goes on.

use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};

use vm_memory::{GuestAddress, GuestMemory};

use super::chain::{indirect_entries, read_entry, ChainBuilder, DescriptorChain, Spares, Table};
use super::desc::{
    packed_used_flags, PackedDescriptor, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE,
    EVENT_SUPPRESS_SIZE, MAX_QUEUE_SIZE, PACKED_DESC_F_AVAIL, PACKED_DESC_F_USED,
    RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
};
use super::error::{QueueError, Ring};
use super::inflight::{InflightError, InflightRegion, PackedInflight, PackedResubmit};
use super::notify::packed_need_event;
use super::ring_memory::RingMemory;
use super::split::check_ring;

/// Offset of `off_wrap` in an event suppression structure.
const EVENT_OFF_WRAP: u64 = 0;
/// Offset of `flags` in an event suppression structure.
const EVENT_FLAGS: u64 = 2;
/// Offset of `flags` in a packed descriptor.
const DESC_FLAGS: u64 = 14;

/// Everything that describes a packed queue, as the front-end configured it and as it is saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedQueueState {
    /// Number of descriptors (1 to 32768, any value).
    pub size: u16,
    /// Guest address of the descriptor ring (16-byte aligned).
    pub desc_ring: u64,
    /// Guest address of the driver event suppression structure (4-byte aligned): whether the
    /// device should notify the driver.
    pub driver_event: u64,
    /// Guest address of the device event suppression structure (4-byte aligned): whether the
    /// driver should kick the device.
    pub device_event: u64,
    /// Ring slot of the next descriptor to consume (below `size`).
    pub next_avail: u16,
    /// The device's available wrap counter.
    pub avail_wrap: bool,
    /// Ring slot of the next used descriptor to write (below `size`).
    pub next_used: u16,
    /// The device's used wrap counter.
    pub used_wrap: bool,
    /// VIRTIO_F_RING_EVENT_IDX was negotiated.
    pub event_idx: bool,
    /// VIRTIO_F_INDIRECT_DESC was negotiated.
    pub indirect: bool,
}

impl Default for PackedQueueState {
    /// A fresh ring: no addresses, both positions at slot 0 with their wrap counters set.
    fn default() -> Self {
        Self {
            size: 0,
            desc_ring: 0,
            driver_event: 0,
            device_event: 0,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            event_idx: false,
            indirect: false,
        }
    }
}

/// A chain the device consumed and has not returned yet.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    id: u16,
    slots: u16,
    /// Its entry in the inflight region, when one is tracked.
    entry: Option<u16>,
}

/// A validated packed virtqueue.
#[derive(Clone, Debug)]
pub struct PackedQueue {
    state: PackedQueueState,
    /// The used position when the driver was last notified (or when we last decided not to).
    signalled_used: Option<(u16, bool)>,
    /// Consumed chains not returned yet, oldest first.
    in_flight: Vec<InFlight>,
    /// Sum of `in_flight` slots; never above the queue size.
    in_flight_slots: u32,
    /// The device event structure is in DESC mode: keep its offset at `next_avail`.
    kick_on_desc: bool,
    /// Reusable scratch: the ring descriptors of the chain being popped.
    scratch: Vec<PackedDescriptor>,
    /// Where fetched and returned chains are recorded (INFLIGHT_SHMFD).
    inflight: Option<PackedInflight>,
    /// Chains a previous back-end left in flight, served before the ring.
    resubmit: VecDeque<PackedResubmit>,
    spares: Spares,
}

fn load_u16<R: RingMemory + ?Sized>(
    mem: &R,
    addr: GuestAddress,
    order: Ordering,
) -> Result<u16, QueueError> {
    mem.load_u16(addr, order)
}

fn store_u16<R: RingMemory + ?Sized>(
    mem: &R,
    addr: GuestAddress,
    val: u16,
    order: Ordering,
) -> Result<(), QueueError> {
    mem.store_u16(addr, val, order)
}

/// `slot` moved forward by `n <= size` slots, flipping `wrap` when it passes the end of the ring.
fn advance(slot: u16, wrap: bool, n: u16, size: u16) -> (u16, bool) {
    let next = u32::from(slot) + u32::from(n);
    let size = u32::from(size);
    // slot < size and n <= size, so next < 2 * size <= 65536 and one subtraction suffices.
    if next >= size {
        ((next - size) as u16, !wrap)
    } else {
        (next as u16, wrap)
    }
}

/// An event suppression offset: a slot in bits 0–14 and a wrap counter in bit 15.
fn off_wrap(slot: u16, wrap: bool) -> u16 {
    (slot & 0x7fff) | if wrap { 0x8000 } else { 0 }
}

impl PackedQueue {
    /// Validates `state` against `mem` (size, positions, alignment, rings inside guest memory).
    pub fn new<M: GuestMemory + ?Sized>(
        state: PackedQueueState,
        mem: &M,
    ) -> Result<Self, QueueError> {
        let size = state.size;
        if size == 0 || size > MAX_QUEUE_SIZE {
            return Err(QueueError::InvalidSize(size));
        }
        for index in [state.next_avail, state.next_used] {
            if index >= size {
                return Err(QueueError::BaseOutOfRange { index, size });
            }
        }
        let ring_len = DESC_SIZE * u64::from(size);
        check_ring(mem, Ring::Descriptors, state.desc_ring, 16, ring_len)?;
        check_ring(mem, Ring::DriverEvent, state.driver_event, 4, EVENT_SUPPRESS_SIZE)?;
        check_ring(mem, Ring::DeviceEvent, state.device_event, 4, EVENT_SUPPRESS_SIZE)?;
        Ok(Self {
            state,
            signalled_used: None,
            in_flight: Vec::new(),
            in_flight_slots: 0,
            kick_on_desc: false,
            scratch: Vec::new(),
            inflight: None,
            resubmit: VecDeque::new(),
            spares: Spares::default(),
        })
    }

    /// Records fetched and returned chains in `region` from now on, and serves the chains it
    /// says a previous back-end left in flight before any new one (spec "Inflight I/O
    /// tracking"). When the region resumes, the used position is the region's and the next
    /// available one lies past the slots of the chains in flight. Returns how many chains are
    /// resubmitted.
    pub fn track_inflight<M: GuestMemory + ?Sized>(
        &mut self,
        region: InflightRegion,
        mem: &M,
    ) -> Result<usize, InflightError> {
        let size = self.state.size;
        let used = (self.state.next_used, self.state.used_wrap);
        let flags_at = |slot: u16| {
            let at = GuestAddress(self.slot_addr(slot).0 + DESC_FLAGS);
            load_u16(mem, at, Ordering::Acquire).ok()
        };
        let (tracker, resumed) = PackedInflight::attach(region, size, used, flags_at)?;
        self.inflight = Some(tracker);
        if let Some(((slot, wrap), chains)) = resumed {
            let slots: usize = chains.iter().map(|c| c.descriptors.len()).sum();
            let slots = u16::try_from(slots)
                .ok()
                .filter(|&n| n <= size)
                .ok_or(InflightError::RingTooLarge { ring: size, entries: size })?;
            self.state.next_used = slot;
            self.state.used_wrap = wrap;
            (self.state.next_avail, self.state.avail_wrap) = advance(slot, wrap, slots, size);
            self.resubmit = chains.into();
        }
        Ok(self.resubmit.len())
    }

    /// Where the descriptor ring and the two event suppression areas lie (guest address and
    /// length), for a [`RingView`](super::RingView) of them.
    pub fn rings(&self) -> [(u64, u64); 3] {
        let state = &self.state;
        [
            (state.desc_ring, DESC_SIZE * u64::from(state.size)),
            (state.driver_event, EVENT_SUPPRESS_SIZE),
            (state.device_event, EVENT_SUPPRESS_SIZE),
        ]
    }

    /// The current state, to save (GET_VRING_BASE) or inspect.
    pub fn state(&self) -> PackedQueueState {
        self.state
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.state.size
    }

    /// Takes back a chain that was returned, so a later [`PackedQueue::pop`] reuses its
    /// storage instead of allocating.
    pub fn recycle(&mut self, chain: DescriptorChain) {
        self.spares.put(chain);
    }

    fn slot_addr(&self, slot: u16) -> GuestAddress {
        // In range: slot < size and the ring was checked against guest memory in `new`.
        GuestAddress(self.state.desc_ring.wrapping_add(DESC_SIZE * u64::from(slot)))
    }

    /// Whether the descriptor at the next available slot is available, read with acquire
    /// semantics.
    pub fn has_available<R: RingMemory + ?Sized>(&self, mem: &R) -> Result<bool, QueueError> {
        let at = GuestAddress(self.slot_addr(self.state.next_avail).0 + DESC_FLAGS);
        let flags = load_u16(mem, at, Ordering::Acquire)?;
        fence(Ordering::Acquire);
        let wrap = self.state.avail_wrap;
        let avail = flags & PACKED_DESC_F_AVAIL != 0;
        let used = flags & PACKED_DESC_F_USED != 0;
        Ok(avail == wrap && used != wrap)
    }

    /// Consumes the next available chain, if any.
    ///
    /// On a chain error the chain's slots are consumed (so a bad chain cannot wedge the queue) and
    /// [`QueueError::head`] names its buffer id, to return with [`PackedQueue::add_used`]. On
    /// [`QueueError::InFlightOverflow`] and [`QueueError::IdInFlight`] nothing is consumed (the
    /// latter breaks the ring: the driver reused a buffer id); memory errors (the ring or a table no
    /// longer mapped) have no head and leave the queue unusable.
    pub fn pop<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<Option<DescriptorChain>, QueueError> {
        // A resubmitted chain is checked as a new one: the area is the front-end's memory, and
        // an older back-end may have taken a reused id.
        let resubmitted =
            self.resubmit.front().map(|c| c.descriptors.last().map_or(0, |d| d.id.get()));
        if let Some(id) = resubmitted.filter(|id| self.in_flight.iter().any(|c| c.id == *id)) {
            return Err(QueueError::IdInFlight { id });
        }
        if let Some(chain) = self.resubmit.pop_front() {
            // Its slots were counted when the next available position was set.
            self.scratch = chain.descriptors;
            let slots = self.scratch.len() as u16;
            let id = self.scratch.last().map_or(0, |d| d.id.get());
            self.in_flight.push(InFlight { id, slots, entry: Some(chain.entry) });
            self.in_flight_slots += u32::from(slots);
            return self.build(mem, id, 0).map(Some);
        }
        if !self.has_available(mem)? {
            return Ok(None);
        }
        let size = self.state.size;
        let first = self.state.next_avail;
        let (mut slot, mut wrap) = (first, self.state.avail_wrap);
        let ring = GuestAddress(self.state.desc_ring);
        self.scratch.clear();
        let terminated = loop {
            let desc: PackedDescriptor = read_entry(mem, ring, u32::from(slot))?;
            self.scratch.push(desc);
            (slot, wrap) = advance(slot, wrap, 1, size);
            if !desc.has(DESC_F_NEXT) {
                break true;
            }
            if self.scratch.len() >= usize::from(size) {
                break false;
            }
        };
        // At most `size` descriptors were read.
        let slots = self.scratch.len() as u16;
        let id = self.scratch.last().map_or(0, |d| d.id.get());
        if self.in_flight_slots + u32::from(slots) > u32::from(size) {
            return Err(QueueError::InFlightOverflow { size });
        }
        // A buffer id names one chain until the device returns it (virtio 1.2 §2.8.6, "Next
        // Flag: Descriptor Chaining"): returned by id, two chains of one id could not be told
        // apart (the wrong one's slots skipped, its inflight record freed).
        if self.in_flight.iter().any(|c| c.id == id) {
            return Err(QueueError::IdInFlight { id });
        }
        self.state.next_avail = slot;
        self.state.avail_wrap = wrap;
        let entry = match &mut self.inflight {
            Some(inflight) => {
                Some(inflight.fetched(&self.scratch).map_err(|_| QueueError::InflightRecord)?)
            }
            None => None,
        };
        self.in_flight.push(InFlight { id, slots, entry });
        self.in_flight_slots += u32::from(slots);
        if self.state.event_idx && self.kick_on_desc {
            let at = GuestAddress(self.state.device_event + EVENT_OFF_WRAP);
            store_u16(mem, at, off_wrap(slot, wrap), Ordering::Relaxed)?;
        }
        if !terminated {
            return Err(QueueError::ChainTooLong { head: id, max: u32::from(size) });
        }
        self.build(mem, id, first).map(Some)
    }

    /// Turns the descriptors in `scratch` (starting at ring slot `first`) into a chain.
    fn build<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
        id: u16,
        first: u16,
    ) -> Result<DescriptorChain, QueueError> {
        let size = u32::from(self.state.size);
        let mut builder = ChainBuilder::new(mem, id, size, self.spares.take());
        for (i, desc) in (0u32..).zip(&self.scratch) {
            let slot = (u32::from(first) + i) % size;
            if !desc.has(DESC_F_INDIRECT) {
                builder.push(desc.addr.get(), desc.len.get(), desc.has(DESC_F_WRITE), slot)?;
                continue;
            }
            if !self.state.indirect {
                return Err(QueueError::IndirectNotNegotiated { head: id });
            }
            if desc.has(DESC_F_NEXT) {
                return Err(QueueError::IndirectWithNext { head: id, index: slot });
            }
            let table_addr = desc.addr.get();
            let entries = indirect_entries(mem, id, table_addr, desc.len.get(), size)?;
            let table = Table::indirect(mem, table_addr, entries);
            for index in 0..entries {
                let entry: PackedDescriptor = table.read(mem, index)?;
                if entry.has(DESC_F_INDIRECT) {
                    return Err(QueueError::NestedIndirect { head: id, index });
                }
                // Only WRITE is meaningful in an indirect table; NEXT and the id are ignored.
                builder.push(entry.addr.get(), entry.len.get(), entry.has(DESC_F_WRITE), index)?;
            }
        }
        Ok(builder.finish())
    }

    /// Writes the used descriptor for buffer `id` with `len` bytes written, flags last (release),
    /// and moves the used position past the slots the chain occupied.
    pub fn add_used<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
        id: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let at = self
            .in_flight
            .iter()
            .position(|c| c.id == id)
            .ok_or(QueueError::UsedIdNotInFlight { id })?;
        let chain = self.in_flight[at];
        let after =
            advance(self.state.next_used, self.state.used_wrap, chain.slots, self.state.size);
        if let (Some(inflight), Some(entry)) = (&mut self.inflight, chain.entry) {
            inflight.returning(entry, after).map_err(|_| QueueError::InflightRecord)?;
        }
        let slot_addr = self.slot_addr(self.state.next_used);
        let mut len_id = [0u8; 6];
        len_id[..4].copy_from_slice(&len.to_le_bytes());
        len_id[4..].copy_from_slice(&id.to_le_bytes());
        let len_addr = GuestAddress(slot_addr.0 + 8);
        mem.write_bytes(len_addr, &len_id)?;
        let mut flags = packed_used_flags(self.state.used_wrap);
        if len > 0 {
            flags |= DESC_F_WRITE;
        }
        fence(Ordering::Release);
        store_u16(mem, GuestAddress(slot_addr.0 + DESC_FLAGS), flags, Ordering::Release)?;
        self.in_flight.remove(at);
        self.in_flight_slots -= u32::from(chain.slots);
        (self.state.next_used, self.state.used_wrap) = after;
        if let (Some(inflight), Some(entry)) = (&mut self.inflight, chain.entry) {
            inflight.returned(entry).map_err(|_| QueueError::InflightRecord)?;
        }
        Ok(())
    }

    /// Whether the driver must be notified about the used descriptors written since the last call.
    ///
    /// Reads the driver event suppression structure: ENABLE notifies, DISABLE does not, DESC (with
    /// EVENT_IDX) notifies when the used position passed the descriptor it names (§2.8.10). DESC
    /// without EVENT_IDX and the reserved value count as ENABLE.
    pub fn needs_notification<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<bool, QueueError> {
        // The used descriptors must be visible before we read the driver's suppression state.
        fence(Ordering::SeqCst);
        let base = self.state.driver_event;
        let flags = load_u16(mem, GuestAddress(base + EVENT_FLAGS), Ordering::Acquire)? & 0x3;
        let new = (self.state.next_used, self.state.used_wrap);
        let old = self.signalled_used.replace(new);
        // Nothing used since the last decision: nothing to announce (§2.8.10).
        if flags == RING_EVENT_FLAGS_DISABLE || old == Some(new) {
            return Ok(false);
        }
        if flags != RING_EVENT_FLAGS_DESC || !self.state.event_idx {
            return Ok(true);
        }
        let Some(old) = old else { return Ok(true) };
        let event = load_u16(mem, GuestAddress(base + EVENT_OFF_WRAP), Ordering::Relaxed)?;
        Ok(packed_need_event(self.state.size, event, new, old))
    }

    /// Asks the driver to kick again and reports whether a chain arrived meanwhile.
    ///
    /// With EVENT_IDX the device event structure names the next available slot (DESC mode), and
    /// [`PackedQueue::pop`] keeps it current; otherwise it is set to ENABLE. Call before waiting on
    /// the kick eventfd; when it returns true, keep processing instead.
    pub fn enable_notification<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<bool, QueueError> {
        let base = self.state.device_event;
        let flags = if self.state.event_idx {
            let event = off_wrap(self.state.next_avail, self.state.avail_wrap);
            store_u16(mem, GuestAddress(base + EVENT_OFF_WRAP), event, Ordering::Relaxed)?;
            fence(Ordering::Release);
            RING_EVENT_FLAGS_DESC
        } else {
            RING_EVENT_FLAGS_ENABLE
        };
        store_u16(mem, GuestAddress(base + EVENT_FLAGS), flags, Ordering::Release)?;
        self.kick_on_desc = self.state.event_idx;
        fence(Ordering::SeqCst);
        self.has_available(mem)
    }

    /// Tells the driver that kicks are not needed while the device is busy (DISABLE).
    pub fn disable_notification<R: RingMemory + ?Sized>(
        &mut self,
        mem: &R,
    ) -> Result<(), QueueError> {
        self.kick_on_desc = false;
        let at = GuestAddress(self.state.device_event + EVENT_FLAGS);
        store_u16(mem, at, RING_EVENT_FLAGS_DISABLE, Ordering::Relaxed)
    }
}
