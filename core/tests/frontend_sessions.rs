//! The front-end's less common requests: IOTLB_MSG (VIRTIO_F_ACCESS_PLATFORM), the crypto
//! sessions (CRYPTO_SESSION) and the deprecated RESET_OWNER.

mod common;

use common::pair::*;
use vhu_core::message::Iotlb;
use vhu_core::message::{IotlbKind, IotlbPerm};

fn iotlb_update() -> Iotlb {
    Iotlb {
        iova: 0x1000,
        size: 0x2000,
        user_address: RING_UADDR,
        perm: IotlbPerm::ReadWrite,
        kind: IotlbKind::Update,
    }
}

#[test]
fn iotlb_msg_needs_access_platform_reply_ack_and_the_backend_channel() {
    let mut pair = Pair::connected();
    assert_eq!(
        pair.frontend.iotlb_msg(iotlb_update()),
        Err(FrontendError::NotNegotiated {
            code: FrontendCode::IotlbMsg,
            feature: "VIRTIO_F_ACCESS_PLATFORM"
        })
    );

    let mut spec = spec();
    spec.features |= VirtioFeatures::ACCESS_PLATFORM;
    let mut config = config();
    config.features |= VirtioFeatures::ACCESS_PLATFORM;
    // Without REPLY_ACK the status could not travel, and without the back-end channel no
    // miss could be asked: QEMU refuses such a device; here the feature is not acked.
    let not_acked = FrontendError::NotNegotiated {
        code: FrontendCode::IotlbMsg,
        feature: "VIRTIO_F_ACCESS_PLATFORM",
    };
    for missing in [ProtocolFeatures::REPLY_ACK, ProtocolFeatures::BACKEND_REQ] {
        let mut plain = config;
        plain.protocol_features.remove(missing);
        let mut pair = Pair::new(spec.clone(), plain, CONFIG.to_vec());
        let channel = pair.vmm_fd();
        pair.frontend.connect(Some(channel)).unwrap();
        pair.pump();
        let negotiated = pair.frontend.negotiated().expect("connected").features;
        assert!(!negotiated.contains(VirtioFeatures::ACCESS_PLATFORM), "{missing:?} missing");
        assert_eq!(pair.frontend.iotlb_msg(iotlb_update()), Err(not_acked));
        let refused = pair.frontend.set_features(negotiated | VirtioFeatures::ACCESS_PLATFORM);
        assert!(matches!(refused, Err(FrontendError::NotNegotiated { .. })), "{refused:?}");
    }

    let mut pair = Pair::new(spec, config, CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).unwrap();
    pair.pump();
    pair.clear_log();
    pair.frontend.iotlb_msg(iotlb_update()).unwrap();
    pair.frontend.get_status().unwrap();
    pair.pump();
    use FrontendCode as C;
    assert_eq!(pair.sent, [(C::IotlbMsg, true), (C::GetStatus, false)]);
    assert_eq!(pair.events[0], Ev::Done(C::IotlbMsg));
    pair.assert_clean();
}

/// What a session saved with `features` and `protocol_features` acked looks like.
fn saved(features: VirtioFeatures, protocol_features: ProtocolFeatures) -> Negotiated {
    Negotiated {
        offered_features: features,
        features,
        protocol_features,
        queues: None,
        max_mem_slots: None,
    }
}

/// A front-end restored with CRYPTO_SESSION acked (and no REPLY_ACK), its handshake drained.
fn crypto_frontend() -> Frontend {
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    let saved = saved(features, ProtocolFeatures::CRYPTO_SESSION);
    let mut config = FrontendConfig::new(VirtioFeatures::empty());
    config.protocol_features = ProtocolFeatures::CRYPTO_SESSION;
    let mut frontend = Frontend::new(config);
    frontend.restore(saved, None).unwrap();
    while frontend.poll_output().is_some() {}
    assert!(frontend.is_connected());
    frontend
}

/// A session in QEMU's layout as far as it matters here: the operation, the setup data and
/// keys, and the session id last.
fn session(id: i64) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0u8..120).map(|i| i.wrapping_mul(3)).collect();
    bytes.extend(id.to_le_bytes());
    bytes
}

fn answer(frontend: &mut Frontend, reply: Reply<'_>) -> Vec<Ev> {
    let mut buf = vec![0u8; 2048];
    let len = reply.encode_into(&mut buf).unwrap();
    frontend.handle_reply(&buf[..len], &[]).unwrap();
    let mut events = Vec::new();
    while let Some(output) = frontend.poll_output() {
        match output {
            Output::Event(Event::CryptoSession(session)) => {
                events.push(Ev::CryptoSession(session.to_vec()))
            }
            Output::Event(Event::Failed(error)) => events.push(Ev::Failed(error)),
            other => panic!("unexpected {other:?}"),
        }
    }
    events
}

#[test]
fn crypto_sessions_are_created_and_closed() {
    let mut frontend = crypto_frontend();
    let sent = session(0);
    frontend.create_crypto_session(&sent).unwrap();
    assert_eq!(
        frontend.create_crypto_session(&sent),
        Err(FrontendError::Busy(FrontendCode::CreateCryptoSession))
    );
    let Some(Output::Request { request, need_reply: false }) = frontend.poll_output() else {
        panic!("the session goes out")
    };
    assert_eq!(request, Request::CreateCryptoSession(&sent));
    // Sent and waiting for its reply, it is still the one session in progress.
    assert_eq!(
        frontend.create_crypto_session(&session(1)),
        Err(FrontendError::Busy(FrontendCode::CreateCryptoSession))
    );
    // The reply is the session with the id the back-end assigned, handed to the VMM whole.
    let created = session(7);
    assert_eq!(
        answer(&mut frontend, Reply::CryptoSession(&created)),
        [Ev::CryptoSession(created.clone())]
    );
    // A session of another size than the one sent is no answer to it.
    frontend.create_crypto_session(&sent).unwrap();
    while frontend.poll_output().is_some() {}
    let mut buf = vec![0u8; 256];
    let len = Reply::CryptoSession(&created[..64]).encode_into(&mut buf).unwrap();
    assert!(frontend.handle_reply(&buf[..len], &[]).is_err());
    assert!(frontend.is_closed());

    let mut frontend = crypto_frontend();
    frontend.close_crypto_session(7).unwrap();
    let Some(Output::Request { request, need_reply: false }) = frontend.poll_output() else {
        panic!("the close goes out")
    };
    assert_eq!(request, Request::CloseCryptoSession(7));
    assert!(frontend.is_idle());
}

#[test]
fn crypto_sessions_need_their_feature_and_a_sane_size() {
    let mut frontend = crypto_frontend();
    let code = FrontendCode::CreateCryptoSession;
    let max = vhu_core::limits::MAX_CRYPTO_SESSION_SIZE;
    let size = |size| FrontendError::PayloadSize { code, size, min: 1, max };
    assert_eq!(frontend.create_crypto_session(&[]), Err(size(0)));
    assert_eq!(frontend.create_crypto_session(&vec![0; max + 1]), Err(size(max + 1)));
    // QEMU's session with asymmetric keys is just over 1 KiB.
    frontend.create_crypto_session(&[0; 1072]).unwrap();
    assert!(frontend.is_connected());

    let mut pair = Pair::connected();
    assert_eq!(
        pair.frontend.create_crypto_session(&session(0)),
        Err(FrontendError::NotNegotiated { code, feature: "CRYPTO_SESSION" })
    );
    assert_eq!(
        pair.frontend.close_crypto_session(1),
        Err(FrontendError::NotNegotiated {
            code: FrontendCode::CloseCryptoSession,
            feature: "CRYPTO_SESSION"
        })
    );
}

#[test]
fn reset_owner_goes_only_to_a_stopped_device() {
    let mut pair = Pair::connected();
    start_two_rings(&mut pair);
    let code = FrontendCode::ResetOwner;
    assert_eq!(pair.frontend.reset_owner(), Err(FrontendError::NotSuspended { code }));
    pair.frontend.stop_vring(VringIndex(0)).unwrap();
    pair.frontend.stop_vring(VringIndex(1)).unwrap();
    pair.pump();
    pair.clear_log();
    pair.frontend.reset_owner().unwrap();
    pair.pump();
    assert_eq!(pair.sent, [(code, true)]);
    assert_eq!(pair.events, [Ev::Done(code)]);
    // The device is usable again once the features are resent and the rings restart.
    let forgotten = FrontendError::FeaturesForgotten { code: FrontendCode::SetVringKick };
    let ring = setup(&mut pair, 0, 0);
    // Refused: the tokens stay the caller's.
    pair.fe_in.retain(|fd| Some(*fd) != ring.call && Some(*fd) != ring.kick);
    assert_eq!(pair.frontend.start_vring(VringIndex(0), ring), Err(forgotten));
    let acked = pair.frontend.negotiated().expect("connected").features;
    pair.frontend.set_features(acked).unwrap();
    let setup = setup(&mut pair, 0, 0);
    pair.frontend.start_vring(VringIndex(0), setup).unwrap();
    pair.pump();
    assert!(pair.frontend.is_vring_started(VringIndex(0)));
    pair.assert_clean();
}

/// A restore cannot bring back VIRTIO_F_ACCESS_PLATFORM without what IOTLB_MSG needs.
#[test]
fn a_restore_with_access_platform_needs_reply_ack_and_the_backend_channel() {
    let features = VirtioFeatures::VERSION_1
        | VirtioFeatures::PROTOCOL_FEATURES
        | VirtioFeatures::ACCESS_PLATFORM;
    let saved = saved(features, ProtocolFeatures::REPLY_ACK);
    let mut frontend = Frontend::new(FrontendConfig::new(features));
    let refused = frontend.restore(saved, None);
    assert!(
        matches!(
            refused,
            Err(FrontendError::NotNegotiated { code: FrontendCode::SetFeatures, .. })
        ),
        "{refused:?}"
    );
}

/// A GET_INFLIGHT_FD answer describing an area for other queues than asked, or one past the end
/// of any file, is refused (its descriptor released, the connection closed) before the VMM
/// maps it; an answer of no area stays a plain refusal of tracking.
#[test]
fn an_inflight_area_for_other_queues_is_refused() {
    use vhu_core::message::InflightDesc;
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    let saved = saved(features, ProtocolFeatures::INFLIGHT_SHMFD);
    let asked = InflightDesc { mmap_size: 0, mmap_offset: 0, num_queues: 2, queue_size: 256 };
    let answers = [
        (InflightDesc { mmap_size: 0x4000, num_queues: 4, ..asked }, false),
        (InflightDesc { mmap_size: 0x4000, queue_size: 128, ..asked }, false),
        (InflightDesc { mmap_size: 0x4000, mmap_offset: u64::MAX - 0xfff, ..asked }, false),
        (InflightDesc { mmap_size: 0x4000, mmap_offset: 1 << 63, ..asked }, false),
        (InflightDesc { mmap_size: 0x4000, mmap_offset: 0x1000, ..asked }, true),
    ];
    for (desc, fine) in answers {
        let mut config = FrontendConfig::new(VirtioFeatures::empty());
        config.protocol_features = ProtocolFeatures::INFLIGHT_SHMFD;
        let mut frontend = Frontend::new(config);
        frontend.restore(saved, None).unwrap();
        while frontend.poll_output().is_some() {}
        frontend.get_inflight_fd(asked.num_queues, asked.queue_size).unwrap();
        while frontend.poll_output().is_some() {}
        let fd = FdToken(7);
        let mut buf = [0u8; 64];
        let n = Reply::InflightFd { desc, fd: Some(fd) }.encode_into(&mut buf).unwrap();
        let answered = frontend.handle_reply(&buf[..n], &[fd]);
        assert_eq!(answered.is_ok(), fine, "{desc:?}: {answered:?}");
        assert_eq!(frontend.is_connected(), fine, "{desc:?}");
    }
}
