//! The front-end side shared by `frontend_session` and `frontend_backend_pair`: a ledger of
//! descriptor tokens, a model that checks every output of a [`Frontend`] against the protocol
//! rules, and the VMM operations a fuzzer chooses.
//!
//! Ownership rule checked (see `vhu_core::frontend::Output`): a token given to a VMM call that
//! succeeds, or arriving with a frame, has entered the front-end; it leaves it exactly once, in an
//! emitted request's fds, an event, a back-end channel reply or a `CloseFd`. A token given to a
//! call that fails stays with the caller and must never come out. Tokens of a frame leave during
//! the same step; the others leave at the latest when nothing is queued any more.
//!
//! [`Frontend`]: vhu_core::frontend::Frontend

mod drain;
mod event;
mod model;
mod request;
mod vmm;

pub(crate) use model::{Detail, Drained, Ev, Model, Unanswered};
pub(crate) use vhu_core::testing::Ledger;
pub(crate) use vmm::{script, Answer, Config, Ring, Saved, Vmm};

use vhu_core::message::Region;

/// Addresses are drawn near this base so that rings land inside regions.
pub(crate) const RAM: u64 = 0x7f00_0000_0000;

/// Most outputs one drain may yield before the front-end counts as never settling.
const MAX_OUTPUTS_PER_DRAIN: usize = 4096;

/// A region in slot `slot` of `pages` 64 KiB pages (0 pages is an invalid, empty region).
pub(crate) fn region(slot: u8, pages: u8) -> Region {
    let base = u64::from(slot) << 24;
    Region {
        guest_address: base,
        size: u64::from(pages) << 16,
        user_address: RAM + base,
        mmap_offset: 0,
        xen: None,
    }
}
