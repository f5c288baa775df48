//! What a refused SET_FEATURES or SET_MEM_TABLE leaves of the front-end's view: the view it had
//! before, when the back-end answers with a failure status (REPLY_ACK).
//!
//! The front-end records what a request changes when it queues it (the acked features, whether
//! dirty logging is on, the memory table), so that what the VMM queues next is checked against
//! the state the request will make. A back-end that refuses SET_FEATURES keeps the features it
//! had, and one that refuses a memory table keeps the table before (vhu's own back-end and
//! rust-vmm's do), and the view must follow: [`Frontend::negotiated`] would otherwise hand a
//! later restore features the back-end refused, [`Frontend::is_logging`] report logging the
//! back-end never began, and ring addresses and added regions be checked against a table the
//! back-end does not have. The view before is kept while such a request is the only one waiting
//! (a table of at most 8 regions: one grown past that with ADD_MEM_REG is not kept); should
//! anything else change the view meanwhile (a ring started or stopped, a region added or
//! removed, a reset), it is dropped and a refusal leaves the view as the requests left it. This
//! module must not decide whether a request is sent or answered.

use super::Frontend;
use crate::limits::MAX_MEM_TABLE_REGIONS;
use crate::message::Region;
use crate::wire::FrontendCode;
use crate::VirtioFeatures;

/// The front-end's view before a request that changes it.
// One is held at most, inline in the front-end (core has no allocator to box the table in).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(super) enum Before {
    /// Before a SET_FEATURES.
    Features { logging: bool, features: VirtioFeatures, features_forgotten: bool },
    /// Before a SET_MEM_TABLE: the table.
    Table(heapless::Vec<Region, MAX_MEM_TABLE_REGIONS>),
}

impl Before {
    fn code(&self) -> FrontendCode {
        match self {
            Self::Features { .. } => FrontendCode::SetFeatures,
            Self::Table(_) => FrontendCode::SetMemTable,
        }
    }
}

impl Frontend {
    /// Whether a request queued now is the only one waiting and will be answered with a status.
    fn alone_with_status(&self) -> bool {
        self.in_flight.is_none() && self.queues.requests.is_empty() && self.reply_ack
    }

    /// Called before a SET_FEATURES changes the view.
    pub(super) fn keep_features_before(&mut self) {
        self.before = self.alone_with_status().then_some(Before::Features {
            logging: self.logging,
            features: self.negotiated.features,
            features_forgotten: self.features_forgotten,
        });
    }

    /// Called before a SET_MEM_TABLE (not a postcopy one, answered with bases) replaces the
    /// table.
    pub(super) fn keep_table_before(&mut self) {
        let mut table = heapless::Vec::new();
        // A table grown past what one SET_MEM_TABLE holds is not kept.
        let whole = self.regions.iter().all(|region| table.push(*region).is_ok());
        self.before = (self.alone_with_status() && whole).then_some(Before::Table(table));
    }

    /// Something else changed the view: a refusal can no longer put it back.
    pub(super) fn forget_view_before(&mut self) {
        self.before = None;
    }

    /// The status of a request of `code` came: a failure puts the view back as it was before
    /// the request, when it was kept.
    pub(super) fn settle_view(&mut self, code: FrontendCode, refused: bool) {
        let Some(before) = self.before.take_if(|before| before.code() == code) else { return };
        if !refused {
            return;
        }
        match before {
            Before::Features { logging, features, features_forgotten } => {
                self.logging = logging;
                self.negotiated.features = features;
                self.features_forgotten = features_forgotten;
            }
            Before::Table(table) => {
                self.regions.clear();
                for region in table {
                    // Cannot fail: the table held these regions, disjoint, a moment ago.
                    let _ = self.regions.add(region, crate::limits::MAX_MEM_SLOTS);
                }
            }
        }
    }
}
