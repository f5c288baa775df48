//! Transcript tests of the back-end state machine: each reads as a protocol trace, front-end
//! requests in, the driver's outputs out. Regression transcripts for the peers' bugs are named
//! after them.

mod common;

use common::backend_fixture::*;

// ---- 1. Ownership and negotiation -------------------------------------------------------------

#[test]
fn get_features_offers_protocol_features_bit() {
    let mut t = Transcript::backend(spec());
    assert_eq!(
        t.send(Request::GetFeatures),
        [Out::Reply(Reply::Features(spec().features | VirtioFeatures::PROTOCOL_FEATURES))]
    );
    assert_eq!(
        t.send(Request::GetProtocolFeatures),
        [Out::Reply(Reply::ProtocolFeatures(protocol()))]
    );
    t.assert_fds_balanced();
}

#[test]
fn protocol_features_may_come_before_set_features_and_owner() {
    let mut t = Transcript::backend(spec());
    // Spec: GET/SET_PROTOCOL_FEATURES work before SET_FEATURES.
    assert_eq!(
        t.send_need_reply(Request::SetProtocolFeatures(ProtocolFeatures::REPLY_ACK)),
        [ack(FrontendCode::SetProtocolFeatures)]
    );
    assert_eq!(t.backend.acked_protocol_features(), ProtocolFeatures::REPLY_ACK);
    assert_eq!(t.send(Request::SetFeatures(acked())), [act(Action::FeaturesAcked(acked()))]);
    assert_eq!(t.send(Request::SetOwner), []);
    assert_eq!(t.backend.acked_features(), Some(acked()));
}

#[test]
fn acked_features_must_be_offered() {
    let mut t = Transcript::backend(spec());
    let bad = acked() | VirtioFeatures::ACCESS_PLATFORM;
    assert_eq!(t.send_need_reply(Request::SetFeatures(bad)), [nack(FrontendCode::SetFeatures, 22)]);
    assert_eq!(t.backend.acked_features(), None);
    let bad = ProtocolFeatures::MQ | ProtocolFeatures::RARP;
    assert_eq!(
        t.send_need_reply(Request::SetProtocolFeatures(bad)),
        [nack(FrontendCode::SetProtocolFeatures, 22)]
    );
    assert_eq!(t.backend.acked_protocol_features(), ProtocolFeatures::empty());
    // Unknown bits are refused too.
    let unknown = ProtocolFeatures::from_bits_retain(1 << 40);
    assert_eq!(
        t.send_need_reply(Request::SetProtocolFeatures(unknown)),
        [nack(FrontendCode::SetProtocolFeatures, 22)]
    );
}

#[test]
fn protocol_features_need_bit_30_offered() {
    let mut s = spec();
    s.protocol_features = ProtocolFeatures::empty();
    // Dirty logging needs LOG_SHMFD, a protocol feature.
    s.features.remove(VirtioFeatures::LOG_ALL);
    let mut t = Transcript::backend(s.clone());
    assert_eq!(
        t.send(Request::GetFeatures),
        [Out::Reply(Reply::Features(s.features))],
        "no bit 30 without protocol features"
    );
    // GET_PROTOCOL_FEATURES has a typed reply that cannot say "no": the connection closes.
    assert_eq!(
        t.send(Request::GetProtocolFeatures),
        [Out::Close(ProtocolError::NotNegotiated {
            code: FrontendCode::GetProtocolFeatures,
            feature: "VHOST_USER_F_PROTOCOL_FEATURES"
        })]
    );
}

#[test]
fn second_set_owner_is_refused_and_reset_owner_releases() {
    let mut t = Transcript::backend(spec());
    assert_eq!(t.send_need_reply(Request::SetOwner), [ack(FrontendCode::SetOwner)]);
    assert_eq!(t.send_need_reply(Request::SetOwner), [nack(FrontendCode::SetOwner, 17)]);
    assert_eq!(t.send_need_reply(Request::ResetOwner), [ack(FrontendCode::ResetOwner)]);
    assert_eq!(t.send_need_reply(Request::SetOwner), [ack(FrontendCode::SetOwner)]);
}

// ---- 2. REPLY_ACK ------------------------------------------------------------------------------

#[test]
fn replies_carry_exactly_version_and_reply_flags() {
    let mut t = Transcript::backend(spec());
    let mut buf = [0u8; 64];
    let len = Request::SetOwner.encode_into(true, &mut buf).expect("encodes");
    t.backend.handle_frame(&buf[..len], &[]).expect("handled");
    let Some(vhu_core::backend::Output::Reply(reply)) = t.backend.poll_output() else {
        panic!("an ack is due");
    };
    let len = reply.encode_into(&mut buf).expect("encodes");
    assert_eq!(&buf[..len], &[3, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn need_reply_is_acked_for_every_request_without_its_own_reply() {
    let mut t = ready(protocol());
    configure_ring(&mut t, V0, 0);
    let kick = t.fd();
    let outs = t.send_need_reply(Request::SetVringKick(VringFd { index: V0, fd: Some(kick) }));
    assert!(matches!(outs[..], [Out::Action(Action::StartVring { .. })]), "{outs:?}");
    // The ack waits for the device's start.
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::SetVringKick)]);
    // A request with its own reply gets only that reply.
    assert_eq!(t.send_need_reply(Request::GetQueueNum), [Out::Reply(Reply::QueueNum(2))]);
    t.assert_fds_balanced();
}

// ---- 3. Memory ---------------------------------------------------------------------------------

#[test]
fn set_mem_table_replaces_the_old_table() {
    let mut t = ready(protocol());
    assert_eq!(t.backend.regions().len(), 2);
    static ONE: [wire::MemoryRegion; 1] = [common::region(0, 0x2000_0000, RAM, 0)];
    let fd = t.fd();
    assert_eq!(
        t.send(Request::SetMemTable { table: MemoryTable::Standard(&ONE), fds: &[fd] }),
        [act(Action::UnmapAll), act(Action::MapRegion { region: Region::from_wire(&ONE[0]), fd })]
    );
    assert!(t.backend.is_awaiting_completion());
    assert_eq!(t.complete(Completion::Done(Ok(()))), []);
    assert_eq!(
        t.backend.regions().iter().copied().collect::<Vec<_>>(),
        [Region::from_wire(&ONE[0])]
    );
    t.assert_fds_balanced();
}

/// A table the driver could not map is refused, and the one before stays: the driver keeps its
/// mappings (see `Action::UnmapAll`), so rings running in them go on.
#[test]
fn failed_mapping_keeps_the_old_table_and_nacks() {
    let mut t = ready(protocol());
    let before = t.backend.regions().iter().copied().collect::<Vec<_>>();
    assert_eq!(before.len(), 2);
    static ONE: [wire::MemoryRegion; 1] = [common::region(0, 0x2000_0000, RAM, 0)];
    let fd = t.fd();
    t.send_need_reply(Request::SetMemTable { table: MemoryTable::Standard(&ONE), fds: &[fd] });
    assert_eq!(t.complete(Completion::Done(Err(12))), [nack(FrontendCode::SetMemTable, 12)]);
    assert_eq!(t.backend.regions().iter().copied().collect::<Vec<_>>(), before);
    t.assert_fds_balanced();
}

#[test]
fn bad_regions_are_refused_and_their_fds_released() {
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, protocol(), acked());
    static ZERO: [wire::MemoryRegion; 1] = [common::region(0, 0, RAM, 0)];
    static OVERFLOW: [wire::MemoryRegion; 1] = [common::region(u64::MAX - 0xfff, 0x2000, RAM, 0)];
    static OVERLAP: [wire::MemoryRegion; 2] =
        [common::region(0, 0x2000, RAM, 0), common::region(0x1000, 0x2000, RAM + 0x10000, 0)];
    for table in [&ZERO[..], &OVERFLOW[..], &OVERLAP[..]] {
        let fds: Vec<_> = table.iter().map(|_| t.fd()).collect();
        let outs = t.send_need_reply(Request::SetMemTable {
            table: MemoryTable::Standard(table),
            fds: &fds,
        });
        let mut expected: Vec<_> = fds.iter().map(|fd| act(Action::CloseFd(*fd))).collect();
        expected.push(nack(FrontendCode::SetMemTable, 22));
        assert_eq!(outs, expected);
    }
    // Fewer fds than regions: a wire error, NACKed, the fds released.
    let fd = t.fd();
    let mut buf = [0u8; 256];
    let frame = {
        let request =
            Request::SetMemTable { table: MemoryTable::Standard(&REGIONS), fds: &FDS[..2] };
        let len = request.encode_into(true, &mut buf).expect("encodes");
        &buf[..len]
    };
    let outs = t.send_raw(frame, &[fd]);
    assert_eq!(outs, [act(Action::CloseFd(fd)), nack(FrontendCode::SetMemTable, 22)]);
    assert!(t.backend.regions().is_empty());
    t.assert_fds_balanced();
}

#[test]
fn mem_slots_add_and_remove() {
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, protocol(), acked());
    assert_eq!(t.send(Request::GetMaxMemSlots), [Out::Reply(Reply::MaxMemSlots(509))]);
    let r = Region {
        guest_address: 0x4000_0000,
        size: 0x10_0000,
        user_address: RAM,
        mmap_offset: 0,
        xen: None,
    };
    let fd = t.fd();
    assert_eq!(
        t.send_need_reply(Request::AddMemReg { region: r, fd }),
        [act(Action::MapRegion { region: r, fd })]
    );
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::AddMemReg)]);
    // An overlapping region is refused before any map.
    let fd2 = t.fd();
    let overlapping = Region { guest_address: 0x4008_0000, user_address: RAM + 0x100_0000, ..r };
    assert_eq!(
        t.send_need_reply(Request::AddMemReg { region: overlapping, fd: fd2 }),
        [act(Action::CloseFd(fd2)), nack(FrontendCode::AddMemReg, 22)]
    );
    // REM_MEM_REG with a stray fd: accepted, the fd released (spec compatibility clause).
    let stray = t.fd();
    let by_identity = Region { mmap_offset: 0x999, ..r };
    assert_eq!(
        t.send_need_reply(Request::RemMemReg { region: by_identity, fd: Some(stray) }),
        [act(Action::UnmapRegion(r)), act(Action::CloseFd(stray)), ack(FrontendCode::RemMemReg)]
    );
    assert_eq!(
        t.send_need_reply(Request::RemMemReg { region: r, fd: None }),
        [nack(FrontendCode::RemMemReg, 2)]
    );
    t.assert_fds_balanced();
}

#[test]
fn mem_slot_messages_need_configure_mem_slots() {
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, ProtocolFeatures::REPLY_ACK, acked());
    let fd = t.fd();
    let r = Region { guest_address: 0, size: 0x1000, user_address: RAM, mmap_offset: 0, xen: None };
    assert_eq!(
        t.send_need_reply(Request::AddMemReg { region: r, fd }),
        [act(Action::CloseFd(fd)), nack(FrontendCode::AddMemReg, 95)]
    );
    t.assert_fds_balanced();
}

#[test]
fn unmapped_ring_address_is_an_error_not_a_panic() {
    let mut t = ready(protocol());
    assert_eq!(t.send(Request::SetVringNum { index: V0, num: 256 }), []);
    let mut addr = ring_addr(V0);
    addr.used = 0x1234_0000; // in no region
    let outs = t.send_need_reply(Request::SetVringAddr(addr));
    assert_eq!(outs, [nack(FrontendCode::SetVringAddr, 14)]);
    // A ring whose table ends past a region's end.
    addr = ring_addr(V0);
    addr.descriptor = RAM + 0x1000_0000 - 0x100;
    assert_eq!(
        t.send_need_reply(Request::SetVringAddr(addr)),
        [nack(FrontendCode::SetVringAddr, 14)]
    );
}

// ---- 4. Vrings ---------------------------------------------------------------------------------

#[test]
fn ring_lifecycle_start_on_kick_stop_on_get_vring_base() {
    let mut t = ready(protocol());
    let call = configure_ring(&mut t, V0, 5);
    assert!(t.backend.is_suspended());
    start_ring(&mut t, V0, 5, false);
    assert_eq!(t.backend.vring_state(V0), Some(RingState { started: true, enabled: false }));
    assert!(!t.backend.is_suspended());
    assert_eq!(
        t.send(Request::SetVringEnable { index: V0, enable: true }),
        [act(Action::SetVringEnabled { index: V0, enabled: true })]
    );
    // QEMU >= 7.2 disables before GET_VRING_BASE.
    assert_eq!(
        t.send(Request::SetVringEnable { index: V0, enable: false }),
        [act(Action::SetVringEnabled { index: V0, enabled: false })]
    );
    assert_eq!(
        t.send(Request::GetVringBase { index: V0 }),
        [act(Action::StopVring { index: V0, drain: true })]
    );
    assert_eq!(
        t.complete(Completion::VringStopped { index: V0, base: VringBase::split(42) }),
        [Out::Reply(Reply::VringBase { index: V0, base: VringBase::split(42) })]
    );
    assert!(t.backend.is_suspended());
    let _ = call;
    t.assert_fds_balanced();
}

#[test]
fn ring_cannot_start_unconfigured_and_kick_fd_is_released() {
    let mut t = ready(protocol());
    let kick = t.fd();
    assert_eq!(
        t.send_need_reply(Request::SetVringKick(VringFd { index: V1, fd: Some(kick) })),
        [act(Action::CloseFd(kick)), nack(FrontendCode::SetVringKick, 22)]
    );
    assert_eq!(t.backend.vring_state(V1), Some(RingState::INITIAL));
    t.assert_fds_balanced();
}

#[test]
fn nofd_kick_and_call() {
    let mut t = ready(protocol());
    configure_ring(&mut t, V0, 0);
    assert_eq!(
        t.send(Request::SetVringErr(VringFd { index: V0, fd: None })),
        [act(Action::SetVringErr { index: V0, fd: None })]
    );
    let outs = t.send(Request::SetVringKick(VringFd { index: V0, fd: None }));
    assert!(matches!(outs[..], [Out::Action(Action::StartVring { kick: None, .. })]), "{outs:?}");
    assert_eq!(t.complete(Completion::Done(Ok(()))), []);
    // A new kick for a started ring replaces the old one.
    let kick = t.fd();
    assert_eq!(
        t.send(Request::SetVringKick(VringFd { index: V0, fd: Some(kick) })),
        [act(Action::ReplaceKick { index: V0, kick: Some(kick) })]
    );
    t.assert_fds_balanced();
}

#[test]
fn started_ring_refuses_size_and_base_changes() {
    let mut t = ready(protocol());
    configure_ring(&mut t, V0, 0);
    start_ring(&mut t, V0, 0, false);
    assert_eq!(
        t.send_need_reply(Request::SetVringNum { index: V0, num: 128 }),
        [nack(FrontendCode::SetVringNum, 16)]
    );
    assert_eq!(
        t.send_need_reply(Request::SetVringBase { index: V0, base: VringBase::split(3) }),
        [nack(FrontendCode::SetVringBase, 16)]
    );
    // Address updates of a started ring are forwarded (QEMU toggles the log flag so).
    let mut addr = ring_addr(V0);
    addr.flags = VringAddrFlags::LOG;
    addr.log = 0x9000;
    let mut config = ring_config(V0, 256, VringBase::split(0));
    config.log = Some(0x9000);
    assert_eq!(
        t.send(Request::SetVringAddr(addr)),
        [act(Action::UpdateVring { index: V0, config, logging_only: false })]
    );
}

#[test]
fn queue_size_rules() {
    let mut t = ready(protocol());
    for num in [0u16, 2048, 100] {
        assert_eq!(
            t.send_need_reply(Request::SetVringNum { index: V0, num }),
            [nack(FrontendCode::SetVringNum, 22)],
            "size {num}"
        );
    }
    assert_eq!(
        t.send_need_reply(Request::SetVringNum { index: V0, num: 1024 }),
        [ack(FrontendCode::SetVringNum)]
    );
}

#[test]
fn out_of_range_index_is_refused() {
    let mut t = ready(protocol());
    // A ring the device does not have: the failure is the status, and the session goes on.
    assert_eq!(
        t.send_need_reply(Request::SetVringNum { index: VringIndex(2), num: 256 }),
        [nack(FrontendCode::SetVringNum, 34)]
    );
    let call = t.fd();
    assert_eq!(
        t.send(Request::SetVringCall(VringFd { index: VringIndex(9), fd: Some(call) })),
        [act(Action::CloseFd(call))],
        "nothing to answer without NEED_REPLY"
    );
    assert_eq!(t.send(Request::GetQueueNum), [Out::Reply(Reply::QueueNum(2))]);
    // A typed reply cannot say "failed", and the front-end waits for it: that closes.
    assert_eq!(
        t.send(Request::GetVringBase { index: VringIndex(7) }),
        [Out::Close(ProtocolError::VringOutOfRange {
            code: FrontendCode::GetVringBase,
            index: 7,
            queues: 2
        })]
    );
    t.assert_fds_balanced();
}

#[test]
fn packed_ring_base_round_trips_wrap_counters() {
    let mut t = Transcript::backend(spec());
    let features = acked() | VirtioFeatures::RING_PACKED;
    negotiate(&mut t, protocol(), features);
    map_memory(&mut t);
    let packed = VringBase::packed(PackedBase {
        avail_index: 17,
        avail_wrap: true,
        used_index: 9,
        used_wrap: false,
    });
    assert_eq!(
        t.send(Request::SetVringNum { index: V0, num: 300 }),
        [],
        "packed sizes need not be powers of two"
    );
    assert_eq!(t.send(Request::SetVringBase { index: V0, base: packed }), []);
    assert_eq!(t.send(Request::SetVringAddr(ring_addr(V0))), []);
    let kick = t.fd();
    let outs = t.send(Request::SetVringKick(VringFd { index: V0, fd: Some(kick) }));
    let [Out::Action(Action::StartVring { config, .. })] = outs[..] else { panic!("{outs:?}") };
    assert_eq!(t.complete(Completion::Done(Ok(()))), []);
    assert!(config.packed);
    assert_eq!(config.base, packed);
    t.send(Request::GetVringBase { index: V0 });
    let after = VringBase::packed(PackedBase {
        avail_index: 40,
        avail_wrap: false,
        used_index: 38,
        used_wrap: true,
    });
    assert_eq!(
        t.complete(Completion::VringStopped { index: V0, base: after }),
        [Out::Reply(Reply::VringBase { index: V0, base: after })]
    );
    assert_eq!(after.0 >> 31, 1);
    t.assert_fds_balanced();
}

#[test]
fn split_base_above_16_bits_is_refused() {
    let mut t = ready(protocol());
    assert_eq!(
        t.send_need_reply(Request::SetVringBase { index: V0, base: VringBase(0x1_0000) }),
        [nack(FrontendCode::SetVringBase, 22)]
    );
}

#[test]
fn set_vring_enable_needs_bit_30_acked() {
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, protocol(), VirtioFeatures::VERSION_1);
    assert_eq!(
        t.send_need_reply(Request::SetVringEnable { index: V0, enable: true }),
        [nack(FrontendCode::SetVringEnable, 95)]
    );
}

// ---- 5. Queue count, config, status, reset -----------------------------------------------------

#[test]
fn queue_num_needs_mq() {
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, protocol(), acked());
    assert_eq!(t.send(Request::GetQueueNum), [Out::Reply(Reply::QueueNum(2))]);
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, ProtocolFeatures::REPLY_ACK, acked());
    assert!(matches!(
        t.send(Request::GetQueueNum)[..],
        [Out::Close(ProtocolError::NotNegotiated { .. })]
    ));
}

#[test]
fn config_read_and_write_are_bounds_checked() {
    let mut t = ready(protocol());
    assert_eq!(
        t.send(Request::GetConfig { offset: 0, size: 40, flags: ConfigFlags::Writable }),
        [act(Action::ReadConfig { offset: 0, size: 40 })]
    );
    let config = [7u8; 40];
    assert_eq!(
        t.complete(Completion::ConfigRead(Some(&config))),
        [Out::Reply(Reply::Config { offset: 0, flags: ConfigFlags::Writable, data: &[7; 40] })]
    );
    // Past the end: the spec's failure answer, an empty config.
    assert_eq!(
        t.send(Request::GetConfig { offset: 36, size: 8, flags: ConfigFlags::Writable }),
        [Out::Reply(Reply::Config { offset: 0, flags: ConfigFlags::Writable, data: &[] })]
    );
    // A device that returns the wrong number of bytes is a failed read.
    t.send(Request::GetConfig { offset: 0, size: 4, flags: ConfigFlags::Writable });
    assert_eq!(
        t.complete(Completion::ConfigRead(Some(&config[..3]))),
        [Out::Reply(Reply::Config { offset: 0, flags: ConfigFlags::Writable, data: &[] })]
    );
    let data = [1, 2, 3, 4];
    assert_eq!(
        t.send_need_reply(Request::SetConfig {
            offset: 36,
            flags: ConfigFlags::Migration,
            data: &data
        }),
        [act(Action::WriteConfig { offset: 36, data: &[1, 2, 3, 4], migration: true })]
    );
    assert_eq!(t.complete(Completion::Done(Err(1))), [nack(FrontendCode::SetConfig, 1)]);
    assert_eq!(
        t.send_need_reply(Request::SetConfig {
            offset: 38,
            flags: ConfigFlags::Writable,
            data: &data
        }),
        [nack(FrontendCode::SetConfig, 34)]
    );
}

#[test]
fn status_and_reset_device() {
    let mut t = ready(protocol());
    assert_eq!(t.send(Request::SetStatus(0xf)), [act(Action::SetStatus(0xf))]);
    assert_eq!(t.send(Request::GetStatus), [Out::Reply(Reply::Status(0xf))]);
    configure_ring(&mut t, V0, 0);
    t.send(Request::SetVringEnable { index: V0, enable: true });
    start_ring(&mut t, V0, 0, true);
    // The ack waits for the driver's reset: the front-end must not meet the old queues.
    assert_eq!(t.send_need_reply(Request::ResetDevice), [act(Action::ResetDevice)]);
    assert!(t.backend.is_awaiting_completion());
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::ResetDevice)]);
    assert_eq!(t.backend.vring_state(V0), Some(RingState::INITIAL));
    assert_eq!(t.backend.acked_features(), None);
    assert_eq!(t.send(Request::GetStatus), [Out::Reply(Reply::Status(0))]);
    // Ownership, protocol features and memory survive the reset.
    assert_eq!(t.send_need_reply(Request::SetOwner), [nack(FrontendCode::SetOwner, 17)]);
    assert_eq!(t.backend.acked_protocol_features(), protocol());
    assert_eq!(t.backend.regions().len(), 2);
    // The ring forgot its configuration: it cannot start before it is set up again.
    let kick = t.fd();
    assert_eq!(
        t.send_need_reply(Request::SetVringKick(VringFd { index: V0, fd: Some(kick) })),
        [act(Action::CloseFd(kick)), nack(FrontendCode::SetVringKick, 22)]
    );
    t.assert_fds_balanced();
}
