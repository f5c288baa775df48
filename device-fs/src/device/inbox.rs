//! A queue's inbox: what finishes off its worker thread (a deferred request's reply, a chain a
//! pool thread deferred), the chains handed to the pool and the wait for them at a stop, the
//! first panic of a pooled request, and the room the queue's ring leaves for requests answered
//! later ([`Defer::hold`]). It must not touch the ring: the worker does, with what it takes from
//! here.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use vhu_transport_std::virtq::DescriptorChain;
use vhu_transport_std::QueueWaker;

use crate::fuse::Defer;

/// Work finished off the queue's worker thread, for the worker to finish.
pub(super) enum Done {
    /// A deferred request's reply, to put into its chain.
    Reply(u64, Vec<u8>),
    /// A pool thread deferred the request in this chain.
    Deferred(u64, DescriptorChain),
}

/// Chains the pool has, and whether a stop waits for them.
#[derive(Default)]
struct InPool {
    chains: usize,
    /// A stop waits: the last chain done wakes it (no one else is woken for nothing).
    awaited: bool,
    /// The worker stopped taking chains because the pool was full: the next chain done wakes it.
    full: bool,
}

/// What finished elsewhere, waiting for the queue's worker.
pub(super) struct Inbox {
    done: Mutex<Vec<Done>>,
    waker: Mutex<Option<QueueWaker>>,
    /// Chains handed to the pool and not yet done with.
    in_pool: Mutex<InPool>,
    pool_idle: Condvar,
    /// The first panic of a pooled request, for the worker to raise.
    panicked: Mutex<Option<Box<dyn Any + Send>>>,
    /// Requests answered later (lock waits) held now, and how many the ring leaves room for.
    held: AtomicUsize,
    hold_limit: usize,
}

impl Inbox {
    /// An inbox whose queue has room for `hold_limit` requests answered later.
    pub(super) fn new(hold_limit: usize) -> Self {
        Self {
            done: Mutex::default(),
            waker: Mutex::default(),
            in_pool: Mutex::default(),
            pool_idle: Condvar::new(),
            panicked: Mutex::default(),
            held: AtomicUsize::new(0),
            hold_limit,
        }
    }

    pub(super) fn post(&self, done: Done) {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).push(done);
        self.wake();
    }

    /// The worker's waker, kept from its first turn on.
    pub(super) fn keep_waker(&self, waker: &QueueWaker) {
        self.waker.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| waker.clone());
    }

    fn wake(&self) {
        if let Some(waker) = &*self.waker.lock().unwrap_or_else(|e| e.into_inner()) {
            waker.wake();
        }
    }

    pub(super) fn take(&self) -> Vec<Done> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A chain went to the pool.
    pub(super) fn handed(&self) {
        self.in_pool.lock().unwrap_or_else(|e| e.into_inner()).chains += 1;
    }

    /// A pool thread posted its chain back for the worker to finish.
    pub(super) fn returned(&self, done: Done) {
        self.post(done);
        self.settled();
    }

    /// A pool thread is done with a chain it was handed.
    pub(super) fn settled(&self) {
        let mut in_pool = self.in_pool.lock().unwrap_or_else(|e| e.into_inner());
        in_pool.chains -= 1;
        if in_pool.chains == 0 && in_pool.awaited {
            self.pool_idle.notify_all();
        }
        let was_full = std::mem::take(&mut in_pool.full);
        drop(in_pool);
        if was_full {
            self.wake();
        }
    }

    /// Whether the pool holds `limit` chains or more: the worker then takes none from the ring
    /// until one settles, which wakes it.
    pub(super) fn full(&self, limit: usize) -> bool {
        let mut in_pool = self.in_pool.lock().unwrap_or_else(|e| e.into_inner());
        in_pool.full = in_pool.chains >= limit;
        in_pool.full
    }

    /// Chains the pool has now (for inspection).
    pub(super) fn in_pool(&self) -> usize {
        self.in_pool.lock().unwrap_or_else(|e| e.into_inner()).chains
    }

    /// Runs a pooled chain's `work`, which settles the chain itself. If it panics, the chain is
    /// settled here and the panic kept for the worker ([`Inbox::raise_panic`]).
    pub(super) fn run_pooled(&self, work: impl FnOnce()) {
        // Nothing `work` shares is left half-changed by a panic: the ring and the inbox are
        // changed in single calls under their locks, and the worker is brought down next.
        let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(work)) else { return };
        self.panicked.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
        self.settled();
        self.wake();
    }

    /// Raises, on the calling worker, a panic a pooled request had.
    pub(super) fn raise_panic(&self) {
        let payload = self.panicked.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = payload {
            std::panic::resume_unwind(payload);
        }
    }

    /// Waits until the pool is done with every chain it was handed.
    pub(super) fn wait_pool_idle(&self) {
        let mut in_pool = self.in_pool.lock().unwrap_or_else(|e| e.into_inner());
        while in_pool.chains > 0 {
            in_pool.awaited = true;
            in_pool = self.pool_idle.wait(in_pool).unwrap_or_else(|e| e.into_inner());
        }
        in_pool.awaited = false;
    }
}

impl Defer for Inbox {
    fn complete(&self, unique: u64, reply: Vec<u8>) {
        self.unhold();
        self.post(Done::Reply(unique, reply));
    }

    fn hold(&self) -> bool {
        let limit = self.hold_limit;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .is_ok()
    }

    fn unhold(&self) {
        let _ = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::device::pool::Pool;

    /// A queue's room for requests answered later: taken up to its limit, given back by the
    /// reply or by a request answered at once after all.
    #[test]
    fn room_for_waits_is_taken_and_given_back() {
        let inbox = Inbox::new(2);
        assert!(inbox.hold() && inbox.hold());
        assert!(!inbox.hold(), "full");
        inbox.complete(7, Vec::new());
        assert!(inbox.hold(), "a reply gives its room back");
        inbox.unhold();
        inbox.unhold();
        inbox.unhold();
        assert!(inbox.hold() && inbox.hold() && !inbox.hold(), "never more than the limit");
    }

    /// A pooled request that panics is settled (a stop does not wait for it forever), its pool
    /// thread goes on taking jobs, and the panic is raised on the worker that asks next.
    #[test]
    fn a_pooled_panic_settles_its_chain_and_is_raised_on_the_worker() {
        let inbox = Arc::new(Inbox::new(1));
        let pool = Pool::new(2);
        for _ in 0..2 {
            let job = Arc::clone(&inbox);
            job.handed();
            pool.run(Box::new(move || job.run_pooled(|| panic!("a request went wrong"))));
        }
        let (idle, waited) = std::sync::mpsc::channel();
        let waiter = Arc::clone(&inbox);
        std::thread::spawn(move || {
            waiter.wait_pool_idle();
            let _ = idle.send(());
        });
        waited.recv_timeout(Duration::from_secs(10)).expect("the stop's wait ends");
        let (ran, done) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let ran = ran.clone();
            pool.run(Box::new(move || ran.send(()).expect("the test waits")));
        }
        for _ in 0..2 {
            done.recv_timeout(Duration::from_secs(10)).expect("the pool's threads live on");
        }
        let raised = std::panic::catch_unwind(AssertUnwindSafe(|| inbox.raise_panic()));
        let payload = raised.expect_err("the worker raises the panic");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a request went wrong"));
        // Raised once: the worker's unwinding ends it, nothing is raised twice.
        inbox.raise_panic();
    }
}
