//! Errors of the blocking front-end client.
//!
//! A [`ClientError`] says which side failed: the state machine refused a call before anything was
//! sent, the back-end reported a failure the session survives, the state machine closed the
//! connection, or the socket itself failed (I/O, timeout, hang-up). This module must not decide
//! what an error costs the session: the front-end state machine decides that for protocol errors,
//! and a transport failure always ends the client.

use std::path::PathBuf;
use std::time::Duration;

use vhu_core::frontend::FrontendError;
use vhu_core::{FdToken, FrontendCode, ProtocolFeatures, VirtioFeatures, WireError};

use crate::fd_table::TokensExhausted;
use crate::scm::ScmError;

/// A failure of a [`Client`](super::Client) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting to the back-end's socket failed.
    #[error("connecting to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Creating or configuring a local resource (socket options, socketpair, eventfd, memfd,
    /// duplicating a descriptor) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The front-end state machine refused the call; nothing was sent.
    #[error("the call was refused before anything was sent: {0}")]
    Refused(#[source] FrontendError),
    /// The back-end reported a failure (a non-zero status, an empty config read); the connection
    /// goes on.
    #[error("the back-end reported a failure: {0}")]
    Failed(#[source] FrontendError),
    /// The front-end state machine closed the connection because of what the back-end sent.
    #[error("the connection was closed: {0}")]
    Closed(#[source] FrontendError),
    /// The back-end hung up.
    #[error("the back-end hung up (waiting for the reply to {waiting:?})")]
    Disconnected {
        /// The request waiting for its reply, if any.
        waiting: Option<FrontendCode>,
    },
    /// No reply came in time.
    #[error("no reply to {waiting:?} within {timeout:?}")]
    Timeout {
        /// The request waiting for its reply, if any.
        waiting: Option<FrontendCode>,
        /// The limit.
        timeout: Duration,
    },
    /// Sending a request failed.
    #[error("sending {code} failed: {source}")]
    Send {
        /// The request.
        code: FrontendCode,
        /// Why.
        #[source]
        source: ScmError,
    },
    /// Receiving a reply on the main socket failed.
    #[error("receiving a reply failed: {0}")]
    Recv(#[source] ScmError),
    /// Receiving a request on, or answering over, the back-end channel failed.
    #[error("back-end channel failed: {0}")]
    Channel(#[source] ScmError),
    /// A message could not be encoded.
    #[error("encoding a message failed: {0}")]
    Encode(#[source] WireError),
    /// An output names a descriptor the client does not hold.
    #[error("descriptor {0:?} is not in the client's table")]
    MissingFd(FdToken),
    /// The peer sent more descriptors than the table can name.
    #[error(transparent)]
    Tokens(#[from] TokensExhausted),
    /// The operation completed without the answer it waits for (the back-end replied, but the
    /// state machine emitted no such event).
    #[error("{0} completed without its answer")]
    NoAnswer(FrontendCode),
    /// A back-end state transfer went wrong on the back-end's side: more state than a load
    /// accepts, or a descriptor that is not a pipe or a socket.
    #[error("back-end state transfer: {0}")]
    Transfer(&'static str),
    /// [`Client::reconnect`](crate::Client::reconnect): the back-end no longer offers these of
    /// the saved features.
    #[error("the back-end no longer offers {features:?} {protocol_features:?}")]
    FeaturesGone {
        /// Virtio features saved but not offered now.
        features: VirtioFeatures,
        /// Protocol features saved but not offered now.
        protocol_features: ProtocolFeatures,
    },
    /// An earlier transport failure ended this client; nothing more can be sent.
    #[error("the client is broken by an earlier transport failure")]
    Broken,
    /// A guest memory region could not be created or mapped.
    #[error("guest memory region: {0}")]
    Memory(#[source] vm_memory::mmap::MmapRegionError),
}

impl ClientError {
    /// The front-end error behind a refusal, failure or close, if that is what this is.
    pub fn frontend_error(&self) -> Option<&FrontendError> {
        match self {
            Self::Refused(error) | Self::Failed(error) | Self::Closed(error) => Some(error),
            _ => None,
        }
    }

    /// Whether the error ended the connection (a call after it cannot succeed).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Refused(_) | Self::Failed(_) | Self::Memory(_) | Self::Io { .. })
    }
}
