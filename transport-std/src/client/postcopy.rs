//! Postcopy migration from the VMM's side (PAGEFAULT; spec "Migration"):
//! [`Client::postcopy_advise`] takes the back-end's userfaultfd, [`Client::postcopy_listen`]
//! switches it to faulting, [`Client::postcopy_set_mem_table`] shares memory in the postcopy form
//! and returns where the back-end mapped each region, [`Client::postcopy_end`] finishes.
//!
//! Serving the faults — reading the userfaultfd, copying pages in, waking the back-end — is the
//! VMM's and is not done here; neither is the order of the steps, which core checks. The
//! acknowledgement the back-end waits for after the bases goes out only once the caller's
//! `register` has run, since the back-end may fault as soon as it arrives.

use std::os::fd::OwnedFd;

use vhu_core::frontend::Frontend;
use vhu_core::FrontendCode;

use super::io::Answer;
use super::{Client, ClientError, SharedRegion};

impl Client {
    /// POSTCOPY_ADVISE (PAGEFAULT): the back-end's userfaultfd, from which the VMM reads the
    /// back-end's faults on guest memory.
    pub fn postcopy_advise(&mut self) -> Result<OwnedFd, ClientError> {
        self.ask(FrontendCode::PostcopyAdvise, &[], Frontend::postcopy_advise, |a| match a {
            Answer::PostcopyAdvised { userfaultfd } => Some(userfaultfd),
            _ => None,
        })
    }

    /// POSTCOPY_LISTEN (PAGEFAULT): the back-end registers its memory with the userfaultfd;
    /// memory tables are shared with [`Client::postcopy_set_mem_table`] from now on.
    pub fn postcopy_listen(&mut self) -> Result<(), ClientError> {
        self.call(&[], Frontend::postcopy_listen).map(drop)
    }

    /// SET_MEM_TABLE while postcopy listens: shares the regions (at most 8), hands the
    /// back-end's mapping base of each, in order, to `register` — which registers them with
    /// the VMM's fault handling — and only then sends the acknowledgement after which the
    /// back-end may fault. Returns the bases.
    pub fn postcopy_set_mem_table(
        &mut self,
        regions: &[SharedRegion<'_>],
        register: impl FnOnce(&[u64]),
    ) -> Result<Vec<u64>, ClientError> {
        let (table, tokens) = self.dup_table(regions)?;
        let bases = self.ask(
            FrontendCode::SetMemTable,
            &tokens,
            |f| f.set_mem_table(&table),
            |a| match a {
                Answer::PostcopyBases(bases) => Some(bases),
                _ => None,
            },
        )?;
        register(&bases);
        self.call(&[], Frontend::postcopy_bases_registered)?;
        Ok(bases)
    }

    /// POSTCOPY_END (PAGEFAULT): every page arrived; the back-end stops faulting.
    pub fn postcopy_end(&mut self) -> Result<(), ClientError> {
        self.call(&[], Frontend::postcopy_end).map(drop)
    }
}
