//! A device that lost track of a queue — its worker panicked — cannot say where the ring
//! stopped: the daemon closes the connection at GET_VRING_BASE instead of answering a base
//! nobody knows (resumed there, the ring would serve requests twice or never); the front-end
//! heard of the death at once, on the ring's err eventfd.

mod common;

use std::os::fd::AsFd;

use common::{eventually, protocol_features, serve, TIMEOUT};
use vhu_transport_std::client::{eventfd, Client, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::{VirtioFeatures, VringIndex};

#[test]
fn a_queue_whose_worker_died_closes_the_connection_at_get_vring_base() {
    let served = serve("stop-lost");
    let mut client = Client::connect(&served.path).expect("connects");
    client.set_timeout(TIMEOUT).expect("timeout");
    client.handshake(VirtioFeatures::VERSION_1, protocol_features()).expect("handshake");
    let ram = GuestRegion::new(0, 1 << 20).expect("guest memory");
    client.set_mem_table(&[ram.share()]).expect("memory");
    let (call, kick) = (eventfd().expect("call"), eventfd().expect("kick"));
    let err = eventfd().expect("err");
    client.set_vring_err(VringIndex(0), Some(err.as_fd())).expect("err eventfd");
    let at = ram.host_address(0x1000).expect("ring");
    client
        .start_vring(VringIndex(0), VringStart::split(64, at, call.as_fd(), kick.as_fd()))
        .expect("started");
    served.record.lock().unwrap().die_at_kick = true;
    rustix::io::write(&kick, &1u64.to_ne_bytes()).expect("kick");
    assert!(eventually(|| served.record.lock().unwrap().died), "the worker took the kick");
    // The front-end hears of it at once, on the ring's err eventfd.
    rustix::fs::fcntl_setfl(&err, rustix::fs::OFlags::NONBLOCK).expect("non-blocking");
    let signalled = || rustix::io::read(&err, &mut [0u8; 8]).is_ok();
    assert!(eventually(signalled), "the err eventfd was signalled");

    let stopped = client.stop_vring(VringIndex(0));
    assert!(stopped.is_err(), "no base is made up: {stopped:?}");
    let ended = served.wait_ended(1);
    assert!(ended[0].contains("StopLost"), "the daemon says why: {ended:?}");
    assert!(served.record.lock().unwrap().stops.is_empty(), "no stop was recorded");
}
