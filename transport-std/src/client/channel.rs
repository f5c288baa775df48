//! The VMM's side of the back-end channel (SET_BACKEND_REQ_FD): who answers the back-end's
//! requests, and serving the channel while no call is in progress.
//!
//! The client creates the socket pair when the caller wants BACKEND_REQ and passes one end in the
//! handshake; the state machine decides whether it is sent. Every request that arrives — while a
//! call waits for its reply or in [`Client::poll_backend_requests`] — goes to the
//! [`BackendHandler`] at once, its answer goes back to the state machine, and the reply it emits
//! (if the back-end asked for one) is sent. This module must not check the requests (the state
//! machine refuses what was not negotiated) nor decide when a reply is sent.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use vhu_core::BackendRequest;

use super::{io, Client, ClientError};

/// The VMM's answer to a back-end request, with a real descriptor.
#[derive(Debug)]
pub enum BackendResponse {
    /// Every request but a shared-object lookup: success, or a non-zero failure status.
    Done(Result<(), u64>),
    /// BACKEND_SHARED_OBJECT_LOOKUP: the object's dma-buf descriptor, or a failure status.
    SharedObject(Result<OwnedFd, u64>),
}

/// Answers the back-end's requests; called on the thread that drives the client.
///
/// `fds` are the descriptors that came with the request (a host-notifier area, a shared-memory
/// fd), now owned by the handler. An answer of the wrong kind for the request is replaced by a
/// failure status.
pub trait BackendHandler: Send {
    /// Acts on `request` and answers it.
    fn handle(&mut self, request: &BackendRequest, fds: Vec<OwnedFd>) -> BackendResponse;
}

impl<F> BackendHandler for F
where
    F: FnMut(&BackendRequest, Vec<OwnedFd>) -> BackendResponse + Send,
{
    fn handle(&mut self, request: &BackendRequest, fds: Vec<OwnedFd>) -> BackendResponse {
        self(request, fds)
    }
}

/// The handler a client starts with: acknowledges every request (a config change, in-band
/// notifications) and fails lookups, closing any descriptor that came along.
#[derive(Clone, Copy, Debug, Default)]
pub struct AckAll;

impl BackendHandler for AckAll {
    fn handle(&mut self, request: &BackendRequest, _fds: Vec<OwnedFd>) -> BackendResponse {
        const ENOENT: u64 = 2;
        match request {
            BackendRequest::SharedObjectLookup(_) => BackendResponse::SharedObject(Err(ENOENT)),
            _ => BackendResponse::Done(Ok(())),
        }
    }
}

/// A back-end request the client received and handed to its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// The request (its tokens were turned into the descriptors the handler got).
    pub request: BackendRequest,
    /// Whether the back-end waited for the answer.
    pub need_reply: bool,
}

impl Client {
    /// Replaces the handler of back-end requests.
    pub fn set_backend_handler(&mut self, handler: impl BackendHandler + 'static) {
        self.io.handler = Box::new(handler);
    }

    /// Whether the back-end channel is open (BACKEND_REQ was negotiated and the back-end has not
    /// closed its end).
    pub fn has_backend_channel(&self) -> bool {
        self.io.channel.is_some()
    }

    /// The back-end channel's socket, for a VMM's own event loop: when it is readable, call
    /// [`Client::serve_backend_channel`]. `None` when no channel is open.
    pub fn backend_channel_fd(&self) -> Option<BorrowedFd<'_>> {
        self.io.channel.as_ref().map(|c| c.sock.as_fd())
    }

    /// Handles the back-end requests that have arrived, without waiting for more, and returns
    /// every request handled since the last call (see [`Client::poll_backend_requests`]).
    pub fn serve_backend_channel(&mut self) -> Result<Vec<ReceivedRequest>, ClientError> {
        if self.io.channel.is_some() {
            io::serve_channel(&mut self.frontend, &mut self.io, Duration::ZERO)?;
        }
        Ok(self.io.log.drain(..).collect())
    }

    /// Serves the back-end channel for up to `timeout`, returning as soon as at least one request
    /// was handled, and returns every request handled since the last call (including those that
    /// arrived while a call was waiting for its reply; the newest 256 are kept). Returns at once
    /// when there is no channel or requests were already handled.
    pub fn poll_backend_requests(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<ReceivedRequest>, ClientError> {
        let deadline = Instant::now() + timeout;
        while self.io.log.is_empty() && self.io.channel.is_some() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            io::serve_channel(&mut self.frontend, &mut self.io, remaining)?;
        }
        Ok(self.io.log.drain(..).collect())
    }
}
