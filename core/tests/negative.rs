//! Malformed frames, for every message: each kind of damage yields its own typed error.

mod common;

use vhu_core::wire::Code;
use vhu_core::{
    BackendCode, BackendReply, BackendRequest, FdToken, FrontendCode, Reply, Request, WireError,
};

fn frame(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(&request.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    out.extend_from_slice(payload);
    out
}

/// One encoded sample per front-end code: (code, frame, fds).
fn samples() -> Vec<(FrontendCode, Vec<u8>, Vec<FdToken>)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for request in common::requests() {
        // Prefer a sample that carries fds, so the fd checks have something to remove.
        let fds = request.fds();
        if !seen.insert((request.code(), fds.is_empty())) {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        let len = request.encode_into(false, &mut buf).expect("sample encodes");
        buf.truncate(len);
        out.push((request.code(), buf, fds.to_vec()));
    }
    out
}

/// Messages whose single fd is optional, so dropping it leaves a valid message.
fn fd_is_optional(code: FrontendCode) -> bool {
    matches!(code, FrontendCode::SetLogBase | FrontendCode::RemMemReg)
}

#[test]
fn truncated_header_for_every_message() {
    for (code, bytes, fds) in samples() {
        for k in 0..12 {
            assert_eq!(
                Request::parse(&bytes[..k], &fds).map(|i| i.message),
                Err(WireError::TruncatedHeader { got: k }),
                "{code}"
            );
        }
    }
}

#[test]
fn bad_version_for_every_message() {
    for (code, mut bytes, fds) in samples() {
        for version in [0u32, 2, 3] {
            bytes[4..8].copy_from_slice(&version.to_ne_bytes());
            assert_eq!(
                Request::parse(&bytes, &fds).map(|i| i.message),
                Err(WireError::BadVersion { version, flags: version }),
                "{code}"
            );
        }
    }
}

#[test]
fn reserved_and_reply_flags_for_every_message() {
    for (code, mut bytes, fds) in samples() {
        bytes[4..8].copy_from_slice(&0x21u32.to_ne_bytes());
        assert_eq!(
            Request::parse(&bytes, &fds).map(|i| i.message),
            Err(WireError::ReservedFlags { flags: 0x21 }),
            "{code}"
        );
        bytes[4..8].copy_from_slice(&0x5u32.to_ne_bytes());
        assert_eq!(
            Request::parse(&bytes, &fds).map(|i| i.message),
            Err(WireError::UnexpectedReplyFlag { code: Code::Frontend(code) }),
            "{code}"
        );
    }
}

#[test]
fn unknown_codes() {
    for raw in [0u32, 46, 1002, u32::MAX] {
        assert_eq!(
            Request::parse(&frame(raw, 1, &[]), &[]).map(|i| i.message),
            Err(WireError::UnknownRequest(raw))
        );
        assert_eq!(Reply::parse(&frame(raw, 5, &[0; 8]), &[]), Err(WireError::UnknownRequest(raw)));
    }
    for raw in [0u32, 11, 1002] {
        assert_eq!(
            BackendRequest::parse(&frame(raw, 1, &[]), &[]).map(|i| i.message),
            Err(WireError::UnknownRequest(raw))
        );
    }
}

#[test]
fn header_size_disagreeing_with_frame_for_every_message() {
    for (code, bytes, fds) in samples() {
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Request::parse(&longer, &fds).map(|i| i.message),
            Err(WireError::FrameLength {
                declared: bytes.len() as u32 - 12,
                got: bytes.len() - 11
            }),
            "{code}"
        );
    }
}

#[test]
fn wrong_payload_size_for_every_message() {
    for (code, bytes, fds) in samples() {
        let payload = &bytes[12..];
        let mut longer = payload.to_vec();
        longer.push(0);
        let mut cases = vec![longer];
        if !payload.is_empty() {
            cases.push(payload[..payload.len() - 1].to_vec());
        }
        if code == FrontendCode::CreateCryptoSession {
            // The session description is opaque: only its bounds are checked.
            cases = vec![Vec::new(), vec![0; vhu_core::limits::MAX_CRYPTO_SESSION_SIZE + 1]];
        }
        for case in cases {
            let bytes = frame(code.as_u32(), 1, &case);
            let result = Request::parse(&bytes, &fds).map(|i| i.message);
            assert!(
                matches!(result, Err(WireError::PayloadSize { code: c, got, .. }) if c == Code::Frontend(code) && got == case.len()),
                "{code} with {} payload bytes: {result:?}",
                case.len()
            );
        }
    }
}

#[test]
fn too_many_fds_for_every_message() {
    for (code, bytes, mut fds) in samples() {
        if fd_is_optional(code) && fds.is_empty() {
            // One fd would be the optional one.
            fds.push(FdToken(98));
        }
        fds.push(FdToken(99));
        let result = Request::parse(&bytes, &fds).map(|i| i.message);
        assert!(
            matches!(result, Err(WireError::TooManyFds { code: c, got, .. }) if c == Code::Frontend(code) && got == fds.len()),
            "{code}: {result:?}"
        );
    }
}

#[test]
fn too_few_fds_for_every_message_that_takes_them() {
    let mut checked = 0;
    for (code, bytes, mut fds) in samples() {
        if fds.is_empty() {
            continue;
        }
        fds.pop();
        let result = Request::parse(&bytes, &fds).map(|i| i.message);
        if fd_is_optional(code) {
            assert!(result.is_ok(), "{code}: the fd is optional: {result:?}");
            assert!(result.expect("checked").fds().is_empty());
        } else {
            assert!(
                matches!(result, Err(WireError::MissingFds { code: c, got, .. }) if c == Code::Frontend(code) && got == fds.len()),
                "{code}: {result:?}"
            );
            checked += 1;
        }
    }
    // SET_MEM_TABLE, SET_LOG_FD, SET_VRING_KICK/CALL, SET_BACKEND_REQ_FD, SET_INFLIGHT_FD,
    // GPU_SET_SOCKET, ADD_MEM_REG, SET_DEVICE_STATE_FD.
    assert_eq!(checked, 9);
}

#[test]
fn field_values_are_validated() {
    let code = |c: FrontendCode| c.as_u32();
    let state = |index: u32, num: u32| {
        let mut p = index.to_ne_bytes().to_vec();
        p.extend_from_slice(&num.to_ne_bytes());
        p
    };
    let parse = |bytes: &[u8], fds: &[FdToken]| Request::parse(bytes, fds).map(|_| ());
    let fc = |c| Code::Frontend(c);

    assert_eq!(
        parse(&frame(code(FrontendCode::GetVringBase), 1, &state(256, 0)), &[]),
        Err(WireError::VringIndexOutOfRange {
            code: fc(FrontendCode::GetVringBase),
            index: 256,
            max: 255
        })
    );
    assert_eq!(
        parse(&frame(code(FrontendCode::SetVringEnable), 1, &state(0, 2)), &[]),
        Err(WireError::InvalidValue {
            code: fc(FrontendCode::SetVringEnable),
            field: "vring enable",
            value: 2
        })
    );
    assert_eq!(
        parse(&frame(code(FrontendCode::SetVringNum), 1, &state(0, 32769)), &[]),
        Err(WireError::InvalidValue {
            code: fc(FrontendCode::SetVringNum),
            field: "queue size",
            value: 32769
        })
    );
    // Vring-fd word: bits above NOFD are reserved; NOFD and the fd count must agree.
    let kick = code(FrontendCode::SetVringKick);
    assert!(matches!(
        parse(&frame(kick, 1, &(0x200u64).to_ne_bytes()), &[FdToken(1)]),
        Err(WireError::InvalidValue { value: 0x200, .. })
    ));
    assert!(matches!(
        parse(&frame(kick, 1, &(0x100u64).to_ne_bytes()), &[FdToken(1)]),
        Err(WireError::TooManyFds { max: 0, got: 1, .. })
    ));
    assert!(matches!(
        parse(&frame(kick, 1, &(0x0u64).to_ne_bytes()), &[]),
        Err(WireError::MissingFds { need: 1, got: 0, .. })
    ));
    // Memory table: more than 8 regions is refused before sizes are looked at.
    let mut table = 9u32.to_ne_bytes().to_vec();
    table.extend_from_slice(&[0; 4 + 9 * 32]);
    assert_eq!(
        parse(&frame(code(FrontendCode::SetMemTable), 1, &table), &common::FDS),
        Err(WireError::TooManyRegions { got: 9, max: 8 })
    );
    // Config: a transfer larger than any config space.
    let mut config = [0u32.to_ne_bytes(), 257u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat();
    config.extend_from_slice(&[0; 257]);
    assert_eq!(
        parse(&frame(code(FrontendCode::GetConfig), 1, &config), &[]),
        Err(WireError::ConfigTooLarge { code: fc(FrontendCode::GetConfig), size: 257, max: 256 })
    );
    let mut config = [0u32.to_ne_bytes(), 4u32.to_ne_bytes(), 2u32.to_ne_bytes()].concat();
    config.extend_from_slice(&[0; 4]);
    assert!(matches!(
        parse(&frame(code(FrontendCode::SetConfig), 1, &config), &[]),
        Err(WireError::InvalidValue { field: "config flags", value: 2, .. })
    ));
    // IOTLB: unknown type and permission.
    let mut iotlb = [0u8; 32];
    iotlb[24] = 1;
    iotlb[25] = 5;
    assert!(matches!(
        parse(&frame(code(FrontendCode::IotlbMsg), 1, &iotlb), &[]),
        Err(WireError::InvalidValue { field: "iotlb type", value: 5, .. })
    ));
    iotlb[24] = 4;
    iotlb[25] = 2;
    assert!(matches!(
        parse(&frame(code(FrontendCode::IotlbMsg), 1, &iotlb), &[]),
        Err(WireError::InvalidValue { field: "iotlb perm", value: 4, .. })
    ));
    // Device state: unknown direction and phase.
    let dsf = code(FrontendCode::SetDeviceStateFd);
    assert!(matches!(
        parse(&frame(dsf, 1, &state(2, 0)), &[FdToken(1)]),
        Err(WireError::InvalidValue { field: "transfer direction", value: 2, .. })
    ));
    assert!(matches!(
        parse(&frame(dsf, 1, &state(0, 1)), &[FdToken(1)]),
        Err(WireError::InvalidValue { field: "migration phase", value: 1, .. })
    ));
    // Vring address: only the LOG flag exists.
    let mut addr = [0u8; 40];
    addr[4] = 2;
    assert!(matches!(
        parse(&frame(code(FrontendCode::SetVringAddr), 1, &addr), &[]),
        Err(WireError::InvalidValue { field: "vring address flags", value: 2, .. })
    ));
    // Status is one byte, MTU sixteen bits.
    assert!(matches!(
        parse(&frame(code(FrontendCode::SetStatus), 1, &256u64.to_ne_bytes()), &[]),
        Err(WireError::InvalidValue { field: "device status", value: 256, .. })
    ));
    assert!(matches!(
        parse(&frame(code(FrontendCode::NetSetMtu), 1, &65536u64.to_ne_bytes()), &[]),
        Err(WireError::InvalidValue { field: "mtu", value: 65536, .. })
    ));
}

#[test]
fn replies_must_be_exactly_version_and_reply() {
    let ack = 0u64.to_ne_bytes();
    for flags in [0x1u32, 0xd, 0x4 | 0x2] {
        let bytes = frame(FrontendCode::SetVringAddr.as_u32(), flags, &ack);
        let result = Reply::parse(&bytes, &[]);
        let expected = if flags & 0x3 == 1 {
            Err(WireError::BadReplyFlags {
                code: Code::Frontend(FrontendCode::SetVringAddr),
                flags,
            })
        } else {
            Err(WireError::BadVersion { version: flags & 3, flags })
        };
        assert_eq!(result, expected);
    }
}

#[test]
fn reply_fd_rules() {
    // GET_INFLIGHT_FD: a non-empty area must come with its fd, an empty one without.
    let mut inflight = [0u8; 24];
    inflight[0] = 0x10;
    let code = FrontendCode::GetInflightFd.as_u32();
    assert!(matches!(
        Reply::parse(&frame(code, 5, &inflight), &[]),
        Err(WireError::MissingFds { need: 1, got: 0, .. })
    ));
    inflight[0] = 0;
    assert!(matches!(
        Reply::parse(&frame(code, 5, &inflight), &[FdToken(1)]),
        Err(WireError::TooManyFds { max: 0, got: 1, .. })
    ));
    // SET_DEVICE_STATE_FD: bits above 8 are reserved.
    let code = FrontendCode::SetDeviceStateFd.as_u32();
    assert!(matches!(
        Reply::parse(&frame(code, 5, &0x300u64.to_ne_bytes()), &[]),
        Err(WireError::InvalidValue { value: 0x300, .. })
    ));
    assert!(matches!(
        Reply::parse(&frame(code, 5, &0u64.to_ne_bytes()), &[]),
        Err(WireError::MissingFds { need: 1, got: 0, .. })
    ));
    // A typed reply with the wrong size.
    assert!(matches!(
        Reply::parse(&frame(FrontendCode::GetFeatures.as_u32(), 5, &[0; 4]), &[]),
        Err(WireError::PayloadSize { expected: 8, got: 4, .. })
    ));
}

#[test]
fn backend_channel_errors() {
    let mut buf = [0u8; 64];
    for request in common::backend_requests() {
        let len = request.encode_into(false, &mut buf).expect("encodes");
        let bytes = &buf[..len];
        let code = Code::Backend(request.code());
        let mut fds = request.fds().to_vec();
        // Wrong size.
        let mut longer = bytes[12..].to_vec();
        longer.push(0);
        let result = BackendRequest::parse(&frame(request.code().as_u32(), 1, &longer), &fds);
        assert!(
            matches!(result, Err(WireError::PayloadSize { code: c, .. }) if c == code),
            "{code}: {result:?}"
        );
        // One fd too many.
        fds.push(FdToken(77));
        let result = BackendRequest::parse(bytes, &fds);
        assert!(
            matches!(result, Err(WireError::TooManyFds { code: c, .. }) if c == code),
            "{code}: {result:?}"
        );
        // Truncated header and bad version.
        assert_eq!(
            BackendRequest::parse(&bytes[..11], &[]),
            Err(WireError::TruncatedHeader { got: 11 })
        );
        let mut bad = bytes.to_vec();
        bad[4] = 2;
        assert_eq!(
            BackendRequest::parse(&bad, &[]),
            Err(WireError::BadVersion { version: 2, flags: 2 })
        );
    }
    // Never more than 8 fds on the back-end channel.
    let nine = [FdToken(0); 9];
    assert!(matches!(
        BackendRequest::parse(&frame(BackendCode::ConfigChangeMsg.as_u32(), 1, &[]), &nine),
        Err(WireError::TooManyFds { max: 8, got: 9, .. })
    ));
    // SHMEM_MAP needs its fd; flags other than bit 0 are reserved.
    let map = [0u8; 40];
    assert!(matches!(
        BackendRequest::parse(&frame(BackendCode::ShmemMap.as_u32(), 1, &map), &[]),
        Err(WireError::MissingFds { need: 1, got: 0, .. })
    ));
    let mut map = map;
    map[32] = 2;
    assert!(matches!(
        BackendRequest::parse(&frame(BackendCode::ShmemUnmap.as_u32(), 1, &map), &[]),
        Err(WireError::InvalidValue { field: "shmem map flags", value: 2, .. })
    ));
    // Replies on the back-end channel.
    assert!(matches!(
        BackendReply::parse(&frame(BackendCode::ConfigChangeMsg.as_u32(), 1, &[0; 8]), &[]),
        Err(WireError::BadReplyFlags { flags: 1, .. })
    ));
    assert!(matches!(
        BackendReply::parse(
            &frame(BackendCode::ConfigChangeMsg.as_u32(), 5, &[0; 8]),
            &[FdToken(1)]
        ),
        Err(WireError::TooManyFds { .. })
    ));
}
