//! A model DAX window for `fuse_request`: it records what the server asks to map and remove,
//! answers as a VMM following the vhost-user spec does, and panics when the server asks for
//! what the spec forbids it to ask.
//!
//! Checked: a mapping lies inside the window, page-aligned and not empty; a removal names a
//! whole mapping the window holds (spec "BACKEND_SHMEM_UNMAP"); with no refusals, a mapping never
//! overlaps one in place (the server removes those first). Failures come every
//! `refuse_every`-th call when set, in turn a refusal (nothing done) and an unanswered request
//! (done, but the server cannot know): a mapping that overlaps one still in place is then
//! refused (EEXIST), as a VMM refuses it (spec "BACKEND_SHMEM_MAP").

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, PoisonError};

use rustix::io::Errno;
use vhu_device_fs::fuse::{Placement, Window, WindowError};

/// The window's size: 20 pages, enough for requests to fit, overlap and fall outside.
pub(super) const WINDOW_SIZE: u64 = 20 * 4096;

#[derive(Debug, Default)]
struct State {
    /// Offset → length.
    mappings: BTreeMap<u64, u64>,
    calls: u32,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct ModelWindow {
    state: Mutex<State>,
    /// Refuse every n-th call (0: never).
    refuse_every: u32,
}

impl ModelWindow {
    pub(super) fn new(refuse_every: u32) -> Self {
        Self { state: Mutex::default(), refuse_every }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How this call fails, if it does: refused (`Some(true)`: not done) or unanswered
    /// (`Some(false)`: done).
    fn fails(&self, state: &mut State) -> Option<bool> {
        state.calls += 1;
        let due = self.refuse_every != 0 && state.calls % self.refuse_every == 0;
        due.then_some(state.calls / self.refuse_every.max(1) % 2 == 0)
    }

    /// Checks the server's record against the window: without failures they are the same.
    pub(super) fn check(&self, record: &[(u64, u64)]) {
        if self.refuse_every == 0 {
            let held: Vec<(u64, u64)> =
                self.state().mappings.iter().map(|(a, l)| (*a, *l)).collect();
            assert_eq!(record, held, "the window holds what was recorded");
        }
    }
}

impl Window for ModelWindow {
    fn size(&self) -> u64 {
        WINDOW_SIZE
    }

    fn map(&self, _fd: OwnedFd, p: Placement) -> Result<(), WindowError> {
        let mut state = self.state();
        assert!(p.len > 0 && p.moffset % 4096 == 0 && p.len % 4096 == 0, "{p:?} is aligned");
        assert!(p.moffset + p.len <= WINDOW_SIZE, "{p:?} lies inside the window");
        assert_eq!(p.foffset % 4096, 0, "{p:?}: the file offset is aligned");
        let end = p.moffset + p.len;
        let overlaps =
            state.mappings.range(..end).next_back().is_some_and(|(at, len)| at + len > p.moffset);
        if overlaps {
            assert_ne!(self.refuse_every, 0, "{p:?} overlaps a mapping the server did not remove");
            return Err(WindowError::Refused(Errno::EXIST));
        }
        match self.fails(&mut state) {
            Some(true) => Err(WindowError::Refused(Errno::IO)),
            failed => {
                state.mappings.insert(p.moffset, p.len);
                failed.map_or(Ok(()), |_| Err(WindowError::Unknown(Errno::IO)))
            }
        }
    }

    fn unmap(&self, moffset: u64, len: u64) -> Result<(), WindowError> {
        let mut state = self.state();
        let held = state.mappings.get(&moffset).copied();
        if self.refuse_every == 0 {
            assert_eq!(held, Some(len), "a removal names a whole mapping");
        }
        if held != Some(len) {
            // A mapping the server was unsure of, never made here: not there to remove.
            return Err(WindowError::Refused(Errno::NOENT));
        }
        match self.fails(&mut state) {
            Some(true) => Err(WindowError::Refused(Errno::IO)),
            failed => {
                state.mappings.remove(&moffset);
                failed.map_or(Ok(()), |_| Err(WindowError::Unknown(Errno::IO)))
            }
        }
    }
}
