//! Back-end handlers for negotiation and the vring messages.
//!
//! Rules cited from the spec sections "Ring states", "Starting and stopping rings", "Feature
//! negotiation" and the message descriptions. The started/enabled transitions themselves live in
//! [`crate::vring`]; this module applies them to the session and turns effects into actions.

use super::output::{Action, VringConfig};
use super::spec::{broken_dependency, conflict};
use super::{Backend, Pending};
use crate::message::{Reply, VringAddr, VringAddrFlags, VringBase};
use crate::regions::RegionError;
use crate::vring::{RingEffect, RingEvent, RingState};
use crate::wire::FrontendCode;
use crate::{FdToken, ProtocolError, ProtocolFeatures, VirtioFeatures, VringIndex};

/// One ring's configuration as the front-end set it (user addresses, as sent).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Vring {
    pub(super) state: RingState,
    pub(super) size: Option<u16>,
    pub(super) addr: Option<VringAddr>,
    /// The addresses the device runs the ring at, while it is started: those it started with,
    /// or a move it took (a refused SET_VRING_ADDR leaves them, whether or not the front-end
    /// heard of the refusal).
    pub(super) running: Option<VringAddr>,
    pub(super) base: Option<VringBase>,
    pub(super) big_endian: bool,
}

impl Backend {
    fn is_packed(&self) -> bool {
        self.acked_features_or_empty().contains(VirtioFeatures::RING_PACKED)
    }

    pub(super) fn check_index(
        &self,
        code: FrontendCode,
        index: VringIndex,
    ) -> Result<usize, ProtocolError> {
        let i = usize::from(index.0);
        if i < self.vrings.len() {
            Ok(i)
        } else {
            Err(ProtocolError::VringOutOfRange { code, index: index.0, queues: self.vrings.len() })
        }
    }

    fn check_stopped(&self, code: FrontendCode, index: VringIndex) -> Result<usize, ProtocolError> {
        let i = self.check_index(code, index)?;
        if self.vrings[i].state.started {
            return Err(ProtocolError::VringStarted { code, index: index.0 });
        }
        Ok(i)
    }

    /// Applies a ring event, queueing the effect of an enable change; returns the effect.
    pub(super) fn apply(&mut self, i: usize, event: RingEvent) -> RingEffect {
        let (next, effect) = self.vrings[i].state.transition(event);
        self.vrings[i].state = next;
        if let RingEffect::EnableChanged(_) = effect {
            self.outputs.mark_enable_change(i);
        }
        effect
    }

    pub(super) fn get_features(&mut self) -> Result<(), ProtocolError> {
        self.outputs.push_reply(Reply::Features(self.spec.offered_features()));
        Ok(())
    }

    pub(super) fn set_features(&mut self, features: VirtioFeatures) -> Result<(), ProtocolError> {
        let offered = self.spec.offered_features();
        if !offered.contains(features) {
            return Err(ProtocolError::FeaturesNotOffered { offered, acked: features });
        }
        self.acked_features = Some(features);
        self.outputs.push_action(Action::FeaturesAcked(features));
        let logging = features.contains(VirtioFeatures::LOG_ALL);
        if logging != self.logging {
            self.logging = logging;
            self.outputs.push_action(Action::SetLogging(logging));
        }
        // Spec "Ring states": without VHOST_USER_F_PROTOCOL_FEATURES rings are enabled at once;
        // SET_FEATURES never disables a ring (it is re-sent to toggle LOG_ALL during migration).
        if !features.contains(VirtioFeatures::PROTOCOL_FEATURES) {
            for i in 0..self.vrings.len() {
                self.apply(i, RingEvent::EnableByFeatures);
            }
        }
        Ok(())
    }

    pub(super) fn set_owner(&mut self) -> Result<(), ProtocolError> {
        if self.owned {
            return Err(ProtocolError::AlreadyOwned);
        }
        self.owned = true;
        Ok(())
    }

    /// RESET_OWNER is deprecated: the spec asks back-ends to ignore it or only disable rings; we
    /// disable rings and release ownership, and keep everything else.
    pub(super) fn reset_owner(&mut self) -> Result<(), ProtocolError> {
        self.owned = false;
        for i in 0..self.vrings.len() {
            self.apply(i, RingEvent::Disable);
        }
        Ok(())
    }

    fn require_protocol_offered(&self, code: FrontendCode) -> Result<(), ProtocolError> {
        // Spec: GET/SET_PROTOCOL_FEATURES need bit 30 *offered* (they come before SET_FEATURES).
        if self.spec.offered_features().contains(VirtioFeatures::PROTOCOL_FEATURES) {
            Ok(())
        } else {
            Err(ProtocolError::NotNegotiated { code, feature: "VHOST_USER_F_PROTOCOL_FEATURES" })
        }
    }

    pub(super) fn get_protocol_features(&mut self) -> Result<(), ProtocolError> {
        self.require_protocol_offered(FrontendCode::GetProtocolFeatures)?;
        self.outputs.push_reply(Reply::ProtocolFeatures(self.spec.protocol_features));
        Ok(())
    }

    pub(super) fn set_protocol_features(
        &mut self,
        features: ProtocolFeatures,
    ) -> Result<(), ProtocolError> {
        self.require_protocol_offered(FrontendCode::SetProtocolFeatures)?;
        let offered = self.spec.protocol_features;
        if !offered.contains(features) {
            return Err(ProtocolError::ProtocolFeaturesNotOffered { offered, acked: features });
        }
        if let Some((feature, missing)) = broken_dependency(features) {
            return Err(ProtocolError::ProtocolFeatureDependency { feature, missing });
        }
        if let Some((first, second)) = conflict(features) {
            return Err(ProtocolError::ProtocolFeatureConflict { first, second });
        }
        self.acked_protocol = features;
        Ok(())
    }

    pub(super) fn get_queue_num(&mut self) -> Result<(), ProtocolError> {
        self.require(FrontendCode::GetQueueNum, ProtocolFeatures::MQ, "MQ")?;
        self.outputs.push_reply(Reply::QueueNum(self.vrings.len() as u64));
        Ok(())
    }

    pub(super) fn set_vring_num(
        &mut self,
        index: VringIndex,
        num: u16,
    ) -> Result<(), ProtocolError> {
        let i = self.check_stopped(FrontendCode::SetVringNum, index)?;
        let max = self.spec.max_queue_size;
        // Split rings need a power-of-two size (virtio "Virtqueues"); packed rings do not.
        if num == 0 || num > max || (!self.is_packed() && !num.is_power_of_two()) {
            return Err(ProtocolError::InvalidQueueSize { index: index.0, num, max });
        }
        self.vrings[i].size = Some(num);
        Ok(())
    }

    /// On a started ring the new addresses are handed to the driver, whose answer (the device
    /// honours them, or refuses) is the request's status: never silently ignored.
    pub(super) fn set_vring_addr(
        &mut self,
        addr: VringAddr,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::SetVringAddr;
        let i = self.check_index(code, addr.index)?;
        let size = self.vrings[i].size.unwrap_or(1);
        // Refuse an address no region covers now; it is translated again when the ring starts.
        let config = self.translate(code, &self.vrings[i], addr, size)?;
        let rings = |a: &VringAddr| (a.descriptor, a.available, a.used);
        let same_ring = self.vrings[i].running.is_some_and(|run| rings(&run) == rings(&addr));
        let logging_only = same_ring && config.log.is_none_or(|log| log == config.used);
        // The front-end's latest: a restart uses them.
        self.vrings[i].addr = Some(addr);
        if self.vrings[i].state.started {
            let index = addr.index;
            self.outputs.push_action(Action::UpdateVring { index, config, logging_only });
            self.await_completion(Pending::MoveVring(addr), need_reply);
        }
        Ok(())
    }

    pub(super) fn set_vring_base(
        &mut self,
        index: VringIndex,
        base: VringBase,
    ) -> Result<(), ProtocolError> {
        let i = self.check_stopped(FrontendCode::SetVringBase, index)?;
        if !self.is_packed() && base.as_split().is_none() {
            return Err(ProtocolError::InvalidVringBase { index: index.0, base: base.0 });
        }
        self.vrings[i].base = Some(base);
        Ok(())
    }

    pub(super) fn get_vring_base(
        &mut self,
        index: VringIndex,
        skip_drain: bool,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = if skip_drain {
            FrontendCode::GetVringBaseSkipDrain
        } else {
            FrontendCode::GetVringBase
        };
        if skip_drain {
            self.require(
                code,
                ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN,
                "GET_VRING_BASE_SKIP_DRAIN",
            )?;
        }
        let i = self.check_index(code, index)?;
        if self.apply(i, RingEvent::Stop) == RingEffect::Stop {
            // Spec "Stopping rings": the reply carries the base once the ring has stopped (and,
            // for GET_VRING_BASE, drained); the driver reports it with VringStopped.
            self.outputs.push_action(Action::StopVring { index, drain: !skip_drain });
            self.await_completion(Pending::StopVring { index, skip_drain }, need_reply);
        } else {
            let base = self.vrings[i].base.unwrap_or(VringBase(0));
            self.push_vring_base(index, base, skip_drain);
        }
        Ok(())
    }

    pub(super) fn push_vring_base(&mut self, index: VringIndex, base: VringBase, skip_drain: bool) {
        let reply = if skip_drain {
            Reply::VringBaseSkipDrain { index, base }
        } else {
            Reply::VringBase { index, base }
        };
        self.outputs.push_reply(reply);
    }

    /// The ring's configuration in guest-physical addresses, checked against the memory table;
    /// with VIRTIO_F_ACCESS_PLATFORM in IOVAs, which only the IOTLB translates (reference
    /// "SET_VRING_ADDR": the ring addresses are IOVAs then), so only checked not to overflow.
    fn translate(
        &self,
        code: FrontendCode,
        vring: &Vring,
        addr: VringAddr,
        size: u16,
    ) -> Result<VringConfig, ProtocolError> {
        let packed = self.is_packed();
        let event_idx = self.acked_features_or_empty().contains(VirtioFeatures::RING_EVENT_IDX);
        let n = u64::from(size);
        // Virtio "Virtqueues": split rings are desc 16·n, avail 6+2·n, used 6+8·n bytes; packed
        // rings are desc 16·n and two 4-byte event suppression areas.
        let (desc_len, avail_len, used_len) =
            if packed { (16 * n, 4, 4) } else { (16 * n, 6 + 2 * n, 6 + 8 * n) };
        let gpa = self.protocol_acked(ProtocolFeatures::GPA_ADDRESSES);
        let iova = self.acked_features_or_empty().contains(VirtioFeatures::ACCESS_PLATFORM);
        let map = |address: u64, len: u64| {
            let result = if iova {
                let overflow = RegionError::Overflow { address, size: len };
                address.checked_add(len).map(|_| address).ok_or(overflow)
            } else if gpa {
                self.regions.check_guest(address, len)
            } else {
                self.regions.user_to_guest(address, len)
            };
            result.map_err(|error| ProtocolError::Memory { code, error })
        };
        Ok(VringConfig {
            size,
            descriptor: map(addr.descriptor, desc_len)?,
            available: map(addr.available, avail_len)?,
            used: map(addr.used, used_len)?,
            log: addr.flags.contains(VringAddrFlags::LOG).then_some(addr.log),
            base: vring.base.unwrap_or(VringBase(0)),
            packed,
            event_idx,
            big_endian: vring.big_endian,
            iova,
        })
    }

    fn start_config(&self, code: FrontendCode, i: usize) -> Result<VringConfig, ProtocolError> {
        let vring = &self.vrings[i];
        // Cannot truncate: i < vrings.len() <= 256.
        let index = i as u8;
        let size =
            vring.size.ok_or(ProtocolError::VringNotConfigured { index, missing: "size" })?;
        let addr =
            vring.addr.ok_or(ProtocolError::VringNotConfigured { index, missing: "address" })?;
        // SET_FEATURES may have switched VIRTIO_F_RING_PACKED since the size and base were
        // checked: both are checked again against the layout the ring starts with.
        let packed = self.is_packed();
        let max = self.spec.max_queue_size;
        if size > max || (!packed && !size.is_power_of_two()) {
            return Err(ProtocolError::InvalidQueueSize { index, num: size, max });
        }
        let base = vring.base.unwrap_or(VringBase(0));
        let fits = if packed {
            // Virtio "Packed Virtqueues": both positions are descriptor indices of the ring.
            let p = base.as_packed();
            p.avail_index < size && p.used_index < size
        } else {
            base.as_split().is_some()
        };
        if !fits {
            return Err(ProtocolError::InvalidVringBase { index, base: base.0 });
        }
        self.translate(code, vring, addr, size)
    }

    /// Spec "Starting and stopping rings": a ring starts when it gets its kick fd; a started ring
    /// that is enabled must be processed at once, even without a kick. Whether the device could
    /// start it is the request's status (REPLY_ACK reports a refusal, never a 0).
    pub(super) fn set_vring_kick(
        &mut self,
        index: VringIndex,
        kick: Option<FdToken>,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        self.start_vring(FrontendCode::SetVringKick, index, kick, need_reply)
    }

    fn start_vring(
        &mut self,
        code: FrontendCode,
        index: VringIndex,
        kick: Option<FdToken>,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let i = self.check_index(code, index)?;
        if self.vrings[i].state.started {
            self.outputs.push_action(Action::ReplaceKick { index, kick });
            return Ok(());
        }
        let config = self.start_config(code, i)?;
        self.vrings[i].running = self.vrings[i].addr;
        if let RingEffect::Start { enabled } = self.apply(i, RingEvent::Start) {
            self.outputs.push_action(Action::StartVring { index, config, kick, enabled });
            self.await_completion(Pending::StartVring { code, index }, need_reply);
        }
        Ok(())
    }

    pub(super) fn vring_kick(
        &mut self,
        index: VringIndex,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::VringKick;
        self.require(code, ProtocolFeatures::INBAND_NOTIFICATIONS, "INBAND_NOTIFICATIONS")?;
        let i = self.check_index(code, index)?;
        if self.vrings[i].state.started {
            self.outputs.push_action(Action::Kick(index));
            Ok(())
        } else {
            // Spec: VRING_KICK also starts a stopped ring.
            self.start_vring(code, index, None, need_reply)
        }
    }

    pub(super) fn set_vring_fd(
        &mut self,
        code: FrontendCode,
        vring: crate::message::VringFd,
    ) -> Result<(), ProtocolError> {
        self.check_index(code, vring.index)?;
        let action = if code == FrontendCode::SetVringErr {
            Action::SetVringErr { index: vring.index, fd: vring.fd }
        } else {
            Action::SetVringCall { index: vring.index, fd: vring.fd }
        };
        self.outputs.push_action(action);
        Ok(())
    }

    pub(super) fn set_vring_enable(
        &mut self,
        index: VringIndex,
        enable: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::SetVringEnable;
        // Spec: SET_VRING_ENABLE is only valid once VHOST_USER_F_PROTOCOL_FEATURES is acked.
        if !self.acked_features_or_empty().contains(VirtioFeatures::PROTOCOL_FEATURES) {
            return Err(ProtocolError::NotNegotiated {
                code,
                feature: "VHOST_USER_F_PROTOCOL_FEATURES",
            });
        }
        let i = self.check_index(code, index)?;
        self.apply(i, RingEvent::SetEnabled(enable));
        Ok(())
    }

    pub(super) fn set_vring_endian(
        &mut self,
        index: VringIndex,
        big_endian: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::SetVringEndian;
        self.require(code, ProtocolFeatures::CROSS_ENDIAN, "CROSS_ENDIAN")?;
        let i = self.check_stopped(code, index)?;
        self.vrings[i].big_endian = big_endian;
        Ok(())
    }

    /// RESET_DEVICE: every ring stopped and disabled with its configuration forgotten.
    pub(super) fn reset_vrings(&mut self) {
        for i in 0..self.vrings.len() {
            self.apply(i, RingEvent::Reset);
            self.vrings[i] = Vring::default();
        }
    }
}
