//! Dirty-page logging for live migration (spec "Migration", VHOST_F_LOG_ALL and
//! VHOST_USER_PROTOCOL_F_LOG_SHMFD): while the front-end copies guest memory to the destination,
//! every page the back-end writes must be marked in the front-end's log so it is copied again.
//!
//! - [`DirtyLog`]: one connection's logging state — the log area SET_LOG_BASE shares, whether
//!   VHOST_F_LOG_ALL is acked, and the optional SET_LOG_FD eventfd signalled when the log gains
//!   a dirty page.
//! - [`LogArea`]: the mapped log, one bit per 4 KiB guest-physical page, set with atomic OR.
//! - [`DirtyBitmap`]: the `vm-memory` bitmap each guest memory region carries, so every write
//!   made through `vm-memory` — used-ring updates, descriptor write-backs, data a device copies
//!   in — is marked after it lands. Writes that bypass `vm-memory` (a `preadv` into a host slice)
//!   are marked by whoever made them, after the write, through the same bitmap
//!   ([`Writer::advance`](crate::virtq::Writer::advance) does it for the zero-copy path).
//!
//! While logging is off a mark costs one atomic load. This module must not decide when logging
//! starts or which messages carry the log: that is `vhu-core`'s; it only keeps the bits.

mod area;
mod bitmap;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

pub use area::{LogArea, LogError, LOG_PAGE};
pub use bitmap::{DirtyBitmap, DirtySlice};

/// One connection's dirty-logging state; see the module docs. Shared by every region's
/// [`DirtyBitmap`] and by the session that feeds it SET_LOG_BASE, SET_LOG_FD and LOG_ALL.
#[derive(Debug, Default)]
pub struct DirtyLog {
    /// Logging is on and an area is mapped: the only thing a write checks when it is off.
    active: AtomicBool,
    /// A write past the end of the log was reported (once per connection).
    overflow_reported: AtomicBool,
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    logging: bool,
    area: Option<LogArea>,
    notify: Option<OwnedFd>,
}

impl DirtyLog {
    /// A log with no area, logging off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs the area of SET_LOG_BASE, replacing (and unmapping) any earlier one once no
    /// write is marking it.
    pub fn set_area(&self, area: LogArea) {
        self.update(|state| state.area = Some(area));
    }

    /// Installs SET_LOG_FD's eventfd, signalled whenever a mark sets a bit that was clear.
    pub fn set_notify(&self, fd: Option<OwnedFd>) {
        self.update(|state| state.notify = fd);
    }

    /// VHOST_F_LOG_ALL acked (`true`) or dropped (`false`) by SET_FEATURES.
    pub fn set_logging(&self, on: bool) {
        self.update(|state| state.logging = on);
    }

    /// Forgets the area, the eventfd and the logging switch (the connection ended or was reset).
    pub fn clear(&self) {
        self.update(|state| *state = State::default());
    }

    /// Whether writes are being logged now.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Marks the pages of `len` bytes at guest-physical `address` dirty, if logging is on.
    /// Call it after the bytes were written. Pages past the end of the log are not marked.
    #[inline]
    pub fn mark(&self, address: u64, len: usize) {
        // Checked where the caller is (every buffer written calls this, and logging is off
        // but while a VMM migrates); the marking itself is out of line.
        if len != 0 && self.active.load(Ordering::Acquire) {
            self.mark_logged(address, len);
        }
    }

    /// [`DirtyLog::mark`] while logging is on.
    #[cold]
    #[inline(never)]
    fn mark_logged(&self, address: u64, len: usize) {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let (true, Some(area)) = (state.logging, &state.area) else { return };
        if !area.covers(address, len as u64)
            && !self.overflow_reported.swap(true, Ordering::Relaxed)
        {
            // The front-end sized its log too small: those pages will not be copied again.
            log::error!(
                "a write at guest address {address:#x} lies past the end of the dirty log \
                 ({} bytes): a migration will miss it",
                area.len()
            );
        }
        if area.mark(address, len as u64) {
            if let Some(fd) = &state.notify {
                // A full eventfd counter already tells the front-end the log changed.
                let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
            }
        }
    }

    /// Whether the page holding guest-physical `address` is marked (`false` without an area).
    pub fn is_dirty(&self, address: u64) -> bool {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.area.as_ref().is_some_and(|area| area.is_dirty(address))
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        change(&mut state);
        self.active.store(state.logging && state.area.is_some(), Ordering::Release);
    }
}
