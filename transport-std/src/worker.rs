//! Thread-per-queue workers: an optional implementation of [`Device`](crate::Device)'s queue
//! methods.
//!
//! [`Workers::start`] runs a [`QueueHandler`] on its own thread. The thread waits on the queue's
//! kick eventfd and on a control eventfd, and calls [`QueueHandler::process`] when there may be
//! work: when the queue starts enabled, whenever it becomes enabled (buffers made available while
//! it was disabled get no kick), after each kick while enabled, after an in-band kick or a new
//! kick fd, and every [`POLL_INTERVAL`] while enabled without a kick fd (polling mode). A kick
//! that arrives while the queue is disabled stays in its eventfd and is not lost.
//!
//! [`Workers::stop`] asks the thread to stop, lets the handler finish what it deferred
//! ([`QueueHandler::stopped`]), waits for the thread and hands the handler back; the handler
//! then says where the ring stopped ([`QueueHandler::base`]). `process` runs to completion before
//! a stop is seen, so a handler that finishes its requests inside `process` is drained when it
//! stops. A handler that panics ends its thread: the queue's err eventfd is signalled then, so
//! the front-end hears at once that the ring is no longer served, and the stop that follows
//! finds no handler to hand back.
//!
//! This module must not interpret rings (that is the handler's job) nor know protocol messages.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;
use vhu_core::backend::VringConfig;
use vhu_core::message::VringBase;
use vhu_core::VringIndex;
use vm_memory::GuestMemoryAtomic;

use crate::memory::LoggedMemory;

use crate::device::{DeviceError, Notifier, Queue};

/// How often a queue without a kick fd is processed while enabled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The work of one queue, run on its worker thread.
pub trait QueueHandler: Send + 'static {
    /// Processes the buffers available now; see the module docs for when it is called.
    fn process(&mut self, queue: &QueueContext);

    /// Whether the last `process` stopped with work left (it works in bounded batches so that a
    /// stop or an enable change is seen between them); the worker then calls it again at once.
    fn has_more(&self) -> bool {
        false
    }

    /// Where the ring stands (next available index; packed rings: with used index and wrap
    /// counters). Called after the worker stopped.
    fn base(&self) -> VringBase;

    /// The worker is stopping (GET_VRING_BASE, reset): a handler that still owes replies to
    /// requests it deferred completes them now, for the ring stops here.
    fn stopped(&mut self, queue: &QueueContext) {
        let _ = queue;
    }
}

/// A boxed handler is a handler: one [`Workers`] can run queues of different kinds (a device's
/// receive, transmit and event queues) as `Workers<Box<dyn QueueHandler>>`.
impl<H: QueueHandler + ?Sized> QueueHandler for Box<H> {
    fn process(&mut self, queue: &QueueContext) {
        (**self).process(queue);
    }

    fn has_more(&self) -> bool {
        (**self).has_more()
    }

    fn base(&self) -> VringBase {
        (**self).base()
    }

    fn stopped(&mut self, queue: &QueueContext) {
        (**self).stopped(queue);
    }
}

/// What a handler sees of its queue. A clone shares the notifiers and the waker (a call
/// eventfd the front-end replaces reaches every clone); its `config` is a copy.
#[derive(Clone, Debug)]
pub struct QueueContext {
    /// The queue.
    pub index: VringIndex,
    /// The ring's configuration (updated by [`Workers::update`]).
    pub config: VringConfig,
    /// Guest memory; take one snapshot per call of `process`.
    pub memory: GuestMemoryAtomic<LoggedMemory>,
    /// Used-buffer notifications.
    pub call: Notifier,
    /// Error notifications.
    pub err: Notifier,
    /// Asks for another `process` call from any thread (for work finished elsewhere).
    pub waker: QueueWaker,
}

/// A handle that makes the worker call [`QueueHandler::process`] again, as an in-band kick does.
/// Handlers that finish some requests off their worker thread (a lock granted later) hand it to
/// whoever finishes them. Waking a stopped worker does nothing.
#[derive(Clone, Debug)]
pub struct QueueWaker {
    control: Arc<Control>,
}

impl QueueWaker {
    /// A waker tied to no worker (for a handler driven by hand, as in tests): waking it only
    /// records the wish.
    pub fn detached() -> Result<Self, Errno> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Self { control: Arc::new(Control { wake, commands: Mutex::default() }) })
    }

    /// Whether a wake-up is pending and not yet seen by a worker.
    pub fn is_woken(&self) -> bool {
        self.control.commands.lock().unwrap_or_else(PoisonError::into_inner).kicked
    }

    /// Wakes the worker: `process` runs again once the queue is enabled.
    pub fn wake(&self) {
        self.control.update(|c| c.kicked = true);
    }
}

/// Requests to a worker, applied at its next wake-up.
#[derive(Debug, Default)]
struct Commands {
    stop: bool,
    enabled: bool,
    kick: Option<Option<OwnedFd>>,
    config: Option<VringConfig>,
    kicked: bool,
}

#[derive(Debug)]
struct Control {
    wake: OwnedFd,
    commands: Mutex<Commands>,
}

impl Control {
    fn update(&self, change: impl FnOnce(&mut Commands)) {
        change(&mut self.commands.lock().unwrap_or_else(PoisonError::into_inner));
        // A full counter (EAGAIN) already means "wake up"; nothing else can fail on an eventfd.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// What runs on a worker's thread, with its handler, once the worker stopped.
type OnStop<H> = Arc<Mutex<Option<Box<dyn FnOnce(&H) + Send>>>>;

struct Worker<H> {
    control: Arc<Control>,
    thread: JoinHandle<H>,
    on_stop: OnStop<H>,
}

impl<H> std::fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("control", &self.control).finish_non_exhaustive()
    }
}

/// The running workers of a device, by queue. Dropping it stops them all.
#[derive(Debug)]
pub struct Workers<H: QueueHandler> {
    running: BTreeMap<VringIndex, Worker<H>>,
    /// Workers told to stop without waiting ([`Workers::stop_then`]), joined later.
    stopping: Vec<JoinHandle<H>>,
}

impl<H: QueueHandler> Default for Workers<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: QueueHandler> Workers<H> {
    /// No workers.
    pub fn new() -> Self {
        Self { running: BTreeMap::new(), stopping: Vec::new() }
    }

    /// Runs `handler` for `queue` on a new thread. A worker already running for the same index is
    /// stopped first and its handler dropped.
    pub fn start(&mut self, queue: Queue, handler: H) -> Result<(), DeviceError> {
        let index = queue.index;
        drop(self.stop(index));
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|errno| DeviceError::Io(errno.into()))?;
        let commands = Commands { enabled: queue.enabled, ..Commands::default() };
        let control = Arc::new(Control { wake, commands: Mutex::new(commands) });
        let context = QueueContext {
            index,
            config: queue.config,
            memory: queue.memory,
            call: queue.call,
            err: queue.err,
            waker: QueueWaker { control: Arc::clone(&control) },
        };
        let state = WorkerState { kick: queue.kick, enabled: queue.enabled, kick_broken: false };
        let thread_control = Arc::clone(&control);
        let on_stop: OnStop<H> = Arc::default();
        let thread_on_stop = Arc::clone(&on_stop);
        let thread = std::thread::Builder::new().name(format!("vhu-queue-{}", index.0)).spawn(
            move || {
                let handler = run(handler, &thread_control, context, state);
                let then = thread_on_stop.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(then) = then {
                    then(&handler);
                }
                handler
            },
        )?;
        self.running.insert(index, Worker { control, thread, on_stop });
        Ok(())
    }

    /// Stops the worker of `index` and returns its handler; `None` if none runs or its handler
    /// panicked.
    pub fn stop(&mut self, index: VringIndex) -> Option<H> {
        let worker = self.running.remove(&index)?;
        worker.control.update(|c| c.stop = true);
        worker.thread.join().ok()
    }

    /// Tells the worker of `index` to stop and returns at once; `then` runs on the worker's
    /// thread with its handler once it stopped (after [`QueueHandler::stopped`]). `false` if no
    /// worker runs for `index`.
    pub fn stop_then(&mut self, index: VringIndex, then: impl FnOnce(&H) + Send + 'static) -> bool {
        self.reap();
        let Some(worker) = self.running.remove(&index) else { return false };
        *worker.on_stop.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(then));
        worker.control.update(|c| c.stop = true);
        self.stopping.push(worker.thread);
        true
    }

    /// Stops every worker (waiting for those told to stop before) and returns the handlers that
    /// did not panic.
    pub fn stop_all(&mut self) -> Vec<(VringIndex, H)> {
        for thread in std::mem::take(&mut self.stopping) {
            let _ = thread.join();
        }
        let indices: Vec<VringIndex> = self.running.keys().copied().collect();
        indices.into_iter().filter_map(|i| self.stop(i).map(|h| (i, h))).collect()
    }

    /// Joins the workers told to stop that have ended.
    fn reap(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.stopping).into_iter().partition(JoinHandle::is_finished);
        self.stopping = running;
        for thread in done {
            let _ = thread.join();
        }
    }

    /// Whether a worker runs for `index`.
    pub fn is_running(&self, index: VringIndex) -> bool {
        self.running.contains_key(&index)
    }

    /// Enables or disables the queue.
    pub fn set_enabled(&self, index: VringIndex, enabled: bool) {
        self.command(index, |c| c.enabled = enabled);
    }

    /// Replaces the kick fd.
    pub fn replace_kick(&self, index: VringIndex, kick: Option<OwnedFd>) {
        self.command(index, |c| c.kick = Some(kick));
    }

    /// Replaces the ring configuration the handler sees in [`QueueContext::config`]. The ring
    /// is not moved: a handler that built its [`Virtqueue`](crate::virtq::Virtqueue) keeps it, so
    /// a device honours only changes its handler follows (see [`Workers::update_logging`]).
    pub fn update(&self, index: VringIndex, config: VringConfig) {
        self.command(index, |c| c.config = Some(config));
    }

    /// A SET_VRING_ADDR for a running queue, honoured when core found it only switches
    /// used-ring logging (`logging_only`, see
    /// [`Action::UpdateVring`](vhu_core::backend::Action::UpdateVring)); a ring moved while it
    /// runs, a log elsewhere, or a queue not running is refused ([`DeviceError::Unsupported`]):
    /// a device that offers VHOST_F_LOG_ALL can answer [`Device::update_queue`](crate::Device)
    /// with this.
    pub fn update_logging(
        &self,
        index: VringIndex,
        config: VringConfig,
        logging_only: bool,
    ) -> Result<(), DeviceError> {
        if logging_only && self.running.contains_key(&index) {
            self.update(index, config);
            Ok(())
        } else {
            Err(DeviceError::Unsupported)
        }
    }

    /// An in-band kick.
    pub fn kick(&self, index: VringIndex) {
        self.command(index, |c| c.kicked = true);
    }

    /// A waker for the worker of `index`, from the moment it started: a device that has work
    /// for a queue the guest did not ask for (received packets, input events) wakes its worker
    /// with it from any thread. `None` when no worker runs for `index`; a waker of a worker
    /// that stopped does nothing (a restarted queue has a new one).
    pub fn waker(&self, index: VringIndex) -> Option<QueueWaker> {
        let worker = self.running.get(&index)?;
        Some(QueueWaker { control: Arc::clone(&worker.control) })
    }

    fn command(&self, index: VringIndex, change: impl FnOnce(&mut Commands)) {
        if let Some(worker) = self.running.get(&index) {
            worker.control.update(change);
        }
    }
}

impl<H: QueueHandler> Drop for Workers<H> {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The thread's own view of its queue.
struct WorkerState {
    kick: Option<OwnedFd>,
    enabled: bool,
    /// The kick fd reported an error or hang-up; it is no longer polled.
    kick_broken: bool,
}

fn run<H: QueueHandler>(
    mut handler: H,
    control: &Control,
    mut context: QueueContext,
    mut state: WorkerState,
) -> H {
    // Dropped before the handler when a panic unwinds (a function's locals go before its
    // parameters), so the front-end hears before the handler's own clean-up runs.
    let _died = ErrOnPanic(context.err.clone());
    let mut pending = state.enabled;
    loop {
        {
            let mut commands = control.commands.lock().unwrap_or_else(PoisonError::into_inner);
            if commands.stop {
                drop(commands);
                handler.stopped(&context);
                return handler;
            }
            if let Some(kick) = commands.kick.take() {
                state.kick = kick;
                state.kick_broken = false;
                pending = true;
            }
            if let Some(config) = commands.config.take() {
                context.config = config;
            }
            if commands.enabled != state.enabled {
                state.enabled = commands.enabled;
                pending |= state.enabled;
            }
            pending |= std::mem::take(&mut commands.kicked);
        }
        if pending && state.enabled {
            handler.process(&context);
            pending = handler.has_more();
            continue;
        }
        pending = wait(control, &mut state, &context.err);
    }
}

/// Signals a queue's err eventfd if its worker ends in a panic: the front-end hears at once
/// that the ring is no longer served (vhost-user SET_VRING_ERR), instead of its guest's
/// requests going unanswered until the next GET_VRING_BASE finds the worker gone.
struct ErrOnPanic(Notifier);

impl Drop for ErrOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            log::error!("a queue's worker panicked: its ring is no longer served");
            let _ = self.0.notify();
        }
    }
}

/// Waits for a command or a kick; returns whether the queue may have work.
fn wait(control: &Control, state: &mut WorkerState, err: &Notifier) -> bool {
    let kick = state.kick.as_ref().filter(|_| state.enabled && !state.kick_broken);
    let polling = state.enabled && state.kick.is_none();
    let timeout = crate::timespec(POLL_INTERVAL);
    // On the stack (a worker waits once per batch of requests): two at most, the capacity.
    let mut fds = arrayvec::ArrayVec::<PollFd<'_>, 2>::new();
    fds.push(PollFd::new(&control.wake, PollFlags::IN));
    if let Some(kick) = kick {
        fds.push(PollFd::new(kick, PollFlags::IN));
    }
    match poll(&mut fds, polling.then_some(&timeout)) {
        Ok(0) => polling,
        Ok(_) => {
            // `fds[0]` is the wake eventfd, always present.
            if fds[0].revents().contains(PollFlags::IN) {
                // The wake eventfd is ours: it always behaves.
                let _ = drain_eventfd(&control.wake);
            }
            let Some((fd, revents)) = kick.zip(fds.get(1).map(PollFd::revents)) else {
                return false;
            };
            if revents.contains(PollFlags::IN) {
                if drain_eventfd(fd) {
                    return true;
                }
                // Readable but not an eventfd (a file, a socket at EOF): waiting on it again would
                // spin. Stop using it and tell the front-end through the err eventfd.
                drop(fds);
                state.kick_broken = true;
                let _ = err.notify();
                false
            } else if revents.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) {
                drop(fds);
                state.kick_broken = true;
                let _ = err.notify();
                false
            } else {
                false
            }
        }
        Err(Errno::INTR) => false,
        Err(_) => {
            // Cannot wait (out of memory in the kernel): fall back to polling the ring.
            std::thread::sleep(POLL_INTERVAL);
            state.enabled
        }
    }
}

/// Resets an eventfd's counter; it is readable, so one read suffices. Returns whether the
/// descriptor behaved as an eventfd (an 8-byte read, or nothing pending after all: the
/// front-end, which holds the same open file, may have read it first, and need not have left
/// it non-blocking, so the read does not wait).
fn drain_eventfd(fd: &OwnedFd) -> bool {
    let mut buf = [0u8; 8];
    matches!(crate::nowait::read(fd, &mut buf), Ok(8) | Err(Errno::AGAIN | Errno::INTR))
}
