//! Decoding one request's arguments: fixed structs, NUL-terminated names and trailing data.
//!
//! A [`Request`] is a cursor over the argument bytes (the body minus request extensions). Every
//! accessor fails with `EINVAL` on short or malformed input; it never panics and never reads past
//! the body.

use std::ffi::CStr;

use rustix::io::Errno;
use zerocopy::FromBytes;

use crate::fuse::abi::InHeader;
use crate::fuse::types::{Context, NodeId};

/// The arguments of one request.
pub(super) struct Request<'a> {
    header: InHeader,
    args: &'a [u8],
}

impl<'a> Request<'a> {
    pub(super) fn new(header: &InHeader, args: &'a [u8]) -> Self {
        Self { header: *header, args }
    }

    /// The caller.
    pub(super) fn ctx(&self) -> Context {
        Context { uid: self.header.uid, gid: self.header.gid, pid: self.header.pid }
    }

    /// The target node.
    pub(super) fn node(&self) -> NodeId {
        NodeId(self.header.nodeid)
    }

    /// Takes a fixed-size argument struct.
    pub(super) fn take<T: FromBytes>(&mut self) -> Result<T, Errno> {
        let (value, rest) = T::read_from_prefix(self.args).map_err(|_| Errno::INVAL)?;
        self.args = rest;
        Ok(value)
    }

    /// Takes a struct that older protocol minors send shorter: missing tail bytes read as zero.
    pub(super) fn take_prefix<T: FromBytes + zerocopy::IntoBytes>(
        &mut self,
        min_len: usize,
    ) -> Result<T, Errno> {
        let mut value = T::new_zeroed();
        let full = value.as_mut_bytes();
        if self.args.len() < min_len {
            return Err(Errno::INVAL);
        }
        let n = full.len().min(self.args.len());
        full[..n].copy_from_slice(&self.args[..n]);
        self.args = &self.args[n..];
        Ok(value)
    }

    /// Takes a NUL-terminated string.
    pub(super) fn name(&mut self) -> Result<&'a CStr, Errno> {
        let name = CStr::from_bytes_until_nul(self.args).map_err(|_| Errno::INVAL)?;
        self.args = &self.args[name.to_bytes_with_nul().len()..];
        Ok(name)
    }

    /// Takes exactly `len` bytes.
    pub(super) fn bytes(&mut self, len: usize) -> Result<&'a [u8], Errno> {
        if self.args.len() < len {
            return Err(Errno::INVAL);
        }
        let (head, tail) = self.args.split_at(len);
        self.args = tail;
        Ok(head)
    }

    /// Bytes left.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.args
    }
}
