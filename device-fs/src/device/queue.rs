//! One virtio-fs queue served on its worker thread: pop chains, hand each to the FUSE server,
//! publish each used entry and notify the driver at once when it asked to hear (EVENT_IDX), so a
//! finished request never waits for the rest of a batch.
//!
//! Guest-controlled ring contents never panic here: a malformed chain is returned used with
//! length 0 (the ring goes on), and a ring that cannot be read at all (its index jumped, its
//! memory vanished) stops being processed and its err eventfd is signalled. This module must not
//! interpret FUSE requests; the server does.
//!
//! A request the server answers later (a SETLKW whose lock is held) keeps its chain here, by
//! `unique`; the reply arrives in the queue's inbox from another thread, which wakes the worker
//! to put it into the chain. When the ring stops, chains still waiting are answered EINTR and
//! their waits cancelled, so nothing is left in the guest's ring unanswered.
//!
//! With a worker pool of two or more threads ([`FsQueue::with_pool`]) each chain is handled on
//! a pool thread, which writes the reply into the chain and returns it to the ring itself,
//! under the ring's lock, announcing it at once: requests finish in any order there, and one
//! must not wait for a slower one. The worker only takes chains from the ring and hands them
//! over, so a pooled request wakes one thread besides the worker, not two. A request the pool
//! defers goes back through the inbox. A stop waits for every chain handed to the pool. The
//! pool holds at most about two queues' worth of chains: while it holds one queue's worth the
//! worker takes no more from the ring, and the next chain it settles wakes the worker (a
//! driver that makes the same chain available again and again, which virtio 1.2 §2.7.13
//! forbids, would otherwise have the worker queue jobs without end).
//! A request that panics on a pool thread is raised again on the worker, as if the worker had
//! handled it: the worker's err eventfd tells the front-end at once, and the transport knows
//! the queue's position is lost and closes the connection at the next stop, instead of a stop
//! waiting for a chain nobody will return.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use vhu_transport_std::LoggedMemory;

use vhu_core::message::VringBase;
use vhu_transport_std::vm_memory::{Address, GuestAddressSpace, GuestMemory};
use vhu_transport_std::{Notifier, QueueContext, QueueHandler};
use zerocopy::IntoBytes;

use crate::fuse::abi::OutHeader;
use crate::fuse::{Defer, Handled, Opcode, ReplyWriter, Server};
use crate::passthrough::PassthroughFs;
use vhu_transport_std::virtq::{
    end_turn, serve_turn, DescriptorChain, Reader, RingMemory, RingPoll, Virtqueue, Writer,
};

use super::inbox::{Done, Inbox};
use super::pool::Pool;

/// The ring, shared with the pool's threads, which return the chains they answered.
#[derive(Debug)]
struct Ring {
    queue: Virtqueue,
    /// The ring could not be read or written: nothing more is served until it is restarted.
    broken: bool,
}

type SharedRing = Arc<Mutex<Ring>>;

fn lock(ring: &SharedRing) -> MutexGuard<'_, Ring> {
    // Every change under the lock is one call that leaves the ring whole: a panic elsewhere
    // cannot leave it half-changed.
    ring.lock().unwrap_or_else(|e| e.into_inner())
}

/// The handler of one queue.
pub struct FsQueue {
    ring: SharedRing,
    server: Arc<Server<PassthroughFs>>,
    /// The last batch ended with chains still available.
    more: bool,
    inbox: Arc<Inbox>,
    /// Chains whose reply comes later, by `unique`.
    deferred: HashMap<u64, DescriptorChain>,
    /// Deferred replies that arrived before their chain was posted back by the pool.
    early: HashMap<u64, Vec<u8>>,
    pool: Option<Pool>,
    poll: RingPoll,
    /// Chains a turn took for the pool, handed over once the ring is unlocked.
    handoff: Vec<DescriptorChain>,
    /// The queue's context as the pool's threads use it (notifiers, the queue's index).
    pool_ctx: Option<Arc<QueueContext>>,
}

impl std::fmt::Debug for FsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsQueue").field("ring", &*lock(&self.ring)).finish()
    }
}

impl FsQueue {
    /// A handler for a validated queue (split or packed).
    pub fn new(queue: impl Into<Virtqueue>, server: Arc<Server<PassthroughFs>>) -> Self {
        let queue = queue.into();
        // Half the ring's descriptors may hold waits (a quarter without indirect descriptors,
        // where Linux's lock request takes three): the rest is room for what ends them.
        let share = if queue.indirect() { 2 } else { 4 };
        let hold_limit = usize::from(queue.size() / share).max(1);
        Self {
            ring: Arc::new(Mutex::new(Ring { queue, broken: false })),
            server,
            more: false,
            inbox: Arc::new(Inbox::new(hold_limit)),
            deferred: HashMap::new(),
            early: HashMap::new(),
            pool: None,
            poll: RingPoll::new(),
            handoff: Vec::new(),
            pool_ctx: None,
        }
    }

    /// Handles the queue's chains on `threads` pool threads. With 0 or 1 they are handled on
    /// the queue's worker: a single pool thread would run one request at a time just as the
    /// worker does, adding only a hand-off and a wake-up per request (and costing the ring its
    /// poll). Kata Containers starts virtio-fs back-ends with `--thread-pool-size=1`.
    pub fn with_pool(mut self, threads: usize) -> Self {
        self.pool = (threads > 1).then(|| Pool::new(threads));
        if self.pool.is_some() {
            // The worker only takes chains for the pool's threads; a poll of the ring would
            // spin on a CPU they need.
            self.poll = RingPoll::with_max(std::time::Duration::ZERO);
        }
        self
    }

    /// Serves available chains, at most one queue's worth per call, so a guest that keeps its
    /// ring full cannot keep a stop (GET_VRING_BASE) waiting: the worker sees commands between
    /// batches and calls again while [`QueueHandler::has_more`] says so.
    fn run<M: GuestMemory>(
        &mut self,
        ring: &mut Virtqueue,
        mem: &M,
        call: &Notifier,
    ) -> Result<(), vhu_transport_std::virtq::QueueError> {
        self.complete_deferred(ring, mem, call)?;
        let (server, pooled) = (&self.server, self.pool.is_some());
        if pooled && self.inbox.full(usize::from(ring.size())) {
            self.more = false;
            return Ok(());
        }
        let defer: Arc<dyn Defer> = Arc::clone(&self.inbox) as Arc<dyn Defer>;
        let (early, deferred, handoff) = (&mut self.early, &mut self.deferred, &mut self.handoff);
        self.more = serve_turn(ring, mem, call, &mut self.poll, |queue, view, chain| {
            if pooled {
                handoff.push(chain.clone());
                return Ok(());
            }
            // Completions the ring holds back are announced before a request that may wait
            // for long: a finished request never waits for a slow one.
            if queue.holds_announcement() && may_wait_long(view, chain) {
                queue.announce(view, call)?;
            }
            // Through the turn's view: the chain's buffers lie in regions it mapped once.
            let mut reader = Reader::new(view, chain);
            let mut writer = Writer::new(view, chain);
            // A request the server cannot parse gets no reply bytes; the chain is still
            // returned so the guest's request completes (with an error it detects).
            let handled = server.handle_with(&mut reader, &mut writer, Some(&defer));
            if let Err(error) = &handled {
                log_refused(error);
            }
            if let Ok(Handled::Deferred(unique)) = handled {
                return keep_deferred(queue, early, deferred, mem, (unique, chain.clone()), call);
            }
            let written = u32::try_from(writer.written()).unwrap_or(u32::MAX);
            queue.complete(view, chain.head(), written, call)
        })?;
        Ok(())
    }
}

impl FsQueue {
    /// Puts what finished elsewhere into the ring.
    fn complete_deferred<M: GuestMemory>(
        &mut self,
        queue: &mut Virtqueue,
        mem: &M,
        call: &Notifier,
    ) -> Result<(), vhu_transport_std::virtq::QueueError> {
        // Every item is taken in even after a failure: a deferred chain dropped here would
        // leave its wait running with nobody to cancel it.
        let mut result = Ok(());
        for done in self.inbox.take() {
            let step = match done {
                Done::Deferred(unique, chain) => keep_deferred(
                    queue,
                    &mut self.early,
                    &mut self.deferred,
                    mem,
                    (unique, chain),
                    call,
                ),
                Done::Reply(unique, reply) => match self.deferred.remove(&unique) {
                    Some(chain) => answer(queue, mem, &chain, &reply, call),
                    // Its chain is still on its way back from the pool.
                    None if self.pool.is_some() => {
                        self.early.insert(unique, reply);
                        Ok(())
                    }
                    // A reply for a chain already answered (the ring stopped meanwhile).
                    None => Ok(()),
                },
            };
            result = result.and(step);
        }
        result
    }

    /// Chains still waiting for a reply (for inspection).
    pub fn deferred(&self) -> usize {
        self.deferred.len()
    }

    /// Chains handed to the pool and not yet done with (for inspection).
    pub fn in_pool(&self) -> usize {
        self.inbox.in_pool()
    }

    /// Runs `job` on the queue's pool, if it has one, as a request would run there (for
    /// tests that need the pool's threads busy).
    #[cfg(test)]
    pub(super) fn run_on_pool(&self, job: impl FnOnce() + Send + 'static) -> bool {
        let Some(pool) = &self.pool else { return false };
        pool.run(Box::new(job));
        true
    }
}

/// Whether the request in `chain` may wait for long ([`Opcode::may_wait_long`]), from its opcode (a
/// header split over descriptors, or unreadable, is taken as not: the server will say why).
fn may_wait_long<R: RingMemory + ?Sized>(mem: &R, chain: &DescriptorChain) -> bool {
    let Some(first) = chain.readable().first().filter(|s| s.len >= 8) else { return false };
    let mut opcode = [0u8; 4];
    let Some(at) = first.addr.checked_add(4) else { return false };
    mem.read_bytes(at, &mut opcode).is_ok()
        && Opcode::from_u32(u32::from_le_bytes(opcode)).is_some_and(Opcode::may_wait_long)
}

/// What a pool thread needs besides its chain.
struct PoolJob {
    server: Arc<Server<PassthroughFs>>,
    inbox: Arc<Inbox>,
    ring: SharedRing,
    ctx: Arc<QueueContext>,
    mem: Arc<LoggedMemory>,
}

impl PoolJob {
    /// Handles `chain` on a pool thread, which returns it to the ring (or, deferred, to the
    /// inbox).
    fn hand(&self, pool: &Pool, chain: DescriptorChain) {
        let Self { server, inbox, ring, ctx, mem } = self;
        let (server, inbox, ring) = (Arc::clone(server), Arc::clone(inbox), Arc::clone(ring));
        let (ctx, mem) = (Arc::clone(ctx), Arc::clone(mem));
        inbox.handed();
        pool.run(Box::new(move || {
            inbox.run_pooled(|| {
                let defer: Arc<dyn Defer> = Arc::clone(&inbox) as Arc<dyn Defer>;
                let mut reader = Reader::new(&*mem, &chain);
                let mut writer = Writer::new(&*mem, &chain);
                let handled = server.handle_with(&mut reader, &mut writer, Some(&defer));
                if let Err(error) = &handled {
                    log_refused(error);
                }
                if let Ok(Handled::Deferred(unique)) = handled {
                    return inbox.returned(Done::Deferred(unique, chain));
                }
                let written = u32::try_from(writer.written()).unwrap_or(u32::MAX);
                let mut ring = lock(&ring);
                if !ring.broken {
                    // Announced at once, as the end of a turn announces: nothing is held back
                    // for a completion that may be slower.
                    let used = ring.queue.add_used(&*mem, chain.head(), written);
                    ring.broken = end_turn(&mut ring.queue, &*mem, &ctx, used);
                }
                drop(ring);
                inbox.settled();
            })
        }));
    }
}

/// Keeps a deferred request's chain until its reply comes (it may have come already).
fn keep_deferred<M: GuestMemory>(
    queue: &mut Virtqueue,
    early: &mut HashMap<u64, Vec<u8>>,
    deferred: &mut HashMap<u64, DescriptorChain>,
    mem: &M,
    (unique, chain): (u64, DescriptorChain),
    call: &Notifier,
) -> Result<(), vhu_transport_std::virtq::QueueError> {
    if let Some(reply) = early.remove(&unique) {
        return answer(queue, mem, &chain, &reply, call);
    }
    // A guest reusing a `unique` still waiting gets the older chain back empty rather than
    // leaking it.
    match deferred.insert(unique, chain) {
        Some(old) => queue.complete(mem, old.head(), 0, call),
        None => Ok(()),
    }
}

/// Writes a reply that came later into its chain and returns the chain.
fn answer<M: GuestMemory>(
    queue: &mut Virtqueue,
    mem: &M,
    chain: &DescriptorChain,
    reply: &[u8],
    call: &Notifier,
) -> Result<(), vhu_transport_std::virtq::QueueError> {
    let mut writer = Writer::new(mem, chain);
    let written = if writer.write_all(reply).is_ok() { reply.len() } else { 0 };
    queue.complete(mem, chain.head(), u32::try_from(written).unwrap_or(0), call)
}

impl QueueHandler for FsQueue {
    fn stopped(&mut self, ctx: &QueueContext) {
        // Every chain handed to the pool is answered before the ring's base is reported.
        self.inbox.wait_pool_idle();
        self.inbox.raise_panic();
        let ring = Arc::clone(&self.ring);
        let mut ring = lock(&ring);
        if ring.broken {
            // The ring cannot take replies, but the waits must still end: those of chains
            // kept here and of chains the pool posted back since.
            let posted = self.inbox.take().into_iter().filter_map(|done| match done {
                Done::Deferred(unique, _) => Some(unique),
                Done::Reply(..) => None,
            });
            let kept: Vec<u64> = std::mem::take(&mut self.deferred).into_keys().collect();
            for unique in kept.into_iter().chain(posted) {
                self.server.cancel(unique);
            }
            self.early.clear();
            return;
        }
        let memory = ctx.memory.memory();
        let mut result = self.complete_deferred(&mut ring.queue, &*memory, &ctx.call);
        // Waits still running end now. One that took its lock just before the cancel reports
        // that, so the guest is never told EINTR for a lock its owner holds on the host.
        let waiting: Vec<u64> = self.deferred.keys().copied().collect();
        self.server.cancel_and_settle(&waiting);
        result = result.and(self.complete_deferred(&mut ring.queue, &*memory, &ctx.call));
        self.early.clear();
        // Any chain still without its reply is interrupted.
        for (unique, chain) in std::mem::take(&mut self.deferred) {
            self.server.cancel(unique);
            let error = -rustix::io::Errno::INTR.raw_os_error();
            let reply = OutHeader { len: size_of::<OutHeader>() as u32, error, unique };
            result = result.and_then(|()| {
                answer(&mut ring.queue, &*memory, &chain, reply.as_bytes(), &ctx.call)
            });
        }
        ring.broken = end_turn(&mut ring.queue, &*memory, ctx, result);
    }

    fn process(&mut self, ctx: &QueueContext) {
        self.inbox.raise_panic();
        let shared_ring = Arc::clone(&self.ring);
        let mut ring = lock(&shared_ring);
        if ring.broken {
            return;
        }
        self.inbox.keep_waker(&ctx.waker);
        let memory = ctx.memory.memory();
        let turn = self.run(&mut ring.queue, &*memory, &ctx.call);
        ring.broken = end_turn(&mut ring.queue, &*memory, ctx, turn);
        let broken = ring.broken;
        // The pool's threads return chains under the lock: hand over only once it is free.
        drop(ring);
        let Some(pool) = &self.pool else { return };
        if broken || self.handoff.is_empty() {
            self.handoff.clear();
            return;
        }
        let job = PoolJob {
            server: Arc::clone(&self.server),
            inbox: Arc::clone(&self.inbox),
            ring: shared_ring,
            ctx: Arc::clone(self.pool_ctx.get_or_insert_with(|| Arc::new(ctx.clone()))),
            mem: memory.clone().into_inner(),
        };
        for chain in self.handoff.drain(..) {
            job.hand(pool, chain);
        }
    }

    fn has_more(&self) -> bool {
        self.more && !lock(&self.ring).broken
    }

    fn base(&self) -> VringBase {
        lock(&self.ring).queue.base()
    }
}

/// A request the server could not parse, at `warn`, thinned out once the guest keeps sending
/// them.
fn log_refused(error: &crate::fuse::ServerError) {
    static REFUSED: crate::repeats::Repeats = crate::repeats::Repeats::new();
    if let Some(count) = REFUSED.next() {
        log::warn!("refused request: {error} ({count} so far, later ones logged at powers of two)");
    }
}
