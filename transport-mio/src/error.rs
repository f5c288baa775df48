//! The errors of the mio driver: what ends one connection ([`ConnectionError`]) and what stops
//! the server itself ([`ServerError`]).
//!
//! This module only names failures; it must not decide which protocol errors close a connection
//! (`vhu-core`'s `Backend` does, and its decision arrives as a [`SessionError`]).

use std::path::PathBuf;

use vhu_transport_std::SessionError;

/// Why one connection was closed (other than the peer hanging up between frames).
///
/// Only that connection ends; the server and its other connections go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Every connection token of the server's range is in use; the connection was refused.
    #[error("no free connection token: all {slots} are in use")]
    NoFreeToken {
        /// Connection tokens the server was given.
        slots: usize,
    },
    /// Registering the connection's sources with the poll, or changing their interest, failed.
    #[error("registering the connection with the poll failed: {0}")]
    Register(#[source] std::io::Error),
    /// The session ended.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// `accept` failed with an error retrying at once would not fix (EMFILE, ENFILE, ENOBUFS):
    /// the connection waits in the listen queue until a connection ends or another arrives.
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] std::io::Error),
}

/// A failure of the server itself (its listener or its registration).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the socket path failed.
    #[error("binding {}: {source}", path.display())]
    Bind {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listener given is not usable (not a listening Unix socket, or cannot be made
    /// non-blocking).
    #[error("the listener is not usable: {0}")]
    Listener(#[source] std::io::Error),
    /// The tokens given to [`crate::Server::register`] are unusable.
    #[error("invalid tokens: {0}")]
    Tokens(&'static str),
    /// The server is already registered with a poll.
    #[error("the server is already registered")]
    AlreadyRegistered,
    /// Registering the listener, or cloning the registry, failed.
    #[error("registering with the poll failed: {0}")]
    Register(#[source] std::io::Error),
    /// `Poll::poll` failed (only from [`crate::Server::run`]).
    #[error("polling failed: {0}")]
    Poll(#[source] std::io::Error),
}
