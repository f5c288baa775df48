//! VMM operations on vrings: start (SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR,
//! SET_VRING_CALL, SET_VRING_KICK, SET_VRING_ENABLE), stop (SET_VRING_ENABLE 0, GET_VRING_BASE)
//! and the single messages for a running ring.
//!
//! Rules (spec "Ring states", "Starting and stopping rings"): a ring starts when the back-end gets
//! its kick fd and stops on GET_VRING_BASE, whose reply is the base to resume from; with
//! VHOST_USER_F_PROTOCOL_FEATURES acked rings are enabled only by SET_VRING_ENABLE, which is only
//! valid then. The front-end tracks which rings it started, to refuse restarting a running ring and
//! to know when the device is suspended. It never touches an eventfd. Ring addresses are the
//! VMM's user addresses; with GPA_ADDRESSES acked they go out as the guest-physical addresses
//! the memory table maps them to (spec, protocol feature 21).

use super::output::VringSetup;
use super::{Frontend, FrontendError};
use crate::message::{Request, VringAddr, VringAddrFlags, VringFd};
use crate::wire::FrontendCode;
use crate::{FdToken, ProtocolFeatures, VringIndex};

impl Frontend {
    fn check_vring(&self, index: VringIndex) -> Result<(), FrontendError> {
        self.require_ready()?;
        match self.ring_count() {
            Some(rings) if u16::from(index.0) >= rings => {
                Err(FrontendError::VringOutOfRange { index: index.0, rings })
            }
            _ => Ok(()),
        }
    }

    /// The rings the back-end has, from GET_QUEUE_NUM's answer (`None` when it was not asked):
    /// its queues times [`FrontendConfig::rings_per_queue`](super::FrontendConfig), at most
    /// 256.
    pub(super) fn ring_count(&self) -> Option<u16> {
        let per_queue = u32::from(self.config.rings_per_queue.max(1));
        let max = crate::limits::MAX_VRINGS as u32;
        // Cannot truncate: at most MAX_VRINGS (256).
        self.negotiated.queues.map(|queues| (u32::from(queues) * per_queue).min(max) as u16)
    }

    /// `addr` as the back-end must see it: with GPA_ADDRESSES acked, each ring's user address
    /// (the `len` bytes of each from `lens`) becomes the guest-physical address it maps to.
    fn wire_addr(&self, addr: VringAddr, lens: [u64; 3]) -> Result<VringAddr, FrontendError> {
        if !self.is_acked(ProtocolFeatures::GPA_ADDRESSES) {
            return Ok(addr);
        }
        let to_guest = |user: u64, len: u64| {
            self.regions
                .user_to_guest(user, len)
                .map_err(|error| FrontendError::Memory { code: FrontendCode::SetVringAddr, error })
        };
        Ok(VringAddr {
            descriptor: to_guest(addr.descriptor, lens[0])?,
            used: to_guest(addr.used, lens[1])?,
            available: to_guest(addr.available, lens[2])?,
            ..addr
        })
    }

    fn require_enable(&self) -> Result<(), FrontendError> {
        if self.is_protocol_acked() {
            Ok(())
        } else {
            Err(FrontendError::NotNegotiated {
                code: FrontendCode::SetVringEnable,
                feature: "VHOST_USER_F_PROTOCOL_FEATURES",
            })
        }
    }

    /// Starts a stopped ring: SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_CALL,
    /// SET_VRING_KICK and, with VHOST_USER_F_PROTOCOL_FEATURES acked, SET_VRING_ENABLE 1.
    ///
    /// The call fd goes before the kick fd because the kick starts the ring, and a started ring
    /// must be able to notify (crosvm refuses a kick before the call fd). The fds are handed off.
    pub fn start_vring(
        &mut self,
        index: VringIndex,
        setup: VringSetup,
    ) -> Result<(), FrontendError> {
        self.check_vring(index)?;
        if self.is_vring_started(index) {
            return Err(FrontendError::VringStarted {
                code: FrontendCode::SetVringKick,
                index: index.0,
            });
        }
        if self.features_forgotten {
            return Err(FrontendError::FeaturesForgotten { code: FrontendCode::SetVringKick });
        }
        // Virtio "Virtqueues": a queue has 1 to 32768 entries; SET_VRING_NUM cannot say more.
        if setup.size == 0 || u32::from(setup.size) > crate::limits::MAX_QUEUE_SIZE {
            return Err(FrontendError::InvalidQueueSize { index: index.0, size: setup.size });
        }
        let flags = if setup.log.is_some() { VringAddrFlags::LOG } else { VringAddrFlags::empty() };
        let addr = VringAddr {
            index,
            flags,
            descriptor: setup.descriptor,
            used: setup.used,
            available: setup.available,
            log: setup.log.unwrap_or(0),
        };
        // Virtio "Virtqueues": 16-byte descriptors; a split ring's used ring is 6 + 8 per entry
        // and its available ring 6 + 2 per entry, a packed ring's event areas 4 bytes each.
        let n = u64::from(setup.size);
        let packed = self.negotiated.features.contains(crate::VirtioFeatures::RING_PACKED);
        let lens = if packed { [16 * n, 4, 4] } else { [16 * n, 6 + 8 * n, 6 + 2 * n] };
        let addr = self.wire_addr(addr, lens)?;
        let requests = [
            Request::SetVringNum { index, num: setup.size },
            Request::SetVringBase { index, base: setup.base },
            Request::SetVringAddr(addr),
            Request::SetVringCall(VringFd { index, fd: setup.call }),
            Request::SetVringKick(VringFd { index, fd: setup.kick }),
            Request::SetVringEnable { index, enable: true },
        ];
        let n = if self.is_protocol_acked() { requests.len() } else { requests.len() - 1 };
        self.enqueue(&requests[..n])?;
        self.set_started(index, true);
        Ok(())
    }

    /// Stops a ring: SET_VRING_ENABLE 0 (with VHOST_USER_F_PROTOCOL_FEATURES acked, as QEMU has
    /// done since 7.2) and GET_VRING_BASE, which the back-end answers once the ring has drained and
    /// stopped. [`Event::VringStopped`](super::Event::VringStopped) carries the base.
    pub fn stop_vring(&mut self, index: VringIndex) -> Result<(), FrontendError> {
        self.check_vring(index)?;
        self.stop(index, Request::GetVringBase { index })
    }

    /// Stops a ring without draining (GET_VRING_BASE_SKIP_DRAIN): in-flight requests are
    /// recorded in the inflight area instead.
    pub fn stop_vring_skip_drain(&mut self, index: VringIndex) -> Result<(), FrontendError> {
        let code = FrontendCode::GetVringBaseSkipDrain;
        let feature = ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN;
        self.require(code, feature, "GET_VRING_BASE_SKIP_DRAIN")?;
        self.check_vring(index)?;
        self.stop(index, Request::GetVringBaseSkipDrain { index })
    }

    fn stop(&mut self, index: VringIndex, get_base: Request<'static>) -> Result<(), FrontendError> {
        if self.is_protocol_acked() {
            self.enqueue(&[Request::SetVringEnable { index, enable: false }, get_base])?;
        } else {
            self.enqueue(&[get_base])?;
        }
        self.set_started(index, false);
        Ok(())
    }

    /// SET_VRING_ENABLE (needs VHOST_USER_F_PROTOCOL_FEATURES acked).
    pub fn set_vring_enable(
        &mut self,
        index: VringIndex,
        enable: bool,
    ) -> Result<(), FrontendError> {
        self.check_vring(index)?;
        self.require_enable()?;
        self.enqueue(&[Request::SetVringEnable { index, enable }])
    }

    /// SET_VRING_CALL: a new call eventfd (handed off), or none.
    pub fn set_vring_call(
        &mut self,
        index: VringIndex,
        fd: Option<FdToken>,
    ) -> Result<(), FrontendError> {
        self.check_vring(index)?;
        self.enqueue(&[Request::SetVringCall(VringFd { index, fd })])
    }

    /// SET_VRING_ERR: an error eventfd (handed off), or none.
    pub fn set_vring_err(
        &mut self,
        index: VringIndex,
        fd: Option<FdToken>,
    ) -> Result<(), FrontendError> {
        self.check_vring(index)?;
        self.enqueue(&[Request::SetVringErr(VringFd { index, fd })])
    }

    /// SET_VRING_ADDR on its own, e.g. to switch VHOST_VRING_F_LOG of a started ring when
    /// logging is turned on or off.
    pub fn set_vring_addr(&mut self, addr: VringAddr) -> Result<(), FrontendError> {
        self.check_vring(addr.index)?;
        // The ring's size is not known here: each address must at least be mapped.
        let addr = self.wire_addr(addr, [1, 1, 1])?;
        if addr.flags.contains(VringAddrFlags::LOG) {
            // Logging turned on for a running ring: confirmed before the VMM goes on, as
            // with VHOST_F_LOG_ALL.
            return self.enqueue_confirmed(Request::SetVringAddr(addr));
        }
        self.enqueue(&[Request::SetVringAddr(addr)])
    }

    /// VRING_KICK (INBAND_NOTIFICATIONS): an in-band kick, which also starts a stopped ring.
    pub fn vring_kick(&mut self, index: VringIndex) -> Result<(), FrontendError> {
        let code = FrontendCode::VringKick;
        self.require(code, ProtocolFeatures::INBAND_NOTIFICATIONS, "INBAND_NOTIFICATIONS")?;
        self.check_vring(index)?;
        if self.features_forgotten && !self.is_vring_started(index) {
            return Err(FrontendError::FeaturesForgotten { code });
        }
        self.enqueue(&[Request::VringKick { index }])?;
        self.set_started(index, true);
        Ok(())
    }
}
