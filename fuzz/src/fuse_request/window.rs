//! A model DAX window for `fuse_request`: it records what the server asks to map and remove,
//! answers as a VMM following the vhost-user spec does, and panics when the server asks for
//! what the spec forbids it to ask.
//!
//! Checked: a mapping lies inside the window, page-aligned and not empty; a removal names a
//! whole mapping the window holds (spec "BACKEND_SHMEM_UNMAP"); with no refusals, a mapping never
//! overlaps one in place (the server removes those first). Refusals come every `refuse_every`-th
//! call when set: a refused removal leaves the mapping in place, and a mapping that overlaps one
//! is then refused (EEXIST), as a VMM refuses it (spec "BACKEND_SHMEM_MAP").

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, PoisonError};

use rustix::io::Errno;
use vhu_device_fs::fuse::{Placement, Window};

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

    /// Whether this call is refused.
    fn refuses(&self, state: &mut State) -> bool {
        state.calls += 1;
        self.refuse_every != 0 && state.calls % self.refuse_every == 0
    }

    /// Checks the server's record against the window: each mapping it believes in is in place
    /// as recorded, and, without refusals, nothing else is.
    pub(super) fn check(&self, record: &[(u64, u64)]) {
        let state = self.state();
        for (at, len) in record {
            assert_eq!(state.mappings.get(at), Some(len), "the server's mapping at {at:#x}");
        }
        if self.refuse_every == 0 {
            assert_eq!(record.len(), state.mappings.len(), "the window holds what was recorded");
        }
    }
}

impl Window for ModelWindow {
    fn size(&self) -> u64 {
        WINDOW_SIZE
    }

    fn map(&self, _fd: OwnedFd, p: Placement) -> Result<(), Errno> {
        let mut state = self.state();
        assert!(p.len > 0 && p.moffset % 4096 == 0 && p.len % 4096 == 0, "{p:?} is aligned");
        assert!(p.moffset + p.len <= WINDOW_SIZE, "{p:?} lies inside the window");
        assert_eq!(p.foffset % 4096, 0, "{p:?}: the file offset is aligned");
        let end = p.moffset + p.len;
        let overlaps =
            state.mappings.range(..end).next_back().is_some_and(|(at, len)| at + len > p.moffset);
        if overlaps {
            assert_ne!(self.refuse_every, 0, "{p:?} overlaps a mapping the server did not remove");
            return Err(Errno::EXIST);
        }
        if self.refuses(&mut state) {
            return Err(Errno::IO);
        }
        state.mappings.insert(p.moffset, p.len);
        Ok(())
    }

    fn unmap(&self, moffset: u64, len: u64) -> Result<(), Errno> {
        let mut state = self.state();
        assert_eq!(state.mappings.get(&moffset), Some(&len), "a removal names a whole mapping");
        if self.refuses(&mut state) {
            return Err(Errno::IO);
        }
        state.mappings.remove(&moffset);
        Ok(())
    }
}
