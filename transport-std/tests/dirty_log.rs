//! Dirty-page logging end to end: a front-end shares a log with SET_LOG_BASE and switches
//! VHOST_F_LOG_ALL on; a device writes the chains' buffers — half of them copied in through
//! `vm-memory`, half placed behind its back and then accounted with `Writer::advance`, as the
//! zero-copy `preadv` path does — and the log, read page by page, holds exactly the pages written:
//! every buffer page and the used ring, nothing the device only read, nothing while logging is off.

mod common;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;

use vhu_transport_std::client::{eventfd, Client, GuestRegion, LogBuffer, VringStart};
use vhu_transport_std::dirty::LOG_PAGE;
use vhu_transport_std::vhu_core::backend::BackendSpec;
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::virtq::{
    ChainQueue, ChainService, Descriptor, DescriptorChain, Reader, Virtqueue, Writer, DESC_F_NEXT,
    DESC_F_WRITE,
};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryMmap};
use vhu_transport_std::{
    Daemon, Device, DeviceError, Listen, LoggedMemory, Queue, QueueHandler, Workers,
};

const RAM: u64 = 0x10_0000;
const SIZE: u16 = 16;
const DESC: u64 = 0x1_0000;
const AVAIL: u64 = 0x1_1000;
const USED: u64 = 0x1_2000;
/// Where chain `i`'s buffers live: a readable request page, then writable bytes that straddle
/// page boundaries.
const BUFFERS: u64 = 0x2_0000;

/// Fills every writable byte of a chain: even heads through `Writer::write`, odd heads by
/// writing guest memory directly (as a `preadv` into host slices would) and then
/// `Writer::advance`.
struct Stamper {
    outside: GuestMemoryMmap,
}

impl ChainService for Stamper {
    fn serve(
        &mut self,
        chain: &DescriptorChain,
        _reader: &mut Reader<'_, LoggedMemory>,
        writer: &mut Writer<'_, LoggedMemory>,
    ) {
        let len = writer.remaining();
        let stamp = vec![chain.head() as u8 + 1; len];
        if chain.head() % 2 == 0 {
            assert_eq!(writer.write(&stamp).expect("copied"), len);
            return;
        }
        let mut at = 0;
        for segment in chain.writable() {
            let n = segment.len as usize;
            self.outside.write_slice(&stamp[at..at + n], segment.addr).expect("placed");
            at += n;
        }
        assert_eq!(writer.advance(len).expect("accounted"), len);
    }
}

struct Stamping {
    workers: Workers<ChainQueue<Stamper>>,
    outside: GuestMemoryMmap,
}

fn protocol() -> ProtocolFeatures {
    ProtocolFeatures::MQ | ProtocolFeatures::REPLY_ACK | ProtocolFeatures::LOG_SHMFD
}

impl Device for Stamping {
    fn spec(&self) -> BackendSpec {
        let mut spec = BackendSpec::new(1, 64);
        spec.features |= VirtioFeatures::LOG_ALL;
        spec.protocol_features = protocol();
        spec
    }

    fn start_queue(&mut self, queue: Queue) -> Result<(), DeviceError> {
        let memory = queue.memory.memory();
        let index = queue.index.0;
        let ring = Virtqueue::from_config(&queue.config, &*memory, false)
            .map_err(|reason| DeviceError::Queue { index, reason })?;
        drop(memory);
        let stamper = Stamper { outside: self.outside.clone() };
        self.workers.start(queue, ChainQueue::new(ring, stamper))
    }

    fn stop_queue(&mut self, index: VringIndex, _drain: bool) -> VringBase {
        self.workers.stop(index).map_or(VringBase(0), |h| h.base())
    }

    fn set_queue_enabled(&mut self, index: VringIndex, enabled: bool) {
        self.workers.set_enabled(index, enabled);
    }

    fn replace_kick(&mut self, index: VringIndex, kick: Option<OwnedFd>) {
        self.workers.replace_kick(index, kick);
    }

    fn kick(&mut self, index: VringIndex) {
        self.workers.kick(index);
    }

    fn reset(&mut self) {
        self.workers.stop_all();
    }
}

/// Chain `head`: a readable 64-byte request, then two writable buffers, the first straddling a
/// page boundary, the second spanning three pages. Returns the writable ranges.
fn post(ram: &GuestRegion, head: u16) -> Vec<(u64, u64)> {
    let base = BUFFERS + u64::from(head) * 0x8000;
    let parts = [
        (base, 64, DESC_F_NEXT),
        (base + 0x1000 + 0xf00, 0x200, DESC_F_WRITE | DESC_F_NEXT),
        (base + 0x3000 + 0x10, 0x2000, DESC_F_WRITE),
    ];
    let mem = ram.memory();
    for (i, (addr, len, flags)) in parts.iter().enumerate() {
        let slot = u64::from(head) * 3 + i as u64;
        let next = if flags & DESC_F_NEXT != 0 { slot as u16 + 1 } else { 0 };
        let d = Descriptor::new(*addr, *len, *flags, next);
        mem.write_slice(zerocopy::IntoBytes::as_bytes(&d), GuestAddress(DESC + 16 * slot))
            .expect("descriptor");
    }
    let avail_slot = AVAIL + 4 + 2 * u64::from(head);
    mem.write_obj((head * 3).to_le(), GuestAddress(avail_slot)).expect("avail entry");
    mem.write_obj((head + 1).to_le(), GuestAddress(AVAIL + 2)).expect("avail idx");
    parts[1..].iter().map(|(addr, len, _)| (*addr, u64::from(*len))).collect()
}

fn pages(ranges: &[(u64, u64)]) -> BTreeSet<u64> {
    ranges.iter().flat_map(|(addr, len)| addr / LOG_PAGE..=(addr + len - 1) / LOG_PAGE).collect()
}

fn used_idx(ram: &GuestRegion) -> u16 {
    u16::from_le(ram.memory().read_obj(GuestAddress(USED + 2)).expect("used idx"))
}

fn kick(fd: &OwnedFd) {
    rustix::io::write(fd, &1u64.to_ne_bytes()).expect("kick");
}

/// A daemon serving [`Stamping`] on a fresh socket, and a client connected to it that
/// negotiated LOG_SHMFD. Returns the socket's path, guest memory, how connections ended, and
/// the client.
fn serve(name: &str) -> (PathBuf, GuestRegion, mpsc::Receiver<String>, Client) {
    let path = common::socket_path(name);
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    let device = Stamping { workers: Workers::new(), outside: ram.memory().clone() };
    let mut daemon = Daemon::new(device, Listen::Path(path.clone())).expect("daemon");
    let (ended, ends) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = daemon.serve(|end| ended.send(format!("{end:?}")).is_ok());
    });
    let mut client = Client::connect(&path).expect("connect");
    client.set_timeout(common::TIMEOUT).expect("timeout");
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    let negotiated = client.handshake(features, protocol()).expect("handshake");
    assert!(negotiated.protocol_features.contains(ProtocolFeatures::LOG_SHMFD));
    (path, ram, ends, client)
}

/// Starts ring 0 at the test's addresses, with its used ring logged.
fn start_ring(client: &mut Client, ram: &GuestRegion, call: &OwnedFd, kick: &OwnedFd) {
    let user = |gpa| ram.host_address(gpa).expect("ring inside guest memory");
    let start = VringStart {
        size: SIZE,
        base: VringBase::split(0),
        descriptor: user(DESC),
        available: user(AVAIL),
        used: user(USED),
        log: Some(USED),
        call: Some(call.as_fd()),
        kick: Some(kick.as_fd()),
    };
    client.start_vring(VringIndex(0), start).expect("start");
}

#[test]
fn every_page_the_device_writes_is_marked_and_no_other() {
    let (path, ram, ends, mut client) = serve("dirty-log");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    let log = LogBuffer::new(RAM).expect("log");
    client.set_log_base(log.fd(), log.size(), 0).expect("set_log_base");
    let notify = eventfd().expect("log eventfd");
    client.set_log_fd(notify.as_fd()).expect("set_log_fd");

    // Logging off: a chain is served and nothing is marked.
    let (call, kick_fd) = (eventfd().expect("call"), eventfd().expect("kick"));
    post(&ram, 0);
    start_ring(&mut client, &ram, &call, &kick_fd);
    assert!(common::eventually(|| used_idx(&ram) == 1), "the first chain is served");
    assert_eq!(log.take_dirty(), Vec::<u64>::new(), "nothing is logged before LOG_ALL");

    // Logging on: every page written is marked, the used ring's included, nothing else.
    client.set_logging(true).expect("LOG_ALL on");
    let mut written = Vec::new();
    for head in 1..5 {
        written.extend(post(&ram, head));
    }
    kick(&kick_fd);
    assert!(common::eventually(|| used_idx(&ram) == 5), "four more chains are served");
    let mut want = pages(&written);
    want.insert(USED / LOG_PAGE);
    let got: BTreeSet<u64> = log.take_dirty().into_iter().collect();
    for page in &want {
        assert!(got.contains(page), "page {page:#x} was written but is not marked: {got:x?}");
    }
    assert_eq!(got, want, "only written pages are marked");
    assert!(common::readable(&notify), "the log eventfd was signalled");
    for head in 1..5u16 {
        let at = BUFFERS + u64::from(head) * 0x8000 + 0x3000 + 0x10 + 0x1fff;
        let byte: u8 = ram.memory().read_obj(GuestAddress(at)).expect("stamp");
        // The chain's head descriptor is slot 3 * head: heads 3 and 9 were placed, 6 and 12
        // copied.
        assert_eq!(byte, head as u8 * 3 + 1, "chain {head} was written to its end");
    }

    // Logging off again: the next chain leaves the log clean.
    client.set_logging(false).expect("LOG_ALL off");
    log.take_dirty();
    post(&ram, 5);
    kick(&kick_fd);
    assert!(common::eventually(|| used_idx(&ram) == 6), "the last chain is served");
    assert_eq!(log.take_dirty(), Vec::<u64>::new(), "nothing is logged after LOG_ALL");
    drop(client);
    assert_eq!(ends.recv_timeout(common::TIMEOUT).expect("connection ends"), "HungUp");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_log_eventfd_that_cannot_take_a_signal_stalls_nothing() {
    let (path, ram, ends, mut client) = serve("dirty-log-full-fd");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    let log = LogBuffer::new(RAM).expect("log");
    client.set_log_base(log.fd(), log.size(), 0).expect("set_log_base");
    // A blocking eventfd whose counter is one short of full: a blocking write of 1 would wait
    // for a read the front-end never does.
    let notify =
        rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("log eventfd");
    rustix::io::write(&notify, &(u64::MAX - 1).to_ne_bytes()).expect("fill the counter");
    client.set_log_fd(notify.as_fd()).expect("set_log_fd");
    client.set_logging(true).expect("LOG_ALL on");

    let (call, kick_fd) = (eventfd().expect("call"), eventfd().expect("kick"));
    post(&ram, 0);
    start_ring(&mut client, &ram, &call, &kick_fd);
    for head in 1..3 {
        post(&ram, head);
        kick(&kick_fd);
    }
    assert!(common::eventually(|| used_idx(&ram) == 3), "every chain is served");
    assert!(!log.take_dirty().is_empty(), "the writes were logged");
    let base = client.stop_vring(VringIndex(0)).expect("the ring stops");
    assert_eq!(base, VringBase::split(3));
    drop(client);
    assert_eq!(ends.recv_timeout(common::TIMEOUT).expect("connection ends"), "HungUp");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_log_past_the_end_of_its_file_closes_the_connection() {
    let (path, _ram, ends, mut client) = serve("dirty-log-short");
    let log = LogBuffer::new(RAM).expect("log");
    // The reply cannot say "failed": a log that cannot be marked ends the connection rather
    // than let a migration believe pages are tracked.
    assert!(client.set_log_base(log.fd(), log.size() + 0x1000, 0).is_err());
    let end = ends.recv_timeout(common::TIMEOUT).expect("connection ends");
    assert!(end.contains("SetLogBase"), "{end}");
    let _ = std::fs::remove_file(&path);
}
