//! The back-end channel (opened by SET_BACKEND_REQ_FD): requests from the back-end, surfaced to
//! the VMM as events, and the VMM's answers, turned into the replies to send.
//!
//! Rules (spec "Back-end communication" and the BACKEND_* message descriptions): the channel exists
//! only with BACKEND_REQ acked; each message needs its feature acked; descriptors need
//! BACKEND_SEND_FD (and at most 8, checked by the parser); the front-end replies only when
//! NEED_REPLY is set, except to BACKEND_SHARED_OBJECT_LOOKUP, which is always answered. Nothing in
//! the spec makes a back-end wait for one answer before its next request (libvhost-user sends
//! CONFIG_CHANGE_MSG without waiting), so requests may follow each other: each is surfaced or
//! refused, and answered in the order they came (a refusal waits behind the VMM's answers to
//! earlier requests). This module must not act on a request itself: the VMM does.

use zerocopy::FromBytes;

use super::output::{BackendAnswer, Event, Output};
use super::queue::Item;
use super::{Frontend, FrontendError, Phase};
use crate::message::{BackendReply, BackendRequest, ShmemMapping};
use crate::wire::ReplyKind;
use crate::wire::{BackendCode, Header, HeaderFlags};
use crate::WireError;
use crate::{FdToken, ProtocolFeatures, VirtioFeatures, VringIndex};

/// A back-end request not answered yet.
#[derive(Clone, Copy, Debug)]
pub(super) enum Unanswered {
    /// Surfaced to the VMM, whose answer comes with [`Frontend::handle_backend_answer`];
    /// whether the back-end waits for it.
    Surfaced(BackendCode, bool),
    /// Refused while earlier requests were unanswered: the failure answer, sent once they
    /// are, so the back-end gets its answers in the order it asked.
    Refused(Refusal),
}

/// The failure answer to a refused back-end request.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refusal {
    /// REPLY_ACK of a known request (or SHARED_OBJECT_LOOKUP's reply, without a descriptor).
    Known(BackendCode, u64),
    /// REPLY_ACK of a request of a code core does not know.
    Unknown(u32, u64),
}

impl Refusal {
    fn output(self) -> Output<'static> {
        match self {
            Self::Known(BackendCode::SharedObjectLookup, status) => {
                Output::BackendReply(BackendReply::SharedObjectLookup { status, fd: None })
            }
            Self::Known(request, status) => {
                Output::BackendReply(BackendReply::Ack { request, status })
            }
            Self::Unknown(request, status) => Output::BackendNack { request, status },
        }
    }
}

impl Unanswered {
    /// Whether an answer is owed to the back-end for it.
    pub(super) fn owes_reply(&self) -> bool {
        matches!(self, Self::Surfaced(_, true) | Self::Refused(_))
    }
}

impl Frontend {
    /// Handles one complete request frame from the back-end channel and its descriptors.
    ///
    /// An accepted request becomes an [`Event::BackendRequest`]; answer it with
    /// [`Frontend::handle_backend_answer`]. An `Err` has already been acted on: the tokens are
    /// released, a failure reply is queued if the back-end waits for one, and a broken stream
    /// or protocol violation closes the connection.
    pub fn handle_backend_request(
        &mut self,
        frame: &[u8],
        fds: &[FdToken],
    ) -> Result<(), FrontendError> {
        if self.phase == Phase::Closed {
            self.release(fds);
            return Err(FrontendError::Closed);
        }
        let incoming = match BackendRequest::parse(frame, fds) {
            Ok(incoming) => incoming,
            Err(error) => {
                let header = Header::read_from_prefix(frame).ok().map(|(h, _)| h);
                let code = header.and_then(|h| BackendCode::from_u32(h.request.get()));
                let need_reply =
                    header.is_some_and(|h| h.flags.get() & HeaderFlags::NEED_REPLY.bits() != 0);
                if let WireError::UnknownRequest(request) = error {
                    return Err(self.refuse_unknown(request, need_reply, fds));
                }
                return Err(self.refuse_backend(code, need_reply, fds, error.into()));
            }
        };
        let request = incoming.message;
        let code = request.code();
        if let Err(error) = self.check_backend_request(&request) {
            return Err(self.refuse_backend(Some(code), incoming.need_reply, fds, error));
        }
        let waits = incoming.need_reply || code.reply_kind() != ReplyKind::AckOnly;
        if self.backend_pending.push_back(Unanswered::Surfaced(code, waits)).is_err() {
            // The VMM never answers: the session cannot keep up.
            self.release(fds);
            self.close(FrontendError::OutputOverflow);
            return Err(FrontendError::OutputOverflow);
        }
        self.queues.push_event(Event::BackendRequest { request, need_reply: waits });
        Ok(())
    }

    /// The VMM's answer to the oldest back-end request not answered yet (answers come in the
    /// order of the events). Queues the reply if the back-end waits for one; otherwise sends
    /// nothing. On `Err` a token in the answer stays with the caller.
    pub fn handle_backend_answer(&mut self, answer: BackendAnswer) -> Result<(), FrontendError> {
        if self.phase == Phase::Closed {
            return Err(FrontendError::Closed);
        }
        let Some(&Unanswered::Surfaced(code, waits)) = self.backend_pending.front() else {
            // A refused entry is never first: it goes out as soon as what precedes it does.
            return Err(FrontendError::NoBackendRequest);
        };
        let lookup = code == BackendCode::SharedObjectLookup;
        let reply = match answer {
            BackendAnswer::SharedObject(result) if lookup => Some(match result {
                Ok(fd) => BackendReply::SharedObjectLookup { status: 0, fd: Some(fd) },
                Err(status) => BackendReply::SharedObjectLookup { status: status.max(1), fd: None },
            }),
            BackendAnswer::Done(result) if !lookup => waits.then(|| BackendReply::Ack {
                request: code,
                status: result.err().map_or(0, |status| status.max(1)),
            }),
            _ => return Err(FrontendError::WrongBackendAnswer(code)),
        };
        self.backend_pending.pop_front();
        if let Some(reply) = reply {
            self.queues.push(Item::Out(Output::BackendReply(reply)));
        }
        while let Some(&Unanswered::Refused(refusal)) = self.backend_pending.front() {
            self.backend_pending.pop_front();
            self.queues.push(Item::Out(refusal.output()));
        }
        Ok(())
    }

    /// Sends the failure answer to a refused request, or, while earlier requests are not
    /// answered, keeps it to follow their answers.
    fn answer_refused(&mut self, refusal: Refusal) {
        if self.backend_pending.is_empty() {
            self.queues.push(Item::Out(refusal.output()));
        } else if self.backend_pending.push_back(Unanswered::Refused(refusal)).is_err() {
            // The VMM never answers: the session cannot keep up.
            self.close(FrontendError::OutputOverflow);
        }
    }

    /// Refuses a back-end request: releases its tokens and answers with a failure if the
    /// back-end waits, or closes if the stream is broken.
    fn refuse_backend(
        &mut self,
        code: Option<BackendCode>,
        need_reply: bool,
        fds: &[FdToken],
        error: FrontendError,
    ) -> FrontendError {
        self.release(fds);
        let status = error.status();
        match code {
            _ if error.is_stream_broken() => self.close(error),
            Some(code @ BackendCode::SharedObjectLookup) => {
                self.answer_refused(Refusal::Known(code, status));
            }
            Some(request) if need_reply => self.answer_refused(Refusal::Known(request, status)),
            _ => {}
        }
        error
    }

    /// Refuses a request whose code core does not know. Its frame was read whole (the header
    /// gives its length), so the stream is intact: the failure is answered when NEED_REPLY asks
    /// for it (spec "REPLY_ACK"; a back-end waiting for it would otherwise wait for ever), and
    /// the session goes on.
    fn refuse_unknown(&mut self, request: u32, need_reply: bool, fds: &[FdToken]) -> FrontendError {
        self.release(fds);
        let error = FrontendError::Wire(WireError::UnknownRequest(request));
        if need_reply {
            self.answer_refused(Refusal::Unknown(request, error.status()));
        }
        error
    }

    /// A mapping names bytes of a shared-memory region (spec "VHOST_USER_BACKEND_SHMEM_MAP"):
    /// some, without wrapping past the end of the address space (or, for a map, of its file),
    /// and within the region's size once GET_SHMEM_CONFIG told it (a VMM that knows its regions
    /// otherwise checks them itself). An unmap names its mapping by region range alone: its
    /// file offset means nothing. Whether a map overlaps another is the VMM's to know.
    fn check_shmem_mapping(
        &self,
        code: BackendCode,
        mapping: &ShmemMapping,
    ) -> Result<(), FrontendError> {
        let config = self.shmem.as_ref();
        let size = config.map(|config| config.memory_sizes[usize::from(mapping.shmid)].get());
        let end = mapping.shm_offset.checked_add(mapping.len);
        let file_end = mapping.fd_offset.checked_add(mapping.len);
        let fits = mapping.len != 0
            && (code == BackendCode::ShmemUnmap || file_end.is_some())
            && end.is_some_and(|end| size.is_none_or(|size| end <= size));
        if fits {
            return Ok(());
        }
        Err(FrontendError::BackendShmemOutOfRange {
            code,
            shmid: mapping.shmid,
            shm_offset: mapping.shm_offset,
            fd_offset: mapping.fd_offset,
            len: mapping.len,
            size,
        })
    }

    fn check_backend_request(&self, request: &BackendRequest) -> Result<(), FrontendError> {
        let code = request.code();
        let need = |feature: ProtocolFeatures, name: &'static str| {
            if self.is_acked(feature) {
                Ok(())
            } else {
                Err(FrontendError::BackendNotNegotiated { code, feature: name })
            }
        };
        let index = |index: VringIndex| match self.ring_count() {
            Some(rings) if u16::from(index.0) >= rings => {
                Err(FrontendError::BackendVringOutOfRange { code, index: index.0, rings })
            }
            _ => Ok(()),
        };
        need(ProtocolFeatures::BACKEND_REQ, "BACKEND_REQ")?;
        if !request.fds().is_empty() {
            need(ProtocolFeatures::BACKEND_SEND_FD, "BACKEND_SEND_FD")?;
        }
        match *request {
            BackendRequest::IotlbMsg(_) => {
                if !self.negotiated.features.contains(VirtioFeatures::ACCESS_PLATFORM) {
                    return Err(FrontendError::BackendNotNegotiated {
                        code,
                        feature: "VIRTIO_F_ACCESS_PLATFORM",
                    });
                }
                Ok(())
            }
            BackendRequest::ConfigChangeMsg => need(ProtocolFeatures::CONFIG, "CONFIG"),
            BackendRequest::VringHostNotifierMsg { index: i, size, fd, .. } => {
                need(ProtocolFeatures::HOST_NOTIFIER, "HOST_NOTIFIER")?;
                index(i)?;
                // Only an area to map has a size that matters; removing one names none.
                let page_size = self.config.host_page_size;
                if fd.is_some() && size != page_size {
                    return Err(FrontendError::BackendNotifierSize { code, size, page_size });
                }
                Ok(())
            }
            BackendRequest::VringCall { index: i } | BackendRequest::VringErr { index: i } => {
                need(ProtocolFeatures::INBAND_NOTIFICATIONS, "INBAND_NOTIFICATIONS")?;
                index(i)
            }
            BackendRequest::SharedObjectAdd(_)
            | BackendRequest::SharedObjectRemove(_)
            | BackendRequest::SharedObjectLookup(_) => {
                need(ProtocolFeatures::SHARED_OBJECT, "SHARED_OBJECT")
            }
            BackendRequest::ShmemMap { mapping, .. } | BackendRequest::ShmemUnmap(mapping) => {
                need(ProtocolFeatures::SHMEM, "SHMEM")?;
                self.check_shmem_mapping(code, &mapping)
            }
        }
    }
}
