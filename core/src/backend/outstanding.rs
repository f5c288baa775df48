//! The back-end channel's requests in flight and their results: what the driver reports back
//! about each [`Output::BackendRequest`] it carried out, and what the device learns.
//!
//! Every request a device sends gets a [`BackendRequestId`] and stays outstanding until its
//! result is known:
//!
//! - the driver put it on the channel ([`Backend::handle_backend_sent`]): a request the front-end
//!   will not answer is then [`BackendOutcome::Sent`]; one it will answer waits for the answer;
//! - the front-end answered ([`Backend::handle_backend_reply`]). Answers come in the order of the
//!   requests (the channel is one stream and the front-end serves it in order), so an answer
//!   belongs to the oldest request that awaits one; an answer to anything else breaks the
//!   channel;
//! - the channel broke ([`Backend::handle_backend_channel_lost`]) or was replaced by a new
//!   SET_BACKEND_REQ_FD: every outstanding request is [`BackendOutcome::Lost`].
//!
//! Each result comes out as [`Output::BackendResult`], in the order results became known. Which
//! requests the front-end answers: all of them when REPLY_ACK is negotiated (NEED_REPLY is set),
//! and BACKEND_SHARED_OBJECT_LOOKUP always, as its answer carries the object (spec "Back-end
//! message types").
//!
//! This module must not decide whether a request may be sent (the senders in `channel.rs` do).

use super::output::Output;
use super::queue::Item;
use super::Backend;
use crate::message::BackendReply;
use crate::wire::BackendCode;
use crate::{FdToken, ProtocolError};

/// Back-end requests that may be outstanding at once; more are refused with
/// [`ProtocolError::BackendBusy`].
pub const MAX_OUTSTANDING: usize = 8;

/// Names one back-end request, for its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendRequestId(pub u32);

/// How a back-end request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendOutcome {
    /// Sent; the front-end was not asked to answer (REPLY_ACK is not negotiated).
    Sent,
    /// The front-end answered with this status: 0 is success.
    Acked(u64),
    /// BACKEND_SHARED_OBJECT_LOOKUP's answer: a status and, on success, the object's descriptor
    /// (handed to the driver, which gives it to the device).
    SharedObject {
        /// 0 on success.
        status: u64,
        /// The object's dma-buf descriptor.
        fd: Option<FdToken>,
    },
    /// The channel broke, or was replaced, before the request was sent or answered.
    Lost,
}

impl BackendOutcome {
    /// Whether the front-end took the request: sent without an answer asked, or answered 0.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Sent | Self::Acked(0) | Self::SharedObject { status: 0, .. })
    }
}

/// The result of one back-end request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendResult {
    /// The request, as its sender returned it.
    pub id: BackendRequestId,
    /// Its message type.
    pub request: BackendCode,
    /// How it ended.
    pub outcome: BackendOutcome,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: BackendRequestId,
    code: BackendCode,
    answered: bool,
    sent: bool,
}

/// The outstanding requests, oldest first.
#[derive(Debug, Default)]
pub(super) struct Outstanding {
    entries: heapless::Vec<Entry, MAX_OUTSTANDING>,
    next_id: u32,
}

impl Outstanding {
    pub(super) const fn new() -> Self {
        Self { entries: heapless::Vec::new(), next_id: 0 }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records a new request, or refuses it when the table is full.
    pub(super) fn add(
        &mut self,
        code: BackendCode,
        answered: bool,
    ) -> Result<BackendRequestId, ProtocolError> {
        let id = BackendRequestId(self.next_id);
        let entry = Entry { id, code, answered, sent: false };
        self.entries.push(entry).map_err(|_| ProtocolError::BackendBusy(MAX_OUTSTANDING))?;
        self.next_id = self.next_id.wrapping_add(1);
        Ok(id)
    }

    fn remove(&mut self, position: usize) -> Entry {
        self.entries.remove(position)
    }
}

impl Backend {
    /// Back-end requests sent or queued whose result is not known yet.
    pub fn backend_outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether the front-end owes an answer on the back-end channel: the driver should read the
    /// channel socket.
    pub fn is_awaiting_backend_reply(&self) -> bool {
        self.outstanding.entries.iter().any(|e| e.sent && e.answered)
    }

    /// The driver put request `id` on the back-end channel. A request without an answer ends
    /// here ([`BackendOutcome::Sent`]); an unknown `id` is ignored.
    pub fn handle_backend_sent(&mut self, id: BackendRequestId) {
        let Some(position) = self.outstanding.entries.iter().position(|e| e.id == id) else {
            return;
        };
        if self.outstanding.entries[position].answered {
            self.outstanding.entries[position].sent = true;
        } else {
            let entry = self.outstanding.remove(position);
            self.push_result(entry, BackendOutcome::Sent);
        }
    }

    /// Handles one frame the front-end sent on the back-end channel, with the descriptors that
    /// came with it.
    ///
    /// # Errors
    ///
    /// A frame that does not parse, or answers no outstanding request, breaks the channel: every
    /// outstanding request is then lost (as with [`Backend::handle_backend_channel_lost`]), the
    /// frame's tokens are released, and the driver must close the channel socket.
    pub fn handle_backend_reply(
        &mut self,
        frame: &[u8],
        fds: &[FdToken],
    ) -> Result<BackendResult, ProtocolError> {
        let reply = match BackendReply::parse(frame, fds) {
            Ok(reply) => reply,
            Err(error) => return Err(self.break_channel(fds, error.into())),
        };
        let awaited = self.outstanding.entries.iter().position(|e| e.sent && e.answered);
        let Some(position) = awaited.filter(|p| self.outstanding.entries[*p].code == reply.code())
        else {
            let error = ProtocolError::UnexpectedBackendReply(reply.code());
            return Err(self.break_channel(fds, error));
        };
        let entry = self.outstanding.remove(position);
        let outcome = match reply {
            BackendReply::Ack { status, .. } => BackendOutcome::Acked(status),
            BackendReply::SharedObjectLookup { status, fd } => {
                BackendOutcome::SharedObject { status, fd }
            }
        };
        Ok(self.push_result(entry, outcome))
    }

    /// The driver could not use the back-end channel (a send or a read failed, or the peer closed
    /// it): every outstanding request is lost, and no request can be sent until a new
    /// SET_BACKEND_REQ_FD.
    pub fn handle_backend_channel_lost(&mut self) {
        self.backend_channel = false;
        self.lose_outstanding();
    }

    /// Every outstanding request is lost (the channel broke or was replaced).
    pub(super) fn lose_outstanding(&mut self) {
        while !self.outstanding.entries.is_empty() {
            let entry = self.outstanding.remove(0);
            self.push_result(entry, BackendOutcome::Lost);
        }
    }

    fn break_channel(&mut self, fds: &[FdToken], error: ProtocolError) -> ProtocolError {
        for fd in fds {
            self.outputs.push_action(super::Action::CloseFd(*fd));
        }
        self.handle_backend_channel_lost();
        error
    }

    fn push_result(&mut self, entry: Entry, outcome: BackendOutcome) -> BackendResult {
        let result = BackendResult { id: entry.id, request: entry.code, outcome };
        self.outputs.push(Item::Out(Output::BackendResult(result)));
        result
    }
}
