//! Transcript tests of what the back-end answers when the device or the transport cannot do what
//! a request asks: the status says so, the session goes on.

mod common;

use common::backend_fixture::*;

#[test]
fn a_ring_the_device_cannot_start_is_not_acked_zero() {
    let mut t = ready(protocol());
    configure_ring(&mut t, V0, 0);
    let kick = t.fd();
    let outs = t.send_need_reply(Request::SetVringKick(VringFd { index: V0, fd: Some(kick) }));
    assert!(matches!(outs[..], [Out::Action(Action::StartVring { .. })]), "{outs:?}");
    // Nothing else is read until the device answered.
    assert!(t.backend.is_awaiting_completion());
    assert_eq!(t.complete(Completion::Done(Err(12))), [nack(FrontendCode::SetVringKick, 12)]);
    // The ring counts as started: GET_VRING_BASE stops it and reports where it stands.
    assert_eq!(
        t.send(Request::GetVringBase { index: V0 }),
        [act(Action::StopVring { index: V0, drain: true })]
    );
    t.assert_fds_balanced();
}

#[test]
fn new_addresses_for_a_started_ring_are_honoured_or_refused() {
    let mut t = ready(protocol());
    configure_ring(&mut t, V0, 0);
    start_ring(&mut t, V0, 0, false);
    let mut addr = ring_addr(V0);
    addr.flags = VringAddrFlags::LOG;
    addr.log = 0x1000;
    let outs = t.send_need_reply(Request::SetVringAddr(addr));
    let [Out::Action(Action::UpdateVring { index: V0, config })] = outs[..] else {
        panic!("{outs:?}")
    };
    assert_eq!(config.log, Some(0x1000));
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::SetVringAddr)]);
    // A device that cannot move a running ring says so.
    let outs = t.send_need_reply(Request::SetVringAddr(ring_addr(V0)));
    assert!(matches!(outs[..], [Out::Action(Action::UpdateVring { .. })]), "{outs:?}");
    assert_eq!(t.complete(Completion::Done(Err(95))), [nack(FrontendCode::SetVringAddr, 95)]);
    // On a stopped ring the addresses are only recorded.
    t.send(Request::GetVringBase { index: V0 });
    t.complete(Completion::VringStopped { index: V0, base: VringBase::split(0) });
    assert_eq!(
        t.send_need_reply(Request::SetVringAddr(ring_addr(V0))),
        [ack(FrontendCode::SetVringAddr)]
    );
}
