//! Regression transcripts for back-end bugs peers shipped, one test per bug, named after it.
//! Each test states the rule that avoids the bug and fails if the rule is broken.

mod common;

use common::transcript::{Out, Transcript};
use vhu_core::backend::{Action, Backend, BackendSpec, Completion, SpecError, VringConfig};
use vhu_core::message::{
    InflightDesc, LogBase, MemoryTable, Region, VringAddr, VringAddrFlags, VringBase, VringFd,
};
use vhu_core::vring::RingState;
use vhu_core::wire;
use vhu_core::{
    FrontendCode, ProtocolFeatures, Reply, Request, VirtioFeatures, VringIndex, WireError,
};

const V0: VringIndex = VringIndex(0);
const V1: VringIndex = VringIndex(1);
const RAM: u64 = 0x7f00_0000_0000;
static TABLE: [wire::MemoryRegion; 1] = [common::region(0, 0x1000_0000, RAM, 0)];

fn spec() -> BackendSpec {
    let mut spec = BackendSpec::new(2, 1024);
    spec.features |= VirtioFeatures::LOG_ALL | VirtioFeatures::RING_EVENT_IDX;
    spec.protocol_features |= ProtocolFeatures::LOG_SHMFD
        | ProtocolFeatures::INFLIGHT_SHMFD
        | ProtocolFeatures::DEVICE_STATE;
    spec
}

fn with_protocol() -> VirtioFeatures {
    VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES
}

fn ack(request: FrontendCode) -> Out {
    Out::Reply(Reply::Ack { request, status: 0 })
}

fn map(t: &mut Transcript) {
    let fd = t.fd();
    t.send(Request::SetMemTable { table: MemoryTable::Standard(&TABLE), fds: &[fd] });
    t.complete(Completion::Done(Ok(())));
}

fn addr(index: VringIndex) -> VringAddr {
    let base = RAM + 0x10_0000 * u64::from(index.0);
    VringAddr {
        index,
        flags: VringAddrFlags::empty(),
        descriptor: base,
        available: base + 0x4000,
        used: base + 0x8000,
        log: 0,
    }
}

fn configure(t: &mut Transcript, index: VringIndex) {
    t.send(Request::SetVringNum { index, num: 256 });
    t.send(Request::SetVringBase { index, base: VringBase::split(0) });
    t.send(Request::SetVringAddr(addr(index)));
}

/// SET_VRING_KICK, and the device's start reported when it started a ring.
fn kick(t: &mut Transcript, index: VringIndex) -> Vec<Out> {
    let fd = t.fd();
    let mut outs = t.send(Request::SetVringKick(VringFd { index, fd: Some(fd) }));
    if started_enabled(&outs).is_some() {
        outs.extend(t.complete(Completion::Done(Ok(()))));
    }
    outs
}

fn started_enabled(outs: &[Out]) -> Option<bool> {
    outs.iter().find_map(|o| match o {
        Out::Action(Action::StartVring { enabled, .. }) => Some(*enabled),
        _ => None,
    })
}

/// §5.1 (rust-vmm/vhost PR #290, cloud-hypervisor #8313): a VMM restored after migration sends
/// SET_PROTOCOL_FEATURES with REPLY_ACK straight away, never GET_FEATURES or
/// GET_PROTOCOL_FEATURES, and then waits for acks. Every NEED_REPLY gets one.
#[test]
fn reply_ack_hang_when_front_end_skips_get_protocol_features() {
    let mut t = Transcript::backend(spec());
    let protocol = ProtocolFeatures::REPLY_ACK | ProtocolFeatures::MQ;
    assert_eq!(
        t.send_need_reply(Request::SetProtocolFeatures(protocol)),
        [ack(FrontendCode::SetProtocolFeatures)]
    );
    assert_eq!(t.send_need_reply(Request::SetOwner), [ack(FrontendCode::SetOwner)]);
    let outs = t.send_need_reply(Request::SetFeatures(with_protocol()));
    assert_eq!(outs.last(), Some(&ack(FrontendCode::SetFeatures)));
    let fd = t.fd();
    let outs = t
        .send_need_reply(Request::SetMemTable { table: MemoryTable::Standard(&TABLE), fds: &[fd] });
    assert!(!outs.contains(&ack(FrontendCode::SetMemTable)), "ack only after the maps are done");
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::SetMemTable)]);
    // Even without REPLY_ACK acked, a NEED_REPLY is answered rather than left hanging.
    let mut t = Transcript::backend(spec());
    assert_eq!(t.send_need_reply(Request::SetOwner), [ack(FrontendCode::SetOwner)]);
    t.assert_fds_balanced();
}

/// §5.2 (crosvm `ea45ab7bf`): REPLY_ACK advertised but never acked. What SET_PROTOCOL_FEATURES
/// accepts is exactly what GET_PROTOCOL_FEATURES advertised, and accepted bits are honoured.
#[test]
fn advertised_reply_ack_is_accepted_and_honoured() {
    let mut t = Transcript::backend(spec());
    let outs = t.send(Request::GetProtocolFeatures);
    let [Out::Reply(Reply::ProtocolFeatures(offered))] = outs[..] else { panic!("{outs:?}") };
    assert!(offered.contains(ProtocolFeatures::REPLY_ACK));
    assert_eq!(
        t.send_need_reply(Request::SetProtocolFeatures(offered)),
        [ack(FrontendCode::SetProtocolFeatures)]
    );
    assert_eq!(t.backend.acked_protocol_features(), offered);
    assert_eq!(t.send_need_reply(Request::SetOwner), [ack(FrontendCode::SetOwner)]);
}

/// §5.3 (rust-vmm/vhost PR #367): SHMEM at bit 21 collided with GPA_ADDRESSES. Our bits follow
/// QEMU master, and with GPA_ADDRESSES the ring addresses are taken as guest-physical.
#[test]
fn protocol_bit_collisions_shmem_vs_gpa_addresses() {
    assert_eq!(ProtocolFeatures::SHMEM.bits(), 1 << 22);
    assert_eq!(ProtocolFeatures::GPA_ADDRESSES.bits(), 1 << 21);
    let mut s = spec();
    s.protocol_features |= ProtocolFeatures::GPA_ADDRESSES;
    let mut t = Transcript::backend(s);
    t.send(Request::SetProtocolFeatures(ProtocolFeatures::GPA_ADDRESSES));
    t.send(Request::SetFeatures(with_protocol()));
    static GPA_TABLE: [wire::MemoryRegion; 1] =
        [common::region(0x4000_0000, 0x1000_0000, 0x4000_0000, 0)];
    let fd = t.fd();
    t.send(Request::SetMemTable { table: MemoryTable::Standard(&GPA_TABLE), fds: &[fd] });
    t.complete(Completion::Done(Ok(())));
    t.send(Request::SetVringNum { index: V0, num: 256 });
    let gpa = VringAddr {
        descriptor: 0x4000_0000,
        available: 0x4000_4000,
        used: 0x4000_8000,
        ..addr(V0)
    };
    assert_eq!(t.send_need_reply(Request::SetVringAddr(gpa)), [ack(FrontendCode::SetVringAddr)]);
    let outs = kick(&mut t, V0);
    let [Out::Action(Action::StartVring { config, .. })] = outs[..] else { panic!("{outs:?}") };
    assert_eq!(
        (config.descriptor, config.available, config.used),
        (0x4000_0000, 0x4000_4000, 0x4000_8000)
    );
}

/// §5.4 (rust-vmm/vhost #247): a kick that arrives before SET_VRING_ENABLE was consumed and
/// dropped. A ring started while disabled is processed as soon as it is enabled.
#[test]
fn lost_kick_before_vring_enable() {
    let mut t = Transcript::backend(spec());
    t.send(Request::SetFeatures(with_protocol()));
    map(&mut t);
    configure(&mut t, V0);
    assert_eq!(started_enabled(&kick(&mut t, V0)), Some(false));
    assert_eq!(
        t.send(Request::SetVringEnable { index: V0, enable: true }),
        [Out::Action(Action::SetVringEnabled { index: V0, enabled: true })],
        "enabling a started ring tells the driver to process what is already available"
    );
}

/// §5.5 (ring-state rewrite): rings must start without a kick after restore. A ring starts on
/// SET_VRING_KICK receipt, and if it is enabled the driver processes available buffers at once.
#[test]
fn rings_start_without_a_kick() {
    let mut t = Transcript::backend(spec());
    t.send(Request::SetFeatures(with_protocol()));
    map(&mut t);
    configure(&mut t, V0);
    t.send(Request::SetVringEnable { index: V0, enable: true });
    assert_eq!(started_enabled(&kick(&mut t, V0)), Some(true));
    assert!(t.backend.vring_state(V0).is_some_and(RingState::is_runnable));
}

/// §5.6 (rust-vmm/vhost PR #210): SET_FEATURES re-sent to toggle LOG_ALL disabled rings and
/// halted migrating devices. SET_FEATURES never disables a ring.
#[test]
fn set_features_never_disables_rings() {
    let mut t = Transcript::backend(spec());
    t.send(Request::SetFeatures(with_protocol()));
    map(&mut t);
    configure(&mut t, V0);
    t.send(Request::SetVringEnable { index: V0, enable: true });
    kick(&mut t, V0);
    let outs = t.send(Request::SetFeatures(with_protocol() | VirtioFeatures::LOG_ALL));
    assert!(!outs.iter().any(|o| matches!(
        o,
        Out::Action(Action::SetVringEnabled { .. } | Action::StopVring { .. })
    )));
    assert!(outs.contains(&Out::Action(Action::SetLogging(true))));
    assert_eq!(t.backend.vring_state(V0), Some(RingState { started: true, enabled: true }));
    t.send(Request::SetFeatures(with_protocol()));
    assert_eq!(t.backend.vring_state(V0), Some(RingState { started: true, enabled: true }));
}

/// §5.7 (rust-vmm/vhost PR #227; QEMU < 7.2 never sent SET_VRING_ENABLE): without bit 30,
/// SET_FEATURES enables every ring and SET_VRING_KICK does not disable it.
#[test]
fn rings_enabled_without_set_vring_enable() {
    let mut t = Transcript::backend(spec());
    t.send(Request::SetFeatures(VirtioFeatures::VERSION_1));
    map(&mut t);
    configure(&mut t, V0);
    configure(&mut t, V1);
    assert_eq!(started_enabled(&kick(&mut t, V0)), Some(true));
    assert_eq!(started_enabled(&kick(&mut t, V1)), Some(true));
}

/// §5.8 (rust-vmm/vhost PR #154/#161, virtiofsd #110): GET_VRING_BASE returned 0 / reset the
/// queue. Stop is not reset: the base reported at stop is where the ring restarts.
#[test]
fn get_vring_base_keeps_the_base() {
    let mut t = Transcript::backend(spec());
    t.send(Request::SetFeatures(with_protocol()));
    map(&mut t);
    configure(&mut t, V0);
    kick(&mut t, V0);
    t.send(Request::GetVringBase { index: V0 });
    t.complete(Completion::VringStopped { index: V0, base: VringBase::split(77) });
    // A second GET_VRING_BASE on the stopped ring reports the same base, without a stop.
    assert_eq!(
        t.send(Request::GetVringBase { index: V0 }),
        [Out::Reply(Reply::VringBase { index: V0, base: VringBase::split(77) })]
    );
    // Restarting without SET_VRING_BASE resumes from 77, not 0.
    let outs = kick(&mut t, V0);
    let [Out::Action(Action::StartVring { config: VringConfig { base, .. }, .. })] = outs[..]
    else {
        panic!("{outs:?}")
    };
    assert_eq!(base, VringBase::split(77));
}

/// §5.9 (GET_VRING_BASE_SKIP_DRAIN): GET_VRING_BASE always drains; only id 45, with its
/// feature acked, stops without draining.
#[test]
fn get_vring_base_drains_unless_skip_drain() {
    let mut s = spec();
    s.protocol_features |=
        ProtocolFeatures::GET_VRING_BASE_INFLIGHT | ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN;
    let mut t = Transcript::backend(s.clone());
    t.send(Request::SetProtocolFeatures(
        ProtocolFeatures::INFLIGHT_SHMFD | ProtocolFeatures::GET_VRING_BASE_INFLIGHT,
    ));
    t.send(Request::SetFeatures(with_protocol()));
    map(&mut t);
    configure(&mut t, V0);
    kick(&mut t, V0);
    assert_eq!(
        t.send(Request::GetVringBase { index: V0 }),
        [Out::Action(Action::StopVring { index: V0, drain: true })]
    );
    t.complete(Completion::VringStopped { index: V0, base: VringBase::split(1) });
    // Bit 20 alone does not allow skipping the drain.
    assert!(matches!(t.send(Request::GetVringBaseSkipDrain { index: V0 })[..], [Out::Close(_)]));

    let mut t = Transcript::backend(s);
    t.send(Request::SetProtocolFeatures(
        ProtocolFeatures::INFLIGHT_SHMFD
            | ProtocolFeatures::GET_VRING_BASE_INFLIGHT
            | ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN,
    ));
    t.send(Request::SetFeatures(with_protocol()));
    map(&mut t);
    configure(&mut t, V0);
    kick(&mut t, V0);
    assert_eq!(
        t.send(Request::GetVringBaseSkipDrain { index: V0 }),
        [Out::Action(Action::StopVring { index: V0, drain: false })]
    );
    assert_eq!(
        t.complete(Completion::VringStopped { index: V0, base: VringBase::split(4) }),
        [Out::Reply(Reply::VringBaseSkipDrain { index: V0, base: VringBase::split(4) })]
    );
}

/// §5.11 (cloud-hypervisor PR #2931): SET_INFLIGHT_FD before any per-vring message crashed DPDK.
/// Inflight messages do not depend on ring state.
#[test]
fn inflight_before_any_vring_message() {
    let mut t = Transcript::backend(spec());
    t.send(Request::SetProtocolFeatures(
        ProtocolFeatures::INFLIGHT_SHMFD | ProtocolFeatures::REPLY_ACK,
    ));
    let fd = t.fd();
    let desc = InflightDesc { mmap_size: 0x4000, mmap_offset: 0, num_queues: 2, queue_size: 256 };
    assert_eq!(
        t.send_need_reply(Request::SetInflightFd { desc, fd }),
        [Out::Action(Action::SetInflight { desc, fd })]
    );
    assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::SetInflightFd)]);
    t.assert_fds_balanced();
}

/// §5.12 (postcopy handshake gaps): postcopy changes SET_MEM_TABLE's reply. Without PAGEFAULT,
/// POSTCOPY_* are refused with a status rather than half-done; PAGEFAULT is never negotiated
/// together with CONFIGURE_MEM_SLOTS (newest spec), so ADD_MEM_REG has no postcopy form. The full
/// sequence is in tests/backend_postcopy.rs.
#[test]
fn postcopy_is_never_half_done() {
    let mut t = Transcript::backend(spec());
    assert_eq!(
        t.send(Request::PostcopyEnd),
        [Out::Reply(Reply::Ack { request: FrontendCode::PostcopyEnd, status: 95 })]
    );
    // A spec may not even offer both.
    let mut s = spec();
    s.protocol_features |= ProtocolFeatures::PAGEFAULT;
    assert_eq!(
        Backend::new(s.clone()).map(|_| ()),
        Err(SpecError::Conflict(
            ProtocolFeatures::PAGEFAULT,
            ProtocolFeatures::CONFIGURE_MEM_SLOTS
        ))
    );
    // Offering postcopy alone, a front-end that acks memory slots too is refused.
    s.protocol_features.remove(ProtocolFeatures::CONFIGURE_MEM_SLOTS);
    let mut t = Transcript::backend(s);
    let both = ProtocolFeatures::PAGEFAULT | ProtocolFeatures::CONFIGURE_MEM_SLOTS;
    assert!(matches!(
        t.send_need_reply(Request::SetProtocolFeatures(both))[..],
        [Out::Reply(Reply::Ack { request: FrontendCode::SetProtocolFeatures, status })] if status != 0
    ));
    assert_eq!(t.backend.acked_protocol_features(), ProtocolFeatures::empty());
}

/// A spec that offers VHOST_F_LOG_ALL without LOG_SHMFD is refused when the back-end is built:
/// SET_LOG_BASE shares the log only as a descriptor ("fd only with LOG_SHMFD"), so the first
/// one of a migration would end the session.
#[test]
fn dirty_logging_is_offered_only_with_its_descriptor() {
    let mut s = spec();
    s.features |= VirtioFeatures::LOG_ALL;
    s.protocol_features.remove(ProtocolFeatures::LOG_SHMFD);
    assert_eq!(Backend::new(s.clone()).map(|_| ()), Err(SpecError::LogWithoutShmfd));
    s.protocol_features |= ProtocolFeatures::LOG_SHMFD;
    assert!(Backend::new(s).is_ok());
}

/// §5.13 (rust-vmm/vhost #17, cloud-hypervisor #1460): the 8-region limit broke memory hot-plug.
/// With CONFIGURE_MEM_SLOTS, 509 regions fit and the 510th is refused.
#[test]
fn more_than_eight_regions_with_mem_slots() {
    let mut t = Transcript::backend(spec());
    t.send(Request::SetProtocolFeatures(
        ProtocolFeatures::CONFIGURE_MEM_SLOTS | ProtocolFeatures::REPLY_ACK,
    ));
    for i in 0..510u64 {
        let region = Region {
            guest_address: i << 20,
            size: 1 << 20,
            user_address: RAM + (i << 20),
            mmap_offset: 0,
            xen: None,
        };
        let fd = t.fd();
        let outs = t.send_need_reply(Request::AddMemReg { region, fd });
        if i < 509 {
            assert_eq!(outs, [Out::Action(Action::MapRegion { region, fd })]);
            assert_eq!(t.complete(Completion::Done(Ok(()))), [ack(FrontendCode::AddMemReg)]);
        } else {
            assert_eq!(
                outs,
                [
                    Out::Action(Action::CloseFd(fd)),
                    Out::Reply(Reply::Ack { request: FrontendCode::AddMemReg, status: 28 })
                ]
            );
        }
    }
    assert_eq!(t.backend.regions().len(), 509);
    t.assert_fds_balanced();
}

/// §5.14 (rust-vmm/vhost #217, OVS-DPDK migration hang): front-ends read a 16-byte SET_LOG_BASE
/// reply; ours is 16 bytes.
#[test]
fn set_log_base_reply_is_sixteen_bytes() {
    let mut t = Transcript::backend(spec());
    t.send(Request::SetProtocolFeatures(ProtocolFeatures::LOG_SHMFD));
    let fd = t.fd();
    t.send(Request::SetLogBase(LogBase::Shared { mmap_size: 4096, mmap_offset: 0, fd: Some(fd) }));
    let outs = t.complete(Completion::Done(Ok(())));
    let [Out::Reply(reply)] = outs[..] else { panic!("{outs:?}") };
    let mut buf = [0u8; 64];
    let len = reply.encode_into(&mut buf).expect("encodes");
    assert_eq!(len, 12 + 16);
}

/// §5.16 (cloud-hypervisor PR #2833): packed rings advertised without the packed base encoding.
/// With RING_PACKED acked, the full 32-bit base reaches the driver and comes back unchanged.
#[test]
fn packed_ring_base_is_not_truncated() {
    let mut s = spec();
    s.features |= VirtioFeatures::RING_PACKED;
    let mut t = Transcript::backend(s);
    t.send(Request::SetFeatures(with_protocol() | VirtioFeatures::RING_PACKED));
    map(&mut t);
    let base = VringBase(0x8005_8003);
    t.send(Request::SetVringNum { index: V0, num: 256 });
    assert_eq!(
        t.send_need_reply(Request::SetVringBase { index: V0, base }),
        [ack(FrontendCode::SetVringBase)]
    );
    t.send(Request::SetVringAddr(addr(V0)));
    let outs = kick(&mut t, V0);
    let [Out::Action(Action::StartVring { config, .. })] = outs[..] else { panic!("{outs:?}") };
    assert_eq!(config.base, base);
}

/// §5.18 (libvhost-user `features & VHOST_USER_F_PROTOCOL_FEATURES` with the bit number 30 as a
/// mask): whether rings are enabled by SET_FEATURES depends on bit 30 only, not on bits 1–4.
#[test]
fn protocol_features_bit_is_a_mask_not_a_number() {
    let mut s = spec();
    s.features |= VirtioFeatures::from_bits_retain(0x1e);
    for (features, enabled) in [
        (VirtioFeatures::VERSION_1 | VirtioFeatures::from_bits_retain(0x1e), true),
        (with_protocol(), false),
        (with_protocol() | VirtioFeatures::from_bits_retain(0x1e), false),
    ] {
        let mut t = Transcript::backend(s.clone());
        t.send(Request::SetFeatures(features));
        assert_eq!(t.backend.vring_state(V0).map(|s| s.enabled), Some(enabled), "{features:?}");
    }
}

/// §5.20 (rust-vmm/vhost PR #44): GET_INFLIGHT_FD must carry its 24-byte description.
#[test]
fn get_inflight_fd_without_payload_is_refused() {
    let mut t = Transcript::backend(spec());
    let frame = [31u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    let outs = t.send_raw(&frame, &[]);
    assert_eq!(
        outs,
        [Out::Reply(Reply::InflightFd {
            desc: InflightDesc { mmap_size: 0, mmap_offset: 0, num_queues: 0, queue_size: 0 },
            fd: None,
        })]
    );
    assert!(matches!(
        vhu_core::Request::parse(&frame, &[]),
        Err(WireError::PayloadSize { expected: 24, got: 0, .. })
    ));
}

#[test]
fn a_fresh_back_end_reports_every_ring_in_its_initial_state() {
    // The rings are laid out by the first frame; before it they read as they will start.
    let backend = Backend::new(spec()).expect("valid spec");
    assert_eq!(backend.vring_state(V0), Some(RingState::default()));
    assert_eq!(backend.vring_state(V1), Some(RingState::default()));
    assert_eq!(backend.vring_state(VringIndex(2)), None);
    assert!(backend.is_suspended());
    let mut t = Transcript::backend(spec());
    assert_eq!(t.send(Request::SetOwner), []);
    assert_eq!(t.backend.vring_state(V1), Some(RingState::default()));
    assert_eq!(t.backend.vring_state(VringIndex(2)), None);
}

/// A ring's size and base are checked when they arrive, against the layout acked then; a
/// SET_FEATURES that switches VIRTIO_F_RING_PACKED afterwards must not start a ring those
/// checks would have refused: a split ring of 3 entries, or a packed base past the ring.
#[test]
fn a_ring_starts_only_with_a_size_and_base_its_layout_allows() {
    let mut s = spec();
    s.features |= VirtioFeatures::RING_PACKED;
    let packed = with_protocol() | VirtioFeatures::RING_PACKED;
    let start = |t: &mut Transcript| {
        let fd = t.fd();
        t.send_need_reply(Request::SetVringKick(VringFd { index: V0, fd: Some(fd) }))
    };
    let refused = |outs: &[Out]| {
        started_enabled(outs).is_none()
            && outs.iter().any(|o| {
                matches!(o, Out::Reply(Reply::Ack { request: FrontendCode::SetVringKick, status })
                    if *status != 0)
            })
    };

    // Packed first (size 3 is allowed), then split.
    let mut t = Transcript::backend(s.clone());
    t.send(Request::SetFeatures(packed));
    map(&mut t);
    t.send(Request::SetVringNum { index: V0, num: 3 });
    t.send(Request::SetVringAddr(addr(V0)));
    t.send(Request::SetFeatures(with_protocol()));
    let outs = start(&mut t);
    assert!(refused(&outs), "a split ring of 3 entries: {outs:?}");

    // Split first (any 16-bit base), then packed: available index 0x4000 of a 256-entry ring.
    let mut t = Transcript::backend(s.clone());
    t.send(Request::SetFeatures(with_protocol()));
    map(&mut t);
    t.send(Request::SetVringNum { index: V0, num: 256 });
    t.send(Request::SetVringBase { index: V0, base: VringBase::split(0x4000) });
    t.send(Request::SetVringAddr(addr(V0)));
    t.send(Request::SetFeatures(packed));
    let outs = start(&mut t);
    assert!(refused(&outs), "a packed base past the ring: {outs:?}");

    // The same ring with a base inside it starts.
    let mut t = Transcript::backend(s);
    t.send(Request::SetFeatures(with_protocol()));
    map(&mut t);
    t.send(Request::SetVringNum { index: V0, num: 256 });
    t.send(Request::SetVringBase { index: V0, base: VringBase::split(0x80) });
    t.send(Request::SetVringAddr(addr(V0)));
    t.send(Request::SetFeatures(packed));
    assert!(started_enabled(&start(&mut t)).is_some(), "a packed ring inside its size starts");
}
