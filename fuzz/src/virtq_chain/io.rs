//! Data movement in `virtq_chain`: readers and writers over popped chains, which must move
//! exactly the chain's bytes, and over arbitrary segments, which may only touch guest memory.

use vhu_transport_std::virtq::{
    BufferMemory, DescriptorChain, QueueError, Reader, Segment, Writer,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::harness::Harness;
use super::memory::{in_memory, pieces};
use super::CHUNK;

impl Harness {
    /// Reads the readable part (within the budget), through the queue's view of guest memory
    /// when `view` is set; it must all succeed and match memory.
    pub(super) fn read_chain(&mut self, chain: &DescriptorChain, view: bool) {
        if view {
            let ring_view = self.q.view(&self.mem);
            read_all(Reader::new(&ring_view, chain), chain, &self.mem, &mut self.io_left);
        } else {
            read_all(Reader::new(&self.mem, chain), chain, &self.mem, &mut self.io_left);
        }
    }

    /// Fills the writable part (within the budget), through the queue's view of guest memory
    /// when `view` is set; returns the bytes written.
    pub(super) fn write_chain(&mut self, chain: &DescriptorChain, view: bool) -> u32 {
        if view {
            let ring_view = self.q.view(&self.mem);
            write_all(Writer::new(&ring_view, chain), chain, &self.mem, &mut self.io_left)
        } else {
            write_all(Writer::new(&self.mem, chain), chain, &self.mem, &mut self.io_left)
        }
    }

    /// A reader or writer over arbitrary segments: an `Ok` must only have touched guest memory.
    pub(super) fn segments(&mut self, segments: &[Segment], write: bool) {
        let total: usize = segments.iter().map(|s| s.len as usize).sum();
        let mut buf = vec![0xa5u8; CHUNK];
        let mut reader = Reader::from_segments(&self.mem, segments);
        let mut writer = Writer::from_segments(&self.mem, segments);
        assert_eq!(reader.remaining(), total);
        assert_eq!(writer.remaining(), total);
        let mut pos = 0;
        while pos < total && self.io_left > 0 {
            let want = CHUNK.min(self.io_left);
            let result =
                if write { writer.write(&buf[..want]) } else { reader.read(&mut buf[..want]) };
            let expect = want.min(total - pos);
            let touched = pieces(segments, pos, expect);
            let outside = touched.iter().any(|p| !p.is_some_and(|(a, l)| in_memory(a, l)));
            match result {
                Ok(n) => {
                    assert_eq!(n, expect);
                    assert!(!outside, "Ok access outside guest memory: {touched:x?}");
                    pos += n;
                    self.io_left -= n;
                }
                Err(e) => {
                    assert!(matches!(e, QueueError::Memory { .. }), "{e}");
                    assert!(outside, "{e} although {touched:x?} is in memory");
                    return;
                }
            }
        }
        if write {
            assert_eq!(writer.written(), pos);
        }
    }
}

/// Reads what the budget allows through `r`; every byte must match guest memory.
fn read_all<B: BufferMemory + ?Sized>(
    mut r: Reader<'_, B>,
    chain: &DescriptorChain,
    mem: &GuestMemoryMmap,
    io_left: &mut usize,
) {
    assert_eq!(r.remaining(), chain.readable_len() as usize);
    let mut pos = 0;
    let mut buf = vec![0u8; CHUNK];
    while r.remaining() > 0 && *io_left > 0 {
        let want = CHUNK.min(*io_left);
        let before = r.remaining();
        let n = r.read(&mut buf[..want]).expect("a validated chain reads");
        assert_eq!(n, want.min(before));
        assert_eq!(r.remaining(), before - n);
        let mut at = 0;
        for piece in pieces(chain.readable(), pos, n) {
            let (addr, len) = piece.expect("validated segments do not overflow");
            let mut expect = vec![0u8; len as usize];
            mem.read_slice(&mut expect, GuestAddress(addr)).expect("in memory");
            assert_eq!(&buf[at..at + len as usize], &expect[..], "reader bytes");
            at += len as usize;
        }
        assert_eq!(at, n);
        pos += n;
        *io_left -= n;
    }
}

/// Writes what the budget allows through `w`; every byte must land in guest memory. Returns the
/// bytes written.
fn write_all<B: BufferMemory + ?Sized>(
    mut w: Writer<'_, B>,
    chain: &DescriptorChain,
    mem: &GuestMemoryMmap,
    io_left: &mut usize,
) -> u32 {
    assert_eq!(w.remaining(), chain.writable_len() as usize);
    let data: Vec<u8> = (0..CHUNK).map(|i| i as u8 ^ 0x5a).collect();
    let mut pos = 0;
    while w.remaining() > 0 && *io_left > 0 {
        let want = CHUNK.min(*io_left);
        let before = w.remaining();
        let n = w.write(&data[..want]).expect("a validated chain writes");
        assert_eq!(n, want.min(before));
        assert_eq!(w.remaining(), before - n);
        let written: Vec<(u64, u64)> = pieces(chain.writable(), pos, n)
            .into_iter()
            .map(|piece| piece.expect("validated segments do not overflow"))
            .collect();
        assert_eq!(written.iter().map(|(_, len)| *len).sum::<u64>(), n as u64);
        // Buffers the guest made overlap hold what was written last: compare only when none do.
        let apart = written.iter().enumerate().all(|(i, (a, la))| {
            written[i + 1..].iter().all(|(b, lb)| a + la <= *b || b + lb <= *a)
        });
        let mut at = 0;
        for (addr, len) in written.iter().filter(|_| apart) {
            let mut landed = vec![0u8; *len as usize];
            mem.read_slice(&mut landed, GuestAddress(*addr)).expect("in memory");
            assert_eq!(&landed[..], &data[at..at + *len as usize], "writer bytes");
            at += *len as usize;
        }
        pos += n;
        *io_left -= n;
    }
    assert_eq!(w.written() + w.remaining(), chain.writable_len() as usize);
    u32::try_from(w.written()).expect("at most writable_len")
}
