//! [`ChainQueue`]: a queue whose device answers each descriptor chain on the spot — the
//! [`QueueHandler`] a simple device needs, so it only says what one chain means — and the turn it
//! is built on ([`serve_turn`], [`end_turn`]), for handlers that answer some chains later.
//!
//! Each `process` call serves at most one queue's worth of chains (a guest that keeps its ring
//! full cannot keep a stop waiting), with kicks disabled while it works and re-enabled before it
//! goes idle; the driver hears about each chain as soon as it is returned, when the ring asks for
//! it (EVENT_IDX rules in [`Virtqueue`]). A chain that is malformed is returned used with length 0
//! and the ring goes on, unless the available ring names a head outside a split ring: no used
//! entry can name that, so the ring stops, as Linux's vhost stops a ring whose driver does so. A
//! ring that cannot be read at all stops being served too, and its err eventfd is signalled.
//!
//! This module must not interpret what a chain carries: the [`ChainService`] does.

use vhu_core::message::VringBase;
use vm_memory::{GuestAddressSpace, GuestMemory};

use crate::memory::LoggedMemory;

use super::{DescriptorChain, QueueError, Reader, RingPoll, RingView, Virtqueue, Writer};
use crate::device::Notifier;
use crate::worker::{QueueContext, QueueHandler};

/// One turn of serving a ring, for any queue handler: the rings resolved in `mem` once for the
/// turn ([`RingView`], handed to `serve` for completing), kicks disabled while it works, at most
/// one queue's worth of chains (a guest that keeps its ring full cannot keep a stop waiting),
/// each handed to `serve` (which completes it, at once or later — keeping a copy then), a
/// malformed chain returned used with length 0, the ring polled as `poll` says when it runs dry,
/// kicks re-enabled before going idle; each chain's storage is reused for the next, so serving
/// allocates nothing. `Ok(true)`: chains remain and notifications stay disabled, so the worker
/// should come back without waiting for a kick. `Err`: the ring cannot be read at all.
pub fn serve_turn<M: GuestMemory + ?Sized>(
    queue: &mut Virtqueue,
    mem: &M,
    call: &Notifier,
    poll: &mut RingPoll,
    mut serve: impl FnMut(&mut Virtqueue, &RingView<'_, M>, &DescriptorChain) -> Result<(), QueueError>,
) -> Result<bool, QueueError> {
    poll.turn_begins();
    let view = queue.view(mem);
    queue.disable_notification(&view)?;
    for _ in 0..queue.size() {
        match queue.pop(&view) {
            Ok(Some(chain)) => {
                poll.served();
                let served = serve(queue, &view, &chain);
                queue.recycle(chain);
                served?;
            }
            Ok(None) => {
                // Kicks still off: a driver adding a request during the poll does not kick.
                if poll.poll(|| queue.has_available(&view)) {
                    continue;
                }
                if !queue.enable_notification(&view)? {
                    poll.sleeps();
                    return Ok(false);
                }
                queue.disable_notification(&view)?;
            }
            Err(error) => match error.head() {
                Some(head) => queue.complete(&view, head, 0, call)?,
                None => return Err(error),
            },
        }
    }
    Ok(true)
}

/// The end of a turn: the driver hears about what was used (even when the ring broke
/// afterwards), and a ring that broke is reported — logged, its err eventfd signalled. Returns
/// whether it broke.
pub fn end_turn<M: GuestMemory + ?Sized>(
    queue: &mut Virtqueue,
    mem: &M,
    ctx: &QueueContext,
    turn: Result<(), QueueError>,
) -> bool {
    if queue.needs_notification(mem).unwrap_or(true) {
        let _ = ctx.call.notify();
    }
    match turn {
        Ok(()) => false,
        Err(error) => {
            log::warn!(
                "queue {}: the ring broke, nothing more is served on it: {error}",
                ctx.index.0
            );
            let _ = ctx.err.notify();
            true
        }
    }
}

/// What a device does with one descriptor chain.
pub trait ChainService: Send + 'static {
    /// Serves `chain`: reads the request through `reader`, writes the answer through `writer`.
    /// What was written is returned to the driver as the chain's used length.
    fn serve(
        &mut self,
        chain: &DescriptorChain,
        reader: &mut Reader<'_, LoggedMemory>,
        writer: &mut Writer<'_, LoggedMemory>,
    );
}

/// A queue served chain by chain by a [`ChainService`]; see the module docs.
#[derive(Debug)]
pub struct ChainQueue<S> {
    queue: Virtqueue,
    service: S,
    /// The ring could not be read: stop serving until it is restarted.
    broken: bool,
    /// The last batch ended with chains still available.
    more: bool,
    poll: RingPoll,
}

impl<S: ChainService> ChainQueue<S> {
    /// `service` answering the chains of `queue`.
    pub fn new(queue: Virtqueue, service: S) -> Self {
        Self { queue, service, broken: false, more: false, poll: RingPoll::new() }
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    fn run(&mut self, mem: &LoggedMemory, call: &Notifier) -> Result<(), QueueError> {
        let service = &mut self.service;
        self.more =
            serve_turn(&mut self.queue, mem, call, &mut self.poll, |queue, view, chain| {
                let mut reader = Reader::new(mem, chain);
                let mut writer = Writer::new(mem, chain);
                service.serve(chain, &mut reader, &mut writer);
                let written = u32::try_from(writer.written()).unwrap_or(u32::MAX);
                queue.complete(view, chain.head(), written, call)
            })?;
        Ok(())
    }
}

impl<S: ChainService> QueueHandler for ChainQueue<S> {
    fn process(&mut self, ctx: &QueueContext) {
        if self.broken {
            return;
        }
        let memory = ctx.memory.memory();
        let turn = self.run(&memory, &ctx.call);
        self.broken = end_turn(&mut self.queue, &*memory, ctx, turn);
    }

    fn has_more(&self) -> bool {
        self.more && !self.broken
    }

    fn base(&self) -> VringBase {
        self.queue.base()
    }
}
