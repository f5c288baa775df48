//! `parse(encode(x)) == x` for every message type of both channels, with the descriptors that travel
//! alongside.

mod common;

use std::collections::BTreeSet;

use vhu_core::{BackendCode, BackendReply, BackendRequest, FrontendCode, Reply, Request};

#[test]
fn every_frontend_code_has_a_sample() {
    let covered: BTreeSet<_> = common::requests().iter().map(Request::code).collect();
    let all: BTreeSet<_> = FrontendCode::ALL.iter().copied().collect();
    assert_eq!(covered, all);
}

#[test]
fn every_backend_code_has_a_sample() {
    let covered: BTreeSet<_> =
        common::backend_requests().iter().map(BackendRequest::code).collect();
    let all: BTreeSet<_> = BackendCode::ALL.iter().copied().collect();
    assert_eq!(covered, all);
}

#[test]
fn requests_round_trip() {
    let mut buf = [0u8; 4096];
    for request in common::requests() {
        for need_reply in [false, true] {
            let len = request.encode_into(need_reply, &mut buf).expect("encodes");
            let fds = request.fds();
            let parsed = Request::parse(&buf[..len], &fds)
                .unwrap_or_else(|e| panic!("{request:?} does not re-parse: {e}"));
            assert_eq!(parsed.message, request);
            assert_eq!(parsed.need_reply, need_reply);
            assert_eq!(parsed.message.fds(), fds);
        }
    }
}

#[test]
fn replies_round_trip() {
    let mut buf = [0u8; 4096];
    for reply in common::replies() {
        let len = reply.encode_into(&mut buf).expect("encodes");
        let fds = reply.fds();
        let parsed = Reply::parse(&buf[..len], &fds)
            .unwrap_or_else(|e| panic!("{reply:?} does not re-parse: {e}"));
        assert_eq!(parsed, reply);
        assert_eq!(parsed.fds(), fds);
    }
}

#[test]
fn backend_requests_round_trip() {
    let mut buf = [0u8; 256];
    for request in common::backend_requests() {
        for need_reply in [false, true] {
            let len = request.encode_into(need_reply, &mut buf).expect("encodes");
            let fds = request.fds();
            let parsed = BackendRequest::parse(&buf[..len], &fds)
                .unwrap_or_else(|e| panic!("{request:?} does not re-parse: {e}"));
            assert_eq!(parsed.message, request);
            assert_eq!(parsed.need_reply, need_reply);
        }
    }
}

#[test]
fn backend_replies_round_trip() {
    let mut buf = [0u8; 64];
    for reply in common::backend_replies() {
        let len = reply.encode_into(&mut buf).expect("encodes");
        let fds: Vec<_> = reply.fds().into_iter().collect();
        let parsed = BackendReply::parse(&buf[..len], &fds).expect("re-parses");
        assert_eq!(parsed, reply);
    }
}

#[test]
fn encoding_into_a_short_buffer_reports_the_size_needed() {
    let request = Request::SetMemTable {
        table: vhu_core::message::MemoryTable::Standard(&common::TWO_REGIONS),
        fds: &common::FDS[..2],
    };
    let mut big = [0u8; 256];
    let len = request.encode_into(false, &mut big).expect("fits");
    assert_eq!(len, 12 + 8 + 2 * 32);
    for short in [0, 11, 12, len - 1] {
        let mut buf = vec![0u8; short];
        assert_eq!(
            request.encode_into(false, &mut buf),
            Err(vhu_core::WireError::BufferTooSmall { need: len, got: short })
        );
    }
}

#[test]
fn encoding_refuses_what_parsing_would_refuse() {
    use vhu_core::message::MemoryTable;
    let mut buf = [0u8; 512];
    let wrong_fds = Request::SetMemTable {
        table: MemoryTable::Standard(&common::TWO_REGIONS),
        fds: &common::FDS[..1],
    };
    assert!(matches!(
        wrong_fds.encode_into(false, &mut buf),
        Err(vhu_core::WireError::MissingFds { need: 2, got: 1, .. })
    ));
    let big_config = [0u8; 257];
    let set_config = Request::SetConfig {
        offset: 0,
        flags: vhu_core::message::ConfigFlags::Writable,
        data: &big_config,
    };
    assert!(matches!(
        set_config.encode_into(false, &mut buf),
        Err(vhu_core::WireError::TooLong { got: 257, max: 256, .. })
    ));
}
