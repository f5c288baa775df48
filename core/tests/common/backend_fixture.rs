//! Fixtures of the back-end transcript tests: a virtio-fs-like spec, negotiation, a two-region
//! memory table and ring set-up, each asserting the outputs it expects on the way.
#![allow(unused_imports)]

pub use super::transcript::{Out, Transcript};
pub use super::FDS;
pub use vhu_core::backend::{Action, BackendSpec, Completion, VringConfig};
pub use vhu_core::message::{
    ConfigFlags, InflightDesc, LogBase, MemoryTable, PackedBase, Region, ShmemMapping,
    TransferDirection, TransferPhase, Uuid, VringAddr, VringAddrFlags, VringBase, VringFd,
};
pub use vhu_core::regions::RegionError;
pub use vhu_core::vring::RingState;
pub use vhu_core::wire::{self, U64};
pub use vhu_core::{
    BackendRequest, FdToken, FrontendCode, ProtocolError, ProtocolFeatures, Reply, Request,
    VirtioFeatures, VringIndex, WireError,
};

pub const V0: VringIndex = VringIndex(0);
pub const V1: VringIndex = VringIndex(1);
pub const RAM: u64 = 0x7f00_0000_0000;

pub fn protocol() -> ProtocolFeatures {
    ProtocolFeatures::MQ
        | ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::CONFIG
        | ProtocolFeatures::BACKEND_REQ
        | ProtocolFeatures::BACKEND_SEND_FD
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS
        | ProtocolFeatures::RESET_DEVICE
        | ProtocolFeatures::STATUS
        | ProtocolFeatures::LOG_SHMFD
        | ProtocolFeatures::INFLIGHT_SHMFD
        | ProtocolFeatures::DEVICE_STATE
        | ProtocolFeatures::SHARED_OBJECT
        | ProtocolFeatures::SHMEM
}

pub fn spec() -> BackendSpec {
    let mut spec = BackendSpec::new(2, 1024);
    spec.features = VirtioFeatures::VERSION_1
        | VirtioFeatures::RING_EVENT_IDX
        | VirtioFeatures::RING_INDIRECT_DESC
        | VirtioFeatures::LOG_ALL
        | VirtioFeatures::RING_PACKED;
    spec.protocol_features = protocol();
    spec.config_size = 40;
    spec.shmem_sizes.extend([0x20_0000, 0, 0x1000]);
    spec
}

pub fn acked() -> VirtioFeatures {
    VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES | VirtioFeatures::RING_EVENT_IDX
}

pub fn ack(request: FrontendCode) -> Out {
    Out::Reply(Reply::Ack { request, status: 0 })
}

pub fn nack(request: FrontendCode, status: u64) -> Out {
    Out::Reply(Reply::Ack { request, status })
}

pub fn act(action: Action<'static>) -> Out {
    Out::Action(action)
}

/// GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES, as QEMU orders them.
pub fn negotiate(t: &mut Transcript, protocol: ProtocolFeatures, features: VirtioFeatures) {
    t.send(Request::GetFeatures);
    t.send(Request::GetProtocolFeatures);
    assert_eq!(t.send(Request::SetProtocolFeatures(protocol)), []);
    assert_eq!(t.send(Request::SetOwner), []);
    assert_eq!(t.send(Request::SetFeatures(features)), [act(Action::FeaturesAcked(features))]);
}

pub static REGIONS: [wire::MemoryRegion; 2] = [
    super::region(0, 0x1000_0000, RAM, 0),
    super::region(0x1_0000_0000, 0x1000_0000, RAM + 0x1000_0000, 0x1000_0000),
];

pub fn region(i: usize) -> Region {
    Region::from_wire(&REGIONS[i])
}

/// SET_MEM_TABLE with two regions, completed successfully.
pub fn map_memory(t: &mut Transcript) {
    let fds = [t.fd(), t.fd()];
    let outs = t.send_need_reply(Request::SetMemTable {
        table: MemoryTable::Standard(&REGIONS),
        fds: &fds,
    });
    assert_eq!(
        outs,
        [
            act(Action::UnmapAll),
            act(Action::MapRegion { region: region(0), fd: fds[0] }),
            act(Action::MapRegion { region: region(1), fd: fds[1] }),
        ]
    );
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::SetMemTable)]);
}

pub fn ring_addr(index: VringIndex) -> VringAddr {
    let base = RAM + 0x10_0000 * u64::from(index.0);
    VringAddr {
        index,
        flags: VringAddrFlags::empty(),
        descriptor: base,
        available: base + 0x4000,
        used: base + 0x8000,
        log: 0,
    }
}

pub fn ring_config(index: VringIndex, size: u16, base: VringBase) -> VringConfig {
    let gpa = 0x10_0000 * u64::from(index.0);
    VringConfig {
        size,
        descriptor: gpa,
        available: gpa + 0x4000,
        used: gpa + 0x8000,
        log: None,
        base,
        packed: false,
        event_idx: true,
        big_endian: false,
        iova: false,
    }
}

/// NUM, BASE, ADDR and CALL for one ring; returns the call token.
pub fn configure_ring(t: &mut Transcript, index: VringIndex, base: u16) -> FdToken {
    assert_eq!(t.send(Request::SetVringNum { index, num: 256 }), []);
    assert_eq!(t.send(Request::SetVringBase { index, base: VringBase::split(base) }), []);
    assert_eq!(t.send(Request::SetVringAddr(ring_addr(index))), []);
    let call = t.fd();
    assert_eq!(
        t.send(Request::SetVringCall(VringFd { index, fd: Some(call) })),
        [act(Action::SetVringCall { index, fd: Some(call) })]
    );
    call
}

pub fn start_ring(t: &mut Transcript, index: VringIndex, base: u16, enabled: bool) -> FdToken {
    let kick = t.fd();
    assert_eq!(
        t.send(Request::SetVringKick(VringFd { index, fd: Some(kick) })),
        [act(Action::StartVring {
            index,
            config: ring_config(index, 256, VringBase::split(base)),
            kick: Some(kick),
            enabled,
        })]
    );
    // The device started it (no NEED_REPLY: nothing to answer).
    assert_eq!(t.complete(Completion::Done(Ok(()))), []);
    kick
}

/// SET_BACKEND_REQ_FD with a socket the driver takes; returns its token.
#[allow(dead_code)] // Not every test binary opens a channel.
pub fn open_channel(t: &mut Transcript) -> FdToken {
    let channel = t.fd();
    assert_eq!(
        t.send(Request::SetBackendReqFd(channel)),
        [act(Action::SetBackendChannel(channel))]
    );
    // The driver took it (no NEED_REPLY: nothing to answer).
    assert_eq!(t.complete(Completion::Done(Ok(()))), []);
    channel
}

pub fn ready(protocol: ProtocolFeatures) -> Transcript {
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, protocol, acked());
    map_memory(&mut t);
    t
}
