//! One virtio-fs queue served on its worker thread: pop chains, hand each to the FUSE server,
//! publish the used entries, notify the driver.
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vhu_core::message::{PackedBase, VringBase};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemory};
use vhu_transport_std::{QueueContext, QueueHandler, QueueWaker};
use zerocopy::IntoBytes;

use crate::fuse::abi::OutHeader;
use crate::fuse::{Defer, Handled, ReplyWriter, Server};
use crate::passthrough::PassthroughFs;
use crate::virtq::{DescriptorChain, Reader, Virtqueue, Writer};

/// Replies finished off the worker thread, waiting to be put into their chains.
#[derive(Default)]
struct Inbox {
    done: Mutex<Vec<(u64, Vec<u8>)>>,
    waker: Mutex<Option<QueueWaker>>,
}

impl Defer for Inbox {
    fn complete(&self, unique: u64, reply: Vec<u8>) {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).push((unique, reply));
        if let Some(waker) = &*self.waker.lock().unwrap_or_else(|e| e.into_inner()) {
            waker.wake();
        }
    }
}

/// The handler of one queue.
pub struct FsQueue {
    queue: Virtqueue,
    server: Arc<Server<PassthroughFs>>,
    /// The ring could not be read: stop processing until it is restarted.
    broken: bool,
    /// The last batch ended with chains still available.
    more: bool,
    inbox: Arc<Inbox>,
    /// Chains whose reply comes later, by `unique`.
    deferred: HashMap<u64, DescriptorChain>,
}

impl std::fmt::Debug for FsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsQueue").field("queue", &self.queue).field("broken", &self.broken).finish()
    }
}

impl FsQueue {
    /// A handler for a validated queue (split or packed).
    pub fn new(queue: impl Into<Virtqueue>, server: Arc<Server<PassthroughFs>>) -> Self {
        Self {
            queue: queue.into(),
            server,
            broken: false,
            more: false,
            inbox: Arc::default(),
            deferred: HashMap::new(),
        }
    }

    /// The queue served.
    pub fn queue(&self) -> &Virtqueue {
        &self.queue
    }

    /// Serves available chains, at most one queue's worth per call, so a guest that keeps its
    /// ring full cannot keep a stop (GET_VRING_BASE) waiting: the worker sees commands between
    /// batches and calls again while [`QueueHandler::has_more`] says so.
    fn run<M: GuestMemory>(&mut self, mem: &M) -> Result<(), crate::virtq::QueueError> {
        self.more = false;
        self.complete_deferred(mem)?;
        self.queue.disable_notification(mem)?;
        let defer: Arc<dyn Defer> = Arc::clone(&self.inbox) as Arc<dyn Defer>;
        let mut budget = self.queue.size();
        loop {
            if budget == 0 {
                // Notifications stay disabled: the worker comes back without waiting for a kick.
                self.more = true;
                return Ok(());
            }
            budget -= 1;
            match self.queue.pop(mem) {
                Ok(Some(chain)) => {
                    let mut reader = Reader::new(mem, &chain);
                    let mut writer = Writer::new(mem, &chain);
                    // A request the server cannot parse gets no reply bytes; the chain is still
                    // returned so the guest's request completes (with an error it detects).
                    let handled = self.server.handle_with(&mut reader, &mut writer, Some(&defer));
                    if let Ok(Handled::Deferred(unique)) = handled {
                        // A guest reusing a `unique` still waiting gets the older chain back
                        // empty rather than leaking it.
                        if let Some(old) = self.deferred.insert(unique, chain) {
                            self.queue.add_used(mem, old.head(), 0)?;
                        }
                        continue;
                    }
                    let written = u32::try_from(writer.written()).unwrap_or(u32::MAX);
                    self.queue.add_used(mem, chain.head(), written)?;
                }
                Ok(None) => {
                    if !self.queue.enable_notification(mem)? {
                        return Ok(());
                    }
                    self.queue.disable_notification(mem)?;
                }
                Err(error) => match error.head() {
                    Some(head) => self.queue.add_used(mem, head, 0)?,
                    None => return Err(error),
                },
            }
        }
    }
}

impl FsQueue {
    /// Puts the replies finished elsewhere into their chains.
    fn complete_deferred<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<(), crate::virtq::QueueError> {
        let done = std::mem::take(&mut *self.inbox.done.lock().unwrap_or_else(|e| e.into_inner()));
        for (unique, reply) in done {
            // A reply for a chain already answered (the ring stopped meanwhile) is dropped.
            if let Some(chain) = self.deferred.remove(&unique) {
                self.answer(mem, &chain, &reply)?;
            }
        }
        Ok(())
    }

    fn answer<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &DescriptorChain,
        reply: &[u8],
    ) -> Result<(), crate::virtq::QueueError> {
        let mut writer = Writer::new(mem, chain);
        let written = if writer.write_all(reply).is_ok() { reply.len() } else { 0 };
        self.queue.add_used(mem, chain.head(), u32::try_from(written).unwrap_or(0))
    }

    /// Chains still waiting for a reply (for inspection).
    pub fn deferred(&self) -> usize {
        self.deferred.len()
    }
}

impl QueueHandler for FsQueue {
    fn stopped(&mut self, ctx: &QueueContext) {
        if self.broken {
            // The ring cannot take replies, but the waits must still end.
            for unique in std::mem::take(&mut self.deferred).into_keys() {
                self.server.cancel(unique);
            }
            return;
        }
        let memory = ctx.memory.memory();
        // Replies that arrived in time go out as they are; the rest are interrupted.
        let mut result = self.complete_deferred(&*memory);
        for (unique, chain) in std::mem::take(&mut self.deferred) {
            self.server.cancel(unique);
            let error = -rustix::io::Errno::INTR.raw_os_error();
            let reply = OutHeader { len: size_of::<OutHeader>() as u32, error, unique };
            result = result.and_then(|()| self.answer(&*memory, &chain, reply.as_bytes()));
        }
        if self.queue.needs_notification(&*memory).unwrap_or(true) {
            let _ = ctx.call.notify();
        }
        if result.is_err() {
            self.broken = true;
            let _ = ctx.err.notify();
        }
    }

    fn process(&mut self, ctx: &QueueContext) {
        if self.broken {
            return;
        }
        self.inbox
            .waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| ctx.waker.clone());
        let memory = ctx.memory.memory();
        let result = self.run(&*memory);
        // Tell the driver about what was used, even when the ring broke afterwards.
        if self.queue.needs_notification(&*memory).unwrap_or(true) {
            let _ = ctx.call.notify();
        }
        if result.is_err() {
            self.broken = true;
            let _ = ctx.err.notify();
        }
    }

    fn has_more(&self) -> bool {
        self.more && !self.broken
    }

    fn base(&self) -> VringBase {
        match &self.queue {
            Virtqueue::Split(queue) => VringBase::split(queue.state().next_avail),
            Virtqueue::Packed(queue) => {
                let state = queue.state();
                VringBase::packed(PackedBase {
                    avail_index: state.next_avail,
                    avail_wrap: state.avail_wrap,
                    used_index: state.next_used,
                    used_wrap: state.used_wrap,
                })
            }
        }
    }
}

/// The used index the ring holds now: where a restarted ring resumes filling (after a guest
/// reboot it is 0 again, whatever it was when the ring stopped).
pub(super) fn used_index<M: GuestMemory>(mem: &M, used_ring: u64) -> Option<u16> {
    let mut raw = [0u8; 2];
    mem.read_slice(&mut raw, GuestAddress(used_ring.checked_add(2)?)).ok()?;
    Some(u16::from_le_bytes(raw))
}
