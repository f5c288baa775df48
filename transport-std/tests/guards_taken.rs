//! A process whose SIGBUS guards are all taken (a multi-tenant server, its other front-ends
//! holding them) refuses the next front-end's memory instead of mapping it unguarded, where a
//! truncation of its file would end the process and every connection in it; once guards are
//! free again, memory maps. One test alone in its binary: it takes every guard of the process.

mod common;

use common::{protocol_features, serve, TIMEOUT};
use vhu_transport_std::bus_guard::{guard, GuardsTaken, SLOTS};
use vhu_transport_std::client::{Client, GuestRegion};
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures};

#[test]
fn guest_memory_is_refused_while_every_guard_is_taken() {
    let page = rustix::param::page_size();
    // Pages nobody touches, to register: anonymous and inaccessible.
    // SAFETY: a new private mapping placed by the kernel, unmapped at the end.
    let reserved = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SLOTS * page,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(reserved, libc::MAP_FAILED, "mmap");
    let served = serve("guards-taken");
    let mut client = Client::connect(&served.path).expect("connects");
    client.set_timeout(TIMEOUT).expect("timeout");
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    let negotiated = client.handshake(features, protocol_features()).expect("handshake");
    assert!(
        negotiated.protocol_features.contains(ProtocolFeatures::REPLY_ACK),
        "failures are told"
    );
    let ram = GuestRegion::new(0, 1 << 20).expect("guest memory");
    let mut taken = Vec::new();
    for i in 0..=SLOTS {
        let at = reserved.cast::<u8>().wrapping_add(i.min(SLOTS - 1) * page);
        match guard(at, page, page) {
            Ok(Some(guarded)) => taken.push(guarded),
            Err(GuardsTaken) => break,
            Ok(None) => panic!("page {i} cannot be guarded"),
        }
    }
    assert!(!taken.is_empty() && taken.len() <= SLOTS, "{} guards taken", taken.len());
    let refused = client.set_mem_table(&[ram.share()]);
    assert!(refused.is_err(), "mapped without a guard: {refused:?}");
    drop(taken);
    client.set_mem_table(&[ram.share()]).expect("mapped once guards are free");
    // SAFETY: the reservation made above, no longer registered or used.
    assert_eq!(unsafe { libc::munmap(reserved, SLOTS * page) }, 0);
}
