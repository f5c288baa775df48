//! Draining the front-end: every output of one step, checked against the model (requests,
//! back-end replies, events, closing and released tokens), and the state checks after it.

use vhu_core::frontend::{Frontend, Output};
use vhu_core::message::encode_status;
use vhu_core::{BackendReply, FdToken};

use super::model::{Answered, Detail, Drained, Ev, Frame, Model, Sent, Step, Unanswered};
use super::MAX_OUTPUTS_PER_DRAIN;

impl Model {
    pub(super) fn drain(&mut self, frontend: &mut Frontend, step: Step) -> Drained {
        let mut out = Drained::default();
        let mut buf = vec![0u8; vhu_core::limits::MAX_FRAME_SIZE];
        // The answers this step may send, in order; a refusal's reply is optional (a broken
        // stream closes instead), an unknown request's failure status and an answer's are not.
        let mut due: std::collections::VecDeque<Answered> = match step {
            Step::Answer => std::mem::take(&mut self.answers_due),
            Step::BackendRequest { accepted, reply, nack } => {
                let reply = reply.filter(|_| !accepted).map(Answered::Reply);
                reply.into_iter().chain(nack.map(Answered::Nack)).collect()
            }
            _ => Default::default(),
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
                    assert_eq!(
                        due.pop_front(),
                        Some(Answered::Reply(reply.code())),
                        "back-end reply {reply:?} is not the answer due next"
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
                    assert_eq!(
                        due.pop_front(),
                        Some(Answered::Nack(request)),
                        "failure answer to {request} is not the answer due next"
                    );
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
        if let Step::Reply(Some(Sent { detail: Detail::Confirms(code), .. })) = step {
            // A confirmation the front-end took confirms its request once.
            let done = out.events.iter().filter(|ev| **ev == Ev::Done(code)).count();
            assert!(out.closed || done == 1, "{code} confirmed {done} times");
        }
        let unanswered = due.iter().any(|a| matches!(a, Answered::Nack(_)));
        assert!(!unanswered, "a waiting back-end's unknown request went unanswered: {due:?}");
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
            let waits = self.backend_pending.iter().any(Unanswered::owes_reply);
            let idle = self.awaiting.is_none() && !waits;
            assert_eq!(frontend.is_idle(), idle, "idle state");
        }
    }
}
