//! The per-session state of a back-end connection and the carrying out of `Backend` actions on
//! it, for the [`Session`](super::Session) engine.
//!
//! An [`Executor`] owns (or borrows) the [`Device`], the [`FdTable`] of received descriptors, the
//! [`MemoryMap`], every ring's call/err [`Notifier`] and run state, the inflight area, the dirty
//! log descriptor, the back-end channel socket until the driver takes it, and the [`Owed`]
//! completion the last actions recorded. Device-state transfer is refused until
//! [`Executor::enable_device_state_transfer`]; the session then moves a transfer on
//! ([`Executor::progress_transfer`]) or runs it to the end ([`Executor::run_transfer`]) once the
//! reply to SET_DEVICE_STATE_FD is sent. With [`Executor::enable_evented_stops`] a queue stops
//! without waiting and its completion is picked up later ([`Executor::collect_stop`]). A new
//! memory table is collected and swapped in whole when its completion is fed. Dropping the
//! executor stops every running queue, resets the device and closes every mapping and descriptor
//! of the session.
//!
//! This module must not validate requests (core did), reorder actions, or do I/O on the
//! front-end's socket.

use std::borrow::BorrowMut;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use vhu_core::backend::{Backend, Completion};
use vhu_core::limits::MAX_CONFIG_SIZE;
use vhu_core::message::VringBase;
use vhu_core::{FdToken, ProtocolError, VringIndex};

use super::status::EIO;
use super::stops::{QueueStopped, StopInbox};
use super::transfer::{Step, Transfer};
use crate::device::{Device, DeviceError, Notifier};
use crate::fd_table::{FdTable, TokensExhausted};
use crate::memory::MemoryMap;
use crate::virtq::inflight::InflightArea;

/// A completion an executor owes the back-end, with owned data; feed it with
/// [`Backend::handle_completion`]`(owed.completion())`.
#[derive(Debug)]
pub struct Owed(pub(super) Kind);

/// What SET_BACKEND_REQ_FD left for the session's back-end channel.
#[derive(Debug)]
pub enum ChannelChange {
    /// The new channel's socket, checked and non-blocking.
    Open(UnixStream),
    /// The descriptor was refused: the old channel is closed and there is none.
    Closed,
}

/// What an [`Owed`] completion holds.
// One lives at a time, in place; config bytes inline spare GET_CONFIG a heap allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Kind {
    Done(Result<(), u64>),
    Stopped {
        index: VringIndex,
        base: VringBase,
    },
    /// The bytes read and how many (the reply's size is at most the config space's).
    Config(Option<([u8; MAX_CONFIG_SIZE], usize)>),
    Inflight(Result<(FdToken, u64), u64>),
    DeviceState(Result<Option<FdToken>, u8>),
    SharedObject(Result<FdToken, u64>),
    Userfaultfd(Result<FdToken, u64>),
}

impl Owed {
    /// The failure (EIO) a driver reports when an awaited action recorded nothing.
    pub fn missing() -> Self {
        Self(Kind::Done(Err(EIO)))
    }

    /// The completion to hand to [`Backend::handle_completion`].
    pub fn completion(&self) -> Completion<'_> {
        match &self.0 {
            Kind::Done(result) => Completion::Done(*result),
            Kind::Stopped { index, base } => {
                Completion::VringStopped { index: *index, base: *base }
            }
            Kind::Config(data) => Completion::ConfigRead(data.as_ref().map(|(b, n)| &b[..*n])),
            Kind::Inflight(result) => Completion::InflightAllocated(*result),
            Kind::DeviceState(result) => Completion::DeviceStateFd(*result),
            Kind::SharedObject(result) => Completion::SharedObject(*result),
            Kind::Userfaultfd(result) => Completion::Userfaultfd(*result),
        }
    }

    /// The token this completion hands to the back-end, if any.
    fn token(&self) -> Option<FdToken> {
        match &self.0 {
            Kind::Inflight(Ok((token, _)))
            | Kind::DeviceState(Ok(Some(token)))
            | Kind::SharedObject(Ok(token))
            | Kind::Userfaultfd(Ok(token)) => Some(*token),
            _ => None,
        }
    }
}

/// Whether the driver handed a ring to the device.
#[derive(Clone, Copy, Debug)]
pub(super) enum Run {
    Stopped,
    Running,
}

/// The driver's per-ring state: notification fds outlive starts and stops.
#[derive(Debug)]
pub(super) struct Ring {
    pub(super) call: Notifier,
    pub(super) err: Notifier,
    pub(super) run: Run,
    /// Whether the running ring is enabled.
    pub(super) enabled: bool,
}

/// A memory table being assembled: its regions, or the status of the first that failed.
#[derive(Debug, Default)]
pub(super) struct Staged {
    pub(super) regions: Vec<(vhu_core::message::Region, OwnedFd)>,
    pub(super) failed: Option<u64>,
}

/// How SET_DEVICE_STATE_FD is handled.
#[derive(Debug)]
pub(super) enum Transfers {
    /// Answered with ENOTSUP; the descriptor is closed.
    Refused,
    /// Kept for [`Executor::run_transfer`]; the last outcome is kept for CHECK_DEVICE_STATE
    /// until the next SET_DEVICE_STATE_FD or a device reset.
    Supported { pending: Option<Transfer>, result: Option<Result<(), DeviceError>> },
}

/// Everything of a connection that actions touch; see the module docs.
///
/// `H` holds the device: `&mut D` for a driver that borrows it, `D` itself for one that owns it.
pub struct Executor<D: Device + ?Sized, H: BorrowMut<D>> {
    pub(super) device: H,
    pub(super) fds: FdTable,
    pub(super) memory: MemoryMap,
    /// SET_MEM_TABLE's regions while its actions arrive: the new table is mapped and swapped in
    /// whole once they are all in (a running ring never sees an empty or partial map).
    pub(super) staged: Option<Staged>,
    pub(super) rings: Vec<Ring>,
    /// The front-end's inflight area (SET_INFLIGHT_FD), mapped shared.
    pub(super) inflight: Option<Arc<InflightArea>>,
    /// What SET_BACKEND_REQ_FD did to the back-end channel, until the driver takes it.
    pub(super) channel: Option<ChannelChange>,
    pub(super) owed: Option<Owed>,
    pub(super) transfers: Transfers,
    /// Transfers that ended, so an event loop can tell a new pipe from an old one.
    pub(super) transfers_done: u64,
    /// The last step of a transfer spent its budget: its pipe may be ready with no new
    /// readiness to come.
    pub(super) transfer_spent: bool,
    /// Where queues stopped without waiting report ([`Executor::enable_evented_stops`]).
    pub(super) stops: Option<Arc<StopInbox>>,
    /// A GET_VRING_BASE or RESET_DEVICE waits for a queue that is still stopping.
    pub(super) awaiting_stop: bool,
    /// A RESET_DEVICE waits for this many queues still stopping (with `awaiting_stop`).
    pub(super) reset_stops: Option<usize>,
    /// A queue whose device lost track of where it stopped: the connection must close.
    pub(super) lost_stop: Option<VringIndex>,
    _device: PhantomData<fn(&mut D)>,
}

impl<D: Device + ?Sized, H: BorrowMut<D>> std::fmt::Debug for Executor<D, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("fds", &self.fds)
            .field("memory", &self.memory)
            .field("rings", &self.rings)
            .field("owed", &self.owed)
            .field("transfers", &self.transfers)
            .finish_non_exhaustive()
    }
}

impl<D: Device + ?Sized, H: BorrowMut<D>> Executor<D, H> {
    /// A fresh session for `device` with `queues` rings (the back-end spec's queue count), with
    /// device-state transfer refused.
    pub fn new(device: H, queues: usize) -> Self {
        let rings = (0..queues)
            .map(|_| Ring {
                call: Notifier::new(),
                err: Notifier::new(),
                run: Run::Stopped,
                enabled: false,
            })
            .collect();
        Self {
            device,
            fds: FdTable::new(),
            memory: MemoryMap::new(),
            staged: None,
            rings,
            inflight: None,
            channel: None,
            owed: None,
            transfers: Transfers::Refused,
            transfers_done: 0,
            transfer_spent: false,
            stops: None,
            awaiting_stop: false,
            reset_stops: None,
            lost_stop: None,
            _device: PhantomData,
        }
    }

    /// Accepts SET_DEVICE_STATE_FD from now on: the descriptor is kept and the transfer runs,
    /// blocking, when the driver calls [`Self::run_transfer`].
    pub fn enable_device_state_transfer(&mut self) {
        if let Transfers::Refused = self.transfers {
            self.transfers = Transfers::Supported { pending: None, result: None };
        }
    }

    /// Stops queues without waiting from now on: the device reports through
    /// [`Device::stop_queue_then`] and [`Executor::collect_stop`] picks the result up.
    pub fn enable_evented_stops(&mut self) -> std::io::Result<()> {
        self.stops = Some(StopInbox::new()?);
        Ok(())
    }

    /// The eventfd that becomes readable when a queue stopped without waiting.
    pub fn stop_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.stops.as_ref().map(|inbox| inbox.fd())
    }

    /// Whether a GET_VRING_BASE or RESET_DEVICE waits for a queue that is still stopping.
    pub fn is_awaiting_stop(&self) -> bool {
        self.awaiting_stop
    }

    /// Records the completion of a queue that finished stopping, if it did; of RESET_DEVICE,
    /// once every queue it stopped did and the device was reset.
    pub fn collect_stop(&mut self) {
        if !self.awaiting_stop {
            return;
        }
        if let Some(left) = self.reset_stops {
            let inbox = self.stops.as_ref();
            let taken = std::iter::from_fn(|| inbox.and_then(|inbox| inbox.take()));
            // Where the queues stopped does not matter: the device forgets them now. One the
            // device lost track of (its worker ended without a word) is gone all the same.
            let lost = |(index, base): &(VringIndex, Option<VringBase>)| {
                if base.is_none() {
                    log::warn!("RESET_DEVICE: queue {} ended without saying where", index.0);
                }
            };
            let left = left.saturating_sub(taken.take(left).inspect(lost).count());
            if left > 0 {
                self.reset_stops = Some(left);
                return;
            }
            self.reset_stops = None;
            self.awaiting_stop = false;
            self.device.borrow_mut().reset();
            self.owe(Kind::Done(Ok(())));
            return;
        }
        let Some((index, base)) = self.stops.as_ref().and_then(|inbox| inbox.take()) else {
            return;
        };
        self.awaiting_stop = false;
        match base {
            Some(base) => self.owe(Kind::Stopped { index, base }),
            None => self.lost_stop = Some(index),
        }
    }

    /// The queue whose device lost track of where it stopped, if one did: GET_VRING_BASE cannot
    /// be answered, and the connection closes.
    pub fn take_lost_stop(&mut self) -> Option<VringIndex> {
        self.lost_stop.take()
    }

    /// The device.
    pub fn device(&mut self) -> &mut D {
        self.device.borrow_mut()
    }

    /// The table owning every descriptor received on the connection (replies take theirs from
    /// it).
    pub fn fds_mut(&mut self) -> &mut FdTable {
        &mut self.fds
    }

    /// Descriptors held, for inspection.
    pub fn fd_count(&self) -> usize {
        self.fds.len()
    }

    /// Guest memory, for inspection.
    pub fn memory(&self) -> &MemoryMap {
        &self.memory
    }

    /// Stores the descriptors received with a frame and names them for `Backend::handle_frame`.
    pub fn insert_fds(
        &mut self,
        fds: impl IntoIterator<Item = OwnedFd>,
    ) -> Result<Vec<FdToken>, TokensExhausted> {
        self.fds.insert_all(fds)
    }

    /// Takes what SET_BACKEND_REQ_FD did to the back-end channel, if it came; a socket the
    /// driver never takes is closed with the session.
    pub fn take_backend_channel(&mut self) -> Option<ChannelChange> {
        self.channel.take()
    }

    /// Takes the completion the last actions recorded.
    pub fn take_owed(&mut self) -> Option<Owed> {
        self.owed.take()
    }

    /// Feeds the recorded completion (or [`Owed::missing`]) to `backend`.
    pub fn feed_completion(&mut self, backend: &mut Backend) -> Result<(), ProtocolError> {
        self.commit_memory();
        let owed = self.take_owed().unwrap_or_else(Owed::missing);
        backend.handle_completion(owed.completion())
    }

    /// Swaps in a memory table whose regions are all in, recording the outcome as the
    /// completion SET_MEM_TABLE owes. Called before a completion is fed or discarded.
    pub(super) fn commit_memory(&mut self) {
        let Some(staged) = self.staged.take() else { return };
        let result = match staged.failed {
            Some(status) => Err(status),
            None => self
                .memory
                .replace_all(staged.regions)
                .map_err(|e| super::actions::memory_status(&e)),
        };
        self.owe(Kind::Done(result));
    }

    /// Drops a completion that will not be fed, with the descriptor it would have handed off.
    pub fn discard_owed(&mut self) {
        self.commit_memory();
        if let Some(token) = self.owed.take().and_then(|owed| owed.token()) {
            self.fds.release(token);
        }
    }

    /// Runs a pending device-state transfer to its end, each read or write of the pipe waiting
    /// at most `timeout`; the outcome answers the next CHECK_DEVICE_STATE. Does nothing when
    /// none is pending or transfers are refused.
    pub fn run_transfer(&mut self, timeout: Duration) {
        if let Transfers::Supported { pending, result } = &mut self.transfers {
            if let Some(mut transfer) = pending.take() {
                *result = Some(transfer.finish(self.device.borrow_mut(), timeout));
                self.transfers_done += 1;
            }
        }
    }

    /// Ends a transfer still under way as failed, for CHECK_DEVICE_STATE to report: a ring
    /// started or the device was reset, so neither a save nor a load is what the front-end
    /// would be checking. Only an evented session can have one by then; a blocking
    /// one runs each to its end before it reads the next message.
    pub(super) fn abandon_transfer(&mut self, why: &'static str) {
        if let Transfers::Supported { pending, result } = &mut self.transfers {
            if pending.take().is_some() {
                log::warn!("device-state transfer abandoned: {why}");
                *result = Some(Err(DeviceError::InvalidState(why)));
                self.transfers_done += 1;
            }
        }
    }

    /// Moves a pending device-state transfer on as far as its pipe allows now, never waiting.
    pub fn progress_transfer(&mut self) {
        if let Transfers::Supported { pending, result } = &mut self.transfers {
            if let Some(transfer) = pending {
                match transfer.progress(self.device.borrow_mut()) {
                    Step::Done(outcome) => {
                        *result = Some(outcome);
                        *pending = None;
                        self.transfers_done += 1;
                    }
                    Step::Budget => self.transfer_spent = true,
                    Step::Waiting => {}
                }
            }
        }
    }

    /// Whether the last step of the transfer spent its budget (and forgets it): the event loop
    /// must look at its pipe again without waiting for new readiness.
    pub fn take_transfer_spent(&mut self) -> bool {
        std::mem::take(&mut self.transfer_spent)
    }

    /// Transfers that ended so far.
    pub fn transfers_done(&self) -> u64 {
        self.transfers_done
    }

    /// The pipe of a transfer in progress, and whether it waits to write (else to read).
    pub fn transfer_pipe(&self) -> Option<(std::os::fd::BorrowedFd<'_>, bool)> {
        match &self.transfers {
            Transfers::Supported { pending: Some(transfer), .. } => transfer.pipe(),
            _ => None,
        }
    }

    /// Records a completion; the map results of one request fold into the first failure.
    pub(super) fn owe(&mut self, owed: Kind) {
        if let (Some(Owed(Kind::Done(Err(_)))), Kind::Done(_)) = (&self.owed, &owed) {
            return;
        }
        self.discard_owed();
        self.owed = Some(Owed(owed));
    }

    /// RESET_DEVICE: stops every queue the device runs and resets it. Evented sessions ask
    /// each queue to report when it stopped and reset the device once all did
    /// ([`Executor::collect_stop`]), so an event loop never waits for a queue's requests in
    /// flight; others wait for them here.
    pub(super) fn reset_device(&mut self) {
        // A reset forgets the device's state, and what a transfer of it came to with it; one
        // under way (an event loop's) ends as failed.
        if let Transfers::Supported { result, .. } = &mut self.transfers {
            *result = None;
        }
        self.abandon_transfer("the device was reset");
        let Some(inbox) = self.stops.clone() else {
            self.stop_queues();
            self.device.borrow_mut().reset();
            self.owe(Kind::Done(Ok(())));
            return;
        };
        let device = self.device.borrow_mut();
        let mut stopping = 0;
        for (i, ring) in self.rings.iter_mut().enumerate() {
            if let Run::Running = ring.run {
                // Cannot truncate: the back-end has at most 256 queues.
                let index = VringIndex(i as u8);
                device.stop_queue_then(index, false, QueueStopped::new(Arc::clone(&inbox), index));
                stopping += 1;
            }
            ring.run = Run::Stopped;
            ring.enabled = false;
        }
        self.reset_stops = Some(stopping);
        self.awaiting_stop = true;
        self.collect_stop();
    }

    /// Stops every queue the device runs.
    pub(super) fn stop_queues(&mut self) {
        let device = self.device.borrow_mut();
        for (i, ring) in self.rings.iter_mut().enumerate() {
            if let Run::Running = ring.run {
                // Cannot truncate: the back-end has at most 256 queues.
                let _ = device.stop_queue(VringIndex(i as u8), false);
            }
            ring.run = Run::Stopped;
            ring.enabled = false;
        }
    }
}

impl<D: Device + ?Sized, H: BorrowMut<D>> Drop for Executor<D, H> {
    fn drop(&mut self) {
        self.stop_queues();
        self.device.borrow_mut().reset();
        self.memory.clear();
        self.fds.clear();
    }
}
