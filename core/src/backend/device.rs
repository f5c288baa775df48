//! Back-end handlers for the device-level messages: config space, status, reset, shared objects,
//! device-state transfer, IOTLB and the net-only messages; and the completions of all pending
//! requests.

use super::output::{Action, Completion};
use super::queue::Item;
use super::{Backend, Pending};
use crate::message::{
    ConfigFlags, InflightDesc, Iotlb, Reply, TransferDirection, TransferPhase, Uuid,
};
use crate::protocol_error::{reply_kind, ReplyKind};
use crate::vring::RingEvent;
use crate::wire::{self, FrontendCode};
use crate::{FdToken, ProtocolError, ProtocolFeatures, VirtioFeatures};

impl Backend {
    /// The `u64` ack of a request without a reply of its own, when NEED_REPLY asks for it.
    pub(super) fn ack(&mut self, code: FrontendCode, need_reply: bool) {
        if need_reply || reply_kind(code) == ReplyKind::WithStatus {
            self.outputs.push_reply(Reply::Ack { request: code, status: 0 });
        }
    }

    fn check_config_range(&self, offset: u32, size: u32) -> Result<(), ProtocolError> {
        let config_size = self.spec.config_size;
        match offset.checked_add(size) {
            Some(end) if end <= config_size => Ok(()),
            _ => Err(ProtocolError::ConfigOutOfRange { offset, size, config_size }),
        }
    }

    pub(super) fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        flags: ConfigFlags,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        self.require(FrontendCode::GetConfig, ProtocolFeatures::CONFIG, "CONFIG")?;
        self.check_config_range(offset, size)?;
        self.outputs.push_action(Action::ReadConfig { offset, size });
        self.await_completion(Pending::ConfigRead { offset, size, flags }, need_reply);
        Ok(())
    }

    pub(super) fn set_config(
        &mut self,
        offset: u32,
        flags: ConfigFlags,
        data: &[u8],
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::SetConfig;
        self.require(code, ProtocolFeatures::CONFIG, "CONFIG")?;
        // Cannot truncate: the parser bounds config data by MAX_CONFIG_SIZE.
        self.check_config_range(offset, data.len() as u32)?;
        self.config[..data.len()].copy_from_slice(data);
        self.config_len = data.len();
        let migration = flags == ConfigFlags::Migration;
        self.outputs.push(Item::WriteConfig { offset, migration });
        self.await_completion(Pending::Status(code), need_reply);
        Ok(())
    }

    pub(super) fn set_status(&mut self, status: u8) -> Result<(), ProtocolError> {
        self.require(FrontendCode::SetStatus, ProtocolFeatures::STATUS, "STATUS")?;
        self.status = status;
        self.outputs.push_action(Action::SetStatus(status));
        Ok(())
    }

    pub(super) fn get_status(&mut self) -> Result<(), ProtocolError> {
        self.require(FrontendCode::GetStatus, ProtocolFeatures::STATUS, "STATUS")?;
        self.outputs.push_reply(Reply::Status(self.status));
        Ok(())
    }

    /// RESET_DEVICE: rings disabled and stopped, acked features and status reset, ownership,
    /// protocol features and memory kept (spec RESET_DEVICE).
    pub(super) fn reset_device(&mut self, need_reply: bool) -> Result<(), ProtocolError> {
        let code = FrontendCode::ResetDevice;
        self.require(code, ProtocolFeatures::RESET_DEVICE, "RESET_DEVICE")?;
        self.reset_vrings();
        self.acked_features = None;
        if self.logging {
            // VHOST_F_LOG_ALL goes with the acked features.
            self.logging = false;
            self.outputs.push_action(Action::SetLogging(false));
        }
        self.status = 0;
        self.outputs.push_action(Action::ResetDevice);
        // The ack waits for the reset (its rings stopped): a front-end that goes on with
        // SET_FEATURES and new rings must not meet queues of the old device.
        self.await_completion(Pending::Status(code), need_reply);
        Ok(())
    }

    pub(super) fn set_backend_req_fd(
        &mut self,
        fd: FdToken,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::SetBackendReqFd;
        self.require(code, ProtocolFeatures::BACKEND_REQ, "BACKEND_REQ")?;
        // Requests on the old channel will never be answered, and the old channel is gone
        // whether or not the driver can use the new one.
        self.lose_outstanding();
        self.backend_channel = false;
        self.outputs.push_action(Action::SetBackendChannel(fd));
        self.await_completion(Pending::BackendChannel, need_reply);
        Ok(())
    }

    pub(super) fn get_shared_object(
        &mut self,
        uuid: Uuid,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::GetSharedObject;
        self.require(code, ProtocolFeatures::SHARED_OBJECT, "SHARED_OBJECT")?;
        self.outputs.push_action(Action::GetSharedObject(uuid));
        self.await_completion(Pending::SharedObject, need_reply);
        Ok(())
    }

    pub(super) fn set_device_state_fd(
        &mut self,
        direction: TransferDirection,
        phase: TransferPhase,
        fd: FdToken,
        need_reply: bool,
    ) -> Result<(), ProtocolError> {
        let code = FrontendCode::SetDeviceStateFd;
        self.require(code, ProtocolFeatures::DEVICE_STATE, "DEVICE_STATE")?;
        // Spec "Migrating back-end state": only while the device is suspended.
        if !self.is_suspended() {
            return Err(ProtocolError::NotSuspended { code });
        }
        self.outputs.push_action(Action::SetDeviceStateFd { direction, phase, fd });
        self.await_completion(Pending::DeviceState, need_reply);
        Ok(())
    }

    pub(super) fn check_device_state(&mut self, need_reply: bool) -> Result<(), ProtocolError> {
        let code = FrontendCode::CheckDeviceState;
        self.require(code, ProtocolFeatures::DEVICE_STATE, "DEVICE_STATE")?;
        self.outputs.push_action(Action::CheckDeviceState);
        self.await_completion(Pending::Status(code), need_reply);
        Ok(())
    }

    pub(super) fn get_shmem_config(&mut self) -> Result<(), ProtocolError> {
        self.require(FrontendCode::GetShmemConfig, ProtocolFeatures::SHMEM, "SHMEM")?;
        self.shmem = Some(wire::ShmemConfig::from_sizes(&self.spec.shmem_sizes));
        self.outputs.push(Item::ShmemReply);
        Ok(())
    }

    pub(super) fn iotlb_msg(&mut self, msg: Iotlb, need_reply: bool) -> Result<(), ProtocolError> {
        let code = FrontendCode::IotlbMsg;
        if !self.acked_features_or_empty().contains(VirtioFeatures::ACCESS_PLATFORM) {
            return Err(ProtocolError::NotNegotiated { code, feature: "VIRTIO_F_ACCESS_PLATFORM" });
        }
        self.outputs.push_action(Action::Iotlb(msg));
        self.await_completion(Pending::Status(code), need_reply);
        Ok(())
    }

    pub(super) fn send_rarp(&mut self, mac: [u8; 6]) -> Result<(), ProtocolError> {
        self.require(FrontendCode::SendRarp, ProtocolFeatures::RARP, "RARP")?;
        self.outputs.push_action(Action::SendRarp(mac));
        Ok(())
    }

    pub(super) fn net_set_mtu(&mut self, mtu: u16) -> Result<(), ProtocolError> {
        self.require(FrontendCode::NetSetMtu, ProtocolFeatures::NET_MTU, "NET_MTU")?;
        self.outputs.push_action(Action::SetMtu(mtu));
        Ok(())
    }

    /// Answers a pending request with the driver's completion.
    pub(super) fn complete(
        &mut self,
        pending: Pending,
        need_reply: bool,
        completion: Completion<'_>,
    ) -> Result<(), ProtocolError> {
        match (pending, completion) {
            (Pending::MemTable, Completion::Done(result)) if !self.postcopy.is_listening() => {
                self.commit_mem_table(result, need_reply);
            }
            (Pending::MemTable, Completion::PostcopyMapped(result))
                if self.postcopy.is_listening() =>
            {
                self.commit_postcopy_table(result);
            }
            (Pending::Userfaultfd, Completion::Userfaultfd(result)) => {
                self.outputs.push_reply(match result {
                    Ok(userfaultfd) => Reply::PostcopyAdvise { userfaultfd },
                    Err(status) => {
                        Reply::Ack { request: FrontendCode::PostcopyAdvise, status: status.max(1) }
                    }
                });
            }
            (Pending::AddRegion(region), Completion::Done(result)) => {
                self.commit_add_region(region, result, need_reply);
            }
            (Pending::Log, Completion::Done(Ok(()))) => self.outputs.push(Item::LogReply),
            (Pending::Log, Completion::Done(Err(status))) => {
                // The SET_LOG_BASE reply cannot say "failed": without a log, migration must not
                // go on believing pages are tracked.
                let code = FrontendCode::SetLogBase;
                self.outputs.push_close(ProtocolError::DeviceFailed { code, status });
            }
            (
                Pending::StopVring { index, skip_drain },
                Completion::VringStopped { index: i, base },
            ) if i == index => {
                if let Some(vring) = self.vrings.get_mut(usize::from(index.0)) {
                    vring.base = Some(base);
                }
                self.push_vring_base(index, base, skip_drain);
            }
            (Pending::ConfigRead { offset, size, flags }, Completion::ConfigRead(data)) => {
                match data.filter(|d| d.len() == size as usize) {
                    Some(data) => {
                        self.config[..data.len()].copy_from_slice(data);
                        self.config_len = data.len();
                    }
                    // An empty payload is the spec's failure answer to GET_CONFIG.
                    None => self.config_len = 0,
                }
                self.outputs.push(Item::ConfigReply { offset, flags });
            }
            (Pending::BackendChannel, Completion::Done(result)) => {
                // REPLY_ACK's status says whether the back-end can use the channel (spec
                // "VHOST_USER_PROTOCOL_F_REPLY_ACK"): a descriptor the driver refused leaves none.
                let code = FrontendCode::SetBackendReqFd;
                match result {
                    Ok(()) => {
                        self.backend_channel = true;
                        self.ack(code, need_reply);
                    }
                    Err(status) => {
                        self.nack(code, need_reply, &ProtocolError::DeviceFailed { code, status })
                    }
                }
            }
            (Pending::Status(code), Completion::Done(Ok(()))) => {
                self.postcopy_step_done(code);
                self.ack(code, need_reply);
            }
            (Pending::Status(code), Completion::Done(Err(status))) => {
                self.nack(code, need_reply, &ProtocolError::DeviceFailed { code, status });
            }
            (Pending::MoveVring(addr), Completion::Done(Ok(()))) => {
                if let Some(vring) = self.vrings.get_mut(usize::from(addr.index.0)) {
                    vring.running = Some(addr);
                }
                self.ack(FrontendCode::SetVringAddr, need_reply);
            }
            // The device runs the ring where it ran (`Vring::running`), which a later
            // SET_VRING_ADDR compares with; a restart takes the front-end's latest addresses.
            (Pending::MoveVring(_), Completion::Done(Err(status))) => {
                let code = FrontendCode::SetVringAddr;
                self.nack(code, need_reply, &ProtocolError::DeviceFailed { code, status });
            }
            (Pending::StartVring { code, .. }, Completion::Done(Ok(()))) => {
                self.ack(code, need_reply)
            }
            (Pending::StartVring { code, index }, Completion::Done(Err(status))) => {
                // Spec "Starting and stopping rings": a ring the device could not start is
                // stopped, so the front-end can set it up again and start it with a new kick.
                let i = usize::from(index.0);
                if i < self.vrings.len() {
                    self.apply(i, RingEvent::Stop);
                }
                self.nack(code, need_reply, &ProtocolError::DeviceFailed { code, status });
            }
            (Pending::Inflight(desc), Completion::InflightAllocated(result)) => {
                let reply = match result {
                    Ok((fd, mmap_offset)) if desc.mmap_size != 0 => Reply::InflightFd {
                        desc: InflightDesc { mmap_offset, ..desc },
                        fd: Some(fd),
                    },
                    // A zero-sized area never carries an fd (QEMU then goes on without one).
                    Ok((fd, _)) => {
                        self.outputs.push_action(Action::CloseFd(fd));
                        Reply::InflightFd { desc, fd: None }
                    }
                    // A zero-sized area without fd: QEMU then goes on without inflight tracking.
                    Err(_) => {
                        Reply::InflightFd { desc: InflightDesc { mmap_size: 0, ..desc }, fd: None }
                    }
                };
                self.outputs.push_reply(reply);
            }
            (Pending::DeviceState, Completion::DeviceStateFd(result)) => {
                let reply = match result {
                    Ok(fd) => Reply::DeviceStateFd { error: 0, fd },
                    Err(error) => Reply::DeviceStateFd { error: error.max(1), fd: None },
                };
                self.outputs.push_reply(reply);
            }
            (Pending::SharedObject, Completion::SharedObject(result)) => {
                let reply = match result {
                    Ok(fd) => Reply::SharedObject { status: 0, fd: Some(fd) },
                    Err(status) => Reply::SharedObject { status: status.max(1), fd: None },
                };
                self.outputs.push_reply(reply);
            }
            (pending, completion) => {
                self.release_completion_fds(&completion);
                self.pending = Some((pending, need_reply));
                return Err(ProtocolError::UnexpectedCompletion);
            }
        }
        Ok(())
    }
}
