//! Split virtqueues over `vm-memory`, for the virtio-fs request and hiprio queues.
//!
//! - [`SplitQueue`]: ring state as plain data plus the pop / add-used / notify operations; guest
//!   memory is passed to every call.
//! - [`DescriptorChain`]: one validated chain (direct or through one indirect table), its readable
//!   buffers first, then its writable ones.
//! - [`Reader`] / [`Writer`]: copy between a chain's buffers and byte slices.
//! - [`need_event`]: the EVENT_IDX suppression rule.
//!
//! Every guest-controlled value is validated and each failure is a [`QueueError`]; nothing here
//! panics on ring contents or accesses memory outside what `vm-memory` maps. Packed rings are not
//! implemented yet.

mod chain;
mod desc;
mod error;
mod io;
mod notify;
mod split;

pub use chain::{DescriptorChain, Segment};
pub use desc::{
    avail_ring_len, desc_table_len, used_ring_len, Descriptor, AVAIL_F_NO_INTERRUPT,
    DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE, MAX_QUEUE_SIZE, USED_F_NO_NOTIFY,
};
pub use error::{QueueError, Ring};
pub use io::{Reader, Writer};
pub use notify::need_event;
pub use split::{QueueState, SplitQueue};
