//! Replies on the main socket: parsed with [`Reply::parse`] (which reads exactly the header's
//! size) and checked against the one request waiting for a reply before anything changes.
//!
//! A reply nobody waits for, a reply to another request, or a payload of the wrong form closes
//! the connection: the stream is no longer in step. A failure the back-end reports (a non-zero
//! status) goes to `Frontend::fail`, which decides. This module must not send anything itself.

use super::error::ShmemConfigProblem;
use super::output::Event;
use super::queue::{Item, Queued};
use super::{Frontend, FrontendError, Phase};
use crate::limits::MAX_MEM_SLOTS;
use crate::message::{Reply, Request, VringAddr, VringFd};
use crate::wire::{self, FrontendCode, ReplyKind};
use crate::{FdToken, VringIndex};

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
            return match (flight.queued, reply) {
                // SET_MEM_TABLE and SET_CONFIG get the REPLY_ACK u64...
                (_, Reply::Ack { status, .. }) if flight.need_reply => {
                    self.in_flight = None;
                    self.handle_status(flight.queued, status);
                    Ok(())
                }
                // ... or, sent in its postcopy form (no NEED_REPLY, yet awaited), the back-end's
                // bases.
                (Queued::MemTable, Reply::MemTableBases(table)) if !flight.need_reply => {
                    self.handle_postcopy_bases(table)?;
                    self.in_flight = None;
                    Ok(())
                }
                (Queued::CryptoSession, Reply::CryptoSession(session)) => {
                    self.in_flight = None;
                    self.handle_crypto_session(session)
                }
                // The back-end answers in order: the request before it was handled.
                (Queued::Barrier(confirmed), Reply::Features(_)) => {
                    self.in_flight = None;
                    self.handle_done(confirmed, true);
                    Ok(())
                }
                _ => Err(unexpected),
            };
        };
        match (request, reply) {
            // POSTCOPY_ADVISE's failure form has no fd: a success needs one.
            (Request::PostcopyAdvise, Reply::Ack { status: 0, .. }) => return Err(unexpected),
            // Requests whose reply can carry a status (CHECK_DEVICE_STATE, POSTCOPY_*,
            // IOTLB_MSG) answer with the u64 whether or not NEED_REPLY was set.
            (_, Reply::Ack { status, .. })
                if flight.need_reply || code.reply_kind() == ReplyKind::WithStatus =>
            {
                self.in_flight = None;
                self.handle_status(flight.queued, status);
            }
            (Request::PostcopyAdvise, Reply::PostcopyAdvise { userfaultfd }) => {
                self.in_flight = None;
                self.postcopy_step_done(code);
                self.queues.push_event(Event::PostcopyAdvised { userfaultfd });
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
                self.config_in.clear();
                // Cannot fail: `size` was checked against MAX_CONFIG_SIZE when the read was sent.
                let _ = self.config_in.extend_from_slice(data);
                self.queues.push(Item::ConfigRead { offset });
            }
            (Request::GetShmemConfig, Reply::ShmemConfig(config)) => {
                self.check_shmem_config(config)
                    .map_err(|problem| FrontendError::ShmemConfigInvalid { problem })?;
                self.in_flight = None;
                self.shmem = Some(*config);
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
            (Request::GetInflightFd(asked), Reply::InflightFd { desc, fd }) => {
                // An area (spec "VHOST_USER_GET_INFLIGHT_FD") for the queues asked about, whose
                // bytes the VMM can map: the front-end hands the description back in
                // SET_INFLIGHT_FD as it came.
                let queues =
                    (desc.num_queues, desc.queue_size) == (asked.num_queues, asked.queue_size);
                // A file ends before 2^63 (`off_t`).
                let end = desc.mmap_offset.checked_add(desc.mmap_size);
                let mappable = end.is_some_and(|end| i64::try_from(end).is_ok());
                if desc.mmap_size != 0 && !(queues && mappable) {
                    let what = "an inflight area for other queues, or past the end of its file";
                    return Err(FrontendError::UnexpectedPayload { code, what });
                }
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

    /// CREATE_CRYPTO_SESSION answered: the session as the back-end set it up, the size of the
    /// one sent (QEMU checks the same). Where the id sits depends on the layout the VMM used, so
    /// the session goes to the VMM whole.
    fn handle_crypto_session(&mut self, session: &[u8]) -> Result<(), FrontendError> {
        let code = FrontendCode::CreateCryptoSession;
        if session.len() != self.crypto.len() {
            return Err(FrontendError::UnexpectedPayload {
                code,
                what: "a session of another size",
            });
        }
        self.crypto.clear();
        // Cannot fail: the session is as long as the one sent, which fitted.
        let _ = self.crypto.try_extend_from_slice(session);
        self.queues.push(Item::CryptoSession);
        Ok(())
    }

    /// A `u64` status answered the request: 0 completes it, anything else is a failure and undoes
    /// what the front-end recorded for it.
    fn handle_status(&mut self, queued: Queued, status: u64) {
        let code = queued.code();
        self.settle_view(code, status != 0);
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
            // A step of a ring's start before its kick: the rest of the start is not sent.
            Queued::Inline(
                Request::SetVringNum { index, .. }
                | Request::SetVringBase { index, .. }
                | Request::SetVringAddr(VringAddr { index, .. })
                | Request::SetVringCall(VringFd { index, .. }),
            ) => self.abort_start(index),
            // A kick that was to start the ring: the device could not, and the back-end holds
            // the ring stopped (a started ring takes a new kick without failing).
            Queued::Inline(
                Request::SetVringKick(VringFd { index, .. }) | Request::VringKick { index },
            ) => self.set_started(index, false),
            _ => {}
        }
        self.fail(FrontendError::Nack { request: code, status });
    }
}

impl Frontend {
    /// A request of ring `index`'s start sequence was refused: the rest of it, up to the kick
    /// and the SET_VRING_ENABLE after it, is not sent (a kick would start the ring with what the
    /// back-end refused, spec "Starting and stopping rings"), its tokens are released and the
    /// ring counts as stopped. A lone request for a running ring, with no kick of its ring
    /// queued right behind it, leaves the queue as it is.
    fn abort_start(&mut self, index: VringIndex) {
        // `start_vring` queues its requests in one piece, so what is left of them is in front.
        let of_ring = |queued: &Queued| match queued {
            Queued::Inline(
                Request::SetVringBase { index: i, .. }
                | Request::SetVringAddr(VringAddr { index: i, .. })
                | Request::SetVringCall(VringFd { index: i, .. }),
            ) => (*i == index).then_some(false),
            Queued::Inline(Request::SetVringKick(VringFd { index: i, .. })) => {
                (*i == index).then_some(true)
            }
            _ => None,
        };
        let mut requests = self.queues.requests.iter();
        let Some(kick) = requests.position(|queued| of_ring(queued) != Some(false)) else {
            return;
        };
        if self.queues.requests.iter().nth(kick).and_then(of_ring) != Some(true) {
            return;
        }
        let enable = Queued::Inline(Request::SetVringEnable { index, enable: true });
        let enable_follows = self.queues.requests.iter().nth(kick + 1) == Some(&enable);
        for _ in 0..=kick + usize::from(enable_follows) {
            if let Some(queued) = self.queues.requests.pop_front() {
                for fd in queued.fds(&self.table_fds) {
                    self.queues.push_close_fd(fd);
                }
            }
        }
        self.set_started(index, false);
    }

    /// Spec "VHOST_USER_GET_SHMEM_CONFIG": `nregions` counts the regions with a size (here: at
    /// least them), every size is a whole number of pages, and a connection's answer never
    /// changes (a VMM lays out its shared-memory regions once, from the first).
    fn check_shmem_config(&self, config: &wire::ShmemConfig) -> Result<(), ShmemConfigProblem> {
        let page_size = self.config.host_page_size;
        let mut sized = 0u32;
        for (shmid, size) in config.memory_sizes.iter().map(|size| size.get()).enumerate() {
            if page_size != 0 && size % page_size != 0 {
                // At most MAX_SHMEM_REGIONS (256) entries: the index fits a u8.
                let shmid = shmid as u8;
                return Err(ShmemConfigProblem::NotPageSized { shmid, size, page_size });
            }
            sized += u32::from(size != 0);
        }
        let nregions = config.nregions.get();
        // More is taken as it is: back-ends that count the table's slots up to the last sized
        // one (rust-vmm's examples) are common, and QEMU reads the sizes regardless. Fewer
        // would leave a sized region out for a front-end that stops after `nregions`.
        if nregions < sized {
            return Err(ShmemConfigProblem::RegionCount { nregions, sized });
        }
        match &self.shmem {
            Some(earlier) if earlier != config => Err(ShmemConfigProblem::Changed),
            _ => Ok(()),
        }
    }
}
