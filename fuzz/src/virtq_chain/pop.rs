//! Pops in `virtq_chain`: what the model expects of the next pop, the pop checked against it,
//! the validity of every chain popped, and the chains the device holds before returning them.

use vhu_transport_std::virtq::{
    DescriptorChain, PackedQueueState, QueueError, QueueState, Virtqueue, DESC_F_NEXT,
    PACKED_DESC_F_AVAIL, PACKED_DESC_F_USED,
};
use vm_memory::{Bytes, GuestAddress};

use super::checks::check_error;
use super::harness::{packed_state, split_state, Expect, Harness, Model};
use super::memory::{advance, in_memory, off_wrap, rd16, rd_desc};
use super::{MAX_HELD, MAX_POPS};

impl Harness {
    /// What the next pop must do, from guest memory and the model alone.
    pub(super) fn expect_pop(&self) -> Expect {
        let size = self.size;
        match &self.model {
            Model::Split(m) => {
                let st = split_state(&self.q);
                let avail_idx = rd16(&self.mem, m.avail + 2);
                let pending = avail_idx.wrapping_sub(st.next_avail);
                let Virtqueue::Split(q) = &self.q else { unreachable!("split") };
                // Chains up to the index the queue last read are consumed without reading it
                // again, whatever the index says now.
                let known = q.known_pending();
                assert!(known <= size, "{known} chains known to wait on a ring of {size}");
                let jump = QueueError::AvailIdxJump {
                    avail_idx,
                    next_avail: st.next_avail,
                    pending,
                    size,
                };
                if pending > size {
                    assert_eq!(q.pending(&self.mem), Err(jump));
                    if known == 0 {
                        return Expect::Refused(jump);
                    }
                } else {
                    assert_eq!(q.pending(&self.mem), Ok(pending));
                    if pending == 0 && known == 0 {
                        return Expect::Empty;
                    }
                }
                let slot = u64::from(st.next_avail % size);
                let head = rd16(&self.mem, m.avail + 4 + 2 * slot);
                Expect::Consume { head, slots: 1, terminated: true }
            }
            Model::Packed(m) => {
                let st = packed_state(&self.q);
                let flags = rd16(&self.mem, m.desc + 16 * u64::from(st.next_avail) + 14);
                let avail = flags & PACKED_DESC_F_AVAIL != 0;
                let used = flags & PACKED_DESC_F_USED != 0;
                let available = avail == st.avail_wrap && used != st.avail_wrap;
                let Virtqueue::Packed(q) = &self.q else { unreachable!("packed") };
                assert_eq!(q.has_available(&self.mem), Ok(available));
                if !available {
                    return Expect::Empty;
                }
                let (mut slot, mut slots) = (st.next_avail, 0u16);
                let (terminated, id) = loop {
                    let raw = rd_desc(&self.mem, m.desc + 16 * u64::from(slot));
                    slots += 1;
                    let id = u16::from_le_bytes([raw[12], raw[13]]);
                    slot = (slot + 1) % size;
                    if u16::from_le_bytes([raw[14], raw[15]]) & DESC_F_NEXT == 0 {
                        break (true, id);
                    }
                    if slots >= size {
                        break (false, id);
                    }
                };
                let in_flight: u32 = m.in_flight.iter().map(|&(_, s)| u32::from(s)).sum();
                if in_flight + u32::from(slots) > u32::from(size) {
                    return Expect::Refused(QueueError::InFlightOverflow { size });
                }
                // A buffer id still in flight names no new chain (virtio 1.2 §2.8.6).
                if m.in_flight.iter().any(|&(i, _)| i == id) {
                    return Expect::Refused(QueueError::IdInFlight { id });
                }
                Expect::Consume { head: id, slots, terminated }
            }
        }
    }

    /// Pops one chain and checks it against the model; false when nothing was consumed.
    pub(super) fn pop(&mut self, mode: u8) -> bool {
        if self.pops >= MAX_POPS {
            return false;
        }
        self.pops += 1;
        let expect = self.expect_pop();
        let (split_before, packed_before) = match &self.model {
            Model::Split(_) => (Some(split_state(&self.q)), None),
            Model::Packed(_) => (None, Some(packed_state(&self.q))),
        };
        let avail_event_at = match &self.model {
            Model::Split(m) => Some(m.used + 4 + 8 * u64::from(self.size)),
            Model::Packed(_) => None,
        };
        let avail_event_before = avail_event_at.map(|at| rd16(&self.mem, at));
        // Through the rings found once (a serving turn's view) or each access on its own.
        let result = if mode & 0x10 != 0 {
            let view = self.q.view(&self.mem);
            self.q.pop(&view)
        } else {
            self.q.pop(&self.mem)
        };
        let (head, slots, terminated) = match expect {
            Expect::Empty => {
                assert_eq!(result, Ok(None), "nothing was available");
                self.assert_unchanged(split_before, packed_before);
                return false;
            }
            Expect::Refused(e) => {
                assert_eq!(result, Err(e));
                self.assert_unchanged(split_before, packed_before);
                return false;
            }
            Expect::Consume { head, slots, terminated } => (head, slots, terminated),
        };
        let size = self.size;
        match &mut self.model {
            Model::Split(m) => {
                let before = split_before.expect("split state");
                let after = split_state(&self.q);
                let want = QueueState { next_avail: before.next_avail.wrapping_add(1), ..before };
                assert_eq!(after, want, "a pop consumes exactly one available entry");
                // A busy device asks for no kicks: only enabling notifications moves
                // avail_event (§2.7.10), so a pop leaves it as it was.
                let at = m.used + 4 + 8 * u64::from(size);
                assert_eq!(
                    Some(rd16(&self.mem, at)),
                    avail_event_before,
                    "a pop leaves avail_event"
                );
            }
            Model::Packed(m) => {
                let before = packed_before.expect("packed state");
                let (next_avail, avail_wrap) =
                    advance(before.next_avail, before.avail_wrap, slots, size);
                let want = PackedQueueState { next_avail, avail_wrap, ..before };
                assert_eq!(packed_state(&self.q), want, "a pop consumes the chain's slots");
                m.in_flight.push((head, slots));
                let in_flight: u32 = m.in_flight.iter().map(|&(_, s)| u32::from(s)).sum();
                assert!(in_flight <= u32::from(size), "more slots in flight than the ring has");
                if self.event_idx && m.kick_on_desc {
                    let got = u16::from_le(
                        self.mem.read_obj(GuestAddress(m.device_event)).expect("device event"),
                    );
                    assert_eq!(got, off_wrap(next_avail, avail_wrap), "device event offset");
                }
            }
        }
        match result {
            Ok(Some(chain)) => {
                self.stats.chains += 1;
                assert!(terminated, "a chain without an end was accepted");
                assert_eq!(chain.head(), head, "the chain is the one made available");
                self.check_chain(&chain);
                let mut written = 0;
                if mode & 1 != 0 {
                    self.read_chain(&chain, mode & 0x10 != 0);
                }
                if mode & 2 != 0 {
                    written = self.write_chain(&chain, mode & 0x10 != 0);
                }
                if mode & 4 != 0 {
                    self.add_used(head, written);
                } else {
                    self.hold(head, Some(chain));
                }
            }
            Ok(None) => panic!("an available chain was not consumed"),
            Err(e) => {
                self.stats.bad_chains += 1;
                if !terminated {
                    assert_eq!(e, QueueError::ChainTooLong { head, max: u32::from(size) });
                }
                assert_eq!(e.head(), Some(head), "{e}: a consumed chain's error names it");
                check_error(&e, size, self.indirect);
                // A bad chain goes back with length 0 unless the input keeps it.
                if mode & 8 == 0 {
                    self.add_used(head, 0);
                } else {
                    self.hold(head, None);
                }
            }
        }
        true
    }

    pub(super) fn assert_unchanged(
        &self,
        split: Option<QueueState>,
        packed: Option<PackedQueueState>,
    ) {
        if let Some(before) = split {
            assert_eq!(split_state(&self.q), before, "nothing consumed");
        }
        if let Some(before) = packed {
            assert_eq!(packed_state(&self.q), before, "nothing consumed");
        }
    }

    pub(super) fn hold(&mut self, head: u16, chain: Option<DescriptorChain>) {
        if self.held.len() >= MAX_HELD {
            self.return_held();
        }
        self.held.push((head, chain));
    }

    pub(super) fn return_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let (head, chain) = self.held.remove(0);
        let written = match chain {
            Some(chain) => self.write_chain(&chain, false),
            None => 0,
        };
        self.add_used(head, written);
    }

    pub(super) fn check_chain(&self, chain: &DescriptorChain) {
        let segments = chain.readable().len() + chain.writable().len();
        assert!(
            segments <= usize::from(self.size),
            "{segments} segments, queue size {}",
            self.size
        );
        let mut totals = [0u64; 2];
        for (total, part) in totals.iter_mut().zip([chain.readable(), chain.writable()]) {
            for s in part {
                assert!(in_memory(s.addr.0, u64::from(s.len)), "segment {s:?} outside memory");
                *total += u64::from(s.len);
            }
        }
        assert_eq!(totals[0], u64::from(chain.readable_len()), "readable total");
        assert_eq!(totals[1], u64::from(chain.writable_len()), "writable total");
        if let Model::Split(_) = self.model {
            assert!(chain.head() < self.size, "split head {} outside the table", chain.head());
        }
    }
}
