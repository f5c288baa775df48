//! The front-end reading peers' failure answers as failures, not as broken sessions.

mod common;

use common::pair::*;

/// Answers the request the front-end sent last, which must be of `code`, with `payload` (the
/// back-end never sees it), and drains what the front-end does with the answer.
fn answer_by_hand(pair: &mut Pair, code: FrontendCode, payload: &[u8]) {
    pair.drain_frontend();
    let (request, _) = pair.to_backend.pop_front().expect("a request sent");
    assert_eq!(request[..4], code.as_u32().to_ne_bytes());
    let mut reply = code.as_u32().to_ne_bytes().to_vec();
    reply.extend(0x5u32.to_ne_bytes()); // VERSION | REPLY
    reply.extend((payload.len() as u32).to_ne_bytes());
    reply.extend(payload);
    assert_eq!(pair.frontend.handle_reply(&reply, &[]), Ok(()));
    pair.drain_frontend();
}

/// The front-end's one event: `code` refused with `status`.
fn assert_refused(pair: &Pair, code: FrontendCode, status: u64) {
    assert!(
        matches!(
            pair.events[..],
            [Ev::Failed(FrontendError::Nack { request, status: s })] if request == code && s == status
        ),
        "{:?}",
        pair.events
    );
}

/// libvhost-user answers a GET_CONFIG it cannot serve with a reply of size 0 (no config header
/// at all): the read failed, the session goes on.
#[test]
fn a_zero_length_get_config_reply_is_a_failed_read() {
    let mut pair = Pair::connected();
    pair.clear_log();
    pair.frontend.get_config(4, 6).unwrap();
    answer_by_hand(&mut pair, FrontendCode::GetConfig, &[]);
    assert_eq!(pair.events, [Ev::Failed(FrontendError::ConfigReadFailed { offset: 4, size: 6 })]);
    assert!(pair.frontend.is_connected());
    // The next request goes through as usual.
    pair.frontend.get_config(4, 6).unwrap();
    pair.pump();
    assert!(matches!(pair.events[1], Ev::ConfigRead { offset: 4, .. }), "{:?}", pair.events);
}

/// A back-end that refuses SET_FEATURES (with REPLY_ACK) keeps the features it had: the
/// front-end's view goes back to them, so `negotiated` (what a later restore acks) and
/// `is_logging` say what the back-end holds; the session goes on.
#[test]
fn a_refused_set_features_leaves_the_features_as_they_were() {
    let mut pair = Pair::connected();
    let before = pair.frontend.negotiated().expect("negotiated").features;
    let fewer = before.difference(DEVICE_BIT_5);
    assert_ne!(fewer, before, "the device bit was acked");
    let refuse = |pair: &mut Pair| {
        pair.clear_log();
        answer_by_hand(pair, FrontendCode::SetFeatures, &1u64.to_ne_bytes());
        assert_refused(pair, FrontendCode::SetFeatures, 1);
    };
    pair.frontend.set_features(fewer).unwrap();
    refuse(&mut pair);
    assert_eq!(pair.frontend.negotiated().expect("negotiated").features, before);
    pair.frontend.set_logging(true).unwrap();
    refuse(&mut pair);
    assert!(!pair.frontend.is_logging(), "the back-end never began logging");
    // Taken, the change holds.
    pair.frontend.set_features(fewer).unwrap();
    pair.pump();
    assert_eq!(pair.frontend.negotiated().expect("negotiated").features, fewer);
    assert!(pair.frontend.is_connected());
}

/// A back-end that refuses a memory table (with REPLY_ACK) keeps the one before, as vhu's own
/// back-end does: so does the front-end's view, against which ring addresses and added regions
/// are checked.
#[test]
fn a_refused_memory_table_leaves_the_table_before() {
    let mut pair = Pair::connected();
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    pair.pump();
    pair.clear_log();
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(1), fd)]).unwrap();
    answer_by_hand(&mut pair, FrontendCode::SetMemTable, &12u64.to_ne_bytes());
    assert_refused(&pair, FrontendCode::SetMemTable, 12);
    assert_eq!(pair.frontend.regions().iter().copied().collect::<Vec<_>>(), [region(0)]);
    assert!(pair.frontend.is_connected());
}
