//! vhu over `mio`, so a vhost-user back-end embeds in an existing event loop.
//!
//! [`Server`] owns a non-blocking listening Unix socket and every connection it accepts, each with
//! its own `vhu-core` [`Backend`](vhu_core::backend::Backend), descriptor table, guest memory and
//! [`Device`](vhu_transport_std::Device) made by a factory. The user owns the `mio::Poll`: they
//! register the server under a listener token and a range of connection tokens, next to any
//! sources of their own, and hand every event to [`Server::handle_event`] (or let
//! [`Server::run`] loop for them).
//!
//! ```no_run
//! use mio::{Events, Poll, Token};
//! use vhu_transport_mio::{Handled, Server, Tokens};
//! use vhu_transport_std::Device;
//!
//! fn serve<D: Device>(new_device: impl FnMut() -> D) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut poll = Poll::new()?;
//!     let mut server = Server::bind("/tmp/vhost.sock", new_device)?;
//!     server.register(poll.registry(), Tokens { listener: Token(0), connections: 1..65 })?;
//!     let mut events = Events::with_capacity(64);
//!     loop {
//!         poll.poll(&mut events, None)?;
//!         for event in &events {
//!             match server.handle_event(event)? {
//!                 Handled::NotOurs(_token) => { /* one of the caller's own sources */ }
//!                 Handled::Ended { token, how } => eprintln!("{token:?} ended: {how:?}"),
//!                 _ => {}
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! Each connection is a [`Session`](vhu_transport_std::Session), the same engine the blocking
//! driver of `vhu-transport-std` runs, in its evented style: this crate only registers its
//! sources (the main socket, the device's request eventfd, the back-end channel socket, a
//! transfer's pipe, the eventfd of queue stops) and calls in when they are ready. Device requests
//! on the back-end channel and the front-end's answers work as they do there; device-state
//! transfers move as their pipe allows, and a queue that takes a while to stop reports later
//! ([`Device::stop_queue_then`](vhu_transport_std::Device::stop_queue_then)), so the event loop
//! never waits for either.
//!
//! Like every transport this crate must not contain protocol logic: what to answer, what is
//! valid and when to close are decided by `vhu-core`. Linux only.

mod connection;
mod error;
mod server;

pub use error::{ConnectionError, ServerError};
pub use server::{Ended, Handled, Server, Tokens};
pub use vhu_core;
pub use vhu_transport_std;
