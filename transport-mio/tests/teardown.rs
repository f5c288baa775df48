//! `Server::teardown_on_threads`: a connection that ends is torn down off the loop's thread, so
//! a device slow to reset (queues finishing the requests they hold) holds up no other
//! connection's messages.

mod common;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{assert_serves, eventually, serve_configured, Record, TestDevice};
use vhu_transport_std::vhu_core::backend::BackendSpec;
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::VringIndex;
use vhu_transport_std::{Device, DeviceError, Queue};

/// Opened by the test; a reset waits for it (at most ten seconds, so a failing test ends).
type Gate = Arc<(Mutex<bool>, Condvar)>;

/// The test device, whose reset waits at the gate.
struct SlowReset {
    inner: TestDevice,
    gate: Gate,
    resetting: Arc<AtomicBool>,
}

impl Device for SlowReset {
    fn spec(&self) -> BackendSpec {
        self.inner.spec()
    }
    fn start_queue(&mut self, queue: Queue) -> Result<(), DeviceError> {
        self.inner.start_queue(queue)
    }
    fn stop_queue(&mut self, index: VringIndex, drain: bool) -> VringBase {
        self.inner.stop_queue(index, drain)
    }
    fn set_queue_enabled(&mut self, index: VringIndex, enabled: bool) {
        self.inner.set_queue_enabled(index, enabled);
    }
    fn replace_kick(&mut self, index: VringIndex, kick: Option<OwnedFd>) {
        self.inner.replace_kick(index, kick);
    }
    fn reset(&mut self) {
        self.resetting.store(true, Ordering::SeqCst);
        let (open, opened) = &*self.gate;
        let guard = open.lock().unwrap();
        let _ = opened.wait_timeout_while(guard, Duration::from_secs(10), |open| !*open).unwrap();
        self.inner.reset();
    }
}

#[test]
fn a_device_slow_to_reset_holds_up_no_other_connection() {
    let record = Arc::new(Mutex::new(Record::default()));
    let gate: Gate = Arc::default();
    let resetting = Arc::new(AtomicBool::new(false));
    let (devices, gates, flags) = (Arc::clone(&record), Arc::clone(&gate), Arc::clone(&resetting));
    let new_device = move || SlowReset {
        inner: TestDevice::new(Arc::clone(&devices)),
        gate: Arc::clone(&gates),
        resetting: Arc::clone(&flags),
    };
    let served = serve_configured("teardown", 4, new_device, |server| server.teardown_on_threads());

    let mut first = served.connect();
    assert_serves(&mut first);
    drop(first);
    assert!(eventually(|| resetting.load(Ordering::SeqCst)), "the first device resets");

    let mut second = served.connect();
    assert_serves(&mut second);
    assert_eq!(record.lock().unwrap().resets, 0, "while the first device still resets");

    let (open, opened) = &*gate;
    *open.lock().unwrap() = true;
    opened.notify_all();
    assert!(eventually(|| record.lock().unwrap().resets == 1), "the reset ends");
}
