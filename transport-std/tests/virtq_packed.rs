//! Packed virtqueue tests with rings built in test guest memory: buffers, wrap-around, event
//! suppression and a FUSE request end to end.

mod packed_driver;

use packed_driver::{Driver, Used, DEVICE_EVENT, DRIVER_EVENT, TABLE};
use vhu_transport_std::virtq::{
    packed_used_flags, PackedQueue, PackedQueueState, QueueError, Reader, Writer, DESC_F_INDIRECT,
    DESC_F_WRITE, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[test]
fn simple_and_chained_buffers_used_out_of_order() {
    let mut d = Driver::new(8);
    d.mem.write_slice(b"request!", GuestAddress(0x4000)).expect("payload");
    d.publish(7, &[(0x5000, 32, DESC_F_WRITE)]);
    d.publish(9, &[(0x4000, 4, 0), (0x4004, 4, 0), (0x6000, 16, DESC_F_WRITE)]);
    let mut q = d.queue(false, false);
    let one = q.pop(&d.mem).expect("valid").expect("first chain");
    assert_eq!(one.head(), 7);
    assert_eq!((one.readable_len(), one.writable_len()), (0, 32));
    let three = q.pop(&d.mem).expect("valid").expect("second chain");
    assert_eq!(three.head(), 9, "the id of the last descriptor");
    assert_eq!((three.readable().len(), three.writable().len()), (2, 1));
    assert_eq!(q.pop(&d.mem), Ok(None));
    assert_eq!((q.state().next_avail, q.state().avail_wrap), (4, true));

    let mut reader = Reader::new(&d.mem, &three);
    let mut buf = [0u8; 10];
    assert_eq!(reader.read(&mut buf).expect("read"), 8);
    assert_eq!(&buf[..8], b"request!");
    let mut writer = Writer::new(&d.mem, &three);
    assert_eq!(writer.write(b"reply").expect("write"), 5);

    // The second chain completes first: its used descriptor takes slot 0 and skips 3 slots.
    q.add_used(&d.mem, 9, 5).expect("used");
    assert_eq!(q.state().next_used, 3);
    q.add_used(&d.mem, 7, 0).expect("used");
    assert_eq!(q.state().next_used, 4);
    let wrap_flags = packed_used_flags(true);
    assert_eq!(d.take_used(), Some(Used { id: 9, len: 5, flags: wrap_flags | DESC_F_WRITE }));
    assert_eq!(d.take_used(), Some(Used { id: 7, len: 0, flags: wrap_flags }));
    assert_eq!(d.take_used(), None);
    assert_eq!(q.add_used(&d.mem, 7, 0), Err(QueueError::UsedIdNotInFlight { id: 7 }));
}

#[test]
fn indirect_table() {
    let mut d = Driver::new(8);
    d.table_desc(TABLE, 0, 0x4000, 40, 0);
    d.table_desc(TABLE, 1, 0x4100, 8, 0);
    d.table_desc(TABLE, 2, 0x5000, 4096, DESC_F_WRITE);
    d.publish(3, &[(TABLE, 48, DESC_F_INDIRECT)]);
    let mut q = d.queue(false, true);
    let chain = q.pop(&d.mem).expect("valid").expect("chain");
    assert_eq!(chain.head(), 3);
    assert_eq!((chain.readable().len(), chain.writable().len()), (2, 1));
    assert_eq!((chain.readable_len(), chain.writable_len()), (48, 4096));
    assert_eq!(q.state().next_avail, 1, "an indirect chain takes one ring slot");
    q.add_used(&d.mem, 3, 100).expect("used");
    assert_eq!(d.take_used().map(|u| (u.id, u.len)), Some((3, 100)));
}

#[test]
fn both_wrap_counters_over_several_laps_of_a_size_5_ring() {
    let mut d = Driver::new(5);
    let mut q = d.queue(false, true);
    let mut laps = 0;
    for round in 0u16..40 {
        // Chains of 1, 2 and 3 descriptors, so they straddle the end of the ring in turn.
        let n = 1 + round % 3;
        let mut bufs = vec![(0x4000 + 64 * u64::from(round), 8, 0)];
        bufs.extend((1..n).map(|i| (0x8000 + 64 * u64::from(i), 16, DESC_F_WRITE)));
        let before = q.state().avail_wrap;
        d.publish(100 + round, &bufs);
        let chain = q.pop(&d.mem).expect("valid").expect("chain");
        assert_eq!(chain.head(), 100 + round);
        assert_eq!(chain.readable_len(), 8);
        assert_eq!(chain.writable_len(), 16 * u32::from(n - 1));
        assert_eq!(q.pop(&d.mem), Ok(None), "round {round}: nothing else is available");
        if q.state().avail_wrap != before {
            laps += 1;
        }
        q.add_used(&d.mem, chain.head(), u32::from(round)).expect("used");
        let used = d.take_used().expect("the driver sees the used descriptor");
        assert_eq!((used.id, used.len), (100 + round, u32::from(round)));
        assert_eq!(d.take_used(), None);
        let s = q.state();
        assert_eq!((s.next_avail, s.avail_wrap), (d.next, d.wrap), "round {round}");
        assert_eq!((s.next_used, s.used_wrap), (d.used_next, d.used_wrap), "round {round}");
    }
    assert!(laps >= 10, "{laps} laps");
}

#[test]
fn a_resumed_ring_starts_at_its_base() {
    let mut d = Driver::new(5);
    d.resume_at(3, false);
    d.publish(1, &[(0x4000, 8, 0), (0x4100, 8, 0), (0x5000, 8, DESC_F_WRITE)]);
    let mut q = d.queue(false, false);
    let chain = q.pop(&d.mem).expect("valid").expect("chain");
    assert_eq!((chain.head(), chain.readable_len()), (1, 16));
    q.add_used(&d.mem, 1, 8).expect("used");
    let s = q.state();
    assert_eq!((s.next_avail, s.avail_wrap, s.next_used, s.used_wrap), (1, true, 1, true));
    let used = d.take_used().expect("used");
    assert_eq!((used.id, used.flags), (1, packed_used_flags(false) | DESC_F_WRITE));
    // A descriptor left over from the previous lap is not available.
    let mut fresh = Driver::new(5);
    fresh.publish(1, &[(0x4000, 8, 0)]);
    let state = PackedQueueState { avail_wrap: false, ..fresh.state(false, false) };
    let mut q = PackedQueue::new(state, &fresh.mem).expect("queue");
    assert_eq!(q.pop(&fresh.mem), Ok(None));
}

#[test]
fn driver_event_suppression_decisions() {
    let mut d = Driver::new(5);
    for id in 0..5 {
        d.publish(id, &[(0x5000, 8, DESC_F_WRITE)]);
    }
    let mut q = d.queue(true, false);
    fn step(mem: &GuestMemoryMmap, q: &mut PackedQueue) {
        let c = q.pop(mem).expect("valid").expect("chain");
        q.add_used(mem, c.head(), 0).expect("used");
    }
    // ENABLE and DISABLE.
    d.driver_event(0, RING_EVENT_FLAGS_ENABLE);
    step(&d.mem, &mut q);
    assert!(q.needs_notification(&d.mem).expect("notify"));
    assert!(!q.needs_notification(&d.mem).expect("notify"), "nothing used since");
    d.driver_event(0, RING_EVENT_FLAGS_DISABLE);
    step(&d.mem, &mut q);
    assert!(!q.needs_notification(&d.mem).expect("notify"));
    // DESC: notify once the used position passes slot 3 with wrap counter set.
    d.driver_event(3 | 0x8000, RING_EVENT_FLAGS_DESC);
    step(&d.mem, &mut q);
    assert!(!q.needs_notification(&d.mem).expect("notify"), "slot 2 written, event at 3");
    step(&d.mem, &mut q);
    assert!(q.needs_notification(&d.mem).expect("notify"), "slot 3 written");
    step(&d.mem, &mut q);
    assert!(!q.needs_notification(&d.mem).expect("notify"), "slot 4 written");
    assert_eq!((q.state().next_used, q.state().used_wrap), (0, false));
    // Across the end of the ring: an event at slot 1 of the next lap.
    for id in 0..2 {
        d.publish(id, &[(0x5000, 8, DESC_F_WRITE)]);
    }
    d.driver_event(1, RING_EVENT_FLAGS_DESC);
    step(&d.mem, &mut q);
    assert!(!q.needs_notification(&d.mem).expect("notify"));
    step(&d.mem, &mut q);
    assert!(q.needs_notification(&d.mem).expect("notify"), "slot 1 of lap 2 written");

    // Without EVENT_IDX, DESC counts as ENABLE.
    let mut d = Driver::new(5);
    d.publish(0, &[(0x5000, 8, DESC_F_WRITE)]);
    d.publish(1, &[(0x5000, 8, DESC_F_WRITE)]);
    let mut q = d.queue(false, false);
    let c = q.pop(&d.mem).expect("valid").expect("chain");
    q.add_used(&d.mem, c.head(), 0).expect("used");
    q.needs_notification(&d.mem).expect("notify");
    d.driver_event(4 | 0x8000, RING_EVENT_FLAGS_DESC);
    let c = q.pop(&d.mem).expect("valid").expect("chain");
    q.add_used(&d.mem, c.head(), 0).expect("used");
    assert!(q.needs_notification(&d.mem).expect("notify"));
}

#[test]
fn device_event_suppression() {
    let mut d = Driver::new(5);
    let mut q = d.queue(false, false);
    q.disable_notification(&d.mem).expect("disable");
    assert_eq!(d.u16_at(DEVICE_EVENT + 2), RING_EVENT_FLAGS_DISABLE);
    assert!(!q.enable_notification(&d.mem).expect("enable"));
    assert_eq!(d.u16_at(DEVICE_EVENT + 2), RING_EVENT_FLAGS_ENABLE);
    d.publish(0, &[(0x4000, 8, 0)]);
    assert!(q.enable_notification(&d.mem).expect("enable"), "work arrived meanwhile");

    // With EVENT_IDX: DESC mode naming the next available slot, kept current by pop.
    let mut d = Driver::new(5);
    d.resume_at(4, true);
    let mut q = d.queue(true, false);
    assert!(!q.enable_notification(&d.mem).expect("enable"));
    assert_eq!(d.u16_at(DEVICE_EVENT + 2), RING_EVENT_FLAGS_DESC);
    assert_eq!(d.u16_at(DEVICE_EVENT), 4 | 0x8000);
    d.publish(0, &[(0x4000, 8, 0)]);
    q.pop(&d.mem).expect("valid").expect("chain");
    assert_eq!(d.u16_at(DEVICE_EVENT), 0, "slot 0 of the next lap (wrap counter clear)");
    q.disable_notification(&d.mem).expect("disable");
    assert_eq!(d.u16_at(DEVICE_EVENT + 2), RING_EVENT_FLAGS_DISABLE);
    d.publish(1, &[(0x4000, 8, 0)]);
    q.pop(&d.mem).expect("valid").expect("chain");
    assert_eq!(d.u16_at(DEVICE_EVENT), 0, "not updated while disabled");
    assert_eq!(d.u16_at(DRIVER_EVENT + 2), 0, "the driver's structure is never written");
}
