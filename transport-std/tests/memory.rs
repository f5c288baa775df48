//! Guest memory over memfds: offsets honoured, removal, snapshots across updates, refused regions.

use std::os::fd::OwnedFd;

use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::io::{pread, pwrite, read};
use rustix::pipe::{pipe_with, PipeFlags};
use vhu_transport_std::memory::{MemoryError, MemoryMap};
use vhu_transport_std::vhu_core::message::Region;
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend};

const PAGE: u64 = 0x1000;

fn page() -> u64 {
    rustix::param::page_size() as u64
}

fn memfd(len: u64) -> OwnedFd {
    let fd = memfd_create("guest-ram", MemfdFlags::CLOEXEC).expect("memfd");
    ftruncate(&fd, len).expect("ftruncate");
    fd
}

fn region(guest_address: u64, size: u64, mmap_offset: u64) -> Region {
    Region { guest_address, size, user_address: 0x7f00_0000_0000, mmap_offset, xen: None }
}

fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().expect("dup")
}

fn pread_exact(fd: &OwnedFd, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    assert_eq!(pread(fd, &mut buf, offset).expect("pread"), len);
    buf
}

#[test]
fn two_regions_honour_mmap_offset() {
    let p = page();
    let ram_a = memfd(4 * p);
    let ram_b = memfd(p);
    // Written before mapping, at a non-zero offset: it must appear at the region's first byte.
    pwrite(&ram_a, b"offset data", p).expect("pwrite");
    let mut map = MemoryMap::new();
    map.add(&region(0x10_0000, 2 * p, p), dup(&ram_a)).expect("add a");
    map.add(&region(0x40_0000, p, 0), dup(&ram_b)).expect("add b");
    assert_eq!(map.len(), 2);

    let mem = map.memory().memory();
    let mut head = [0u8; 11];
    mem.read_slice(&mut head, GuestAddress(0x10_0000)).expect("read");
    assert_eq!(&head, b"offset data");

    mem.write_obj(0x1122_3344_5566_7788u64, GuestAddress(0x10_0000 + 0x18)).expect("write_obj");
    assert_eq!(pread_exact(&ram_a, p + 0x18, 8), 0x1122_3344_5566_7788u64.to_ne_bytes());
    mem.write_slice(b"second", GuestAddress(0x10_0000 + p + 4)).expect("write_slice");
    assert_eq!(pread_exact(&ram_a, 2 * p + 4, 6), b"second");
    mem.write_slice(b"region b", GuestAddress(0x40_0010)).expect("write_slice");
    assert_eq!(pread_exact(&ram_b, 0x10, 8), b"region b");

    // Outside every region, and across the end of one: errors, not faults.
    assert!(mem.write_obj(1u32, GuestAddress(0x20_0000)).is_err());
    assert!(mem.write_slice(&[0; 16], GuestAddress(0x40_0000 + p - 8)).is_err());
    assert!(mem.read_obj::<u64>(GuestAddress(0x10_0000 + 2 * p)).is_err());
}

#[test]
fn remove_unmaps_only_the_named_region() {
    let p = page();
    let mut map = MemoryMap::new();
    map.add(&region(0, p, 0), memfd(p)).expect("add");
    map.add(&region(4 * p, 2 * p, 0), memfd(2 * p)).expect("add");
    match map.remove(4 * p, p) {
        Err(MemoryError::NotFound { guest_address, size }) => {
            assert_eq!((guest_address, size), (4 * p, p))
        }
        other => panic!("unexpected {other:?}"),
    }
    map.remove(4 * p, 2 * p).expect("remove");
    assert_eq!(map.len(), 1);
    let mem = map.memory().memory();
    assert!(mem.read_obj::<u8>(GuestAddress(4 * p)).is_err());
    assert!(mem.read_obj::<u8>(GuestAddress(0)).is_ok());
    assert!(matches!(map.remove(4 * p, 2 * p), Err(MemoryError::NotFound { .. })));
    map.clear();
    assert!(map.is_empty());
    assert!(map.memory().memory().read_obj::<u8>(GuestAddress(0)).is_err());
}

#[test]
fn a_snapshot_taken_before_an_update_keeps_the_old_mapping() {
    let p = page();
    let (old_ram, new_ram) = (memfd(p), memfd(p));
    pwrite(&old_ram, b"old", 0).expect("pwrite");
    pwrite(&new_ram, b"new", 0).expect("pwrite");
    let mut map = MemoryMap::new();
    map.add(&region(0x8000_0000, p, 0), old_ram).expect("add");
    let handle = map.memory();
    let before = handle.memory();
    let before_arc = map.snapshot();

    map.replace_all(vec![(region(0x8000_0000, p, 0), new_ram)]).expect("replace");
    let mut buf = [0u8; 3];
    before.read_slice(&mut buf, GuestAddress(0x8000_0000)).expect("old snapshot reads");
    assert_eq!(&buf, b"old");
    handle.memory().read_slice(&mut buf, GuestAddress(0x8000_0000)).expect("new snapshot");
    assert_eq!(&buf, b"new");

    map.clear();
    before_arc.read_slice(&mut buf, GuestAddress(0x8000_0000)).expect("still mapped");
    assert_eq!(&buf, b"old");
    assert_eq!(before_arc.num_regions(), 1);
    assert_eq!(handle.memory().num_regions(), 0);
}

#[test]
fn bad_regions_are_refused() {
    let p = page();
    let mut map = MemoryMap::new();
    map.add(&region(0x1_0000, 4 * p, 0), memfd(4 * p)).expect("add");

    let overlap = region(0x1_0000 + 3 * p, 2 * p, 0);
    match map.add(&overlap, memfd(2 * p)) {
        Err(MemoryError::Overlap { existing_address, existing_size, .. }) => {
            assert_eq!((existing_address, existing_size), (0x1_0000, 4 * p));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        map.add(&region(0x1_0000 - p, p + 1, 0), memfd(2 * p)),
        Err(MemoryError::Overlap { .. })
    ));
    // Adjacent on both sides is fine.
    map.add(&region(0x1_0000 - p, p, 0), memfd(p)).expect("adjacent below");
    map.add(&region(0x1_0000 + 4 * p, p, 0), memfd(p)).expect("adjacent above");

    assert!(matches!(
        map.add(&region(0x10_0000, 0, 0), memfd(p)),
        Err(MemoryError::ZeroSize { guest_address: 0x10_0000 })
    ));
    assert!(matches!(
        map.add(&region(u64::MAX - PAGE + 1, 2 * PAGE, 0), memfd(p)),
        Err(MemoryError::AddressOverflow { .. })
    ));
    assert!(matches!(
        map.add(&region(0x10_0000, p, u64::MAX - p + 1), memfd(p)),
        Err(MemoryError::OffsetOverflow { .. })
    ));
    assert!(matches!(
        map.add(&region(0x10_0000, p, 8), memfd(2 * p)),
        Err(MemoryError::UnalignedOffset { mmap_offset: 8, .. })
    ));
    match map.add(&region(0x10_0000, 2 * p, p), memfd(2 * p)) {
        Err(MemoryError::PastEndOfFile { file_size, .. }) => assert_eq!(file_size, 2 * p),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        map.add(&region(0x10_0000, u64::MAX / 2, 0), memfd(p)),
        Err(MemoryError::PastEndOfFile { .. })
    ));
    assert_eq!(map.len(), 3, "refused regions change nothing");
}

#[test]
fn an_unmappable_descriptor_is_an_error_and_is_closed() {
    let (reader, writer) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).expect("pipe");
    let mut map = MemoryMap::new();
    match map.add(&region(0, page(), 0), writer) {
        Err(MemoryError::Map { guest_address: 0, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(read(&reader, &mut [0u8; 1]), Ok(0)), "the write end was closed");
    assert!(map.is_empty());
}

#[test]
fn replace_all_is_all_or_nothing() {
    let p = page();
    let keep = memfd(p);
    pwrite(&keep, b"kept", 0).expect("pwrite");
    let mut map = MemoryMap::new();
    map.replace_all(vec![(region(0, p, 0), dup(&keep))]).expect("first table");

    let overlapping =
        vec![(region(0x10_0000, 2 * p, 0), memfd(2 * p)), (region(0x10_0000 + p, p, 0), memfd(p))];
    assert!(matches!(map.replace_all(overlapping), Err(MemoryError::Overlap { .. })));
    let past_eof =
        vec![(region(0x10_0000, p, 0), memfd(p)), (region(0x20_0000, 2 * p, 0), memfd(p))];
    assert!(matches!(map.replace_all(past_eof), Err(MemoryError::PastEndOfFile { .. })));
    assert_eq!(map.len(), 1);
    assert_eq!(map.snapshot().read_obj::<[u8; 4]>(GuestAddress(0)).expect("read"), *b"kept");

    // Out of order is fine; the table is sorted before it is installed.
    let unsorted = vec![(region(0x20_0000, p, 0), memfd(p)), (region(0x10_0000, p, 0), memfd(p))];
    map.replace_all(unsorted).expect("unsorted table");
    assert_eq!(map.len(), 2);
    map.replace_all(Vec::new()).expect("empty table");
    assert!(map.is_empty());
}

#[test]
fn a_worker_thread_sees_updates_only_through_new_snapshots() {
    let p = page();
    let ram = memfd(p);
    let mut map = MemoryMap::new();
    map.add(&region(0, p, 0), dup(&ram)).expect("add");
    let handle = map.memory();
    let (to_main, from_worker) = std::sync::mpsc::channel();
    let (to_worker, from_main) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let snapshot = handle.memory();
        snapshot.write_obj(0xabcdu16, GuestAddress(0)).expect("write");
        to_main.send(()).expect("send");
        from_main.recv().expect("recv");
        // The region was removed meanwhile; this snapshot still has it.
        let old = snapshot.read_obj::<u16>(GuestAddress(0)).expect("old snapshot");
        let fresh = handle.memory().read_obj::<u16>(GuestAddress(0)).is_err();
        (old, fresh)
    });
    from_worker.recv().expect("worker wrote");
    map.remove(0, p).expect("remove");
    to_worker.send(()).expect("send");
    let (old, fresh_is_empty) = worker.join().expect("worker");
    assert_eq!(old, 0xabcd);
    assert!(fresh_is_empty);
    assert_eq!(pread_exact(&ram, 0, 2), 0xabcdu16.to_ne_bytes());
}
