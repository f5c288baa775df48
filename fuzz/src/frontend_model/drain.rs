//! Draining the front-end: every output of one step, checked against the model (requests,
//! back-end replies, events, closing and released tokens), and the state checks after it.

use vhu_core::frontend::{Frontend, Output};
use vhu_core::message::encode_status;
use vhu_core::{BackendReply, FdToken};

use super::model::{Drained, Frame, Model, Step};
use super::MAX_OUTPUTS_PER_DRAIN;

impl Model {
    pub(super) fn drain(&mut self, frontend: &mut Frontend, step: Step) -> Drained {
        let mut out = Drained::default();
        let mut buf = vec![0u8; vhu_core::limits::MAX_FRAME_SIZE];
        let mut answer_reply = match step {
            Step::Answer(code) => code,
            Step::BackendRequest { accepted: false, reply, .. } => reply,
            _ => None,
        };
        let mut answer_nack = match step {
            Step::BackendRequest { nack, .. } => nack,
            _ => None,
        };
        let mut settled = false;
        for _ in 0..MAX_OUTPUTS_PER_DRAIN {
            let Some(output) = frontend.poll_output() else {
                // A VMM that registers postcopy bases as soon as it hears of them; nothing went
                // out since they were reported.
                if frontend.is_awaiting_registration() {
                    assert!(self.bases_reported, "registration awaited for bases never reported");
                    frontend.postcopy_bases_registered().expect("bases to register");
                    self.bases_reported = false;
                    self.postcopy_ack_due = true;
                    continue;
                }
                assert!(!self.bases_reported, "bases reported but no registration awaited");
                settled = true;
                break;
            };
            if self.closed {
                match output {
                    Output::CloseFd(fd) => {
                        self.ledger.left(fd);
                        continue;
                    }
                    other => panic!("after Close only CloseFd may follow, got {other:?}"),
                }
            }
            match output {
                Output::Request { request, need_reply } => {
                    let frame = self.on_request(&request, need_reply, &mut buf);
                    out.requests.push(frame);
                }
                Output::BackendReply(reply) => {
                    let expected = answer_reply.take();
                    assert_eq!(
                        expected,
                        Some(reply.code()),
                        "back-end reply {reply:?} answers no waiting request"
                    );
                    let len = reply.encode_into(&mut buf).expect("back-end reply encodes");
                    let fds: Vec<FdToken> = reply.fds().into_iter().collect();
                    let again = BackendReply::parse(&buf[..len], &fds).expect("reply re-parses");
                    assert_eq!(again, reply);
                    for fd in &fds {
                        self.ledger.left(*fd);
                    }
                    out.backend_replies.push(Frame {
                        bytes: buf[..len].to_vec(),
                        fds: fds.len(),
                        code: reply.code().as_u32(),
                    });
                }
                Output::BackendNack { request, status } => {
                    let expected = answer_nack.take();
                    assert_eq!(expected, Some(request), "failure answer to {request} unasked for");
                    assert_ne!(status, 0, "a failure answer with status 0");
                    let len = encode_status(request, status, &mut buf).expect("answer encodes");
                    out.backend_replies.push(Frame {
                        bytes: buf[..len].to_vec(),
                        fds: 0,
                        code: request,
                    });
                }
                Output::Event(event) => {
                    let ev = self.on_event(event, step);
                    out.events.push(ev);
                }
                Output::CloseFd(fd) => self.ledger.left(fd),
                Output::Close(_) => {
                    self.closed = true;
                    self.awaiting = None;
                    self.backend_pending.clear();
                    out.closed = true;
                }
            }
        }
        assert!(settled, "the front-end never stops producing outputs");
        assert_eq!(answer_nack, None, "a waiting back-end's unknown request went unanswered");
        self.after_drain(frontend);
        out
    }

    pub(super) fn after_drain(&mut self, frontend: &Frontend) {
        self.ledger.assert_transients_left();
        assert_eq!(frontend.is_closed(), self.closed, "closed state");
        assert_eq!(frontend.is_connected(), self.connected && !self.closed, "connected state");
        assert_eq!(frontend.is_awaiting_reply(), self.awaiting.is_some(), "awaiting state");
        if self.closed || (self.connected && self.awaiting.is_none()) {
            // Nothing can be queued: every token given to the front-end is out.
            self.ledger.assert_balanced();
        }
        if !self.closed {
            let waits = self.backend_pending.iter().any(|(_, waits)| *waits);
            let idle = self.awaiting.is_none() && !waits;
            assert_eq!(frontend.is_idle(), idle, "idle state");
        }
    }
}
