//! [`Span`]: the guest memory one driver's ring and its slots' buffers occupy, found in the
//! guest's memory map once, so each of the driver's accesses is a bounds check and a copy.
//!
//! A driver touches guest memory a dozen times a request (the request header and arguments,
//! the indirect table, the available ring, the used ring, the reply header). Through
//! `vm-memory` each of those first looked up the region holding it; a benchmark's driver
//! shares the machine with the device it measures, so what it spends for nothing is taken from
//! the device at depth. A Linux driver reaches its rings through addresses it resolved once,
//! too.
//!
//! Copies are volatile, as `vm-memory`'s are: the device (another process) writes the same
//! memory. This module owns only the addressing; what the bytes mean is [`super::ring`]'s.

use vhu_transport_std::vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice,
};

use super::GuestError;

/// Guest memory from `start` for `len` bytes, in one region of a memory map it keeps alive.
#[derive(Debug)]
pub(super) struct Span {
    /// Kept: the mapping `host` points into lives as long as it.
    _memory: GuestMemoryMmap,
    start: u64,
    len: usize,
    /// The host address of `start` in `memory`'s mapping.
    host: *mut u8,
}

// SAFETY: `host` points into the mapping of `memory`, which the span owns and which is
// shared memory any thread may access; the span hands out only bounds-checked volatile
// slices of it.
unsafe impl Send for Span {}

impl Span {
    /// The `len` bytes at `start` of `memory`, which must lie in one region.
    pub(super) fn new(memory: GuestMemoryMmap, start: u64, len: usize) -> Result<Self, GuestError> {
        let host = memory
            .get_slice(GuestAddress(start), len)
            .map_err(|e| GuestError::Memory(format!("{len} bytes at {start:#x}: {e}")))?
            .ptr_guard_mut()
            .as_ptr();
        Ok(Self { _memory: memory, start, len, host })
    }

    /// The `len` bytes at guest address `at`, which must lie in the span.
    fn slice(&self, at: u64, len: usize) -> Result<VolatileSlice<'_>, GuestError> {
        let offset = at.wrapping_sub(self.start);
        let inside = offset <= self.len as u64 && len as u64 <= self.len as u64 - offset;
        if !inside {
            return Err(GuestError::Memory(format!(
                "{len} bytes at {at:#x} outside the ring's memory ({:#x}, {} bytes)",
                self.start, self.len
            )));
        }
        // SAFETY: the `len` bytes at `offset` lie within the `self.len` bytes at `host`, which
        // `get_slice` found mapped in one region of `_memory`, which lives as long as `self`,
        // which the slice borrows.
        Ok(unsafe { VolatileSlice::new(self.host.add(offset as usize), len) })
    }

    /// Writes `bytes` at `at`.
    pub(super) fn write(&self, at: u64, bytes: &[u8]) -> Result<(), GuestError> {
        self.slice(at, bytes.len())?.copy_from(bytes);
        Ok(())
    }

    /// Fills `buf` from `at`.
    pub(super) fn read(&self, at: u64, buf: &mut [u8]) -> Result<(), GuestError> {
        self.slice(at, buf.len())?.copy_to(buf);
        Ok(())
    }

    /// The little-endian `u16` at `at`, read in one access.
    pub(super) fn read_u16(&self, at: u64) -> Result<u16, GuestError> {
        let slice = self.slice(at, 2)?;
        slice.read_obj::<u16>(0).map(u16::from_le).map_err(|e| GuestError::Memory(e.to_string()))
    }

    /// The little-endian `u32` at `at`, read in one access.
    pub(super) fn read_u32(&self, at: u64) -> Result<u32, GuestError> {
        let slice = self.slice(at, 4)?;
        slice.read_obj::<u32>(0).map(u32::from_le).map_err(|e| GuestError::Memory(e.to_string()))
    }

    /// Stores `value` as a little-endian `u16` at `at`, in one access.
    pub(super) fn write_u16(&self, at: u64, value: u16) -> Result<(), GuestError> {
        let slice = self.slice(at, 2)?;
        slice.write_obj(value.to_le(), 0).map_err(|e| GuestError::Memory(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).expect("memory")
    }

    #[test]
    fn a_span_reads_and_writes_what_the_memory_map_holds() {
        let memory = memory();
        let span = Span::new(memory.clone(), 0x1000, 0x2000).expect("span");
        span.write(0x1ff0, &[1, 2, 3, 4, 5, 6, 7, 8]).expect("write");
        span.write_u16(0x2000, 0xbeef).expect("u16");
        let mut back = [0u8; 10];
        memory.read_slice(&mut back, GuestAddress(0x1ff0)).expect("read");
        assert_eq!(back[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        let mut ours = [0u8; 8];
        span.read(0x1ff0, &mut ours).expect("read");
        assert_eq!(ours, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(span.read_u16(0x2000).expect("u16"), 0xbeef);
        assert_eq!(memory.read_obj::<u16>(GuestAddress(0x2000)).expect("u16"), 0xbeef);
        assert_eq!(span.read_u32(0x1ff4).expect("u32"), u32::from_le_bytes([5, 6, 7, 8]));
    }

    #[test]
    fn an_access_past_either_end_of_the_span_is_refused() {
        let span = Span::new(memory(), 0x1000, 0x1000).expect("span");
        assert!(span.write(0xfff, &[0]).is_err(), "before the start");
        assert!(span.write(0x1ffc, &[0; 8]).is_err(), "across the end");
        assert!(span.read_u16(0x2000).is_err(), "at the end");
        assert!(span.read(u64::MAX, &mut [0; 2]).is_err(), "an address that wraps");
        assert!(span.write(0x1ff8, &[0; 8]).is_ok(), "up to the last byte");
        assert!(Span::new(memory(), 0x3000, 0x2000).is_err(), "a span past the memory");
    }
}
