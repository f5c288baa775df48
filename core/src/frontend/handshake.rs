//! The two handshakes that open a session: `connect` (negotiate from what the back-end offers)
//! and `restore` (re-establish saved acked features after a migration or reconnect, asking
//! nothing), and the replies of the negotiation messages.
//!
//! Rules (spec "Feature negotiation", "Protocol features", GET/SET_PROTOCOL_FEATURES): protocol
//! features are negotiated only if the back-end offers VHOST_USER_F_PROTOCOL_FEATURES (bit 30), and
//! before SET_FEATURES; only offered ∩ wanted bits are acked, and only with the bits they depend on
//! (VIRTIO_F_ACCESS_PLATFORM on REPLY_ACK and BACKEND_REQ: [`iotlb_possible`]).
//! This module must not decide NEED_REPLY: `poll_output` does, from what was acked.

use super::output::Negotiated;
use super::{Frontend, FrontendError, Phase, Queued, SUPPORTED_PROTOCOL_FEATURES};
use crate::backend::{broken_dependency, conflict};
use crate::limits::{MAX_MEM_SLOTS, MAX_QUEUES};
use crate::message::Request;
use crate::wire::FrontendCode;
use crate::{FdToken, ProtocolFeatures, VirtioFeatures};

/// Whether the protocol features `acked` let VIRTIO_F_ACCESS_PLATFORM work: the back-end learns
/// translations only by IOTLB_MSG, which needs REPLY_ACK for its status, and asks for missing
/// ones on the back-end channel (BACKEND_REQ). QEMU refuses such a device without both
/// (spec "IOMMU support"); here the feature is not acked, so a VMM offers the guest no IOMMU
/// translation the device could never follow.
pub(super) fn iotlb_possible(acked: ProtocolFeatures) -> bool {
    acked.contains(ProtocolFeatures::REPLY_ACK | ProtocolFeatures::BACKEND_REQ)
}

impl Frontend {
    fn require_idle(&self) -> Result<(), FrontendError> {
        match self.phase {
            Phase::Idle => Ok(()),
            Phase::Closed => Err(FrontendError::Closed),
            Phase::Handshake | Phase::Ready => Err(FrontendError::AlreadyConnected),
        }
    }

    /// Replaces the configuration the handshake will negotiate, before it starts: a front-end
    /// made ahead of time (a client holding one for its connection) is configured in place
    /// instead of built again.
    pub fn configure(&mut self, config: super::FrontendConfig) -> Result<(), FrontendError> {
        self.require_idle()?;
        self.config = config;
        Ok(())
    }

    /// Starts the connect handshake: SET_OWNER, GET_FEATURES, then (from the replies)
    /// GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS,
    /// SET_BACKEND_REQ_FD and SET_FEATURES; [`Event::Connected`](super::Event::Connected)
    /// reports the outcome.
    ///
    /// `backend_channel` is the front-end's end of the back-end channel socket pair: sent with
    /// SET_BACKEND_REQ_FD if BACKEND_REQ gets acked, released otherwise. Without it BACKEND_REQ is
    /// not acked. On `Err` the token stays with the caller.
    pub fn connect(&mut self, backend_channel: Option<FdToken>) -> Result<(), FrontendError> {
        self.require_idle()?;
        self.enqueue(&[Request::SetOwner, Request::GetFeatures])?;
        self.phase = Phase::Handshake;
        self.backend_channel = backend_channel;
        Ok(())
    }

    /// Starts the restore handshake from a saved [`Negotiated`]: SET_OWNER,
    /// SET_PROTOCOL_FEATURES (if bit 30 is in the saved features), SET_BACKEND_REQ_FD (if
    /// BACKEND_REQ is saved) and SET_FEATURES, and no GET_* at all.
    ///
    /// NEED_REPLY follows only from whether the saved protocol features ack REPLY_ACK: every
    /// request after SET_PROTOCOL_FEATURES that has no reply of its own carries it and waits for
    /// the ack. VHOST_F_LOG_ALL is dropped from the saved features (logging starts off). On `Err`
    /// the token stays with the caller.
    pub fn restore(
        &mut self,
        saved: Negotiated,
        backend_channel: Option<FdToken>,
    ) -> Result<(), FrontendError> {
        self.require_idle()?;
        let code = FrontendCode::SetProtocolFeatures;
        let protocol = saved.features.contains(VirtioFeatures::PROTOCOL_FEATURES);
        let acked = saved.protocol_features;
        if !protocol && !acked.is_empty() {
            return Err(FrontendError::NotNegotiated {
                code,
                feature: "VHOST_USER_F_PROTOCOL_FEATURES",
            });
        }
        if !SUPPORTED_PROTOCOL_FEATURES.contains(acked)
            || broken_dependency(acked).is_some()
            || conflict(acked).is_some()
        {
            return Err(FrontendError::InconsistentFeatures(acked));
        }
        let backend_req = acked.contains(ProtocolFeatures::BACKEND_REQ);
        if backend_req && backend_channel.is_none() {
            return Err(FrontendError::NoBackendChannel);
        }
        if saved.features.contains(VirtioFeatures::ACCESS_PLATFORM) && !iotlb_possible(acked) {
            return Err(FrontendError::NotNegotiated {
                code: FrontendCode::SetFeatures,
                feature: "REPLY_ACK and BACKEND_REQ (for VIRTIO_F_ACCESS_PLATFORM)",
            });
        }
        let features = saved.features.difference(VirtioFeatures::LOG_ALL);
        let needed = 2 + usize::from(protocol) + usize::from(backend_req);
        self.queues.reserve(needed)?;
        self.queues.push_request(Queued::Inline(Request::SetOwner));
        if protocol {
            self.queues.push_request(Queued::Inline(Request::SetProtocolFeatures(acked)));
        }
        match backend_channel {
            Some(fd) if backend_req => {
                self.queues.push_request(Queued::Inline(Request::SetBackendReqFd(fd)));
            }
            Some(fd) => self.queues.push_close_fd(fd),
            None => {}
        }
        self.queues.push_request(Queued::Inline(Request::SetFeatures(features)));
        self.negotiated = Negotiated { features, ..saved };
        self.phase = Phase::Handshake;
        Ok(())
    }

    /// GET_FEATURES answered: ack offered ∩ wanted, without VHOST_F_LOG_ALL (and without
    /// VIRTIO_F_ACCESS_PLATFORM where no protocol feature can make it work: [`iotlb_possible`]).
    pub(super) fn handle_features(&mut self, offered: VirtioFeatures) {
        let mut features =
            offered.intersection(self.config.features).difference(VirtioFeatures::LOG_ALL);
        if !features.contains(VirtioFeatures::PROTOCOL_FEATURES) {
            features.remove(VirtioFeatures::ACCESS_PLATFORM);
        }
        self.negotiated.offered_features = offered;
        self.negotiated.features = features;
        if features.contains(VirtioFeatures::PROTOCOL_FEATURES) {
            self.queues.push_request(Queued::Inline(Request::GetProtocolFeatures));
        } else {
            // Spec "Feature negotiation": without bit 30 there is no protocol feature, so no
            // back-end channel either.
            if let Some(fd) = self.backend_channel.take() {
                self.queues.push_close_fd(fd);
            }
            self.queues.push_request(Queued::Inline(Request::SetFeatures(features)));
        }
    }

    /// GET_PROTOCOL_FEATURES answered: ack what is offered, wanted and supported, minus any
    /// feature whose prerequisites are not acked too (spec "Protocol features":
    /// INBAND_NOTIFICATIONS needs BACKEND_REQ and REPLY_ACK, BACKEND_SEND_FD needs BACKEND_REQ,
    /// GET_VRING_BASE_INFLIGHT needs INFLIGHT_SHMFD, ...).
    pub(super) fn handle_protocol_features(&mut self, offered: ProtocolFeatures) {
        let mut acked = offered
            .intersection(self.config.protocol_features)
            .intersection(SUPPORTED_PROTOCOL_FEATURES);
        if self.backend_channel.is_none() {
            acked.remove(ProtocolFeatures::BACKEND_REQ);
        }
        // Spec "Protocol features": postcopy (PAGEFAULT) is forbidden with CONFIGURE_MEM_SLOTS;
        // the first of each conflicting pair goes.
        while let Some((feature, _)) = conflict(acked) {
            acked.remove(feature);
        }
        // Each round removes one bit, so this ends.
        while let Some((feature, _)) = broken_dependency(acked) {
            acked.remove(feature);
        }
        self.negotiated.protocol_features = acked;
        if !iotlb_possible(acked) {
            self.negotiated.features.remove(VirtioFeatures::ACCESS_PLATFORM);
        }
        self.queues.push_request(Queued::Inline(Request::SetProtocolFeatures(acked)));
        if acked.contains(ProtocolFeatures::MQ) {
            self.queues.push_request(Queued::Inline(Request::GetQueueNum));
        }
        if acked.contains(ProtocolFeatures::CONFIGURE_MEM_SLOTS) {
            self.queues.push_request(Queued::Inline(Request::GetMaxMemSlots));
        }
        match self.backend_channel.take() {
            Some(fd) if acked.contains(ProtocolFeatures::BACKEND_REQ) => {
                self.queues.push_request(Queued::Inline(Request::SetBackendReqFd(fd)));
            }
            Some(fd) => self.queues.push_close_fd(fd),
            None => {}
        }
        let features = self.negotiated.features;
        self.queues.push_request(Queued::Inline(Request::SetFeatures(features)));
    }

    /// GET_QUEUE_NUM answered: 1–256 queues are addressable by the vring messages.
    pub(super) fn handle_queue_num(&mut self, queues: u64) -> Result<(), FrontendError> {
        match u16::try_from(queues) {
            Ok(n) if n >= 1 && usize::from(n) <= MAX_QUEUES => {
                self.negotiated.queues = Some(n);
                Ok(())
            }
            _ => Err(FrontendError::OutOfRange {
                code: FrontendCode::GetQueueNum,
                value: queues,
                min: 1,
                max: MAX_QUEUES as u64,
            }),
        }
    }

    /// GET_MAX_MEM_SLOTS answered: capped at the front-end's own table, as QEMU caps it with
    /// `VHOST_USER_MAX_RAM_SLOTS`.
    pub(super) fn handle_max_mem_slots(&mut self, slots: u64) {
        let capped = slots.min(MAX_MEM_SLOTS as u64);
        // Cannot truncate: capped <= MAX_MEM_SLOTS = 512.
        self.negotiated.max_mem_slots = Some(capped as u16);
    }
}
