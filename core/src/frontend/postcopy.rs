//! Postcopy migration on the front-end side (PAGEFAULT; spec "Migration", POSTCOPY_ADVISE /
//! POSTCOPY_LISTEN / POSTCOPY_END and the postcopy form of SET_MEM_TABLE).
//!
//! The order is the spec's: ADVISE (the reply hands over the back-end's userfaultfd), LISTEN,
//! then any SET_MEM_TABLE goes without NEED_REPLY and is answered with the regions as the
//! back-end mapped them; the front-end checks that reply against what it sent, reports the
//! back-end's mapping bases, and once the VMM registered them acknowledges with a SET_MEM_TABLE
//! frame carrying a `u64` 0 (the same bytes as an empty table) before anything else is sent; END
//! closes the episode. An empty table has nothing to register and is refused while listening. LISTEN,
//! END and IOTLB_MSG carry NEED_REPLY whether or not REPLY_ACK was acked, as QEMU sends them, so
//! back-ends written against QEMU answer. The newest spec forbids postcopy together with
//! CONFIGURE_MEM_SLOTS, so the handshake never acks both and ADD_MEM_REG has no postcopy form.
//! This module never touches memory or userfaultfds: registering the bases is the VMM's work.

use super::queue::Item;
use super::{Frontend, FrontendError};
use crate::message::{MemoryTable, Request};
use crate::wire::FrontendCode;
use crate::ProtocolFeatures;

/// Where a postcopy episode stands, as far as the back-end confirmed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PostcopyPhase {
    /// No postcopy: SET_MEM_TABLE takes its usual form.
    Off,
    /// POSTCOPY_ADVISE answered with a userfaultfd.
    Advised,
    /// POSTCOPY_LISTEN acknowledged: SET_MEM_TABLE takes its postcopy form.
    Listening,
}

/// The acknowledgement of a postcopy SET_MEM_TABLE reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PostcopyAck {
    /// None is due.
    None,
    /// The bases were reported; the VMM registers them before the acknowledgement goes out.
    Registering,
    /// The VMM registered them: the acknowledgement is the next request out.
    Due,
}

/// Requests that carry NEED_REPLY whatever REPLY_ACK says: QEMU sets it on them and waits for
/// the `u64`, so that is the form back-ends answer.
pub(super) fn always_needs_reply(code: FrontendCode) -> bool {
    matches!(
        code,
        FrontendCode::PostcopyListen | FrontendCode::PostcopyEnd | FrontendCode::IotlbMsg
    )
}

impl Frontend {
    /// POSTCOPY_ADVISE (PAGEFAULT): the back-end opens a userfaultfd and hands it over, answered
    /// with [`Event::PostcopyAdvised`](super::Event::PostcopyAdvised). Guest memory is still
    /// being copied (precopy) at this point.
    pub fn postcopy_advise(&mut self) -> Result<(), FrontendError> {
        let code = FrontendCode::PostcopyAdvise;
        self.require(code, ProtocolFeatures::PAGEFAULT, "PAGEFAULT")?;
        let listening = self.postcopy == PostcopyPhase::Listening
            || self.is_pending(FrontendCode::PostcopyListen);
        if listening && !self.is_pending(FrontendCode::PostcopyEnd) {
            return Err(FrontendError::PostcopyOutOfOrder { code, needs: "POSTCOPY_END" });
        }
        self.enqueue(&[Request::PostcopyAdvise])
    }

    /// POSTCOPY_LISTEN (PAGEFAULT): the guest runs on the destination now; the back-end
    /// registers its memory with the userfaultfd. Once acknowledged
    /// ([`Event::Done`](super::Event::Done)), [`Frontend::set_mem_table`] takes its postcopy form.
    pub fn postcopy_listen(&mut self) -> Result<(), FrontendError> {
        self.enqueue_advised(Request::PostcopyListen)
    }

    /// POSTCOPY_END (PAGEFAULT): every page arrived; the back-end stops faulting and closes its
    /// userfaultfd. Answered with [`Event::Done`](super::Event::Done).
    pub fn postcopy_end(&mut self) -> Result<(), FrontendError> {
        self.enqueue_advised(Request::PostcopyEnd)
    }

    /// Queues LISTEN or END: both need PAGEFAULT and an ADVISE before them.
    fn enqueue_advised(&mut self, request: Request<'static>) -> Result<(), FrontendError> {
        let code = request.code();
        self.require(code, ProtocolFeatures::PAGEFAULT, "PAGEFAULT")?;
        if !self.is_advised() {
            return Err(FrontendError::PostcopyOutOfOrder { code, needs: "POSTCOPY_ADVISE" });
        }
        self.enqueue(&[request])
    }

    /// Whether POSTCOPY_ADVISE was answered, or is on its way (queued or waiting for its reply):
    /// the next steps may then be queued behind it.
    pub(super) fn is_advised(&self) -> bool {
        self.postcopy != PostcopyPhase::Off || self.is_pending(FrontendCode::PostcopyAdvise)
    }

    /// Whether a postcopy SET_MEM_TABLE waits for its bases: the table it is checked against
    /// must stay as sent.
    pub(super) fn is_awaiting_bases(&self) -> bool {
        self.is_postcopy_listening() && self.is_pending(FrontendCode::SetMemTable)
    }

    /// Whether a SET_MEM_TABLE queued now would take the postcopy form: listening, or LISTEN on
    /// its way. Its reply then carries the back-end's bases, which the VMM must register before
    /// [`Frontend::postcopy_bases_registered`].
    pub fn is_postcopy_bound(&self) -> bool {
        self.is_postcopy_listening() || self.is_pending(FrontendCode::PostcopyListen)
    }

    /// Whether a SET_MEM_TABLE sent now takes the postcopy form (no NEED_REPLY; answered with
    /// the back-end's bases).
    pub(super) fn is_postcopy_listening(&self) -> bool {
        self.postcopy == PostcopyPhase::Listening
    }

    /// A postcopy step the back-end confirmed.
    pub(super) fn postcopy_step_done(&mut self, code: FrontendCode) {
        match code {
            // A later ADVISE (after an END) starts a new episode; it never undoes a LISTEN.
            FrontendCode::PostcopyAdvise if self.postcopy == PostcopyPhase::Off => {
                self.postcopy = PostcopyPhase::Advised;
            }
            FrontendCode::PostcopyListen => self.postcopy = PostcopyPhase::Listening,
            FrontendCode::PostcopyEnd => self.postcopy = PostcopyPhase::Off,
            _ => {}
        }
    }

    /// The postcopy SET_MEM_TABLE reply: the regions sent, each with the back-end's own mapping
    /// base as its user address. Checked region by region (QEMU checks the same fields), then the
    /// bases are reported and the acknowledgement is due.
    pub(super) fn handle_postcopy_bases(
        &mut self,
        table: MemoryTable<'_>,
    ) -> Result<(), FrontendError> {
        let MemoryTable::Standard(regions) = table else {
            return Err(FrontendError::UnexpectedPayload {
                code: FrontendCode::SetMemTable,
                what: "regions in the XEN_MMAP layout",
            });
        };
        if regions.len() != self.table_out.len() {
            let index = regions.len().min(self.table_out.len());
            return Err(FrontendError::PostcopyBasesMismatch { index });
        }
        for (index, (got, sent)) in regions.iter().zip(&self.table_out).enumerate() {
            let same = got.guest_address == sent.guest_address
                && got.size == sent.size
                && got.mmap_offset == sent.mmap_offset;
            if !same {
                return Err(FrontendError::PostcopyBasesMismatch { index });
            }
        }
        self.postcopy_bases.clear();
        for region in regions {
            // Cannot fail: the count equals the table sent, at most 8, the capacity.
            let _ = self.postcopy_bases.push(region.user_address.get());
        }
        self.postcopy_ack = PostcopyAck::Registering;
        self.queues.push(Item::PostcopyBases);
        Ok(())
    }

    /// The VMM registered the bases of the last [`Event::PostcopyBases`] with its fault
    /// handling: the acknowledgement the back-end waits for goes out, then the requests queued
    /// behind it.
    ///
    /// [`Event::PostcopyBases`]: super::Event::PostcopyBases
    pub fn postcopy_bases_registered(&mut self) -> Result<(), FrontendError> {
        self.require_ready()?;
        if self.postcopy_ack != PostcopyAck::Registering {
            let code = FrontendCode::SetMemTable;
            return Err(FrontendError::PostcopyOutOfOrder { code, needs: "postcopy bases" });
        }
        self.postcopy_ack = PostcopyAck::Due;
        Ok(())
    }

    /// Whether reported postcopy bases wait for [`Frontend::postcopy_bases_registered`].
    pub fn is_awaiting_registration(&self) -> bool {
        self.postcopy_ack == PostcopyAck::Registering
    }

    /// The acknowledgement of a postcopy SET_MEM_TABLE reply, once due: a SET_MEM_TABLE frame
    /// whose payload is a `u64` 0 — byte for byte an empty table — sent before anything else.
    pub(super) fn take_postcopy_ack(&mut self) -> Option<Request<'static>> {
        if self.postcopy_ack != PostcopyAck::Due {
            return None;
        }
        self.postcopy_ack = PostcopyAck::None;
        Some(Request::SetMemTable { table: MemoryTable::Standard(&[]), fds: &[] })
    }
}
