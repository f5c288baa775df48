//! The DAX window over the vhost-user back-end channel: a [`Window`] whose mappings the front-end
//! makes with BACKEND_SHMEM_MAP and removes with BACKEND_SHMEM_UNMAP (shared-memory region 0,
//! which the device offers through GET_SHMEM_CONFIG).
//!
//! A queue worker that maps waits here for the front-end's answer, which the session hands the
//! device ([`DaxWindow::complete`]) on its own thread; the wait ends early when the connection
//! ends or a queue stops (the front-end answers nothing while it waits for GET_VRING_BASE), and
//! after [`ANSWER_TIMEOUT`] in any case, so a front-end that never answers costs the
//! guest an EIO, not a queue. This module must not decide which mappings are valid (the FUSE
//! server does) nor check the protocol's rules (`vhu-core` does).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use vhu_core::message::ShmemMapping;
use vhu_transport_std::{
    BackendRequests, DeviceRequest, RequestError, RequestResult, RequestTicket,
};

use crate::fuse::{Placement, Window, WindowError};

/// The virtio-fs DAX window's shared-memory region id (virtio spec "File System Device",
/// "Device Operation: DAX Window": shmid 0, "cache").
pub const DAX_SHMID: u8 = 0;
/// The size of a range Linux maps into the window at once (`FUSE_DAX_SZ`, 2 MiB): a window is
/// a whole number of them.
pub const DAX_RANGE: u64 = 2 << 20;
/// Longest wait for the front-end to map or unmap.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a wait looks whether the connection ended.
const DISCONNECT_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Answers {
    /// The current connection's requests, once a front-end connected.
    requests: Option<BackendRequests>,
    /// Connections (and abandoned waits) so far: tickets are numbered per connection, and a
    /// wait of an older generation is over.
    generation: u64,
    /// Queue stops under way (on the session's thread, or on a worker while the front-end
    /// waits for GET_VRING_BASE's answer): nothing can be answered until they end, so while
    /// one is, nothing is asked.
    stopping: u32,
    /// Tickets a worker waits on (with the generation they were asked in), and their results
    /// once they came.
    waiting: HashMap<(u64, RequestTicket), Option<RequestResult>>,
}

/// A DAX window of a fixed size, mapped by the front-end.
#[derive(Debug)]
pub struct DaxWindow {
    size: u64,
    answers: Mutex<Answers>,
    answered: Condvar,
}

impl DaxWindow {
    /// A window of `size` bytes (a multiple of the page size).
    pub fn new(size: u64) -> Self {
        Self { size, answers: Mutex::new(Answers::default()), answered: Condvar::new() }
    }

    /// A front-end connected: its requests go through `requests` (waits of the last one end).
    pub fn connect(&self, requests: BackendRequests) {
        let mut answers = self.answers();
        answers.requests = Some(requests);
        answers.generation += 1;
        answers.stopping = 0;
        answers.waiting.clear();
        self.answered.notify_all();
    }

    /// Ends every wait now and asks nothing more until [`DaxWindow::resume`] (the guest hears
    /// ENOTCONN): the device stops its queues on the thread that would hand the waits their
    /// answers, which could not come before the stop ends. Waits of every queue end, not only
    /// the stopping one's.
    pub fn suspend(&self) {
        let mut answers = self.answers();
        answers.generation += 1;
        answers.stopping = answers.stopping.saturating_add(1);
        answers.waiting.clear();
        self.answered.notify_all();
    }

    /// One stop is over: requests go to the front-end again once every stop is.
    pub fn resume(&self) {
        let mut answers = self.answers();
        answers.stopping = answers.stopping.saturating_sub(1);
    }

    /// The session's word on `ticket`; a result nobody waits for (a wait that gave up, another
    /// device request) is dropped. Returns whether a wait took it.
    pub fn complete(&self, ticket: RequestTicket, result: RequestResult) -> bool {
        let mut answers = self.answers();
        let key = (answers.generation, ticket);
        let Some(slot) = answers.waiting.get_mut(&key) else {
            return false;
        };
        *slot = Some(result);
        self.answered.notify_all();
        true
    }

    fn answers(&self) -> MutexGuard<'_, Answers> {
        // Every update is one insertion or removal: a panic leaves the map consistent.
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` and waits for its result.
    fn ask(&self, request: DeviceRequest) -> Result<(), WindowError> {
        let mut answers = self.answers();
        if answers.stopping > 0 {
            return Err(WindowError::NotAsked(Errno::NOTCONN));
        }
        let requests = answers.requests.clone().ok_or(WindowError::NotAsked(Errno::NOTCONN))?;
        // Pushed with the map locked, so the result cannot come before the wait is recorded.
        let ticket = requests.push(request).map_err(|error| {
            log::warn!("DAX window: the request cannot be sent: {error}");
            WindowError::NotAsked(match error {
                RequestError::Full(_) => Errno::AGAIN,
                _ => Errno::NOTCONN,
            })
        })?;
        let key = (answers.generation, ticket);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(Some(result)) = answers.waiting.remove(&key) {
                return outcome(result);
            }
            let now = Instant::now();
            // A new connection, none, or a stop: the answer cannot come. Either way the wait
            // ends here, and an answer coming later finds no slot to fill.
            if key.0 != answers.generation || requests.is_disconnected() {
                answers.waiting.remove(&key);
                return Err(WindowError::Unknown(Errno::NOTCONN));
            }
            if now >= deadline {
                answers.waiting.remove(&key);
                log::warn!("DAX window: no answer from the front-end in {ANSWER_TIMEOUT:?}");
                return Err(WindowError::Unknown(Errno::IO));
            }
            answers.waiting.insert(key, None);
            let slice = DISCONNECT_POLL.min(deadline - now);
            answers =
                self.answered.wait_timeout(answers, slice).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// Ends one stop of `.0`'s window ([`DaxWindow::resume`]) when dropped, run or not.
pub(super) struct ResumeOnDrop(pub(super) Option<std::sync::Arc<DaxWindow>>);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        if let Some(window) = &self.0 {
            window.resume();
        }
    }
}

/// What a request's result says about the window.
fn outcome(result: RequestResult) -> Result<(), WindowError> {
    match result {
        RequestResult::Acked(0) => Ok(()),
        RequestResult::Sent => {
            // Without REPLY_ACK the front-end never says when the mapping is in place, and a
            // guest touching it before then faults in the VMM: not a mapping to hand out.
            log::warn!("DAX window: the front-end did not negotiate REPLY_ACK; no DAX without it");
            Err(WindowError::Unknown(Errno::OPNOTSUPP))
        }
        RequestResult::Refused(error) => {
            log::warn!("DAX window: the request was not sent: {error}");
            Err(WindowError::NotAsked(Errno::OPNOTSUPP))
        }
        RequestResult::Lost => Err(WindowError::Unknown(Errno::NOTCONN)),
        other => {
            log::warn!("DAX window: the front-end did not take the request: {other:?}");
            Err(WindowError::Refused(Errno::IO))
        }
    }
}

impl Window for DaxWindow {
    fn size(&self) -> u64 {
        self.size
    }

    fn map(&self, fd: OwnedFd, placement: Placement) -> Result<(), WindowError> {
        let mapping = ShmemMapping {
            shmid: DAX_SHMID,
            fd_offset: placement.foffset,
            shm_offset: placement.moffset,
            len: placement.len,
            writable: placement.writable,
        };
        self.ask(DeviceRequest::ShmemMap { mapping, fd })
    }

    fn unmap(&self, moffset: u64, len: u64) -> Result<(), WindowError> {
        let mapping = ShmemMapping {
            shmid: DAX_SHMID,
            fd_offset: 0,
            shm_offset: moffset,
            len,
            writable: false,
        };
        self.ask(DeviceRequest::ShmemUnmap(mapping))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_asked_until_every_stop_under_way_ended() {
        let window = DaxWindow::new(DAX_RANGE);
        window.suspend();
        window.suspend();
        window.resume();
        assert_eq!(window.answers().stopping, 1, "one stop is still under way");
        let unmapped = window.unmap(0, DAX_RANGE);
        assert_eq!(unmapped, Err(WindowError::NotAsked(Errno::NOTCONN)));
        window.resume();
        window.resume();
        assert_eq!(window.answers().stopping, 0, "a resume too many changes nothing");
    }

    /// A stop whose completion never runs (its worker panicked) still ends when dropped.
    #[test]
    fn a_stop_dropped_unrun_resumes() {
        let window = std::sync::Arc::new(DaxWindow::new(DAX_RANGE));
        window.suspend();
        let pending: Box<dyn FnOnce() + Send> = {
            let resume = ResumeOnDrop(Some(std::sync::Arc::clone(&window)));
            Box::new(move || drop(resume))
        };
        assert_eq!(window.answers().stopping, 1);
        drop(pending);
        assert_eq!(window.answers().stopping, 0);
    }
}
