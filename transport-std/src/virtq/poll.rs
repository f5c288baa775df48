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
//! for a kick (EVENT_IDX's `avail_event` stays behind), so the driver does not make one.
//! A ring that ran dry after a batch (eight chains or more since it was last dry)
//! is not polled: its driver keeps many requests in flight and adds the next ones together
//! once it took the used ones, so one kick wakes the queue for all of them, where polling
//! would catch them one or two at a time (`vhu-fs-bench` at depth 32: about 6% less CPU per
//! request, and depth 1 unchanged).
//!
//! A poll needs a CPU for the queue and one for the driver it waits for. While more queues of
//! the process are busy with short idle periods (their window open, and serving or polling in
//! the last [`RECENT`]) than half the CPUs, none polls: their threads and the drivers' would
//! outnumber the CPUs, and a poll would only keep the thread it waits for from running. A queue
//! that goes quiet stops counting after [`RECENT`], and the others poll again. A turn polls for
//! at most [`TURN_POLLING`] in all, so a driver timing its requests cannot hold a turn (and a
//! stop waiting behind it) for long.
//!
//! A driver waiting for used chains can watch the used ring the same way (`vhu-fs-bench`'s
//! does, as a KVM host polls a halted vCPU before it schedules it out).
//!
//! This module owns only the decision and the clock; looking at the ring is its caller's.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The first poll after a ring was idle briefly.
const FIRST: Duration = Duration::from_micros(4);

/// How long after it last served or polled a queue with an open window still counts as busy.
const RECENT: Duration = Duration::from_millis(1);

/// The most one turn polls, in all its polls.
const TURN_POLLING: Duration = Duration::from_millis(10);

/// Chains served since the ring was last found dry from which on it is not polled: a driver
/// that keeps that many in flight adds the next ones in a batch once it has taken the used ones
/// (a kick then wakes the queue for all of them at once), and a poll would only catch them one
/// or two at a time, each caught batch notified on its own, for more of both sides' CPU.
const BATCH_SLEEPS: usize = 8;

/// Looks at the ring between two readings of the clock while polling: a look and a pause take
/// well under a microsecond, so a poll overruns its window by less than that, and most of its
/// looks cost no clock reading.
const LOOKS_PER_CLOCK: u32 = 4;

/// One queue's polling state.
#[derive(Debug)]
pub struct RingPoll {
    /// How long the next poll may last.
    window: Duration,
    /// The longest poll (zero: never poll).
    max: Duration,
    /// When the last poll that found nothing began.
    last_failed: Option<Instant>,
    /// When the ring last ran dry and the queue went to sleep.
    idle_since: Option<Instant>,
    /// How long this turn has polled.
    turn_polled: Duration,
    /// Where the busy queues are counted ([`BOARD`], outside tests), this queue's slot there
    /// while its window is open, and how many busy queues may poll.
    board: &'static Board,
    slot: Option<usize>,
    most: usize,
    /// Chains served since the ring was last found dry ([`RingPoll::served`]).
    served: usize,
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
        Self::counted_in(max, &BOARD, most_polling())
    }

    /// Polling for at most `max`, among the queues `board` counts, `most` of which may be busy
    /// for any to poll.
    fn counted_in(max: Duration, board: &'static Board, most: usize) -> Self {
        Self {
            window: Duration::ZERO,
            max,
            last_failed: None,
            idle_since: None,
            turn_polled: Duration::ZERO,
            board,
            slot: None,
            most,
            served: 0,
        }
    }

    /// How long the next poll may last.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// A turn of serving begins: how long the ring was idle before it says whether a longer
    /// poll would have caught the request that ended the idleness.
    pub fn turn_begins(&mut self) {
        if self.idle_since.is_none() && self.slot.is_none() {
            self.turn_polled = Duration::ZERO;
            return;
        }
        let now = Instant::now();
        if let Some(since) = self.idle_since.take() {
            self.idled(now.saturating_duration_since(since));
        }
        self.turn_polled = Duration::ZERO;
        if let Some(slot) = self.slot {
            self.board.stamp(slot, now);
        }
    }

    /// The ring ran dry, the poll found nothing, and the queue goes to sleep: its idle period
    /// began when that poll did.
    pub fn sleeps(&mut self) {
        self.idle_since = Some(self.last_failed.take().unwrap_or_else(Instant::now));
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

    /// Changes the window; a queue holds a slot on the board while its window is open.
    fn set_window(&mut self, window: Duration) {
        self.window = window;
        match (self.slot, window.is_zero()) {
            (None, false) => self.slot = self.board.claim(Instant::now()),
            (Some(slot), true) => {
                self.board.release(slot);
                self.slot = None;
            }
            _ => {}
        }
    }

    /// A chain was served: a ring that runs dry after eight of them is not polled.
    pub fn served(&mut self) {
        self.served = self.served.saturating_add(1);
    }

    /// The ring ran dry: calls `ready` until it says a request came or the window passed, and
    /// says which. When none came, the caller asks for a kick and, when the ring is still
    /// empty, sleeps ([`RingPoll::sleeps`]).
    pub fn poll(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        let batch = std::mem::take(&mut self.served);
        let may = match self.slot {
            _ if batch >= BATCH_SLEEPS => false,
            Some(slot) if self.turn_polled < TURN_POLLING => {
                self.board.stamp(slot, start);
                self.board.busy(start) <= self.most
            }
            // No window, no slot on a full board, or this turn polled enough.
            _ => false,
        };
        if may {
            let mut looks = 0u32;
            loop {
                if ready() {
                    self.turn_polled += start.elapsed();
                    return true;
                }
                looks = looks.wrapping_add(1);
                if looks % LOOKS_PER_CLOCK == 0 && start.elapsed() >= self.window {
                    break;
                }
                std::hint::spin_loop();
            }
            self.turn_polled += start.elapsed();
        }
        self.last_failed = Some(start);
        false
    }
}

impl Drop for RingPoll {
    fn drop(&mut self) {
        self.set_window(Duration::ZERO);
    }
}

/// Slots on [`Board`]: more queues with an open window than this do not poll.
const SLOTS: usize = 64;

/// The queues with an open window: when each last served or polled, in microseconds since the
/// board's epoch plus one (0: a free slot).
#[derive(Debug)]
pub(crate) struct Board {
    slots: [AtomicU64; SLOTS],
    /// Slots ever claimed (the rest need no look).
    used: AtomicUsize,
    epoch: OnceLock<Instant>,
    /// How long a queue counts as busy after it last served or polled ([`RECENT`]).
    recent: Duration,
}

/// The process's board.
static BOARD: Board = Board::new(RECENT);

impl Board {
    const fn new(recent: Duration) -> Self {
        Self {
            slots: [const { AtomicU64::new(0) }; SLOTS],
            used: AtomicUsize::new(0),
            epoch: OnceLock::new(),
            recent,
        }
    }

    /// `now`, as stored in a slot (never 0).
    fn at(&self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_init(|| now);
        let since = now.saturating_duration_since(epoch);
        u64::try_from(since.as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A free slot, stamped `now`; `None` when every slot is taken.
    fn claim(&self, now: Instant) -> Option<usize> {
        let now = self.at(now);
        let slot = (0..SLOTS).find(|&i| {
            self.slots[i].compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        })?;
        self.used.fetch_max(slot + 1, Ordering::Relaxed);
        Some(slot)
    }

    fn stamp(&self, slot: usize, now: Instant) {
        self.slots[slot].store(self.at(now), Ordering::Relaxed);
    }

    fn release(&self, slot: usize) {
        self.slots[slot].store(0, Ordering::Relaxed);
    }

    /// Queues with an open window that served or polled in the `recent` before `now`.
    fn busy(&self, now: Instant) -> usize {
        let now = self.at(now);
        let recent = u64::try_from(self.recent.as_micros()).unwrap_or(u64::MAX);
        let used = self.used.load(Ordering::Relaxed).min(SLOTS);
        self.slots[..used]
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&at| at != 0 && now.saturating_sub(at) <= recent)
            .count()
    }
}

/// The most busy queues with which one still polls: half the CPUs (at least one).
fn most_polling() -> usize {
    static MOST: OnceLock<usize> = OnceLock::new();
    *MOST.get_or_init(|| (crate::spin::cpus() / 2).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    /// Long enough that a test thread preempted on a loaded machine still counts as busy.
    const RECENT_HERE: Duration = Duration::from_millis(50);

    /// A poller on `board`, counted apart from every other test's, which polls while at most
    /// `most` queues are busy.
    fn on(board: &'static Board, max: Duration, most: usize) -> RingPoll {
        RingPoll::counted_in(max, board, most)
    }

    /// Opens `p`'s window to 8 µs.
    fn open(p: &mut RingPoll) {
        p.idled(Duration::from_micros(40));
        p.idled(Duration::from_micros(40));
    }

    #[test]
    fn short_idle_periods_grow_the_window_up_to_the_most_and_a_long_one_ends_polling() {
        static BOARD: Board = Board::new(RECENT_HERE);
        let mut p = on(&BOARD, MAX, 1);
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
        static BOARD: Board = Board::new(RECENT_HERE);
        let mut p = on(&BOARD, MAX, 1);
        let mut calls = 0;
        assert!(!p.poll(|| {
            calls += 1;
            true
        }));
        assert_eq!(calls, 0, "a zero window does not look");
        open(&mut p);
        let start = Instant::now();
        assert!(!p.poll(|| false));
        assert!(start.elapsed() >= p.window(), "it looked for the whole window");
        drop(p);
        // A window of a second: the third look finds the ring ready long before it ends.
        let mut long = on(&BOARD, Duration::from_secs(1), 1);
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
    fn the_idle_period_runs_from_the_failed_poll_to_the_next_turn_and_only_when_it_slept() {
        static BOARD: Board = Board::new(RECENT_HERE);
        let mut p = on(&BOARD, Duration::from_secs(10), 1);
        assert!(!p.poll(|| false));
        // The ring was not empty after all: the turn went on, and no idle period began.
        std::thread::sleep(Duration::from_millis(2));
        p.turn_begins();
        assert_eq!(p.window(), Duration::ZERO, "serving is not idling");
        assert!(!p.poll(|| false));
        p.sleeps();
        std::thread::sleep(Duration::from_millis(2));
        p.turn_begins();
        assert_eq!(p.window(), FIRST, "an idle period under the most grows the window");
        p.turn_begins();
        assert_eq!(p.window(), FIRST, "no idle period, no change");
        let mut off = on(&BOARD, Duration::ZERO, 1);
        assert!(!off.poll(|| false));
        off.sleeps();
        std::thread::sleep(Duration::from_millis(1));
        off.turn_begins();
        assert_eq!(off.window(), Duration::ZERO, "a queue that may not poll never does");
    }

    #[test]
    fn no_queue_polls_while_more_are_busy_than_may_be_and_one_going_quiet_frees_the_others() {
        // A minute counts as recent, and the board's clock began two minutes ago: a queue is
        // made quiet by dating its last turn back to the board's start, never by waiting (a
        // loaded machine could preempt this test for longer than any short `recent`).
        static BOARD: Board = Board::new(Duration::from_secs(60));
        let began = Instant::now().checked_sub(Duration::from_secs(120)).expect("uptime");
        BOARD.epoch.set(began).expect("the board's clock is this test's");
        let (mut a, mut b) = (on(&BOARD, MAX, 1), on(&BOARD, MAX, 1));
        open(&mut a);
        open(&mut b);
        assert_eq!(BOARD.busy(Instant::now()), 2);
        let mut looked = false;
        assert!(!a.poll(|| {
            looked = true;
            true
        }));
        assert!(!looked, "two busy queues on room for one: neither polls");
        // b sleeps without a turn for longer than it counts as busy; its window stays open.
        BOARD.slots[b.slot.expect("b's window is open")].store(1, Ordering::Relaxed);
        assert!(a.poll(|| true), "a polls again once b is quiet");
        assert_eq!(BOARD.busy(Instant::now()), 1);
        b.turn_begins();
        assert_eq!(BOARD.busy(Instant::now()), 2, "b's turn makes it busy again");
        b.idled(Duration::from_millis(5));
        assert_eq!(BOARD.busy(Instant::now()), 1, "a closed window gives the slot back");
        drop(a);
        assert_eq!(BOARD.busy(Instant::now()), 0, "a dropped queue is not counted");
    }

    #[test]
    fn a_ring_that_ran_dry_after_a_batch_is_not_polled() {
        static BOARD: Board = Board::new(RECENT_HERE);
        let mut p = on(&BOARD, MAX, 1);
        open(&mut p);
        let mut looked = false;
        for _ in 0..BATCH_SLEEPS {
            p.served();
        }
        assert!(!p.poll(|| {
            looked = true;
            true
        }));
        assert!(!looked, "a driver that keeps a batch in flight is left to kick");
        for _ in 0..BATCH_SLEEPS - 1 {
            p.served();
        }
        assert!(p.poll(|| true), "a few chains between dry rings: polled");
        assert!(p.poll(|| true), "and the count begins again at each dry ring");
    }

    #[test]
    fn a_turn_polls_for_a_bounded_time_in_all() {
        static BOARD: Board = Board::new(RECENT_HERE);
        let mut p = on(&BOARD, Duration::from_secs(1), 1);
        for _ in 0..20 {
            p.idled(Duration::from_millis(900));
        }
        p.turn_begins();
        let start = Instant::now();
        // A driver that adds a request 100 µs into each poll: the turn keeps finding one until
        // it has polled for its budget.
        while p.poll(|| {
            std::thread::sleep(Duration::from_micros(100));
            true
        }) {
            assert!(start.elapsed() < Duration::from_secs(1), "the turn never stopped polling");
        }
        assert!(start.elapsed() >= TURN_POLLING, "it polled until the budget was spent");
        assert!(!p.poll(|| true), "then this turn polls no more");
        p.turn_begins();
        assert!(p.poll(|| true), "the next turn polls again");
    }
}
