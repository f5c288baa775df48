//! The `vm-memory` side of dirty logging: a [`DirtyBitmap`] per guest memory region turns
//! `vm-memory`'s "these bytes of the region were written" into guest-physical pages marked in
//! the connection's [`DirtyLog`].
//!
//! A region's bitmap knows the region's guest-physical address; slices of it
//! ([`DirtySlice`]) borrow the log rather than count references, so taking a slice of guest
//! memory costs nothing extra. A bitmap made without a log (`Default`, as `vm-memory` builds one
//! for memory a test allocates) marks nothing.
//!
//! A region's bitmap also holds the region's registration with [`crate::bus_guard`]: the
//! bitmap is the one thing `vm-memory` keeps exactly as long as a mapping (a region unmaps, then
//! drops its bitmap), so the registration ends with the mapping and never before. Beyond that
//! this module must not keep state of its own.

use std::sync::{Arc, OnceLock};

use crate::bus_guard::Guarded;

use vm_memory::bitmap::{Bitmap, BitmapSlice, NewBitmap, WithBitmapSlice};

use super::DirtyLog;

/// The bitmap of one guest memory region; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct DirtyBitmap {
    log: Option<Arc<DirtyLog>>,
    /// Guest-physical address of the region's first byte.
    base: u64,
    /// The mapping's registration with the SIGBUS guard, once it is mapped.
    guard: Arc<OnceLock<Guarded>>,
}

impl DirtyBitmap {
    /// The bitmap of a region that starts at guest-physical `base`, marking in `log`.
    pub fn new(log: Arc<DirtyLog>, base: u64) -> Self {
        Self { log: Some(log), base, guard: Arc::default() }
    }

    /// Keeps the mapping's registration with the SIGBUS guard for as long as the mapping.
    pub(crate) fn hold(&self, guarded: Guarded) {
        let _ = self.guard.set(guarded);
    }
}

/// A borrowed window of a [`DirtyBitmap`]: what a `vm-memory` slice of guest memory carries.
#[derive(Clone, Copy, Debug)]
pub struct DirtySlice<'a> {
    log: Option<&'a DirtyLog>,
    /// Guest-physical address of the slice's first byte.
    base: u64,
}

impl<'a> WithBitmapSlice<'a> for DirtyBitmap {
    type S = DirtySlice<'a>;
}

impl Bitmap for DirtyBitmap {
    fn mark_dirty(&self, offset: usize, len: usize) {
        if let Some(log) = &self.log {
            log.mark(self.base.wrapping_add(offset as u64), len);
        }
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.log.as_ref().is_some_and(|log| log.is_dirty(self.base.wrapping_add(offset as u64)))
    }

    fn slice_at(&self, offset: usize) -> DirtySlice<'_> {
        DirtySlice { log: self.log.as_deref(), base: self.base.wrapping_add(offset as u64) }
    }
}

impl NewBitmap for DirtyBitmap {
    fn with_len(_len: usize) -> Self {
        Self::default()
    }
}

impl<'a> WithBitmapSlice<'_> for DirtySlice<'a> {
    type S = Self;
}

impl BitmapSlice for DirtySlice<'_> {}

impl Bitmap for DirtySlice<'_> {
    fn mark_dirty(&self, offset: usize, len: usize) {
        if let Some(log) = self.log {
            log.mark(self.base.wrapping_add(offset as u64), len);
        }
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.log.is_some_and(|log| log.is_dirty(self.base.wrapping_add(offset as u64)))
    }

    fn slice_at(&self, offset: usize) -> Self {
        Self { log: self.log, base: self.base.wrapping_add(offset as u64) }
    }
}
