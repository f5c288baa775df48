//! Transcript tests of the back-end state machine, continued: dirty logging, inflight tracking,
//! device state, the back-end channel, and refusals.

mod common;

use common::backend_fixture::*;

// ---- 6. Dirty logging --------------------------------------------------------------------------

#[test]
fn log_base_log_fd_and_log_all() {
    let mut t = ready(protocol());
    let fd = t.fd();
    assert_eq!(
        t.send(Request::SetLogBase(LogBase::Shared {
            mmap_size: 0x8000,
            mmap_offset: 0x10,
            fd: Some(fd)
        })),
        [act(Action::MapLog { fd, mmap_size: 0x8000, mmap_offset: 0x10 })]
    );
    let mut echo = [0u8; 16];
    echo[..8].copy_from_slice(&0x8000u64.to_ne_bytes());
    echo[8..].copy_from_slice(&0x10u64.to_ne_bytes());
    let echo: &'static [u8] = Box::leak(Box::new(echo));
    assert_eq!(t.complete(Completion::Done(Ok(()))), [Out::Reply(Reply::LogBase(echo))]);
    let log_fd = t.fd();
    assert_eq!(t.send(Request::SetLogFd(log_fd)), [act(Action::SetLogFd(log_fd))]);
    let on = acked() | VirtioFeatures::LOG_ALL;
    assert_eq!(
        t.send(Request::SetFeatures(on)),
        [act(Action::FeaturesAcked(on)), act(Action::SetLogging(true))]
    );
    assert_eq!(
        t.send(Request::SetFeatures(acked())),
        [act(Action::FeaturesAcked(acked())), act(Action::SetLogging(false))]
    );
    t.assert_fds_balanced();
}

#[test]
fn reset_device_stops_logging() {
    let mut t = ready(protocol() | ProtocolFeatures::LOG_SHMFD);
    let on = acked() | VirtioFeatures::LOG_ALL;
    assert_eq!(
        t.send(Request::SetFeatures(on)),
        [act(Action::FeaturesAcked(on)), act(Action::SetLogging(true))]
    );
    // Logging goes with the acked features: the device must stop marking pages.
    assert_eq!(
        t.send(Request::ResetDevice),
        [act(Action::SetLogging(false)), act(Action::ResetDevice)]
    );
    assert_eq!(t.complete(Completion::Done(Ok(()))), []);
    assert_eq!(t.send(Request::ResetDevice), [act(Action::ResetDevice)]);
    assert_eq!(t.complete(Completion::Done(Ok(()))), []);
}

#[test]
fn log_base_needs_log_shmfd() {
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, ProtocolFeatures::REPLY_ACK, acked());
    let fd = t.fd();
    // The reply of SET_LOG_BASE cannot carry a failure: refusing closes the connection.
    let outs =
        t.send(Request::SetLogBase(LogBase::Shared { mmap_size: 1, mmap_offset: 0, fd: Some(fd) }));
    assert_eq!(outs[0], act(Action::CloseFd(fd)));
    assert!(matches!(
        outs[1],
        Out::Close(ProtocolError::NotNegotiated { feature: "LOG_SHMFD", .. })
    ));
    t.assert_fds_balanced();
}

// ---- 7. Inflight -------------------------------------------------------------------------------

#[test]
fn inflight_area_sizes_split_and_packed() {
    for (features, per_queue) in
        [(acked(), 16 + 16 * 256), (acked() | VirtioFeatures::RING_PACKED, 29 + 32 * 256)]
    {
        let mut t = Transcript::backend(spec());
        negotiate(&mut t, protocol(), features);
        let mmap_size = 2 * (per_queue as u64).div_ceil(64) * 64;
        let desc = InflightDesc { mmap_size: 0, mmap_offset: 0, num_queues: 2, queue_size: 256 };
        assert_eq!(
            t.send(Request::GetInflightFd(desc)),
            [act(Action::AllocateInflight { mmap_size, num_queues: 2, queue_size: 256 })]
        );
        let fd = t.fd();
        assert_eq!(
            t.complete(Completion::InflightAllocated(Ok((fd, 0)))),
            [Out::Reply(Reply::InflightFd {
                desc: InflightDesc { mmap_size, ..desc },
                fd: Some(fd)
            })]
        );
        t.assert_fds_balanced();
    }
}

#[test]
fn inflight_failure_answers_an_empty_area() {
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, protocol(), acked());
    let too_many = InflightDesc { mmap_size: 0, mmap_offset: 0, num_queues: 3, queue_size: 256 };
    let outs = t.send(Request::GetInflightFd(too_many));
    assert!(matches!(
        outs[..],
        [Out::Reply(Reply::InflightFd { desc: InflightDesc { mmap_size: 0, .. }, fd: None })]
    ));
}

// ---- 8. Device state ---------------------------------------------------------------------------

#[test]
fn device_state_only_while_suspended() {
    let mut t = ready(protocol());
    configure_ring(&mut t, V0, 0);
    start_ring(&mut t, V0, 0, false);
    let pipe = t.fd();
    let request = Request::SetDeviceStateFd {
        direction: TransferDirection::Save,
        phase: TransferPhase::Stopped,
        fd: pipe,
    };
    assert_eq!(
        t.send(request),
        [act(Action::CloseFd(pipe)), Out::Reply(Reply::DeviceStateFd { error: 16, fd: None })]
    );
    t.send(Request::GetVringBase { index: V0 });
    t.complete(Completion::VringStopped { index: V0, base: VringBase::split(3) });
    let pipe = t.fd();
    assert_eq!(
        t.send(Request::SetDeviceStateFd {
            direction: TransferDirection::Save,
            phase: TransferPhase::Stopped,
            fd: pipe
        }),
        [act(Action::SetDeviceStateFd {
            direction: TransferDirection::Save,
            phase: TransferPhase::Stopped,
            fd: pipe
        })]
    );
    assert_eq!(
        t.complete(Completion::DeviceStateFd(Ok(None))),
        [Out::Reply(Reply::DeviceStateFd { error: 0, fd: None })]
    );
    assert_eq!(t.send(Request::CheckDeviceState), [act(Action::CheckDeviceState)]);
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::CheckDeviceState)]);
    t.assert_fds_balanced();
}

// ---- 9. Back-end channel -----------------------------------------------------------------------

#[test]
fn backend_channel_requests() {
    let mut t = ready(protocol());
    assert_eq!(t.backend.send_config_change(), Err(ProtocolError::NoBackendChannel));
    open_channel(&mut t);
    // Suspended (no ring started): nothing may be sent.
    assert_eq!(t.backend.send_config_change(), Err(ProtocolError::Suspended));
    configure_ring(&mut t, V0, 0);
    start_ring(&mut t, V0, 0, false);
    let config = t.backend.send_config_change().expect("config change allowed");
    let mapping =
        ShmemMapping { shmid: 0, fd_offset: 0, shm_offset: 0, len: 0x1000, writable: true };
    let shm_fd = t.api_fd();
    let map = t.backend.send_shmem_map(mapping, shm_fd).expect("shmem map allowed");
    let add = t.backend.send_shared_object_add(Uuid([1; 16])).expect("allowed");
    assert_eq!(
        t.backend.send_vring_call(V0),
        Err(ProtocolError::BackendFeature("INBAND_NOTIFICATIONS"))
    );
    assert_ne!(config, map);
    assert_ne!(map, add);
    assert_eq!(
        t.drain_outputs(),
        [
            Out::Backend { id: config, request: BackendRequest::ConfigChangeMsg, need_reply: true },
            Out::Backend {
                id: map,
                request: BackendRequest::ShmemMap { mapping, fd: shm_fd },
                need_reply: true
            },
            Out::Backend {
                id: add,
                request: BackendRequest::SharedObjectAdd(Uuid([1; 16])),
                need_reply: true
            },
        ]
    );
    t.assert_fds_balanced();
}

#[test]
fn shmem_config_and_shared_object() {
    let mut t = ready(protocol());
    let outs = t.send(Request::GetShmemConfig);
    let [Out::Reply(Reply::ShmemConfig(config))] = outs[..] else { panic!("{outs:?}") };
    assert_eq!(config.nregions.get(), 2);
    assert_eq!(config.memory_sizes[0], U64::new(0x20_0000));
    assert_eq!(config.memory_sizes[2], U64::new(0x1000));
    assert_eq!(config.memory_sizes[3], U64::ZERO);
    let uuid = Uuid([3; 16]);
    assert_eq!(t.send(Request::GetSharedObject(uuid)), [act(Action::GetSharedObject(uuid))]);
    let dmabuf = t.fd();
    assert_eq!(
        t.complete(Completion::SharedObject(Ok(dmabuf))),
        [Out::Reply(Reply::SharedObject { status: 0, fd: Some(dmabuf) })]
    );
    t.assert_fds_balanced();
}

// ---- 10. Not negotiated, policies, misuse ------------------------------------------------------

#[test]
fn inband_without_prerequisites_closes_the_connection() {
    let mut s = spec();
    s.protocol_features |= ProtocolFeatures::INBAND_NOTIFICATIONS;
    let mut t = Transcript::backend(s);
    let outs = t.send(Request::SetProtocolFeatures(
        ProtocolFeatures::INBAND_NOTIFICATIONS | ProtocolFeatures::REPLY_ACK,
    ));
    assert_eq!(
        outs,
        [Out::Close(ProtocolError::ProtocolFeatureDependency {
            feature: ProtocolFeatures::INBAND_NOTIFICATIONS,
            missing: ProtocolFeatures::BACKEND_REQ,
        })]
    );
}

#[test]
fn unsupported_and_unnegotiated_messages_never_silently_succeed() {
    let mut t = ready(protocol());
    let gpu = t.fd();
    assert_eq!(
        t.send_need_reply(Request::GpuSetSocket(gpu)),
        [act(Action::CloseFd(gpu)), nack(FrontendCode::GpuSetSocket, 95)]
    );
    assert_eq!(t.send_need_reply(Request::SendRarp([1; 6])), [nack(FrontendCode::SendRarp, 95)]);
    assert_eq!(
        t.send_need_reply(Request::PostcopyListen),
        [nack(FrontendCode::PostcopyListen, 95)]
    );
    assert_eq!(t.send(Request::VringKick { index: V0 }), []);
    assert_eq!(
        t.send_need_reply(Request::VringKick { index: V0 }),
        [nack(FrontendCode::VringKick, 95)]
    );
    let iotlb = common::IOTLB;
    assert_eq!(t.send(Request::IotlbMsg(iotlb)), [nack(FrontendCode::IotlbMsg, 95)]);
    t.assert_fds_balanced();
}

#[test]
fn malformed_frames_close_or_nack_and_release_fds() {
    let mut t = ready(protocol());
    // Bad version: the stream cannot be trusted.
    let fd = t.fd();
    let outs = t.send_raw(&[3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0], &[fd]);
    assert_eq!(
        outs,
        [
            act(Action::CloseFd(fd)),
            Out::Close(ProtocolError::Wire(WireError::BadVersion { version: 2, flags: 2 }))
        ]
    );
    // A payload of the wrong size for a message without a reply: NACK and go on.
    let outs = t.send_raw(&[8, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(outs, [nack(FrontendCode::SetVringNum, 22)]);
    assert_eq!(t.send(Request::GetQueueNum), [Out::Reply(Reply::QueueNum(2))]);
    t.assert_fds_balanced();
}

#[test]
fn frames_while_a_completion_is_owed_close() {
    let mut t = ready(protocol());
    t.send(Request::GetConfig { offset: 0, size: 4, flags: ConfigFlags::Writable });
    assert!(t.backend.is_awaiting_completion());
    assert_eq!(
        t.send(Request::GetQueueNum),
        [Out::Close(ProtocolError::CompletionPending(FrontendCode::GetConfig))]
    );
    // A completion of the wrong kind is refused and the right one still works.
    let fd = t.fd();
    assert_eq!(t.complete(Completion::SharedObject(Ok(fd))), [act(Action::CloseFd(fd))]);
    assert!(t.backend.is_awaiting_completion());
    let outs = t.complete(Completion::ConfigRead(Some(&[1, 2, 3, 4])));
    assert_eq!(
        outs,
        [Out::Reply(Reply::Config {
            offset: 0,
            flags: ConfigFlags::Writable,
            data: &[1, 2, 3, 4]
        })]
    );
    t.assert_fds_balanced();
}

#[test]
fn spec_validation() {
    let mut s = spec();
    s.protocol_features |= ProtocolFeatures::CRYPTO_SESSION;
    assert!(vhu_core::backend::Backend::new(s).is_err(), "crypto sessions are not offered");
    let mut s = spec();
    s.queues = 0;
    assert!(vhu_core::backend::Backend::new(s).is_err());
    let mut s = spec();
    s.max_queue_size = 1000;
    assert!(vhu_core::backend::Backend::new(s).is_err());
    let mut s = spec();
    s.protocol_features |= ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN;
    assert!(vhu_core::backend::Backend::new(s).is_err(), "skip-drain needs bit 20");
}

#[test]
fn region_error_context() {
    let mut t = ready(protocol());
    let r = Region { guest_address: 0, size: 0x1000, user_address: RAM, mmap_offset: 0, xen: None };
    let fd = t.fd();
    let mut buf = [0u8; 128];
    let len = Request::AddMemReg { region: r, fd }.encode_into(false, &mut buf).expect("encodes");
    let error = t.backend.handle_frame(&buf[..len], &[fd]).expect_err("overlaps region 0");
    assert_eq!(
        error,
        ProtocolError::Memory {
            code: FrontendCode::AddMemReg,
            error: RegionError::Overlap { new: 0, existing: 0 }
        }
    );
}

/// Found by fuzzing the front-end/back-end pair: an inflight area of zero bytes never asks the
/// driver for an allocation and is answered without an fd; an fd a driver returns for it anyway
/// is released.
#[test]
fn zero_sized_inflight_area_has_no_fd() {
    let mut t = Transcript::backend(spec());
    negotiate(&mut t, protocol(), acked());
    let empty = InflightDesc { mmap_size: 0, mmap_offset: 0, num_queues: 0, queue_size: 256 };
    assert_eq!(
        t.send(Request::GetInflightFd(empty)),
        [Out::Reply(Reply::InflightFd { desc: empty, fd: None })]
    );
    let tiny = InflightDesc { num_queues: 1, queue_size: 0, ..empty };
    let outs = t.send(Request::GetInflightFd(tiny));
    assert!(
        matches!(outs[..], [Out::Action(Action::AllocateInflight { mmap_size: 64, .. })]),
        "{outs:?}"
    );
    t.complete(Completion::InflightAllocated(Err(12)));
    t.assert_fds_balanced();
}

/// Found by fuzzing the front-end: a queue size the parser refuses is refused by the encoder too.
#[test]
fn queue_size_above_32768_does_not_encode() {
    let mut buf = [0u8; 64];
    let request = Request::SetVringNum { index: V0, num: 40000 };
    assert!(matches!(
        request.encode_into(false, &mut buf),
        Err(WireError::TooLong { what: "queue size", got: 40000, max: 32768, .. })
    ));
}
