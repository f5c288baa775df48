//! Queue workers with real eventfds: when the handler runs (start, enable, kicks, in-band kicks,
//! replaced kick fds, polling mode), that kicks while disabled are not lost, and that stopping
//! hands the handler back.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::{eventfd, EventfdFlags};
use rustix::io::{read, write};
use vhu_transport_std::vhu_core::backend::VringConfig;
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::VringIndex;
use vhu_transport_std::{MemoryMap, Notifier, Queue, QueueContext, QueueHandler, Workers};

const WAIT: Duration = Duration::from_secs(5);
/// How long to watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(100);

struct Counting {
    runs: Arc<AtomicUsize>,
    base: u16,
}

impl QueueHandler for Counting {
    fn process(&mut self, queue: &QueueContext) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.base = self.base.wrapping_add(1);
        let _ = queue.call.notify();
    }

    fn base(&self) -> VringBase {
        VringBase::split(self.base)
    }
}

fn event() -> OwnedFd {
    eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd")
}

fn kick(fd: &OwnedFd) {
    write(fd, &1u64.to_ne_bytes()).expect("kick");
}

fn config() -> VringConfig {
    VringConfig {
        size: 16,
        descriptor: 0,
        available: 0x1000,
        used: 0x2000,
        log: None,
        base: VringBase(0),
        packed: false,
        event_idx: false,
        big_endian: false,
        iova: false,
    }
}

fn queue(index: u8, kick: Option<OwnedFd>, enabled: bool, memory: &MemoryMap) -> Queue {
    Queue {
        index: VringIndex(index),
        config: config(),
        kick,
        call: Notifier::new(),
        err: Notifier::new(),
        enabled,
        memory: memory.memory(),
        inflight: None,
    }
}

/// Waits until `runs` reaches at least `n`.
fn reaches(runs: &AtomicUsize, n: usize) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if runs.load(Ordering::SeqCst) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// `runs` stays at `n` for a while.
fn stays(runs: &AtomicUsize, n: usize) -> bool {
    std::thread::sleep(QUIET);
    runs.load(Ordering::SeqCst) == n
}

#[test]
fn kicks_while_disabled_run_on_enable_and_stop_returns_the_handler() {
    let memory = MemoryMap::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let kick_fd = event();
    let kick_copy = kick_fd.try_clone().unwrap();
    let mut workers = Workers::new();
    let handler = Counting { runs: Arc::clone(&runs), base: 10 };
    workers.start(queue(0, Some(kick_fd), false, &memory), handler).expect("start");
    assert!(workers.is_running(VringIndex(0)));

    kick(&kick_copy);
    assert!(stays(&runs, 0), "a disabled queue does not run");
    workers.set_enabled(VringIndex(0), true);
    assert!(reaches(&runs, 1), "enabling runs the queue");
    // The kick sent while disabled is still in its eventfd: it runs the queue once more, and the
    // worker consumed it.
    assert!(reaches(&runs, 2));
    assert!(stays(&runs, 2));
    assert!(read(&kick_copy, &mut [0u8; 8]).is_err(), "kick consumed");

    kick(&kick_copy);
    assert!(reaches(&runs, 3), "a kick runs an enabled queue");
    workers.kick(VringIndex(0));
    assert!(reaches(&runs, 4), "an in-band kick runs it");

    let new_kick = event();
    let new_copy = new_kick.try_clone().unwrap();
    workers.replace_kick(VringIndex(0), Some(new_kick));
    assert!(reaches(&runs, 5), "a new kick fd rescans the ring");
    kick(&kick_copy);
    assert!(stays(&runs, 5), "the old kick fd is no longer watched");
    kick(&new_copy);
    assert!(reaches(&runs, 6));

    let handler = workers.stop(VringIndex(0)).expect("handler back");
    let total = runs.load(Ordering::SeqCst);
    assert_eq!(handler.base(), VringBase::split(10 + total as u16));
    assert!(!workers.is_running(VringIndex(0)));
    assert!(workers.stop(VringIndex(0)).is_none());
}

#[test]
fn queue_without_kick_fd_is_polled_and_started_enabled_runs_at_once() {
    let memory = MemoryMap::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut workers = Workers::new();
    let call = event();
    let q = queue(1, None, true, &memory);
    q.call.set(Some(call.try_clone().unwrap()));
    workers.start(q, Counting { runs: Arc::clone(&runs), base: 0 }).expect("start");
    assert!(reaches(&runs, 3), "polled repeatedly");
    let mut count = [0u8; 8];
    read(&call, &mut count).expect("call signalled");
    assert!(u64::from_ne_bytes(count) >= 1);
    workers.set_enabled(VringIndex(1), false);
    // The worker takes the change at its next turn (one already begun may still count): the
    // runs stop within a few quiet periods, however late a loaded machine schedules it.
    let stopped = (0..20).any(|_| stays(&runs, runs.load(Ordering::SeqCst)));
    assert!(stopped, "a disabled queue is not polled");
    assert_eq!(workers.stop_all().len(), 1);
}

#[test]
fn notifier_follows_replacements() {
    let notifier = Notifier::new();
    assert!(!notifier.notify().expect("no fd is fine"));
    let first = event();
    let clone = notifier.clone();
    assert!(clone.set(Some(first.try_clone().unwrap())).is_none());
    assert!(notifier.is_set());
    assert!(notifier.notify().expect("notify"));
    let mut count = [0u8; 8];
    read(&first, &mut count).expect("signalled");
    assert_eq!(u64::from_ne_bytes(count), 1);
    assert!(notifier.set(None).is_some());
    assert!(!clone.notify().expect("cleared"));
}

/// A kick descriptor that is readable but not an eventfd (here a socket whose peer hung up, which
/// polls readable forever) is dropped after one wake-up instead of spinning the worker, and the
/// ring's err eventfd says so.
#[test]
fn a_kick_fd_that_is_not_an_eventfd_does_not_spin() {
    let memory = MemoryMap::new();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    drop(theirs);
    let err_fd = event();
    let q = queue(0, Some(OwnedFd::from(ours)), true, &memory);
    q.err.set(Some(err_fd.try_clone().expect("dup")));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut workers = Workers::new();
    workers.start(q, Counting { runs: Arc::clone(&runs), base: 0 }).expect("starts");
    // The start processes once; the broken kick is dropped (the err eventfd says so) and then
    // never wakes it again.
    assert!(reaches(&runs, 1));
    let mut signalled = [rustix::event::PollFd::new(&err_fd, rustix::event::PollFlags::IN)];
    let wait = rustix::event::Timespec { tv_sec: WAIT.as_secs() as i64, tv_nsec: 0 };
    assert_eq!(rustix::event::poll(&mut signalled, Some(&wait)).expect("poll"), 1, "err");
    std::thread::sleep(QUIET);
    let settled = runs.load(Ordering::SeqCst);
    std::thread::sleep(QUIET);
    assert_eq!(runs.load(Ordering::SeqCst), settled, "the worker does not spin on the socket");
    assert!(settled <= 2, "processed {settled} times");
    let mut buf = [0u8; 8];
    assert_eq!(read(&err_fd, &mut buf).expect("err was signalled"), 8);
    drop(workers.stop(VringIndex(0)));
}

/// A handler that finishes work on another thread: it keeps the waker of its first run, and a
/// wake from any thread runs it again (while enabled), with no kick at all.
struct Waking {
    runs: Arc<AtomicUsize>,
    waker: Arc<std::sync::Mutex<Option<vhu_transport_std::QueueWaker>>>,
}

impl QueueHandler for Waking {
    fn process(&mut self, queue: &QueueContext) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        *self.waker.lock().unwrap() = Some(queue.waker.clone());
    }

    fn base(&self) -> VringBase {
        VringBase::split(0)
    }
}

#[test]
fn a_waker_runs_the_handler_again_from_another_thread() {
    let memory = MemoryMap::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let waker = Arc::new(std::sync::Mutex::new(None));
    let mut workers = Workers::new();
    let kick = event();
    let handler = Waking { runs: Arc::clone(&runs), waker: Arc::clone(&waker) };
    workers.start(queue(1, Some(kick), true, &memory), handler).expect("start");
    assert!(reaches(&runs, 1), "runs once when started enabled");
    assert!(stays(&runs, 1), "and then waits");
    let w = waker.lock().unwrap().clone().expect("waker kept");
    std::thread::spawn(move || w.wake()).join().expect("waking thread");
    assert!(reaches(&runs, 2), "woken from another thread");
    workers.set_enabled(VringIndex(1), false);
    std::thread::sleep(QUIET);
    waker.lock().unwrap().as_ref().expect("waker").wake();
    assert!(stays(&runs, 2), "a disabled queue is not run by a wake");
    workers.set_enabled(VringIndex(1), true);
    assert!(reaches(&runs, 3), "the wake is served once enabled");
    let detached = vhu_transport_std::QueueWaker::detached().expect("eventfd");
    assert!(!detached.is_woken());
    detached.wake();
    assert!(detached.is_woken());
    assert_eq!(workers.stop_all().len(), 1);
}

/// A handler whose `stopped` takes a while (requests still in flight), and the gate it waits on.
struct SlowToStop {
    gate: std::sync::mpsc::Receiver<()>,
}

impl QueueHandler for SlowToStop {
    fn process(&mut self, _queue: &QueueContext) {}

    fn base(&self) -> VringBase {
        VringBase::split(9)
    }

    fn stopped(&mut self, _queue: &QueueContext) {
        let _ = self.gate.recv_timeout(WAIT);
    }
}

#[test]
fn stop_then_returns_at_once_and_reports_from_the_worker() {
    let memory = MemoryMap::new();
    let mut workers = Workers::new();
    let (open, gate) = std::sync::mpsc::channel();
    workers.start(queue(2, None, false, &memory), SlowToStop { gate }).expect("start");
    let (report, reported) = std::sync::mpsc::channel();
    assert!(workers.stop_then(VringIndex(2), move |handler| report.send(handler.base()).unwrap()));
    assert!(!workers.is_running(VringIndex(2)), "stopping, no longer running");
    assert!(reported.recv_timeout(QUIET).is_err(), "not before the handler finished stopping");
    open.send(()).unwrap();
    assert_eq!(reported.recv_timeout(WAIT), Ok(VringBase::split(9)));
    assert!(!workers.stop_then(VringIndex(2), |_| {}), "nothing runs any more");
    assert!(workers.stop_all().is_empty());
}

/// Sees the configuration its queue has now.
struct Seeing {
    seen: Arc<std::sync::Mutex<Option<VringConfig>>>,
}

impl QueueHandler for Seeing {
    fn process(&mut self, queue: &QueueContext) {
        *self.seen.lock().expect("seen") = Some(queue.config);
    }

    fn base(&self) -> VringBase {
        VringBase(0)
    }
}

/// A logging switch (core's verdict) reaches the handler; anything else (a ring moved while
/// it runs, a log elsewhere) or a queue not running is refused.
#[test]
fn only_a_logging_switch_updates_a_running_ring() {
    let memory = MemoryMap::new();
    let mut workers = Workers::new();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let handler = Seeing { seen: Arc::clone(&seen) };
    workers.start(queue(0, None, true, &memory), handler).expect("start");
    let logged = VringConfig { log: Some(config().used), ..config() };
    assert!(workers.update_logging(VringIndex(0), logged, true).is_ok());
    workers.kick(VringIndex(0));
    let deadline = std::time::Instant::now() + WAIT;
    while *seen.lock().expect("seen") != Some(logged) {
        assert!(std::time::Instant::now() < deadline, "the handler sees the log address");
        std::thread::sleep(Duration::from_millis(2));
    }
    let moved = VringConfig { used: 0x3000, log: Some(0x3000), ..config() };
    assert!(workers.update_logging(VringIndex(0), moved, false).is_err());
    assert!(workers.update_logging(VringIndex(1), config(), true).is_err(), "not running");
    let off = VringConfig { log: None, base: VringBase(5), ..config() };
    assert!(workers.update_logging(VringIndex(0), off, true).is_ok(), "logging off again");
    assert!(workers.stop(VringIndex(0)).is_some());
}

/// A device with queues of different kinds runs them in one `Workers` of boxed handlers, and
/// wakes one from outside, with a waker its handler never handed out (a queue the device fills
/// unasked: received packets, input events).
#[test]
fn boxed_handlers_of_different_kinds_and_a_waker_from_outside() {
    let memory = MemoryMap::new();
    let (counted, woken) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers: Workers<Box<dyn QueueHandler>> = Workers::new();
    let counting = Counting { runs: Arc::clone(&counted), base: 0 };
    workers.start(queue(0, Some(event()), true, &memory), Box::new(counting)).expect("start");
    let waking = Waking { runs: Arc::clone(&woken), waker: Arc::default() };
    workers.start(queue(1, Some(event()), true, &memory), Box::new(waking)).expect("start");
    assert!(reaches(&counted, 1) && reaches(&woken, 1), "each runs once, started enabled");
    assert!(stays(&woken, 1), "and then waits: no kick comes");
    let waker = workers.waker(VringIndex(1)).expect("a worker runs");
    assert!(workers.waker(VringIndex(2)).is_none());
    std::thread::spawn(move || waker.wake()).join().expect("waking thread");
    assert!(reaches(&woken, 2), "woken from outside");
    assert!(stays(&counted, 1), "the other queue is not");
    let stopped = workers.stop_all();
    let bases: Vec<_> = stopped.iter().map(|(i, h)| (i.0, h.base())).collect();
    assert_eq!(bases, [(0, VringBase::split(1)), (1, VringBase::split(0))]);
}
