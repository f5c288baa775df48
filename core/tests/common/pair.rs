//! Fixtures of the front-end tests: the pair of `vhu_core::testing::pair` with a device spec, a
//! front-end configuration, guest regions and ring set-ups.

#![allow(unused_imports)]

pub use std::collections::{BTreeMap, VecDeque};

pub use vhu_core::backend::{
    Action, Backend, BackendOutcome, BackendResult, BackendSpec, Completion,
    Output as BackendOutput, SpecError,
};
pub use vhu_core::frontend::{
    BackendAnswer, Event, Frontend, FrontendConfig, FrontendError, Negotiated, Output,
    ShmemConfigProblem, VringSetup,
};
pub use vhu_core::limits::MAX_FRAME_SIZE;
pub use vhu_core::message::{
    BackendReply, BackendRequest, ConfigFlags, InflightDesc, Region, ShmemMapping,
    TransferDirection, VringBase,
};
pub use vhu_core::testing::pair::{Act, Ev, Owed, Pair};
pub use vhu_core::{
    BackendCode, FdToken, FrontendCode, ProtocolError, ProtocolFeatures, Reply, Request,
    VirtioFeatures, VringIndex,
};

pub const DEVICE_BIT_5: VirtioFeatures = VirtioFeatures::from_bits_retain(1 << 5);
pub const DEVICE_BIT_6: VirtioFeatures = VirtioFeatures::from_bits_retain(1 << 6);
pub const RING_UADDR: u64 = 0x7f00_0000_0000;
pub const CONFIG: [u8; 16] = *b"vhu-config-space";

/// `Pair::connected()`: the fixtures' pair, connected.
pub trait Connected {
    /// A connected pair: the connect handshake run to completion.
    fn connected() -> Self;
}

impl Connected for Pair {
    fn connected() -> Self {
        let mut pair = Self::new(spec(), config(), CONFIG.to_vec());
        let channel = pair.vmm_fd();
        pair.frontend.connect(Some(channel)).expect("connect");
        pair.pump();
        assert!(pair.frontend.is_connected(), "{:?}", pair.events);
        pair.clear_log();
        pair
    }
}

pub fn spec() -> BackendSpec {
    let mut spec = BackendSpec::new(2, 256);
    spec.features = VirtioFeatures::VERSION_1
        | VirtioFeatures::LOG_ALL
        | VirtioFeatures::RING_EVENT_IDX
        | DEVICE_BIT_5
        | DEVICE_BIT_6;
    spec.protocol_features |= ProtocolFeatures::LOG_SHMFD
        | ProtocolFeatures::DEVICE_STATE
        | ProtocolFeatures::INFLIGHT_SHMFD
        | ProtocolFeatures::BACKEND_SEND_FD
        | ProtocolFeatures::SHMEM
        | ProtocolFeatures::INBAND_NOTIFICATIONS;
    spec.config_size = CONFIG.len() as u32;
    spec.max_mem_slots = 16;
    spec
}

pub fn config() -> FrontendConfig {
    let mut config = FrontendConfig::new(VirtioFeatures::RING_EVENT_IDX | DEVICE_BIT_5);
    config.protocol_features |= ProtocolFeatures::SHMEM;
    config
}

pub fn region(i: u64) -> Region {
    Region {
        guest_address: i * 0x10_0000,
        size: 0x10_0000,
        user_address: RING_UADDR + i * 0x10_0000,
        mmap_offset: 0,
        xen: None,
    }
}

pub fn setup(pair: &mut Pair, index: u8, base: u16) -> VringSetup {
    let ring = RING_UADDR + u64::from(index) * 0x1_0000;
    VringSetup {
        size: 256,
        base: VringBase::split(base),
        descriptor: ring,
        available: ring + 0x1000,
        used: ring + 0x2000,
        log: None,
        call: Some(pair.vmm_fd()),
        kick: Some(pair.vmm_fd()),
    }
}

pub const EXPECTED_PROTOCOL: ProtocolFeatures = ProtocolFeatures::MQ
    .union(ProtocolFeatures::LOG_SHMFD)
    .union(ProtocolFeatures::REPLY_ACK)
    .union(ProtocolFeatures::BACKEND_REQ)
    .union(ProtocolFeatures::CONFIG)
    .union(ProtocolFeatures::BACKEND_SEND_FD)
    .union(ProtocolFeatures::INFLIGHT_SHMFD)
    .union(ProtocolFeatures::RESET_DEVICE)
    .union(ProtocolFeatures::CONFIGURE_MEM_SLOTS)
    .union(ProtocolFeatures::STATUS)
    .union(ProtocolFeatures::DEVICE_STATE)
    .union(ProtocolFeatures::SHMEM);

pub const EXPECTED_FEATURES: VirtioFeatures = VirtioFeatures::VERSION_1
    .union(VirtioFeatures::PROTOCOL_FEATURES)
    .union(VirtioFeatures::RING_EVENT_IDX)
    .union(DEVICE_BIT_5);

/// Starts two rings, then sets a log area and turns dirty logging on; only the logging's
/// requests are left in the log.
pub fn start_logging(pair: &mut Pair) {
    start_two_rings(pair);
    pair.clear_log();
    let log = pair.vmm_fd();
    pair.frontend.set_log_base(0x4000, 0, log).unwrap();
    pair.frontend.set_logging(true).unwrap();
    pair.pump();
}

pub fn start_two_rings(pair: &mut Pair) {
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    for index in 0..2 {
        let setup = setup(pair, index, 0);
        pair.frontend.start_vring(VringIndex(index), setup).unwrap();
    }
    pair.pump();
}
