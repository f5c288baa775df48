//! Carrying out one `Action` on an [`Executor`]: guest memory, per-ring eventfds, device calls, inflight areas,
//! device-state transfers, the back-end channel socket and descriptor releases.
//!
//! Every descriptor token an action hands off is taken out of the table here (kept or closed).
//! Every action that completes records exactly one `Owed` completion, success or failure. Local
//! failures become errno-like statuses; whether a failure is answered or closes the connection is
//! the back-end's decision.
//!
//! This module must not validate requests (core did) nor reorder actions.

use std::borrow::BorrowMut;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use vhu_core::backend::{Action, VringConfig};
use vhu_core::limits::MAX_CONFIG_SIZE;
use vhu_core::message::VringBase;
use vhu_core::{FdToken, VringIndex};

use super::channel::channel_socket;
use super::executor::{ChannelChange, Executor, Kind, Run, Staged, Transfers};
use super::status::{EBADF, EINVAL, EIO, ENOENT, ENOTSUP};
use super::stops::QueueStopped;
use super::transfer::{self, Transfer};
use crate::device::{Device, DeviceError, Queue};
use crate::dirty::LogArea;
use crate::memory::MemoryError;
use crate::virtq::inflight::InflightArea;

impl<D: Device + ?Sized, H: BorrowMut<D>> Executor<D, H> {
    /// Carries out one action of `Backend::poll_output`, recording the completion it owes.
    pub fn execute(&mut self, action: Action<'_>) {
        match action {
            // A new table: its regions are collected and swapped in whole (`commit_memory`).
            Action::UnmapAll => self.staged = Some(Staged::default()),
            Action::MapRegion { region, fd } => {
                let fd = self.fds.take(fd);
                if let Some(staged) = &mut self.staged {
                    match fd {
                        Some(fd) => staged.regions.push((region, fd)),
                        None => staged.failed = staged.failed.or(Some(EBADF)),
                    }
                    return;
                }
                let result = match fd {
                    Some(fd) => self.memory.add(&region, fd).map_err(|e| memory_status(&e)),
                    None => Err(EBADF),
                };
                self.owe(Kind::Done(result));
            }
            Action::UnmapRegion(region) => {
                // Core removed the region from its table; a map that does not have it is
                // already in the state core wants.
                let _ = self.memory.remove(region.guest_address, region.size);
            }
            Action::MapLog { fd, mmap_size, mmap_offset } => {
                let result = match self.fds.take(fd) {
                    Some(fd) => LogArea::map(fd, mmap_size, mmap_offset)
                        .map(|area| self.memory.log().set_area(area))
                        .map_err(|error| {
                            log::warn!("SET_LOG_BASE refused: {error}");
                            error.errno()
                        }),
                    None => Err(EBADF),
                };
                self.owe(Kind::Done(result));
            }
            Action::SetLogFd(fd) => {
                let notify = self.take_optional(Some(fd));
                self.memory.log().set_notify(notify);
            }
            Action::SetLogging(on) => self.memory.log().set_logging(on),
            Action::SendRarp(_) | Action::SetMtu(_) => {}
            Action::FeaturesAcked(features) => self.device.borrow_mut().acked_features(features),
            Action::StartVring { index, config, kick, enabled } => {
                self.abandon_transfer("a ring started while the device state was moving");
                let kick = self.take_optional(kick);
                let result = self.start_vring(index, config, kick, enabled);
                self.owe(Kind::Done(result));
            }
            Action::ReplaceKick { index, kick } => {
                let kick = self.take_optional(kick);
                if self.is_running(index) {
                    self.device.borrow_mut().replace_kick(index, kick);
                }
            }
            Action::UpdateVring { index, config, logging_only } => {
                let result = if self.is_running(index) {
                    let device = self.device.borrow_mut();
                    device.update_queue(index, config, logging_only).map_err(|e| e.status())
                } else {
                    // Core moves started rings only; a ring the device is not running has
                    // nothing to move.
                    Ok(())
                };
                self.owe(Kind::Done(result));
            }
            Action::SetVringEnabled { index, enabled } => {
                if self.is_running(index) {
                    self.rings[usize::from(index.0)].enabled = enabled;
                    self.device.borrow_mut().set_queue_enabled(index, enabled);
                }
            }
            Action::StopVring { index, drain } => match self.stops.clone() {
                Some(inbox) if self.is_running(index) => {
                    // The device reports when the queue stopped; the completion waits till then.
                    self.rings[usize::from(index.0)].run = Run::Stopped;
                    self.rings[usize::from(index.0)].enabled = false;
                    self.awaiting_stop = true;
                    let done = QueueStopped::new(inbox, index);
                    self.device.borrow_mut().stop_queue_then(index, drain, done);
                    self.collect_stop();
                }
                _ => match self.stop_vring(index, drain) {
                    Some(base) => self.owe(Kind::Stopped { index, base }),
                    None => self.lost_stop = Some(index),
                },
            },
            Action::SetVringCall { index, fd } => {
                let fd = self.take_optional(fd);
                let running = self.is_running(index);
                if let Some(ring) = self.rings.get(usize::from(index.0)) {
                    drop(ring.call.set(fd));
                    // A used buffer the device signalled on the old descriptor just before the
                    // swap would never reach the guest: one notification on the new one covers
                    // it (a spurious one costs the driver a look at the used ring).
                    if running && ring.enabled {
                        let _ = ring.call.notify();
                    }
                }
            }
            Action::SetVringErr { index, fd } => {
                let fd = self.take_optional(fd);
                if let Some(ring) = self.rings.get(usize::from(index.0)) {
                    drop(ring.err.set(fd));
                }
            }
            Action::Kick(index) => {
                if self.is_running(index) {
                    self.device.borrow_mut().kick(index);
                }
            }
            Action::ReadConfig { offset, size } => {
                // `Backend` asks for at most the config space, which is at most
                // MAX_CONFIG_SIZE; a larger size would be a failed read, never a panic.
                let mut data = [0; MAX_CONFIG_SIZE];
                let len = size as usize;
                let read = match data.get_mut(..len) {
                    Some(bytes) => self.device.borrow_mut().read_config(offset, bytes),
                    None => Err(DeviceError::Unsupported),
                };
                self.owe(Kind::Config(read.ok().map(|()| (data, len))));
            }
            Action::WriteConfig { offset, data, migration } => {
                let result = self.device.borrow_mut().write_config(offset, data, migration);
                self.owe(Kind::Done(result.map_err(|e| e.status())));
            }
            Action::SetStatus(status) => self.device.borrow_mut().set_status(status),
            Action::ResetDevice => self.reset_device(),
            Action::AllocateInflight { mmap_size, .. } => {
                let result = self.allocate_inflight(mmap_size);
                self.owe(Kind::Inflight(result));
            }
            Action::SetInflight { desc, fd } => {
                let result = match self.fds.take(fd) {
                    Some(fd) => match InflightArea::map(fd, desc) {
                        Ok(area) => {
                            self.inflight = Some(area);
                            Ok(())
                        }
                        Err(error) => {
                            log::warn!("SET_INFLIGHT_FD: {error}");
                            Err(error.errno())
                        }
                    },
                    None => Err(EBADF),
                };
                self.owe(Kind::Done(result));
            }
            Action::SetBackendChannel(fd) => {
                let socket = self.fds.take(fd).ok_or(EBADF).and_then(channel_socket);
                let (change, result) = match socket {
                    Ok(socket) => (ChannelChange::Open(socket), Ok(())),
                    Err(status) => (ChannelChange::Closed, Err(status)),
                };
                self.channel = Some(change);
                self.owe(Kind::Done(result));
            }
            Action::Iotlb(_) => self.owe(Kind::Done(Err(ENOTSUP))),
            Action::GetSharedObject(_) => self.owe(Kind::SharedObject(Err(ENOENT))),
            Action::SetDeviceStateFd { direction, fd, .. } => {
                let fd = self.fds.take(fd);
                // A new transfer asked for: the last one, finished or under way (an event
                // loop's), is no longer what CHECK_DEVICE_STATE reports, whether or not this one
                // is taken.
                if let Transfers::Supported { pending, result } = &mut self.transfers {
                    *result = None;
                    if pending.take().is_some() {
                        self.transfers_done += 1;
                    }
                }
                let result = match (&mut self.transfers, fd) {
                    // A refused transfer's descriptor is closed here.
                    (Transfers::Refused, _) => Err(ENOTSUP as u8),
                    (Transfers::Supported { .. }, None) => Err(EBADF as u8),
                    (Transfers::Supported { .. }, Some(fd)) if !transfer::is_stream(fd.as_fd()) => {
                        log::warn!("SET_DEVICE_STATE_FD refused: the descriptor is not a pipe");
                        Err(EINVAL as u8)
                    }
                    (Transfers::Supported { pending, .. }, Some(fd)) => {
                        // Only a blocking session is held up by a slow transfer.
                        let whole = self.stops.is_none().then_some(super::TRANSFER_DEADLINE);
                        *pending = Some(Transfer::new(direction, fd, whole));
                        Ok(None)
                    }
                };
                self.owe(Kind::DeviceState(result));
            }
            Action::CheckDeviceState => {
                // A front-end checks once its end is done: what is left in the pipe is read (or
                // written) now, waiting no longer than a transfer may. An event loop never waits:
                // a pipe that is not done by now (the front-end kept its end open) fails the check.
                let wait = if self.stops.is_some() {
                    std::time::Duration::ZERO
                } else {
                    super::TRANSFER_TIMEOUT
                };
                self.run_transfer(wait);
                let outcome = match &mut self.transfers {
                    Transfers::Supported { result, .. } => result.take(),
                    Transfers::Refused => None,
                };
                let result = match outcome {
                    Some(Ok(())) => Ok(()),
                    Some(Err(error)) => Err(error.status()),
                    None => Err(EINVAL),
                };
                self.owe(Kind::Done(result));
            }
            // Postcopy migration (userfaultfd) is not implemented by this driver.
            Action::PostcopyAdvise => self.owe(Kind::Userfaultfd(Err(ENOTSUP))),
            Action::PostcopyListen | Action::PostcopyEnd => self.owe(Kind::Done(Err(ENOTSUP))),
            Action::CloseFd(token) => {
                self.fds.release(token);
            }
        }
    }

    /// Takes a ring's kick, call or err eventfd, or the dirty log's, out of the table, made
    /// non-blocking: the front-end chose how it was opened, and a blocking eventfd whose counter
    /// it filled (or a pipe it never reads) must not hang a worker or the driver when signalled
    /// or drained.
    fn take_optional(&mut self, token: Option<FdToken>) -> Option<OwnedFd> {
        let fd = token.and_then(|token| self.fds.take(token))?;
        // An fd that cannot be made non-blocking is not used at all.
        rustix::io::ioctl_fionbio(&fd, true).ok().map(|()| fd)
    }

    fn is_running(&self, index: VringIndex) -> bool {
        matches!(self.rings.get(usize::from(index.0)).map(|r| r.run), Some(Run::Running))
    }

    /// Hands the ring to the device; the failure status if it refuses.
    fn start_vring(
        &mut self,
        index: VringIndex,
        config: VringConfig,
        kick: Option<OwnedFd>,
        enabled: bool,
    ) -> Result<(), u64> {
        let Some(ring) = self.rings.get_mut(usize::from(index.0)) else { return Err(EINVAL) };
        if config.iova {
            // No IOTLB here (VIRTIO_F_ACCESS_PLATFORM is never offered): IOVAs name nothing.
            return Err(EINVAL);
        }
        if let Run::Running = ring.run {
            // Core starts only stopped rings; keep the device's view consistent regardless.
            let _ = self.device.borrow_mut().stop_queue(index, false);
        }
        let inflight = self.inflight.as_ref().and_then(|area| {
            area.region(index, config.packed)
                .map_err(|error| log::warn!("queue {}: no inflight tracking: {error}", index.0))
                .ok()
        });
        let queue = Queue {
            index,
            config,
            kick,
            call: ring.call.clone(),
            err: ring.err.clone(),
            enabled,
            memory: self.memory.memory(),
            inflight,
        };
        ring.enabled = enabled;
        match self.device.borrow_mut().start_queue(queue) {
            Ok(()) => {
                ring.run = Run::Running;
                Ok(())
            }
            Err(error) => {
                // Core holds the ring stopped: a new kick starts it again.
                ring.run = Run::Stopped;
                let _ = ring.err.notify();
                Err(error.status())
            }
        }
    }

    /// Stops the ring; where it stopped, `None` if the device lost track of it.
    fn stop_vring(&mut self, index: VringIndex, drain: bool) -> Option<VringBase> {
        let Some(ring) = self.rings.get_mut(usize::from(index.0)) else {
            return Some(VringBase(0));
        };
        let base = match ring.run {
            Run::Running => self.device.borrow_mut().try_stop_queue(index, drain),
            Run::Stopped => Some(VringBase(0)),
        };
        ring.run = Run::Stopped;
        ring.enabled = false;
        base
    }

    /// A zeroed shared-memory area for inflight tracking, handed to core for the reply. The
    /// front-end keeps it and hands it back with SET_INFLIGHT_FD, now and after a restart.
    fn allocate_inflight(&mut self, size: u64) -> Result<(FdToken, u64), u64> {
        let errno = |errno: rustix::io::Errno| u64::from(errno.raw_os_error().unsigned_abs());
        let area = memfd_create("vhu-inflight", MemfdFlags::CLOEXEC).map_err(errno)?;
        ftruncate(&area, size).map_err(errno)?;
        let token = self.fds.insert(area).map_err(|_| EIO)?;
        Ok((token, 0))
    }
}

/// The status of a region that could not be mapped.
pub(super) fn memory_status(error: &MemoryError) -> u64 {
    match error {
        MemoryError::Stat(io) => {
            io.raw_os_error().and_then(|e| u64::try_from(e).ok()).unwrap_or(EIO)
        }
        MemoryError::Map { .. } | MemoryError::Unguarded { .. } => 12, // ENOMEM
        _ => EINVAL,
    }
}
