//! The back-end's view of guest memory: a bounded table of regions and the pure translation of
//! front-end addresses to guest-physical ones.
//!
//! The table validates what the spec requires of regions (non-zero size, no address overflow, no
//! overlap of guest-physical ranges nor of user-address ranges; spec "Memory regions" and
//! ADD_MEM_REG) and answers translations. It never maps memory: mapping is the driver's job, told
//! through actions.
//!
//! The table's room for [`MAX_MEM_SLOTS`] regions (24 KiB) lives inline, in an `ArrayVec`: an
//! empty one leaves its room unwritten, where an empty `heapless::Vec` of that size is filled
//! with zeros when it is created, once per state machine and connection.

use arrayvec::ArrayVec;

use crate::limits::MAX_MEM_SLOTS;
use crate::message::Region;

/// Why a region or an address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// A region of size zero.
    #[error("region at guest address {guest_address:#x} has size 0")]
    ZeroSize {
        /// The region's guest address.
        guest_address: u64,
    },
    /// `address + size` overflows 64 bits.
    #[error("region at {address:#x} of size {size:#x} overflows the address space")]
    Overflow {
        /// The start address that overflowed.
        address: u64,
        /// The size.
        size: u64,
    },
    /// The region's mmap offset plus size overflows.
    #[error("region mmap offset {mmap_offset:#x} + size {size:#x} overflows")]
    OffsetOverflow {
        /// The offset.
        mmap_offset: u64,
        /// The size.
        size: u64,
    },
    /// Two regions overlap in guest-physical or user-address space.
    #[error("region at guest address {new:#x} overlaps the region at {existing:#x}")]
    Overlap {
        /// Guest address of the new region.
        new: u64,
        /// Guest address of the region it overlaps.
        existing: u64,
    },
    /// Every slot is in use.
    #[error("all {max} memory slots are in use")]
    Full {
        /// The slot limit.
        max: usize,
    },
    /// No region matches the one to remove.
    #[error("no region at guest address {guest_address:#x} of size {size:#x} to remove")]
    NotFound {
        /// Guest address asked for.
        guest_address: u64,
        /// Size asked for.
        size: u64,
    },
    /// An address (and the length needed from it) is not inside one mapped region.
    #[error("address {address:#x} (+{len:#x}) is not inside a mapped region")]
    Unmapped {
        /// The address.
        address: u64,
        /// The length needed.
        len: u64,
    },
}

fn end(address: u64, size: u64) -> Result<u64, RegionError> {
    address.checked_add(size).ok_or(RegionError::Overflow { address, size })
}

/// Checks one region on its own.
pub fn check_region(region: &Region) -> Result<(), RegionError> {
    if region.size == 0 {
        return Err(RegionError::ZeroSize { guest_address: region.guest_address });
    }
    end(region.guest_address, region.size)?;
    end(region.user_address, region.size)?;
    region.mmap_offset.checked_add(region.size).ok_or(RegionError::OffsetOverflow {
        mmap_offset: region.mmap_offset,
        size: region.size,
    })?;
    Ok(())
}

fn overlaps(a_start: u64, a_size: u64, b_start: u64, b_size: u64) -> bool {
    // Sizes were checked for overflow, so the ends are exact.
    a_start < b_start + b_size && b_start < a_start + a_size
}

/// Checks that `new` overlaps none of `existing`, in either address space.
pub fn check_disjoint<'r>(
    new: &Region,
    existing: impl IntoIterator<Item = &'r Region>,
) -> Result<(), RegionError> {
    for other in existing {
        if overlaps(new.guest_address, new.size, other.guest_address, other.size)
            || overlaps(new.user_address, new.size, other.user_address, other.size)
        {
            return Err(RegionError::Overlap {
                new: new.guest_address,
                existing: other.guest_address,
            });
        }
    }
    Ok(())
}

/// The regions currently mapped, in the order they were added.
#[derive(Clone, Debug, Default)]
pub struct RegionTable {
    regions: ArrayVec<Region, MAX_MEM_SLOTS>,
}

impl RegionTable {
    /// An empty table. Nothing of its room is written: a state machine holding one is cheap
    /// to create ([module docs](self)).
    pub fn new() -> Self {
        Self { regions: ArrayVec::new() }
    }

    /// The regions.
    pub fn iter(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter()
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region is mapped.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Removes every region.
    pub fn clear(&mut self) {
        self.regions.clear();
    }

    /// Checks that `region` could be added with at most `max_slots` regions in the table.
    pub fn check_add(&self, region: &Region, max_slots: usize) -> Result<(), RegionError> {
        check_region(region)?;
        check_disjoint(region, self.regions.iter())?;
        let max = max_slots.min(MAX_MEM_SLOTS);
        if self.regions.len() >= max {
            return Err(RegionError::Full { max });
        }
        Ok(())
    }

    /// Adds a region after [`RegionTable::check_add`]; re-checks and refuses on failure.
    pub fn add(&mut self, region: Region, max_slots: usize) -> Result<(), RegionError> {
        self.check_add(&region, max_slots)?;
        self.regions.try_push(region).map_err(|_| RegionError::Full { max: MAX_MEM_SLOTS })
    }

    /// Finds the region REM_MEM_REG names: same guest address, user address and size (the
    /// spec ignores `mmap_offset` here).
    pub fn find(&self, region: &Region) -> Option<usize> {
        self.regions.iter().position(|r| {
            r.guest_address == region.guest_address
                && r.user_address == region.user_address
                && r.size == region.size
        })
    }

    /// Removes and returns the region REM_MEM_REG names.
    pub fn remove(&mut self, region: &Region) -> Result<Region, RegionError> {
        let index = self.find(region).ok_or(RegionError::NotFound {
            guest_address: region.guest_address,
            size: region.size,
        })?;
        Ok(self.regions.remove(index))
    }

    /// Translates a front-end user address to a guest-physical address, requiring `len` bytes
    /// from it to lie inside the same region.
    pub fn user_to_guest(&self, user_address: u64, len: u64) -> Result<u64, RegionError> {
        let unmapped = RegionError::Unmapped { address: user_address, len };
        let last = user_address.checked_add(len).ok_or(unmapped)?;
        self.regions
            .iter()
            .find(|r| r.user_address <= user_address && last <= r.user_address + r.size)
            .map(|r| r.guest_address + (user_address - r.user_address))
            .ok_or(unmapped)
    }

    /// Checks that `len` bytes at a guest-physical address lie inside one region.
    pub fn check_guest(&self, guest_address: u64, len: u64) -> Result<u64, RegionError> {
        let unmapped = RegionError::Unmapped { address: guest_address, len };
        let last = guest_address.checked_add(len).ok_or(unmapped)?;
        self.regions
            .iter()
            .any(|r| r.guest_address <= guest_address && last <= r.guest_address + r.size)
            .then_some(guest_address)
            .ok_or(unmapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(gpa: u64, size: u64, uaddr: u64) -> Region {
        Region { guest_address: gpa, size, user_address: uaddr, mmap_offset: 0, xen: None }
    }

    #[test]
    fn translates_inside_a_region_only() {
        let mut table = RegionTable::new();
        table.add(region(0, 0x1000, 0x7000_0000), 8).expect("valid");
        table.add(region(0x10_0000, 0x2000, 0x8000_0000), 8).expect("valid");
        assert_eq!(table.user_to_guest(0x7000_0010, 0x10), Ok(0x10));
        assert_eq!(table.user_to_guest(0x8000_1000, 0x1000), Ok(0x10_1000));
        assert_eq!(
            table.user_to_guest(0x8000_1000, 0x1001),
            Err(RegionError::Unmapped { address: 0x8000_1000, len: 0x1001 })
        );
        assert!(table.user_to_guest(u64::MAX - 1, 4).is_err());
        assert!(table.user_to_guest(0x6fff_ffff, 1).is_err());
        assert_eq!(table.check_guest(0x10_0000, 0x2000), Ok(0x10_0000));
        assert!(table.check_guest(0x10_0000, 0x2001).is_err());
    }

    #[test]
    fn refuses_bad_regions() {
        let mut table = RegionTable::new();
        assert_eq!(table.add(region(0, 0, 0), 8), Err(RegionError::ZeroSize { guest_address: 0 }));
        assert!(matches!(
            table.add(region(u64::MAX - 1, 4, 0), 8),
            Err(RegionError::Overflow { .. })
        ));
        table.add(region(0x1000, 0x1000, 0x1000), 8).expect("valid");
        assert_eq!(
            table.add(region(0x1800, 0x1000, 0x9000), 8),
            Err(RegionError::Overlap { new: 0x1800, existing: 0x1000 })
        );
        // Disjoint guest ranges but overlapping user ranges.
        assert!(matches!(
            table.add(region(0x8000, 0x1000, 0x1fff), 8),
            Err(RegionError::Overlap { .. })
        ));
        assert_eq!(table.add(region(0x4000, 0x1000, 0x4000), 1), Err(RegionError::Full { max: 1 }));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn removes_by_guest_user_and_size() {
        let mut table = RegionTable::new();
        let r = region(0x1000, 0x1000, 0x1000);
        table.add(r, 8).expect("valid");
        let mut other_offset = r;
        other_offset.mmap_offset = 0x5000;
        assert_eq!(table.remove(&other_offset), Ok(r));
        assert_eq!(
            table.remove(&r),
            Err(RegionError::NotFound { guest_address: 0x1000, size: 0x1000 })
        );
    }
}
