//! What a refused SET_FEATURES leaves of the front-end's view: the view it had before, when the
//! back-end answers with a failure status (REPLY_ACK).
//!
//! The front-end records what a request changes when it queues it (the acked features, whether
//! dirty logging is on), so that what the VMM queues next is checked against the state the
//! request will make. A back-end that refuses SET_FEATURES keeps the features it had, and the
//! view must follow it: [`Frontend::negotiated`] would otherwise hand a later restore features
//! the back-end refused, and [`Frontend::is_logging`] report logging the back-end never began.
//! The view before is kept while such a request is the only one waiting; should anything else
//! change the view meanwhile (a ring started or stopped, a reset), it is dropped and a refusal
//! leaves the view as the requests left it. This module must not decide whether a request is
//! sent or answered.

use super::Frontend;
use crate::wire::FrontendCode;
use crate::VirtioFeatures;

/// The front-end's view before a request that changes it, and the request's code.
#[derive(Clone, Copy, Debug)]
pub(super) struct Before {
    code: FrontendCode,
    logging: bool,
    features: VirtioFeatures,
    features_forgotten: bool,
}

impl Frontend {
    /// Called before a request of `code` changes the view: keeps the view when the request will
    /// be answered with a status and nothing else waits; otherwise keeps nothing.
    pub(super) fn keep_view_before(&mut self, code: FrontendCode) {
        let alone = self.in_flight.is_none() && self.queues.requests.is_empty();
        self.before = (alone && self.reply_ack).then_some(Before {
            code,
            logging: self.logging,
            features: self.negotiated.features,
            features_forgotten: self.features_forgotten,
        });
    }

    /// Something else changed the view: a refusal can no longer put it back.
    pub(super) fn forget_view_before(&mut self) {
        self.before = None;
    }

    /// The status of a request of `code` came: a failure puts the view back as it was before
    /// the request, when it was kept.
    pub(super) fn settle_view(&mut self, code: FrontendCode, refused: bool) {
        let Some(before) = self.before.take_if(|before| before.code == code) else { return };
        if refused {
            self.logging = before.logging;
            self.negotiated.features = before.features;
            self.features_forgotten = before.features_forgotten;
        }
    }
}
