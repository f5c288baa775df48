//! Transcript tests of the back-end channel's results: every request a device sends ends in
//! exactly one result (sent, answered, or lost), answers are matched in order, and a broken or
//! replaced channel loses what was outstanding instead of leaving the device waiting.

mod common;

use common::backend_fixture::*;
use vhu_core::backend::{BackendOutcome, BackendRequestId, BackendResult, MAX_OUTSTANDING};
use vhu_core::{BackendCode, BackendReply};

/// A back-end with a channel and a started ring, negotiated with `protocol`.
fn with_channel(protocol: ProtocolFeatures) -> Transcript {
    let mut t = ready(protocol);
    open_channel(&mut t);
    configure_ring(&mut t, V0, 0);
    start_ring(&mut t, V0, 0, false);
    t
}

fn answer(reply: BackendReply) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let len = reply.encode_into(&mut buf).expect("reply encodes");
    buf.truncate(len);
    buf
}

fn result(id: BackendRequestId, request: BackendCode, outcome: BackendOutcome) -> Out {
    Out::Result(BackendResult { id, request, outcome })
}

#[test]
fn answers_are_matched_to_requests_in_order() {
    let mut t = with_channel(protocol());
    let first = t.backend.send_config_change().unwrap();
    let second = t.backend.send_shared_object_add(Uuid([3; 16])).unwrap();
    t.drain_outputs();
    assert!(!t.backend.is_awaiting_backend_reply(), "nothing is on the wire yet");
    assert_eq!(t.sent(first), []);
    assert_eq!(t.sent(second), []);
    assert!(t.backend.is_awaiting_backend_reply());
    assert_eq!(t.backend.backend_outstanding(), 2);

    let ack = answer(BackendReply::Ack { request: BackendCode::ConfigChangeMsg, status: 0 });
    let (got, outs) = t.channel_reply(&ack, &[]);
    let expected = BackendResult {
        id: first,
        request: BackendCode::ConfigChangeMsg,
        outcome: BackendOutcome::Acked(0),
    };
    assert_eq!(got, Ok(expected));
    assert_eq!(outs, [Out::Result(expected)]);
    assert!(expected.outcome.is_success());

    let nack = answer(BackendReply::Ack { request: BackendCode::SharedObjectAdd, status: 12 });
    let (got, outs) = t.channel_reply(&nack, &[]);
    assert_eq!(got.map(|r| r.outcome), Ok(BackendOutcome::Acked(12)));
    assert_eq!(outs, [result(second, BackendCode::SharedObjectAdd, BackendOutcome::Acked(12))]);
    assert!(!outs.is_empty() && !BackendOutcome::Acked(12).is_success());
    assert_eq!(t.backend.backend_outstanding(), 0);
    assert!(!t.backend.is_awaiting_backend_reply());
    t.assert_fds_balanced();
}

#[test]
fn without_reply_ack_a_request_ends_when_sent() {
    let mut t = with_channel(protocol() - ProtocolFeatures::REPLY_ACK);
    let id = t.backend.send_config_change().unwrap();
    assert_eq!(
        t.drain_outputs(),
        [Out::Backend { id, request: BackendRequest::ConfigChangeMsg, need_reply: false }]
    );
    assert_eq!(t.backend.backend_outstanding(), 1);
    assert_eq!(t.sent(id), [result(id, BackendCode::ConfigChangeMsg, BackendOutcome::Sent)]);
    assert_eq!(t.backend.backend_outstanding(), 0);
    // A stale or unknown id changes nothing.
    assert_eq!(t.sent(id), []);
}

#[test]
fn shared_object_lookup_is_always_answered_and_its_fd_handed_on() {
    let mut t = with_channel(protocol() - ProtocolFeatures::REPLY_ACK);
    let id = t.backend.send_shared_object_lookup(Uuid([9; 16])).unwrap();
    let outs = t.drain_outputs();
    assert_eq!(
        outs,
        [Out::Backend {
            id,
            request: BackendRequest::SharedObjectLookup(Uuid([9; 16])),
            need_reply: true
        }]
    );
    assert_eq!(t.sent(id), []);
    let object = t.fd();
    let frame = answer(BackendReply::SharedObjectLookup { status: 0, fd: Some(FdToken(0)) });
    let (got, outs) = t.channel_reply(&frame, &[object]);
    let outcome = BackendOutcome::SharedObject { status: 0, fd: Some(object) };
    assert_eq!(got.map(|r| r.outcome), Ok(outcome));
    assert_eq!(outs, [result(id, BackendCode::SharedObjectLookup, outcome)]);
    t.assert_fds_balanced();
}

#[test]
fn an_answer_to_nothing_breaks_the_channel_and_loses_what_was_outstanding() {
    let mut t = with_channel(protocol());
    let id = t.backend.send_config_change().unwrap();
    t.drain_outputs();
    t.sent(id);
    // The front-end answers a message that was never sent, with a descriptor.
    let stray = t.fd();
    let frame = answer(BackendReply::SharedObjectLookup { status: 0, fd: Some(FdToken(0)) });
    let (got, outs) = t.channel_reply(&frame, &[stray]);
    assert_eq!(got, Err(ProtocolError::UnexpectedBackendReply(BackendCode::SharedObjectLookup)));
    assert_eq!(
        outs,
        [
            act(Action::CloseFd(stray)),
            result(id, BackendCode::ConfigChangeMsg, BackendOutcome::Lost)
        ]
    );
    assert_eq!(t.backend.send_config_change(), Err(ProtocolError::NoBackendChannel));
    t.assert_fds_balanced();
}

#[test]
fn a_malformed_answer_breaks_the_channel() {
    let mut t = with_channel(protocol());
    let id = t.backend.send_config_change().unwrap();
    t.drain_outputs();
    t.sent(id);
    let mut frame = answer(BackendReply::Ack { request: BackendCode::ConfigChangeMsg, status: 0 });
    frame.truncate(frame.len() - 3);
    let (got, outs) = t.channel_reply(&frame, &[]);
    assert!(matches!(got, Err(ProtocolError::Wire(_))), "{got:?}");
    assert_eq!(outs, [result(id, BackendCode::ConfigChangeMsg, BackendOutcome::Lost)]);
    assert_eq!(t.backend.backend_outstanding(), 0);
}

#[test]
fn a_lost_channel_loses_every_request_sent_or_not_until_a_new_one_arrives() {
    let mut t = with_channel(protocol());
    let sent = t.backend.send_config_change().unwrap();
    let queued = t.backend.send_vring_err(V0);
    assert_eq!(queued, Err(ProtocolError::BackendFeature("INBAND_NOTIFICATIONS")));
    let queued = t.backend.send_shared_object_remove(Uuid([1; 16])).unwrap();
    t.drain_outputs();
    t.sent(sent);
    t.backend.handle_backend_channel_lost();
    assert_eq!(
        t.drain_outputs(),
        [
            result(sent, BackendCode::ConfigChangeMsg, BackendOutcome::Lost),
            result(queued, BackendCode::SharedObjectRemove, BackendOutcome::Lost),
        ]
    );
    assert_eq!(t.backend.send_config_change(), Err(ProtocolError::NoBackendChannel));
    open_channel(&mut t);
    assert!(t.backend.send_config_change().is_ok());
    t.drain_outputs();
}

/// A channel with one request sent and unanswered, then SET_BACKEND_REQ_FD: the request is lost
/// at once and the new socket goes to the driver, which owes its completion.
fn replace_with_one_outstanding(need_reply: bool) -> Transcript {
    let mut t = with_channel(protocol());
    let id = t.backend.send_config_change().unwrap();
    t.drain_outputs();
    t.sent(id);
    let channel = t.fd();
    let request = Request::SetBackendReqFd(channel);
    let outs = if need_reply { t.send_need_reply(request) } else { t.send(request) };
    assert_eq!(
        outs,
        [
            result(id, BackendCode::ConfigChangeMsg, BackendOutcome::Lost),
            act(Action::SetBackendChannel(channel)),
        ]
    );
    assert!(t.backend.is_awaiting_completion());
    t
}

#[test]
fn a_replaced_channel_loses_what_the_old_one_owed() {
    let mut t = replace_with_one_outstanding(false);
    assert_eq!(t.complete(Completion::Done(Ok(()))), []);
    // An answer arriving late on the new channel answers nothing.
    let ack = answer(BackendReply::Ack { request: BackendCode::ConfigChangeMsg, status: 0 });
    let (got, _) = t.channel_reply(&ack, &[]);
    assert_eq!(got, Err(ProtocolError::UnexpectedBackendReply(BackendCode::ConfigChangeMsg)));
    t.assert_fds_balanced();
}

#[test]
fn outstanding_requests_are_bounded() {
    let mut t = with_channel(protocol());
    let ids: Vec<_> =
        (0..MAX_OUTSTANDING).map(|_| t.backend.send_config_change().unwrap()).collect();
    assert_eq!(t.backend.send_config_change(), Err(ProtocolError::BackendBusy(MAX_OUTSTANDING)));
    t.drain_outputs();
    t.sent(ids[0]);
    let ack = answer(BackendReply::Ack { request: BackendCode::ConfigChangeMsg, status: 0 });
    let (got, _) = t.channel_reply(&ack, &[]);
    assert_eq!(got.map(|r| r.id), Ok(ids[0]));
    assert!(t.backend.send_config_change().is_ok(), "a slot was freed");
}

#[test]
fn a_channel_the_driver_refuses_is_nacked_and_leaves_none() {
    // With REPLY_ACK the answer waits for the driver: it may not be able to use the socket.
    let mut t = replace_with_one_outstanding(true);
    let einval = 22;
    assert_eq!(
        t.complete(Completion::Done(Err(einval))),
        [nack(FrontendCode::SetBackendReqFd, einval)]
    );
    // Neither the refused socket nor the one it replaced carries requests.
    assert_eq!(t.backend.send_config_change(), Err(ProtocolError::NoBackendChannel));
    // A socket the driver takes is acked only once it did.
    let channel = t.fd();
    assert_eq!(
        t.send_need_reply(Request::SetBackendReqFd(channel)),
        [act(Action::SetBackendChannel(channel))]
    );
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::SetBackendReqFd)]);
    assert!(t.backend.send_config_change().is_ok());
    t.drain_outputs();
    t.assert_fds_balanced();
}
