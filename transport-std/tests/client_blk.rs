//! vhu's front-end client drives a back-end it did not write: QEMU's qemu-storage-daemon
//! exporting a disk image over vhost-user-blk (libvhost-user). A virtio-blk read and a write go
//! through a split ring in memfd guest memory (virtio spec "Block Device": a 16-byte request
//! header, the data, a status byte), the config space gives the capacity, and the ring stops
//! where it ended. Skipped where qemu-storage-daemon is not installed (Debian: qemu-utils; CI
//! installs it).

mod common;

use std::os::fd::AsFd;

use common::peers::StorageDaemon;
use vhu_transport_std::client::{eventfd, Client, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::virtq::{Descriptor, DESC_F_NEXT, DESC_F_WRITE};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress};

const DESC: u64 = 0x1_0000;
const SIZE: u16 = 64;
const AVAIL: u64 = DESC + 16 * SIZE as u64;
const USED: u64 = (AVAIL + 6 + 2 * SIZE as u64 + 3) & !3;
const HEADER: u64 = 0x2_0000;
const DATA: u64 = 0x3_0000;
const STATUS: u64 = 0x4_0000;
/// VIRTIO_BLK_T_IN and VIRTIO_BLK_T_OUT.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;

/// Posts request number `n` (a three-descriptor chain at slots 3n..3n+2) and kicks.
fn request(ram: &GuestRegion, n: u16, kind: u32, sector: u64, kick: &impl AsFd) {
    let mem = ram.memory();
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&kind.to_le_bytes());
    header[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&header, GuestAddress(HEADER)).expect("header");
    let data_flags = if kind == T_IN { DESC_F_WRITE | DESC_F_NEXT } else { DESC_F_NEXT };
    let base = 3 * n;
    let chain = [
        Descriptor::new(HEADER, 16, DESC_F_NEXT, base + 1),
        Descriptor::new(DATA, 512, data_flags, base + 2),
        Descriptor::new(STATUS, 1, DESC_F_WRITE, 0),
    ];
    for (i, d) in chain.iter().enumerate() {
        let at = GuestAddress(DESC + 16 * (u64::from(base) + i as u64));
        mem.write_slice(zerocopy::IntoBytes::as_bytes(d), at).expect("descriptor");
    }
    mem.write_obj(base.to_le(), GuestAddress(AVAIL + 4 + 2 * u64::from(n))).expect("avail");
    mem.write_obj((n + 1).to_le(), GuestAddress(AVAIL + 2)).expect("avail idx");
    rustix::io::write(kick, &1u64.to_ne_bytes()).expect("kick");
}

fn used_idx(ram: &GuestRegion) -> u16 {
    u16::from_le(ram.memory().read_obj(GuestAddress(USED + 2)).expect("used idx"))
}

#[test]
fn the_client_reads_and_writes_a_disk_served_by_qemu_storage_daemon() {
    let dir = std::env::temp_dir().join(format!("vhu-client-blk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let disk = dir.join("disk.img");
    let mut image = vec![0u8; 1 << 20];
    image[8 * 512..9 * 512].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7 + 3) as u8);
    std::fs::write(&disk, &image).expect("image");
    let Some(qsd) = StorageDaemon::start(&disk, dir.join("blk.sock")) else {
        eprintln!("qemu-storage-daemon is not installed (Debian: qemu-utils)");
        return;
    };
    let socket = qsd.socket.clone();
    let mut client = Client::connect(&socket).expect("connect");
    client.set_timeout(common::TIMEOUT).expect("timeout");
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    let protocol = ProtocolFeatures::MQ
        | ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::CONFIG
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS;
    let negotiated = client.handshake(features, protocol).expect("handshake");
    assert!(negotiated.protocol_features.contains(ProtocolFeatures::CONFIG));
    // virtio_blk_config starts with the capacity in 512-byte sectors.
    let config = client.get_config(0, 8).expect("GET_CONFIG");
    assert_eq!(u64::from_le_bytes(config.try_into().expect("8 bytes")), 2048);

    let ram = GuestRegion::new(0, 1 << 20).expect("guest memory");
    client.set_mem_table(&[ram.share()]).expect("SET_MEM_TABLE");
    let (call, kick) = (eventfd().expect("call"), eventfd().expect("kick"));
    let host = ram.host_address(DESC).expect("ring in guest memory");
    let start = VringStart::split(SIZE, host, call.as_fd(), kick.as_fd());
    client.start_vring(VringIndex(0), start).expect("start ring 0");

    request(&ram, 0, T_IN, 8, &kick);
    assert!(common::eventually(|| used_idx(&ram) == 1), "the read completes");
    let mut data = [0u8; 512];
    ram.memory().read_slice(&mut data, GuestAddress(DATA)).expect("data");
    assert!(data[..] == image[8 * 512..9 * 512], "the sector read back");
    assert_eq!(ram.memory().read_obj::<u8>(GuestAddress(STATUS)).expect("status"), 0);

    ram.memory().write_slice(&[0xa5; 512], GuestAddress(DATA)).expect("data");
    request(&ram, 1, T_OUT, 100, &kick);
    assert!(common::eventually(|| used_idx(&ram) == 2), "the write completes");
    assert_eq!(ram.memory().read_obj::<u8>(GuestAddress(STATUS)).expect("status"), 0);
    assert_eq!(client.stop_vring(VringIndex(0)).expect("stop"), VringBase::split(2));
    drop(client);
    let on_disk = std::fs::read(&disk).expect("image");
    drop(qsd);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(on_disk[100 * 512..101 * 512].iter().all(|b| *b == 0xa5), "the write reached the disk");
}
