//! Shared plumbing of the typed parsers and encoders: header checks, payload views, fd-count rules
//! and the encoder over a caller-owned buffer.
//!
//! Everything here is crate-private; it holds no protocol knowledge beyond the header layout.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::limits::HEADER_SIZE;
use crate::wire::{Code, Header, HeaderFlags, U64};
use crate::{FdToken, WireError};

/// A header that passed the checks every frame shares.
pub(crate) struct RawFrame<'a> {
    pub(crate) request: u32,
    pub(crate) flags: HeaderFlags,
    pub(crate) payload: &'a [u8],
}

/// Splits a frame into header and payload and checks version, reserved bits and length.
pub(crate) fn split_frame(frame: &[u8]) -> Result<RawFrame<'_>, WireError> {
    let (header, payload) = Header::read_from_prefix(frame)
        .map_err(|_| WireError::TruncatedHeader { got: frame.len() })?;
    let flags = header.flags.get();
    check_version_and_reserved(flags)?;
    let declared = header.size.get();
    if payload.len() != declared as usize {
        return Err(WireError::FrameLength { declared, got: payload.len() });
    }
    Ok(RawFrame {
        request: header.request.get(),
        flags: HeaderFlags::from_bits_truncate(flags),
        payload,
    })
}

/// The version bits must be 1 (spec "Header"): a frame of another version cannot be trusted
/// to be framed as this one.
pub(crate) fn check_version(flags: u32) -> Result<(), WireError> {
    let version = flags & HeaderFlags::VERSION_MASK;
    if version != 1 {
        return Err(WireError::BadVersion { version, flags });
    }
    Ok(())
}

/// The version bits must be 1 and the reserved bits 4–31 zero (spec "Header"). A message with
/// reserved bits is framed like any other: it is refused on its own, the stream goes on.
pub(crate) fn check_version_and_reserved(flags: u32) -> Result<(), WireError> {
    check_version(flags)?;
    if flags & HeaderFlags::RESERVED_MASK != 0 {
        return Err(WireError::ReservedFlags { flags });
    }
    Ok(())
}

/// Checks that a request frame does not carry the REPLY bit.
pub(crate) fn check_request_flags(code: Code, flags: HeaderFlags) -> Result<bool, WireError> {
    if flags.contains(HeaderFlags::REPLY) {
        return Err(WireError::UnexpectedReplyFlag { code });
    }
    Ok(flags.contains(HeaderFlags::NEED_REPLY))
}

/// Checks that a reply frame's flags are exactly VERSION|REPLY (QEMU's front-end requires it).
pub(crate) fn check_reply_flags(code: Code, flags: HeaderFlags) -> Result<(), WireError> {
    if flags != HeaderFlags::VERSION_1 | HeaderFlags::REPLY {
        return Err(WireError::BadReplyFlags { code, flags: flags.bits() });
    }
    Ok(())
}

/// A payload being parsed, with the message it belongs to for error context.
#[derive(Clone, Copy)]
pub(crate) struct Payload<'a> {
    pub(crate) code: Code,
    pub(crate) bytes: &'a [u8],
}

impl<'a> Payload<'a> {
    pub(crate) fn size_error(&self, expected: usize) -> WireError {
        WireError::PayloadSize { code: self.code, expected, got: self.bytes.len() }
    }

    /// The payload must be empty.
    pub(crate) fn empty(&self) -> Result<(), WireError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.size_error(0))
        }
    }

    /// The payload must be exactly one `T`.
    pub(crate) fn exact<T>(&self) -> Result<&'a T, WireError>
    where
        T: FromBytes + KnownLayout + Immutable + Unaligned,
    {
        T::ref_from_bytes(self.bytes).map_err(|_| self.size_error(core::mem::size_of::<T>()))
    }

    /// The payload must be exactly one `u64`.
    pub(crate) fn u64(&self) -> Result<u64, WireError> {
        self.exact::<U64>().map(|v| v.get())
    }

    /// The payload starts with a `T`; returns it and the rest.
    pub(crate) fn prefix<T>(&self) -> Result<(&'a T, &'a [u8]), WireError>
    where
        T: FromBytes + KnownLayout + Immutable + Unaligned,
    {
        T::ref_from_prefix(self.bytes).map_err(|_| self.size_error(core::mem::size_of::<T>()))
    }

    pub(crate) fn invalid(&self, field: &'static str, value: u64) -> WireError {
        WireError::InvalidValue { code: self.code, field, value }
    }
}

/// The message takes exactly `n` descriptors.
pub(crate) fn fds_exact(code: Code, fds: &[FdToken], n: usize) -> Result<(), WireError> {
    match fds.len() {
        got if got < n => Err(WireError::MissingFds { code, need: n, got }),
        got if got > n => Err(WireError::TooManyFds { code, max: n, got }),
        _ => Ok(()),
    }
}

/// The message takes exactly one descriptor.
pub(crate) fn one_fd(code: Code, fds: &[FdToken]) -> Result<FdToken, WireError> {
    fds_exact(code, fds, 1)?;
    Ok(fds[0])
}

/// The message takes zero or one descriptor.
pub(crate) fn optional_fd(code: Code, fds: &[FdToken]) -> Result<Option<FdToken>, WireError> {
    match fds {
        [] => Ok(None),
        [fd] => Ok(Some(*fd)),
        _ => Err(WireError::TooManyFds { code, max: 1, got: fds.len() }),
    }
}

/// Writes one message into a caller-owned buffer; keeps counting past the end so the error reports
/// the full size needed.
pub(crate) struct Encoder<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Encoder<'b> {
    pub(crate) fn new(buf: &'b mut [u8], request: u32, flags: HeaderFlags) -> Self {
        let mut encoder = Self { buf, len: 0 };
        encoder.put(Header::new(request, flags, 0).as_bytes());
        encoder
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
        }
        self.len = end;
    }

    pub(crate) fn put_value<T: IntoBytes + Immutable>(&mut self, value: &T) {
        self.put(value.as_bytes());
    }

    pub(crate) fn put_u64(&mut self, value: u64) {
        self.put(&value.to_ne_bytes());
    }

    pub(crate) fn put_zeros(&mut self, n: usize) {
        let end = self.len + n;
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.fill(0);
        }
        self.len = end;
    }

    /// Patches the header's size and returns the frame length.
    pub(crate) fn finish(self) -> Result<usize, WireError> {
        if self.len > self.buf.len() {
            return Err(WireError::BufferTooSmall { need: self.len, got: self.buf.len() });
        }
        // The payload length of any message we encode is bounded by MAX_PAYLOAD_SIZE-sized inputs,
        // far below u32::MAX; saturate rather than wrap should that ever change.
        let size = u32::try_from(self.len - HEADER_SIZE).unwrap_or(u32::MAX);
        self.buf[8..12].copy_from_slice(&size.to_ne_bytes());
        Ok(self.len)
    }
}
