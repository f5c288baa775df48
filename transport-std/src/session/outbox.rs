//! Messages of one socket waiting to be written: the main socket's replies and the back-end
//! channel's requests.
//!
//! A message is offered to the socket as soon as nothing is queued before it; what the socket
//! does not take (a non-blocking socket that would block, a blocking one whose send timeout ran
//! out, or any socket at all for an outbox that never waits) is queued, in order, with its
//! descriptors, for the next [`Outbox::flush`]. Writes use [`send_partial_waiting`]: the
//! descriptors go with the `sendmsg` that carries the message's first byte and a partial write
//! keeps its position. Each message carries a tag (the request a reply answers, or a back-end
//! request's id) that names it when it is fully written or fails.
//!
//! This module must not decide what is sent or when a connection closes.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::scm::{send_partial_waiting, ScmError};

/// Queued bytes beyond which the session stops reading until the peer catches up.
pub(crate) const BACKLOG_LIMIT: usize = 64 * 1024;

/// One encoded message, partly sent.
#[derive(Debug)]
struct Message<T> {
    tag: T,
    bytes: Vec<u8>,
    sent: usize,
    /// Sent with the first byte, then closed.
    fds: Vec<OwnedFd>,
}

/// Messages not yet written; see the module docs.
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    queue: VecDeque<Message<T>>,
    queued: usize,
    /// Whether a write may wait for the socket (its own send timeout bounds it).
    wait: bool,
}

/// A write failed for the message tagged `T`.
#[derive(Debug)]
pub(crate) struct SendFailed<T>(pub(crate) T, pub(crate) ScmError);

impl<T: Copy> Outbox<T> {
    pub(crate) const fn new() -> Self {
        Self { queue: VecDeque::new(), queued: 0, wait: true }
    }

    /// An outbox whose writes never wait, whatever the socket's O_NONBLOCK says: for a socket
    /// the peer sent, whose open file it may share and make blocking again.
    pub(crate) const fn never_waiting() -> Self {
        Self { queue: VecDeque::new(), queued: 0, wait: false }
    }

    /// Whether everything has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether so much waits that the session should stop reading.
    pub(crate) fn is_backlogged(&self) -> bool {
        self.queued > BACKLOG_LIMIT
    }

    /// The tag of the oldest message not fully written.
    pub(crate) fn front(&self) -> Option<T> {
        self.queue.front().map(|m| m.tag)
    }

    /// Drops every queued message (their descriptors are closed) and returns their tags.
    pub(crate) fn clear(&mut self) -> Vec<T> {
        self.queued = 0;
        self.queue.drain(..).map(|m| m.tag).collect()
    }

    /// Writes `bytes` with `fds` to `socket` now if nothing waits before it, and queues what the
    /// socket does not take. `written` hears of the message once it is fully written.
    pub(crate) fn send(
        &mut self,
        socket: Option<BorrowedFd<'_>>,
        tag: T,
        bytes: &[u8],
        mut fds: Vec<OwnedFd>,
        written: impl FnMut(T),
    ) -> Result<(), SendFailed<T>> {
        let mut sent = 0;
        if let (Some(socket), true) = (socket, self.queue.is_empty()) {
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
            match send_partial_waiting(socket, bytes, &borrowed, self.wait) {
                Ok(n) => {
                    drop(borrowed);
                    fds.clear();
                    sent = n;
                }
                Err(ScmError::Io(error)) if error.kind() == ErrorKind::WouldBlock => {}
                Err(source) => return Err(SendFailed(tag, source)),
            }
        }
        if sent >= bytes.len() {
            let mut written = written;
            written(tag);
            return Ok(());
        }
        self.queued += bytes.len() - sent;
        self.queue.push_back(Message { tag, bytes: bytes[sent..].to_vec(), sent: 0, fds });
        Ok(())
    }

    /// Writes as much as `socket` takes now; `Ok` also when it would block. `written` hears of
    /// each message fully written, in order.
    pub(crate) fn flush(
        &mut self,
        socket: BorrowedFd<'_>,
        mut written: impl FnMut(T),
    ) -> Result<(), SendFailed<T>> {
        while let Some(message) = self.queue.front_mut() {
            let borrowed: Vec<BorrowedFd<'_>> = message.fds.iter().map(AsFd::as_fd).collect();
            match send_partial_waiting(socket, &message.bytes[message.sent..], &borrowed, self.wait)
            {
                Ok(n) => {
                    drop(borrowed);
                    // The descriptors went out with the first byte; our copies are closed.
                    message.fds.clear();
                    message.sent += n;
                    self.queued = self.queued.saturating_sub(n);
                    if message.sent >= message.bytes.len() {
                        let tag = message.tag;
                        self.queue.pop_front();
                        written(tag);
                    }
                }
                Err(ScmError::Io(error)) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(source) => return Err(SendFailed(message.tag, source)),
            }
        }
        Ok(())
    }
}
