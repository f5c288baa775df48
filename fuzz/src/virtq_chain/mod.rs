//! `virtq_chain`: arbitrary guest memory and ring parameters through the split and packed
//! virtqueues of `vhu-device-fs`, driven by a model driver whose indices the input also mutates.
//!
//! The input chooses the layout (split or packed), the queue size, the ring addresses (inside,
//! across the edge of, or outside guest memory, aligned or not), EVENT_IDX, INDIRECT and the
//! starting indices, then fills guest memory and runs a bounded list of operations: raw
//! descriptor and ring writes, whole chains published the way a driver would, index jumps, pops
//! with the chain read and written through [`Reader`] / [`Writer`], used entries, the
//! notification calls, and readers / writers over arbitrary segments.
//!
//! Invariants checked after every operation:
//! - nothing panics, and construction succeeds exactly when the size, alignment and placement of
//!   every ring are valid for the memory given;
//! - every error is a [`QueueError`] whose values are true (a buffer said to be outside memory
//!   is outside it, an index said to be out of range is, ...), and a [`QueueError::Memory`] never
//!   occurs on memory that is fixed and rings that were validated;
//! - a pop consumes an entry exactly when the driver made one available (split: `avail->idx`
//!   ahead of the device by 1 to the queue size; packed: the next descriptor's AVAIL/USED bits
//!   match the wrap counter and the in-flight slots stay within the queue size), consumes one
//!   entry (split) or the chain's slots (packed), and a chain error names the consumed chain;
//! - every segment of every chain lies inside guest memory, the totals match the segments, and a
//!   chain never has more segments than the queue size;
//! - readers and writers over a chain never fail and move exactly the chain's bytes; over
//!   arbitrary segments, a successful read or write only touched guest memory;
//! - used entries and notification state are written where and as the layout says.
//!
//! [`Reader`]: vhu_transport_std::virtq::Reader
//! [`Writer`]: vhu_transport_std::virtq::Writer
//! [`QueueError`]: vhu_transport_std::virtq::QueueError
//! [`QueueError::Memory`]: vhu_transport_std::virtq::QueueError::Memory

mod checks;
mod driver;
mod harness;
mod input;
mod io;
mod memory;
mod pop;
mod seeds;
#[cfg(test)]
mod tests;
mod used;

pub use seeds::seeds;

use crate::cursor::Cursor;
use harness::Harness;
use input::{Config, Op};

/// Directory of the seed corpus, relative to this crate's manifest.
pub const CORPUS_DIR: &str = "corpus/virtq_chain";

/// Longer inputs are ignored.
const MAX_INPUT: usize = 16 << 10;
const MAX_OPS: usize = 128;
/// Pops per input (a pop walks at most the queue size of descriptors).
const MAX_POPS: usize = 96;
/// Bytes moved by readers and writers per input.
const IO_BUDGET: usize = 1 << 20;
const CHUNK: usize = 4096;
/// Chains the device holds without returning them.
const MAX_HELD: usize = 64;
const MAX_BUFS: usize = 8;
const MAX_SEGMENTS: usize = 8;

/// Runs one input.
pub fn run(data: &[u8]) {
    session(data);
}

/// What one input did, for the tests.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    /// Valid chains popped.
    chains: usize,
    /// Chains popped with an error.
    bad_chains: usize,
}

fn session(data: &[u8]) -> Option<Stats> {
    if data.len() > MAX_INPUT {
        return None;
    }
    let mut c = Cursor::new(data);
    let config = Config::decode(&mut c)?;
    let mut h = Harness::new(&config)?;
    for _ in 0..MAX_OPS {
        let Some(op) = Op::decode(&mut c) else {
            break;
        };
        h.apply(op);
    }
    // The device gives back everything it still holds; the ring stays consistent.
    while !h.held.is_empty() {
        h.return_held();
    }
    Some(h.stats)
}
