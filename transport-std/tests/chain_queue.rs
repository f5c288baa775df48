//! `ChainQueue`, the queue handler of devices that answer each chain on the spot: the driver
//! hears about a finished chain at once, not at the end of the batch.

use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags};
use vhu_transport_std::vhu_core::backend::VringConfig;
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::VringIndex;
use vhu_transport_std::virtq::{
    ChainQueue, ChainService, Descriptor, DescriptorChain, QueueState, Reader, SplitQueue,
    Virtqueue, Writer, DESC_F_WRITE,
};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic};
use vhu_transport_std::{LoggedMemory, Notifier, QueueContext, QueueHandler, QueueWaker};

const SIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const WAIT: Duration = Duration::from_secs(5);

/// Answers every chain with "done", except that the chain with head 1 waits for the test first.
struct Gated {
    gate: mpsc::Receiver<()>,
}

impl ChainService for Gated {
    fn serve(
        &mut self,
        chain: &DescriptorChain,
        _reader: &mut Reader<'_, LoggedMemory>,
        writer: &mut Writer<'_, LoggedMemory>,
    ) {
        if chain.head() == 1 {
            let _ = self.gate.recv_timeout(WAIT);
        }
        let _ = writer.write(b"done");
    }
}

fn counter(fd: &OwnedFd) -> u64 {
    let mut buf = [0u8; 8];
    match rustix::io::read(fd, &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

#[test]
fn a_finished_chain_is_announced_before_the_batch_ends() {
    let mem = LoggedMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory");
    for (i, addr) in [(0u16, 0x4000u64), (1, 0x5000)] {
        let desc = Descriptor::new(addr, 16, DESC_F_WRITE, 0);
        mem.write_slice(
            zerocopy::IntoBytes::as_bytes(&desc),
            GuestAddress(DESC + 16 * u64::from(i)),
        )
        .unwrap();
        mem.write_obj(i.to_le(), GuestAddress(AVAIL + 4 + 2 * u64::from(i))).unwrap();
    }
    mem.write_obj(2u16.to_le(), GuestAddress(AVAIL + 2)).unwrap();
    // EVENT_IDX: the driver wants to hear once the first chain is used.
    mem.write_obj(0u16.to_le(), GuestAddress(AVAIL + 4 + 2 * u64::from(SIZE))).unwrap();
    let state = QueueState {
        size: SIZE,
        desc_table: DESC,
        avail_ring: AVAIL,
        used_ring: USED,
        event_idx: true,
        ..QueueState::default()
    };
    let ring = Virtqueue::from(SplitQueue::new(state, &mem).expect("valid ring"));
    let (open, gate) = mpsc::channel();
    let mut handler = ChainQueue::new(ring, Gated { gate });
    let call_fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
    let call = Notifier::new();
    call.set(Some(call_fd.try_clone().unwrap()));
    let config = VringConfig {
        size: SIZE,
        descriptor: DESC,
        available: AVAIL,
        used: USED,
        log: None,
        base: VringBase::split(0),
        packed: false,
        event_idx: true,
        big_endian: false,
        iova: false,
    };
    let ctx = QueueContext {
        index: VringIndex(0),
        config,
        memory: GuestMemoryAtomic::new(mem.clone()),
        call,
        err: Notifier::new(),
        waker: QueueWaker::detached().unwrap(),
    };
    let worker = std::thread::spawn(move || {
        handler.process(&ctx);
        handler
    });
    // The second chain is still being served; the first was announced already.
    let deadline = Instant::now() + WAIT;
    let mut heard = 0;
    while heard == 0 && Instant::now() < deadline {
        heard = counter(&call_fd);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(heard >= 1, "the first chain was not announced while the second was served");
    let used_idx: u16 = u16::from_le(mem.read_obj(GuestAddress(USED + 2)).unwrap());
    assert_eq!(used_idx, 1, "exactly the first chain is used so far");
    open.send(()).unwrap();
    let handler = worker.join().expect("no panic");
    let used_idx: u16 = u16::from_le(mem.read_obj(GuestAddress(USED + 2)).unwrap());
    assert_eq!(used_idx, 2);
    assert_eq!(handler.base(), VringBase::split(2));
}
