//! The `virtq_chain` harness: the queue under test, the model of the driver's side of each
//! layout, construction checked against the model, and the dispatch of one operation.

use vhu_transport_std::virtq::{
    DescriptorChain, PackedQueue, PackedQueueState, QueueError, QueueState, Segment, SplitQueue,
    Virtqueue,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::checks::{check_new, packed_violations, split_violations};
use super::input::{Addr, Config, Op};
use super::memory::{packed_desc, split_desc, wr16, A, REGIONS};
use super::{Stats, IO_BUDGET};

/// What the model expects a pop to do.
pub(super) enum Expect {
    /// Nothing available: `Ok(None)`, nothing consumed.
    Empty,
    /// This error, nothing consumed.
    Refused(QueueError),
    /// One chain consumed: its head (split) or buffer id (packed), and (packed) the ring slots
    /// it occupies and whether its last descriptor ends it.
    Consume { head: u16, slots: u16, terminated: bool },
}

/// The split ring's driver side and the device-side facts the model tracks.
pub(super) struct SplitModel {
    pub(super) desc: u64,
    pub(super) avail: u64,
    pub(super) used: u64,
    /// The driver's `avail->idx`.
    pub(super) avail_idx: u16,
    /// Where the driver puts its next chain in the descriptor table.
    pub(super) next_desc: u16,
    /// `next_used` at the last notification decision.
    pub(super) signalled: Option<u16>,
}

/// The packed ring's driver side and the device-side facts the model tracks.
pub(super) struct PackedModel {
    pub(super) desc: u64,
    pub(super) driver_event: u64,
    pub(super) device_event: u64,
    /// The driver's next slot and wrap counter.
    pub(super) pos: u16,
    pub(super) wrap: bool,
    /// Chains consumed and not returned, oldest first: buffer id and ring slots.
    pub(super) in_flight: Vec<(u16, u16)>,
    /// Whether `pop` keeps the device event offset current.
    pub(super) kick_on_desc: bool,
    /// The used position and wrap counter at the last notification decision.
    pub(super) signalled: Option<(u16, bool)>,
}

pub(super) enum Model {
    Split(SplitModel),
    Packed(PackedModel),
}

pub(super) struct Harness {
    pub(super) mem: GuestMemoryMmap,
    pub(super) q: Virtqueue,
    pub(super) size: u16,
    pub(super) event_idx: bool,
    pub(super) indirect: bool,
    pub(super) model: Model,
    /// Popped chains not returned yet: the id to return and the chain when it was valid.
    pub(super) held: Vec<(u16, Option<DescriptorChain>)>,
    pub(super) pops: usize,
    pub(super) io_left: usize,
    pub(super) stats: Stats,
}

pub(super) fn split_state(q: &Virtqueue) -> QueueState {
    match q {
        Virtqueue::Split(q) => q.state(),
        Virtqueue::Packed(_) => unreachable!("a split harness holds a split queue"),
    }
}

pub(super) fn packed_state(q: &Virtqueue) -> PackedQueueState {
    match q {
        Virtqueue::Packed(q) => q.state(),
        Virtqueue::Split(_) => unreachable!("a packed harness holds a packed queue"),
    }
}

impl Harness {
    pub(super) fn new(config: &Config) -> Option<Self> {
        let ranges: Vec<_> =
            REGIONS.iter().map(|&(start, len)| (GuestAddress(start), len as usize)).collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).expect("test memory maps");
        if !config.fill.is_empty() {
            for &(start, len) in &REGIONS {
                let tiled: Vec<u8> =
                    config.fill.iter().copied().cycle().take(len as usize).collect();
                mem.write_slice(&tiled, GuestAddress(start)).expect("fill in memory");
            }
        }
        let (size, rings) = match (config.rings, config.packed) {
            (Some(rings), _) => (config.size, rings.map(Addr::get)),
            (None, false) => (1 << (config.size % 9), [A, A + 0x1000, A + 0x2000]),
            (None, true) => (config.size % 256 + 1, [A, A + 0x1000, A + 0x1100]),
        };
        let standard = config.rings.is_none();
        let (q, model) = if config.packed {
            let (next_avail, next_used) = if standard && size > 0 {
                (config.next_avail % size, config.next_used % size)
            } else {
                (config.next_avail, config.next_used)
            };
            let state = PackedQueueState {
                size,
                desc_ring: rings[0],
                driver_event: rings[1],
                device_event: rings[2],
                next_avail,
                avail_wrap: config.avail_wrap,
                next_used,
                used_wrap: config.used_wrap,
                event_idx: config.event_idx,
                indirect: config.indirect,
            };
            let result = PackedQueue::new(state, &mem);
            let violations = packed_violations(&state);
            let q = check_new(result, &violations)?;
            assert_eq!(q.state(), state);
            let model = PackedModel {
                desc: rings[0],
                driver_event: rings[1],
                device_event: rings[2],
                pos: next_avail,
                wrap: config.avail_wrap,
                in_flight: Vec::new(),
                kick_on_desc: false,
                signalled: None,
            };
            (Virtqueue::from(q), Model::Packed(model))
        } else {
            let state = QueueState {
                size,
                desc_table: rings[0],
                avail_ring: rings[1],
                used_ring: rings[2],
                next_avail: config.next_avail,
                next_used: config.next_used,
                event_idx: config.event_idx,
                indirect: config.indirect,
            };
            let result = SplitQueue::new(state, &mem);
            let q = check_new(result, &split_violations(&state))?;
            assert_eq!(q.state(), state);
            // The driver starts where the device does.
            let avail_idx = config.next_avail;
            wr16(&mem, rings[1] + 2, avail_idx);
            let model = SplitModel {
                desc: rings[0],
                avail: rings[1],
                used: rings[2],
                avail_idx,
                next_desc: 0,
                signalled: None,
            };
            (Virtqueue::from(q), Model::Split(model))
        };
        assert_eq!(q.size(), size);
        Some(Self {
            mem,
            q,
            size,
            event_idx: config.event_idx,
            indirect: config.indirect,
            model,
            held: Vec::new(),
            pops: 0,
            io_left: IO_BUDGET,
            stats: Stats::default(),
        })
    }

    pub(super) fn apply(&mut self, op: Op) {
        match op {
            Op::Desc { index, addr, len, flags, next } => {
                let i = u64::from(index % self.size);
                match &self.model {
                    Model::Split(m) => {
                        let raw = split_desc(addr.get(), len.get(), flags, next);
                        let _ = self.mem.write_slice(&raw, GuestAddress(m.desc + 16 * i));
                    }
                    Model::Packed(m) => {
                        let raw = packed_desc(addr.get(), len.get(), next, flags);
                        let _ = self.mem.write_slice(&raw, GuestAddress(m.desc + 16 * i));
                    }
                }
            }
            Op::Chain { bufs, indirect, table, id } => {
                self.publish_chain(&bufs, indirect, table, id)
            }
            Op::Publish(head) => self.publish_head(head),
            Op::DriverIndex(v) => match &mut self.model {
                Model::Split(m) => {
                    m.avail_idx = v;
                    let at = m.avail + 2;
                    wr16(&self.mem, at, v);
                }
                Model::Packed(m) => {
                    m.pos = (v & 0x7fff) % self.size;
                    m.wrap = v & 0x8000 != 0;
                }
            },
            Op::Poke { at, bytes } => {
                let _ = self.mem.write_slice(&bytes, GuestAddress(at.get()));
            }
            Op::RingWord { which, value } => self.ring_word(which, value),
            Op::Pop(mode) => {
                self.pop(mode);
            }
            Op::Drain(n) => {
                for _ in 0..=(n % 16) {
                    if !self.pop(0b111) {
                        break;
                    }
                }
            }
            Op::AddUsed { head, len } => self.add_used(head, len),
            Op::ReturnHeld => self.return_held(),
            Op::NeedsNotification => self.needs_notification(),
            Op::EnableNotification => self.enable_notification(),
            Op::DisableNotification => self.disable_notification(),
            Op::Segments { segments, write } => {
                let segments: Vec<Segment> = segments
                    .iter()
                    .map(|(a, l)| Segment { addr: GuestAddress(a.get()), len: l.get() })
                    .collect();
                self.segments(&segments, write);
            }
        }
    }

    pub(super) fn ring_word(&mut self, which: u8, value: u16) {
        let size = u64::from(self.size);
        let at = match &mut self.model {
            Model::Split(m) => match which % 6 {
                0 => m.avail,
                1 => {
                    m.avail_idx = value;
                    m.avail + 2
                }
                2 => m.avail + 4 + 2 * size,
                3 => m.used,
                4 => m.used + 2,
                _ => m.used + 4 + 8 * size,
            },
            Model::Packed(m) => match which % 4 {
                0 => m.driver_event,
                1 => m.driver_event + 2,
                2 => m.device_event,
                _ => m.device_event + 2,
            },
        };
        wr16(&self.mem, at, value);
    }
}
