//! Front-end flows where only a reply tells that a request took effect: without REPLY_ACK, a
//! change the VMM must not outrun is followed by a request whose reply confirms it.

mod common;

use common::pair::*;
use vhu_core::message::{VringAddr, VringAddrFlags};

/// A connected pair whose front-end does not want REPLY_ACK (so requests without a reply of
/// their own get none).
fn connected_without_reply_ack() -> Pair {
    let mut config = config();
    config.protocol_features.remove(ProtocolFeatures::REPLY_ACK);
    let mut pair = Pair::new(spec(), config, CONFIG.to_vec());
    let channel = pair.vmm_fd();
    pair.frontend.connect(Some(channel)).expect("connect");
    pair.pump();
    assert!(pair.frontend.is_connected(), "{:?}", pair.events);
    assert!(!pair
        .frontend
        .negotiated()
        .unwrap()
        .protocol_features
        .contains(ProtocolFeatures::REPLY_ACK));
    pair.clear_log();
    pair
}

#[test]
fn without_reply_ack_dirty_logging_is_confirmed_before_the_vmm_goes_on() {
    let mut pair = connected_without_reply_ack();
    start_logging(&mut pair);
    use FrontendCode as C;
    // GET_FEATURES follows SET_FEATURES: its reply says the back-end logs from now on.
    assert_eq!(
        pair.sent,
        [(C::SetLogBase, false), (C::SetFeatures, false), (C::GetFeatures, false)]
    );
    assert_eq!(pair.events, [Ev::Done(C::SetLogBase), Ev::Done(C::SetFeatures)]);
    assert!(pair.acts.contains(&Act::Logging(true)));
    // The barrier's reply changes nothing negotiated.
    assert_eq!(pair.frontend.negotiated().unwrap().features, EXPECTED_FEATURES);

    // So does logging turned on for one running ring.
    pair.clear_log();
    let ring = RING_UADDR;
    let addr = VringAddr {
        index: VringIndex(0),
        flags: VringAddrFlags::LOG,
        descriptor: ring,
        used: ring + 0x2000,
        available: ring + 0x1000,
        log: 0,
    };
    pair.frontend.set_vring_addr(addr).unwrap();
    pair.pump();
    assert_eq!(pair.sent, [(C::SetVringAddr, false), (C::GetFeatures, false)]);
    assert_eq!(pair.events, [Ev::Done(C::SetVringAddr)]);

    // Turning logging off needs no confirmation.
    pair.clear_log();
    pair.frontend.set_logging(false).unwrap();
    pair.pump();
    assert_eq!(pair.sent, [(C::SetFeatures, false)]);
    pair.assert_clean();
}
