//! VMM operations on the device as a whole: virtio features and dirty logging (SET_FEATURES),
//! config space (GET/SET_CONFIG), status (SET/GET_STATUS), RESET_DEVICE and the deprecated
//! RESET_OWNER, crypto sessions, shared objects and the device-state transfer
//! (SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE).
//!
//! Each operation checks the feature it needs and the state it is valid in, then queues its
//! requests; the replies are matched in `reply.rs`. This module must not send what was not acked.

use super::queue::Queued;
use super::{Frontend, FrontendError};
use crate::limits::{MAX_CONFIG_SIZE, MAX_CRYPTO_SESSION_SIZE};
use crate::message::{ConfigFlags, Request, TransferDirection, TransferPhase, Uuid};
use crate::wire::FrontendCode;
use crate::{FdToken, ProtocolFeatures, VirtioFeatures, VringIndex};

impl Frontend {
    /// The features SET_FEATURES carries: the acked set, with VHOST_F_LOG_ALL while logging.
    fn wire_features(&self) -> VirtioFeatures {
        let mut features = self.negotiated.features;
        features.set(VirtioFeatures::LOG_ALL, self.logging);
        features
    }

    /// SET_FEATURES with a new acked set, such as the one the guest driver accepted. Bit 30 stays
    /// as negotiated (it can only be acked once, before the rings start) and VHOST_F_LOG_ALL
    /// follows [`Frontend::set_logging`].
    pub fn set_features(&mut self, features: VirtioFeatures) -> Result<(), FrontendError> {
        self.require_ready()?;
        let mut features = features.difference(VirtioFeatures::LOG_ALL);
        features.set(VirtioFeatures::PROTOCOL_FEATURES, self.is_protocol_acked());
        let offered = self.negotiated.offered_features;
        if !offered.contains(features) {
            return Err(FrontendError::FeaturesNotOffered { offered, requested: features });
        }
        let platform = features.contains(VirtioFeatures::ACCESS_PLATFORM);
        if platform && !super::handshake::iotlb_possible(self.negotiated.protocol_features) {
            return Err(FrontendError::NotNegotiated {
                code: FrontendCode::SetFeatures,
                feature: "REPLY_ACK and BACKEND_REQ (for VIRTIO_F_ACCESS_PLATFORM)",
            });
        }
        self.reserve_set_features(self.logging)?;
        self.keep_features_before();
        self.negotiated.features = features;
        self.features_forgotten = false;
        self.push_set_features()
    }

    /// Checks that SET_FEATURES (with logging `on`) and the request confirming it, if it needs
    /// one, fit.
    fn reserve_set_features(&self, on: bool) -> Result<(), FrontendError> {
        let confirmed = on && !self.is_acked(ProtocolFeatures::REPLY_ACK);
        self.queues.reserve(1 + usize::from(confirmed))
    }

    /// SET_FEATURES with the acked set; with VHOST_F_LOG_ALL in it, confirmed by the back-end
    /// before the VMM goes on (spec "Migration": pages written after it returns must be logged).
    fn push_set_features(&mut self) -> Result<(), FrontendError> {
        let request = Request::SetFeatures(self.wire_features());
        if self.logging {
            self.enqueue_confirmed(request)
        } else {
            self.enqueue(&[request])
        }
    }

    /// Turns dirty logging on or off by re-sending SET_FEATURES with or without VHOST_F_LOG_ALL
    /// (spec "Migration"). Set the log area first with [`Frontend::set_log_base`].
    pub fn set_logging(&mut self, on: bool) -> Result<(), FrontendError> {
        self.require_ready()?;
        if !self.negotiated.offered_features.contains(VirtioFeatures::LOG_ALL) {
            return Err(FrontendError::NotNegotiated {
                code: FrontendCode::SetFeatures,
                feature: "VHOST_F_LOG_ALL",
            });
        }
        self.reserve_set_features(on)?;
        self.keep_features_before();
        self.logging = on;
        // The acked features go with it.
        self.features_forgotten = false;
        self.push_set_features()
    }

    /// GET_CONFIG (CONFIG): reads `size` bytes at `offset`, answered with
    /// [`Event::ConfigRead`](super::Event::ConfigRead).
    pub fn get_config(&mut self, offset: u32, size: u32) -> Result<(), FrontendError> {
        self.require(FrontendCode::GetConfig, ProtocolFeatures::CONFIG, "CONFIG")?;
        if size as usize > MAX_CONFIG_SIZE {
            return Err(FrontendError::ConfigTooLarge {
                size: size as usize,
                max: MAX_CONFIG_SIZE,
            });
        }
        let flags = ConfigFlags::Writable;
        self.enqueue(&[Request::GetConfig { offset, size, flags }])
    }

    /// SET_CONFIG (CONFIG): writes `data` at `offset`; `flags` says whether it is a guest write
    /// or a migration restore, which may touch read-only fields.
    pub fn set_config(
        &mut self,
        offset: u32,
        data: &[u8],
        flags: ConfigFlags,
    ) -> Result<(), FrontendError> {
        let code = FrontendCode::SetConfig;
        self.require(code, ProtocolFeatures::CONFIG, "CONFIG")?;
        if data.len() > MAX_CONFIG_SIZE {
            return Err(FrontendError::ConfigTooLarge { size: data.len(), max: MAX_CONFIG_SIZE });
        }
        if self.queues.is_queued(code) {
            return Err(FrontendError::Busy(code));
        }
        self.queues.reserve(1)?;
        self.config_out.clear();
        // Cannot fail: data.len() <= MAX_CONFIG_SIZE, the capacity.
        let _ = self.config_out.extend_from_slice(data);
        self.queues.push_request(Queued::SetConfig { offset, flags });
        Ok(())
    }

    /// SEND_RARP (RARP): a virtio-net back-end broadcasts a RARP for `mac` (after a migration,
    /// so switches learn where the guest went).
    pub fn send_rarp(&mut self, mac: [u8; 6]) -> Result<(), FrontendError> {
        self.require(FrontendCode::SendRarp, ProtocolFeatures::RARP, "RARP")?;
        self.enqueue(&[Request::SendRarp(mac)])
    }

    /// NET_SET_MTU (NET_MTU): the MTU a virtio-net back-end must use.
    pub fn net_set_mtu(&mut self, mtu: u16) -> Result<(), FrontendError> {
        self.require(FrontendCode::NetSetMtu, ProtocolFeatures::NET_MTU, "NET_MTU")?;
        self.enqueue(&[Request::NetSetMtu(mtu)])
    }

    /// SET_VRING_ENDIAN (CROSS_ENDIAN): a legacy ring's byte order, before it starts.
    pub fn set_vring_endian(
        &mut self,
        index: VringIndex,
        big_endian: bool,
    ) -> Result<(), FrontendError> {
        let code = FrontendCode::SetVringEndian;
        self.require(code, ProtocolFeatures::CROSS_ENDIAN, "CROSS_ENDIAN")?;
        self.enqueue(&[Request::SetVringEndian { index, big_endian }])
    }

    /// GPU_SET_SOCKET: the socket of the vhost-user-gpu protocol (handed off).
    pub fn gpu_set_socket(&mut self, fd: FdToken) -> Result<(), FrontendError> {
        self.require_ready()?;
        self.enqueue(&[Request::GpuSetSocket(fd)])
    }

    /// SET_STATUS (STATUS): the virtio device status byte.
    pub fn set_status(&mut self, status: u8) -> Result<(), FrontendError> {
        self.require(FrontendCode::SetStatus, ProtocolFeatures::STATUS, "STATUS")?;
        self.enqueue(&[Request::SetStatus(status)])
    }

    /// GET_SHMEM_CONFIG (SHMEM): the device's shared-memory regions, answered with
    /// [`Event::ShmemConfig`](super::Event::ShmemConfig).
    pub fn get_shmem_config(&mut self) -> Result<(), FrontendError> {
        self.require(FrontendCode::GetShmemConfig, ProtocolFeatures::SHMEM, "SHMEM")?;
        self.enqueue(&[Request::GetShmemConfig])
    }

    /// GET_STATUS (STATUS), answered with [`Event::Status`](super::Event::Status).
    pub fn get_status(&mut self) -> Result<(), FrontendError> {
        self.require(FrontendCode::GetStatus, ProtocolFeatures::STATUS, "STATUS")?;
        self.enqueue(&[Request::GetStatus])
    }

    /// RESET_DEVICE (RESET_DEVICE): the back-end stops and disables every ring and forgets the
    /// acked virtio features and the device state, keeping ownership, protocol features and
    /// memory. Re-send the features with [`Frontend::set_features`] before starting rings again.
    /// A refused reset leaves the front-end counting the rings stopped all the same: how much of
    /// the device a back-end reset before it failed is not said (vhu's own back-end stops the
    /// rings first), so a VMM that needs to be sure connects afresh.
    pub fn reset_device(&mut self) -> Result<(), FrontendError> {
        let code = FrontendCode::ResetDevice;
        self.require(code, ProtocolFeatures::RESET_DEVICE, "RESET_DEVICE")?;
        self.enqueue(&[Request::ResetDevice])?;
        self.forget_view_before();
        self.started = [0; crate::limits::MAX_VRINGS / 64];
        self.logging = false;
        self.features_forgotten = true;
        Ok(())
    }

    /// RESET_OWNER, deprecated: for back-ends without RESET_DEVICE, as QEMU sends it once the
    /// device is stopped. Back-ends differ on what it does (spec: ignore it or disable the
    /// rings; some reset the whole device), so it is sent only while every ring is stopped, and
    /// afterwards re-send the features (and the log area, when logging) and the memory table
    /// before starting rings again. Not during a postcopy episode: end it first.
    pub fn reset_owner(&mut self) -> Result<(), FrontendError> {
        self.require_ready()?;
        if !self.is_suspended() {
            return Err(FrontendError::NotSuspended { code: FrontendCode::ResetOwner });
        }
        // Back-ends differ on whether it ends postcopy too: end it first.
        if self.is_advised() {
            return Err(FrontendError::PostcopyOutOfOrder {
                code: FrontendCode::ResetOwner,
                needs: "POSTCOPY_END",
            });
        }
        // Dirty logging stays as the front-end set it: re-send the log area, or turn logging
        // off, with the features.
        self.enqueue(&[Request::ResetOwner])?;
        self.forget_view_before();
        self.features_forgotten = true;
        Ok(())
    }

    /// CREATE_CRYPTO_SESSION (CRYPTO_SESSION): `session` is the device's session description,
    /// sent as given (for virtio-crypto, QEMU's `VhostUserCryptoSession`: the operation, the
    /// setup data and keys, and the session id the back-end fills in). Answered with
    /// [`Event::CryptoSession`](super::Event::CryptoSession), the session as the back-end
    /// returned it.
    pub fn create_crypto_session(&mut self, session: &[u8]) -> Result<(), FrontendError> {
        let code = FrontendCode::CreateCryptoSession;
        self.require(code, ProtocolFeatures::CRYPTO_SESSION, "CRYPTO_SESSION")?;
        if session.is_empty() || session.len() > MAX_CRYPTO_SESSION_SIZE {
            return Err(FrontendError::PayloadSize {
                code,
                size: session.len(),
                min: 1,
                max: MAX_CRYPTO_SESSION_SIZE,
            });
        }
        // One session at a time: the request and its reply share one buffer.
        if self.is_pending(code) {
            return Err(FrontendError::Busy(code));
        }
        self.queues.reserve(1)?;
        self.crypto.clear();
        // Cannot fail: session.len() <= MAX_CRYPTO_SESSION_SIZE, the capacity.
        let _ = self.crypto.try_extend_from_slice(session);
        self.queues.push_request(Queued::CryptoSession);
        Ok(())
    }

    /// CLOSE_CRYPTO_SESSION (CRYPTO_SESSION): ends the session `id`.
    pub fn close_crypto_session(&mut self, id: u64) -> Result<(), FrontendError> {
        let code = FrontendCode::CloseCryptoSession;
        self.require(code, ProtocolFeatures::CRYPTO_SESSION, "CRYPTO_SESSION")?;
        self.enqueue(&[Request::CloseCryptoSession(id)])
    }

    /// GET_SHARED_OBJECT (SHARED_OBJECT), answered with
    /// [`Event::SharedObject`](super::Event::SharedObject).
    pub fn get_shared_object(&mut self, uuid: Uuid) -> Result<(), FrontendError> {
        let code = FrontendCode::GetSharedObject;
        self.require(code, ProtocolFeatures::SHARED_OBJECT, "SHARED_OBJECT")?;
        self.enqueue(&[Request::GetSharedObject(uuid)])
    }

    /// SET_DEVICE_STATE_FD (DEVICE_STATE): starts saving (`Save`) or loading (`Load`) the
    /// back-end's state over `fd` (handed off), answered with
    /// [`Event::DeviceStateFd`](super::Event::DeviceStateFd). Spec "Migrating back-end state":
    /// only while the device is suspended, so every ring must be stopped first.
    pub fn set_device_state_fd(
        &mut self,
        direction: TransferDirection,
        fd: FdToken,
    ) -> Result<(), FrontendError> {
        let code = FrontendCode::SetDeviceStateFd;
        self.require(code, ProtocolFeatures::DEVICE_STATE, "DEVICE_STATE")?;
        if !self.is_suspended() {
            return Err(FrontendError::NotSuspended { code });
        }
        let phase = TransferPhase::Stopped;
        self.enqueue(&[Request::SetDeviceStateFd { direction, phase, fd }])
    }

    /// CHECK_DEVICE_STATE (DEVICE_STATE): once the transfer reached EOF, asks whether it
    /// succeeded; [`Event::Done`](super::Event::Done) or [`Event::Failed`](super::Event::Failed).
    pub fn check_device_state(&mut self) -> Result<(), FrontendError> {
        let code = FrontendCode::CheckDeviceState;
        self.require(code, ProtocolFeatures::DEVICE_STATE, "DEVICE_STATE")?;
        self.enqueue(&[Request::CheckDeviceState])
    }
}
