//! Postcopy from vhu's front-end client against a back-end it did not write: QEMU's
//! qemu-storage-daemon (libvhost-user), which offers PAGEFAULT where it can open a userfaultfd.
//! ADVISE hands over a real userfaultfd, LISTEN is acknowledged, the postcopy SET_MEM_TABLE
//! comes back with a mapping base per region and takes the client's acknowledgement (a
//! back-end that did not get it would read the next request as the acknowledgement and fail),
//! END is acknowledged, and the device then serves a disk read as usual. Skipped where
//! qemu-storage-daemon is not installed or cannot use userfaultfd (it then offers no PAGEFAULT).

mod common;

use std::os::fd::{AsFd, AsRawFd};

use common::peers::StorageDaemon;
use vhu_transport_std::client::{eventfd, Client, ClientError, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::frontend::FrontendError;
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::virtq::{Descriptor, DESC_F_NEXT, DESC_F_WRITE};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress};

const SIZE: u16 = 16;
const DESC: u64 = 0x1_0000;
const HEADER: u64 = 0x2_0000;
const DATA: u64 = 0x3_0000;
const STATUS: u64 = 0x4_0000;

/// A virtio-blk read of sector 1 as the first request of a fresh ring (virtio spec "Block
/// Device"); returns the used ring's address.
fn post_read(ram: &GuestRegion, kick: &impl AsFd) -> u64 {
    let mem = ram.memory();
    mem.write_slice(&[0u8; 16], GuestAddress(HEADER)).expect("header: VIRTIO_BLK_T_IN");
    mem.write_obj(1u64.to_le(), GuestAddress(HEADER + 8)).expect("sector");
    let chain = [
        Descriptor::new(HEADER, 16, DESC_F_NEXT, 1),
        Descriptor::new(DATA, 512, DESC_F_WRITE | DESC_F_NEXT, 2),
        Descriptor::new(STATUS, 1, DESC_F_WRITE, 0),
    ];
    for (i, d) in chain.iter().enumerate() {
        let at = GuestAddress(DESC + 16 * i as u64);
        mem.write_slice(zerocopy::IntoBytes::as_bytes(d), at).expect("descriptor");
    }
    let avail = DESC + 16 * u64::from(SIZE);
    mem.write_obj(0u16.to_le(), GuestAddress(avail + 4)).expect("avail ring");
    mem.write_obj(1u16.to_le(), GuestAddress(avail + 2)).expect("avail idx");
    rustix::io::write(kick, &1u64.to_ne_bytes()).expect("kick");
    (avail + 6 + 2 * u64::from(SIZE) + 3) & !3
}

#[test]
fn postcopy_with_qemu_storage_daemon() {
    let dir = std::env::temp_dir().join(format!("vhu-client-postcopy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let disk = dir.join("disk.img");
    let mut image = vec![0u8; 1 << 20];
    image[512..1024].fill(0x5c);
    std::fs::write(&disk, &image).expect("image");
    let Some(qsd) = StorageDaemon::start(&disk, dir.join("blk.sock")) else {
        eprintln!("qemu-storage-daemon is not installed (Debian: qemu-utils)");
        return;
    };
    let mut client = Client::connect(&qsd.socket).expect("connect");
    client.set_timeout(common::TIMEOUT).expect("timeout");
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    // Postcopy is forbidden with memory slots, so they are not wanted.
    let wanted = ProtocolFeatures::MQ | ProtocolFeatures::REPLY_ACK | ProtocolFeatures::PAGEFAULT;
    let negotiated = client.handshake(features, wanted).expect("handshake");
    if !negotiated.protocol_features.contains(ProtocolFeatures::PAGEFAULT) {
        eprintln!("qemu-storage-daemon offers no PAGEFAULT: it cannot open a userfaultfd here");
        return;
    }

    let userfaultfd = client.postcopy_advise().expect("POSTCOPY_ADVISE");
    let link = std::fs::read_link(format!("/proc/self/fd/{}", userfaultfd.as_raw_fd()));
    assert_eq!(link.expect("fd link").to_string_lossy(), "anon_inode:[userfaultfd]");
    client.postcopy_listen().expect("POSTCOPY_LISTEN");

    let ram = GuestRegion::new(0, 1 << 20).expect("guest memory");
    // The plain call would leave the bases unregistered and the client waiting to acknowledge
    // them: it is refused, and nothing was sent.
    let plain = client.set_mem_table(&[ram.share()]);
    assert!(
        matches!(plain, Err(ClientError::Refused(FrontendError::PostcopyOutOfOrder { .. }))),
        "{plain:?}"
    );
    assert_eq!(client.held_fds(), 0, "the refused call kept no descriptor");
    let mut registered = Vec::new();
    let bases = client
        .postcopy_set_mem_table(&[ram.share()], |bases| registered.extend_from_slice(bases))
        .expect("postcopy SET_MEM_TABLE");
    assert_eq!(registered, bases, "the bases were registered before the acknowledgement");
    assert_eq!(bases.len(), 1);
    // libvhost-user since QEMU 9.0 fills its bases into a copy of the table and so echoes the
    // front-end's own addresses; only the form of the answer is checked.
    assert!(bases[0] != 0 && bases[0] % 4096 == 0, "a page-aligned mapping base: {bases:x?}");
    // A request after the acknowledgement is read as a request again.
    client.postcopy_end().expect("POSTCOPY_END");
    drop(userfaultfd);

    // Back to the usual form: a fresh table, and the device reads the disk.
    let ram = GuestRegion::new(0, 1 << 20).expect("guest memory");
    client.set_mem_table(&[ram.share()]).expect("SET_MEM_TABLE after postcopy");
    let (call, kick) = (eventfd().expect("call"), eventfd().expect("kick"));
    let host = ram.host_address(DESC).expect("ring in guest memory");
    let start = VringStart::split(SIZE, host, call.as_fd(), kick.as_fd());
    client.start_vring(VringIndex(0), start).expect("start ring 0");
    let used = post_read(&ram, &kick);
    let used_idx = || u16::from_le(ram.memory().read_obj(GuestAddress(used + 2)).expect("used"));
    assert!(common::eventually(|| used_idx() == 1), "the read completes");
    let mut data = [0u8; 512];
    ram.memory().read_slice(&mut data, GuestAddress(DATA)).expect("data");
    assert!(data.iter().all(|b| *b == 0x5c), "sector 1 read back");
    assert_eq!(client.stop_vring(VringIndex(0)).expect("stop"), VringBase::split(1));
    drop(client);
    drop(qsd);
    let _ = std::fs::remove_dir_all(&dir);
}
