//! Postcopy migration on the back-end side (PAGEFAULT; spec "Migration", POSTCOPY_ADVISE /
//! POSTCOPY_LISTEN / POSTCOPY_END and the postcopy form of SET_MEM_TABLE).
//!
//! The sequence: ADVISE (the reply carries a userfaultfd), LISTEN (acked with a `u64`), then every
//! SET_MEM_TABLE is answered with the regions as the back-end mapped them (their user addresses
//! replaced by the back-end's mapping bases) and the front-end acknowledges that reply with a
//! SET_MEM_TABLE frame carrying a `u64` 0 before anything else, and END. The newest spec forbids
//! postcopy together with CONFIGURE_MEM_SLOTS, so ADD_MEM_REG has no postcopy form here. Opening
//! the userfaultfd and registering memory are the driver's actions.

use super::output::Action;
use super::queue::Item;
use super::{Backend, Pending};
use crate::limits::MAX_MEM_TABLE_REGIONS;
use crate::message::MemoryTable;
use crate::wire::{self, FrontendCode, Header, U64};
use crate::{FdToken, ProtocolError, ProtocolFeatures};

/// Postcopy state of one session.
#[derive(Clone, Debug)]
pub(super) struct Postcopy {
    listening: bool,
    ack_due: bool,
    bases: [wire::MemoryRegion; MAX_MEM_TABLE_REGIONS],
    len: usize,
}

impl Postcopy {
    pub(super) fn new() -> Self {
        let empty = wire::MemoryRegion {
            guest_address: U64::ZERO,
            size: U64::ZERO,
            user_address: U64::ZERO,
            mmap_offset: U64::ZERO,
        };
        Self { listening: false, ack_due: false, bases: [empty; MAX_MEM_TABLE_REGIONS], len: 0 }
    }

    pub(super) fn is_listening(&self) -> bool {
        self.listening
    }

    pub(super) fn is_ack_due(&self) -> bool {
        self.ack_due
    }

    /// The table of the last postcopy SET_MEM_TABLE reply.
    pub(super) fn table(&self) -> MemoryTable<'_> {
        MemoryTable::Standard(&self.bases[..self.len])
    }
}

impl Backend {
    pub(super) fn postcopy_advise(&mut self, need_reply: bool) -> Result<(), ProtocolError> {
        self.require(FrontendCode::PostcopyAdvise, ProtocolFeatures::PAGEFAULT, "PAGEFAULT")?;
        self.outputs.push_action(Action::PostcopyAdvise);
        self.await_completion(Pending::Userfaultfd, need_reply);
        Ok(())
    }

    /// POSTCOPY_LISTEN or POSTCOPY_END; QEMU waits for the `u64` of both.
    pub(super) fn postcopy_step(
        &mut self,
        code: FrontendCode,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        self.require(code, ProtocolFeatures::PAGEFAULT, "PAGEFAULT")?;
        let action = if code == FrontendCode::PostcopyListen {
            Action::PostcopyListen
        } else {
            Action::PostcopyEnd
        };
        self.outputs.push_action(action);
        self.await_completion(Pending::Status(code), need_reply);
        Ok(())
    }

    /// A successful LISTEN or END changes whether SET_MEM_TABLE takes its postcopy form.
    pub(super) fn postcopy_step_done(&mut self, code: FrontendCode) {
        match code {
            FrontendCode::PostcopyListen => self.postcopy.listening = true,
            FrontendCode::PostcopyEnd => self.postcopy.listening = false,
            _ => {}
        }
    }

    /// The driver mapped and registered the staged regions at `bases`.
    pub(super) fn commit_postcopy_table(&mut self, result: Result<&[u64], u64>) {
        let code = FrontendCode::SetMemTable;
        let bases = match result {
            Ok(bases) if bases.len() == self.staged.len() => bases,
            Ok(_) => {
                self.regions.clear();
                self.outputs.push_action(Action::UnmapAll);
                let error = ProtocolError::DeviceFailed { code, status: 22 };
                return self.outputs.push_close(error);
            }
            // The postcopy reply has no failure form: a back-end that cannot register memory
            // cannot take part in postcopy.
            Err(status) => {
                self.regions.clear();
                self.outputs.push_action(Action::UnmapAll);
                return self.outputs.push_close(ProtocolError::DeviceFailed { code, status });
            }
        };
        self.regions.clear();
        for (i, (region, base)) in self.staged.iter().zip(bases).enumerate() {
            // Cannot fail: staged regions were checked disjoint and number at most 8.
            let _ = self.regions.add(*region, crate::limits::MAX_MEM_SLOTS);
            self.postcopy.bases[i] =
                wire::MemoryRegion { user_address: U64::new(*base), ..region.to_wire() };
        }
        self.postcopy.len = self.staged.len();
        self.staged.clear();
        self.postcopy.ack_due = true;
        self.outputs.push(Item::PostcopyReply);
    }

    /// The frame after a postcopy SET_MEM_TABLE reply must be the front-end's `u64` 0 under the
    /// SET_MEM_TABLE code; anything else ends the session.
    pub(super) fn postcopy_ack(
        &mut self,
        frame: &[u8],
        fds: &[FdToken],
    ) -> Result<(), ProtocolError> {
        use zerocopy::FromBytes;
        let acked = Header::read_from_prefix(frame).ok().is_some_and(|(header, payload)| {
            header.request.get() == FrontendCode::SetMemTable.as_u32()
                && header.size.get() == 8
                && payload == [0u8; 8]
        });
        if acked && fds.is_empty() {
            self.postcopy.ack_due = false;
            return Ok(());
        }
        Err(self.refuse(None, false, fds, ProtocolError::PostcopyAckMissing))
    }
}
