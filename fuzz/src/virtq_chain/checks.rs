//! Error checks of `virtq_chain`: the rules a queue's construction must enforce, and the facts
//! every error after construction must state truly.

use vhu_transport_std::virtq::{PackedQueueState, QueueError, QueueState, Ring, MAX_QUEUE_SIZE};

use super::memory::in_memory;

/// Every error names something that really is wrong.
pub(super) fn check_error(e: &QueueError, size: u16, indirect: bool) {
    assert!(!e.to_string().is_empty());
    match *e {
        QueueError::Memory { addr, len } => {
            panic!("memory error [{addr:#x}, +{len:#x}) on fixed memory and validated rings")
        }
        QueueError::BufferOutOfRange { addr, len, .. } => {
            assert!(!in_memory(addr, u64::from(len)), "{e}: the buffer is in memory");
        }
        QueueError::IndexOutOfRange { index, table_len, .. } => {
            assert!(index >= table_len, "{e}: the index is in range");
        }
        QueueError::ChainTooLong { max, .. } => assert_eq!(max, u32::from(size), "{e}"),
        QueueError::IndirectLength { len, .. } => {
            assert!(len == 0 || len % 16 != 0, "{e}: the length is valid");
        }
        QueueError::IndirectNotNegotiated { .. } => assert!(!indirect, "{e}: it was negotiated"),
        QueueError::InFlightOverflow { size: s } => assert_eq!(s, size, "{e}"),
        QueueError::InvalidSize(_)
        | QueueError::Misaligned { .. }
        | QueueError::RingOutOfRange { .. }
        | QueueError::BaseOutOfRange { .. } => panic!("construction error {e} after construction"),
        _ => {}
    }
}

/// Checks a construction result against the model's list of violated rules.
pub(super) fn check_new<Q>(result: Result<Q, QueueError>, violations: &[QueueError]) -> Option<Q> {
    match result {
        Ok(q) => {
            assert!(violations.is_empty(), "accepted although {violations:?}");
            Some(q)
        }
        Err(e) => {
            assert!(violations.contains(&e), "{e} is not among {violations:?}");
            None
        }
    }
}

pub(super) fn ring_violations(
    out: &mut Vec<QueueError>,
    ring: Ring,
    addr: u64,
    align: u64,
    len: u64,
) {
    if addr % align != 0 {
        out.push(QueueError::Misaligned { ring, addr, align });
    }
    if !in_memory(addr, len) {
        out.push(QueueError::RingOutOfRange { ring, addr, len });
    }
}

pub(super) fn split_violations(s: &QueueState) -> Vec<QueueError> {
    let mut out = Vec::new();
    if s.size == 0 || s.size > MAX_QUEUE_SIZE || !s.size.is_power_of_two() {
        out.push(QueueError::InvalidSize(s.size));
        return out;
    }
    let n = u64::from(s.size);
    ring_violations(&mut out, Ring::Descriptors, s.desc_table, 16, 16 * n);
    ring_violations(&mut out, Ring::Available, s.avail_ring, 2, 6 + 2 * n);
    ring_violations(&mut out, Ring::Used, s.used_ring, 4, 6 + 8 * n);
    out
}

pub(super) fn packed_violations(s: &PackedQueueState) -> Vec<QueueError> {
    let mut out = Vec::new();
    if s.size == 0 || s.size > MAX_QUEUE_SIZE {
        out.push(QueueError::InvalidSize(s.size));
        return out;
    }
    for index in [s.next_avail, s.next_used] {
        if index >= s.size {
            out.push(QueueError::BaseOutOfRange { index, size: s.size });
        }
    }
    ring_violations(&mut out, Ring::Descriptors, s.desc_ring, 16, 16 * u64::from(s.size));
    ring_violations(&mut out, Ring::DriverEvent, s.driver_event, 4, 4);
    ring_violations(&mut out, Ring::DeviceEvent, s.device_event, 4, 4);
    out
}
