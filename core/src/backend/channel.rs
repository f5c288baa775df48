//! The back-end → front-end channel (SET_BACKEND_REQ_FD): the API a device uses to send requests,
//! and the parser of the front-end's answers.
//!
//! Rules (spec "Back-end communication", the BACKEND_* message descriptions): the channel exists
//! only once BACKEND_REQ is acked and its socket arrived; each message's feature must be acked;
//! descriptors need BACKEND_SEND_FD; a suspended device sends nothing. NEED_REPLY is set when
//! REPLY_ACK is acked, and always on BACKEND_SHARED_OBJECT_LOOKUP, whose answer carries the object.
//! A refused call leaves the caller's token with the caller. An accepted one returns the
//! [`BackendRequestId`] its result will carry (see `outstanding.rs`).

use super::output::Output;
use super::outstanding::BackendRequestId;
use super::queue::Item;
use super::Backend;
use crate::message::{BackendReply, BackendRequest, Iotlb, ShmemMapping, Uuid};
use crate::wire::ReplyKind;
use crate::{FdToken, ProtocolError, ProtocolFeatures, VringIndex, WireError};

impl Backend {
    fn send_backend(
        &mut self,
        request: BackendRequest,
        feature: ProtocolFeatures,
        name: &'static str,
    ) -> Result<BackendRequestId, ProtocolError> {
        if !self.backend_channel {
            return Err(ProtocolError::NoBackendChannel);
        }
        if !self.protocol_acked(feature) {
            return Err(ProtocolError::BackendFeature(name));
        }
        if !request.fds().is_empty() && !self.protocol_acked(ProtocolFeatures::BACKEND_SEND_FD) {
            return Err(ProtocolError::BackendFeature("BACKEND_SEND_FD"));
        }
        // Spec "Suspended device state": no back-end requests while suspended.
        if self.is_suspended() {
            return Err(ProtocolError::Suspended);
        }
        let need_reply = self.protocol_acked(ProtocolFeatures::REPLY_ACK)
            || request.code().reply_kind() != ReplyKind::AckOnly;
        let id = self.outstanding.add(request.code(), need_reply)?;
        self.outputs.push(Item::Out(Output::BackendRequest { id, request, need_reply }));
        Ok(id)
    }

    /// BACKEND_CONFIG_CHANGE_MSG: the device config changed (CONFIG).
    pub fn send_config_change(&mut self) -> Result<BackendRequestId, ProtocolError> {
        self.send_backend(BackendRequest::ConfigChangeMsg, ProtocolFeatures::CONFIG, "CONFIG")
    }

    /// BACKEND_SHMEM_MAP: map `fd` into a shared-memory region (SHMEM, BACKEND_SEND_FD).
    pub fn send_shmem_map(
        &mut self,
        mapping: ShmemMapping,
        fd: FdToken,
    ) -> Result<BackendRequestId, ProtocolError> {
        self.send_backend(
            BackendRequest::ShmemMap { mapping, fd },
            ProtocolFeatures::SHMEM,
            "SHMEM",
        )
    }

    /// BACKEND_SHMEM_UNMAP: remove a whole mapping (SHMEM).
    pub fn send_shmem_unmap(
        &mut self,
        mapping: ShmemMapping,
    ) -> Result<BackendRequestId, ProtocolError> {
        self.send_backend(BackendRequest::ShmemUnmap(mapping), ProtocolFeatures::SHMEM, "SHMEM")
    }

    /// BACKEND_SHARED_OBJECT_ADD (SHARED_OBJECT).
    pub fn send_shared_object_add(
        &mut self,
        uuid: Uuid,
    ) -> Result<BackendRequestId, ProtocolError> {
        let request = BackendRequest::SharedObjectAdd(uuid);
        self.send_backend(request, ProtocolFeatures::SHARED_OBJECT, "SHARED_OBJECT")
    }

    /// BACKEND_SHARED_OBJECT_REMOVE (SHARED_OBJECT).
    pub fn send_shared_object_remove(
        &mut self,
        uuid: Uuid,
    ) -> Result<BackendRequestId, ProtocolError> {
        let request = BackendRequest::SharedObjectRemove(uuid);
        self.send_backend(request, ProtocolFeatures::SHARED_OBJECT, "SHARED_OBJECT")
    }

    /// BACKEND_SHARED_OBJECT_LOOKUP (SHARED_OBJECT).
    pub fn send_shared_object_lookup(
        &mut self,
        uuid: Uuid,
    ) -> Result<BackendRequestId, ProtocolError> {
        let request = BackendRequest::SharedObjectLookup(uuid);
        self.send_backend(request, ProtocolFeatures::SHARED_OBJECT, "SHARED_OBJECT")
    }

    /// BACKEND_VRING_HOST_NOTIFIER_MSG: map (`Some(fd)`) or unmap a notifier area (HOST_NOTIFIER).
    pub fn send_host_notifier(
        &mut self,
        index: VringIndex,
        size: u64,
        offset: u64,
        fd: Option<FdToken>,
    ) -> Result<BackendRequestId, ProtocolError> {
        let request = BackendRequest::VringHostNotifierMsg { index, size, offset, fd };
        self.send_backend(request, ProtocolFeatures::HOST_NOTIFIER, "HOST_NOTIFIER")
    }

    /// BACKEND_VRING_CALL: an in-band used-buffer notification (INBAND_NOTIFICATIONS).
    pub fn send_vring_call(
        &mut self,
        index: VringIndex,
    ) -> Result<BackendRequestId, ProtocolError> {
        let feature = ProtocolFeatures::INBAND_NOTIFICATIONS;
        self.send_backend(BackendRequest::VringCall { index }, feature, "INBAND_NOTIFICATIONS")
    }

    /// BACKEND_VRING_ERR: an in-band error notification (INBAND_NOTIFICATIONS).
    pub fn send_vring_err(&mut self, index: VringIndex) -> Result<BackendRequestId, ProtocolError> {
        let feature = ProtocolFeatures::INBAND_NOTIFICATIONS;
        self.send_backend(BackendRequest::VringErr { index }, feature, "INBAND_NOTIFICATIONS")
    }

    /// BACKEND_IOTLB_MSG: an IOTLB miss or access failure (needs ACCESS_PLATFORM acked; sent
    /// only with BACKEND_REQ, which QEMU requires for IOMMU devices).
    pub fn send_iotlb(&mut self, msg: Iotlb) -> Result<BackendRequestId, ProtocolError> {
        if !self.acked_features_or_empty().contains(crate::VirtioFeatures::ACCESS_PLATFORM) {
            return Err(ProtocolError::BackendFeature("VIRTIO_F_ACCESS_PLATFORM"));
        }
        self.send_backend(
            BackendRequest::IotlbMsg(msg),
            ProtocolFeatures::BACKEND_REQ,
            "BACKEND_REQ",
        )
    }

    /// Parses the front-end's answer to a back-end request. Tokens in the answer belong to the
    /// caller.
    pub fn parse_backend_reply(frame: &[u8], fds: &[FdToken]) -> Result<BackendReply, WireError> {
        BackendReply::parse(frame, fds)
    }
}
