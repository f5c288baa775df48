//! Fuzz-target bodies for vhu, shared by the cargo-fuzz binaries and by plain tests.
//!
//! Each function takes arbitrary input and checks the invariants its target promises; it panics only
//! when an invariant is broken. The functions contain no fuzzer glue, so `cargo test` can replay any
//! input through them without a fuzzer.

pub mod backend_session;
pub mod frame_decode;
pub mod frontend_backend_pair;
pub mod frontend_session;
pub mod fuse_request;
pub mod virtq_chain;

mod cursor;
mod frontend_model;
mod memfs;
#[cfg(test)]
mod replay;
