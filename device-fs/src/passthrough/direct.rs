//! Guest O_DIRECT on the host (`--allow-direct-io`): the host file is opened with O_DIRECT, and
//! its I/O goes through a buffer whose address satisfies the host's alignment. Offsets and
//! lengths are the guest's own: an unaligned one fails with the host's EINVAL, as it would on a
//! local O_DIRECT file, never silently.
//!
//! By default guest O_DIRECT is not passed to the host at all (virtiofsd's default), and this
//! module is not used. It owns no descriptors; the handle table says which handles are direct.

use rustix::io::Errno;

/// Buffer address alignment for O_DIRECT: the largest logical block size in common use (4 KiB
/// sectors), which also satisfies 512-byte devices.
pub(super) const ALIGN: usize = 4096;

/// A zeroed buffer of `len` bytes starting on an [`ALIGN`] boundary.
pub(super) struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Allocates `len` bytes (plus the slack needed to align them).
    pub(super) fn new(len: usize) -> Result<Self, Errno> {
        let storage = vec![0u8; len.checked_add(ALIGN).ok_or(Errno::NOMEM)?];
        let start = storage.as_ptr().align_offset(ALIGN);
        if start >= ALIGN {
            return Err(Errno::NOMEM);
        }
        Ok(Self { storage, start, len })
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_aligned_and_hold_their_data() {
        for len in [0, 1, 511, 4096, 65536 + 3] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = AlignedBuf::new(len).expect("buffer");
            buf.as_mut_slice().copy_from_slice(&data);
            assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0, "len {len}");
            assert_eq!(buf.as_slice(), &data[..]);
        }
    }
}
