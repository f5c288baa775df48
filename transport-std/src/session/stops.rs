//! Queue stops that finish later: the handle a device gets with [`Device::stop_queue_then`]
//! (crate::Device::stop_queue_then), and the inbox where the session finds the result.
//!
//! A session driven by an event loop must not wait for a queue to finish its requests in
//! flight. It hands the device a [`QueueStopped`]; the device calls it from any thread once the
//! queue stopped, which stores the base and wakes the session through an eventfd the adapter
//! watches. The session then feeds the completion GET_VRING_BASE (or RESET_DEVICE, once every
//! queue it stopped reported) waits for.
//!
//! This module must not decide when a ring stops (core does) nor stop anything itself.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::event::{eventfd, EventfdFlags};
use vhu_core::message::VringBase;
use vhu_core::VringIndex;

/// Where stopped queues report.
#[derive(Debug)]
pub(super) struct StopInbox {
    /// The queues that stopped, in order, and where (`None`: the device lost track of one).
    /// One GET_VRING_BASE waits for one of them; RESET_DEVICE for every queue it stopped.
    done: Mutex<VecDeque<(VringIndex, Option<VringBase>)>>,
    wake: OwnedFd,
}

impl StopInbox {
    pub(super) fn new() -> std::io::Result<Arc<Self>> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Arc::new(Self { done: Mutex::new(VecDeque::new()), wake }))
    }

    /// The eventfd that becomes readable when a queue stopped.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The first queue that stopped and was not taken yet, if one did, and where (`None`:
    /// nobody knows).
    pub(super) fn take(&self) -> Option<(VringIndex, Option<VringBase>)> {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut buf);
        self.done.lock().unwrap_or_else(PoisonError::into_inner).pop_front()
    }
}

/// Tells the session a queue stopped; see the module docs. Dropping it without calling
/// [`QueueStopped::stopped`] says the device lost track of the queue: the session closes the
/// connection (a made-up base would resume the ring in the wrong place), so the front-end is
/// never left waiting either.
#[derive(Debug)]
pub struct QueueStopped {
    inbox: Option<Arc<StopInbox>>,
    index: VringIndex,
}

impl QueueStopped {
    pub(super) fn new(inbox: Arc<StopInbox>, index: VringIndex) -> Self {
        Self { inbox: Some(inbox), index }
    }

    /// The queue stopped here (next available index; packed rings: with used index and wrap
    /// counters).
    pub fn stopped(mut self, base: VringBase) {
        self.report(Some(base));
    }

    fn report(&mut self, base: Option<VringBase>) {
        if let Some(inbox) = self.inbox.take() {
            inbox.done.lock().unwrap_or_else(PoisonError::into_inner).push_back((self.index, base));
            // A full counter (EAGAIN) already means "wake up".
            let _ = rustix::io::write(&inbox.wake, &1u64.to_ne_bytes());
        }
    }
}

impl Drop for QueueStopped {
    fn drop(&mut self) {
        if self.inbox.is_some() {
            log::warn!("queue {}: the device never said where it stopped", self.index.0);
            self.report(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_dropped_unreported_says_nobody_knows_the_base() {
        let inbox = StopInbox::new().expect("eventfd");
        QueueStopped::new(Arc::clone(&inbox), VringIndex(1)).stopped(VringBase(9));
        assert_eq!(inbox.take(), Some((VringIndex(1), Some(VringBase(9)))));
        // A device whose worker died drops the handle without a word.
        drop(QueueStopped::new(Arc::clone(&inbox), VringIndex(2)));
        assert_eq!(inbox.take(), Some((VringIndex(2), None)), "lost, not base 0");
        assert_eq!(inbox.take(), None);
    }

    #[test]
    fn stops_reported_together_are_all_kept() {
        let inbox = StopInbox::new().expect("eventfd");
        QueueStopped::new(Arc::clone(&inbox), VringIndex(0)).stopped(VringBase(1));
        QueueStopped::new(Arc::clone(&inbox), VringIndex(1)).stopped(VringBase(2));
        assert_eq!(inbox.take(), Some((VringIndex(0), Some(VringBase(1)))));
        assert_eq!(inbox.take(), Some((VringIndex(1), Some(VringBase(2)))), "not overwritten");
        assert_eq!(inbox.take(), None);
    }
}
