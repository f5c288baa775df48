//! Packed virtqueue tests for what an untrusted driver can get wrong: each case is a typed error,
//! and a bad chain is consumed so the ring goes on.

mod packed_driver;

use packed_driver::{Buf, Driver, Used, TABLE};
use vhu_transport_std::virtq::{
    PackedQueue, PackedQueueState, QueueError, Ring, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const ID: u16 = 77;

/// Publishes `bufs` as chain `ID` on a fresh size-`size` ring and returns the pop error.
fn pop_err(d: &mut Driver, bufs: &[Buf], indirect: bool) -> QueueError {
    d.publish(ID, bufs);
    let mut q = d.queue(false, indirect);
    let err = q.pop(&d.mem).expect_err("malformed chain");
    assert_eq!(err.head(), Some(ID), "{err}: names the chain");
    assert_eq!((q.state().next_avail, q.state().avail_wrap), (d.next, d.wrap), "{err}: consumed");
    err
}

#[test]
fn malformed_buffers() {
    let mut d = Driver::new(5);
    assert_eq!(
        pop_err(&mut d, &[(0x4000, 8, 0), (0xffff_0000, 8, 0)], false),
        QueueError::BufferOutOfRange { head: ID, addr: 0xffff_0000, len: 8 }
    );
    let mut d = Driver::new(5);
    assert_eq!(
        pop_err(&mut d, &[(u64::MAX - 3, 16, 0)], false),
        QueueError::BufferOutOfRange { head: ID, addr: u64::MAX - 3, len: 16 },
        "addr + len overflows"
    );
    let mut d = Driver::new(5);
    assert_eq!(
        pop_err(&mut d, &[(0xfff0, 0x20, DESC_F_WRITE)], false),
        QueueError::BufferOutOfRange { head: ID, addr: 0xfff0, len: 0x20 },
        "straddles the end of memory"
    );
    // Readable after writable; the index is the ring slot.
    let mut d = Driver::new(5);
    d.resume_at(3, true);
    assert_eq!(
        pop_err(&mut d, &[(0x4000, 8, DESC_F_WRITE), (0x5000, 8, 0)], false),
        QueueError::ReadableAfterWritable { head: ID, index: 4 }
    );
}

#[test]
fn lengths_overflowing_u32() {
    // A large region that is mapped but never touched.
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10000),
        (GuestAddress(0x1_0000_0000), 0x8000_0000),
    ]) else {
        return;
    };
    let mut d = Driver::with_memory(mem, 5);
    let big = (0x1_0000_0000, 0x6000_0000, DESC_F_WRITE);
    assert_eq!(pop_err(&mut d, &[big, big, big], false), QueueError::LengthOverflow { head: ID });
}

#[test]
fn chains_longer_than_the_queue() {
    // Every descriptor of the ring has NEXT: a lap is consumed and the last id names it.
    let mut d = Driver::new(5);
    let bufs = [(0x4000, 8, DESC_F_NEXT); 5];
    d.publish_raw(ID, &bufs, false);
    let mut q = d.queue(false, true);
    assert_eq!(q.pop(&d.mem), Err(QueueError::ChainTooLong { head: ID, max: 5 }));
    assert_eq!((q.state().next_avail, q.state().avail_wrap), (0, false));
    q.add_used(&d.mem, ID, 0).expect("return the bad chain");
    assert_eq!(d.take_used(), Some(Used { id: ID, len: 0, flags: 0x8080 }));
    assert_eq!((q.state().next_used, q.state().used_wrap), (0, false));
    d.publish(1, &[(0x4000, 8, 0)]);
    assert_eq!(q.pop(&d.mem).expect("valid").expect("the ring goes on").head(), 1);

    // An indirect table with more entries than the queue size, alone or after direct ones.
    let mut d = Driver::new(5);
    assert_eq!(
        pop_err(&mut d, &[(TABLE, 16 * 6, DESC_F_INDIRECT)], true),
        QueueError::ChainTooLong { head: ID, max: 5 }
    );
    let mut d = Driver::new(5);
    for i in 0..4 {
        d.table_desc(TABLE, i, 0x4000, 8, 0);
    }
    assert_eq!(
        pop_err(&mut d, &[(0x4000, 8, 0), (0x4000, 8, 0), (TABLE, 16 * 4, DESC_F_INDIRECT)], true),
        QueueError::ChainTooLong { head: ID, max: 5 }
    );
}

#[test]
fn malformed_indirect_descriptors() {
    // Nested indirect.
    let mut d = Driver::new(5);
    d.table_desc(TABLE, 0, 0x4000, 8, 0);
    d.table_desc(TABLE, 1, TABLE, 32, DESC_F_INDIRECT);
    assert_eq!(
        pop_err(&mut d, &[(TABLE, 32, DESC_F_INDIRECT)], true),
        QueueError::NestedIndirect { head: ID, index: 1 }
    );
    // INDIRECT with NEXT.
    let mut d = Driver::new(5);
    assert_eq!(
        pop_err(&mut d, &[(TABLE, 32, DESC_F_INDIRECT), (0x4000, 8, 0)], true),
        QueueError::IndirectWithNext { head: ID, index: 0 }
    );
    // Table lengths that are not a non-zero multiple of 16.
    for len in [0, 17] {
        let mut d = Driver::new(5);
        assert_eq!(
            pop_err(&mut d, &[(TABLE, len, DESC_F_INDIRECT)], true),
            QueueError::IndirectLength { head: ID, len }
        );
    }
    // Not negotiated.
    let mut d = Driver::new(5);
    assert_eq!(
        pop_err(&mut d, &[(TABLE, 32, DESC_F_INDIRECT)], false),
        QueueError::IndirectNotNegotiated { head: ID }
    );
    // The table outside guest memory, or overflowing the address space.
    let mut d = Driver::new(5);
    assert_eq!(
        pop_err(&mut d, &[(0xfff0, 32, DESC_F_INDIRECT)], true),
        QueueError::BufferOutOfRange { head: ID, addr: 0xfff0, len: 32 }
    );
    let mut d = Driver::new(5);
    assert!(matches!(
        pop_err(&mut d, &[(u64::MAX - 15, 32, DESC_F_INDIRECT)], true),
        QueueError::BufferOutOfRange { .. }
    ));
    // Readable after writable inside the table: the index is the table entry.
    let mut d = Driver::new(5);
    d.table_desc(TABLE, 0, 0x5000, 8, DESC_F_WRITE);
    d.table_desc(TABLE, 1, 0x4000, 8, 0);
    assert_eq!(
        pop_err(&mut d, &[(TABLE, 32, DESC_F_INDIRECT)], true),
        QueueError::ReadableAfterWritable { head: ID, index: 1 }
    );
}

#[test]
fn a_bad_chain_is_consumed_and_the_queue_goes_on() {
    let mut d = Driver::new(5);
    d.publish(1, &[(0xffff_0000, 8, 0), (0x5000, 8, DESC_F_WRITE)]);
    d.publish(2, &[(0x4000, 8, 0)]);
    let mut q = d.queue(false, false);
    let err = q.pop(&d.mem).expect_err("out of range");
    assert_eq!(err.head(), Some(1));
    q.add_used(&d.mem, 1, 0).expect("return the bad chain");
    let chain = q.pop(&d.mem).expect("valid").expect("next chain");
    assert_eq!(chain.head(), 2);
    q.add_used(&d.mem, 2, 0).expect("used");
    assert_eq!(d.take_used().map(|u| (u.id, u.len)), Some((1, 0)));
    assert_eq!(d.take_used().map(|u| u.id), Some(2));
}

#[test]
fn more_in_flight_than_the_ring_holds() {
    let mut d = Driver::new(5);
    let mut q = d.queue(false, false);
    d.publish(1, &[(0x4000, 8, 0); 3]);
    d.publish(2, &[(0x4000, 8, 0); 2]);
    assert!(q.pop(&d.mem).expect("valid").is_some());
    assert!(q.pop(&d.mem).expect("valid").is_some());
    // The driver reuses slots the device has not returned.
    d.publish(3, &[(0x4000, 8, 0)]);
    assert_eq!(q.pop(&d.mem), Err(QueueError::InFlightOverflow { size: 5 }));
    assert_eq!(QueueError::InFlightOverflow { size: 5 }.head(), None);
    assert_eq!((q.state().next_avail, q.state().avail_wrap), (0, false), "nothing consumed");
    // Once a chain is returned (its used descriptor overwrites slot 0), there is room again.
    q.add_used(&d.mem, 1, 0).expect("used");
    (d.next, d.wrap) = (0, false);
    d.publish(3, &[(0x4000, 8, 0)]);
    assert_eq!(q.pop(&d.mem).expect("valid").expect("room again").head(), 3);
    assert_eq!(q.add_used(&d.mem, 9, 0), Err(QueueError::UsedIdNotInFlight { id: 9 }));
}

/// A buffer id reused while its chain is in flight (virtio 1.2 §2.8.6) is refused without
/// consuming anything: returned by id, the two chains could not be told apart.
#[test]
fn a_buffer_id_in_flight_is_not_taken_again() {
    let mut d = Driver::new(8);
    let mut q = d.queue(false, false);
    d.publish(5, &[(0x4000, 8, 0); 3]);
    d.publish(5, &[(0x5000, 8, 0)]);
    assert_eq!(q.pop(&d.mem).expect("valid").expect("first chain").head(), 5);
    assert_eq!(q.pop(&d.mem), Err(QueueError::IdInFlight { id: 5 }));
    assert_eq!(QueueError::IdInFlight { id: 5 }.head(), None, "the ring is broken");
    assert_eq!((q.state().next_avail, q.state().avail_wrap), (3, true), "nothing consumed");
    // The first chain is returned whole: its three slots.
    q.add_used(&d.mem, 5, 0).expect("used");
    assert_eq!((q.state().next_used, q.state().used_wrap), (3, true));
}

#[test]
fn queue_setup_is_validated() {
    let d = Driver::new(5);
    let base = d.state(false, false);
    let new = |s: PackedQueueState| PackedQueue::new(s, &d.mem).err();
    for size in [0, 32769, u16::MAX] {
        assert_eq!(new(PackedQueueState { size, ..base }), Some(QueueError::InvalidSize(size)));
    }
    for size in [1, 3, 5, 7, 100] {
        assert_eq!(new(PackedQueueState { size, ..base }), None, "any size up to 32768");
    }
    assert_eq!(
        new(PackedQueueState { next_avail: 5, ..base }),
        Some(QueueError::BaseOutOfRange { index: 5, size: 5 })
    );
    assert_eq!(
        new(PackedQueueState { next_used: 0x7fff, ..base }),
        Some(QueueError::BaseOutOfRange { index: 0x7fff, size: 5 })
    );
    assert_eq!(
        new(PackedQueueState { desc_ring: 8, ..base }),
        Some(QueueError::Misaligned { ring: Ring::Descriptors, addr: 8, align: 16 })
    );
    assert_eq!(
        new(PackedQueueState { driver_event: 0x1002, ..base }),
        Some(QueueError::Misaligned { ring: Ring::DriverEvent, addr: 0x1002, align: 4 })
    );
    assert_eq!(
        new(PackedQueueState { device_event: 0x10000, ..base }),
        Some(QueueError::RingOutOfRange { ring: Ring::DeviceEvent, addr: 0x10000, len: 4 })
    );
    assert_eq!(
        new(PackedQueueState { device_event: u64::MAX - 3, ..base }),
        Some(QueueError::RingOutOfRange { ring: Ring::DeviceEvent, addr: u64::MAX - 3, len: 4 })
    );
    assert_eq!(
        new(PackedQueueState { size: 32768, ..base }),
        Some(QueueError::RingOutOfRange { ring: Ring::Descriptors, addr: 0, len: 16 * 32768 })
    );
    assert_eq!(new(PackedQueueState { device_event: 0xfffc, ..base }), None, "last 4 bytes");
}
