//! Front-end flows against the real back-end: handshakes, memory, rings.

mod common;

use common::pair::*;

// ---------------------------------------------------------------------------------------------
// Handshakes

#[test]
fn first_connect_negotiates_offered_and_wanted() {
    let mut pair = Pair::new(spec(), config(), CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).unwrap();
    pair.pump();

    use FrontendCode as C;
    assert_eq!(
        pair.sent,
        [
            (C::SetOwner, false),
            (C::GetFeatures, false),
            (C::GetProtocolFeatures, false),
            (C::SetProtocolFeatures, false),
            (C::GetQueueNum, false),
            (C::GetMaxMemSlots, false),
            (C::SetBackendReqFd, true),
            (C::SetFeatures, true),
        ]
    );
    let negotiated = Negotiated {
        offered_features: spec().offered_features(),
        features: EXPECTED_FEATURES,
        // Offered ∩ wanted: INBAND_NOTIFICATIONS is offered but not wanted, HOST_NOTIFIER and
        // SHARED_OBJECT wanted but not offered.
        protocol_features: EXPECTED_PROTOCOL,
        queues: Some(2),
        max_mem_slots: Some(16),
    };
    assert_eq!(pair.events, [Ev::Connected(negotiated)]);
    assert_eq!(pair.frontend.negotiated(), Some(negotiated));
    assert_eq!(pair.backend.acked_features(), Some(EXPECTED_FEATURES));
    assert_eq!(pair.backend.acked_protocol_features(), EXPECTED_PROTOCOL);
    assert!(!pair.backend.acked_features().unwrap().contains(VirtioFeatures::LOG_ALL));
    pair.assert_clean();
}

#[test]
fn connect_without_protocol_features_enables_rings_by_features() {
    let mut spec = spec();
    spec.protocol_features = ProtocolFeatures::empty();
    // Dirty logging needs LOG_SHMFD, a protocol feature.
    spec.features.remove(VirtioFeatures::LOG_ALL);
    let mut pair = Pair::new(spec, config(), CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).unwrap();
    pair.pump();
    use FrontendCode as C;
    assert_eq!(pair.codes(), [C::SetOwner, C::GetFeatures, C::SetFeatures]);
    let negotiated = pair.frontend.negotiated().unwrap();
    assert!(negotiated.protocol_features.is_empty());
    assert_eq!(
        negotiated.features,
        VirtioFeatures::VERSION_1 | VirtioFeatures::RING_EVENT_IDX | DEVICE_BIT_5
    );
    // The unused back-end channel socket was released.
    assert!(pair.fe_out.contains(&channel));

    pair.clear_log();
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    let setup = setup(&mut pair, 0, 0);
    pair.frontend.start_vring(VringIndex(0), setup).unwrap();
    pair.pump();
    // No SET_VRING_ENABLE without bit 30: SET_FEATURES already enabled the rings.
    assert_eq!(
        pair.codes(),
        [
            C::SetMemTable,
            C::SetVringNum,
            C::SetVringBase,
            C::SetVringAddr,
            C::SetVringCall,
            C::SetVringKick
        ]
    );
    assert!(pair.sent.iter().all(|(_, need_reply)| !need_reply));
    assert!(pair.acts.contains(&Act::StartVring { index: 0, base: VringBase(0), enabled: true }));
    assert_eq!(
        pair.frontend.set_vring_enable(VringIndex(0), false),
        Err(FrontendError::NotNegotiated {
            code: C::SetVringEnable,
            feature: "VHOST_USER_F_PROTOCOL_FEATURES"
        })
    );
    pair.assert_clean();
}

#[test]
fn connect_without_channel_drops_backend_req_and_what_depends_on_it() {
    let mut pair = Pair::new(spec(), config(), CONFIG.to_vec());
    pair.frontend.connect(None).unwrap();
    pair.pump();
    let acked = pair.frontend.negotiated().unwrap().protocol_features;
    assert!(!acked.contains(ProtocolFeatures::BACKEND_REQ));
    assert!(!acked.contains(ProtocolFeatures::BACKEND_SEND_FD));
    assert!(acked.contains(ProtocolFeatures::REPLY_ACK));
    assert!(!pair.codes().contains(&FrontendCode::SetBackendReqFd));
    assert_eq!(pair.backend.acked_protocol_features(), acked);
    pair.assert_clean();
}

#[test]
fn a_front_end_is_configured_until_its_handshake_starts() {
    let mut pair = Pair::new(spec(), config(), CONFIG.to_vec());
    let mut other = config();
    other.features = VirtioFeatures::empty();
    other.protocol_features.remove(ProtocolFeatures::SHMEM | ProtocolFeatures::REPLY_ACK);
    pair.frontend.configure(other).unwrap();
    pair.frontend.connect(None).unwrap();
    assert_eq!(pair.frontend.configure(config()), Err(FrontendError::AlreadyConnected));
    pair.pump();
    // What was negotiated follows the configuration given last before the handshake.
    let negotiated = pair.frontend.negotiated().unwrap();
    assert!(!negotiated.features.contains(VirtioFeatures::RING_EVENT_IDX));
    assert!(!negotiated.protocol_features.contains(ProtocolFeatures::SHMEM));
    assert!(!negotiated.protocol_features.contains(ProtocolFeatures::REPLY_ACK));
    pair.assert_clean();
}

#[test]
fn operations_wait_for_the_handshake() {
    let mut pair = Pair::new(spec(), config(), CONFIG.to_vec());
    assert_eq!(pair.frontend.get_status(), Err(FrontendError::NotConnected));
    pair.frontend.connect(None).unwrap();
    assert_eq!(pair.frontend.connect(None), Err(FrontendError::AlreadyConnected));
    pair.drain_frontend();
    // GET_FEATURES waits for its reply: nothing else goes out meanwhile.
    assert_eq!(pair.codes(), [FrontendCode::SetOwner, FrontendCode::GetFeatures]);
    assert!(pair.frontend.is_awaiting_reply());
    assert_eq!(pair.frontend.get_config(0, 4), Err(FrontendError::NotConnected));
    pair.pump();
    assert!(pair.frontend.is_connected());
    pair.assert_clean();
}

#[test]
fn restore_after_migration_sends_no_get_and_waits_for_acks() {
    let source = Pair::connected();
    let saved = source.frontend.negotiated().unwrap();

    let mut pair = Pair::new(spec(), config(), CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.restore(saved, Some(channel)).unwrap();
    pair.drain_frontend();
    // REPLY_ACK is acked by SET_PROTOCOL_FEATURES, so SET_BACKEND_REQ_FD waits for its ack.
    use FrontendCode as C;
    assert_eq!(
        pair.sent,
        [(C::SetOwner, false), (C::SetProtocolFeatures, false), (C::SetBackendReqFd, true)]
    );
    assert!(pair.frontend.is_awaiting_reply());
    pair.pump();
    assert_eq!(
        pair.sent,
        [
            (C::SetOwner, false),
            (C::SetProtocolFeatures, false),
            (C::SetBackendReqFd, true),
            (C::SetFeatures, true),
        ]
    );
    assert!(pair.codes().iter().all(|code| !matches!(
        code,
        C::GetFeatures | C::GetProtocolFeatures | C::GetQueueNum | C::GetMaxMemSlots
    )));
    assert_eq!(pair.events, [Ev::Connected(saved)]);
    assert_eq!(pair.backend.acked_features(), Some(saved.features));
    assert_eq!(pair.backend.acked_protocol_features(), saved.protocol_features);

    // Every later request without a reply of its own carries NEED_REPLY and gets its ack.
    pair.clear_log();
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    pair.frontend.set_status(0x0f).unwrap();
    pair.pump();
    assert_eq!(pair.sent, [(C::SetMemTable, true), (C::SetStatus, true)]);
    assert_eq!(pair.events, [Ev::Done(C::SetMemTable), Ev::Done(C::SetStatus)]);
    pair.assert_clean();
}

#[test]
fn restore_without_reply_ack_never_sets_need_reply() {
    let mut config = config();
    config.protocol_features.remove(ProtocolFeatures::REPLY_ACK);
    let mut source = Pair::new(spec(), config, CONFIG.to_vec());
    let channel = source.vmm_fd();
    source.frontend.connect(Some(channel)).unwrap();
    source.pump();
    let saved = source.frontend.negotiated().unwrap();
    assert!(!saved.protocol_features.contains(ProtocolFeatures::REPLY_ACK));

    let mut pair = Pair::new(spec(), config, CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.restore(saved, Some(channel)).unwrap();
    let fd = pair.vmm_fd();
    pair.pump();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    pair.pump();
    assert!(pair.sent.iter().all(|(_, need_reply)| !need_reply), "{:?}", pair.sent);
    assert_eq!(pair.sent.len(), 5);
    assert_eq!(pair.backend.regions().len(), 1);
    pair.assert_clean();
}

#[test]
fn restore_refuses_inconsistent_saved_features() {
    let mut frontend = Frontend::new(config());
    let saved = Negotiated {
        offered_features: EXPECTED_FEATURES,
        features: EXPECTED_FEATURES,
        protocol_features: ProtocolFeatures::BACKEND_SEND_FD,
        queues: None,
        max_mem_slots: None,
    };
    assert_eq!(
        frontend.restore(saved, None),
        Err(FrontendError::InconsistentFeatures(ProtocolFeatures::BACKEND_SEND_FD))
    );
    let saved = Negotiated { protocol_features: ProtocolFeatures::BACKEND_REQ, ..saved };
    assert_eq!(frontend.restore(saved, None), Err(FrontendError::NoBackendChannel));
    assert!(frontend.poll_output().is_none());
}

// ---------------------------------------------------------------------------------------------
// Memory

#[test]
fn memory_hot_plug_past_eight_regions() {
    let mut pair = Pair::connected();
    let table: Vec<_> = (0..2).map(|i| (region(i), pair.vmm_fd())).collect();
    pair.frontend.set_mem_table(&table).unwrap();
    for i in 2..12 {
        let fd = pair.vmm_fd();
        pair.frontend.add_mem_region(region(i), fd).unwrap();
    }
    pair.pump();
    use FrontendCode as C;
    assert_eq!(pair.sent[0], (C::SetMemTable, true));
    assert_eq!(pair.sent[1..], [(C::AddMemReg, true); 10]);
    assert_eq!(pair.backend.regions().len(), 12);
    let mapped: Vec<_> = pair
        .acts
        .iter()
        .filter_map(|a| if let Act::MapRegion(r) = a { Some(r.guest_address) } else { None })
        .collect();
    assert_eq!(mapped, (0..12).map(|i| region(i).guest_address).collect::<Vec<_>>());
    assert_eq!(pair.events.iter().filter(|e| **e == Ev::Done(C::AddMemReg)).count(), 10);

    // Up to the 16 slots GET_MAX_MEM_SLOTS reported, and not one more.
    for i in 12..16 {
        let fd = pair.vmm_fd();
        pair.frontend.add_mem_region(region(i), fd).unwrap();
    }
    assert_eq!(
        pair.frontend.add_mem_region(region(16), FdToken(9999)),
        Err(FrontendError::Memory {
            code: C::AddMemReg,
            error: vhu_core::regions::RegionError::Full { max: 16 }
        })
    );
    assert!(matches!(
        pair.frontend.add_mem_region(region(3), FdToken(9999)),
        Err(FrontendError::Memory { error: vhu_core::regions::RegionError::Overlap { .. }, .. })
    ));
    pair.pump();
    assert_eq!(pair.backend.regions().len(), 16);

    pair.clear_log();
    pair.frontend.remove_mem_region(region(5)).unwrap();
    pair.pump();
    assert_eq!(pair.sent, [(C::RemMemReg, true)]);
    assert_eq!(pair.acts, [Act::UnmapRegion(region(5))]);
    assert_eq!(pair.backend.regions().len(), 15);
    assert_eq!(pair.frontend.regions().len(), 15);
    assert!(pair.frontend.remove_mem_region(region(5)).is_err());

    // A SET_MEM_TABLE carries at most 8 regions.
    let nine: Vec<_> = (20..29).map(|i| (region(i), FdToken(9999))).collect();
    assert_eq!(
        pair.frontend.set_mem_table(&nine),
        Err(FrontendError::TooManyRegions { got: 9, max: 8 })
    );
    pair.assert_clean();
}

#[test]
fn refused_add_mem_reg_frees_the_slot() {
    let mut pair = Pair::connected();
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    pair.pump();
    // Make the back-end already hold region 1, unknown to the front-end, by sending it an
    // ADD_MEM_REG directly: the front-end's own ADD_MEM_REG of it is then refused.
    let mut buf = [0u8; 128];
    let extra = Request::AddMemReg { region: region(1), fd: FdToken(0) };
    let len = extra.encode_into(false, &mut buf).unwrap();
    let received = pair.receive(1);
    pair.be_in.extend(&received);
    pair.backend.handle_frame(&buf[..len], &received).unwrap();
    pair.drive_backend();
    assert_eq!(pair.backend.regions().len(), 2);

    pair.clear_log();
    let fd = pair.vmm_fd();
    pair.frontend.add_mem_region(region(1), fd).unwrap();
    assert_eq!(pair.frontend.regions().len(), 2);
    pair.pump();
    assert!(matches!(
        pair.events[..],
        [Ev::Failed(FrontendError::Nack { request: FrontendCode::AddMemReg, .. })]
    ));
    assert_eq!(pair.frontend.regions().len(), 1);
    assert!(matches!(pair.backend_errors[..], [ProtocolError::Memory { .. }]));
    pair.backend_errors.clear();
    pair.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Rings

#[test]
fn stop_and_restart_rings_preserve_bases() {
    let mut pair = Pair::connected();
    start_two_rings(&mut pair);
    use FrontendCode as C;
    assert_eq!(
        pair.codes()[1..7],
        [
            C::SetVringNum,
            C::SetVringBase,
            C::SetVringAddr,
            C::SetVringCall,
            C::SetVringKick,
            C::SetVringEnable
        ]
    );
    assert!(pair.sent.iter().all(|(_, need_reply)| *need_reply));
    assert!(pair.acts.contains(&Act::StartVring { index: 0, base: VringBase(0), enabled: false }));
    assert!(pair.acts.contains(&Act::Enabled { index: 1, enabled: true }));
    assert!(pair.frontend.is_vring_started(VringIndex(1)));

    pair.process(0, 7);
    pair.process(1, 3);
    pair.clear_log();
    pair.frontend.stop_vring(VringIndex(0)).unwrap();
    pair.frontend.stop_vring(VringIndex(1)).unwrap();
    pair.pump();
    assert_eq!(
        pair.sent,
        [
            (C::SetVringEnable, true),
            (C::GetVringBase, false),
            (C::SetVringEnable, true),
            (C::GetVringBase, false)
        ]
    );
    assert_eq!(
        pair.events,
        [
            Ev::Done(C::SetVringEnable),
            Ev::VringStopped { index: VringIndex(0), base: VringBase(7) },
            Ev::Done(C::SetVringEnable),
            Ev::VringStopped { index: VringIndex(1), base: VringBase(3) },
        ]
    );
    assert_eq!(
        pair.acts,
        [
            Act::Enabled { index: 0, enabled: false },
            Act::StopVring(0),
            Act::Enabled { index: 1, enabled: false },
            Act::StopVring(1)
        ]
    );
    assert!(pair.backend.is_suspended());
    assert!(!pair.frontend.is_vring_started(VringIndex(0)));

    pair.clear_log();
    for (index, base) in [(0u8, 7u16), (1, 3)] {
        let setup = setup(&mut pair, index, base);
        pair.frontend.start_vring(VringIndex(index), setup).unwrap();
    }
    pair.pump();
    let starts: Vec<_> = pair
        .acts
        .iter()
        .filter_map(|a| match a {
            Act::StartVring { index, base, .. } => Some((*index, *base)),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [(0, VringBase(7)), (1, VringBase(3))]);
    assert_eq!(pair.backend.vring_state(VringIndex(1)).map(|s| s.is_runnable()), Some(true));
    pair.assert_clean();
}

#[test]
fn ring_calls_are_checked_before_sending() {
    let mut pair = Pair::connected();
    start_two_rings(&mut pair);
    let setup_fds = setup(&mut pair, 0, 0);
    // Hand the unused tokens back so the balance still holds.
    pair.fe_in.retain(|fd| Some(*fd) != setup_fds.call && Some(*fd) != setup_fds.kick);
    assert_eq!(
        pair.frontend.start_vring(VringIndex(0), setup_fds),
        Err(FrontendError::VringStarted { code: FrontendCode::SetVringKick, index: 0 })
    );
    assert_eq!(
        pair.frontend.stop_vring(VringIndex(2)),
        Err(FrontendError::VringOutOfRange { index: 2, rings: 2 })
    );
    // Found by fuzzing: a size SET_VRING_NUM cannot carry is refused before anything is sent.
    let mut too_big = setup(&mut pair, 1, 0);
    pair.fe_in.retain(|fd| Some(*fd) != too_big.call && Some(*fd) != too_big.kick);
    pair.frontend.stop_vring(VringIndex(1)).expect("ring 1 is started");
    pair.pump();
    too_big.size = 40000;
    assert_eq!(
        pair.frontend.start_vring(VringIndex(1), too_big),
        Err(FrontendError::InvalidQueueSize { index: 1, size: 40000 })
    );
    assert!(matches!(
        pair.frontend.stop_vring_skip_drain(VringIndex(0)),
        Err(FrontendError::NotNegotiated { .. })
    ));
    pair.pump();
    pair.assert_clean();
}

#[test]
fn refused_ring_size_is_a_failed_event_and_the_session_goes_on() {
    let mut pair = Pair::connected();
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    let mut odd = setup(&mut pair, 0, 0);
    odd.size = 3; // Split rings need a power of two.
    pair.frontend.start_vring(VringIndex(0), odd).unwrap();
    pair.pump();
    assert_eq!(pair.events[0], Ev::Done(FrontendCode::SetMemTable));
    assert_eq!(
        pair.events[1],
        Ev::Failed(FrontendError::Nack { request: FrontendCode::SetVringNum, status: 22 })
    );
    // Nothing of the start went out after the refused step: no kick starts a ring the back-end
    // refused (its call and kick tokens are released), and the ring counts as stopped.
    assert_eq!(pair.codes(), [FrontendCode::SetMemTable, FrontendCode::SetVringNum]);
    assert!(pair.acts.iter().all(|act| !matches!(act, Act::StartVring { .. })));
    assert!(!pair.frontend.is_vring_started(VringIndex(0)));
    assert!(pair.frontend.is_connected());
    pair.frontend.get_status().unwrap();
    pair.pump();
    assert_eq!(pair.events.last(), Some(&Ev::Status(0)));
    assert!(matches!(pair.backend_errors[..], [ProtocolError::InvalidQueueSize { num: 3, .. }]));
    pair.backend_errors.clear();
    // Started again, right this time.
    let right = setup(&mut pair, 0, 0);
    pair.frontend.start_vring(VringIndex(0), right).unwrap();
    pair.pump();
    assert!(pair.acts.contains(&Act::StartVring { index: 0, base: VringBase(0), enabled: false }));
    assert!(pair.frontend.is_vring_started(VringIndex(0)));
    pair.assert_clean();
}

#[test]
fn one_request_at_a_time_while_an_ack_is_owed() {
    let mut pair = Pair::connected();
    pair.frontend.set_status(1).unwrap();
    pair.frontend.set_status(3).unwrap();
    pair.frontend.get_status().unwrap();
    pair.drain_frontend();
    assert_eq!(pair.sent, [(FrontendCode::SetStatus, true)]);
    assert!(pair.frontend.is_awaiting_reply());
    pair.pump();
    use FrontendCode as C;
    assert_eq!(pair.sent, [(C::SetStatus, true), (C::SetStatus, true), (C::GetStatus, false)]);
    assert_eq!(pair.events, [Ev::Done(C::SetStatus), Ev::Done(C::SetStatus), Ev::Status(3)]);
    pair.assert_clean();
}

/// A ring the device could not start is stopped on both sides: the front-end starts it again
/// as it started it first.
#[test]
fn a_ring_the_device_could_not_start_is_started_again() {
    let mut pair = Pair::connected();
    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    pair.refuse_starts = 1;
    let ring = setup(&mut pair, 0, 0);
    pair.frontend.start_vring(VringIndex(0), ring).unwrap();
    pair.pump();
    let refused = FrontendError::Nack { request: FrontendCode::SetVringKick, status: 22 };
    assert!(pair.events.contains(&Ev::Failed(refused)), "{:?}", pair.events);
    assert!(!pair.frontend.is_vring_started(VringIndex(0)));
    assert!(!pair.backend.vring_state(VringIndex(0)).expect("ring 0").started);
    pair.clear_log();
    let ring = setup(&mut pair, 0, 0);
    pair.frontend.start_vring(VringIndex(0), ring).unwrap();
    pair.pump();
    assert!(pair.frontend.is_vring_started(VringIndex(0)));
    assert!(pair.backend.vring_state(VringIndex(0)).expect("ring 0").started);
    pair.assert_clean();
}

#[test]
fn reset_device_stops_every_ring() {
    let mut pair = Pair::connected();
    start_two_rings(&mut pair);
    pair.clear_log();
    pair.frontend.reset_device().unwrap();
    pair.pump();
    assert_eq!(pair.sent, [(FrontendCode::ResetDevice, true)]);
    assert!(pair.acts.contains(&Act::Reset));
    assert!(pair.backend.is_suspended());
    assert!(!pair.frontend.is_vring_started(VringIndex(0)));
    assert_eq!(pair.backend.acked_features(), None);
    // Its rings would start laid out without the features: refused until they are resent.
    let forgotten = FrontendError::FeaturesForgotten { code: FrontendCode::SetVringKick };
    let ring = setup(&mut pair, 0, 0);
    // Refused: the tokens stay the caller's.
    pair.fe_in.retain(|fd| Some(*fd) != ring.call && Some(*fd) != ring.kick);
    assert_eq!(pair.frontend.start_vring(VringIndex(0), ring), Err(forgotten));
    pair.frontend.set_features(EXPECTED_FEATURES).unwrap();
    pair.pump();
    assert_eq!(pair.backend.acked_features(), Some(EXPECTED_FEATURES));
    let ring = setup(&mut pair, 0, 0);
    pair.frontend.start_vring(VringIndex(0), ring).unwrap();
    pair.pump();
    assert!(pair.backend.vring_state(VringIndex(0)).expect("ring 0").started);
    pair.assert_clean();
}

#[test]
fn net_messages_reach_a_back_end_that_offers_them() {
    let mut spec = spec();
    spec.protocol_features |= ProtocolFeatures::RARP | ProtocolFeatures::NET_MTU;
    let mut config = config();
    config.protocol_features |= ProtocolFeatures::RARP | ProtocolFeatures::NET_MTU;
    let mut pair = Pair::new(spec, config, CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).expect("connect");
    pair.pump();
    pair.clear_log();
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    pair.frontend.send_rarp(mac).unwrap();
    pair.frontend.net_set_mtu(9000).unwrap();
    pair.pump();
    use FrontendCode as C;
    assert_eq!(pair.events, [Ev::Done(C::SendRarp), Ev::Done(C::NetSetMtu)]);
    assert_eq!(pair.acts, [Act::Rarp(mac), Act::Mtu(9000)]);
    // CROSS_ENDIAN was not offered: refused before anything is sent.
    assert!(matches!(
        pair.frontend.set_vring_endian(VringIndex(0), true),
        Err(FrontendError::NotNegotiated { feature: "CROSS_ENDIAN", .. })
    ));
    pair.assert_clean();
}

/// A net device's back-end answers GET_QUEUE_NUM in queue pairs (DPDK): with two rings a queue,
/// the rings of every pair are addressable and none past them.
#[test]
fn rings_per_queue_scale_the_queue_count() {
    let mut config = config();
    config.rings_per_queue = 2;
    let mut pair = Pair::new(spec(), config, CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).expect("connect");
    pair.pump();
    assert_eq!(pair.frontend.negotiated().expect("connected").queues, Some(2), "two queues");
    assert_eq!(
        pair.frontend.stop_vring(VringIndex(4)),
        Err(FrontendError::VringOutOfRange { index: 4, rings: 4 })
    );
    assert!(
        !matches!(
            pair.frontend.stop_vring(VringIndex(3)),
            Err(FrontendError::VringOutOfRange { .. })
        ),
        "ring 3, the second pair's second ring, is the back-end's"
    );
}
