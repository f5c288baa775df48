//! The replies of one connection waiting to be written to a non-blocking socket.
//!
//! A reply is encoded when `Backend` emits it and its descriptors are taken out of the
//! connection's [`FdTable`] at once (so the table stays balanced whatever happens to the socket).
//! [`Outbox::flush`] writes with [`send_partial`]: the descriptors go with the `sendmsg` that
//! carries the message's first byte, a partial write keeps its position, and `WouldBlock` leaves
//! the rest queued, in order, for the next writable event. The connection stops reading while
//! [`Outbox::is_backlogged`], so a peer that never reads cannot grow the queue without bound.
//!
//! This module must not decide what is sent or when a connection closes.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use vhu_core::limits::MAX_FRAME_SIZE;
use vhu_core::{FrontendCode, Reply};
use vhu_transport_std::{send_partial, FdTable, ScmError};

use crate::error::ConnectionError;

/// Queued bytes beyond which the connection stops reading until the peer catches up.
const BACKLOG_LIMIT: usize = 64 * 1024;

/// One encoded reply, partly sent.
#[derive(Debug)]
struct Message {
    code: FrontendCode,
    bytes: Vec<u8>,
    sent: usize,
    /// Sent with the first byte, then closed.
    fds: Vec<OwnedFd>,
}

/// Replies not yet written; see the module docs.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<Message>,
    queued: usize,
    scratch: Box<[u8; MAX_FRAME_SIZE]>,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Self { queue: VecDeque::new(), queued: 0, scratch: Box::new([0; MAX_FRAME_SIZE]) }
    }

    /// Whether everything has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether so much waits that the connection should stop reading.
    pub(crate) fn is_backlogged(&self) -> bool {
        self.queued > BACKLOG_LIMIT
    }

    /// Encodes `reply` and queues it with its descriptors, taken out of `fds`.
    pub(crate) fn push(
        &mut self,
        reply: &Reply<'_>,
        fds: &mut FdTable,
    ) -> Result<(), ConnectionError> {
        let code = reply.code();
        let len = reply
            .encode_into(&mut self.scratch[..])
            .map_err(|source| ConnectionError::Encode { code, source })?;
        let mut owned = Vec::new();
        for token in reply.fds() {
            owned.push(fds.take(token).ok_or(ConnectionError::MissingFd { code, token })?);
        }
        let bytes = self.scratch[..len].to_vec();
        self.queued += bytes.len();
        self.queue.push_back(Message { code, bytes, sent: 0, fds: owned });
        Ok(())
    }

    /// Writes as much as the socket takes now; `Ok` also when it would block.
    pub(crate) fn flush(&mut self, socket: impl AsFd) -> Result<(), ConnectionError> {
        let socket = socket.as_fd();
        while let Some(message) = self.queue.front_mut() {
            let borrowed: Vec<BorrowedFd<'_>> = message.fds.iter().map(AsFd::as_fd).collect();
            match send_partial(socket, &message.bytes[message.sent..], &borrowed) {
                Ok(n) => {
                    drop(borrowed);
                    // The descriptors went out with the first byte; our copies are closed.
                    message.fds.clear();
                    message.sent += n;
                    self.queued = self.queued.saturating_sub(n);
                    if message.sent >= message.bytes.len() {
                        self.queue.pop_front();
                    }
                }
                Err(ScmError::Io(error)) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(source) => return Err(ConnectionError::Send { code: message.code, source }),
            }
        }
        Ok(())
    }
}
