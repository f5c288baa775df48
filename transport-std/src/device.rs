//! The [`Device`] trait a device author implements, and the values the driver hands it.
//!
//! A device says what it offers ([`Device::spec`]), serves its config space, and runs the queues
//! the driver starts and stops. Everything else — feature negotiation, REPLY_ACK, the memory table,
//! the ring state machine, which message may come when — is decided by `vhu-core`'s `Backend`; the
//! driver only calls the device when core asks for it, and only in a consistent order:
//!
//! - [`Device::start_queue`] for a stopped queue; then any number of [`Device::set_queue_enabled`],
//!   [`Device::replace_kick`], [`Device::update_queue`] and [`Device::kick`] for it; then exactly one
//!   [`Device::stop_queue`] (or, from an event loop, [`Device::stop_queue_then`]). A queue whose
//!   start failed gets none of these.
//! - [`Device::backend_result`] once for each request pushed through the [`BackendRequests`]
//!   handle [`Device::connected`] gave it.
//! - [`Device::reset`] only while no queue is running (the driver stops them first), on
//!   RESET_DEVICE and when a front-end disconnects, so the next connection finds a fresh device.
//!   One exception: a front-end that disconnects while queues handed to
//!   [`Device::stop_queue_then`] have not reported yet; `reset` must then end those too (the
//!   [`crate::worker`] queues' does: it joins every worker thread).
//!
//! This module must not hold protocol rules or do socket I/O. The [`crate::worker`] module offers a
//! thread-per-queue implementation of the queue methods.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, PoisonError, RwLock};

use rustix::io::Errno;
use vhu_core::backend::{BackendSpec, VringConfig};
use vhu_core::message::VringBase;
use vhu_core::{VirtioFeatures, VringIndex};
use vm_memory::GuestMemoryAtomic;

use crate::memory::LoggedMemory;

use crate::session::{BackendRequests, QueueStopped, RequestResult, RequestTicket};
use crate::virtq::inflight::InflightRegion;

/// A device operation that failed; the driver turns it into a failure status for the front-end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device does not implement this operation.
    #[error("operation not supported by the device")]
    Unsupported,
    /// A config-space access the device refuses (read-only field, out of range).
    #[error("config access of {size} bytes at offset {offset} refused")]
    Config {
        /// Offset in the config space.
        offset: u32,
        /// Bytes accessed.
        size: usize,
    },
    /// A queue could not be started.
    #[error("queue {index} cannot start: {reason}")]
    Queue {
        /// The queue.
        index: u8,
        /// Why.
        reason: &'static str,
    },
    /// Saved device state could not be loaded.
    #[error("invalid device state: {0}")]
    InvalidState(&'static str),
    /// The device cannot save its state, or take over the state it was given; the message
    /// names the cause (logged by the session, and CHECK_DEVICE_STATE fails).
    #[error("device state: {0}")]
    State(String),
    /// An I/O error (device-state transfer, eventfds, threads).
    #[error("device I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

impl DeviceError {
    /// An errno-like non-zero status for the front-end.
    pub fn status(&self) -> u64 {
        let errno = match self {
            Self::Unsupported => Errno::NOTSUP,
            Self::Config { .. } | Self::InvalidState(_) | Self::State(_) | Self::Queue { .. } => {
                Errno::INVAL
            }
            Self::Io(error) => {
                let timed_out = error.kind() == std::io::ErrorKind::TimedOut;
                let errno = error.raw_os_error().or(timed_out.then_some(libc::ETIMEDOUT));
                return errno.and_then(|e| u64::try_from(e).ok()).unwrap_or(5);
            }
        };
        u64::from(errno.raw_os_error().unsigned_abs())
    }
}

/// An eventfd the device signals (a ring's call or err notification), shared with the driver.
///
/// The front-end may replace the descriptor at any time (SET_VRING_CALL on a running ring); every
/// clone sees the replacement at its next [`Notifier::notify`]. With no descriptor set, notifying
/// does nothing.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    fd: Arc<RwLock<Option<OwnedFd>>>,
}

impl Notifier {
    /// A notifier without a descriptor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds 1 to the eventfd's counter. Returns whether a descriptor was set.
    ///
    /// A counter that is already at its maximum (`EAGAIN` on a non-blocking eventfd) counts as
    /// notified: the front-end has not consumed the earlier notifications yet.
    pub fn notify(&self) -> std::io::Result<bool> {
        let guard = self.fd.read().unwrap_or_else(PoisonError::into_inner);
        let Some(fd) = guard.as_ref() else { return Ok(false) };
        loop {
            match rustix::io::write(fd, &1u64.to_ne_bytes()) {
                Ok(_) | Err(Errno::AGAIN) => return Ok(true),
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Replaces the descriptor and returns the previous one.
    pub fn set(&self, fd: Option<OwnedFd>) -> Option<OwnedFd> {
        let mut guard = self.fd.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *guard, fd)
    }

    /// Whether a descriptor is set.
    pub fn is_set(&self) -> bool {
        self.fd.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }
}

/// Everything a started queue needs, handed to [`Device::start_queue`].
#[derive(Debug)]
pub struct Queue {
    /// The queue.
    pub index: VringIndex,
    /// Where the ring is (guest-physical addresses), its size, base and layout.
    pub config: VringConfig,
    /// The kick eventfd; `None` means the front-end does not kick (poll the ring, or wait for
    /// in-band kicks through [`Device::kick`]).
    pub kick: Option<OwnedFd>,
    /// The call eventfd (used-buffer notifications).
    pub call: Notifier,
    /// The err eventfd.
    pub err: Notifier,
    /// Whether the queue starts enabled. An enabled queue must process the buffers already
    /// available at once, without waiting for a kick.
    pub enabled: bool,
    /// Guest memory; take a snapshot with `memory.memory()` per batch of work, so memory-table
    /// updates are seen.
    pub memory: GuestMemoryAtomic<LoggedMemory>,
    /// The queue's region of the inflight area, when the front-end set one (INFLIGHT_SHMFD):
    /// attach it with [`Virtqueue::track_inflight`](crate::virtq::Virtqueue::track_inflight) so
    /// the chains in flight survive a restart. A device that offers INFLIGHT_SHMFD must.
    pub inflight: Option<InflightRegion>,
}

/// A vhost-user device served by this crate's driver. See the module docs for the call order.
pub trait Device {
    /// What the back-end offers: queues, features, protocol features, config size. Read once per
    /// connection; features the transport does not carry out are left out of the offer
    /// ([`crate::session::offer`]).
    fn spec(&self) -> BackendSpec;

    /// Runs a queue. A failure leaves the queue stopped for the device (the driver signals the
    /// queue's err eventfd and answers its later GET_VRING_BASE with the start base).
    fn start_queue(&mut self, queue: Queue) -> Result<(), DeviceError>;

    /// Stops a running queue and returns where it stopped: the next available index to process
    /// (packed rings: with the used index and wrap counters). With `drain`, complete in-flight
    /// requests first. Stopping is not a reset: the base must reflect the work done.
    fn stop_queue(&mut self, index: VringIndex, drain: bool) -> VringBase;

    /// [`Device::stop_queue`], for a device that can lose track of a queue (a worker that
    /// panicked): `None` says it does not know where the queue stopped, and the driver closes the
    /// connection rather than answer GET_VRING_BASE with a base nobody knows (a wrong one would
    /// have the ring resumed where requests are served twice or never). The default trusts
    /// [`Device::stop_queue`].
    fn try_stop_queue(&mut self, index: VringIndex, drain: bool) -> Option<VringBase> {
        Some(self.stop_queue(index, drain))
    }

    /// Enables or disables a running queue. A disabled queue must not touch guest memory in ways
    /// the guest sees; an enabled one must rescan its available ring at once (no kick may come
    /// for buffers made available while it was disabled).
    fn set_queue_enabled(&mut self, index: VringIndex, enabled: bool);

    /// A new kick eventfd (or none) for a running queue; the old one must no longer be used.
    fn replace_kick(&mut self, index: VringIndex, kick: Option<OwnedFd>);

    /// Stops a running queue without making the caller wait, for an event loop that must not
    /// be held up by requests in flight: `done` gets the base once the queue stopped, from any
    /// thread; dropping `done` unused says the device lost track of the queue (see
    /// [`Device::try_stop_queue`]). The default stops it here with [`Device::try_stop_queue`];
    /// a device whose stop can take a while overrides it
    /// ([`Workers::stop_then`](crate::Workers::stop_then)).
    fn stop_queue_then(&mut self, index: VringIndex, drain: bool, done: QueueStopped) {
        if let Some(base) = self.try_stop_queue(index, drain) {
            done.stopped(base);
        }
    }

    /// Forgets negotiated features and device state. No queue is running when this is called,
    /// but for one still stopping after [`Device::stop_queue_then`] when the front-end
    /// disconnected (see the module docs).
    fn reset(&mut self);

    /// New ring addresses for a running queue (QEMU toggles dirty logging this way):
    /// `logging_only` when core found the same ring with only its used-ring logging switched.
    /// A device that cannot move a running queue refuses, and the front-end gets the failure
    /// status; one that offers VHOST_F_LOG_ALL must at least take the logging switch, which
    /// [`Workers::update_logging`](crate::Workers::update_logging) does.
    fn update_queue(
        &mut self,
        index: VringIndex,
        config: VringConfig,
        logging_only: bool,
    ) -> Result<(), DeviceError> {
        let _ = (index, config, logging_only);
        Err(DeviceError::Unsupported)
    }

    /// An in-band kick (VRING_KICK) for a running queue.
    fn kick(&mut self, index: VringIndex) {
        let _ = index;
    }

    /// A front-end connected; `requests` sends back-end requests (any of the spec's back-end
    /// message types) on its back-end channel until it disconnects.
    fn connected(&mut self, requests: BackendRequests) {
        let _ = requests;
    }

    /// How the back-end request `ticket` (from [`BackendRequests::push`]) ended: refused, sent,
    /// answered by the front-end, or lost with the channel. Every pushed request gets exactly one
    /// result while the connection lasts.
    fn backend_result(&mut self, ticket: RequestTicket, result: RequestResult) {
        let _ = (ticket, result);
    }

    /// The virtio features the driver acked (SET_FEATURES).
    fn acked_features(&mut self, features: VirtioFeatures) {
        let _ = features;
    }

    /// The virtio device status byte (SET_STATUS).
    fn set_status(&mut self, status: u8) {
        let _ = status;
    }

    /// Fills `data` with config space from `offset`. The range is within the spec's config size.
    fn read_config(&self, offset: u32, data: &mut [u8]) -> Result<(), DeviceError> {
        let _ = (offset, data);
        Err(DeviceError::Unsupported)
    }

    /// Writes config space at `offset`. Unless `migration`, read-only fields must be refused.
    fn write_config(
        &mut self,
        offset: u32,
        data: &[u8],
        migration: bool,
    ) -> Result<(), DeviceError> {
        let _ = (offset, data, migration);
        Err(DeviceError::Unsupported)
    }

    /// Writes the device's state for migration (DEVICE_STATE); called while no queue runs.
    fn save_state(&mut self, out: &mut dyn Write) -> Result<(), DeviceError> {
        let _ = out;
        Err(DeviceError::Unsupported)
    }

    /// Restores state written by [`Device::save_state`]; called while no queue runs.
    fn load_state(&mut self, input: &mut dyn Read) -> Result<(), DeviceError> {
        let _ = input;
        Err(DeviceError::Unsupported)
    }
}
