//! Split and packed virtqueues over `vm-memory`, for the queues of any device.
//!
//! - [`SplitQueue`] and [`PackedQueue`]: ring state as plain data plus the pop / add-used / notify
//!   operations; guest memory, or a turn's [`RingView`] of it, is passed to every call.
//!   [`Virtqueue`] is either of them.
//! - [`DescriptorChain`]: one validated chain (direct or through one indirect table), its readable
//!   buffers first, then its writable ones.
//! - [`Reader`] / [`Writer`]: copy between a chain's buffers and byte slices.
//! - [`need_event`] / [`packed_need_event`]: the EVENT_IDX suppression rules.
//! - [`RingPoll`]: how long a queue looks at its ring before its worker sleeps.
//! - [`RingMemory`] / [`BufferMemory`] / [`RingView`]: ring and buffer accesses straight to
//!   guest memory, or through the rings and regions found once for a turn.
//! - [`ChainQueue`]: the queue handler of a device that answers each chain on the spot
//!   ([`ChainService`]).
//! - [`inflight`]: the INFLIGHT_SHMFD area and each layout's records of chains in flight, so a
//!   restarted back-end resubmits them ([`Virtqueue::track_inflight`]).
//!
//! Every guest-controlled value is validated and each failure is a [`QueueError`]; nothing here
//! panics on ring contents or accesses memory outside what `vm-memory` maps.

mod access;
mod buffer_memory;
mod chain;
mod desc;
mod error;
pub mod inflight;
mod io;
mod notify;
mod packed;
mod poll;
mod prefetch;
mod ring_memory;
mod serve;
mod split;
mod virtqueue;

pub use buffer_memory::{BufferMemory, MAX_REGIONS};
pub use chain::{DescriptorChain, Segment};
pub use desc::{
    avail_ring_len, desc_table_len, packed_avail_flags, packed_used_flags, used_ring_len,
    Descriptor, PackedDescriptor, AVAIL_F_NO_INTERRUPT, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE,
    DESC_SIZE, EVENT_SUPPRESS_SIZE, MAX_QUEUE_SIZE, PACKED_DESC_F_AVAIL, PACKED_DESC_F_USED,
    RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, USED_F_NO_NOTIFY,
};
pub use error::{QueueError, Ring};
pub use io::{HostSlice, Reader, Writer};
pub use notify::{need_event, packed_need_event};
pub use packed::{PackedQueue, PackedQueueState};
pub use poll::RingPoll;
pub use ring_memory::{RingMemory, RingView};
pub use serve::{end_turn, serve_turn, ChainQueue, ChainService};
pub use split::{QueueState, SplitQueue};
pub use virtqueue::{Virtqueue, MAX_HELD, MIN_WAITING};
