//! Errors of the wire layer: framing, parsing and encoding.
//!
//! Each variant names what was wrong and carries the values that were seen, so a log line is enough to
//! diagnose a misbehaving peer. Deciding what to do about an error (NACK or close) is not this
//! module's job.

use crate::wire::Code;

/// A frame that cannot be decoded or a message that cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer than 12 bytes: not even a header.
    #[error("truncated header: {got} of 12 bytes")]
    TruncatedHeader {
        /// Bytes present.
        got: usize,
    },
    /// The version bits of `flags` are not 1.
    #[error("unsupported protocol version {version} (flags {flags:#x})")]
    BadVersion {
        /// The version field (bits 0–1).
        version: u32,
        /// The whole flags word.
        flags: u32,
    },
    /// Reserved bits 4–31 of `flags` are set.
    #[error("reserved header flag bits set (flags {flags:#x})")]
    ReservedFlags {
        /// The whole flags word.
        flags: u32,
    },
    /// A request carries the REPLY bit.
    #[error("{code}: request has the REPLY flag set")]
    UnexpectedReplyFlag {
        /// The request.
        code: Code,
    },
    /// A reply lacks the REPLY bit or carries NEED_REPLY: replies must be exactly VERSION|REPLY.
    #[error("{code}: reply flags {flags:#x} are not VERSION|REPLY")]
    BadReplyFlags {
        /// The request the reply answers.
        code: Code,
        /// The whole flags word.
        flags: u32,
    },
    /// The request code is not one the spec defines for this channel.
    #[error("unknown request code {0}")]
    UnknownRequest(u32),
    /// The header announces a payload larger than the decoder accepts.
    #[error("payload of {size} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// Announced payload size.
        size: u32,
        /// The limit.
        max: usize,
    },
    /// The frame holds a different number of payload bytes than its header announces.
    #[error("header announces {declared} payload bytes, frame holds {got}")]
    FrameLength {
        /// The header's `size`.
        declared: u32,
        /// Payload bytes present.
        got: usize,
    },
    /// The payload size is not the one the message requires.
    #[error("{code}: payload is {got} bytes, expected {expected}")]
    PayloadSize {
        /// The message.
        code: Code,
        /// Size the message requires.
        expected: usize,
        /// Size received.
        got: usize,
    },
    /// More file descriptors than the message allows.
    #[error("{code}: {got} file descriptors, at most {max} allowed")]
    TooManyFds {
        /// The message.
        code: Code,
        /// Most the message takes.
        max: usize,
        /// Number received.
        got: usize,
    },
    /// Fewer file descriptors than the message requires.
    #[error("{code}: {got} file descriptors, {need} required")]
    MissingFds {
        /// The message.
        code: Code,
        /// Number required.
        need: usize,
        /// Number received.
        got: usize,
    },
    /// A memory table with more regions than SET_MEM_TABLE allows.
    #[error("memory table has {got} regions, at most {max} allowed")]
    TooManyRegions {
        /// Regions announced.
        got: u32,
        /// The limit.
        max: usize,
    },
    /// A vring index no vhost-user message can address (the vring-fd payloads have 8 index bits).
    #[error("{code}: vring index {index} out of range (max {max})")]
    VringIndexOutOfRange {
        /// The message.
        code: Code,
        /// The index received.
        index: u64,
        /// The largest valid index.
        max: usize,
    },
    /// A field holds a value the spec does not define.
    #[error("{code}: invalid {field} {value:#x}")]
    InvalidValue {
        /// The message.
        code: Code,
        /// The field, by its spec name.
        field: &'static str,
        /// The value received.
        value: u64,
    },
    /// A config-space transfer larger than the config space can be.
    #[error("{code}: config transfer of {size} bytes exceeds {max}")]
    ConfigTooLarge {
        /// The message.
        code: Code,
        /// Bytes requested.
        size: u32,
        /// The limit.
        max: usize,
    },
    /// The caller's buffer cannot hold the encoded message.
    #[error("buffer of {got} bytes too small, {need} needed")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// A message to encode carries more values than its wire form holds.
    #[error("{code}: {what} of {got} exceeds {max}")]
    TooLong {
        /// The message.
        code: Code,
        /// What is too long.
        what: &'static str,
        /// Length given.
        got: usize,
        /// The limit.
        max: usize,
    },
}
