//! Inflight I/O tracking (INFLIGHT_SHMFD): a back-end that stops with chains in flight leaves them
//! in the shared area, and the next one, handed the same area, resubmits them in the order they
//! were fetched — for split and packed rings, after a clean stop and after a death in the middle
//! of returning a chain.

mod packed_driver;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use vhu_transport_std::vhu_core::inflight::area_size;
use vhu_transport_std::vhu_core::message::InflightDesc;
use vhu_transport_std::vhu_core::VringIndex;
use vhu_transport_std::virtq::inflight::{
    InflightArea, InflightError, InflightRegion, PackedInflight, SplitInflight,
};
use vhu_transport_std::virtq::{
    Descriptor, PackedDescriptor, QueueError, QueueState, SplitQueue, Virtqueue, DESC_F_NEXT,
    DESC_F_WRITE, PACKED_DESC_F_AVAIL, PACKED_DESC_F_USED,
};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const SIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

/// The front-end's side of the area: the memfd it keeps across back-end restarts.
struct Area {
    fd: OwnedFd,
    desc: InflightDesc,
}

impl Area {
    fn new(packed: bool) -> Self {
        let mmap_size = area_size(1, SIZE, packed);
        let fd = memfd_create("inflight-test", MemfdFlags::CLOEXEC).expect("memfd");
        ftruncate(&fd, mmap_size).expect("ftruncate");
        let desc = InflightDesc { mmap_size, mmap_offset: 0, num_queues: 1, queue_size: SIZE };
        Self { fd, desc }
    }

    /// What a (new) back-end maps from SET_INFLIGHT_FD.
    fn region(&self, packed: bool) -> InflightRegion {
        let area: Arc<InflightArea> =
            InflightArea::map(self.fd.try_clone().expect("dup"), self.desc).expect("map");
        area.region(VringIndex(0), packed).expect("queue 0 has a region")
    }
}

/// A split ring whose driver made `heads` available, one writable buffer each.
fn split_ring(heads: &[u16]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory");
    for i in 0..SIZE {
        let desc = Descriptor::new(0x4000 + 0x100 * u64::from(i), 0x100, DESC_F_WRITE, 0);
        let at = GuestAddress(DESC + 16 * u64::from(i));
        mem.write_slice(zerocopy::IntoBytes::as_bytes(&desc), at).unwrap();
    }
    for (slot, head) in heads.iter().enumerate() {
        mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * slot as u64)).unwrap();
    }
    mem.write_obj((heads.len() as u16).to_le(), GuestAddress(AVAIL + 2)).unwrap();
    mem
}

fn split_queue(mem: &GuestMemoryMmap, next_avail: u16) -> SplitQueue {
    let next_used: u16 = u16::from_le(mem.read_obj(GuestAddress(USED + 2)).unwrap());
    let state = QueueState {
        size: SIZE,
        desc_table: DESC,
        avail_ring: AVAIL,
        used_ring: USED,
        next_avail,
        next_used,
        ..QueueState::default()
    };
    SplitQueue::new(state, mem).expect("valid ring")
}

fn pop_heads(queue: &mut SplitQueue, mem: &GuestMemoryMmap, n: usize) -> Vec<u16> {
    (0..n).map(|_| queue.pop(mem).expect("pop").expect("a chain").head()).collect()
}

#[test]
fn a_restarted_split_back_end_resubmits_what_was_in_flight_in_fetch_order() {
    let area = Area::new(false);
    let mem = split_ring(&[3, 0, 7, 5]);
    let mut first = split_queue(&mem, 0);
    assert_eq!(first.track_inflight(area.region(false)).expect("attach"), 0, "a fresh area");
    assert_eq!(pop_heads(&mut first, &mem, 4), [3, 0, 7, 5]);
    // Out of order: 0 and 5 come back, 3 and 7 are still being worked on when it dies.
    first.add_used(&mem, 0, 1).expect("used");
    first.add_used(&mem, 5, 1).expect("used");
    drop(first);

    // The front-end knows nothing of the chains in flight: it restarts the ring at its used index.
    let mut second = split_queue(&mem, 2);
    assert_eq!(second.track_inflight(area.region(false)).expect("attach"), 2);
    assert_eq!(second.state().next_avail, 4, "the four chains fetched are not fetched again");
    assert_eq!(pop_heads(&mut second, &mem, 2), [3, 7], "in the order they were first fetched");
    assert!(second.pop(&mem).expect("pop").is_none());
    second.add_used(&mem, 7, 1).expect("used");
    drop(second);

    // One more restart: only 3 is left.
    let mut third = split_queue(&mem, 0);
    assert_eq!(third.track_inflight(area.region(false)).expect("attach"), 1);
    assert_eq!(pop_heads(&mut third, &mem, 1), [3]);
    third.add_used(&mem, 3, 1).expect("used");
    drop(third);
    let mut fourth = split_queue(&mem, 0);
    assert_eq!(fourth.track_inflight(area.region(false)).expect("attach"), 0);
    assert_eq!(fourth.state().next_avail, 4);
}

#[test]
fn a_split_back_end_that_died_returning_a_chain_does_not_resubmit_it() {
    let area = Area::new(false);
    let (mut tracker, resumed) =
        SplitInflight::attach(area.region(false), SIZE, 0).expect("attach");
    assert!(resumed.is_none(), "a fresh area starts over");
    tracker.fetched(4).unwrap();
    tracker.fetched(9).unwrap();
    // 9 is put on the used ring (used index 0 -> 1), but the back-end dies before clearing it.
    tracker.returning(9).unwrap();
    drop(tracker);
    let (_, resumed) = SplitInflight::attach(area.region(false), SIZE, 1).expect("attach");
    assert_eq!(resumed, Some(vec![4]));
}

#[test]
fn records_that_cannot_be_the_rings_start_over() {
    let area = Area::new(false);
    let (mut tracker, _) = SplitInflight::attach(area.region(false), SIZE, 500).expect("attach");
    tracker.fetched(2).unwrap();
    drop(tracker);
    // The guest reset its ring: the used index is 0 again; the old records are not this ring's.
    let (_, resumed) = SplitInflight::attach(area.region(false), SIZE, 0).expect("attach");
    assert!(resumed.is_none());
    let (_, resumed) = SplitInflight::attach(area.region(false), SIZE, 0).expect("attach");
    assert_eq!(resumed, Some(vec![]), "and nothing stays in flight");

    // A ring larger than the region, or a region of the other layout, is refused.
    assert!(matches!(
        SplitInflight::attach(area.region(false), SIZE * 2, 0),
        Err(InflightError::RingTooLarge { ring: 32, entries: 16 })
    ));
    let mem = split_ring(&[]);
    let mut queue = Virtqueue::from(split_queue(&mem, 0));
    assert!(matches!(
        queue.track_inflight(Area::new(true).region(true), &mem),
        Err(InflightError::Layout { .. })
    ));
}

#[test]
fn a_front_end_cannot_make_the_back_end_read_outside_the_area() {
    let area = Area::new(false);
    let map = InflightArea::map(area.fd.try_clone().unwrap(), area.desc).unwrap();
    assert!(matches!(map.region(VringIndex(1), false), Err(InflightError::NoRegion { .. })));
    // An area that claims more queues than its size holds.
    let claimed = InflightDesc { num_queues: 4, ..area.desc };
    let map = InflightArea::map(area.fd.try_clone().unwrap(), claimed).unwrap();
    assert!(map.region(VringIndex(0), false).is_ok());
    assert!(matches!(map.region(VringIndex(3), false), Err(InflightError::NoRegion { .. })));
    // An area larger than its file would fault when touched: refused.
    let larger = InflightDesc { mmap_size: area.desc.mmap_size + 4096, ..area.desc };
    let mapped = InflightArea::map(area.fd.try_clone().unwrap(), larger);
    assert!(matches!(mapped, Err(InflightError::BeyondFile { .. })), "{mapped:?}");
    let shifted = InflightDesc { mmap_offset: 4096, ..area.desc };
    let mapped = InflightArea::map(area.fd.try_clone().unwrap(), shifted);
    assert!(matches!(mapped, Err(InflightError::BeyondFile { .. })), "{mapped:?}");
    // Garbage in the records: a last batch head far outside the ring, wild counters.
    let (tracker, _) = SplitInflight::attach(area.region(false), SIZE, 0).unwrap();
    drop(tracker);
    rustix::io::pwrite(&area.fd, &0xffffu16.to_le_bytes(), 12).unwrap();
    for head in [1u64, 15] {
        let at = 16 + 16 * head;
        rustix::io::pwrite(&area.fd, &[1], at).unwrap();
        rustix::io::pwrite(&area.fd, &u64::MAX.to_le_bytes(), at + 8).unwrap();
    }
    let (_, resumed) = SplitInflight::attach(area.region(false), SIZE, 3).expect("attach");
    let resumed = resumed.expect("resumed");
    assert_eq!(resumed.len(), 2);
    assert!(resumed.iter().all(|h| *h < SIZE));
}

#[test]
fn a_restarted_packed_back_end_resubmits_from_its_copies() {
    let area = Area::new(true);
    let mut driver = packed_driver::Driver::new(SIZE);
    driver.publish(10, &[(0x4000, 0x10, 0), (0x4100, 0x20, DESC_F_WRITE)]);
    driver.publish(11, &[(0x4200, 0x30, DESC_F_WRITE)]);
    driver.publish(12, &[(0x4300, 0x40, DESC_F_WRITE)]);
    let mut first = Virtqueue::from(driver.queue(false, false));
    assert_eq!(first.track_inflight(area.region(true), &driver.mem).expect("attach"), 0);
    let ids: Vec<u16> =
        (0..3).map(|_| first.pop(&driver.mem).unwrap().expect("a chain").head()).collect();
    assert_eq!(ids, [10, 11, 12]);
    // 11 comes back first: its used descriptor overwrites slot 0, where chain 10 began.
    first.add_used(&driver.mem, 11, 0x30).expect("used");
    drop(first);
    assert_eq!(driver.read_desc(0).id.get(), 11, "slot 0 holds a used descriptor now");

    let mut second = Virtqueue::from(driver.queue(false, false));
    assert_eq!(second.track_inflight(area.region(true), &driver.mem).expect("attach"), 2);
    let chain = second.pop(&driver.mem).unwrap().expect("chain 10");
    assert_eq!(chain.head(), 10);
    let readable: Vec<(u64, u32)> = chain.readable().iter().map(|s| (s.addr.0, s.len)).collect();
    let writable: Vec<(u64, u32)> = chain.writable().iter().map(|s| (s.addr.0, s.len)).collect();
    assert_eq!((readable, writable), (vec![(0x4000, 0x10)], vec![(0x4100, 0x20)]));
    assert_eq!(second.pop(&driver.mem).unwrap().expect("chain 12").head(), 12);
    assert!(second.pop(&driver.mem).unwrap().is_none(), "nothing is fetched twice");
    second.add_used(&driver.mem, 12, 0).expect("used");
    second.add_used(&driver.mem, 10, 0).expect("used");
    match &second {
        Virtqueue::Packed(q) => {
            let state = q.state();
            assert_eq!((state.next_avail, state.next_used), (4, 4));
        }
        Virtqueue::Split(_) => unreachable!("a packed ring"),
    }
}

/// An area naming one buffer id for two chains in flight (the front-end's memory, or an older
/// back-end that took a reused id): the second is refused as a reused id, never served as the
/// first's twin.
#[test]
fn a_resubmitted_packed_chain_under_an_id_in_flight_is_refused() {
    let area = Area::new(true);
    let mut driver = packed_driver::Driver::new(SIZE);
    driver.publish(10, &[(0x4000, 0x10, DESC_F_WRITE)]);
    driver.publish(12, &[(0x4300, 0x40, DESC_F_WRITE)]);
    let mut first = Virtqueue::from(driver.queue(false, false));
    first.track_inflight(area.region(true), &driver.mem).expect("attach");
    first.pop(&driver.mem).unwrap().expect("chain 10");
    first.pop(&driver.mem).unwrap().expect("chain 12");
    drop(first);
    // The copy of chain 12 in the area now says buffer id 10: descriptor states of 32 bytes
    // from offset 32, `inflight` their first byte, `id` at 16.
    let mut bytes = vec![0u8; area.desc.mmap_size as usize];
    rustix::io::pread(&area.fd, &mut bytes, 0).expect("read the area");
    let mut renamed = 0;
    for state in bytes[32..].chunks_exact_mut(32) {
        if state[0] == 1 && state[16..18] == 12u16.to_le_bytes() {
            state[16..18].copy_from_slice(&10u16.to_le_bytes());
            renamed += 1;
        }
    }
    assert_eq!(renamed, 1, "chain 12's one descriptor");
    rustix::io::pwrite(&area.fd, &bytes, 0).expect("write the area");

    let mut second = Virtqueue::from(driver.queue(false, false));
    assert_eq!(second.track_inflight(area.region(true), &driver.mem).expect("attach"), 2);
    assert_eq!(second.pop(&driver.mem).unwrap().expect("chain 10").head(), 10);
    assert_eq!(
        second.pop(&driver.mem).map(|c| c.map(|c| c.head())),
        Err(QueueError::IdInFlight { id: 10 })
    );
}

#[test]
fn a_packed_back_end_that_died_returning_a_chain_is_rolled_back_or_forward() {
    for reached_ring in [false, true] {
        let area = Area::new(true);
        let (mut tracker, resumed) =
            PackedInflight::attach(area.region(true), SIZE, (0, true), |_| None).expect("attach");
        assert!(resumed.is_none());
        let a = [PackedDescriptor::new(0x4000, 8, 1, DESC_F_WRITE)];
        let b = [
            PackedDescriptor::new(0x5000, 8, 0, DESC_F_NEXT),
            PackedDescriptor::new(0x5100, 8, 2, DESC_F_WRITE),
        ];
        let entry_a = tracker.fetched(&a).unwrap();
        let entry_b = tracker.fetched(&b).unwrap();
        // B goes back: the used side moves by its two slots; the back-end dies before it is
        // cleared, with or without its used descriptor on the ring.
        tracker.returning(entry_b, (2, true)).unwrap();
        drop(tracker);
        let slot0 = if reached_ring {
            PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED
        } else {
            PACKED_DESC_F_AVAIL
        };
        let (_, resumed) = PackedInflight::attach(area.region(true), SIZE, (0, true), |slot| {
            (slot == 0).then_some(slot0)
        })
        .expect("attach");
        let (position, chains) = resumed.expect("resumed");
        let entries: Vec<u16> = chains.iter().map(|c| c.entry).collect();
        if reached_ring {
            assert_eq!((position, entries), ((2, true), vec![entry_a]));
        } else {
            assert_eq!((position, entries), ((0, true), vec![entry_a, entry_b]));
            assert_eq!(chains[1].descriptors, b);
        }
        assert_eq!(chains[0].descriptors, a);
    }
}
