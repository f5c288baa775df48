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

    /// The device was reset ([`Client::reset_device`]): what the back-end had the VMM keep for
    /// it (shared-memory mappings: spec "BACKEND_SHMEM_MAP", all dropped on a reset) goes.
    fn device_reset(&mut self) {}
}

impl<F> BackendHandler for F
where
    F: FnMut(&BackendRequest, Vec<OwnedFd>) -> BackendResponse + Send,
{
    fn handle(&mut self, request: &BackendRequest, fds: Vec<OwnedFd>) -> BackendResponse {
        self(request, fds)
    }
}

/// The handler a client starts with, for a VMM that maps nothing for its back-end: it
/// acknowledges what asks nothing of it (a config change, in-band notifications, a host
/// notifier going away) and refuses, with ENOTSUP, what it would have to map, store or answer
/// (a host-notifier area, a shared-memory mapping, a shared object, an IOTLB miss), so a
/// back-end never believes something was done that was not. Lookups find nothing (ENOENT).
/// Descriptors that came along are closed.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMappings;

impl BackendHandler for NoMappings {
    fn handle(&mut self, request: &BackendRequest, _fds: Vec<OwnedFd>) -> BackendResponse {
        const ENOENT: u64 = 2;
        const ENOTSUP: u64 = 95;
        match request {
            BackendRequest::SharedObjectLookup(_) => BackendResponse::SharedObject(Err(ENOENT)),
            BackendRequest::ConfigChangeMsg
            | BackendRequest::VringCall { .. }
            | BackendRequest::VringErr { .. }
            | BackendRequest::VringHostNotifierMsg { fd: None, .. } => {
                BackendResponse::Done(Ok(()))
            }
            // A host-notifier area, an IOTLB miss, a shared object, a shared-memory mapping,
            // and whatever later versions of the spec add.
            _ => BackendResponse::Done(Err(ENOTSUP)),
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
        let deadline = io::deadline_after(timeout);
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

#[cfg(test)]
mod tests {
    use vhu_core::message::{ShmemMapping, Uuid};
    use vhu_core::{FdToken, VringIndex};

    use super::*;

    fn answer(request: BackendRequest) -> Result<(), u64> {
        match NoMappings.handle(&request, Vec::new()) {
            BackendResponse::Done(result) => result,
            BackendResponse::SharedObject(result) => result.map(drop),
        }
    }

    /// The default handler never tells a back-end that something was mapped or stored.
    #[test]
    fn without_a_vmm_handler_nothing_is_claimed_done() {
        let ring = VringIndex(0);
        let mapping =
            ShmemMapping { shmid: 0, fd_offset: 0, shm_offset: 0, len: 4096, writable: true };
        let notifier =
            |fd| BackendRequest::VringHostNotifierMsg { index: ring, size: 4096, offset: 0, fd };
        for refused in [
            notifier(Some(FdToken(3))),
            BackendRequest::ShmemMap { mapping, fd: FdToken(3) },
            BackendRequest::ShmemUnmap(mapping),
            BackendRequest::SharedObjectAdd(Uuid([1; 16])),
            BackendRequest::SharedObjectRemove(Uuid([1; 16])),
            BackendRequest::SharedObjectLookup(Uuid([1; 16])),
        ] {
            assert!(answer(refused).is_err(), "{refused:?}");
        }
        for done in [
            notifier(None),
            BackendRequest::ConfigChangeMsg,
            BackendRequest::VringCall { index: ring },
            BackendRequest::VringErr { index: ring },
        ] {
            assert_eq!(answer(done), Ok(()), "{done:?}");
        }
    }
}
