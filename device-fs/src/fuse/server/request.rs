//! Decoding one request's arguments: fixed structs, NUL-terminated names and trailing data.
//!
//! A [`Request`] is a cursor over the argument bytes (the body minus request extensions). Every
//! accessor fails with `EINVAL` on short or malformed input; it never panics and never reads past
//! the body. The request extensions (FUSE 7.38: `fuse_ext_header` records after the arguments)
//! are read once, by [`extensions`].

use std::ffi::CStr;

use rustix::io::Errno;
use zerocopy::FromBytes;

use crate::fuse::abi::InHeader;
use crate::fuse::types::{Context, NodeId, SecurityContext};

/// `FUSE_EXT_GROUPS`: the supplementary-group extension.
const EXT_GROUPS: u32 = 32;
/// Record types up to this one are security contexts, the type being their number
/// (`FUSE_MAX_NR_SECCTX`; the record then reads as `fuse_secctx_header { size, nr_secctx }`).
const MAX_NR_SECCTX: u32 = 31;

/// What the request extensions carry that this server reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Extensions {
    /// The one supplementary group of a FUSE_EXT_GROUPS record.
    pub(super) supp_group: Option<u32>,
    /// The security context of a security-context record.
    pub(super) security: Option<SecurityContext>,
}

/// A security-context record's payload: `fuse_secctx { size, padding }`, the attribute name
/// with its NUL, then `size` bytes of value (the record is padded past it). Linux sends at most
/// one context; none (`nr` 0) means no LSM labels the inode.
fn security_context(nr: u32, payload: &[u8]) -> Result<Option<SecurityContext>, Errno> {
    match nr {
        0 => return Ok(None),
        1 => {}
        _ => return Err(Errno::INVAL),
    }
    let size = payload.get(..4).ok_or(Errno::INVAL)?;
    // Four bytes, checked by `get` above.
    let size = u32::from_le_bytes(size.try_into().map_err(|_| Errno::INVAL)?) as usize;
    let rest = payload.get(8..).ok_or(Errno::INVAL)?;
    let name = CStr::from_bytes_until_nul(rest).map_err(|_| Errno::INVAL)?;
    let value = rest.get(name.to_bytes_with_nul().len()..).and_then(|v| v.get(..size));
    let value = value.ok_or(Errno::INVAL)?;
    if name.to_bytes().is_empty() || size == 0 {
        return Err(Errno::INVAL);
    }
    Ok(Some(SecurityContext { name: name.to_owned(), value: value.to_vec() }))
}

/// Reads the extension records: each is `fuse_ext_header { size, type }` followed by its
/// payload, `size` counting the header and a multiple of 8. A record that runs past the end, a
/// groups record that is not exactly one group, or a malformed or repeated security context is
/// `EINVAL`; records of other types are skipped.
pub(super) fn extensions(mut raw: &[u8]) -> Result<Extensions, Errno> {
    let mut ext = Extensions::default();
    let word = |b: &[u8], at: usize| -> Result<u32, Errno> {
        let bytes = b.get(at..at + 4).ok_or(Errno::INVAL)?;
        // Four bytes, checked by `get` above.
        Ok(u32::from_le_bytes(bytes.try_into().map_err(|_| Errno::INVAL)?))
    };
    while !raw.is_empty() {
        let size = word(raw, 0)? as usize;
        let typ = word(raw, 4)?;
        if size < 8 || size % 8 != 0 || size > raw.len() {
            return Err(Errno::INVAL);
        }
        let (record, rest) = raw.split_at(size);
        if typ <= MAX_NR_SECCTX {
            if ext.security.is_some() {
                return Err(Errno::INVAL);
            }
            ext.security = security_context(typ, &record[8..])?;
        } else if typ == EXT_GROUPS {
            // fuse_supp_groups { nr_groups, groups[] }: Linux sends exactly one group.
            if word(record, 8)? != 1 {
                return Err(Errno::INVAL);
            }
            ext.supp_group = Some(word(record, 12)?);
        }
        raw = rest;
    }
    Ok(ext)
}

/// The arguments of one request.
pub(super) struct Request<'a> {
    header: InHeader,
    args: &'a [u8],
    ext: Extensions,
}

impl<'a> Request<'a> {
    pub(super) fn new(header: &InHeader, args: &'a [u8], ext: Extensions) -> Self {
        Self { header: *header, args, ext }
    }

    /// The caller.
    pub(super) fn ctx(&self) -> Context {
        Context {
            uid: self.header.uid,
            gid: self.header.gid,
            pid: self.header.pid,
            supp_group: self.ext.supp_group,
            security: self.ext.security.clone(),
        }
    }

    /// The request's `unique`.
    pub(super) fn unique(&self) -> u64 {
        self.header.unique
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

    /// Takes the security context a FUSE 7.36 or 7.37 guest sends as the last argument of a
    /// creation, after the ones the request is read for: the record a 7.38 extension carries
    /// (`fuse_secctx_header`, then each context 8-byte aligned), with no `total_extlen` to say
    /// so. Nothing left is no context.
    pub(super) fn trailing_security(&mut self) -> Result<(), Errno> {
        let found = extensions(self.args)?;
        if found.supp_group.is_some() {
            // Only 7.38 extensions carry groups: not a context record.
            return Err(Errno::INVAL);
        }
        self.ext.security = found.security;
        self.args = &[];
        Ok(())
    }
}
