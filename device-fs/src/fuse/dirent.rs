//! Packing directory entries into a READDIR / READDIRPLUS reply buffer.
//!
//! [`DirBuffer`] enforces the record rules the Linux guest checks (8-byte padding, name length 1..=1024,
//! no `/`, never a partial trailing record); it does not read directories or take lookup references.

use zerocopy::IntoBytes;

use super::abi::{Dirent, Direntplus, DIRENTPLUS_NAME_OFFSET, DIRENT_NAME_OFFSET};
use super::types::{DirEntry, Entry};

/// Longest name the guest accepts in a record.
pub const MAX_DIRENT_NAME: usize = 1024;

/// A bounded buffer of directory records.
#[derive(Clone, Debug)]
pub struct DirBuffer {
    buf: Vec<u8>,
    capacity: usize,
}

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Why an entry was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// The record does not fit the remaining space: stop listing.
    Full,
    /// The name is empty, too long or contains `/` or NUL: skip it.
    BadName,
}

impl DirBuffer {
    /// An empty buffer of at most `capacity` bytes (the request's `size`).
    pub fn new(capacity: usize) -> Self {
        Self { buf: Vec::new(), capacity }
    }

    /// Whether a record with a `name_len`-byte name would fit.
    pub fn fits(&self, name_len: usize, plus: bool) -> bool {
        let header = if plus { DIRENTPLUS_NAME_OFFSET } else { DIRENT_NAME_OFFSET };
        self.buf.len() + padded(header + name_len) <= self.capacity
    }

    /// Whether `name` can appear in a record.
    pub fn is_valid_name(name: &[u8]) -> bool {
        !name.is_empty()
            && name.len() <= MAX_DIRENT_NAME
            && !name.iter().any(|&b| b == b'/' || b == 0)
    }

    fn push(&mut self, header: &[u8], name: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(header);
        self.buf.extend_from_slice(name);
        self.buf.resize(start + padded(header.len() + name.len()), 0);
    }

    fn dirent(e: &DirEntry<'_>) -> Dirent {
        Dirent {
            ino: e.ino,
            off: e.next_offset,
            // Bounded by MAX_DIRENT_NAME.
            namelen: e.name.len() as u32,
            typ: e.typ,
        }
    }

    /// Adds a READDIR record.
    pub fn add(&mut self, e: &DirEntry<'_>) -> Result<(), AddError> {
        if !Self::is_valid_name(e.name) {
            return Err(AddError::BadName);
        }
        if !self.fits(e.name.len(), false) {
            return Err(AddError::Full);
        }
        self.push(Self::dirent(e).as_bytes(), e.name);
        Ok(())
    }

    /// Adds a READDIRPLUS record; `entry` is `None` for "no entry information" (nodeid 0).
    pub fn add_plus(&mut self, e: &DirEntry<'_>, entry: Option<&Entry>) -> Result<(), AddError> {
        if !Self::is_valid_name(e.name) {
            return Err(AddError::BadName);
        }
        if !self.fits(e.name.len(), true) {
            return Err(AddError::Full);
        }
        let record = Direntplus {
            entry_out: entry.map(Entry::to_wire).unwrap_or_default(),
            dirent: Self::dirent(e),
        };
        self.push(record.as_bytes(), e.name);
        Ok(())
    }

    /// The encoded records.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}
