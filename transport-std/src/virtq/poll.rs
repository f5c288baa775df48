//! [`RingPoll`]: how long a request queue keeps looking at its available ring before its worker
//! goes to sleep on the kick eventfd.
//!
//! Sleeping and being woken by a kick costs a queue's thread far more than a small request
//! (two system calls, two context switches and an inter-processor wake-up, each slower again
//! on a virtualized host), and a driver that adds requests while the device sleeps must kick
//! it, an exit to the hypervisor in a real guest. A driver that keeps a few requests in flight
//! adds the next one moments after the ring runs dry, so looking again for a moment catches it
//! with neither. How long that moment is adapts as QEMU's event loop adapts its polling: a
//! ring that stayed idle longer than the poll could have waited (but not longer than the
//! longest poll, [`crate::spin::spin`]) doubles the poll, from 4 µs; one idle for longer than
//! that stops polling, so a quiet queue sleeps at once. While it polls, the device has not asked
//! for a kick (EVENT_IDX's `avail_event` stays behind), so the driver does not make one. A poll
//! needs a CPU for the queue and one for the driver it waits for: while more queues of the
//! process see short idle periods than half the CPUs, none polls (their threads and the
//! drivers' would outnumber the CPUs, and a poll would only keep the thread it waits for from
//! running); their windows still follow their idle periods, so when one goes quiet the others
//! poll again.
//!
//! This module owns only the decision and the clock; looking at the ring is its caller's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The first poll after a ring was idle briefly.
const FIRST: Duration = Duration::from_micros(4);

/// One queue's polling state.
#[derive(Debug)]
pub struct RingPoll {
    /// How long the next poll may last.
    window: Duration,
    /// The longest poll (zero: never poll).
    max: Duration,
    /// When the ring last ran dry without the poll catching a request.
    idle_since: Option<Instant>,
    /// The queues that poll ([`POLLING`], outside tests) and how many may at once.
    polling: &'static AtomicUsize,
    most: usize,
}

impl Default for RingPoll {
    fn default() -> Self {
        Self::new()
    }
}

impl RingPoll {
    /// Polling bounded by the process's spin ([`crate::spin::spin`]): none on a single CPU or
    /// with `VHU_SPIN_US=0`.
    pub fn new() -> Self {
        Self::with_max(crate::spin::spin().unwrap_or(Duration::ZERO))
    }

    /// Polling for at most `max` (zero: never).
    pub fn with_max(max: Duration) -> Self {
        Self::counted_in(max, &POLLING, most_polling())
    }

    /// Polling for at most `max`, among the queues `polling` counts, `most` of which may poll.
    fn counted_in(max: Duration, polling: &'static AtomicUsize, most: usize) -> Self {
        Self { window: Duration::ZERO, max, idle_since: None, polling, most }
    }

    /// How long the next poll may last.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// A turn of serving begins: how long the ring was idle before it says whether a longer
    /// poll would have caught the request that ended the idleness.
    pub fn turn_begins(&mut self) {
        if let Some(since) = self.idle_since.take() {
            self.idled(since.elapsed());
        }
    }

    /// Adapts the window to an idle period of `idle`.
    pub fn idled(&mut self, idle: Duration) {
        if idle <= self.window {
            // The window already covers such gaps.
        } else if idle > self.max {
            self.set_window(Duration::ZERO);
        } else {
            self.set_window((self.window * 2).max(FIRST).min(self.max));
        }
    }

    /// Changes the window, keeping the count of polling queues.
    fn set_window(&mut self, window: Duration) {
        match (self.window.is_zero(), window.is_zero()) {
            (true, false) => {
                self.polling.fetch_add(1, Ordering::Relaxed);
            }
            (false, true) => {
                self.polling.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.window = window;
    }

    /// The ring ran dry: calls `ready` until it says a request came or the window passed, and
    /// says which. When none came, the idle period starts now and the caller should ask for a
    /// kick and sleep.
    pub fn poll(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        if !self.window.is_zero() && self.polling.load(Ordering::Relaxed) <= self.most {
            loop {
                if ready() {
                    return true;
                }
                if start.elapsed() >= self.window {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        self.idle_since = Some(start);
        false
    }
}

/// Queues of the process that poll: whose window is open.
static POLLING: AtomicUsize = AtomicUsize::new(0);

/// The most queues that may poll at once: half the CPUs (at least one).
fn most_polling() -> usize {
    static MOST: OnceLock<usize> = OnceLock::new();
    *MOST.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)))
}

impl Drop for RingPoll {
    fn drop(&mut self) {
        self.set_window(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    /// A poller counted apart from every other test's, `most` of which may poll at once.
    fn alone(max: Duration, polling: &'static AtomicUsize, most: usize) -> RingPoll {
        RingPoll::counted_in(max, polling, most)
    }

    #[test]
    fn short_idle_periods_grow_the_window_up_to_the_most_and_a_long_one_ends_polling() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let mut p = alone(MAX, &COUNT, 1);
        assert_eq!(p.window(), Duration::ZERO, "a new queue does not poll");
        p.idled(Duration::from_micros(10));
        assert_eq!(p.window(), FIRST);
        p.idled(Duration::from_micros(10));
        assert_eq!(p.window(), FIRST * 2);
        p.idled(Duration::from_micros(10));
        assert_eq!(p.window(), FIRST * 4, "16 µs now covers a 10 µs gap");
        p.idled(Duration::from_micros(10));
        assert_eq!(p.window(), FIRST * 4, "no growth past what the gaps need");
        for _ in 0..10 {
            p.idled(Duration::from_micros(49));
        }
        assert_eq!(p.window(), MAX, "never past the most");
        p.idled(Duration::from_millis(3));
        assert_eq!(p.window(), Duration::ZERO, "a quiet ring sleeps at once");
    }

    #[test]
    fn a_poll_returns_as_soon_as_the_ring_is_ready_and_gives_up_after_the_window() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let mut p = alone(MAX, &COUNT, 1);
        let mut calls = 0;
        assert!(!p.poll(|| {
            calls += 1;
            true
        }));
        assert_eq!(calls, 0, "a zero window does not look");
        p.idled(Duration::from_micros(40));
        p.idled(Duration::from_micros(40));
        let start = Instant::now();
        assert!(!p.poll(|| false));
        assert!(start.elapsed() >= p.window(), "it looked for the whole window");
        drop(p);
        // A window of a second: the third look finds the ring ready long before it ends.
        let mut long = alone(Duration::from_secs(1), &COUNT, 1);
        for _ in 0..20 {
            long.idled(Duration::from_millis(900));
        }
        assert_eq!(long.window(), Duration::from_secs(1));
        let mut left = 3;
        let start = Instant::now();
        assert!(long.poll(|| {
            left -= 1;
            left == 0
        }));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn turns_measure_the_idle_period_from_the_failed_poll() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let mut p = alone(Duration::from_secs(10), &COUNT, 1);
        assert!(!p.poll(|| false));
        std::thread::sleep(Duration::from_millis(2));
        p.turn_begins();
        assert_eq!(p.window(), FIRST, "an idle period under the most grows the window");
        p.turn_begins();
        assert_eq!(p.window(), FIRST, "no idle period, no change");
        let mut off = alone(Duration::ZERO, &COUNT, 1);
        assert!(!off.poll(|| false));
        std::thread::sleep(Duration::from_millis(1));
        off.turn_begins();
        assert_eq!(off.window(), Duration::ZERO, "a queue that may not poll never does");
    }

    #[test]
    fn no_queue_polls_while_more_want_to_than_may_and_one_going_quiet_frees_the_others() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let (mut a, mut b) = (alone(MAX, &COUNT, 1), alone(MAX, &COUNT, 1));
        for p in [&mut a, &mut b] {
            p.idled(Duration::from_micros(40));
            p.idled(Duration::from_micros(40));
        }
        assert_eq!(COUNT.load(Ordering::Relaxed), 2);
        let mut looked = false;
        assert!(!a.poll(|| {
            looked = true;
            true
        }));
        assert!(!looked, "two busy queues on room for one: neither polls");
        b.idled(Duration::from_millis(1));
        assert_eq!(COUNT.load(Ordering::Relaxed), 1, "b went quiet");
        assert!(a.poll(|| true), "a polls again");
        drop(a);
        assert_eq!(COUNT.load(Ordering::Relaxed), 0, "a dropped queue is not counted");
    }
}
