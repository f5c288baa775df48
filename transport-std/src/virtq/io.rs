//! Copying between a descriptor chain's buffers and byte slices.
//!
//! [`Reader`] consumes the device-readable part of a chain in order, [`Writer`] fills the
//! device-writable part in order. Both move bytes through a [`BufferMemory`] (guest memory, or a
//! turn's view of its regions; either way every access is bounds checked) and track how far they
//! got; they never interpret what they copy. For I/O that goes straight between a file and guest
//! memory, both also name the host memory of a span of their buffers ([`HostSlice`]s, each
//! checked to lie in a mapped region), so a device can hand it to `preadv`/`pwritev` without a
//! copy through its own memory.

use vm_memory::bitmap::Bitmap;
use vm_memory::{Address, GuestMemory, Permissions};

use super::buffer_memory::BufferMemory;
use super::chain::{DescriptorChain, Segment};
use super::error::QueueError;

/// Position inside a list of segments.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    segment: usize,
    offset: u32,
    remaining: usize,
}

impl Cursor {
    fn new(segments: &[Segment]) -> Self {
        Self::with_total(segments.iter().map(|s| s.len as usize).sum())
    }

    /// A cursor at the start of segments of `total` bytes in all (a chain's checked total).
    fn with_total(total: usize) -> Self {
        Self { segment: 0, offset: 0, remaining: total }
    }

    /// Where the next `want` bytes start when the current segment holds them all (the common
    /// case of a header or a small reply in one buffer), for [`Cursor::step`] once used.
    /// A current segment used up moves the cursor to the next one first (a header read, its
    /// arguments next, each in its own buffer as Linux lays them out).
    #[inline]
    fn within(&mut self, segments: &[Segment], want: usize) -> Option<vm_memory::GuestAddress> {
        let mut seg = segments.get(self.segment)?;
        if self.offset == seg.len {
            seg = segments.get(self.segment + 1)?;
            self.segment += 1;
            self.offset = 0;
        }
        let fits = want > 0 && want <= (seg.len - self.offset) as usize;
        fits.then(|| seg.addr.checked_add(u64::from(self.offset))).flatten()
    }

    /// Moves past `n` bytes that [`Cursor::within`] found in the current segment.
    #[inline]
    fn step(&mut self, n: usize) {
        // n fits the segment's u32 length.
        self.offset += n as u32;
        self.remaining -= n;
    }

    /// Runs `f(addr, len)` over up to `want` bytes of the segments, advancing the cursor.
    fn advance<F>(
        &mut self,
        segments: &[Segment],
        want: usize,
        mut f: F,
    ) -> Result<usize, QueueError>
    where
        F: FnMut(vm_memory::GuestAddress, usize, usize) -> Result<(), QueueError>,
    {
        let mut done = 0;
        while done < want {
            let Some(seg) = segments.get(self.segment) else {
                break;
            };
            let left_in_seg = (seg.len - self.offset) as usize;
            if left_in_seg == 0 {
                self.segment += 1;
                self.offset = 0;
                continue;
            }
            let n = left_in_seg.min(want - done);
            let addr = seg.addr.checked_add(u64::from(self.offset)).ok_or(QueueError::Memory {
                addr: seg.addr.raw_value(),
                len: u64::from(seg.len),
            })?;
            f(addr, done, n)?;
            done += n;
            // n <= left_in_seg <= u32::MAX
            self.offset += n as u32;
            self.remaining -= n;
        }
        Ok(done)
    }
}

/// Host memory of part of a chain's buffer: where `vm-memory` maps it and how long it is. Valid
/// while the guest memory it came from is; the guest may change it at any time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSlice {
    /// Host address of the first byte.
    pub ptr: *mut u8,
    /// Bytes.
    pub len: usize,
}

/// Hands `each` the host slices of `len` bytes starting `skip` bytes past `cursor`, in order.
fn host_slices<B: BufferMemory + ?Sized>(
    mem: &B,
    segments: &[Segment],
    mut cursor: Cursor,
    (skip, len): (usize, usize),
    each: &mut dyn FnMut(HostSlice),
) -> Result<(), QueueError> {
    // The common case first: a header's room to skip in the current buffer, then the data in
    // one buffer (a READ's page).
    if skip == 0 || cursor.within(segments, skip).is_some() {
        cursor.step(skip);
        if let Some(addr) = cursor.within(segments, len) {
            if let Some(slice) = mem.host_slice(addr, len) {
                each(slice);
                return Ok(());
            }
        }
    } else {
        cursor.advance(segments, skip, |_, _, _| Ok(()))?;
    }
    cursor.advance(segments, len, |addr, _, n| {
        if let Some(slice) = mem.host_slice(addr, n) {
            each(slice);
            return Ok(());
        }
        let slices = mem
            .memory()
            .get_slices(addr, n, Permissions::ReadWrite)
            .map_err(|_| mem_err(addr, n))?;
        for slice in slices {
            let slice = slice.map_err(|_| mem_err(addr, n))?;
            each(HostSlice { ptr: slice.ptr_guard_mut().as_ptr(), len: slice.len() });
        }
        Ok(())
    })?;
    Ok(())
}

fn mem_err(addr: vm_memory::GuestAddress, len: usize) -> QueueError {
    QueueError::Memory { addr: addr.raw_value(), len: len as u64 }
}

/// Reads the device-readable part of a chain.
pub struct Reader<'a, M: ?Sized> {
    mem: &'a M,
    segments: &'a [Segment],
    cursor: Cursor,
}

impl<'a, M: BufferMemory + ?Sized> Reader<'a, M> {
    /// A reader over `chain`'s readable buffers.
    pub fn new(mem: &'a M, chain: &'a DescriptorChain) -> Self {
        // The chain's total was summed and checked when it was walked.
        let cursor = Cursor::with_total(chain.readable_len() as usize);
        Self { mem, segments: chain.readable(), cursor }
    }

    /// A reader over arbitrary segments.
    pub fn from_segments(mem: &'a M, segments: &'a [Segment]) -> Self {
        Self { mem, segments, cursor: Cursor::new(segments) }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.cursor.remaining
    }

    /// Copies up to `buf.len()` bytes into `buf`; returns how many were copied.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, QueueError> {
        if let Some(addr) = self.cursor.within(self.segments, buf.len()) {
            self.mem.read_buffer(addr, buf)?;
            self.cursor.step(buf.len());
            return Ok(buf.len());
        }
        let mem = self.mem;
        self.cursor.advance(self.segments, buf.len(), |addr, at, n| {
            mem.read_buffer(addr, &mut buf[at..at + n])
        })
    }

    /// Hands `each` the host memory of the next `len` bytes (fewer when the chain has fewer),
    /// without consuming them; [`Reader::consume`] them once used.
    pub fn host_slices(
        &self,
        len: usize,
        each: &mut dyn FnMut(HostSlice),
    ) -> Result<(), QueueError> {
        host_slices(self.mem, self.segments, self.cursor, (0, len), each)
    }

    /// How many buffers the rest of the readable part spans (the first possibly in part).
    pub fn buffers_left(&self) -> usize {
        self.segments.len().saturating_sub(self.cursor.segment)
    }

    /// Consumes `n` bytes used through [`Reader::host_slices`]; returns how many there were.
    pub fn consume(&mut self, n: usize) -> Result<usize, QueueError> {
        self.cursor.advance(self.segments, n, |_, _, _| Ok(()))
    }
}

/// Writes the device-writable part of a chain.
pub struct Writer<'a, M: ?Sized> {
    mem: &'a M,
    segments: &'a [Segment],
    cursor: Cursor,
    written: usize,
}

impl<'a, M: BufferMemory + ?Sized> Writer<'a, M> {
    /// A writer over `chain`'s writable buffers.
    pub fn new(mem: &'a M, chain: &'a DescriptorChain) -> Self {
        // The chain's total was summed and checked when it was walked.
        let cursor = Cursor::with_total(chain.writable_len() as usize);
        Self { mem, segments: chain.writable(), cursor, written: 0 }
    }

    /// A writer over arbitrary segments.
    pub fn from_segments(mem: &'a M, segments: &'a [Segment]) -> Self {
        Self { mem, segments, cursor: Cursor::new(segments), written: 0 }
    }

    /// Bytes that can still be written.
    pub fn remaining(&self) -> usize {
        self.cursor.remaining
    }

    /// Bytes written so far: the length to put in the used ring.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Copies up to `buf.len()` bytes from `buf`; returns how many were copied.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, QueueError> {
        if let Some(addr) = self.cursor.within(self.segments, buf.len()) {
            self.mem.write_buffer(addr, buf)?;
            self.cursor.step(buf.len());
            self.written += buf.len();
            return Ok(buf.len());
        }
        let mem = self.mem;
        let n = self.cursor.advance(self.segments, buf.len(), |addr, at, n| {
            mem.write_buffer(addr, &buf[at..at + n])
        })?;
        self.written += n;
        Ok(n)
    }

    /// Hands `each` the host memory of `len` bytes starting `skip` bytes past the position
    /// (fewer when the chain has fewer), without moving it: for data placed behind a header
    /// written later.
    pub fn host_slices(
        &self,
        skip: usize,
        len: usize,
        each: &mut dyn FnMut(HostSlice),
    ) -> Result<(), QueueError> {
        host_slices(self.mem, self.segments, self.cursor, (skip, len), each)
    }

    /// How many buffers the rest of the writable part spans (the first possibly in part).
    pub fn buffers_left(&self) -> usize {
        self.segments.len().saturating_sub(self.cursor.segment)
    }

    /// Copies `buf` to `skip` bytes past the position, without moving it; returns how many
    /// bytes fit.
    pub fn write_ahead(&self, skip: usize, buf: &[u8]) -> Result<usize, QueueError> {
        let mut cursor = self.cursor;
        cursor.advance(self.segments, skip, |_, _, _| Ok(()))?;
        let mem = self.mem;
        cursor.advance(self.segments, buf.len(), |addr, at, n| {
            mem.write_buffer(addr, &buf[at..at + n])
        })
    }

    /// Moves the position past `n` bytes placed there earlier (they count as written), and marks
    /// them in the dirty log: bytes placed through [`Writer::host_slices`] bypassed `vm-memory`,
    /// so this is where a migration learns of them. Call it once the bytes have landed.
    pub fn advance(&mut self, n: usize) -> Result<usize, QueueError> {
        let mem = self.mem;
        // The common case first: the bytes lie in one buffer of one region (a READ's page).
        if let Some(addr) = self.cursor.within(self.segments, n) {
            if mem.mark_dirty(addr, n) {
                self.cursor.step(n);
                self.written += n;
                return Ok(n);
            }
        }
        let n = self.cursor.advance(self.segments, n, |addr, _, n| {
            if mem.mark_dirty(addr, n) {
                return Ok(());
            }
            let slices = mem
                .memory()
                .get_slices(addr, n, Permissions::ReadWrite)
                .map_err(|_| mem_err(addr, n))?;
            for slice in slices {
                let slice = slice.map_err(|_| mem_err(addr, n))?;
                slice.bitmap().mark_dirty(0, slice.len());
            }
            Ok(())
        })?;
        self.written += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    use super::*;

    fn seg(addr: u64, len: u32) -> Segment {
        Segment { addr: GuestAddress(addr), len }
    }

    /// The guest addresses (offsets from the region's start) and lengths `host_slices` names.
    fn named(
        mem: &GuestMemoryMmap,
        w: &Writer<'_, GuestMemoryMmap>,
        skip: usize,
        len: usize,
    ) -> Vec<(u64, usize)> {
        let base = mem.get_host_address(GuestAddress(0)).unwrap() as usize;
        let mut out = Vec::new();
        w.host_slices(skip, len, &mut |s| out.push(((s.ptr as usize - base) as u64, s.len)))
            .unwrap();
        out
    }

    #[test]
    fn host_slices_and_advance_follow_the_buffers_wherever_they_split() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_000)]).unwrap();
        // A reply header and a page, as a READ's reply is laid out.
        let two = [seg(0x1000, 16), seg(0x2000, 4096)];
        let mut w = Writer::from_segments(&mem, &two);
        assert_eq!(named(&mem, &w, 16, 4096), [(0x2000, 4096)]);
        assert_eq!(named(&mem, &w, 0, 20), [(0x1000, 16), (0x2000, 4)]);
        assert_eq!(w.write(&[1; 16]).unwrap(), 16);
        assert_eq!(named(&mem, &w, 0, 4096), [(0x2000, 4096)]);
        assert_eq!(named(&mem, &w, 0, 5000), [(0x2000, 4096)], "no more than the chain holds");
        assert_eq!(w.advance(4096).unwrap(), 4096);
        assert_eq!((w.written(), w.remaining()), (4112, 0));
        // A skip that ends inside the second buffer, data across the third.
        let three = [seg(0x1000, 16), seg(0x3000, 100), seg(0x5000, 4000)];
        let mut w = Writer::from_segments(&mem, &three);
        assert_eq!(named(&mem, &w, 20, 200), [(0x3004, 96), (0x5000, 104)]);
        assert_eq!(named(&mem, &w, 16, 100), [(0x3000, 100)]);
        assert_eq!(w.advance(50).unwrap(), 50, "advance crosses buffers");
        assert_eq!(w.advance(4066).unwrap(), 4066);
        assert_eq!((w.written(), w.remaining()), (4116, 0));
        assert_eq!(w.advance(1).unwrap(), 0, "nothing is left to advance over");
    }
}
