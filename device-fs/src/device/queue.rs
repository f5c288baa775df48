//! One virtio-fs queue served on its worker thread: pop chains, hand each to the FUSE server,
//! publish the used entries, notify the driver.
//!
//! Guest-controlled ring contents never panic here: a malformed chain is returned used with
//! length 0 (the ring goes on), and a ring that cannot be read at all (its index jumped, its
//! memory vanished) stops being processed and its err eventfd is signalled. This module must not
//! interpret FUSE requests; the server does.

use std::sync::Arc;

use vhu_core::message::{PackedBase, VringBase};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemory};
use vhu_transport_std::{QueueContext, QueueHandler};

use crate::fuse::Server;
use crate::passthrough::PassthroughFs;
use crate::virtq::{Reader, Virtqueue, Writer};

/// The handler of one queue.
pub struct FsQueue {
    queue: Virtqueue,
    server: Arc<Server<PassthroughFs>>,
    /// The ring could not be read: stop processing until it is restarted.
    broken: bool,
    /// The last batch ended with chains still available.
    more: bool,
}

impl std::fmt::Debug for FsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsQueue").field("queue", &self.queue).field("broken", &self.broken).finish()
    }
}

impl FsQueue {
    /// A handler for a validated queue (split or packed).
    pub fn new(queue: impl Into<Virtqueue>, server: Arc<Server<PassthroughFs>>) -> Self {
        Self { queue: queue.into(), server, broken: false, more: false }
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
        self.queue.disable_notification(mem)?;
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
                    let _ = self.server.handle(&mut reader, &mut writer);
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

impl QueueHandler for FsQueue {
    fn process(&mut self, ctx: &QueueContext) {
        if self.broken {
            return;
        }
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
