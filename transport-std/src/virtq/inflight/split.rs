//! The inflight bookkeeping of a split ring (spec "Inflight I/O tracking", `QueueRegionSplit`).
//!
//! Region layout: `u64 features, u16 version, u16 desc_num, u16 last_batch_head, u16 used_idx`,
//! then `desc_num` 16-byte `DescStateSplit` entries `{u8 inflight, u8 padding[5], u16 next,
//! u64 counter}` indexed by head descriptor. A chain is marked in flight with a rising counter when
//! its head is fetched; when it is returned it becomes the last batch (a batch of one: every chain
//! is returned on its own) before the used ring moves, and is cleared after. On reconnect a used
//! ring that moved past the region's `used_idx` means the last batch was returned but not yet
//! cleared; it is cleared, and what stays in flight is resubmitted in fetch order.
//!
//! This module must not read the ring itself: its caller passes the ring's indices.

use super::{
    in_fetch_order, InflightError, InflightRegion, DESC_NUM, FEATURES, REGION_VERSION, VERSION,
};

const LAST_BATCH_HEAD: usize = 12;
const USED_IDX: usize = 14;
const DESCS: usize = 16;
const DESC_SIZE: usize = 16;
const DESC_INFLIGHT: usize = 0;
const DESC_NEXT: usize = 6;
const DESC_COUNTER: usize = 8;

/// A split ring's inflight records; see the module docs.
#[derive(Clone, Debug)]
pub struct SplitInflight {
    region: InflightRegion,
    /// The counter the next fetched chain gets.
    counter: u64,
}

impl SplitInflight {
    /// Attaches `region` to a ring of `size` entries whose used ring holds `used_idx`, and returns
    /// the heads to resubmit, oldest first — `None` when the region starts over: one never
    /// initialised, or one whose records cannot belong to this ring (a used index that moved by
    /// more than a ring's worth, as after a guest reset).
    pub fn attach(
        region: InflightRegion,
        size: u16,
        used_idx: u16,
    ) -> Result<(Self, Option<Vec<u16>>), InflightError> {
        let recorded = region.holds_records(size)?;
        let entries = region.entries();
        let mut this = Self { region, counter: 0 };
        if !recorded {
            this.initialise(used_idx)?;
            return Ok((this, None));
        }
        let recorded = this.region.load::<u16>(USED_IDX)?;
        let batch = used_idx.wrapping_sub(recorded);
        if batch > size {
            log::warn!(
                "inflight region: used index {recorded} recorded, the ring holds {used_idx}; \
                 its records are not this ring's and are dropped"
            );
            this.initialise(used_idx)?;
            return Ok((this, None));
        }
        // The last batch reached the used ring but was not cleared: clear it now.
        let mut head = this.region.load::<u16>(LAST_BATCH_HEAD)?;
        for _ in 0..batch {
            if head >= entries {
                break;
            }
            this.region.store::<u8>(desc(head) + DESC_INFLIGHT, 0)?;
            head = this.region.load::<u16>(desc(head) + DESC_NEXT)?;
        }
        this.region.store::<u16>(USED_IDX, used_idx)?;
        let mut pending = Vec::new();
        for head in 0..entries {
            if this.region.load::<u8>(desc(head) + DESC_INFLIGHT)? == 0 {
                continue;
            }
            if head >= size {
                // Not a head of this ring: a stale record.
                this.region.store::<u8>(desc(head) + DESC_INFLIGHT, 0)?;
                continue;
            }
            let counter = this.region.load::<u64>(desc(head) + DESC_COUNTER)?;
            this.counter = this.counter.max(counter.wrapping_add(1));
            pending.push((head, counter));
        }
        Ok((this, Some(in_fetch_order(pending))))
    }

    fn initialise(&mut self, used_idx: u16) -> Result<(), InflightError> {
        self.region.clear()?;
        self.region.store::<u64>(FEATURES, 0)?;
        self.region.store::<u16>(DESC_NUM, self.region.entries())?;
        self.region.store::<u16>(LAST_BATCH_HEAD, 0)?;
        self.region.store::<u16>(USED_IDX, used_idx)?;
        self.region.store::<u16>(VERSION, REGION_VERSION)?;
        self.counter = 0;
        Ok(())
    }

    /// Records that the chain `head` was fetched from the available ring.
    pub fn fetched(&mut self, head: u16) -> Result<(), InflightError> {
        self.region.store::<u64>(desc(head) + DESC_COUNTER, self.counter)?;
        self.counter = self.counter.wrapping_add(1);
        self.region.store::<u8>(desc(head) + DESC_INFLIGHT, 1)
    }

    /// Records that `head` is about to be put on the used ring: it becomes the last batch.
    pub fn returning(&mut self, head: u16) -> Result<(), InflightError> {
        let last = self.region.load::<u16>(LAST_BATCH_HEAD)?;
        self.region.store::<u16>(desc(head) + DESC_NEXT, last)?;
        self.region.store::<u16>(LAST_BATCH_HEAD, head)
    }

    /// Records that `head` is on the used ring, whose index is now `used_idx`.
    pub fn returned(&mut self, head: u16, used_idx: u16) -> Result<(), InflightError> {
        self.region.store::<u8>(desc(head) + DESC_INFLIGHT, 0)?;
        self.region.store::<u16>(USED_IDX, used_idx)
    }
}

/// Offset of head `head`'s descriptor state.
fn desc(head: u16) -> usize {
    DESCS + usize::from(head) * DESC_SIZE
}
