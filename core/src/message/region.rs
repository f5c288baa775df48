//! Guest memory regions as messages carry them: one [`Region`] (ADD_MEM_REG, REM_MEM_REG) and the
//! [`MemoryTable`] of SET_MEM_TABLE, viewed in place in the frame.
//!
//! This module only converts between wire layouts and typed values; whether regions overlap or
//! whether XEN_MMAP was negotiated is for the state machine to check.

use super::codec::Payload;
use crate::wire::{self, U32, U64};
use crate::WireError;

/// One guest memory region as the front-end describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Region {
    /// Guest-physical address.
    pub guest_address: u64,
    /// Size in bytes.
    pub size: u64,
    /// Front-end user address (a GPA when GPA_ADDRESSES is negotiated).
    pub user_address: u64,
    /// Offset of the region in its fd.
    pub mmap_offset: u64,
    /// The Xen mapping fields, present when the message used the XEN_MMAP layout.
    pub xen: Option<XenMapping>,
}

/// The two fields XEN_MMAP adds to a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct XenMapping {
    /// Xen mapping flags.
    pub flags: u32,
    /// Xen domain id.
    pub domid: u32,
}

impl Region {
    /// Builds a region from the standard wire layout.
    pub fn from_wire(raw: &wire::MemoryRegion) -> Self {
        Self {
            guest_address: raw.guest_address.get(),
            size: raw.size.get(),
            user_address: raw.user_address.get(),
            mmap_offset: raw.mmap_offset.get(),
            xen: None,
        }
    }

    /// Builds a region from the XEN_MMAP wire layout.
    pub fn from_xen_wire(raw: &wire::XenMemoryRegion) -> Self {
        Self {
            xen: Some(XenMapping { flags: raw.xen_mmap_flags.get(), domid: raw.domid.get() }),
            ..Self::from_wire(&raw.region)
        }
    }

    /// The standard wire layout (without the Xen fields).
    pub fn to_wire(self) -> wire::MemoryRegion {
        wire::MemoryRegion {
            guest_address: U64::new(self.guest_address),
            size: U64::new(self.size),
            user_address: U64::new(self.user_address),
            mmap_offset: U64::new(self.mmap_offset),
        }
    }

    pub(crate) fn encode(&self, encoder: &mut super::codec::Encoder<'_>) {
        encoder.put_value(&self.to_wire());
        if let Some(xen) = self.xen {
            encoder.put(&xen.flags.to_ne_bytes());
            encoder.put(&xen.domid.to_ne_bytes());
        }
    }

    /// Parses a region payload whose layout (standard or XEN_MMAP) follows from its size.
    pub(crate) fn parse_one(payload: &Payload<'_>, bytes: &[u8]) -> Result<Self, WireError> {
        use zerocopy::FromBytes;
        if let Ok(raw) = wire::MemoryRegion::ref_from_bytes(bytes) {
            Ok(Self::from_wire(raw))
        } else if let Ok(raw) = wire::XenMemoryRegion::ref_from_bytes(bytes) {
            Ok(Self::from_xen_wire(raw))
        } else {
            Err(payload.size_error(
                core::mem::size_of::<wire::SingleRegionHeader>()
                    + core::mem::size_of::<wire::MemoryRegion>(),
            ))
        }
    }
}

/// The regions of a SET_MEM_TABLE, viewed in place in the frame.
///
/// The layout follows from the payload size: 8 + 32·n bytes is the standard layout, 8 + 40·n the
/// XEN_MMAP one. Whether XEN_MMAP was negotiated is for the state machine to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryTable<'a> {
    /// Standard 32-byte regions.
    Standard(&'a [wire::MemoryRegion]),
    /// XEN_MMAP 40-byte regions.
    Xen(&'a [wire::XenMemoryRegion]),
}

impl<'a> MemoryTable<'a> {
    /// Number of regions.
    pub fn len(&self) -> usize {
        match self {
            Self::Standard(regions) => regions.len(),
            Self::Xen(regions) => regions.len(),
        }
    }

    /// Whether the table has no region.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Region `i`, if present.
    pub fn get(&self, i: usize) -> Option<Region> {
        match self {
            Self::Standard(regions) => regions.get(i).map(Region::from_wire),
            Self::Xen(regions) => regions.get(i).map(Region::from_xen_wire),
        }
    }

    /// The regions in order.
    pub fn iter(&self) -> impl Iterator<Item = Region> + 'a {
        let table = *self;
        (0..table.len()).filter_map(move |i| table.get(i))
    }

    /// Whether the table uses the XEN_MMAP layout.
    pub fn is_xen(&self) -> bool {
        matches!(self, Self::Xen(_))
    }

    pub(crate) fn encode(&self, encoder: &mut super::codec::Encoder<'_>) {
        use zerocopy::IntoBytes;
        let nregions = u32::try_from(self.len()).unwrap_or(u32::MAX);
        encoder.put_value(&wire::MemoryTableHeader {
            nregions: U32::new(nregions),
            padding: U32::ZERO,
        });
        match self {
            Self::Standard(regions) => encoder.put(regions.as_bytes()),
            Self::Xen(regions) => encoder.put(regions.as_bytes()),
        }
    }

    /// Parses a memory table payload and checks the region count against `max`.
    pub(crate) fn parse(payload: &Payload<'a>, max: usize) -> Result<Self, WireError> {
        use zerocopy::FromBytes;
        let (header, rest) = payload.prefix::<wire::MemoryTableHeader>()?;
        let n = header.nregions.get();
        if n as usize > max {
            return Err(WireError::TooManyRegions { got: n, max });
        }
        let n = n as usize;
        let head = core::mem::size_of::<wire::MemoryTableHeader>();
        let standard = n * core::mem::size_of::<wire::MemoryRegion>();
        let xen = n * core::mem::size_of::<wire::XenMemoryRegion>();
        if rest.len() == standard {
            let regions = <[wire::MemoryRegion]>::ref_from_bytes(rest)
                .map_err(|_| payload.size_error(head + standard))?;
            Ok(Self::Standard(regions))
        } else if rest.len() == xen {
            let regions = <[wire::XenMemoryRegion]>::ref_from_bytes(rest)
                .map_err(|_| payload.size_error(head + xen))?;
            Ok(Self::Xen(regions))
        } else {
            Err(payload.size_error(head + standard))
        }
    }
}
