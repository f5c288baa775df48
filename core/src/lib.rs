//! Sans-io vhost-user: wire types, framing and (as the crate grows) the protocol state machines.
//!
//! `vhu-core` owns the vhost-user protocol once, for every transport built on it. It performs no I/O:
//! it never opens a socket, never touches a file descriptor (descriptors are opaque [`FdToken`]s that
//! the caller owns) and never spawns a thread. It is `#![no_std]`, needs no allocator, and is
//! `#![forbid(unsafe_code)]`.
//!
//! # Layers
//!
//! - [`wire`]: `#[repr(C)]` zero-copy structs for the 12-byte header and every payload family of the
//!   vhost-user specification (front-end and back-end channels), plus the request codes.
//! - [`message`]: typed messages built from those structs by one validating `parse` per direction
//!   ([`Request::parse`], [`Reply::parse`], [`BackendRequest::parse`], [`BackendReply::parse`]); each
//!   typed message encodes into a caller-owned buffer.
//! - [`FrameDecoder`]: httparse-style framing. It asks for the 12-byte header first, then for exactly
//!   the payload the header announces, and refuses an oversized payload before a byte of it is read,
//!   so SCM_RIGHTS descriptors always attach to the message they arrived with.
//! - [`ProtocolFeatures`] and [`VirtioFeatures`]: the negotiated feature sets as bitflags.
//!
//! # Decoding contract
//!
//! Parsing never panics and never allocates. Every malformed input — a truncated header, a wrong
//! version, reserved flag bits, an unknown request code, a payload of the wrong size, the wrong number
//! of descriptors, an out-of-range vring index — yields a distinct [`WireError`] variant carrying the
//! offending values.
//!
//! ```
//! use vhu_core::{FdToken, Request, VirtioFeatures};
//!
//! let request = Request::SetFeatures(VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES);
//! let mut buf = [0u8; 64];
//! let len = request.encode_into(true, &mut buf).expect("buffer is large enough");
//! let incoming = Request::parse(&buf[..len], &[]).expect("a frame we encoded parses");
//! assert_eq!(incoming.message, request);
//! assert!(incoming.need_reply);
//! # let _ = FdToken(0);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(not(fuzzing), warn(missing_docs))]

#[cfg(feature = "std")]
extern crate std;

pub mod backend;
mod error;
mod fd;
mod features;
mod framing;
pub mod frontend;
pub mod inflight;
pub mod limits;
pub mod message;
mod protocol_error;
pub mod regions;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vring;
pub mod wire;

pub use error::WireError;
pub use fd::FdToken;
pub use features::{ProtocolFeatures, VirtioFeatures};
pub use framing::{frame_len, FrameDecoder, Progress};
pub use message::{BackendReply, BackendRequest, Incoming, Reply, Request, VringIndex};
pub use protocol_error::{disposition, reply_kind, Disposition, ProtocolError, ReplyKind};
pub use wire::{BackendCode, Code, FrontendCode};

/// The examples in README.md, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
