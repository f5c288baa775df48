//! Back-end handlers for guest memory, the dirty log and inflight tracking.
//!
//! Spec sections: SET_MEM_TABLE, "Memory region description", ADD_MEM_REG / REM_MEM_REG
//! (CONFIGURE_MEM_SLOTS), SET_LOG_BASE / SET_LOG_FD ("Migration"), GET/SET_INFLIGHT_FD
//! ("Inflight I/O tracking"). Region validity lives in [`crate::regions`].

use super::output::Action;
use super::{Backend, Pending};
use crate::inflight;
use crate::message::{InflightDesc, LogBase, MemoryTable, Region, Reply};
use crate::regions::{check_disjoint, check_region};
use crate::wire::{Code, FrontendCode};
use crate::{FdToken, ProtocolError, ProtocolFeatures, VirtioFeatures, WireError};

impl Backend {
    fn check_xen(&self, code: FrontendCode, xen: bool) -> Result<(), ProtocolError> {
        if xen && !self.protocol_acked(ProtocolFeatures::XEN_MMAP) {
            return Err(ProtocolError::NotNegotiated { code, feature: "XEN_MMAP" });
        }
        Ok(())
    }

    /// SET_MEM_TABLE replaces the whole table; the new regions are mapped and the table is
    /// committed when the driver reports the maps done.
    pub(super) fn set_mem_table(
        &mut self,
        table: MemoryTable<'_>,
        fds: &[FdToken],
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::SetMemTable;
        self.check_xen(code, table.is_xen())?;
        self.staged.clear();
        for region in table.iter() {
            let memory = |error| ProtocolError::Memory { code, error };
            check_region(&region).map_err(memory)?;
            check_disjoint(&region, self.staged.iter()).map_err(memory)?;
            // Cannot fail: the parser bounds the table by MAX_MEM_TABLE_REGIONS, the capacity.
            let _ = self.staged.push(region);
        }
        self.outputs.push_action(Action::UnmapAll);
        if self.staged.is_empty() {
            if self.postcopy.is_listening() {
                // Still the postcopy form (reference "SET_MEM_TABLE"): the front-end waits for
                // the reply, of no regions here, and acknowledges it.
                self.commit_postcopy_table(Ok(&[]));
            } else {
                self.regions.clear();
            }
            return Ok(());
        }
        for (region, fd) in self.staged.iter().zip(fds) {
            self.outputs.push_action(Action::MapRegion { region: *region, fd: *fd });
        }
        self.await_completion(Pending::MemTable, need_reply);
        Ok(())
    }

    pub(super) fn commit_mem_table(&mut self, result: Result<(), u64>, need_reply: bool) {
        let code = FrontendCode::SetMemTable;
        match result {
            Ok(()) => {
                self.regions.clear();
                for region in self.staged.iter() {
                    // Cannot fail: staged regions were checked disjoint and number at most 8.
                    let _ = self.regions.add(*region, crate::limits::MAX_MEM_SLOTS);
                }
                self.ack(code, need_reply);
            }
            // The driver kept the table it had (see `Action::UnmapAll`), and so does core: rings
            // running in the old table go on running, as a front-end that goes on after a
            // refused table (QEMU logs the failure and goes on) expects.
            Err(status) => {
                self.nack(code, need_reply, &ProtocolError::DeviceFailed { code, status });
            }
        }
        self.staged.clear();
    }

    pub(super) fn get_max_mem_slots(&mut self) -> Result<(), ProtocolError> {
        let code = FrontendCode::GetMaxMemSlots;
        self.require(code, ProtocolFeatures::CONFIGURE_MEM_SLOTS, "CONFIGURE_MEM_SLOTS")?;
        self.outputs.push_reply(Reply::MaxMemSlots(self.spec.max_mem_slots as u64));
        Ok(())
    }

    pub(super) fn add_mem_reg(
        &mut self,
        region: Region,
        fd: FdToken,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::AddMemReg;
        self.require(code, ProtocolFeatures::CONFIGURE_MEM_SLOTS, "CONFIGURE_MEM_SLOTS")?;
        self.check_xen(code, region.xen.is_some())?;
        self.regions
            .check_add(&region, self.spec.max_mem_slots)
            .map_err(|error| ProtocolError::Memory { code, error })?;
        self.outputs.push_action(Action::MapRegion { region, fd });
        self.await_completion(Pending::AddRegion(region), need_reply);
        Ok(())
    }

    pub(super) fn commit_add_region(
        &mut self,
        region: Region,
        result: Result<(), u64>,
        need_reply: bool,
    ) {
        let code = FrontendCode::AddMemReg;
        let result =
            result.map_err(|status| ProtocolError::DeviceFailed { code, status }).and_then(|()| {
                self.regions
                    .add(region, self.spec.max_mem_slots)
                    .map_err(|error| ProtocolError::Memory { code, error })
            });
        match result {
            Ok(()) => self.ack(code, need_reply),
            Err(error) => self.nack(code, need_reply, &error),
        }
    }

    /// REM_MEM_REG: the spec says the front-end SHOULD send no fd, and the back-end MAY accept
    /// one and must then close it.
    pub(super) fn rem_mem_reg(
        &mut self,
        region: Region,
        fd: Option<FdToken>,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::RemMemReg;
        self.require(code, ProtocolFeatures::CONFIGURE_MEM_SLOTS, "CONFIGURE_MEM_SLOTS")?;
        let removed =
            self.regions.remove(&region).map_err(|error| ProtocolError::Memory { code, error })?;
        self.outputs.push_action(Action::UnmapRegion(removed));
        if let Some(fd) = fd {
            self.outputs.push_action(Action::CloseFd(fd));
        }
        Ok(())
    }

    pub(super) fn set_log_base(
        &mut self,
        log: LogBase,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::SetLogBase;
        self.require(code, ProtocolFeatures::LOG_SHMFD, "LOG_SHMFD")?;
        match log {
            LogBase::Shared { mmap_size, mmap_offset, fd: Some(fd) } => {
                self.log_reply[..8].copy_from_slice(&mmap_size.to_ne_bytes());
                self.log_reply[8..].copy_from_slice(&mmap_offset.to_ne_bytes());
                self.outputs.push_action(Action::MapLog { fd, mmap_size, mmap_offset });
                self.await_completion(Pending::Log, need_reply);
                Ok(())
            }
            LogBase::Shared { fd: None, .. } => Err(ProtocolError::Wire(WireError::MissingFds {
                code: Code::Frontend(code),
                need: 1,
                got: 0,
            })),
            LogBase::Legacy { .. } => Err(ProtocolError::Unsupported(code)),
        }
    }

    pub(super) fn set_log_fd(&mut self, fd: FdToken) -> Result<(), ProtocolError> {
        self.outputs.push_action(Action::SetLogFd(fd));
        Ok(())
    }

    pub(super) fn get_inflight_fd(
        &mut self,
        desc: InflightDesc,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::GetInflightFd;
        self.require(code, ProtocolFeatures::INFLIGHT_SHMFD, "INFLIGHT_SHMFD")?;
        if usize::from(desc.num_queues) > self.vrings.len()
            || desc.queue_size > self.spec.max_queue_size
        {
            return Err(ProtocolError::InvalidInflight {
                num_queues: desc.num_queues,
                queue_size: desc.queue_size,
            });
        }
        let packed = self.acked_features_or_empty().contains(VirtioFeatures::RING_PACKED);
        let mmap_size = inflight::area_size(desc.num_queues, desc.queue_size, packed);
        if mmap_size == 0 {
            // Nothing to track: the zero-sized answer without fd, which QEMU takes as "no
            // inflight area" (spec GET_INFLIGHT_FD).
            let desc = InflightDesc { mmap_size: 0, mmap_offset: 0, ..desc };
            self.outputs.push_reply(Reply::InflightFd { desc, fd: None });
            return Ok(());
        }
        self.outputs.push_action(Action::AllocateInflight {
            mmap_size,
            num_queues: desc.num_queues,
            queue_size: desc.queue_size,
        });
        let desc = InflightDesc { mmap_size, mmap_offset: 0, ..desc };
        self.await_completion(Pending::Inflight(desc), need_reply);
        Ok(())
    }

    pub(super) fn set_inflight_fd(
        &mut self,
        desc: InflightDesc,
        fd: FdToken,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::SetInflightFd;
        self.require(code, ProtocolFeatures::INFLIGHT_SHMFD, "INFLIGHT_SHMFD")?;
        self.outputs.push_action(Action::SetInflight { desc, fd });
        self.await_completion(Pending::Status(code), need_reply);
        Ok(())
    }
}
