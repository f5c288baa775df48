//! The front-end model: the requests waiting for replies, the events and frames a drain owns,
//! and the entry points feeding a [`Frontend`] one input each and draining it.

use std::collections::VecDeque;

use vhu_core::frontend::{BackendAnswer, Frontend, FrontendError, Negotiated};
use vhu_core::{
    wire, BackendCode, FdToken, FrontendCode, ProtocolFeatures, VirtioFeatures, VringIndex,
    WireError,
};

use super::Ledger;

/// A request sent and waiting for its reply, with what the reply must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Its code.
    pub(crate) code: FrontendCode,
    /// NEED_REPLY was set.
    pub(crate) need_reply: bool,
    /// What the reply must echo.
    pub(crate) detail: Detail,
}

/// The parts of a waiting request its reply is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detail {
    None,
    Vring(VringIndex),
    Config {
        offset: u32,
        size: u32,
    },
    DeviceState,
    /// A SET_MEM_TABLE sent in its postcopy form, of this many regions (in
    /// [`Model::postcopy_table`]).
    Table(u8),
    /// A GET_FEATURES sent after the handshake, whose reply confirms the request of this code
    /// sent just before it (which has no reply of its own).
    Confirms(FrontendCode),
}

pub(crate) use vhu_core::testing::pair::Ev;

/// A back-end request the front-end has not answered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// Surfaced to the VMM; whether the back-end waits for the answer.
    Surfaced(BackendCode, bool),
    /// Refused behind earlier unanswered requests: its failure answer follows theirs.
    Refused(Answered),
}

impl Unanswered {
    pub(crate) fn owes_reply(&self) -> bool {
        matches!(self, Self::Surfaced(_, true) | Self::Refused(_))
    }
}

/// An answer on the back-end channel: the reply to a known request, or the failure status of
/// an unknown one (its raw code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answered {
    Reply(BackendCode),
    Nack(u32),
}

/// The input a drain follows, which decides what may come out.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    /// A VMM call.
    Call,
    /// A reply, accepted (`Some` with the request it answered) or refused (`None`).
    Reply(Option<Sent>),
    /// A back-end request, accepted or refused; `reply` is the code a refusal may answer,
    /// `nack` the raw code of an unknown request the back-end waits for an answer to.
    BackendRequest { accepted: bool, reply: Option<BackendCode>, nack: Option<u32> },
    /// An answer to a back-end request: the answers it must send, in order (its own, if the
    /// back-end waits, then those of requests refused behind it), in `Model::answers_due`.
    Answer,
}

/// One request the front-end emitted, encoded, with its tokens.
#[derive(Debug)]
pub(crate) struct Frame {
    /// The encoded frame.
    pub(crate) bytes: Vec<u8>,
    /// How many tokens travel with it.
    pub(crate) fds: usize,
    /// The request code (a front-end code for a request, a back-end code for a channel reply).
    pub(crate) code: u32,
}

/// What one drain produced, owned.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    /// Requests for the main socket, in order.
    pub(crate) requests: Vec<Frame>,
    /// Replies for the back-end channel, in order.
    pub(crate) backend_replies: Vec<Frame>,
    /// Events for the VMM, in order.
    pub(crate) events: Vec<Ev>,
    /// The front-end closed.
    pub(crate) closed: bool,
}

/// The model of one front-end connection: what it was given, what it sent, what it waits for.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// The front-end's tokens.
    pub(crate) ledger: Ledger,
    /// The request on the wire that waits for its reply.
    pub(crate) awaiting: Option<Sent>,
    /// The last SET_PROTOCOL_FEATURES sent acked REPLY_ACK.
    pub(super) reply_ack: bool,
    /// The protocol features the last SET_PROTOCOL_FEATURES sent.
    pub(super) sent_protocol: Option<ProtocolFeatures>,
    /// The features the last SET_FEATURES sent.
    pub(crate) sent_features: Option<VirtioFeatures>,
    /// [`Event::Connected`](vhu_core::frontend::Event::Connected) was emitted.
    pub(crate) connected: bool,
    /// [`Output::Close`](vhu_core::frontend::Output::Close) was emitted.
    pub(crate) closed: bool,
    /// The outcome the handshake reported.
    pub(crate) negotiated: Option<Negotiated>,
    /// Back-end requests surfaced and not answered yet, and whether the back-end waits.
    pub(crate) backend_pending: VecDeque<Unanswered>,
    /// What the next [`Step::Answer`] drain must send.
    pub(super) answers_due: VecDeque<Answered>,
    /// POSTCOPY_LISTEN was acknowledged and POSTCOPY_END not since: SET_MEM_TABLE goes in its
    /// postcopy form.
    pub(super) postcopy_listening: bool,
    /// Postcopy bases were reported and wait for the VMM to register them.
    pub(super) bases_reported: bool,
    /// The VMM registered postcopy bases: the acknowledgement must be the next request.
    pub(super) postcopy_ack_due: bool,
    /// The size of the last CREATE_CRYPTO_SESSION sent; its answer has the same.
    pub(crate) crypto_sent: usize,
    /// The regions of the last SET_MEM_TABLE sent in its postcopy form.
    pub(crate) postcopy_table: Vec<wire::MemoryRegion>,
    /// The last request sent, when it waited for no reply.
    pub(super) unawaited: Option<FrontendCode>,
    /// SET_FEATURES turned dirty logging on without REPLY_ACK: the next request must be the
    /// GET_FEATURES whose reply confirms it (spec "Migration": the VMM must not go on before).
    pub(super) confirm_due: bool,
}

impl Model {
    /// After a VMM call that was given `fds`: they entered if it succeeded.
    pub(crate) fn call(
        &mut self,
        frontend: &mut Frontend,
        fds: &[FdToken],
        result: Result<(), FrontendError>,
    ) -> Drained {
        if result.is_ok() {
            for fd in fds {
                self.ledger.enter(*fd, false);
            }
        }
        self.drain(frontend, Step::Call)
    }

    /// Feeds a reply frame that arrives with `nfds` descriptors.
    pub(crate) fn reply(&mut self, frontend: &mut Frontend, frame: &[u8], nfds: usize) -> Drained {
        let fds = self.ledger.arriving(nfds);
        let awaited = self.awaiting;
        let result = frontend.handle_reply(frame, &fds);
        let step = match result {
            Ok(()) => {
                let sent = awaited.expect("a reply was accepted while no request waits");
                let code = frame_code(frame);
                assert_eq!(code, Some(sent.code.as_u32()), "accepted a reply to another request");
                self.awaiting = None;
                Step::Reply(Some(sent))
            }
            Err(_) => Step::Reply(None),
        };
        let drained = self.drain(frontend, step);
        if result.is_err() {
            assert!(self.closed, "a refused reply must close the connection: {result:?}");
        }
        drained
    }

    /// Feeds a back-end channel request frame that arrives with `nfds` descriptors.
    pub(crate) fn backend_request(
        &mut self,
        frontend: &mut Frontend,
        frame: &[u8],
        nfds: usize,
    ) -> Drained {
        let fds = self.ledger.arriving(nfds);
        // Answers go out in the order of the requests: a refusal behind unanswered requests
        // waits for theirs.
        let behind = !self.backend_pending.is_empty();
        let result = frontend.handle_backend_request(frame, &fds);
        // A refusal answers only if the header names a code and the back-end waits.
        let code = frame_code(frame).and_then(BackendCode::from_u32);
        let flags = frame.get(4..8).and_then(|f| f.try_into().ok()).map(u32::from_ne_bytes);
        let need_reply = flags.is_some_and(|f| f & 0x8 != 0);
        let waits = need_reply || code == Some(BackendCode::SharedObjectLookup);
        // A well-formed frame of a code the front-end does not know leaves the stream intact:
        // a back-end that waits gets a failure status (REPLY_ACK), and the session goes on.
        let unknown = match result {
            Err(FrontendError::Wire(WireError::UnknownRequest(raw))) => {
                assert_eq!(frame_code(frame), Some(raw), "the unknown code is the frame's");
                assert!(BackendCode::from_u32(raw).is_none(), "{raw} is a known code");
                assert!(!self.closed, "an unknown back-end request closed the session");
                Some(raw)
            }
            _ => None,
        };
        let reply = code.filter(|_| waits && !self.closed);
        let nack = unknown.filter(|_| need_reply);
        let step = if behind {
            Step::BackendRequest { accepted: result.is_ok(), reply: None, nack: None }
        } else {
            Step::BackendRequest { accepted: result.is_ok(), reply, nack }
        };
        // A refusal behind unanswered requests waits for their answers: it is pending before
        // the drain checks the front-end's idle state (a close in the drain clears it).
        if behind && result.is_err() && !self.closed {
            let owed = nack.map(Answered::Nack).or(reply.map(Answered::Reply));
            if let Some(owed) = owed {
                self.backend_pending.push_back(Unanswered::Refused(owed));
            }
        }
        let drained = self.drain(frontend, step);
        if result.is_ok() {
            let surfaced =
                drained.events.iter().filter(|e| matches!(e, Ev::BackendRequest { .. })).count();
            assert_eq!(surfaced, 1, "an accepted back-end request is one event");
        }
        drained
    }

    /// The VMM answers the oldest back-end request.
    pub(crate) fn answer(&mut self, frontend: &mut Frontend, answer: BackendAnswer) -> Drained {
        let front = self.backend_pending.front().copied();
        let result = frontend.handle_backend_answer(answer);
        let mut due = VecDeque::new();
        if result.is_ok() {
            let Some(Unanswered::Surfaced(code, waits)) = front else {
                panic!("an answer was accepted for {front:?}");
            };
            self.backend_pending.pop_front();
            if let BackendAnswer::SharedObject(Ok(fd)) = answer {
                assert_eq!(code, BackendCode::SharedObjectLookup, "fd answer to {code}");
                self.ledger.enter(fd, false);
            }
            if waits {
                due.push_back(Answered::Reply(code));
            }
            while let Some(Unanswered::Refused(owed)) = self.backend_pending.front().copied() {
                self.backend_pending.pop_front();
                due.push_back(owed);
            }
        }
        let count = due.len();
        self.answers_due = due;
        let drained = self.drain(frontend, Step::Answer);
        assert_eq!(drained.backend_replies.len(), count, "answers owed to the back-end");
        drained
    }

    /// Ends the connection: a frame that cannot parse closes it, then every token must be out.
    pub(crate) fn finish(&mut self, frontend: &mut Frontend) {
        let _ = self.reply(frontend, &[], 0);
        assert!(self.closed && frontend.is_closed(), "a malformed reply must close");
        self.ledger.assert_balanced();
    }
}

/// The request code in a frame's header, if it has one.
fn frame_code(frame: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = frame.get(..4)?.try_into().ok()?;
    Some(u32::from_ne_bytes(bytes))
}
