//! GET_SHMEM_CONFIG between the front-end and the real back-end: regions by shmid, and answers
//! that break the spec's rules for the table (spec "VHOST_USER_GET_SHMEM_CONFIG"); mappings
//! the back-end asks for outside its regions.

mod common;

use common::pair::*;

#[test]
fn get_shmem_config_reports_each_region_by_shmid() {
    let mut spec = spec();
    spec.shmem_sizes.extend([0x20_0000, 0, 0x1000]);
    let mut pair = Pair::new(spec, config(), CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).expect("connect");
    pair.pump();
    pair.clear_log();
    pair.frontend.get_shmem_config().unwrap();
    pair.pump();
    assert_eq!(pair.events, [Ev::ShmemConfig(vec![0x20_0000, 0, 0x1000])]);
    // Not negotiated: refused before anything is sent.
    let mut plain = Pair::new(
        spec_without_shmem(),
        FrontendConfig::new(VirtioFeatures::empty()),
        CONFIG.to_vec(),
    );
    let channel = plain.vmm_fd();
    plain.frontend.connect(Some(channel)).expect("connect");
    plain.pump();
    assert!(matches!(
        plain.frontend.get_shmem_config(),
        Err(FrontendError::NotNegotiated { feature: "SHMEM", .. })
    ));
    pair.assert_clean();
}

/// Spec "VHOST_USER_GET_SHMEM_CONFIG": `nregions` counts the sized regions, sizes are whole
/// pages, and the answer never changes on a connection. An answer that breaks a rule closes the
/// connection, naming the rule.
#[test]
fn get_shmem_config_answers_that_break_its_rules_close_the_connection() {
    fn connected(sizes: &[u64]) -> Pair {
        let mut spec = spec();
        spec.shmem_sizes.extend(sizes.iter().copied());
        let mut pair = Pair::new(spec, config(), CONFIG.to_vec());
        let channel = pair.vmm_fd();
        pair.frontend.connect(Some(channel)).expect("connect");
        pair.pump();
        pair.clear_log();
        pair
    }
    /// Asks once, with the back-end's answer (after its 12-byte header) changed by `forge`.
    fn ask(pair: &mut Pair, forge: impl FnOnce(&mut [u8])) {
        pair.frontend.get_shmem_config().unwrap();
        pair.drain_frontend();
        let (frame, _) = pair.to_backend.pop_front().expect("request sent");
        pair.backend.handle_frame(&frame, &[]).unwrap();
        pair.drive_backend();
        forge(&mut pair.to_frontend.back_mut().expect("answered").0[12..]);
        pair.pump();
    }
    let invalid = |problem| Some(FrontendError::ShmemConfigInvalid { problem });

    // A region of a page and a half (a back-end's spec cannot say so: the size is forged).
    let mut pair = connected(&[0x1000, 0x2000]);
    ask(&mut pair, |payload| payload[16..24].copy_from_slice(&0x1800u64.to_le_bytes()));
    let problem = ShmemConfigProblem::NotPageSized { shmid: 1, size: 0x1800, page_size: 4096 };
    assert_eq!(pair.frontend_closed, invalid(problem));
    assert!(pair.events.is_empty(), "{:?}", pair.events);

    let mut spec = spec();
    spec.shmem_sizes.extend([0x1000, 0x1800]);
    let refused = Backend::new(spec).map(|_| ());
    assert_eq!(refused, Err(SpecError::ShmemSize { shmid: 1, size: 0x1800 }));

    // One region counted where two have a size. (More than have one is taken: back-ends that
    // count the table's slots up to the last sized one are common.)
    let mut pair = connected(&[0x1000, 0, 0x2000]);
    ask(&mut pair, |payload| payload[..4].copy_from_slice(&1u32.to_le_bytes()));
    let problem = ShmemConfigProblem::RegionCount { nregions: 1, sized: 2 };
    assert_eq!(pair.frontend_closed, invalid(problem));
    let mut pair = connected(&[0x1000, 0, 0x2000]);
    ask(&mut pair, |payload| payload[..4].copy_from_slice(&3u32.to_le_bytes()));
    assert_eq!(pair.frontend_closed, None);

    // The same answer twice is fine; a second answer with another size is not.
    let mut pair = connected(&[0x1000, 0, 0x2000]);
    ask(&mut pair, |_| {});
    ask(&mut pair, |_| {});
    assert_eq!(pair.frontend_closed, None);
    assert_eq!(pair.events.len(), 2, "{:?}", pair.events);
    ask(&mut pair, |payload| payload[8..16].copy_from_slice(&0x2000u64.to_le_bytes()));
    assert_eq!(pair.frontend_closed, invalid(ShmemConfigProblem::Changed));
}

fn spec_without_shmem() -> BackendSpec {
    let mut spec = spec();
    spec.protocol_features.remove(ProtocolFeatures::SHMEM);
    spec
}

/// Spec "VHOST_USER_BACKEND_SHMEM_MAP": a mapping names bytes of a region. One of no bytes, one
/// wrapping around, and (once GET_SHMEM_CONFIG gave the sizes) one past its region or in a
/// region of no size are refused (ERANGE) with their descriptor released, before the VMM sees
/// them.
#[test]
fn shmem_mappings_outside_their_region_are_refused() {
    const ERANGE: u64 = 34;
    let mut spec = spec();
    spec.shmem_sizes.extend([0x20_0000, 0]);
    let mut pair = Pair::new(spec, config(), CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).expect("connect");
    pair.pump();
    pair.clear_log();
    let send = |pair: &mut Pair, shmid: u8, shm_offset: u64, len: u64| {
        let mapping = ShmemMapping { shmid, fd_offset: 0, shm_offset, len, writable: false };
        let fd = pair.token();
        pair.fe_in.push(fd);
        let mut buf = [0u8; 64];
        let request = BackendRequest::ShmemMap { mapping, fd };
        let n = request.encode_into(true, &mut buf).unwrap();
        let result = pair.frontend.handle_backend_request(&buf[..n], &[fd]);
        pair.drain_frontend();
        result
    };
    let refused = |result: Result<(), FrontendError>| {
        matches!(result, Err(FrontendError::BackendShmemOutOfRange { .. }))
    };
    assert!(refused(send(&mut pair, 0, 0x1000, 0)), "no bytes");
    assert!(refused(send(&mut pair, 0, u64::MAX - 0xfff, 0x2000)), "wrapping around");
    assert!(send(&mut pair, 0, 0x40_0000, 0x1000).is_ok(), "sizes unknown: the VMM checks");
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))).unwrap();
    pair.drain_frontend();
    pair.frontend.get_shmem_config().unwrap();
    pair.pump();
    assert!(refused(send(&mut pair, 0, 0x1f_f000, 0x2000)), "past the region's end");
    assert!(refused(send(&mut pair, 1, 0, 0x1000)), "a region of no size");
    assert!(send(&mut pair, 0, 0x1f_f000, 0x1000).is_ok(), "the region's last page");
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))).unwrap();
    pair.drain_frontend();
    // An unmap names its mapping by region range: a file offset there means nothing.
    let unmap = ShmemMapping {
        shmid: 0,
        fd_offset: u64::MAX,
        shm_offset: 0x1f_f000,
        len: 0x1000,
        writable: false,
    };
    let mut buf = [0u8; 64];
    let n = BackendRequest::ShmemUnmap(unmap).encode_into(true, &mut buf).unwrap();
    assert!(pair.frontend.handle_backend_request(&buf[..n], &[]).is_ok());
    pair.frontend.handle_backend_answer(BackendAnswer::Done(Ok(()))).unwrap();
    pair.drain_frontend();
    let refusals = pair.backend_replies.iter().filter(|reply| {
        matches!(reply, BackendReply::Ack { request: BackendCode::ShmemMap, status: ERANGE })
    });
    assert_eq!(refusals.count(), 4);
    pair.events.clear();
    pair.assert_clean();
}
