//! The guest's DAX window: the VMM's side (the shared-memory region the device announced,
//! mapped by [`ShmemHandler`] as the device asks) and the guest's requests that fill it
//! (SETUPMAPPING, REMOVEMAPPING), as Linux's `fs/fuse/dax.c` sends them: 2 MiB ranges, `fh` of
//! all ones (the node itself), READ always and WRITE for a writable mapping.

use std::sync::Arc;

use vhu_transport_std::client::{Client, ShmemHandler, ShmemRegion};
use vhu_transport_std::vhu_core::ProtocolFeatures;
use zerocopy::IntoBytes;

use super::{GuestError, GuestFs};
use crate::device::dax::DAX_SHMID;
use crate::fuse::abi::{
    RemoveMappingIn, RemoveMappingOne, SetupMappingIn, SETUPMAPPING_FLAG_READ,
    SETUPMAPPING_FLAG_WRITE, SETUPMAPPING_NO_HANDLE,
};
use crate::fuse::Opcode;

/// The window the device announced (GET_SHMEM_CONFIG, region 0), reserved here and served on
/// the back-end channel; `None` when it announced none.
pub(super) fn window(
    client: &mut Client,
    acked: ProtocolFeatures,
) -> Result<Option<Arc<ShmemRegion>>, GuestError> {
    let needed = ProtocolFeatures::SHMEM | ProtocolFeatures::BACKEND_REQ;
    if !acked.contains(needed) || !client.has_backend_channel() {
        return Ok(None);
    }
    let sizes = client.get_shmem_config()?;
    if sizes.get(usize::from(DAX_SHMID)).is_none_or(|size| *size == 0) {
        return Ok(None);
    }
    let handler = ShmemHandler::new(&sizes).map_err(|e| GuestError::Memory(e.to_string()))?;
    let region = handler.region(DAX_SHMID);
    client.set_backend_handler(handler);
    Ok(region)
}

/// SETUPMAPPING's arguments: `len` bytes of the file at `foffset` into the window at `moffset`,
/// through the open handle `fh` (or the node itself when `None`, as Linux asks), READ always and
/// WRITE for a writable mapping.
pub fn setup_mapping_args(
    fh: Option<u64>,
    (foffset, moffset, len): (u64, u64, u64),
    writable: bool,
) -> SetupMappingIn {
    let write = if writable { SETUPMAPPING_FLAG_WRITE } else { 0 };
    SetupMappingIn {
        fh: fh.unwrap_or(SETUPMAPPING_NO_HANDLE),
        foffset,
        len,
        flags: SETUPMAPPING_FLAG_READ | write,
        moffset,
    }
}

/// REMOVEMAPPING's body for these (offset, length) ranges of the window.
pub fn remove_mapping_body(ranges: &[(u64, u64)]) -> Result<Vec<u8>, GuestError> {
    let count = u32::try_from(ranges.len()).map_err(|_| GuestError::TooLarge(ranges.len()))?;
    let mut body = RemoveMappingIn { count }.as_bytes().to_vec();
    for (moffset, len) in ranges {
        body.extend_from_slice(RemoveMappingOne { moffset: *moffset, len: *len }.as_bytes());
    }
    Ok(body)
}

impl GuestFs {
    /// The DAX window, when the device has one (the guest then offered MAP_ALIGNMENT).
    pub fn dax_window(&self) -> Option<&Arc<ShmemRegion>> {
        self.dax.as_ref()
    }

    /// SETUPMAPPING: `len` bytes of `node` at `foffset` into the window at `moffset`, through
    /// the open handle `fh` (or the node itself when `None`, as Linux asks).
    pub fn setup_mapping(
        &mut self,
        node: u64,
        fh: Option<u64>,
        (foffset, moffset, len): (u64, u64, u64),
        writable: bool,
    ) -> Result<(), GuestError> {
        let args = setup_mapping_args(fh, (foffset, moffset, len), writable);
        self.call(Opcode::SetupMapping, node, args.as_bytes()).map(drop)
    }

    /// REMOVEMAPPING of these (offset, length) ranges of the window.
    pub fn remove_mapping(&mut self, node: u64, ranges: &[(u64, u64)]) -> Result<(), GuestError> {
        let body = remove_mapping_body(ranges)?;
        self.call(Opcode::RemoveMapping, node, &body).map(drop)
    }
}
