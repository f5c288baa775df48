//! Opaque file-descriptor tokens.
//!
//! Core never sees a real descriptor. A transport receives descriptors with a message, keeps the owned
//! descriptors in its own table and hands core one token per descriptor; core only moves tokens around.

/// A file descriptor owned by the caller, named by a token of the caller's choosing.
///
/// Core never interprets the number: it only returns it in the message, action or release that
/// hands the descriptor back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct FdToken(pub u32);
