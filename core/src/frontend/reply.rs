//! Replies on the main socket: parsed with [`Reply::parse`] (which reads exactly the header's
//! size) and checked against the one request waiting for a reply before anything changes.
//!
//! A reply nobody waits for, a reply to another request, or a payload of the wrong form closes
//! the connection: the stream is no longer in step. A failure the back-end reports (a non-zero
//! status) goes to `Frontend::fail`, which decides. This module must not send anything itself.

use super::output::Event;
use super::queue::{Item, Queued};
use super::{Frontend, FrontendError, Phase};
use crate::limits::MAX_MEM_SLOTS;
use crate::message::{Reply, Request};
use crate::wire::FrontendCode;
use crate::FdToken;

/// A name for a reply form, for [`FrontendError::UnexpectedPayload`].
fn form(reply: &Reply<'_>) -> &'static str {
    match reply {
        Reply::Ack { .. } => "a u64 status",
        Reply::MemTableBases(_) => "postcopy region bases",
        Reply::AddMemRegBase(_) => "a postcopy region base",
        _ => "another reply form",
    }
}

impl Frontend {
    /// Handles one complete reply frame from the main socket and the descriptors that arrived
    /// with it.
    ///
    /// A failure the back-end reports is an [`Event::Failed`] and returns `Ok`. An `Err` means
    /// the reply was refused: its tokens are released and, unless the connection was already
    /// closed, an [`Output::Close`](super::Output::Close) is queued.
    pub fn handle_reply(&mut self, frame: &[u8], fds: &[FdToken]) -> Result<(), FrontendError> {
        if self.phase == Phase::Closed {
            self.release(fds);
            return Err(FrontendError::Closed);
        }
        self.accept_reply(frame, fds).inspect_err(|error| {
            self.release(fds);
            self.close(*error);
        })
    }

    /// Checks the reply and acts on it. Returns `Err` only before any token was handed off.
    fn accept_reply(&mut self, frame: &[u8], fds: &[FdToken]) -> Result<(), FrontendError> {
        let reply = Reply::parse(frame, fds)?;
        let code = reply.code();
        let Some(flight) = self.in_flight.filter(|f| f.awaits) else {
            return Err(FrontendError::UnexpectedReply { code });
        };
        let expected = flight.queued.code();
        if code != expected {
            return Err(FrontendError::WrongReply { expected, got: code });
        }
        let unexpected = FrontendError::UnexpectedPayload { code, what: form(&reply) };
        let Queued::Inline(request) = flight.queued else {
            // SET_MEM_TABLE and SET_CONFIG only ever get the REPLY_ACK u64.
            return match reply {
                Reply::Ack { status, .. } if flight.need_reply => {
                    self.in_flight = None;
                    self.handle_status(flight.queued, status);
                    Ok(())
                }
                _ => Err(unexpected),
            };
        };
        match (request, reply) {
            // CHECK_DEVICE_STATE always answers with a u64 (spec "Migrating back-end state").
            (_, Reply::Ack { status, .. })
                if flight.need_reply || code == FrontendCode::CheckDeviceState =>
            {
                self.in_flight = None;
                self.handle_status(flight.queued, status);
            }
            (Request::GetFeatures, Reply::Features(offered)) => {
                self.in_flight = None;
                self.handle_features(offered);
            }
            (Request::GetProtocolFeatures, Reply::ProtocolFeatures(offered)) => {
                self.in_flight = None;
                self.handle_protocol_features(offered);
            }
            (Request::GetQueueNum, Reply::QueueNum(queues)) => {
                self.handle_queue_num(queues)?;
                self.in_flight = None;
            }
            (Request::GetMaxMemSlots, Reply::MaxMemSlots(slots)) => {
                self.in_flight = None;
                self.handle_max_mem_slots(slots);
            }
            (Request::GetVringBase { index }, Reply::VringBase { index: got, base })
            | (
                Request::GetVringBaseSkipDrain { index },
                Reply::VringBaseSkipDrain { index: got, base },
            ) => {
                if got != index {
                    return Err(FrontendError::WrongVring { code, expected: index.0, got: got.0 });
                }
                self.in_flight = None;
                self.queues.push_event(Event::VringStopped { index, base });
            }
            (Request::GetConfig { offset, size, .. }, Reply::Config { offset: got, data, .. }) => {
                if data.is_empty() {
                    // Spec GET_CONFIG: a reply of size 0 is the back-end's failure answer.
                    self.in_flight = None;
                    self.fail(FrontendError::ConfigReadFailed { offset, size });
                    return Ok(());
                }
                if got != offset || data.len() != size as usize {
                    return Err(FrontendError::ConfigMismatch {
                        offset,
                        size,
                        got_offset: got,
                        got: data.len(),
                    });
                }
                self.in_flight = None;
                self.config_in[..data.len()].copy_from_slice(data);
                self.config_in_len = data.len();
                self.queues.push(Item::ConfigRead { offset });
            }
            (Request::GetShmemConfig, Reply::ShmemConfig(config)) => {
                self.in_flight = None;
                self.shmem = *config;
                self.queues.push(Item::ShmemConfig);
            }
            (Request::GetStatus, Reply::Status(status)) => {
                self.in_flight = None;
                self.queues.push_event(Event::Status(status));
            }
            // The SET_LOG_BASE reply payload is not specified (DPDK sends 0 bytes, libvhost-user
            // 8, rust-vmm 16): any size means "done".
            (Request::SetLogBase(_), Reply::LogBase(_)) => {
                self.in_flight = None;
                self.handle_done(code, true);
            }
            (Request::GetInflightFd(_), Reply::InflightFd { desc, fd }) => {
                self.in_flight = None;
                self.queues.push_event(Event::InflightFd { desc, fd });
            }
            (Request::SetDeviceStateFd { direction, .. }, Reply::DeviceStateFd { error, fd }) => {
                self.in_flight = None;
                if error == 0 {
                    self.queues.push_event(Event::DeviceStateFd { direction, fd });
                } else {
                    if let Some(fd) = fd {
                        self.queues.push_close_fd(fd);
                    }
                    self.fail(FrontendError::Nack { request: code, status: u64::from(error) });
                }
            }
            (Request::GetSharedObject(uuid), Reply::SharedObject { status, fd }) => {
                self.in_flight = None;
                match (status, fd) {
                    (0, Some(fd)) => self.queues.push_event(Event::SharedObject { uuid, fd }),
                    (status, fd) => {
                        if let Some(fd) = fd {
                            self.queues.push_close_fd(fd);
                        }
                        let status = status.max(1);
                        self.fail(FrontendError::Nack { request: code, status });
                    }
                }
            }
            _ => return Err(unexpected),
        }
        Ok(())
    }

    /// A `u64` status answered the request: 0 completes it, anything else is a failure and undoes
    /// what the front-end recorded for it.
    fn handle_status(&mut self, queued: Queued, status: u64) {
        let code = queued.code();
        if status == 0 {
            self.handle_done(code, true);
            return;
        }
        match queued {
            Queued::Inline(Request::AddMemReg { region, .. }) => {
                // The back-end did not map it: the slot is free again.
                let _ = self.regions.remove(&region);
            }
            Queued::Inline(Request::RemMemReg { region, .. }) => {
                // The back-end still maps it. Should a region added since overlap it, the table
                // keeps the newer one and the error event tells the VMM.
                let _ = self.regions.add(region, MAX_MEM_SLOTS);
            }
            _ => {}
        }
        self.fail(FrontendError::Nack { request: code, status });
    }
}
