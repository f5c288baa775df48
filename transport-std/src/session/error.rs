//! Why a session ended other than by the peer hanging up between frames: the one error type of
//! every socket adapter over [`Session`](super::Session).
//!
//! This module only names failures; it must not decide which protocol errors close a connection
//! (`vhu-core`'s `Backend` does, and its decision arrives as [`SessionError::Closed`]).

use vhu_core::backend::SpecError;
use vhu_core::{FdToken, FrontendCode, ProtocolError, WireError};

/// The code of a request a reply answers, as the front-end sent it: named when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestCode(pub u32);

impl From<FrontendCode> for RequestCode {
    fn from(code: FrontendCode) -> Self {
        Self(code.as_u32())
    }
}

impl std::fmt::Display for RequestCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match FrontendCode::from_u32(self.0) {
            Some(code) => write!(f, "{code}"),
            None => write!(f, "unknown request {}", self.0),
        }
    }
}

use crate::fd_table::TokensExhausted;
use crate::scm::ScmError;

/// Why a session ended other than by the peer hanging up between frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The device's spec cannot be served.
    #[error("the device spec is invalid: {0}")]
    Spec(#[from] SpecError),
    /// The session's own resources (an eventfd, a socket option) could not be set up.
    #[error("setting up the connection failed: {0}")]
    Setup(#[source] std::io::Error),
    /// Receiving a frame failed (I/O error, malformed header, peer gone mid-frame, bad fds).
    #[error("receiving a frame failed: {0}")]
    Recv(#[source] ScmError),
    /// Sending a reply failed.
    #[error("sending the reply to {code} failed: {source}")]
    Send {
        /// The request answered.
        code: RequestCode,
        /// Why.
        #[source]
        source: ScmError,
    },
    /// The front-end did not read its replies within the adapter's time limit.
    #[error("the front-end did not read the reply to {code} in time")]
    SendTimeout {
        /// The request answered.
        code: RequestCode,
    },
    /// A reply could not be encoded.
    #[error("encoding the reply to {code} failed: {source}")]
    Encode {
        /// The request answered.
        code: RequestCode,
        /// Why.
        #[source]
        source: WireError,
    },
    /// A reply names a descriptor the session does not hold.
    #[error("the reply to {code} names descriptor {token:?}, which the session does not hold")]
    MissingFd {
        /// The request answered.
        code: RequestCode,
        /// The token.
        token: FdToken,
    },
    /// The peer sent more descriptors than the table can name.
    #[error(transparent)]
    Tokens(#[from] TokensExhausted),
    /// The back-end closed the connection for this reason.
    #[error("the back-end closed the connection: {0}")]
    Closed(ProtocolError),
    /// The back-end refused the session's completion.
    #[error("the back-end refused a completion: {0}")]
    Completion(ProtocolError),
    /// The device does not know where a queue stopped (a worker that died): GET_VRING_BASE
    /// cannot be answered truthfully.
    #[error("queue {index}: the device lost track of where it stopped; closing the connection")]
    StopLost {
        /// The queue.
        index: u8,
    },
}
