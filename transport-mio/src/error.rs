//! The errors of the mio driver: what ends one connection ([`ConnectionError`]) and what stops
//! the server itself ([`ServerError`]).
//!
//! This module only names failures; it must not decide which protocol errors close a connection
//! (`vhu-core`'s `Backend` does, and its decision arrives as [`ConnectionError::Closed`]).

use std::path::PathBuf;

use vhu_core::backend::SpecError;
use vhu_core::{FdToken, FrontendCode, ProtocolError, WireError};
use vhu_transport_std::{ScmError, TokensExhausted};

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
    /// The device's spec cannot be served.
    #[error("the device spec is invalid: {0}")]
    Spec(#[from] SpecError),
    /// Registering the connection with the poll, or changing its interest, failed.
    #[error("registering the connection with the poll failed: {0}")]
    Register(#[source] std::io::Error),
    /// Receiving a frame failed (I/O error, malformed header, peer gone mid-frame, bad fds).
    #[error("receiving a frame failed: {0}")]
    Recv(#[source] ScmError),
    /// Sending a reply failed.
    #[error("sending the reply to {code} failed: {source}")]
    Send {
        /// The request answered.
        code: FrontendCode,
        /// Why.
        #[source]
        source: ScmError,
    },
    /// A reply could not be encoded.
    #[error("encoding the reply to {code} failed: {source}")]
    Encode {
        /// The request answered.
        code: FrontendCode,
        /// Why.
        #[source]
        source: WireError,
    },
    /// A reply names a descriptor the driver does not hold.
    #[error("the reply to {code} names descriptor {token:?}, which the driver does not hold")]
    MissingFd {
        /// The request answered.
        code: FrontendCode,
        /// The token.
        token: FdToken,
    },
    /// The peer sent more descriptors than the table can name.
    #[error(transparent)]
    Tokens(#[from] TokensExhausted),
    /// The back-end closed the connection for this reason.
    #[error("the back-end closed the connection: {0}")]
    Closed(ProtocolError),
    /// The back-end refused the driver's completion.
    #[error("the back-end refused a completion: {0}")]
    Completion(ProtocolError),
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
    /// `accept` failed with an error that retrying at once would not fix (for instance EMFILE).
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] std::io::Error),
    /// `Poll::poll` failed (only from [`crate::Server::run`]).
    #[error("polling failed: {0}")]
    Poll(#[source] std::io::Error),
}
