//! VMM operations on guest memory, the dirty log and inflight tracking: SET_MEM_TABLE,
//! ADD_MEM_REG / REM_MEM_REG (CONFIGURE_MEM_SLOTS), IOTLB_MSG (the device IOTLB of
//! VIRTIO_F_ACCESS_PLATFORM), SET_LOG_BASE / SET_LOG_FD, GET/SET_INFLIGHT_FD.
//!
//! The front-end records the regions it sent (the same validity rules as the back-end: spec
//! "Memory regions", [`crate::regions`]) so it can refuse an overlapping region, a removal of a
//! region never added, or more regions than the back-end's slots, before anything is sent. It never
//! maps memory; the caller owns the region fds. With GPA_ADDRESSES acked, a region goes out with
//! its guest address in the user-address field (spec, protocol feature 21) and the VMM's own
//! address stays here, to translate the rings' addresses ([`Frontend::wire_region`]).

use super::queue::Queued;
use super::{Frontend, FrontendError};
use crate::limits::{MAX_MEM_SLOTS, MAX_MEM_TABLE_REGIONS};
use crate::message::{InflightDesc, Iotlb, LogBase, Region, Request};
use crate::regions::{check_disjoint, check_region, RegionError};
use crate::wire::FrontendCode;
use crate::{FdToken, ProtocolFeatures, VirtioFeatures};

fn memory(code: FrontendCode) -> impl Fn(RegionError) -> FrontendError {
    move |error| FrontendError::Memory { code, error }
}

fn refuse_xen(code: FrontendCode, region: &Region) -> Result<(), FrontendError> {
    // XEN_MMAP is never acked, so regions only use the standard layout.
    match region.xen {
        Some(_) => Err(FrontendError::NotNegotiated { code, feature: "XEN_MMAP" }),
        None => Ok(()),
    }
}

impl Frontend {
    /// `region` as the back-end must see it: with GPA_ADDRESSES acked, its user address is its
    /// guest address.
    pub(super) fn wire_region(&self, region: Region) -> Region {
        if self.is_acked(ProtocolFeatures::GPA_ADDRESSES) {
            Region { user_address: region.guest_address, ..region }
        } else {
            region
        }
    }

    /// SET_MEM_TABLE: replaces the whole memory table with at most 8 regions, each with its fd
    /// (handed off in the request). With CONFIGURE_MEM_SLOTS acked, grow it past 8 with
    /// [`Frontend::add_mem_region`].
    pub fn set_mem_table(&mut self, regions: &[(Region, FdToken)]) -> Result<(), FrontendError> {
        let code = FrontendCode::SetMemTable;
        self.require_ready()?;
        // Spec SET_MEM_TABLE: at most VHOST_MEMORY_BASELINE_NREGIONS regions per message.
        if regions.len() > MAX_MEM_TABLE_REGIONS {
            return Err(FrontendError::TooManyRegions {
                got: regions.len(),
                max: MAX_MEM_TABLE_REGIONS,
            });
        }
        if self.queues.is_queued(code) || self.is_awaiting_bases() {
            return Err(FrontendError::Busy(code));
        }
        if regions.is_empty() && self.is_postcopy_bound() {
            // A postcopy table must be answered with bases; an empty one has none.
            return Err(FrontendError::PostcopyOutOfOrder { code, needs: "POSTCOPY_END" });
        }
        let mut staged: heapless::Vec<Region, MAX_MEM_TABLE_REGIONS> = heapless::Vec::new();
        for (region, _) in regions {
            refuse_xen(code, region)?;
            check_region(region).map_err(memory(code))?;
            check_disjoint(region, staged.iter()).map_err(memory(code))?;
            // Cannot fail: regions.len() <= MAX_MEM_TABLE_REGIONS, the capacity.
            let _ = staged.push(*region);
        }
        self.queues.reserve(1)?;
        if self.is_postcopy_bound() {
            self.forget_view_before();
        } else {
            self.keep_table_before();
        }
        self.regions.clear();
        self.table_out.clear();
        self.table_fds.clear();
        for (region, fd) in regions {
            // Cannot fail: the regions were checked disjoint and number at most 8, as many as
            // both staging vectors hold.
            let _ = self.regions.add(*region, MAX_MEM_SLOTS);
            let _ = self.table_out.push(self.wire_region(*region).to_wire());
            let _ = self.table_fds.push(*fd);
        }
        self.queues.push_request(Queued::MemTable);
        Ok(())
    }

    /// ADD_MEM_REG (CONFIGURE_MEM_SLOTS): adds one region with its fd (handed off), up to the
    /// slots GET_MAX_MEM_SLOTS reported (8 if it was never asked).
    pub fn add_mem_region(&mut self, region: Region, fd: FdToken) -> Result<(), FrontendError> {
        let code = FrontendCode::AddMemReg;
        self.require(code, ProtocolFeatures::CONFIGURE_MEM_SLOTS, "CONFIGURE_MEM_SLOTS")?;
        refuse_xen(code, &region)?;
        let max = self.negotiated.max_mem_slots.map_or(MAX_MEM_TABLE_REGIONS, usize::from);
        self.regions.check_add(&region, max).map_err(memory(code))?;
        self.queues.reserve(1)?;
        self.regions.add(region, max).map_err(memory(code))?;
        self.forget_view_before();
        self.queues.push_request(Queued::Inline(Request::AddMemReg { region, fd }));
        Ok(())
    }

    /// REM_MEM_REG (CONFIGURE_MEM_SLOTS): removes the region with the same guest address, user
    /// address and size. Sent without an fd: the spec says the front-end SHOULD send none.
    pub fn remove_mem_region(&mut self, region: Region) -> Result<(), FrontendError> {
        let code = FrontendCode::RemMemReg;
        self.require(code, ProtocolFeatures::CONFIGURE_MEM_SLOTS, "CONFIGURE_MEM_SLOTS")?;
        self.regions.find(&region).ok_or(FrontendError::Memory {
            code,
            error: RegionError::NotFound { guest_address: region.guest_address, size: region.size },
        })?;
        self.queues.reserve(1)?;
        let removed = self.regions.remove(&region).map_err(memory(code))?;
        self.forget_view_before();
        self.queues.push_request(Queued::Inline(Request::RemMemReg { region: removed, fd: None }));
        Ok(())
    }

    /// IOTLB_MSG (VIRTIO_F_ACCESS_PLATFORM, REPLY_ACK and BACKEND_REQ acked): an update or invalidation of the back-end's
    /// device IOTLB (ring and buffer addresses are I/O virtual addresses then), typically the
    /// answer to a miss the back-end reported on its channel. Sent with NEED_REPLY, as QEMU does,
    /// and answered with [`Event::Done`](super::Event::Done) or a failure.
    pub fn iotlb_msg(&mut self, msg: Iotlb) -> Result<(), FrontendError> {
        let code = FrontendCode::IotlbMsg;
        self.require_ready()?;
        if !self.negotiated.features.contains(VirtioFeatures::ACCESS_PLATFORM) {
            return Err(FrontendError::NotNegotiated { code, feature: "VIRTIO_F_ACCESS_PLATFORM" });
        }
        // As QEMU requires for a device behind an IOMMU: the status travels as a REPLY_ACK and
        // misses come on the back-end channel.
        for (feature, name) in [
            (ProtocolFeatures::REPLY_ACK, "REPLY_ACK"),
            (ProtocolFeatures::BACKEND_REQ, "BACKEND_REQ"),
        ] {
            if !self.is_acked(feature) {
                return Err(FrontendError::NotNegotiated { code, feature: name });
            }
        }
        self.enqueue(&[Request::IotlbMsg(msg)])
    }

    /// SET_LOG_BASE (LOG_SHMFD): the dirty-log area, `mmap_size` bytes at `mmap_offset` of `fd`
    /// (handed off). The back-end's reply, whatever its size, completes it with
    /// [`Event::Done`](super::Event::Done). Turn logging on with [`Frontend::set_logging`].
    pub fn set_log_base(
        &mut self,
        mmap_size: u64,
        mmap_offset: u64,
        fd: FdToken,
    ) -> Result<(), FrontendError> {
        let code = FrontendCode::SetLogBase;
        self.require(code, ProtocolFeatures::LOG_SHMFD, "LOG_SHMFD")?;
        let log = LogBase::Shared { mmap_size, mmap_offset, fd: Some(fd) };
        self.enqueue(&[Request::SetLogBase(log)])
    }

    /// SET_LOG_FD: the eventfd the back-end signals after updating the log (handed off).
    pub fn set_log_fd(&mut self, fd: FdToken) -> Result<(), FrontendError> {
        self.require_ready()?;
        self.enqueue(&[Request::SetLogFd(fd)])
    }

    /// GET_INFLIGHT_FD (INFLIGHT_SHMFD): asks the back-end for an inflight area covering
    /// `num_queues` queues of `queue_size` (spec: the request carries both, bug §5.20 of peers
    /// that sent none). Answered with [`Event::InflightFd`](super::Event::InflightFd).
    pub fn get_inflight_fd(
        &mut self,
        num_queues: u16,
        queue_size: u16,
    ) -> Result<(), FrontendError> {
        let code = FrontendCode::GetInflightFd;
        self.require(code, ProtocolFeatures::INFLIGHT_SHMFD, "INFLIGHT_SHMFD")?;
        let desc = InflightDesc { mmap_size: 0, mmap_offset: 0, num_queues, queue_size };
        self.enqueue(&[Request::GetInflightFd(desc)])
    }

    /// SET_INFLIGHT_FD (INFLIGHT_SHMFD): hands the inflight area back to a (re)connected
    /// back-end (fd handed off). Send it before the rings start, as QEMU does (its block device
    /// sets the area before it starts the vhost device): a back-end resubmits what the area
    /// records when a ring starts, so it must have the area by then.
    pub fn set_inflight_fd(
        &mut self,
        desc: InflightDesc,
        fd: FdToken,
    ) -> Result<(), FrontendError> {
        let code = FrontendCode::SetInflightFd;
        self.require(code, ProtocolFeatures::INFLIGHT_SHMFD, "INFLIGHT_SHMFD")?;
        self.enqueue(&[Request::SetInflightFd { desc, fd }])
    }
}
