//! Sample messages covering every request code of both channels, shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use vhu_core::message::{
    ConfigFlags, InflightDesc, Iotlb, IotlbKind, IotlbPerm, LogBase, MemoryTable, PackedBase,
    Region, ShmemMapping, TransferDirection, TransferPhase, Uuid, VringAddr, VringAddrFlags,
    VringBase, VringFd, XenMapping,
};
use vhu_core::wire::{self, U32, U64};
use vhu_core::{
    BackendCode, BackendReply, BackendRequest, FdToken, FrontendCode, ProtocolFeatures, Reply,
    Request, VirtioFeatures, VringIndex,
};

pub const fn region(gpa: u64, size: u64, uaddr: u64, offset: u64) -> wire::MemoryRegion {
    wire::MemoryRegion {
        guest_address: U64::new(gpa),
        size: U64::new(size),
        user_address: U64::new(uaddr),
        mmap_offset: U64::new(offset),
    }
}

pub static TWO_REGIONS: [wire::MemoryRegion; 2] = [
    region(0, 0x8000_0000, 0x7f00_0000_0000, 0),
    region(0x1_0000_0000, 0x4000_0000, 0x7f00_8000_0000, 0x8000_0000),
];

pub static XEN_REGIONS: [wire::XenMemoryRegion; 1] = [wire::XenMemoryRegion {
    region: region(0, 0x1000_0000, 0, 0),
    xen_mmap_flags: U32::new(1),
    domid: U32::new(7),
}];

pub static FDS: [FdToken; 8] = [
    FdToken(10),
    FdToken(11),
    FdToken(12),
    FdToken(13),
    FdToken(14),
    FdToken(15),
    FdToken(16),
    FdToken(17),
];

pub static CONFIG: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
pub static CRYPTO: [u8; 24] = [9; 24];

pub fn shmem_config() -> &'static wire::ShmemConfig {
    use std::sync::OnceLock;
    static CONFIG: OnceLock<wire::ShmemConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut sizes = [U64::ZERO; 256];
        sizes[0] = U64::new(0x20_0000);
        sizes[3] = U64::new(0x1000);
        wire::ShmemConfig { nregions: U32::new(2), padding: U32::ZERO, memory_sizes: sizes }
    })
}

pub const SAMPLE_REGION: Region = Region {
    guest_address: 0x1_0000_0000,
    size: 0x10_0000,
    user_address: 0x7f12_3400_0000,
    mmap_offset: 0x2000,
    xen: None,
};

pub const IOTLB: Iotlb = Iotlb {
    iova: 0x1000,
    size: 0x2000,
    user_address: 0x7f00_0000_1000,
    perm: IotlbPerm::ReadWrite,
    kind: IotlbKind::Update,
};

pub const UUID: Uuid = Uuid([0xa5; 16]);

/// At least one sample request per front-end code; variants with options get several.
pub fn requests() -> Vec<Request<'static>> {
    let v = VringIndex;
    vec![
        Request::GetFeatures,
        Request::SetFeatures(
            VirtioFeatures::VERSION_1
                | VirtioFeatures::PROTOCOL_FEATURES
                | VirtioFeatures::from_bits_retain(0x3),
        ),
        Request::SetOwner,
        Request::ResetOwner,
        Request::SetMemTable { table: MemoryTable::Standard(&TWO_REGIONS), fds: &FDS[..2] },
        Request::SetMemTable { table: MemoryTable::Standard(&[]), fds: &[] },
        Request::SetMemTable { table: MemoryTable::Xen(&XEN_REGIONS), fds: &FDS[..1] },
        Request::SetLogBase(LogBase::Shared {
            mmap_size: 0x4000,
            mmap_offset: 0,
            fd: Some(FDS[0]),
        }),
        Request::SetLogBase(LogBase::Shared { mmap_size: 0x4000, mmap_offset: 0x100, fd: None }),
        Request::SetLogBase(LogBase::Legacy { base: 0xdead_0000 }),
        Request::SetLogFd(FDS[3]),
        Request::SetVringNum { index: v(1), num: 1024 },
        Request::SetVringAddr(VringAddr {
            index: v(1),
            flags: VringAddrFlags::LOG,
            descriptor: 0x7f00_0000_0000,
            used: 0x7f00_0000_4000,
            available: 0x7f00_0000_2000,
            log: 0x4000,
        }),
        Request::SetVringBase { index: v(0), base: VringBase::split(7) },
        Request::SetVringBase {
            index: v(2),
            base: VringBase::packed(PackedBase {
                avail_index: 5,
                avail_wrap: true,
                used_index: 3,
                used_wrap: false,
            }),
        },
        Request::GetVringBase { index: v(255) },
        Request::SetVringKick(VringFd { index: v(0), fd: Some(FDS[1]) }),
        Request::SetVringKick(VringFd { index: v(3), fd: None }),
        Request::SetVringCall(VringFd { index: v(1), fd: Some(FDS[2]) }),
        Request::SetVringErr(VringFd { index: v(1), fd: None }),
        Request::GetProtocolFeatures,
        Request::SetProtocolFeatures(ProtocolFeatures::MQ | ProtocolFeatures::REPLY_ACK),
        Request::GetQueueNum,
        Request::SetVringEnable { index: v(1), enable: true },
        Request::SetVringEnable { index: v(0), enable: false },
        Request::SendRarp([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        Request::NetSetMtu(9000),
        Request::SetBackendReqFd(FDS[4]),
        Request::IotlbMsg(IOTLB),
        Request::SetVringEndian { index: v(0), big_endian: true },
        Request::GetConfig { offset: 0, size: 40, flags: ConfigFlags::Writable },
        Request::SetConfig { offset: 4, flags: ConfigFlags::Migration, data: &CONFIG },
        Request::CreateCryptoSession(&CRYPTO),
        Request::CloseCryptoSession(42),
        Request::PostcopyAdvise,
        Request::PostcopyListen,
        Request::PostcopyEnd,
        Request::GetInflightFd(InflightDesc {
            mmap_size: 0,
            mmap_offset: 0,
            num_queues: 2,
            queue_size: 1024,
        }),
        Request::SetInflightFd {
            desc: InflightDesc {
                mmap_size: 0x3000,
                mmap_offset: 0,
                num_queues: 2,
                queue_size: 1024,
            },
            fd: FDS[5],
        },
        Request::GpuSetSocket(FDS[6]),
        Request::ResetDevice,
        Request::VringKick { index: v(4) },
        Request::GetMaxMemSlots,
        Request::AddMemReg { region: SAMPLE_REGION, fd: FDS[7] },
        Request::AddMemReg {
            region: Region { xen: Some(XenMapping { flags: 2, domid: 3 }), ..SAMPLE_REGION },
            fd: FDS[7],
        },
        Request::RemMemReg { region: SAMPLE_REGION, fd: None },
        Request::RemMemReg { region: SAMPLE_REGION, fd: Some(FDS[0]) },
        Request::SetStatus(0x0f),
        Request::GetStatus,
        Request::GetSharedObject(UUID),
        Request::SetDeviceStateFd {
            direction: TransferDirection::Load,
            phase: TransferPhase::Stopped,
            fd: FDS[1],
        },
        Request::CheckDeviceState,
        Request::GetShmemConfig,
        Request::GetVringBaseSkipDrain { index: v(1) },
    ]
}

/// At least one sample reply per reply kind.
pub fn replies() -> Vec<Reply<'static>> {
    let v = VringIndex;
    vec![
        Reply::Features(VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES),
        Reply::ProtocolFeatures(ProtocolFeatures::MQ | ProtocolFeatures::CONFIGURE_MEM_SLOTS),
        Reply::MemTableBases(MemoryTable::Standard(&TWO_REGIONS)),
        Reply::LogBase(&[0; 16]),
        Reply::LogBase(&[]),
        Reply::VringBase { index: v(0), base: VringBase::split(300) },
        Reply::QueueNum(2),
        Reply::Config { offset: 0, flags: ConfigFlags::Writable, data: &CONFIG },
        Reply::Config { offset: 0, flags: ConfigFlags::Writable, data: &[] },
        Reply::CryptoSession(&CRYPTO),
        Reply::PostcopyAdvise { userfaultfd: FDS[0] },
        Reply::InflightFd {
            desc: InflightDesc {
                mmap_size: 0x3000,
                mmap_offset: 0,
                num_queues: 2,
                queue_size: 256,
            },
            fd: Some(FDS[1]),
        },
        Reply::InflightFd {
            desc: InflightDesc { mmap_size: 0, mmap_offset: 0, num_queues: 2, queue_size: 256 },
            fd: None,
        },
        Reply::MaxMemSlots(509),
        Reply::AddMemRegBase(SAMPLE_REGION),
        Reply::Status(0x0f),
        Reply::SharedObject { status: 0, fd: Some(FDS[2]) },
        Reply::SharedObject { status: 1, fd: None },
        Reply::DeviceStateFd { error: 0, fd: None },
        Reply::DeviceStateFd { error: 0, fd: Some(FDS[3]) },
        Reply::ShmemConfig(shmem_config()),
        Reply::VringBaseSkipDrain { index: v(1), base: VringBase(0x8003_8005) },
        Reply::Ack { request: FrontendCode::SetVringAddr, status: 0 },
        Reply::Ack { request: FrontendCode::SetMemTable, status: 1 },
        Reply::Ack { request: FrontendCode::AddMemReg, status: 0 },
        Reply::Ack { request: FrontendCode::IotlbMsg, status: 0 },
        Reply::Ack { request: FrontendCode::PostcopyAdvise, status: 5 },
        Reply::Ack { request: FrontendCode::PostcopyEnd, status: 0 },
        Reply::Ack { request: FrontendCode::CheckDeviceState, status: 0 },
    ]
}

/// At least one sample per back-end code.
pub fn backend_requests() -> Vec<BackendRequest> {
    let mapping =
        ShmemMapping { shmid: 1, fd_offset: 0, shm_offset: 0x1000, len: 0x2000, writable: true };
    vec![
        BackendRequest::IotlbMsg(Iotlb {
            kind: IotlbKind::Miss,
            perm: IotlbPerm::ReadOnly,
            ..IOTLB
        }),
        BackendRequest::ConfigChangeMsg,
        BackendRequest::VringHostNotifierMsg {
            index: VringIndex(1),
            size: 4096,
            offset: 0x3000,
            fd: Some(FDS[0]),
        },
        BackendRequest::VringHostNotifierMsg {
            index: VringIndex(1),
            size: 4096,
            offset: 0,
            fd: None,
        },
        BackendRequest::VringCall { index: VringIndex(0) },
        BackendRequest::VringErr { index: VringIndex(2) },
        BackendRequest::SharedObjectAdd(UUID),
        BackendRequest::SharedObjectRemove(UUID),
        BackendRequest::SharedObjectLookup(UUID),
        BackendRequest::ShmemMap { mapping, fd: FDS[1] },
        BackendRequest::ShmemUnmap(ShmemMapping { writable: false, ..mapping }),
    ]
}

pub fn backend_replies() -> Vec<BackendReply> {
    let mut out: Vec<_> = BackendCode::ALL
        .iter()
        .filter(|c| **c != BackendCode::SharedObjectLookup)
        .map(|c| BackendReply::Ack { request: *c, status: 0 })
        .collect();
    out.push(BackendReply::SharedObjectLookup { status: 0, fd: Some(FDS[0]) });
    out.push(BackendReply::SharedObjectLookup { status: 2, fd: None });
    out
}
pub mod backend_fixture;
pub mod pair;
pub use vhu_core::testing::transcript;
