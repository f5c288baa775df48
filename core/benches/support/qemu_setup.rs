//! The control-plane messages QEMU's vhost-user-fs front-end sends to set up a 2-queue device
//! (REPLY_ACK negotiated, NEED_REPLY where QEMU sets it), and the stops it sends at shutdown.
#![allow(dead_code)]

use vhu_core::message::{MemoryTable, VringAddr, VringAddrFlags, VringBase, VringFd};
use vhu_core::wire::{MemoryRegion, U64};
use vhu_core::{FdToken, ProtocolFeatures, Request, VirtioFeatures, VringIndex};

const fn region(gpa: u64, size: u64, uaddr: u64, offset: u64) -> MemoryRegion {
    MemoryRegion {
        guest_address: U64::new(gpa),
        size: U64::new(size),
        user_address: U64::new(uaddr),
        mmap_offset: U64::new(offset),
    }
}

static REGIONS: [MemoryRegion; 2] = [
    region(0, 0x8000_0000, 0x7f00_0000_0000, 0),
    region(0x1_0000_0000, 0x8000_0000, 0x7f00_8000_0000, 0x8000_0000),
];
static FDS: [FdToken; 2] = [FdToken(20), FdToken(21)];

/// Virtio features a Linux virtio-fs guest acks.
pub(crate) fn features() -> VirtioFeatures {
    VirtioFeatures::VERSION_1
        | VirtioFeatures::PROTOCOL_FEATURES
        | VirtioFeatures::RING_EVENT_IDX
        | VirtioFeatures::RING_INDIRECT_DESC
}

/// Protocol features QEMU acks for vhost-user-fs against a modern back-end.
pub(crate) fn protocol() -> ProtocolFeatures {
    ProtocolFeatures::MQ
        | ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::BACKEND_REQ
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS
}

/// Negotiation, a 2-region memory table and two rings started and enabled.
pub(crate) fn setup() -> Vec<(Request<'static>, bool)> {
    let mut messages: Vec<(Request<'static>, bool)> = vec![
        (Request::GetFeatures, false),
        (Request::GetProtocolFeatures, false),
        (Request::SetProtocolFeatures(protocol()), false),
        (Request::GetQueueNum, false),
        (Request::GetMaxMemSlots, false),
        (Request::SetBackendReqFd(FdToken(1)), true),
        (Request::SetOwner, false),
        (Request::GetFeatures, false),
        (Request::SetVringCall(VringFd { index: VringIndex(0), fd: Some(FdToken(2)) }), false),
        (Request::SetVringCall(VringFd { index: VringIndex(1), fd: Some(FdToken(3)) }), false),
        (Request::SetFeatures(features()), true),
        (Request::SetMemTable { table: MemoryTable::Standard(&REGIONS), fds: &FDS }, true),
    ];
    for q in 0..2u8 {
        let index = VringIndex(q);
        let base = 0x7f00_0000_0000 + u64::from(q) * 0x10000;
        messages.extend([
            (Request::SetVringNum { index, num: 1024 }, true),
            (Request::SetVringBase { index, base: VringBase::split(0) }, true),
            (
                Request::SetVringAddr(VringAddr {
                    index,
                    flags: VringAddrFlags::empty(),
                    descriptor: base,
                    used: base + 0x6000,
                    available: base + 0x4000,
                    log: 0,
                }),
                true,
            ),
            (Request::SetVringKick(VringFd { index, fd: Some(FdToken(4 + u32::from(q))) }), false),
            (Request::SetVringCall(VringFd { index, fd: Some(FdToken(6 + u32::from(q))) }), false),
            (Request::SetVringEnable { index, enable: true }, true),
        ]);
    }
    messages
}

/// The shutdown: each ring disabled, then stopped with GET_VRING_BASE.
pub(crate) fn stop() -> Vec<(Request<'static>, bool)> {
    (0..2u8)
        .flat_map(|q| {
            let index = VringIndex(q);
            [
                (Request::SetVringEnable { index, enable: false }, true),
                (Request::GetVringBase { index }, false),
            ]
        })
        .collect()
}

/// Encodes each message once: the frame bytes and the tokens that travel with it.
pub(crate) fn encode(messages: &[(Request<'_>, bool)]) -> Vec<(Vec<u8>, Vec<FdToken>)> {
    messages
        .iter()
        .map(|(request, need_reply)| {
            let mut buf = vec![0u8; 512];
            let len = request.encode_into(*need_reply, &mut buf).expect("setup message encodes");
            buf.truncate(len);
            (buf, request.fds().to_vec())
        })
        .collect()
}
