//! Connects the FUSE server's byte streams to virtqueue chains.
//!
//! Implements [`RequestReader`] for [`virtq::Reader`] and [`ReplyWriter`] for [`virtq::Writer`]; it
//! adds no behaviour of its own.

use vm_memory::GuestMemory;

use crate::fuse::{ReplyWriter, RequestReader, TransportError};
use vhu_transport_std::virtq;

impl<M: GuestMemory + ?Sized> RequestReader for virtq::Reader<'_, M> {
    fn remaining(&self) -> usize {
        virtq::Reader::remaining(self)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TransportError> {
        match self.read(buf) {
            Ok(n) if n == buf.len() => Ok(()),
            _ => Err(TransportError { len: buf.len() }),
        }
    }
}

impl<M: GuestMemory + ?Sized> ReplyWriter for virtq::Writer<'_, M> {
    fn remaining(&self) -> usize {
        virtq::Writer::remaining(self)
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        match self.write(buf) {
            Ok(n) if n == buf.len() => Ok(()),
            _ => Err(TransportError { len: buf.len() }),
        }
    }
}
