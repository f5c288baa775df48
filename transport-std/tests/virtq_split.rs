//! Split virtqueue tests with rings built in test guest memory.

use vhu_transport_std::virtq::{
    Descriptor, QueueError, QueueState, Reader, Ring, SplitQueue, Virtqueue, Writer,
    AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

const SIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const TABLE: u64 = 0x3000;

struct TestRing {
    mem: GuestMemoryMmap,
    avail_idx: u16,
}

impl TestRing {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("test memory");
        Self { mem, avail_idx: 0 }
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.desc_at(DESC, i, addr, len, flags, next);
    }

    fn desc_at(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = Descriptor::new(addr, len, flags, next);
        self.mem
            .write_slice(d.as_bytes(), GuestAddress(table + 16 * u64::from(i)))
            .expect("descriptor write");
    }

    fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % SIZE);
        self.mem
            .write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * slot))
            .expect("avail ring write");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    fn set_avail_idx(&self, idx: u16) {
        self.mem.write_obj(idx.to_le(), GuestAddress(AVAIL + 2)).expect("avail idx");
    }

    fn u16_at(&self, addr: u64) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(addr)).expect("read u16"))
    }

    fn state(event_idx: bool, indirect: bool) -> QueueState {
        QueueState {
            size: SIZE,
            desc_table: DESC,
            avail_ring: AVAIL,
            used_ring: USED,
            event_idx,
            indirect,
            ..QueueState::default()
        }
    }

    fn queue(&self, event_idx: bool) -> SplitQueue {
        SplitQueue::new(Self::state(event_idx, true), &self.mem).expect("valid queue")
    }
}

#[test]
fn simple_chain_read_write_and_used() {
    let mut r = TestRing::new();
    r.mem.write_slice(b"request!", GuestAddress(0x4000)).expect("payload");
    r.desc(0, 0x4000, 4, DESC_F_NEXT, 1);
    r.desc(1, 0x4004, 4, DESC_F_NEXT, 2);
    r.desc(2, 0x5000, 16, DESC_F_WRITE, 0);
    r.publish(0);
    let mut q = r.queue(false);
    let chain = q.pop(&r.mem).expect("valid").expect("one chain");
    assert_eq!(chain.head(), 0);
    assert_eq!((chain.readable_len(), chain.writable_len()), (8, 16));
    let mut reader = Reader::new(&r.mem, &chain);
    let mut buf = [0u8; 10];
    assert_eq!(reader.read(&mut buf).expect("read"), 8, "across two descriptors");
    assert_eq!(&buf[..8], b"request!");
    let mut writer = Writer::new(&r.mem, &chain);
    assert_eq!(writer.write(b"reply").expect("write"), 5);
    assert_eq!(writer.write(&[7u8; 20]).expect("write"), 11, "clamped to the buffer");
    assert_eq!(writer.remaining(), 0);
    let mut out = [0u8; 5];
    r.mem.read_slice(&mut out, GuestAddress(0x5000)).expect("read back");
    assert_eq!(&out, b"reply");
    q.add_used(&r.mem, chain.head(), writer.written() as u32).expect("used");
    assert_eq!(r.u16_at(USED + 2), 1, "used idx published");
    let id: u32 = r.mem.read_obj(GuestAddress(USED + 4)).expect("id");
    let len: u32 = r.mem.read_obj(GuestAddress(USED + 8)).expect("len");
    assert_eq!((id, len), (0, 16));
    assert_eq!(q.pop(&r.mem).expect("valid"), None);
    assert_eq!(q.state().next_avail, 1);
    assert_eq!(q.state().next_used, 1);
}

#[test]
fn indirect_chain() {
    let mut r = TestRing::new();
    r.desc_at(TABLE, 0, 0x4000, 40, DESC_F_NEXT, 1);
    r.desc_at(TABLE, 1, 0x4100, 8, DESC_F_NEXT, 2);
    r.desc_at(TABLE, 2, 0x5000, 4096, DESC_F_WRITE, 0);
    r.desc(3, TABLE, 48, DESC_F_INDIRECT, 0);
    r.publish(3);
    let mut q = r.queue(false);
    let chain = q.pop(&r.mem).expect("valid").expect("chain");
    assert_eq!(chain.head(), 3);
    assert_eq!(chain.readable().len(), 2);
    assert_eq!(chain.writable().len(), 1);
    assert_eq!((chain.readable_len(), chain.writable_len()), (48, 4096));
}

/// An indirect table is read in place when one region holds it, and the general way when it
/// straddles two; a turn's view and plain memory find the same buffers either way.
#[test]
fn indirect_tables_in_one_region_and_across_two() {
    let ranges = [(GuestAddress(0), 0x8000), (GuestAddress(0x8000), 0x8000)];
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&ranges).expect("two regions");
    let entries =
        [(0x4000, 40, DESC_F_NEXT), (0x4100, 8, DESC_F_NEXT), (0x5000, 4096, DESC_F_WRITE)];
    // Head 0: its table at 0x6000. Head 1: its table from 0x7ff0, one entry in each region.
    for (head, table) in [(0u16, 0x6000u64), (1, 0x7ff0)] {
        for (i, (addr, len, flags)) in (0u16..).zip(entries) {
            let d = Descriptor::new(addr, len, flags, i + 1);
            let at = GuestAddress(table + 16 * u64::from(i));
            mem.write_slice(d.as_bytes(), at).expect("table entry");
        }
        let d = Descriptor::new(table, 48, DESC_F_INDIRECT, 0);
        mem.write_slice(d.as_bytes(), GuestAddress(DESC + 16 * u64::from(head))).expect("head");
        mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * u64::from(head))).expect("avail");
    }
    mem.write_obj(2u16.to_le(), GuestAddress(AVAIL + 2)).expect("avail idx");
    let expected = |chain: &vhu_transport_std::virtq::DescriptorChain| {
        let readable: Vec<_> = chain.readable().iter().map(|s| (s.addr.0, s.len)).collect();
        let writable: Vec<_> = chain.writable().iter().map(|s| (s.addr.0, s.len)).collect();
        assert_eq!(readable, [(0x4000, 40), (0x4100, 8)]);
        assert_eq!(writable, [(0x5000, 4096)]);
    };
    for through_view in [false, true] {
        let mut q = Virtqueue::from(
            SplitQueue::new(TestRing::state(false, true), &mem).expect("valid queue"),
        );
        for head in [0, 1] {
            let chain = if through_view {
                q.pop(&q.view(&mem)).expect("valid").expect("chain")
            } else {
                q.pop(&mem).expect("valid").expect("chain")
            };
            assert_eq!(chain.head(), head);
            expected(&chain);
        }
    }
}

fn pop_err(r: &mut TestRing, head: u16, indirect: bool) -> QueueError {
    r.publish(head);
    let mut q = SplitQueue::new(TestRing::state(false, indirect), &r.mem).expect("queue");
    q.pop(&r.mem).expect_err("malformed chain")
}

#[test]
fn malformed_chains_are_typed_errors() {
    // A loop.
    let mut r = TestRing::new();
    r.desc(0, 0x4000, 8, DESC_F_NEXT, 1);
    r.desc(1, 0x4000, 8, DESC_F_NEXT, 0);
    assert_eq!(pop_err(&mut r, 0, true), QueueError::Loop { head: 0, index: 0 });
    // A self loop.
    let mut r = TestRing::new();
    r.desc(5, 0x4000, 8, DESC_F_NEXT, 5);
    assert_eq!(pop_err(&mut r, 5, true), QueueError::Loop { head: 5, index: 5 });
    // Head and next out of range.
    let mut r = TestRing::new();
    assert_eq!(
        pop_err(&mut r, 16, true),
        QueueError::IndexOutOfRange { head: 16, index: 16, table_len: 16 }
    );
    let mut r = TestRing::new();
    r.desc(0, 0x4000, 8, DESC_F_NEXT, 300);
    assert_eq!(
        pop_err(&mut r, 0, true),
        QueueError::IndexOutOfRange { head: 0, index: 300, table_len: 16 }
    );
    // Buffer outside guest memory, and addr + len overflowing.
    let mut r = TestRing::new();
    r.desc(0, 0xffff_0000, 8, 0, 0);
    assert_eq!(
        pop_err(&mut r, 0, true),
        QueueError::BufferOutOfRange { head: 0, addr: 0xffff_0000, len: 8 }
    );
    let mut r = TestRing::new();
    r.desc(0, u64::MAX - 3, 16, 0, 0);
    assert!(matches!(pop_err(&mut r, 0, true), QueueError::BufferOutOfRange { .. }));
    let mut r = TestRing::new();
    r.desc(0, 0xfff0, 0x20, 0, 0);
    assert!(
        matches!(pop_err(&mut r, 0, true), QueueError::BufferOutOfRange { .. }),
        "straddles the end"
    );
    // Readable after writable.
    let mut r = TestRing::new();
    r.desc(0, 0x4000, 8, DESC_F_WRITE | DESC_F_NEXT, 1);
    r.desc(1, 0x5000, 8, 0, 0);
    assert_eq!(pop_err(&mut r, 0, true), QueueError::ReadableAfterWritable { head: 0, index: 1 });
    // Nested indirect.
    let mut r = TestRing::new();
    r.desc_at(TABLE, 0, 0x4000, 8, DESC_F_NEXT, 1);
    r.desc_at(TABLE, 1, TABLE, 32, DESC_F_INDIRECT, 0);
    r.desc(0, TABLE, 32, DESC_F_INDIRECT, 0);
    assert_eq!(pop_err(&mut r, 0, true), QueueError::NestedIndirect { head: 0, index: 1 });
    // INDIRECT with NEXT, bad indirect lengths, indirect not negotiated.
    let mut r = TestRing::new();
    r.desc(0, TABLE, 32, DESC_F_INDIRECT | DESC_F_NEXT, 1);
    assert_eq!(pop_err(&mut r, 0, true), QueueError::IndirectWithNext { head: 0, index: 0 });
    for len in [0, 17] {
        let mut r = TestRing::new();
        r.desc(0, TABLE, len, DESC_F_INDIRECT, 0);
        assert_eq!(pop_err(&mut r, 0, true), QueueError::IndirectLength { head: 0, len });
    }
    let mut r = TestRing::new();
    r.desc(0, TABLE, 32, DESC_F_INDIRECT, 0);
    assert_eq!(pop_err(&mut r, 0, false), QueueError::IndirectNotNegotiated { head: 0 });
    // An indirect table longer than the queue: chain too long.
    let mut r = TestRing::new();
    r.desc(0, TABLE, 16 * 32, DESC_F_INDIRECT, 0);
    assert_eq!(pop_err(&mut r, 0, true), QueueError::ChainTooLong { head: 0, max: 16 });
    // A loop inside an indirect table.
    let mut r = TestRing::new();
    r.desc_at(TABLE, 0, 0x4000, 8, DESC_F_NEXT, 1);
    r.desc_at(TABLE, 1, 0x4000, 8, DESC_F_NEXT, 0);
    r.desc(0, TABLE, 32, DESC_F_INDIRECT, 0);
    assert_eq!(pop_err(&mut r, 0, true), QueueError::Loop { head: 0, index: 0 });
    // Indirect table outside memory.
    let mut r = TestRing::new();
    r.desc(0, 0xffff_fff0, 32, DESC_F_INDIRECT, 0);
    assert!(matches!(pop_err(&mut r, 0, true), QueueError::BufferOutOfRange { .. }));
}

#[test]
fn a_bad_chain_is_consumed_and_the_queue_goes_on() {
    let mut r = TestRing::new();
    r.desc(0, 0x4000, 8, DESC_F_NEXT, 0);
    r.desc(1, 0x4000, 8, 0, 0);
    r.publish(0);
    r.publish(1);
    let mut q = r.queue(false);
    let err = q.pop(&r.mem).expect_err("loop");
    assert_eq!(err.head(), Some(0));
    q.add_used(&r.mem, 0, 0).expect("return the bad head");
    assert_eq!(q.pop(&r.mem).expect("valid").expect("next chain").head(), 1);
}

#[test]
fn chains_known_to_wait_are_consumed_without_reading_the_index_again() {
    let mut r = TestRing::new();
    for head in 0..3 {
        r.desc(head, 0x4000, 8, 0, 0);
        r.publish(head);
    }
    let mut q = r.queue(false);
    assert_eq!(q.known_pending(), 0, "nothing is known before the index is read");
    assert_eq!(q.pop(&r.mem).expect("valid").expect("first chain").head(), 0);
    assert_eq!(q.known_pending(), 2);
    // The index now says something no driver may say; the two chains already seen are still
    // the driver's to give (it cannot take them back), so they are served.
    r.set_avail_idx(SIZE + 40);
    assert_eq!(q.pop(&r.mem).expect("valid").expect("second chain").head(), 1);
    assert_eq!(q.pop(&r.mem).expect("valid").expect("third chain").head(), 2);
    assert_eq!(q.known_pending(), 0);
    assert!(matches!(q.pop(&r.mem), Err(QueueError::AvailIdxJump { .. })), "read again");
    // A sane index again: the ring goes on from where it was.
    r.set_avail_idx(3);
    assert!(q.pop(&r.mem).expect("valid").is_none());
}

#[test]
fn avail_idx_jump_is_refused_without_consuming() {
    let r = TestRing::new();
    r.set_avail_idx(SIZE + 1);
    let mut q = r.queue(false);
    assert_eq!(
        q.pop(&r.mem),
        Err(QueueError::AvailIdxJump { avail_idx: 17, next_avail: 0, pending: 17, size: 16 })
    );
    assert_eq!(q.state().next_avail, 0);
    // Exactly a full ring is fine.
    r.set_avail_idx(SIZE);
    assert_eq!(q.pending(&r.mem), Ok(SIZE));
    assert_eq!(
        q.add_used(&r.mem, 16, 0),
        Err(QueueError::UsedHeadOutOfRange { head: 16, size: 16 })
    );
}

#[test]
fn queue_setup_is_validated() {
    let r = TestRing::new();
    for size in [0, 3, 100] {
        let s = QueueState { size, ..TestRing::state(false, false) };
        assert_eq!(SplitQueue::new(s, &r.mem).err(), Some(QueueError::InvalidSize(size)));
    }
    let s = QueueState { size: u16::MAX, ..TestRing::state(false, false) };
    assert!(SplitQueue::new(s, &r.mem).is_err());
    let s = QueueState { desc_table: 8, ..TestRing::state(false, false) };
    assert_eq!(
        SplitQueue::new(s, &r.mem).err(),
        Some(QueueError::Misaligned { ring: Ring::Descriptors, addr: 8, align: 16 })
    );
    let s = QueueState { used_ring: 0x2002, ..TestRing::state(false, false) };
    assert!(matches!(
        SplitQueue::new(s, &r.mem),
        Err(QueueError::Misaligned { ring: Ring::Used, .. })
    ));
    let s = QueueState { avail_ring: 0xfffe, ..TestRing::state(false, false) };
    assert!(matches!(
        SplitQueue::new(s, &r.mem),
        Err(QueueError::RingOutOfRange { ring: Ring::Available, .. })
    ));
    let s = QueueState { used_ring: u64::MAX - 3, ..TestRing::state(false, false) };
    assert!(matches!(SplitQueue::new(s, &r.mem), Err(QueueError::RingOutOfRange { .. })));
}

#[test]
fn event_idx_notification_decisions() {
    let mut r = TestRing::new();
    for i in 0..8 {
        r.desc(i, 0x5000, 8, DESC_F_WRITE, 0);
    }
    let mut q = r.queue(true);
    let used_event = AVAIL + 4 + 2 * u64::from(SIZE);
    let avail_event = USED + 4 + 8 * u64::from(SIZE);
    let set_used_event = |mem: &GuestMemoryMmap, v: u16| {
        mem.write_obj(v.to_le(), GuestAddress(used_event)).expect("used_event")
    };
    r.publish(0);
    let c = q.pop(&r.mem).expect("valid").expect("chain");
    // A busy device leaves avail_event where it was: the driver need not kick while the device
    // is working anyway (§2.7.10); only a device about to wait asks for the next kick.
    assert_eq!(r.u16_at(avail_event), 0, "a pop does not ask for kicks");
    assert!(!q.enable_notification(&r.mem).expect("enable"), "nothing else is available");
    assert_eq!(r.u16_at(avail_event), 1, "waiting asks for a kick past next_avail");
    q.add_used(&r.mem, c.head(), 0).expect("used");
    set_used_event(&r.mem, 0);
    assert!(q.needs_notification(&r.mem).expect("notify"), "first decision notifies");
    q.add_used(&r.mem, 1, 0).expect("used");
    set_used_event(&r.mem, 1);
    assert!(q.needs_notification(&r.mem).expect("notify"), "used idx 1 -> 2 crosses event 1");
    q.add_used(&r.mem, 2, 0).expect("used");
    assert!(!q.needs_notification(&r.mem).expect("notify"), "2 -> 3 does not cross event 1");
    set_used_event(&r.mem, 5);
    for head in 3..6 {
        q.add_used(&r.mem, head, 0).expect("used");
    }
    assert!(q.needs_notification(&r.mem).expect("notify"), "3 -> 6 crosses event 5");
    assert!(!q.needs_notification(&r.mem).expect("notify"), "nothing new");
    // enable_notification reports pending work.
    assert!(!q.enable_notification(&r.mem).expect("enable"));
    r.publish(6);
    assert!(q.enable_notification(&r.mem).expect("enable"));
}

#[test]
fn no_interrupt_flag_without_event_idx() {
    let r = TestRing::new();
    let mut q = r.queue(false);
    q.add_used(&r.mem, 0, 0).expect("used");
    r.mem.write_obj(AVAIL_F_NO_INTERRUPT.to_le(), GuestAddress(AVAIL)).expect("flags");
    assert!(!q.needs_notification(&r.mem).expect("notify"));
    r.mem.write_obj(0u16, GuestAddress(AVAIL)).expect("flags");
    q.add_used(&r.mem, 1, 0).expect("used");
    assert!(q.needs_notification(&r.mem).expect("notify"));
    // Nothing used since: no interrupt, though the driver accepts them (a spurious one on every
    // idle turn is an interrupt with no work, which Linux may end up disabling).
    assert!(!q.needs_notification(&r.mem).expect("notify"));
    q.disable_notification(&r.mem).expect("disable");
    assert_eq!(r.u16_at(USED), 1, "VIRTQ_USED_F_NO_NOTIFY set");
    q.enable_notification(&r.mem).expect("enable");
    assert_eq!(r.u16_at(USED), 0);
}

/// Completes `n` chains through `Virtqueue::complete`, the driver asking each time to hear about
/// the next one (as a Linux guest re-arms after draining), and returns after which completions
/// (1-based) the call eventfd was signalled.
fn announced_after(r: &mut TestRing, queue: &mut Virtqueue, n: u16) -> Vec<u16> {
    use vhu_transport_std::client::eventfd;
    use vhu_transport_std::Notifier;
    let call = eventfd().expect("eventfd");
    let notifier = Notifier::new();
    notifier.set(Some(call.try_clone().expect("dup")));
    rustix::io::ioctl_fionbio(&call, true).expect("non-blocking");
    let used_event = AVAIL + 4 + 2 * u64::from(SIZE);
    let mut chains = Vec::new();
    while let Some(chain) = queue.pop(&r.mem).expect("valid") {
        chains.push(chain);
    }
    let mut signalled = Vec::new();
    for (i, chain) in chains.iter().take(usize::from(n)).enumerate() {
        // The driver handled everything announced so far and wants the next completion.
        let used = r.u16_at(USED + 2);
        r.mem.write_obj(used.to_le(), GuestAddress(used_event)).expect("used_event");
        queue.complete(&r.mem, chain.head(), 0, &notifier).expect("complete");
        if rustix::io::read(&call, &mut [0u8; 8]).is_ok() {
            signalled.push(i as u16 + 1);
        }
    }
    signalled
}

#[test]
fn completions_are_announced_in_groups_only_while_many_wait() {
    use vhu_transport_std::virtq::{MAX_HELD, MIN_WAITING};
    const { assert!(MIN_WAITING == 8 && MAX_HELD >= MIN_WAITING) };
    let mut r = TestRing::new();
    for i in 0..SIZE {
        r.desc(i, 0x5000, 8, DESC_F_WRITE, 0);
    }
    // Few in flight: every completion is announced at once.
    let mut queue: Virtqueue = r.queue(true).into();
    for head in 0..4 {
        r.publish(head);
    }
    assert_eq!(announced_after(&mut r, &mut queue, 4), [1, 2, 3, 4]);

    // The ring full: popped one by one, so chains keep waiting while the first complete. The
    // announcement waits until as many completed as still wait, and never for the last one.
    let mut r = TestRing::new();
    for i in 0..SIZE {
        r.desc(i, 0x5000, 8, DESC_F_WRITE, 0);
    }
    let mut queue: Virtqueue = r.queue(true).into();
    for head in 0..SIZE {
        r.publish(head);
    }
    let first = queue.pop(&r.mem).expect("valid").expect("chain");
    let used_event = AVAIL + 4 + 2 * u64::from(SIZE);
    let (call, notifier) = {
        let call = vhu_transport_std::client::eventfd().expect("eventfd");
        let notifier = vhu_transport_std::Notifier::new();
        notifier.set(Some(call.try_clone().expect("dup")));
        (call, notifier)
    };
    rustix::io::ioctl_fionbio(&call, true).expect("non-blocking");
    let mut signalled = Vec::new();
    let mut next = Some(first);
    let mut done = 0u16;
    while let Some(chain) = next.take() {
        let used = r.u16_at(USED + 2);
        r.mem.write_obj(used.to_le(), GuestAddress(used_event)).expect("used_event");
        queue.complete(&r.mem, chain.head(), 0, &notifier).expect("complete");
        done += 1;
        if rustix::io::read(&call, &mut [0u8; 8]).is_ok() {
            signalled.push(done);
        }
        next = queue.pop(&r.mem).expect("valid");
    }
    assert_eq!(done, SIZE);
    // The ring's first completion is announced (nothing was decided before it); the next seven
    // are held while at least MIN_WAITING wait and fewer completed than wait; from the 9th on
    // fewer than MIN_WAITING wait and each is announced, the last one included.
    assert_eq!(signalled, [1, 9, 10, 11, 12, 13, 14, 15, 16]);
}
