//! The test kit shared by vhu-core's own tests, the fuzz targets and anyone testing a driver of
//! these state machines (feature `testing`): the descriptor-token [`ledger`], the
//! [`transcript`] driver of a `Backend`, and the in-memory front-end/back-end [`pair`].
//!
//! Everything here panics on a broken expectation: it is for tests only and must never be used
//! by a transport.

pub mod ledger;
pub mod pair;
pub mod transcript;

pub use ledger::Ledger;
pub use transcript::{Out, Transcript};
