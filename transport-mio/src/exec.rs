//! Carrying out `Backend` actions for one connection: guest memory, per-ring eventfds, device
//! calls, inflight areas and descriptor releases, and the completion each action owes.
//!
//! This is the mio driver's local equivalent of the std driver's action executor, which is
//! private to `vhu-transport-std`; it reuses that crate's public [`FdTable`], [`MemoryMap`],
//! [`Device`] and [`Notifier`]. Every token an action hands off is taken out of the table here
//! (kept or closed). Every action that completes records exactly one [`Owed`] completion, success
//! or failure; local failures become errno-like statuses. Actions that need blocking work or a
//! second socket (device-state transfer, dirty logging, IOTLB, postcopy) are answered with a
//! failure status. Dropping the executor stops every running queue, resets the device and closes
//! every mapping and descriptor of the session.
//!
//! This module must not validate requests (core did), reorder actions, or do I/O on the
//! front-end's socket.

use std::os::fd::OwnedFd;

use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::io::Errno;
use vhu_core::backend::{Action, Completion, VringConfig};
use vhu_core::message::VringBase;
use vhu_core::{BackendRequest, FdToken, VringIndex};
use vhu_transport_std::{Device, FdTable, MemoryError, MemoryMap, Notifier, Queue};

/// An errno as a non-zero status for the front-end.
fn status(errno: Errno) -> u64 {
    u64::from(errno.raw_os_error().unsigned_abs())
}

/// The status of an I/O error (EIO when it carries no errno).
fn io_status(error: &std::io::Error) -> u64 {
    error.raw_os_error().and_then(|e| u64::try_from(e).ok()).unwrap_or(status(Errno::IO))
}

/// A completion the driver owes the back-end, with owned data.
#[derive(Debug)]
pub(crate) enum Owed {
    Done(Result<(), u64>),
    Stopped { index: VringIndex, base: VringBase },
    Config(Option<Vec<u8>>),
    Inflight(Result<(FdToken, u64), u64>),
    DeviceState(Result<Option<FdToken>, u8>),
    SharedObject(Result<FdToken, u64>),
    Userfaultfd(Result<FdToken, u64>),
}

impl Owed {
    /// The failure the driver reports when an awaited action recorded nothing.
    pub(crate) fn missing() -> Self {
        Self::Done(Err(status(Errno::IO)))
    }

    pub(crate) fn completion(&self) -> Completion<'_> {
        match self {
            Self::Done(result) => Completion::Done(*result),
            Self::Stopped { index, base } => {
                Completion::VringStopped { index: *index, base: *base }
            }
            Self::Config(data) => Completion::ConfigRead(data.as_deref()),
            Self::Inflight(result) => Completion::InflightAllocated(*result),
            Self::DeviceState(result) => Completion::DeviceStateFd(*result),
            Self::SharedObject(result) => Completion::SharedObject(*result),
            Self::Userfaultfd(result) => Completion::Userfaultfd(*result),
        }
    }

    /// The token this completion hands to the back-end, if any.
    fn token(&self) -> Option<FdToken> {
        match self {
            Self::Inflight(Ok((token, _)))
            | Self::DeviceState(Ok(Some(token)))
            | Self::SharedObject(Ok(token))
            | Self::Userfaultfd(Ok(token)) => Some(*token),
            _ => None,
        }
    }
}

/// Whether the driver handed a ring to the device.
#[derive(Clone, Copy, Debug)]
enum Run {
    Stopped,
    Running,
    /// The device refused to start it; GET_VRING_BASE answers with the start base.
    Failed(VringBase),
}

/// Per-ring driver state: the notification fds outlive starts and stops.
#[derive(Debug)]
struct Ring {
    call: Notifier,
    err: Notifier,
    run: Run,
}

/// Everything of a connection that actions touch; see the module docs.
#[derive(Debug)]
pub(crate) struct Executor<D: Device> {
    device: D,
    /// The owner of every descriptor received on the connection.
    pub(crate) fds: FdTable,
    memory: MemoryMap,
    rings: Vec<Ring>,
    owed: Option<Owed>,
    inflight: Option<OwnedFd>,
    log_fd: Option<OwnedFd>,
    /// The back-end channel socket, kept until the connection ends (nothing is sent on it).
    channel: Option<OwnedFd>,
}

impl<D: Device> Executor<D> {
    pub(crate) fn new(device: D, queues: usize) -> Self {
        let rings = (0..queues)
            .map(|_| Ring { call: Notifier::new(), err: Notifier::new(), run: Run::Stopped })
            .collect();
        Self {
            device,
            fds: FdTable::new(),
            memory: MemoryMap::new(),
            rings,
            owed: None,
            inflight: None,
            log_fd: None,
            channel: None,
        }
    }

    /// Takes the completion the last actions recorded.
    pub(crate) fn take_owed(&mut self) -> Option<Owed> {
        self.owed.take()
    }

    /// Drops a completion that will not be fed, with the descriptor it would have handed off.
    pub(crate) fn discard_owed(&mut self) {
        if let Some(token) = self.owed.take().and_then(|owed| owed.token()) {
            self.fds.release(token);
        }
    }

    /// A back-end request this driver does not send: its descriptors are closed.
    pub(crate) fn drop_backend_request(&mut self, request: &BackendRequest) {
        for token in request.fds() {
            self.fds.release(token);
        }
    }

    /// Records a completion; the map results of one request fold into the first failure.
    fn owe(&mut self, owed: Owed) {
        if let (Some(Owed::Done(Err(_))), Owed::Done(_)) = (&self.owed, &owed) {
            return;
        }
        self.discard_owed();
        self.owed = Some(owed);
    }

    pub(crate) fn execute(&mut self, action: Action<'_>) {
        match action {
            Action::UnmapAll => self.memory.clear(),
            Action::MapRegion { region, fd } => {
                let result = match self.fds.take(fd) {
                    Some(fd) => self.memory.add(&region, fd).map_err(|e| memory_status(&e)),
                    None => Err(status(Errno::BADF)),
                };
                self.owe(Owed::Done(result));
            }
            Action::UnmapRegion(region) => {
                // Core already removed the region; a map without it is in the state core wants.
                let _ = self.memory.remove(region.guest_address, region.size);
            }
            Action::MapLog { fd, .. } => {
                self.fds.release(fd);
                self.owe(Owed::Done(Err(status(Errno::NOTSUP))));
            }
            Action::SetLogFd(fd) => self.log_fd = self.fds.take(fd),
            Action::SetLogging(_) | Action::SendRarp(_) | Action::SetMtu(_) => {}
            Action::FeaturesAcked(features) => self.device.acked_features(features),
            Action::StartVring { index, config, kick, enabled } => {
                let kick = self.take_optional(kick);
                self.start_vring(index, config, kick, enabled);
            }
            Action::ReplaceKick { index, kick } => {
                let kick = self.take_optional(kick);
                if self.is_running(index) {
                    self.device.replace_kick(index, kick);
                }
            }
            Action::UpdateVring { index, config } => {
                if self.is_running(index) {
                    self.device.update_queue(index, config);
                }
            }
            Action::SetVringEnabled { index, enabled } => {
                if self.is_running(index) {
                    self.device.set_queue_enabled(index, enabled);
                }
            }
            Action::StopVring { index, drain } => {
                let base = self.stop_vring(index, drain);
                self.owe(Owed::Stopped { index, base });
            }
            Action::SetVringCall { index, fd } => {
                let fd = self.take_optional(fd);
                if let Some(ring) = self.rings.get(usize::from(index.0)) {
                    drop(ring.call.set(fd));
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
                    self.device.kick(index);
                }
            }
            Action::ReadConfig { offset, size } => {
                let mut data = vec![0; size as usize];
                let read = self.device.read_config(offset, &mut data);
                self.owe(Owed::Config(read.ok().map(|()| data)));
            }
            Action::WriteConfig { offset, data, migration } => {
                let result = self.device.write_config(offset, data, migration);
                self.owe(Owed::Done(result.map_err(|e| e.status())));
            }
            Action::SetStatus(byte) => self.device.set_status(byte),
            Action::ResetDevice => {
                self.stop_queues();
                self.device.reset();
            }
            Action::AllocateInflight { mmap_size, .. } => {
                let result = self.allocate_inflight(mmap_size);
                self.owe(Owed::Inflight(result));
            }
            Action::SetInflight { fd, .. } => {
                let result = match self.fds.take(fd) {
                    Some(fd) => {
                        self.inflight = Some(fd);
                        Ok(())
                    }
                    None => Err(status(Errno::BADF)),
                };
                self.owe(Owed::Done(result));
            }
            Action::SetBackendChannel(fd) => self.channel = self.fds.take(fd),
            Action::Iotlb(_) => self.owe(Owed::Done(Err(status(Errno::NOTSUP)))),
            Action::GetSharedObject(_) => self.owe(Owed::SharedObject(Err(status(Errno::NOENT)))),
            Action::SetDeviceStateFd { fd, .. } => {
                // A transfer would block this event loop; it is refused. Cannot truncate: the
                // errno is below 256.
                self.fds.release(fd);
                self.owe(Owed::DeviceState(Err(status(Errno::NOTSUP) as u8)));
            }
            Action::CheckDeviceState => self.owe(Owed::Done(Err(status(Errno::INVAL)))),
            Action::PostcopyAdvise => self.owe(Owed::Userfaultfd(Err(status(Errno::NOTSUP)))),
            Action::PostcopyListen | Action::PostcopyEnd => {
                self.owe(Owed::Done(Err(status(Errno::NOTSUP))));
            }
            Action::CloseFd(token) => {
                self.fds.release(token);
            }
        }
    }

    /// Takes a ring's eventfd, made non-blocking so a front-end's blocking eventfd or pipe can
    /// never stall the loop or a worker; one that cannot be made non-blocking is not used.
    fn take_optional(&mut self, token: Option<FdToken>) -> Option<OwnedFd> {
        let fd = token.and_then(|token| self.fds.take(token))?;
        rustix::io::ioctl_fionbio(&fd, true).ok().map(|()| fd)
    }

    fn is_running(&self, index: VringIndex) -> bool {
        matches!(self.rings.get(usize::from(index.0)).map(|r| r.run), Some(Run::Running))
    }

    fn start_vring(
        &mut self,
        index: VringIndex,
        config: VringConfig,
        kick: Option<OwnedFd>,
        enabled: bool,
    ) {
        let Some(ring) = self.rings.get_mut(usize::from(index.0)) else { return };
        if let Run::Running = ring.run {
            // Core starts only stopped rings; keep the device's call order valid regardless.
            let _ = self.device.stop_queue(index, false);
        }
        let queue = Queue {
            index,
            config,
            kick,
            call: ring.call.clone(),
            err: ring.err.clone(),
            enabled,
            memory: self.memory.memory(),
        };
        match self.device.start_queue(queue) {
            Ok(()) => ring.run = Run::Running,
            Err(_) => {
                ring.run = Run::Failed(config.base);
                let _ = ring.err.notify();
            }
        }
    }

    fn stop_vring(&mut self, index: VringIndex, drain: bool) -> VringBase {
        let Some(ring) = self.rings.get_mut(usize::from(index.0)) else { return VringBase(0) };
        let base = match ring.run {
            Run::Running => self.device.stop_queue(index, drain),
            Run::Failed(base) => base,
            Run::Stopped => VringBase(0),
        };
        ring.run = Run::Stopped;
        base
    }

    /// Stops every queue the device runs.
    fn stop_queues(&mut self) {
        for (i, ring) in self.rings.iter_mut().enumerate() {
            if let Run::Running = ring.run {
                // Cannot truncate: a back-end has at most 256 queues.
                let _ = self.device.stop_queue(VringIndex(i as u8), false);
            }
            ring.run = Run::Stopped;
        }
    }

    /// A zeroed shared-memory area for inflight tracking: one descriptor is kept, a duplicate is
    /// handed to core for the reply.
    fn allocate_inflight(&mut self, size: u64) -> Result<(FdToken, u64), u64> {
        let area = memfd_create("vhu-inflight", MemfdFlags::CLOEXEC).map_err(status)?;
        ftruncate(&area, size).map_err(status)?;
        let copy = area.try_clone().map_err(|e| io_status(&e))?;
        let token = self.fds.insert(copy).map_err(|_| status(Errno::IO))?;
        self.inflight = Some(area);
        Ok((token, 0))
    }
}

impl<D: Device> Drop for Executor<D> {
    fn drop(&mut self) {
        self.stop_queues();
        self.device.reset();
        self.memory.clear();
        self.fds.clear();
    }
}

/// The status of a region that could not be mapped.
fn memory_status(error: &MemoryError) -> u64 {
    match error {
        MemoryError::Stat(io) => io_status(io),
        MemoryError::Map { .. } => status(Errno::NOMEM),
        _ => status(Errno::INVAL),
    }
}
