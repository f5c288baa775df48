//! Front-end flows against the real back-end: migration, the back-end channel, bad replies.

mod common;

use common::pair::*;

// ---------------------------------------------------------------------------------------------
// Migration

#[test]
fn device_state_save_then_load_on_a_restored_backend() {
    let mut pair = Pair::connected();
    pair.device_state_fd = true;
    start_two_rings(&mut pair);
    pair.process(0, 5);
    pair.clear_log();

    let pipe = FdToken(9999);
    assert_eq!(
        pair.frontend.set_device_state_fd(TransferDirection::Save, pipe),
        Err(FrontendError::NotSuspended { code: FrontendCode::SetDeviceStateFd })
    );
    pair.frontend.stop_vring(VringIndex(0)).unwrap();
    pair.frontend.stop_vring(VringIndex(1)).unwrap();
    let pipe = pair.vmm_fd();
    pair.frontend.set_device_state_fd(TransferDirection::Save, pipe).unwrap();
    pair.frontend.check_device_state().unwrap();
    pair.frontend.get_inflight_fd(2, 256).unwrap();
    pair.pump();
    use FrontendCode as C;
    assert_eq!(pair.codes()[4..], [C::SetDeviceStateFd, C::CheckDeviceState, C::GetInflightFd]);
    assert!(pair.acts.contains(&Act::DeviceState(TransferDirection::Save)));
    let base = pair.events.iter().find_map(|e| match e {
        Ev::VringStopped { index: VringIndex(0), base } => Some(*base),
        _ => None,
    });
    assert_eq!(base, Some(VringBase(5)));
    let tail = &pair.events[pair.events.len() - 3..];
    assert!(
        matches!(tail[0], Ev::DeviceStateFd { direction: TransferDirection::Save, fd: Some(_) }),
        "the back-end's own fd is handed to the VMM: {tail:?}"
    );
    assert_eq!(tail[1], Ev::Done(C::CheckDeviceState));
    let Ev::InflightFd { desc, fd: Some(_) } = tail[2] else { panic!("{tail:?}") };
    assert!(desc.mmap_size > 0);
    assert_eq!((desc.num_queues, desc.queue_size), (2, 256));
    pair.assert_clean();
    let saved = pair.frontend.negotiated().unwrap();

    // Destination: a fresh back-end, restored without any GET_*, state loaded before the rings
    // restart at the saved base.
    let mut dest = Pair::new(spec(), config(), CONFIG.to_vec());
    let channel = dest.vmm_fd();
    dest.frontend.restore(saved, Some(channel)).unwrap();
    dest.pump();
    dest.clear_log();
    let fd = dest.vmm_fd();
    dest.frontend.set_mem_table(&[(region(0), fd)]).unwrap();
    let pipe = dest.vmm_fd();
    dest.frontend.set_device_state_fd(TransferDirection::Load, pipe).unwrap();
    dest.frontend.check_device_state().unwrap();
    let setup = setup(&mut dest, 0, 5);
    dest.frontend.start_vring(VringIndex(0), setup).unwrap();
    let inflight = dest.vmm_fd();
    dest.frontend.set_inflight_fd(desc, inflight).unwrap();
    dest.pump();
    assert_eq!(dest.codes()[..3], [C::SetMemTable, C::SetDeviceStateFd, C::CheckDeviceState]);
    assert!(dest.codes().iter().all(|c| !matches!(c, C::GetFeatures | C::GetProtocolFeatures)));
    assert!(dest
        .events
        .contains(&Ev::DeviceStateFd { direction: TransferDirection::Load, fd: None }));
    assert!(dest.acts.contains(&Act::DeviceState(TransferDirection::Load)));
    assert!(dest.acts.contains(&Act::StartVring { index: 0, base: VringBase(5), enabled: false }));
    assert!(dest.acts.contains(&Act::Enabled { index: 0, enabled: true }));
    assert_eq!(dest.events.last(), Some(&Ev::Done(C::SetInflightFd)));
    dest.assert_clean();
}

#[test]
fn dirty_logging_on_and_off() {
    let mut pair = Pair::connected();
    start_logging(&mut pair);
    use FrontendCode as C;
    // SET_LOG_BASE has a reply of its own: no NEED_REPLY.
    assert_eq!(pair.sent, [(C::SetLogBase, false), (C::SetFeatures, true)]);
    assert_eq!(pair.events, [Ev::Done(C::SetLogBase), Ev::Done(C::SetFeatures)]);
    assert!(pair.acts.contains(&Act::MapLog { mmap_size: 0x4000 }));
    assert!(pair.acts.contains(&Act::Logging(true)));
    assert_eq!(pair.set_features.last(), Some(&(EXPECTED_FEATURES | VirtioFeatures::LOG_ALL)));
    assert!(pair.frontend.is_logging());

    pair.clear_log();
    pair.frontend.set_logging(false).unwrap();
    pair.pump();
    assert_eq!(pair.acts, [Act::Features(EXPECTED_FEATURES), Act::Logging(false)]);
    assert_eq!(pair.backend.acked_features(), Some(EXPECTED_FEATURES));
    // Toggling LOG_ALL never disables a ring.
    assert_eq!(pair.backend.vring_state(VringIndex(0)).map(|s| s.is_runnable()), Some(true));
    pair.assert_clean();
}

/// A connected front-end with SET_LOG_BASE sent, waiting for its reply.
fn awaiting_log_reply() -> Pair {
    let mut pair = Pair::connected();
    let log = pair.vmm_fd();
    pair.frontend.set_log_base(0x1000, 0, log).unwrap();
    pair.drain_frontend();
    pair.to_backend.clear();
    assert!(pair.frontend.is_awaiting_reply());
    pair
}

#[test]
fn set_log_base_reply_of_any_size_is_accepted() {
    for payload in [&[][..], &[0u8; 8][..], &[7u8; 16][..], &[1u8; 40][..]] {
        let mut pair = awaiting_log_reply();
        let mut buf = [0u8; 64];
        let len = Reply::LogBase(payload).encode_into(&mut buf).unwrap();
        pair.frontend.handle_reply(&buf[..len], &[]).unwrap();
        pair.drain_frontend();
        assert_eq!(pair.events, [Ev::Done(FrontendCode::SetLogBase)], "{} bytes", payload.len());
        assert!(!pair.frontend.is_awaiting_reply());
    }
}

// ---------------------------------------------------------------------------------------------
// Config and the back-end channel

#[test]
fn backend_config_change_is_answered_then_config_read() {
    let mut pair = Pair::connected();
    start_two_rings(&mut pair);
    pair.clear_log();
    let id = pair.backend.send_config_change().unwrap();
    pair.drive_backend();
    pair.pump();
    assert_eq!(
        pair.events,
        [Ev::BackendRequest { request: BackendRequest::ConfigChangeMsg, need_reply: true }]
    );
    assert!(!pair.frontend.is_idle());
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))).unwrap();
    pair.frontend.get_config(4, 6).unwrap();
    pair.pump();
    assert_eq!(
        pair.backend_replies,
        [BackendReply::Ack { request: BackendCode::ConfigChangeMsg, status: 0 }]
    );
    assert_eq!(
        pair.backend_results,
        [BackendResult {
            id,
            request: BackendCode::ConfigChangeMsg,
            outcome: BackendOutcome::Acked(0)
        }]
    );
    assert_eq!(pair.events[1], Ev::ConfigRead { offset: 4, data: CONFIG[4..10].to_vec() });
    assert_eq!(
        pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))),
        Err(FrontendError::NoBackendRequest)
    );

    pair.frontend.set_config(0, b"VHU", ConfigFlags::Writable).unwrap();
    pair.frontend.get_config(0, 16).unwrap();
    pair.pump();
    assert_eq!(pair.events[2], Ev::Done(FrontendCode::SetConfig));
    assert_eq!(pair.events[3], Ev::ConfigRead { offset: 0, data: b"VHU-config-space".to_vec() });

    // Out of the device's range: the back-end answers with an empty config, the session goes on.
    pair.frontend.get_config(12, 8).unwrap();
    pair.pump();
    assert_eq!(pair.events[4], Ev::Failed(FrontendError::ConfigReadFailed { offset: 12, size: 8 }));
    assert!(pair.frontend.is_connected());
    assert!(matches!(pair.backend_errors[..], [ProtocolError::ConfigOutOfRange { .. }]));
    pair.backend_errors.clear();
    pair.assert_clean();
}

#[test]
fn shmem_map_fd_reaches_the_vmm_and_failures_are_answered() {
    let mut pair = Pair::connected();
    start_two_rings(&mut pair);
    pair.clear_log();
    let mapping =
        ShmemMapping { shmid: 0, fd_offset: 0, shm_offset: 0x1000, len: 0x1000, writable: true };
    let fd = pair.token();
    pair.be_in.push(fd);
    let id = pair.backend.send_shmem_map(mapping, fd).unwrap();
    pair.drive_backend();
    pair.pump();
    let [Ev::BackendRequest {
        request: BackendRequest::ShmemMap { mapping: got, fd },
        need_reply: true,
    }] = pair.events[..]
    else {
        panic!("{:?}", pair.events)
    };
    assert_eq!(got, mapping);
    assert!(pair.fe_out.contains(&fd), "the mapped fd is handed to the VMM");
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Err(5))).unwrap();
    pair.pump();
    assert_eq!(
        pair.backend_replies,
        [BackendReply::Ack { request: BackendCode::ShmemMap, status: 5 }]
    );
    let outcome = BackendOutcome::Acked(5);
    assert_eq!(
        pair.backend_results,
        [BackendResult { id, request: BackendCode::ShmemMap, outcome }]
    );
    pair.assert_clean();
}

#[test]
fn backend_request_without_its_feature_is_refused() {
    let mut pair = Pair::connected();
    let mut buf = [0u8; 64];
    // HOST_NOTIFIER was not negotiated; the fd must be released and the failure answered.
    let request = BackendRequest::VringHostNotifierMsg {
        index: VringIndex(0),
        size: 0x1000,
        offset: 0,
        fd: Some(FdToken(0)),
    };
    let len = request.encode_into(true, &mut buf).unwrap();
    let fd = pair.token();
    pair.fe_in.push(fd);
    assert_eq!(
        pair.frontend.handle_backend_request(&buf[..len], &[fd]),
        Err(FrontendError::BackendNotNegotiated {
            code: BackendCode::VringHostNotifierMsg,
            feature: "HOST_NOTIFIER"
        })
    );
    pair.drain_frontend();
    assert_eq!(
        pair.backend_replies,
        [BackendReply::Ack { request: BackendCode::VringHostNotifierMsg, status: 95 }]
    );
    assert!(pair.events.is_empty());
    assert!(pair.frontend.is_connected());
    pair.assert_clean();
}

/// Spec "VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG": the front-end maps one host page of the
/// area, so an area of another size is refused (EINVAL, as QEMU answers) and its descriptor
/// released; removing an area (no descriptor) names no size to check.
#[test]
fn host_notifier_area_must_be_one_host_page() {
    const EINVAL: u64 = 22;
    let mut spec = spec();
    spec.protocol_features |= ProtocolFeatures::HOST_NOTIFIER;
    let mut config = config();
    config.host_page_size = 0x4000;
    let mut pair = Pair::new(spec, config, CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).unwrap();
    pair.pump();
    assert!(pair.frontend.is_connected(), "{:?}", pair.events);
    start_two_rings(&mut pair);
    pair.clear_log();

    let notify = |pair: &mut Pair, size: u64, with_fd: bool| {
        let fd = with_fd.then(|| {
            let fd = pair.token();
            pair.be_in.push(fd);
            fd
        });
        let id = pair.backend.send_host_notifier(VringIndex(1), size, 0, fd).unwrap();
        pair.drive_backend();
        pair.pump();
        id
    };
    // A 4 KiB area on a 16 KiB-page host never reaches the VMM.
    let id = notify(&mut pair, 0x1000, true);
    assert!(pair.events.is_empty(), "{:?}", pair.events);
    let outcome = BackendOutcome::Acked(EINVAL);
    let request = BackendCode::VringHostNotifierMsg;
    assert_eq!(pair.backend_results, [BackendResult { id, request, outcome }]);
    pair.assert_clean();
    pair.clear_log();

    // One page does, with its descriptor.
    notify(&mut pair, 0x4000, true);
    let [Ev::BackendRequest {
        request: BackendRequest::VringHostNotifierMsg { size: 0x4000, fd: Some(fd), .. },
        need_reply: true,
    }] = pair.events[..]
    else {
        panic!("{:?}", pair.events)
    };
    assert!(pair.fe_out.contains(&fd));
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))).unwrap();
    pair.pump();
    pair.clear_log();

    // Removing it: whatever size the back-end writes.
    notify(&mut pair, 0, false);
    let [Ev::BackendRequest {
        request: BackendRequest::VringHostNotifierMsg { fd: None, .. },
        need_reply: true,
    }] = pair.events[..]
    else {
        panic!("{:?}", pair.events)
    };
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))).unwrap();
    pair.pump();
    pair.assert_clean();
}

#[test]
fn unknown_backend_request_is_answered_when_the_backend_waits() {
    let mut pair = Pair::connected();
    // A well-formed frame of code 99 (no such back-end request), NEED_REPLY set, one fd.
    let mut frame = [0u8; 20];
    frame[..4].copy_from_slice(&99u32.to_le_bytes());
    frame[4..8].copy_from_slice(&(0x1u32 | 0x8).to_le_bytes());
    frame[8..12].copy_from_slice(&8u32.to_le_bytes());
    let fd = pair.token();
    pair.fe_in.push(fd);
    assert_eq!(
        pair.frontend.handle_backend_request(&frame, &[fd]),
        Err(FrontendError::Wire(vhu_core::WireError::UnknownRequest(99)))
    );
    pair.drain_frontend();
    assert_eq!(pair.backend_nacks, [(99, 95)], "ENOTSUP, for the request's own code");
    assert!(pair.events.is_empty());
    assert!(pair.frontend.is_connected());
    // Without NEED_REPLY nothing is sent, and the session goes on just the same.
    frame[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(pair.frontend.handle_backend_request(&frame, &[]).is_err());
    pair.drain_frontend();
    assert_eq!(pair.backend_nacks.len(), 1);
    assert!(pair.frontend.is_connected());
    pair.assert_clean();
}

/// A request refused while an earlier one waits for the VMM's answer is answered after it: the
/// back-end gets its answers in the order it asked.
#[test]
fn a_refusal_behind_an_unanswered_request_is_answered_after_it() {
    let mut pair = Pair::connected();
    let mut buf = [0u8; 64];
    let len = BackendRequest::ConfigChangeMsg.encode_into(true, &mut buf).unwrap();
    pair.frontend.handle_backend_request(&buf[..len], &[]).unwrap();
    let mut unknown = [0u8; 20];
    unknown[..4].copy_from_slice(&99u32.to_le_bytes());
    unknown[4..8].copy_from_slice(&(0x1u32 | 0x8).to_le_bytes());
    unknown[8..12].copy_from_slice(&8u32.to_le_bytes());
    assert!(pair.frontend.handle_backend_request(&unknown, &[]).is_err());
    let take = |frontend: &mut vhu_core::frontend::Frontend| {
        let mut answers = Vec::new();
        while let Some(output) = frontend.poll_output() {
            match output {
                Output::BackendReply(reply) => answers.push(reply.code().as_u32()),
                Output::BackendNack { request, .. } => answers.push(request),
                _ => {}
            }
        }
        answers
    };
    assert_eq!(take(&mut pair.frontend), [0u32; 0], "the refusal waits");
    assert!(!pair.frontend.is_idle(), "answers are owed");
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))).unwrap();
    assert_eq!(take(&mut pair.frontend), [BackendCode::ConfigChangeMsg.as_u32(), 99]);
    assert!(pair.frontend.is_idle());
    assert!(pair.frontend.is_connected());
}

/// A back-end that does not wait for one answer before its next request (libvhost-user's
/// CONFIG_CHANGE_MSG) gets each answer, in order; the session goes on.
#[test]
fn back_end_requests_that_follow_each_other_are_answered_in_order() {
    let mut pair = Pair::connected();
    let mut buf = [0u8; 64];
    let len = BackendRequest::ConfigChangeMsg.encode_into(true, &mut buf).unwrap();
    pair.frontend.handle_backend_request(&buf[..len], &[]).unwrap();
    pair.frontend.handle_backend_request(&buf[..len], &[]).unwrap();
    assert!(pair.frontend.is_connected());
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))).unwrap();
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Err(5))).unwrap();
    assert_eq!(
        pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))),
        Err(FrontendError::NoBackendRequest)
    );
    pair.drain_frontend();
    let code = BackendCode::ConfigChangeMsg;
    assert_eq!(
        pair.backend_replies,
        [
            BackendReply::Ack { request: code, status: 0 },
            BackendReply::Ack { request: code, status: 5 }
        ]
    );
    assert!(pair.frontend.is_connected());
    pair.assert_fds_balanced();
}

// ---------------------------------------------------------------------------------------------
// Replies that do not fit

/// A pair whose front-end sent GET_FEATURES and waits for the reply, with the frame dropped.
fn awaiting_features() -> Pair {
    let mut pair = Pair::new(spec(), config(), CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).unwrap();
    pair.drain_frontend();
    pair.to_backend.clear();
    pair
}

fn reply_frame(reply: Reply<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let len = reply.encode_into(&mut buf).unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn reply_to_another_request_closes_and_releases_everything() {
    let mut pair = awaiting_features();
    let frame = reply_frame(Reply::QueueNum(2));
    assert_eq!(
        pair.frontend.handle_reply(&frame, &[]),
        Err(FrontendError::WrongReply {
            expected: FrontendCode::GetFeatures,
            got: FrontendCode::GetQueueNum
        })
    );
    pair.drain_frontend();
    assert!(matches!(pair.frontend_closed, Some(FrontendError::WrongReply { .. })));
    // The held back-end channel socket is released on close.
    pair.assert_fds_balanced();
    assert_eq!(pair.frontend.get_status(), Err(FrontendError::Closed));
}

#[test]
fn malformed_reply_closes_and_releases_its_fds() {
    let mut pair = awaiting_features();
    let mut frame = reply_frame(Reply::Features(VirtioFeatures::VERSION_1));
    // A 4-byte payload where GET_FEATURES answers with a u64.
    frame.truncate(16);
    frame[8..12].copy_from_slice(&4u32.to_ne_bytes());
    let fd = pair.token();
    pair.fe_in.push(fd);
    let error = pair.frontend.handle_reply(&frame, &[fd]).unwrap_err();
    assert!(matches!(error, FrontendError::Wire(vhu_core::WireError::PayloadSize { .. })));
    pair.drain_frontend();
    assert_eq!(pair.frontend_closed, Some(error));
    pair.assert_fds_balanced();
}

#[test]
fn reply_nobody_waits_for_closes() {
    let mut pair = Pair::connected();
    let frame = reply_frame(Reply::Ack { request: FrontendCode::SetVringNum, status: 0 });
    assert_eq!(
        pair.frontend.handle_reply(&frame, &[]),
        Err(FrontendError::UnexpectedReply { code: FrontendCode::SetVringNum })
    );
    pair.drain_frontend();
    assert!(pair.frontend.is_closed());
    pair.assert_fds_balanced();
}

#[test]
fn wrong_ring_in_vring_base_closes_and_queued_fds_are_released() {
    let mut pair = Pair::connected();
    pair.frontend.stop_vring(VringIndex(0)).unwrap();
    let kick = pair.vmm_fd();
    pair.frontend.set_vring_call(VringIndex(1), Some(kick)).unwrap();
    // Send SET_VRING_ENABLE to the back-end, then GET_VRING_BASE goes out and waits.
    pair.drain_frontend();
    let (frame, _) = pair.to_backend.pop_front().unwrap();
    pair.backend.handle_frame(&frame, &[]).unwrap();
    pair.drive_backend();
    let (ack, _) = pair.to_frontend.pop_front().unwrap();
    pair.frontend.handle_reply(&ack, &[]).unwrap();
    pair.drain_frontend();
    assert_eq!(pair.sent.last(), Some(&(FrontendCode::GetVringBase, false)));
    let frame = reply_frame(Reply::VringBase { index: VringIndex(1), base: VringBase(0) });
    assert_eq!(
        pair.frontend.handle_reply(&frame, &[]),
        Err(FrontendError::WrongVring { code: FrontendCode::GetVringBase, expected: 0, got: 1 })
    );
    pair.drain_frontend();
    // SET_VRING_CALL never went out: its fd is released after the close.
    assert!(pair.frontend.is_closed());
    assert!(pair.fe_out.contains(&kick));
    assert!(!pair.codes().contains(&FrontendCode::SetVringCall));
    pair.assert_fds_balanced();
}

#[test]
fn calls_need_their_features() {
    let mut spec = spec();
    spec.protocol_features = ProtocolFeatures::MQ | ProtocolFeatures::REPLY_ACK;
    // Dirty logging needs LOG_SHMFD offered.
    spec.features.remove(VirtioFeatures::LOG_ALL);
    let mut pair = Pair::new(spec, config(), CONFIG.to_vec());
    pair.frontend.connect(None).unwrap();
    pair.pump();
    let not = |code, feature| Err(FrontendError::NotNegotiated { code, feature });
    use FrontendCode as C;
    assert_eq!(pair.frontend.get_config(0, 4), not(C::GetConfig, "CONFIG"));
    assert_eq!(
        pair.frontend.add_mem_region(region(0), FdToken(1)),
        not(C::AddMemReg, "CONFIGURE_MEM_SLOTS")
    );
    assert_eq!(pair.frontend.set_log_base(1, 0, FdToken(1)), not(C::SetLogBase, "LOG_SHMFD"));
    assert_eq!(pair.frontend.reset_device(), not(C::ResetDevice, "RESET_DEVICE"));
    assert_eq!(
        pair.frontend.set_device_state_fd(TransferDirection::Save, FdToken(1)),
        not(C::SetDeviceStateFd, "DEVICE_STATE")
    );
    assert_eq!(
        pair.frontend.set_features(
            VirtioFeatures::VERSION_1 | DEVICE_BIT_6 | VirtioFeatures::ACCESS_PLATFORM
        ),
        Err(FrontendError::FeaturesNotOffered {
            offered: pair.frontend.negotiated().unwrap().offered_features,
            requested: VirtioFeatures::VERSION_1
                | VirtioFeatures::PROTOCOL_FEATURES
                | DEVICE_BIT_6
                | VirtioFeatures::ACCESS_PLATFORM,
        })
    );
    pair.drain_frontend();
    assert!(pair.frontend.is_idle());
    pair.assert_clean();
}
