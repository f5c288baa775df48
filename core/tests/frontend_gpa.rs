//! Front-end flows against the real back-end with GPA_ADDRESSES (protocol feature 21): what
//! the back-end is told, and what a refusal undoes.

mod common;

use common::pair::*;

/// With GPA_ADDRESSES acked (protocol feature 21), the memory table carries guest addresses in
/// its user-address fields and the rings' addresses go out as the guest addresses the table maps
/// them to; the back-end, which then reads them as guest addresses, starts the ring. A ring
/// address outside every region is refused before anything is sent.
#[test]
fn gpa_addresses_send_guest_addresses_for_memory_and_rings() {
    let mut spec = spec();
    spec.protocol_features |= ProtocolFeatures::GPA_ADDRESSES;
    let mut config = config();
    config.protocol_features |= ProtocolFeatures::GPA_ADDRESSES;
    let mut pair = Pair::new(spec, config, CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).unwrap();
    pair.pump();
    assert!(pair.backend.acked_protocol_features().contains(ProtocolFeatures::GPA_ADDRESSES));
    pair.clear_log();

    let fd = pair.vmm_fd();
    pair.frontend.set_mem_table(&[(region(1), fd)]).unwrap();
    let mut ring = setup(&mut pair, 0, 0);
    // Inside region 1 as the VMM maps it.
    ring.descriptor += 0x10_0000;
    ring.available += 0x10_0000;
    ring.used += 0x10_0000;
    pair.frontend.start_vring(VringIndex(0), ring).unwrap();
    pair.pump();
    let sent = Region { user_address: region(1).guest_address, ..region(1) };
    assert!(pair.acts.contains(&Act::MapRegion(sent)), "{:?}", pair.acts);
    let started = Act::StartVring { index: 0, base: VringBase::split(0), enabled: false };
    assert!(pair.acts.contains(&started), "{:?}", pair.acts);
    assert!(pair.backend_errors.is_empty(), "{:?}", pair.backend_errors);

    let outside = setup(&mut pair, 1, 0);
    assert!(matches!(
        pair.frontend.start_vring(VringIndex(1), outside),
        Err(FrontendError::Memory { code: FrontendCode::SetVringAddr, .. })
    ));

    // A refused ADD_MEM_REG frees its slot in the VMM's terms (its own user address), though
    // the back-end was told the guest address.
    let mut buf = [0u8; 128];
    let wire = Region { user_address: region(2).guest_address, ..region(2) };
    let len = Request::AddMemReg { region: wire, fd: FdToken(0) }.encode_into(false, &mut buf);
    let received = pair.receive(1);
    pair.be_in.extend(&received);
    pair.backend.handle_frame(&buf[..len.unwrap()], &received).unwrap();
    pair.drive_backend();
    pair.clear_log();
    let fd = pair.vmm_fd();
    pair.frontend.add_mem_region(region(2), fd).unwrap();
    pair.pump();
    assert!(matches!(
        pair.events[..],
        [Ev::Failed(FrontendError::Nack { request: FrontendCode::AddMemReg, .. })]
    ));
    assert_eq!(pair.frontend.regions().len(), 1, "only region 1 stays");
}
