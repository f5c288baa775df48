//! The front-end's two bounded queues: requests waiting to be sent ([`Queued`]) and the other
//! outputs in the order the caller must act on them ([`Item`]).
//!
//! This module owns order and capacity only; it never decides what is sent, when a reply is
//! expected, or what a reply means.

use heapless::Deque;

use super::output::{Event, Output};
use crate::limits::{MAX_FDS_PER_MSG, MAX_OUTPUTS};
use crate::message::{ConfigFlags, Request};
use crate::wire::FrontendCode;
use crate::FdToken;

/// Most requests the front-end holds before they are sent. Requests wait while one with a reply
/// is outstanding; with REPLY_ACK every request waits for the previous ack, so a VMM starting many
/// rings at once gets [`QueueFull`](super::FrontendError::QueueFull) and continues after the
/// replies arrive.
pub const MAX_QUEUED_REQUESTS: usize = 64;

/// A request waiting to be sent. Requests with borrowed data keep it in the front-end's staging
/// buffers, one message each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Queued {
    /// A request whose data is all inline.
    Inline(Request<'static>),
    /// SET_MEM_TABLE of the staged table.
    MemTable,
    /// SET_CONFIG of the staged bytes.
    SetConfig { offset: u32, flags: ConfigFlags },
    /// CREATE_CRYPTO_SESSION of the staged session.
    CryptoSession,
    /// GET_FEATURES sent for its reply alone: without REPLY_ACK, the one way to know the
    /// back-end handled the request before it (of this code), which has no reply of its own.
    Barrier(FrontendCode),
}

impl Queued {
    pub(super) fn code(&self) -> FrontendCode {
        match self {
            Self::Inline(request) => request.code(),
            Self::MemTable => FrontendCode::SetMemTable,
            Self::SetConfig { .. } => FrontendCode::SetConfig,
            Self::CryptoSession => FrontendCode::CreateCryptoSession,
            Self::Barrier(_) => FrontendCode::GetFeatures,
        }
    }

    /// The tokens travelling with the request; those of SET_MEM_TABLE are in `table_fds`.
    pub(super) fn fds(&self, table_fds: &[FdToken]) -> heapless::Vec<FdToken, MAX_FDS_PER_MSG> {
        match self {
            Self::Inline(request) => request.fds(),
            Self::MemTable => table_fds.iter().copied().take(MAX_FDS_PER_MSG).collect(),
            Self::SetConfig { .. } | Self::CryptoSession | Self::Barrier(_) => heapless::Vec::new(),
        }
    }
}

/// An output other than a request; `ConfigRead`, `ShmemConfig`, `PostcopyBases` and
/// `CryptoSession` borrow the front-end's buffers when polled.
#[derive(Debug)]
pub(super) enum Item {
    Out(Output<'static>),
    ConfigRead {
        offset: u32,
    },
    /// GET_SHMEM_CONFIG's reply, kept in the front-end.
    ShmemConfig,
    /// The bases of a postcopy SET_MEM_TABLE reply, kept in the front-end.
    PostcopyBases,
    /// The session a CREATE_CRYPTO_SESSION reply returned, kept in the front-end.
    CryptoSession,
}

/// The request queue and the output queue.
#[derive(Debug)]
pub(super) struct Queues {
    pub(super) requests: Deque<Queued, MAX_QUEUED_REQUESTS>,
    outputs: Deque<Item, MAX_OUTPUTS>,
    overflowed: bool,
}

impl Queues {
    pub(super) const fn new() -> Self {
        Self { requests: Deque::new(), outputs: Deque::new(), overflowed: false }
    }

    /// Checks that `n` more requests fit.
    pub(super) fn reserve(&self, n: usize) -> Result<(), super::FrontendError> {
        if self.requests.capacity() - self.requests.len() < n {
            return Err(super::FrontendError::QueueFull {
                needed: n,
                capacity: MAX_QUEUED_REQUESTS,
            });
        }
        Ok(())
    }

    /// Queues a request after [`Queues::reserve`] made room for it.
    pub(super) fn push_request(&mut self, queued: Queued) {
        // Cannot fail after reserve(); should a caller skip it, the overflow closes the session.
        if self.requests.push_back(queued).is_err() {
            self.overflowed = true;
        }
    }

    /// Whether a request of `code` waits in the queue.
    pub(super) fn is_queued(&self, code: FrontendCode) -> bool {
        self.requests.iter().any(|q| q.code() == code)
    }

    pub(super) fn push(&mut self, item: Item) {
        if self.outputs.push_back(item).is_err() {
            // Only a caller that never drains gets here; the session is unusable.
            self.overflowed = true;
        }
    }

    pub(super) fn push_event(&mut self, event: Event<'static>) {
        self.push(Item::Out(Output::Event(event)));
    }

    pub(super) fn push_close_fd(&mut self, fd: FdToken) {
        self.push(Item::Out(Output::CloseFd(fd)));
    }

    /// Takes the overflow flag.
    pub(super) fn take_overflow(&mut self) -> bool {
        core::mem::take(&mut self.overflowed)
    }

    pub(super) fn pop(&mut self) -> Option<Item> {
        self.outputs.pop_front()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.outputs.is_empty() && self.requests.is_empty()
    }

    /// Drops every output not yet polled (after an overflow).
    pub(super) fn clear_outputs(&mut self) {
        self.outputs.clear();
    }
}
