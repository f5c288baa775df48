//! Guest memory a front-end takes away: a VMM that truncates the file behind the memory it
//! shared, then has the daemon look at a ring in it, must not end the daemon — sandboxed and
//! under its system-call filter as it runs for real. The pages it took away read as zeros in
//! the daemon, which keeps answering the front-end and says what happened when the memory is
//! unmapped (at the disconnection, after which it exits as it always does).

mod daemon;

use std::time::Duration;

use daemon::{scratch, socket, start};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use vhu_device_fs::fuse::abi::{GetattrIn, InHeader};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::guest::{GuestFs, ONE_AT_A_TIME};
use vhu_transport_std::bus_guard;
use vhu_transport_std::client::GuestRegion;
use vhu_transport_std::vhu_core::VringIndex;
use zerocopy::IntoBytes;

#[test]
fn a_front_end_truncating_guest_memory_does_not_end_the_daemon() {
    let root = rustix::process::geteuid().is_root();
    let dir = scratch("vhu-truncated", "memory");
    // The default sandbox needs root; the filter applies either way.
    let extra: &[&str] = if root { &[] } else { &["--sandbox", "none"] };
    let mut daemon = start(&dir, extra);
    // Its own memory, unsealed: a front-end that can cut it short (this library's own
    // memory is sealed at its size, so cannot be).
    let fd = memfd_create("unsealed", MemfdFlags::CLOEXEC).expect("memfd");
    ftruncate(&fd, 4 << 20).expect("size");
    let ram = GuestRegion::from_file(fd, 0, 4 << 20).expect("guest memory");
    let guest = GuestFs::connect_in(socket(&dir), ram, &[ONE_AT_A_TIME]).expect("mounts");
    let (mut client, ram, mut rings) = guest.into_parts();
    // This process is the front-end and the guest's driver at once: its own accesses to the
    // pages it takes away are absorbed the same way, so it can still drive the ring.
    let host = ram.host_address(0).expect("mapped") as *const u8;
    let size = usize::try_from(ram.region().size).expect("size");
    let _guarded =
        bus_guard::guard(host, size, rustix::param::page_size()).ok().flatten().expect("guarded");

    ftruncate(ram.fd(), 0).expect("truncate the guest's memory");
    let header =
        InHeader { opcode: Opcode::Getattr as u32, unique: 2, nodeid: 1, ..InHeader::default() };
    rings[0].submit(header, &[GetattrIn::default().as_bytes()], 128).expect("submit");
    // Whatever the device's `avail_event` reads as now (zero, in this process too): a kick.
    rings[0].kick_anyway().expect("kick");
    // The daemon's queue thread reads its ring (now past the end of the file) within moments.
    std::thread::sleep(Duration::from_millis(300));

    assert!(daemon.0.try_wait().expect("status").is_none(), "the daemon is still running");
    client.stop_vring(VringIndex(1)).expect("the daemon still answers, and stops the ring");
    drop((client, rings));
    let log = dir.join("vhost.log");
    let said = daemon::wait_for(|| {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("cut short a file it shared"))
    });
    assert!(said, "the daemon says what happened: {:?}", std::fs::read_to_string(&log));
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
