//! Golden frames: hand-written bytes laid out as the vhost-user spec describes each message
//! ("Header", "Message types" and the payload descriptions), checked in both directions: our encoder
//! produces exactly these bytes and our parser reads them back to the same message.
//!
//! The protocol is native-endian; these frames are the little-endian form.
#![cfg(target_endian = "little")]

mod common;

use hex_literal::hex;
use vhu_core::message::{
    ConfigFlags, InflightDesc, MemoryTable, ShmemMapping, TransferDirection, TransferPhase,
    VringAddr, VringAddrFlags, VringBase, VringFd,
};
use vhu_core::{
    BackendRequest, FdToken, FrontendCode, ProtocolFeatures, Reply, Request, VirtioFeatures,
    VringIndex,
};

fn check_request(bytes: &[u8], need_reply: bool, request: Request<'_>, fds: &[FdToken]) {
    let mut buf = [0u8; 512];
    let len = request.encode_into(need_reply, &mut buf).expect("encodes");
    assert_eq!(&buf[..len], bytes, "encoding of {request:?}");
    let parsed = Request::parse(bytes, fds).expect("golden frame parses");
    assert_eq!(parsed.message, request);
    assert_eq!(parsed.need_reply, need_reply);
    assert_eq!(request.fds().as_slice(), fds);
}

fn check_reply(bytes: &[u8], reply: Reply<'_>, fds: &[FdToken]) {
    let mut buf = [0u8; 512];
    let len = reply.encode_into(&mut buf).expect("encodes");
    assert_eq!(&buf[..len], bytes, "encoding of {reply:?}");
    assert_eq!(Reply::parse(bytes, fds), Ok(reply));
}

const FD: FdToken = FdToken(3);

#[test]
fn get_features() {
    check_request(&hex!("01000000 01000000 00000000"), false, Request::GetFeatures, &[]);
}

#[test]
fn get_features_reply() {
    check_reply(
        &hex!("01000000 05000000 08000000 00000070 01000000"),
        Reply::Features(
            VirtioFeatures::VERSION_1
                | VirtioFeatures::PROTOCOL_FEATURES
                | VirtioFeatures::RING_EVENT_IDX
                | VirtioFeatures::RING_INDIRECT_DESC,
        ),
        &[],
    );
}

#[test]
fn set_features_with_need_reply() {
    check_request(
        &hex!("02000000 09000000 08000000 00000040 01000000"),
        true,
        Request::SetFeatures(VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES),
        &[],
    );
}

#[test]
fn set_owner() {
    check_request(&hex!("03000000 01000000 00000000"), false, Request::SetOwner, &[]);
}

#[test]
fn set_mem_table_one_region() {
    static REGIONS: [vhu_core::wire::MemoryRegion; 1] =
        [common::region(0, 0x4000_0000, 0x7f00_0000_0000, 0)];
    check_request(
        &hex!(
            "05000000 01000000 28000000"
            "01000000 00000000"
            "0000000000000000 0000004000000000 0000000000 7f0000 0000000000000000"
        ),
        false,
        Request::SetMemTable { table: MemoryTable::Standard(&REGIONS), fds: &[FD] },
        &[FD],
    );
}

#[test]
fn set_vring_num() {
    check_request(
        &hex!("08000000 01000000 08000000 00000000 00010000"),
        false,
        Request::SetVringNum { index: VringIndex(0), num: 256 },
        &[],
    );
}

#[test]
fn set_vring_addr() {
    check_request(
        &hex!(
            "09000000 01000000 28000000 01000000 01000000"
            "0010000000000000 0030000000000000 0020000000000000 0040000000000000"
        ),
        false,
        Request::SetVringAddr(VringAddr {
            index: VringIndex(1),
            flags: VringAddrFlags::LOG,
            descriptor: 0x1000,
            used: 0x3000,
            available: 0x2000,
            log: 0x4000,
        }),
        &[],
    );
}

#[test]
fn set_vring_base() {
    check_request(
        &hex!("0a000000 01000000 08000000 00000000 2a000000"),
        false,
        Request::SetVringBase { index: VringIndex(0), base: VringBase::split(42) },
        &[],
    );
}

#[test]
fn get_vring_base_reply() {
    check_reply(
        &hex!("0b000000 05000000 08000000 01000000 07000000"),
        Reply::VringBase { index: VringIndex(1), base: VringBase::split(7) },
        &[],
    );
}

#[test]
fn set_vring_kick_with_fd_and_nofd() {
    check_request(
        &hex!("0c000000 01000000 08000000 0100000000000000"),
        false,
        Request::SetVringKick(VringFd { index: VringIndex(1), fd: Some(FD) }),
        &[FD],
    );
    check_request(
        &hex!("0c000000 01000000 08000000 0201000000000000"),
        false,
        Request::SetVringKick(VringFd { index: VringIndex(2), fd: None }),
        &[],
    );
}

#[test]
fn get_protocol_features_reply() {
    check_reply(
        &hex!("0f000000 05000000 08000000 0980000000000000"),
        Reply::ProtocolFeatures(
            ProtocolFeatures::MQ
                | ProtocolFeatures::REPLY_ACK
                | ProtocolFeatures::CONFIGURE_MEM_SLOTS,
        ),
        &[],
    );
}

#[test]
fn set_vring_enable() {
    check_request(
        &hex!("12000000 01000000 08000000 00000000 01000000"),
        false,
        Request::SetVringEnable { index: VringIndex(0), enable: true },
        &[],
    );
}

#[test]
fn iotlb_msg_is_32_bytes() {
    check_request(
        &hex!(
            "16000000 01000000 20000000"
            "0010000000000000 0020000000000000 0010000000 7f0000 03 02 000000000000"
        ),
        false,
        Request::IotlbMsg(common::IOTLB),
        &[],
    );
}

#[test]
fn get_config_carries_size_bytes() {
    check_request(
        &hex!("18000000 01000000 10000000 00000000 04000000 00000000 00000000"),
        false,
        Request::GetConfig { offset: 0, size: 4, flags: ConfigFlags::Writable },
        &[],
    );
}

#[test]
fn get_inflight_fd_is_24_bytes() {
    check_request(
        &hex!("1f000000 01000000 18000000 0000000000000000 0000000000000000 0200 0004 00000000"),
        false,
        Request::GetInflightFd(InflightDesc {
            mmap_size: 0,
            mmap_offset: 0,
            num_queues: 2,
            queue_size: 1024,
        }),
        &[],
    );
}

#[test]
fn add_mem_reg() {
    check_request(
        &hex!(
            "25000000 01000000 28000000 0000000000000000"
            "0000000001000000 0000100000000000 00000034127f0000 0020000000000000"
        ),
        false,
        Request::AddMemReg { region: common::SAMPLE_REGION, fd: FD },
        &[FD],
    );
}

#[test]
fn set_device_state_fd_and_reply() {
    check_request(
        &hex!("2a000000 01000000 08000000 00000000 00000000"),
        false,
        Request::SetDeviceStateFd {
            direction: TransferDirection::Save,
            phase: TransferPhase::Stopped,
            fd: FD,
        },
        &[FD],
    );
    check_reply(
        &hex!("2a000000 05000000 08000000 0001000000000000"),
        Reply::DeviceStateFd { error: 0, fd: None },
        &[],
    );
}

#[test]
fn reply_ack() {
    check_reply(
        &hex!("09000000 05000000 08000000 0000000000000000"),
        Reply::Ack { request: FrontendCode::SetVringAddr, status: 0 },
        &[],
    );
}

#[test]
fn get_vring_base_skip_drain_is_45() {
    check_request(
        &hex!("2d000000 01000000 08000000 01000000 00000000"),
        false,
        Request::GetVringBaseSkipDrain { index: VringIndex(1) },
        &[],
    );
}

#[test]
fn backend_shmem_map_and_config_change() {
    let request = BackendRequest::ShmemMap {
        mapping: ShmemMapping {
            shmid: 1,
            fd_offset: 0,
            shm_offset: 0x1000,
            len: 0x2000,
            writable: true,
        },
        fd: FD,
    };
    let golden = hex!(
        "09000000 01000000 28000000 01 00000000000000"
        "0000000000000000 0010000000000000 0020000000000000 0100000000000000"
    );
    let mut buf = [0u8; 64];
    let len = request.encode_into(false, &mut buf).expect("encodes");
    assert_eq!(&buf[..len], &golden);
    assert_eq!(BackendRequest::parse(&golden, &[FD]).map(|i| i.message), Ok(request));

    let golden = hex!("02000000 09000000 00000000");
    let len = BackendRequest::ConfigChangeMsg.encode_into(true, &mut buf).expect("encodes");
    assert_eq!(&buf[..len], &golden);
    let parsed = BackendRequest::parse(&golden, &[]).expect("parses");
    assert_eq!(parsed.message, BackendRequest::ConfigChangeMsg);
    assert!(parsed.need_reply);
}
