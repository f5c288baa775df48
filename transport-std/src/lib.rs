//! Blocking Unix-socket transport for vhu.
//!
//! This crate will own the std runtime around `vhu-core`: SCM_RIGHTS fd passing, the fd table that maps
//! core's opaque tokens to owned descriptors, guest memory assembled from core's map actions, and the
//! blocking back-end daemon and front-end client loops. It must never re-implement a protocol rule:
//! every decision about the vhost-user protocol is taken by `vhu-core`'s state machines.
//!
//! Nothing is exported yet; the protocol layer it drives lives in [`vhu_core`].

pub use vhu_core;
