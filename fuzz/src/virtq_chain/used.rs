//! The device side of `virtq_chain` after a pop: used entries and the notification calls, each
//! checked against what the layout says must be written to guest memory.

use vhu_transport_std::virtq::{
    PackedQueueState, QueueError, QueueState, DESC_F_WRITE, PACKED_DESC_F_AVAIL,
    PACKED_DESC_F_USED, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
};
use vm_memory::{Bytes, GuestAddress};

use super::harness::{packed_state, split_state, Harness, Model};
use super::memory::{advance, off_wrap, rd16};

impl Harness {
    pub(super) fn add_used(&mut self, head: u16, len: u32) {
        let size = self.size;
        match &mut self.model {
            Model::Split(m) => {
                let (used, before) = (m.used, split_state(&self.q));
                let result = self.q.add_used(&self.mem, head, len);
                if head >= size {
                    assert_eq!(result, Err(QueueError::UsedHeadOutOfRange { head, size }));
                    assert_eq!(split_state(&self.q), before);
                    return;
                }
                assert_eq!(result, Ok(()), "add_used of an in-range head");
                let after = split_state(&self.q);
                let next_used = before.next_used.wrapping_add(1);
                assert_eq!(after, QueueState { next_used, ..before });
                let mut elem = [0u8; 8];
                let at = used + 4 + 8 * u64::from(before.next_used % size);
                self.mem.read_slice(&mut elem, GuestAddress(at)).expect("used ring");
                assert_eq!(elem[..4], u32::from(head).to_le_bytes(), "used id");
                assert_eq!(elem[4..], len.to_le_bytes(), "used len");
                assert_eq!(rd16(&self.mem, used + 2), next_used, "used idx published");
            }
            Model::Packed(m) => {
                let before = packed_state(&self.q);
                let result = self.q.add_used(&self.mem, head, len);
                let Some(at) = m.in_flight.iter().position(|&(id, _)| id == head) else {
                    assert_eq!(result, Err(QueueError::UsedIdNotInFlight { id: head }));
                    assert_eq!(packed_state(&self.q), before);
                    return;
                };
                assert_eq!(result, Ok(()), "add_used of an in-flight id");
                let (_, slots) = m.in_flight.remove(at);
                let (next_used, used_wrap) =
                    advance(before.next_used, before.used_wrap, slots, size);
                let after = packed_state(&self.q);
                assert_eq!(after, PackedQueueState { next_used, used_wrap, ..before });
                let mut raw = [0u8; 16];
                let slot_at = m.desc + 16 * u64::from(before.next_used);
                self.mem.read_slice(&mut raw, GuestAddress(slot_at)).expect("descriptor ring");
                assert_eq!(raw[8..12], len.to_le_bytes(), "used len");
                assert_eq!(raw[12..14], head.to_le_bytes(), "used id");
                let mut flags =
                    if before.used_wrap { PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED } else { 0 };
                if len > 0 {
                    flags |= DESC_F_WRITE;
                }
                assert_eq!(raw[14..], flags.to_le_bytes(), "used flags");
            }
        }
    }

    pub(super) fn needs_notification(&mut self) {
        let result = self.q.needs_notification(&self.mem);
        let size = u64::from(self.size);
        match &mut self.model {
            Model::Split(m) => {
                let new = split_state(&self.q).next_used;
                let expect = if self.event_idx {
                    let used_event = rd16(&self.mem, m.avail + 4 + 2 * size);
                    let old = m.signalled.replace(new);
                    old.is_none_or(|old| {
                        new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old)
                    })
                } else {
                    // Nothing used since the last decision: nothing to announce.
                    let old = m.signalled.replace(new);
                    old != Some(new) && rd16(&self.mem, m.avail) & 1 == 0
                };
                assert_eq!(result, Ok(expect), "split notification decision");
            }
            Model::Packed(m) => {
                let flags = rd16(&self.mem, m.driver_event + 2) & 3;
                let notify = result.expect("validated event structures");
                let state = packed_state(&self.q);
                let new = (state.next_used, state.used_wrap);
                let nothing_new = m.signalled.replace(new) == Some(new);
                if flags == RING_EVENT_FLAGS_DISABLE || nothing_new {
                    assert!(!notify, "notified although disabled or with nothing new used");
                } else if flags != RING_EVENT_FLAGS_DESC || !self.event_idx {
                    assert!(notify, "not notified although the driver enabled it");
                }
            }
        }
    }

    pub(super) fn enable_notification(&mut self) {
        let result = self.q.enable_notification(&self.mem);
        let size = self.size;
        match &mut self.model {
            Model::Split(m) => {
                let st = split_state(&self.q);
                if self.event_idx {
                    let at = m.used + 4 + 8 * u64::from(size);
                    assert_eq!(rd16(&self.mem, at), st.next_avail, "avail_event");
                } else {
                    assert_eq!(rd16(&self.mem, m.used), 0, "used flags cleared");
                }
                let avail_idx = rd16(&self.mem, m.avail + 2);
                let pending = avail_idx.wrapping_sub(st.next_avail);
                if pending > size {
                    let next_avail = st.next_avail;
                    let jump = QueueError::AvailIdxJump { avail_idx, next_avail, pending, size };
                    assert_eq!(result, Err(jump));
                } else {
                    assert_eq!(result, Ok(pending != 0));
                }
            }
            Model::Packed(m) => {
                let st = packed_state(&self.q);
                m.kick_on_desc = self.event_idx;
                let flags = rd16(&self.mem, m.device_event + 2);
                if self.event_idx {
                    let off = rd16(&self.mem, m.device_event);
                    assert_eq!(off, off_wrap(st.next_avail, st.avail_wrap), "device event offset");
                    assert_eq!(flags, RING_EVENT_FLAGS_DESC);
                } else {
                    assert_eq!(flags, RING_EVENT_FLAGS_ENABLE);
                }
                let raw = rd16(&self.mem, m.desc + 16 * u64::from(st.next_avail) + 14);
                let avail = raw & PACKED_DESC_F_AVAIL != 0;
                let used = raw & PACKED_DESC_F_USED != 0;
                let available = avail == st.avail_wrap && used != st.avail_wrap;
                assert_eq!(result, Ok(available));
            }
        }
    }

    pub(super) fn disable_notification(&mut self) {
        let result = self.q.disable_notification(&self.mem);
        assert_eq!(result, Ok(()), "validated rings");
        match &mut self.model {
            Model::Split(m) => {
                if !self.event_idx {
                    assert_eq!(rd16(&self.mem, m.used), 1, "VIRTQ_USED_F_NO_NOTIFY");
                }
            }
            Model::Packed(m) => {
                m.kick_on_desc = false;
                assert_eq!(rd16(&self.mem, m.device_event + 2), RING_EVENT_FLAGS_DISABLE);
            }
        }
    }
}
