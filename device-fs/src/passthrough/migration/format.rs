//! The bytes of a virtio-fs back-end's migration state: what [`FsState`] holds, written and read
//! back in a versioned little-endian layout.
//!
//! ```text
//! magic "VHUFSMIG", u32 version (2; 1 when no handle keeps a sync failure)
//! u8 session present; then u32 minor, u64 offered INIT flags, u64 claimed INIT flags
//! u32 devices; each u64 host device, u64 index
//! u64 next node id; u32 nodes; each
//!     u64 node id, u64 lookups, u64 host device, u64 host inode number, u32 S_IFMT kind,
//!     u8 has path [u32 length, bytes], u8 has handle [i32 type, u32 length, bytes]
//! u64 last handle id; u32 handles; each u64 handle, u64 node, u8 directory, u32 open flags,
//!     u8 lost, and in version 2 u32 kept sync failure (an errno below 512, 0: none)
//! ```
//!
//! Version 1 has no kept sync failure. It is written when no handle keeps one, so a destination
//! that reads only version 1 still takes such a state, and it reads as a state without any.
//!
//! A node with neither path nor handle could not be described by the source. The bytes come from
//! the front-end: reading them checks every length against what is left and against the limits
//! below, and fails with a [`FormatError`] naming what was wrong; it never panics. This module
//! must not open anything.

use crate::fuse::{NodeId, SessionState};

/// First bytes of the state.
const MAGIC: &[u8; 8] = b"VHUFSMIG";
/// The newest layout version this module writes and reads (it reads version 1 too).
pub const VERSION: u32 = 2;
/// The largest errno a state may keep for a guest (the kernel's own codes begin at 512).
pub(super) const MAX_ERRNO: i32 = 511;
/// Longest path accepted (`PATH_MAX`); a source describes no node by a longer one.
pub(super) const PATH_MAX: usize = 4096;
/// Longest file handle accepted (`MAX_HANDLE_SZ`).
pub(super) const HANDLE_MAX: usize = 128;

/// An opaque host file handle (`name_to_handle_at`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandle {
    /// `handle_type`.
    pub kind: i32,
    /// `f_handle`, at most 128 bytes (`MAX_HANDLE_SZ`).
    pub bytes: Vec<u8>,
}

/// One node the guest holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// The guest's node id.
    pub node: u64,
    /// Lookups the guest holds.
    pub lookups: u64,
    /// Host device on the source.
    pub dev: u64,
    /// Host inode number on the source.
    pub ino: u64,
    /// `S_IFMT` bits.
    pub kind: u32,
    /// Path relative to the share, components separated by `/`.
    pub path: Option<Vec<u8>>,
    /// File handle.
    pub handle: Option<FileHandle>,
}

/// One open file or directory handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandleRecord {
    /// The guest's handle.
    pub handle: u64,
    /// The node it is open for.
    pub node: u64,
    /// Whether it is a directory handle.
    pub is_dir: bool,
    /// `open(2)` flags it is open with.
    pub flags: u32,
    /// Lost already on the source.
    pub lost: bool,
    /// The errno of a sync the source made on its own through the handle that failed, which
    /// the guest has not heard of yet (0: none); its next FSYNC of the file says so.
    pub sync_failed: i32,
}

/// Everything the destination needs; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsState {
    /// The FUSE session, once INIT succeeded.
    pub session: Option<SessionState>,
    /// Host devices and their indexes in guest inode numbers.
    pub devices: Vec<(u64, u64)>,
    /// The id the next new node gets.
    pub next_node: u64,
    /// Nodes other than the root.
    pub nodes: Vec<NodeRecord>,
    /// The last handle id handed out.
    pub last_handle: u64,
    /// Open handles.
    pub handles: Vec<HandleRecord>,
}

/// Bytes that are not a state this module reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Not a vhu-fsd state at all.
    #[error("not a vhu-fsd migration state (bad magic)")]
    Magic,
    /// Written by a version this one does not read.
    #[error(
        "migration state version {0} is not supported (this daemon reads versions 1 to {VERSION})"
    )]
    Version(u32),
    /// Ends in the middle of a field.
    #[error("migration state ends inside {0}")]
    Truncated(&'static str),
    /// A length beyond its limit.
    #[error("{what} of {len} bytes in the migration state exceeds {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More nodes or handles than the destination may hold open.
    #[error(
        "{count} {what} in the migration state exceed the {max} open files this daemon may \
         hold (--rlimit-nofile)"
    )]
    TooMany {
        /// "nodes" or "handles".
        what: &'static str,
        /// How many the state has.
        count: u64,
        /// How many the daemon may hold.
        max: u64,
    },
    /// More host devices than any host mounts.
    #[error("{0} host devices in the migration state exceed the {MAX_DEVICES} a state may list")]
    TooManyDevices(usize),
    /// Bytes after the last field.
    #[error("{0} bytes follow the migration state")]
    Trailing(usize),
    /// The same id, device or device index twice.
    #[error("{what} {value} appears twice in the migration state")]
    Duplicate {
        /// The field.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A value no daemon saves: the root node (never carried), node 0, a node without lookups.
    #[error("{what} {value} cannot be in a migration state")]
    Invalid {
        /// The field.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A number past what the daemon hands out: counting on from it would wrap.
    #[error("{what} {value} in the migration state exceeds {max}")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The largest accepted.
        max: u64,
    },
}

/// The largest node or handle id a state may carry: far beyond any a daemon hands out, and far
/// enough below `u64::MAX` that counting on from it never wraps.
pub(super) const MAX_ID: u64 = 1 << 62;

/// The largest host device index a state may carry: indexes live in the top 16 bits of a guest
/// inode number.
pub(super) const MAX_DEVICE_INDEX: u64 = (1 << 16) - 1;

/// Host devices a state may list at most: far more file systems than a host mounts (Linux's
/// default `fs.mount-max` is 100 000), and few enough that a state of little else cannot make
/// a destination hold gigabytes for it.
pub(super) const MAX_DEVICES: usize = 1 << 20;

/// `value`, unless it exceeds `max`.
fn too_many(count: usize, max: u64, what: &'static str) -> Result<(), FormatError> {
    let count = count as u64;
    if count > max {
        return Err(FormatError::TooMany { what, count, max });
    }
    Ok(())
}

/// Every value of `values` once (a saved table never names one twice); returns them sorted.
fn once(values: impl Iterator<Item = u64>, what: &'static str) -> Result<Vec<u64>, FormatError> {
    let mut values: Vec<u64> = values.collect();
    values.sort_unstable();
    match values.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(FormatError::Duplicate { what, value: pair[0] }),
        None => Ok(values),
    }
}

fn at_most(value: u64, max: u64, what: &'static str) -> Result<u64, FormatError> {
    if value > max {
        return Err(FormatError::OutOfRange { what, value, max });
    }
    Ok(value)
}

impl FsState {
    /// The state as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.nodes.len() * 80 + self.handles.len() * 32);
        out.extend_from_slice(MAGIC);
        // Version 1 unless a handle keeps a sync failure, which only version 2 can carry.
        // A value no guest could be given is not kept (decoding would refuse it).
        let kept = |h: &HandleRecord| {
            if (1..=MAX_ERRNO).contains(&h.sync_failed) {
                h.sync_failed
            } else {
                0
            }
        };
        let version = if self.handles.iter().any(|h| kept(h) != 0) { VERSION } else { 1 };
        put32(&mut out, version);
        match &self.session {
            Some(s) => {
                out.push(1);
                put32(&mut out, s.minor);
                put64(&mut out, s.offered);
                put64(&mut out, s.claimed);
            }
            None => out.push(0),
        }
        put32(&mut out, self.devices.len() as u32);
        for (dev, index) in &self.devices {
            put64(&mut out, *dev);
            put64(&mut out, *index);
        }
        put64(&mut out, self.next_node);
        put32(&mut out, self.nodes.len() as u32);
        for n in &self.nodes {
            for v in [n.node, n.lookups, n.dev, n.ino] {
                put64(&mut out, v);
            }
            put32(&mut out, n.kind);
            put_bytes(&mut out, n.path.as_deref());
            match &n.handle {
                Some(h) => {
                    out.push(1);
                    put32(&mut out, h.kind as u32);
                    put_bytes(&mut out, Some(&h.bytes));
                }
                None => out.push(0),
            }
        }
        put64(&mut out, self.last_handle);
        put32(&mut out, self.handles.len() as u32);
        for h in &self.handles {
            put64(&mut out, h.handle);
            put64(&mut out, h.node);
            out.push(u8::from(h.is_dir));
            put32(&mut out, h.flags);
            out.push(u8::from(h.lost));
            if version == VERSION {
                put32(&mut out, kept(h) as u32);
            }
        }
        out
    }

    /// Reads a state written by [`FsState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        Self::decode_at_most(bytes, u64::MAX)
    }

    /// [`FsState::decode`], refusing a state of more than `records` nodes or handles before
    /// they take memory (a destination takes at most its open-file budget of them).
    pub fn decode_at_most(bytes: &[u8], records: u64) -> Result<Self, FormatError> {
        let mut r = Cursor { bytes };
        if r.take(8, "the magic")? != MAGIC {
            return Err(FormatError::Magic);
        }
        let version = r.u32("the version")?;
        // Version 1 carried no kept sync failure with a handle.
        if version != VERSION && version != 1 {
            return Err(FormatError::Version(version));
        }
        let session = match r.u8("the session")? {
            0 => None,
            _ => Some(SessionState {
                minor: r.u32("the session")?,
                offered: r.u64("the session")?,
                claimed: r.u64("the session")?,
            }),
        };
        let count = r.count("the device list", 16)?;
        if count > MAX_DEVICES {
            return Err(FormatError::TooManyDevices(count));
        }
        let mut devices = Vec::with_capacity(count);
        for _ in 0..count {
            let dev = r.u64("a device")?;
            devices.push((dev, at_most(r.u64("a device")?, MAX_DEVICE_INDEX, "a device index")?));
        }
        let next_node = at_most(r.u64("the node list")?, MAX_ID, "the next node id")?;
        let count = r.count("the node list", 38)?;
        too_many(count, records, "nodes")?;
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let what = "a node";
            let (node, lookups, dev, ino) =
                (r.u64(what)?, r.u64(what)?, r.u64(what)?, r.u64(what)?);
            let node = at_most(node, MAX_ID, "a node id")?;
            let kind = r.u32(what)?;
            let path = r.bytes("a node's path", PATH_MAX)?;
            let handle = match r.u8(what)? {
                0 => None,
                _ => {
                    let kind = r.u32("a file handle")? as i32;
                    let bytes = r.bytes("a file handle", HANDLE_MAX)?.unwrap_or_default();
                    Some(FileHandle { kind, bytes })
                }
            };
            // The root is every daemon's own, and a node the guest forgot is not kept.
            if node <= 1 {
                return Err(FormatError::Invalid { what: "a node id", value: node });
            }
            if lookups == 0 {
                return Err(FormatError::Invalid { what: "the lookup count of node", value: node });
            }
            nodes.push(NodeRecord { node, lookups, dev, ino, kind, path, handle });
        }
        let last_handle = at_most(r.u64("the handle list")?, MAX_ID, "the last handle id")?;
        let count = r.count("the handle list", if version == 1 { 22 } else { 26 })?;
        too_many(count, records, "handles")?;
        let mut handles = Vec::with_capacity(count);
        for _ in 0..count {
            let what = "a handle";
            handles.push(HandleRecord {
                handle: at_most(r.u64(what)?, MAX_ID, "a handle id")?,
                node: at_most(r.u64(what)?, MAX_ID, "a handle's node id")?,
                is_dir: r.u8(what)? != 0,
                flags: r.u32(what)?,
                lost: r.u8(what)? != 0,
                sync_failed: match version {
                    1 => 0,
                    // An errno the guest may be told (the ones above are the kernel's own).
                    _ => {
                        let max = MAX_ERRNO as u64;
                        at_most(r.u32(what)?.into(), max, "a kept sync failure")? as i32
                    }
                },
            });
        }
        if !r.bytes.is_empty() {
            return Err(FormatError::Trailing(r.bytes.len()));
        }
        once(devices.iter().map(|d| d.0), "a device")?;
        // Devices past the largest index all share it (see `submounts`).
        let below_largest = devices.iter().map(|d| d.1).filter(|i| *i < MAX_DEVICE_INDEX);
        once(below_largest, "a device index")?;
        let ids = once(nodes.iter().map(|n| n.node), "a node id")?;
        once(handles.iter().map(|h| h.handle), "a handle id")?;
        // A handle still open is open on the root or on a node the state carries (a source
        // saves a handle whose node the guest forgot as lost), so any other is a damaged state,
        // not a file lost on the way.
        let unknown = |h: &&HandleRecord| {
            !h.lost && h.node != NodeId::ROOT.0 && ids.binary_search(&h.node).is_err()
        };
        let unknown = handles.iter().find(unknown);
        if let Some(h) = unknown {
            return Err(FormatError::Invalid { what: "the node of handle", value: h.node });
        }
        Ok(Self { session, devices, next_node, nodes, last_handle, handles })
    }
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// `u8 present`, then `u32 length` and the bytes when present.
fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.push(1);
            put32(out, b.len() as u32);
            out.extend_from_slice(b);
        }
        None => out.push(0),
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if self.bytes.len() < n {
            return Err(FormatError::Truncated(what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A `u32` count of records at least `least` bytes each, checked against what is left.
    fn count(&mut self, what: &'static str, least: usize) -> Result<usize, FormatError> {
        let count = self.u32(what)? as usize;
        let max = self.bytes.len() / least;
        if count > max {
            return Err(FormatError::Truncated(what));
        }
        Ok(count)
    }

    /// `u8 present` and, when present, `u32 length` and at most `max` bytes.
    fn bytes(&mut self, what: &'static str, max: usize) -> Result<Option<Vec<u8>>, FormatError> {
        if self.u8(what)? == 0 {
            return Ok(None);
        }
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(FormatError::TooLong { what, len, max });
        }
        Ok(Some(self.take(len, what)?.to_vec()))
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
