//! The inflight bookkeeping of a packed ring (spec "Inflight I/O tracking", `QueueRegionPacked`).
//!
//! Region layout: `u64 features, u16 version, u16 desc_num, u16 free_head, u16 old_free_head,
//! u16 used_idx, u16 old_used_idx, u8 used_wrap_counter, u8 old_used_wrap_counter, u8 padding[7]`,
//! then (at offset 32) `desc_num` 32-byte `DescStatePacked` entries `{u8 inflight, u8 padding,
//! u16 next, u16 last, u16 num, u64 counter, u16 id, u16 flags, u32 len, u64 addr}`. The entries
//! form a free list; a fetched chain takes one entry per descriptor, copied there (the ring slots
//! it came from are overwritten by used descriptors in any order, so only the copies survive), the
//! first entry marked in flight with a rising counter. Returning a chain gives its entries back to
//! the free list; the `old_*` fields are the last consistent state, so a back-end that died in
//! the middle of a return is rolled back (or forward, when the used descriptor already reached the
//! ring) on reconnect, and what stays in flight is resubmitted in fetch order.
//!
//! This module must not read the ring itself, except the one used descriptor's flags its caller
//! passes in on reconnect.

use super::{
    in_fetch_order, InflightError, InflightRegion, DESC_NUM, FEATURES, REGION_VERSION, VERSION,
};
use crate::virtq::desc::{packed_avail_flags, PackedDescriptor, DESC_F_NEXT};

const FREE_HEAD: usize = 12;
const OLD_FREE_HEAD: usize = 14;
const USED_IDX: usize = 16;
const OLD_USED_IDX: usize = 18;
const USED_WRAP: usize = 20;
const OLD_USED_WRAP: usize = 21;
const DESCS: usize = 32;
const DESC_SIZE: usize = 32;
const D_INFLIGHT: usize = 0;
const D_NEXT: usize = 2;
const D_LAST: usize = 4;
const D_NUM: usize = 6;
const D_COUNTER: usize = 8;
const D_ID: usize = 16;
const D_FLAGS: usize = 18;
const D_LEN: usize = 20;
const D_ADDR: usize = 24;

/// Where a packed ring's used side stands: the next used slot and its wrap counter.
pub type UsedPosition = (u16, bool);

/// A chain to resubmit: its descriptors as they were fetched, and the entry that records it.
#[derive(Clone, Debug)]
pub struct PackedResubmit {
    /// The chain's descriptors, in ring order.
    pub descriptors: Vec<PackedDescriptor>,
    /// The chain's first entry in the region.
    pub entry: u16,
}

/// A packed ring's inflight records; see the module docs.
#[derive(Clone, Debug)]
pub struct PackedInflight {
    region: InflightRegion,
    counter: u64,
}

impl PackedInflight {
    /// Attaches `region` to a ring of `size` descriptors. `used` is where the ring says its used
    /// side stands and `used_flags_at(slot)` reads the flags of a ring descriptor. Returns the
    /// tracker and, unless the region starts over (never initialised, or records that cannot be
    /// this ring's), the used position to continue from and the chains to resubmit, oldest
    /// first.
    #[allow(clippy::type_complexity)]
    pub fn attach(
        region: InflightRegion,
        size: u16,
        used: UsedPosition,
        used_flags_at: impl Fn(u16) -> Option<u16>,
    ) -> Result<(Self, Option<(UsedPosition, Vec<PackedResubmit>)>), InflightError> {
        let recorded = region.holds_records(size)?;
        let entries = region.entries();
        let mut this = Self { region, counter: 0 };
        if !recorded {
            this.initialise(used)?;
            return Ok((this, None));
        }
        let r = &this.region;
        let current = (r.load::<u16>(USED_IDX)?, r.load::<u8>(USED_WRAP)? != 0);
        let old = (r.load::<u16>(OLD_USED_IDX)?, r.load::<u8>(OLD_USED_WRAP)? != 0);
        if current.0 >= size || old.0 >= size {
            log::warn!("inflight region: a used position beyond the ring; its records are dropped");
            this.initialise(used)?;
            return Ok((this, None));
        }
        if current != old {
            // A return was under way. If its used descriptor reached the ring, it completed:
            // commit it; otherwise roll it back below.
            let reached =
                used_flags_at(old.0).is_some_and(|f| f & FLAG_BITS != packed_avail_flags(old.1));
            if reached {
                this.commit()?;
            }
        }
        let r = &this.region;
        r.store::<u16>(FREE_HEAD, r.load::<u16>(OLD_FREE_HEAD)?)?;
        r.store::<u16>(USED_IDX, r.load::<u16>(OLD_USED_IDX)?)?;
        r.store::<u8>(USED_WRAP, r.load::<u8>(OLD_USED_WRAP)?)?;
        let position = (r.load::<u16>(USED_IDX)?, r.load::<u8>(USED_WRAP)? != 0);
        // Nothing on the free list is in flight.
        let mut entry = r.load::<u16>(FREE_HEAD)?;
        for _ in 0..entries {
            if entry >= entries {
                break;
            }
            r.store::<u8>(desc(entry) + D_INFLIGHT, 0)?;
            entry = r.load::<u16>(desc(entry) + D_NEXT)?;
        }
        let mut pending = Vec::new();
        for entry in 0..entries {
            if r.load::<u8>(desc(entry) + D_INFLIGHT)? == 0 {
                continue;
            }
            let counter = r.load::<u64>(desc(entry) + D_COUNTER)?;
            this.counter = this.counter.max(counter.wrapping_add(1));
            pending.push((entry, counter));
        }
        let mut chains = Vec::new();
        for entry in in_fetch_order(pending) {
            match this.chain(entry, size)? {
                Some(descriptors) => chains.push(PackedResubmit { descriptors, entry }),
                None => {
                    log::warn!("inflight region: entry {entry} does not hold a whole chain");
                    this.region.store::<u8>(desc(entry) + D_INFLIGHT, 0)?;
                }
            }
        }
        Ok((this, Some((position, chains))))
    }

    fn initialise(&mut self, used: UsedPosition) -> Result<(), InflightError> {
        let r = &self.region;
        let entries = r.entries();
        r.clear()?;
        r.store::<u64>(FEATURES, 0)?;
        r.store::<u16>(DESC_NUM, entries)?;
        for entry in 0..entries {
            r.store::<u16>(desc(entry) + D_NEXT, entry.wrapping_add(1))?;
        }
        r.store::<u16>(FREE_HEAD, 0)?;
        r.store::<u16>(OLD_FREE_HEAD, 0)?;
        r.store::<u16>(USED_IDX, used.0)?;
        r.store::<u16>(OLD_USED_IDX, used.0)?;
        r.store::<u8>(USED_WRAP, u8::from(used.1))?;
        r.store::<u8>(OLD_USED_WRAP, u8::from(used.1))?;
        r.store::<u16>(VERSION, REGION_VERSION)?;
        self.counter = 0;
        Ok(())
    }

    /// The descriptors entry `entry` records, or `None` when the records do not add up.
    fn chain(&self, entry: u16, size: u16) -> Result<Option<Vec<PackedDescriptor>>, InflightError> {
        let r = &self.region;
        let num = r.load::<u16>(desc(entry) + D_NUM)?;
        let last = r.load::<u16>(desc(entry) + D_LAST)?;
        if num == 0 || num > size {
            return Ok(None);
        }
        let mut descriptors = Vec::with_capacity(usize::from(num));
        let mut at = entry;
        for i in 0..num {
            if at >= r.entries() {
                return Ok(None);
            }
            let d = desc(at);
            descriptors.push(PackedDescriptor::new(
                r.load::<u64>(d + D_ADDR)?,
                r.load::<u32>(d + D_LEN)?,
                r.load::<u16>(d + D_ID)?,
                r.load::<u16>(d + D_FLAGS)?,
            ));
            if i + 1 < num {
                at = r.load::<u16>(d + D_NEXT)?;
            }
        }
        Ok((at == last).then_some(descriptors))
    }

    /// Records a chain fetched from the ring (its descriptors in ring order); returns the entry
    /// that records it, for [`PackedInflight::returning`].
    pub fn fetched(&mut self, descriptors: &[PackedDescriptor]) -> Result<u16, InflightError> {
        let r = &self.region;
        let entries = r.entries();
        let head = r.load::<u16>(OLD_FREE_HEAD)?;
        if head >= entries {
            return Err(InflightError::Access { offset: OLD_FREE_HEAD });
        }
        r.store::<u16>(desc(head) + D_NUM, 0)?;
        r.store::<u64>(desc(head) + D_COUNTER, self.counter)?;
        self.counter = self.counter.wrapping_add(1);
        r.store::<u8>(desc(head) + D_INFLIGHT, 1)?;
        let mut num = 0u16;
        for (i, d) in descriptors.iter().enumerate() {
            let free = r.load::<u16>(FREE_HEAD)?;
            if free >= entries {
                return Err(InflightError::Access { offset: FREE_HEAD });
            }
            if i + 1 == descriptors.len() || !d.has(DESC_F_NEXT) {
                r.store::<u16>(desc(head) + D_LAST, free)?;
            }
            num = num.wrapping_add(1);
            r.store::<u16>(desc(head) + D_NUM, num)?;
            let e = desc(free);
            r.store::<u64>(e + D_ADDR, d.addr.get())?;
            r.store::<u32>(e + D_LEN, d.len.get())?;
            r.store::<u16>(e + D_FLAGS, d.flags.get())?;
            r.store::<u16>(e + D_ID, d.id.get())?;
            r.store::<u16>(FREE_HEAD, r.load::<u16>(e + D_NEXT)?)?;
        }
        r.store::<u16>(OLD_FREE_HEAD, r.load::<u16>(FREE_HEAD)?)?;
        Ok(head)
    }

    /// Records that the chain recorded at `entry` is being returned, the used side moving to
    /// `used` once its descriptor is written: call before writing it.
    pub fn returning(&mut self, entry: u16, used: UsedPosition) -> Result<(), InflightError> {
        let r = &self.region;
        if entry >= r.entries() {
            return Err(InflightError::Access { offset: desc(entry) });
        }
        let last = r.load::<u16>(desc(entry) + D_LAST)?;
        if last >= r.entries() {
            return Err(InflightError::Access { offset: desc(entry) + D_LAST });
        }
        r.store::<u16>(desc(last) + D_NEXT, r.load::<u16>(FREE_HEAD)?)?;
        r.store::<u16>(FREE_HEAD, entry)?;
        r.store::<u16>(USED_IDX, used.0)?;
        r.store::<u8>(USED_WRAP, u8::from(used.1))
    }

    /// Records that the used descriptor of the chain at `entry` is on the ring.
    pub fn returned(&mut self, entry: u16) -> Result<(), InflightError> {
        self.region.store::<u8>(desc(entry) + D_INFLIGHT, 0)?;
        self.commit()
    }

    /// Makes the current state the last consistent one.
    fn commit(&self) -> Result<(), InflightError> {
        let r = &self.region;
        r.store::<u16>(OLD_FREE_HEAD, r.load::<u16>(FREE_HEAD)?)?;
        r.store::<u16>(OLD_USED_IDX, r.load::<u16>(USED_IDX)?)?;
        r.store::<u8>(OLD_USED_WRAP, r.load::<u8>(USED_WRAP)?)
    }
}

/// The AVAIL and USED bits of a packed descriptor's flags.
const FLAG_BITS: u16 =
    crate::virtq::desc::PACKED_DESC_F_AVAIL | crate::virtq::desc::PACKED_DESC_F_USED;

/// Offset of entry `entry`'s state.
fn desc(entry: u16) -> usize {
    DESCS + usize::from(entry) * DESC_SIZE
}
