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
    // The ring is not started: it can be set up again (QEMU, whose start failed, sends
    // SET_VRING_NUM next time, not GET_VRING_BASE) and a new kick starts it.
    assert!(!t.backend.vring_state(V0).expect("ring 0").started);
    assert_eq!(
        t.send_need_reply(Request::SetVringNum { index: V0, num: 256 }),
        [ack(FrontendCode::SetVringNum)]
    );
    let kick = t.fd();
    let outs = t.send_need_reply(Request::SetVringKick(VringFd { index: V0, fd: Some(kick) }));
    assert!(matches!(outs[..], [Out::Action(Action::StartVring { .. })]), "{outs:?}");
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::SetVringKick)]);
    assert!(t.backend.vring_state(V0).expect("ring 0").started);
    // Started now: GET_VRING_BASE stops it and reports where it stands.
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
    let [Out::Action(Action::UpdateVring { index: V0, config, logging_only })] = outs[..] else {
        panic!("{outs:?}")
    };
    assert_eq!(config.log, Some(0x1000));
    assert!(!logging_only, "a log elsewhere than the used ring moves what is logged");
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::SetVringAddr)]);
    // Only the logging switched: the same ring, logged at its used ring's guest address, and
    // the same ring unlogged again. A moved ring is more than that.
    let logging_only = |t: &mut Transcript, addr: VringAddr| {
        let outs = t.send_need_reply(Request::SetVringAddr(addr));
        let [Out::Action(Action::UpdateVring { logging_only, .. })] = outs[..] else {
            panic!("{outs:?}")
        };
        t.complete(Completion::Done(Ok(())));
        logging_only
    };
    let mut at_used = ring_addr(V0);
    at_used.flags = VringAddrFlags::LOG;
    at_used.log = ring_config(V0, 256, VringBase::split(0)).used;
    assert!(logging_only(&mut t, at_used), "logging on");
    assert!(logging_only(&mut t, ring_addr(V0)), "logging off");
    let mut moved = ring_addr(V0);
    moved.used += 0x1000;
    assert!(!logging_only(&mut t, moved), "a moved ring");
    // A device that cannot move a running ring says so.
    let outs = t.send_need_reply(Request::SetVringAddr(ring_addr(V0)));
    assert!(matches!(outs[..], [Out::Action(Action::UpdateVring { .. })]), "{outs:?}");
    assert_eq!(t.complete(Completion::Done(Err(95))), [nack(FrontendCode::SetVringAddr, 95)]);
    // The refused addresses are not the ring's: logging switched at them is a move, not a
    // switch the device could make in place.
    let mut refused = moved;
    refused.used += 0x1000;
    let outs = t.send_need_reply(Request::SetVringAddr(refused));
    assert!(matches!(outs[..], [Out::Action(Action::UpdateVring { .. })]), "{outs:?}");
    assert_eq!(t.complete(Completion::Done(Err(95))), [nack(FrontendCode::SetVringAddr, 95)]);
    let mut refused_logged = refused;
    refused_logged.flags = VringAddrFlags::LOG;
    refused_logged.log = ring_config(V0, 256, VringBase::split(0)).used + 0x2000;
    assert!(!logging_only(&mut t, refused_logged), "the refused ring was never the device's");
    // On a stopped ring the addresses are only recorded.
    t.send(Request::GetVringBase { index: V0 });
    t.complete(Completion::VringStopped { index: V0, base: VringBase::split(0) });
    assert_eq!(
        t.send_need_reply(Request::SetVringAddr(ring_addr(V0))),
        [ack(FrontendCode::SetVringAddr)]
    );
}

/// A move refused without NEED_REPLY (the front-end never hears of it, as QEMU's unacked
/// SET_VRING_ADDR): the front-end's latest addresses are those a restart takes, since it sends
/// no new ones before it kicks.
#[test]
fn a_restart_takes_the_addresses_last_sent_even_after_a_silent_refusal() {
    let mut t = ready(protocol());
    configure_ring(&mut t, V0, 0);
    start_ring(&mut t, V0, 0, false);
    let mut moved = ring_addr(V0);
    moved.used += 0x1000;
    let outs = t.send(Request::SetVringAddr(moved));
    assert!(matches!(outs[..], [Out::Action(Action::UpdateVring { .. })]), "{outs:?}");
    assert_eq!(t.complete(Completion::Done(Err(95))), [], "no reply was asked for");
    t.send(Request::GetVringBase { index: V0 });
    t.complete(Completion::VringStopped { index: V0, base: VringBase::split(0) });
    let kick = t.fd();
    let outs = t.send(Request::SetVringKick(VringFd { index: V0, fd: Some(kick) }));
    let [Out::Action(Action::StartVring { config, .. })] = outs[..] else { panic!("{outs:?}") };
    assert_eq!(config.used, ring_config(V0, 256, VringBase::split(0)).used + 0x1000);
}

/// A request code core does not know: its frame is read whole, so the stream is intact. It is
/// answered with a failure when NEED_REPLY asks for an answer, its descriptors are closed, and
/// the session goes on.
#[test]
fn an_unknown_request_is_refused_and_the_session_goes_on() {
    let mut t = ready(protocol());
    let frame = |flags: u32| {
        let mut frame: Vec<u8> = [1000u32, flags, 8].iter().flat_map(|w| w.to_ne_bytes()).collect();
        frame.extend(7u64.to_ne_bytes());
        frame
    };
    assert_eq!(t.send_raw(&frame(0x1 | 0x8), &[]), [Out::Nack { request: 1000, status: 95 }]);
    let fd = t.fd();
    assert_eq!(t.send_raw(&frame(0x1), &[fd]), [act(Action::CloseFd(fd))]);
    assert_eq!(t.send(Request::GetQueueNum), [Out::Reply(Reply::QueueNum(2))]);
    // The answer is a REPLY_ACK frame for that code.
    let mut buf = [0u8; 32];
    let len = vhu_core::message::encode_status(1000, 95, &mut buf).unwrap();
    assert_eq!(
        buf[..len],
        [[1000u32, 0x5, 8].map(u32::to_ne_bytes).concat(), 95u64.to_ne_bytes().to_vec()].concat()
    );
    // A broken header still closes: the next frame's start is unknown.
    let mut bad = frame(0x2);
    bad[0] = 0xff;
    assert!(matches!(t.send_raw(&bad, &[])[..], [Out::Close(_)]));
    t.assert_fds_balanced();
}

/// Reserved header flag bits (spec "Header": bits 4-31) leave the frame's boundary intact: the
/// message is refused as any refusal of its kind is (a failure status where NEED_REPLY asks for
/// one), and the session goes on.
#[test]
fn reserved_flag_bits_refuse_the_message_not_the_session() {
    let mut t = ready(protocol());
    let mut buf = [0u8; 64];
    let len = Request::SetVringNum { index: V0, num: 256 }.encode_into(true, &mut buf).unwrap();
    buf[4..8].copy_from_slice(&(0x1u32 | 0x8 | 0x10).to_ne_bytes());
    assert_eq!(t.send_raw(&buf[..len], &[]), [nack(FrontendCode::SetVringNum, 22)]);
    assert_eq!(t.send(Request::GetQueueNum), [Out::Reply(Reply::QueueNum(2))]);
    // With REPLY as well, the request claims to be a reply: the peer lost track, and the
    // session ends as for REPLY alone.
    buf[4..8].copy_from_slice(&(0x1u32 | 0x4 | 0x10).to_ne_bytes());
    assert!(matches!(t.send_raw(&buf[..len], &[])[..], [Out::Close(_)]));
    t.assert_fds_balanced();
}

/// With VIRTIO_F_ACCESS_PLATFORM the ring addresses are IOVAs (reference "SET_VRING_ADDR"),
/// which only the IOTLB translates: core passes them on as they are, marked, instead of taking
/// them for front-end user addresses (none of the memory table covers these).
#[test]
fn ring_addresses_under_access_platform_are_iovas() {
    let mut s = spec();
    s.features |= VirtioFeatures::ACCESS_PLATFORM;
    let mut t = Transcript::backend(s);
    negotiate(&mut t, protocol(), acked() | VirtioFeatures::ACCESS_PLATFORM);
    map_memory(&mut t);
    assert_eq!(t.send(Request::SetVringNum { index: V0, num: 256 }), []);
    let addr = VringAddr {
        index: V0,
        flags: VringAddrFlags::empty(),
        descriptor: 0x1000_0000,
        available: 0x1000_4000,
        used: 0x1000_8000,
        log: 0,
    };
    assert_eq!(t.send_need_reply(Request::SetVringAddr(addr)), [ack(FrontendCode::SetVringAddr)]);
    let kick = t.fd();
    let outs = t.send(Request::SetVringKick(VringFd { index: V0, fd: Some(kick) }));
    let [Out::Action(Action::StartVring { config, .. })] = outs[..] else { panic!("{outs:?}") };
    assert!(config.iova, "{config:?}");
    assert_eq!(
        (config.descriptor, config.available, config.used),
        (0x1000_0000, 0x1000_4000, 0x1000_8000)
    );
    // An IOVA range that wraps is still refused.
    let mut wrapping = addr;
    wrapping.used = u64::MAX - 8;
    let outs = t.send_need_reply(Request::SetVringAddr(wrapping));
    assert!(!matches!(outs[..], [Out::Reply(Reply::Ack { status: 0, .. })]), "{outs:?}");
}
