//! vhu over `mio`, so the stack embeds in an existing event loop.
//!
//! This crate will own a non-blocking driver that registers vhost-user connections on a `mio::Poll`,
//! feeds partial frames through `vhu-core`'s frame decoder and reuses the std transport's fd passing and
//! guest-memory pieces. Like every transport it must not contain protocol logic.
//!
//! Nothing is exported yet; the protocol layer it drives lives in [`vhu_core`].

pub use vhu_core;
