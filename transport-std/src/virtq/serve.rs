//! [`ChainQueue`]: a queue whose device answers each descriptor chain on the spot — the
//! [`QueueHandler`] a simple device needs, so it only says what one chain means.
//!
//! Each `process` call serves at most one queue's worth of chains (a guest that keeps its ring
//! full cannot keep a stop waiting), with kicks disabled while it works and re-enabled before it
//! goes idle; the driver hears about each chain as soon as it is returned, when the ring asks for
//! it (EVENT_IDX rules in [`Virtqueue`]). A chain that is malformed is returned used with length 0 and the
//! ring goes on; a ring that cannot be read at all stops being served and its err eventfd is
//! signalled.
//!
//! This module must not interpret what a chain carries: the [`ChainService`] does.

use vhu_core::message::VringBase;
use vm_memory::{GuestAddressSpace, GuestMemoryMmap};

use super::{DescriptorChain, QueueError, Reader, Virtqueue, Writer};
use crate::device::Notifier;
use crate::worker::{QueueContext, QueueHandler};

/// What a device does with one descriptor chain.
pub trait ChainService: Send + 'static {
    /// Serves `chain`: reads the request through `reader`, writes the answer through `writer`.
    /// What was written is returned to the driver as the chain's used length.
    fn serve(
        &mut self,
        chain: &DescriptorChain,
        reader: &mut Reader<'_, GuestMemoryMmap>,
        writer: &mut Writer<'_, GuestMemoryMmap>,
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
}

impl<S: ChainService> ChainQueue<S> {
    /// `service` answering the chains of `queue`.
    pub fn new(queue: Virtqueue, service: S) -> Self {
        Self { queue, service, broken: false, more: false }
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    fn run(&mut self, mem: &GuestMemoryMmap, call: &Notifier) -> Result<(), QueueError> {
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
                    self.service.serve(&chain, &mut reader, &mut writer);
                    let written = u32::try_from(writer.written()).unwrap_or(u32::MAX);
                    self.queue.complete(mem, chain.head(), written, call)?;
                }
                Ok(None) => {
                    if !self.queue.enable_notification(mem)? {
                        return Ok(());
                    }
                    self.queue.disable_notification(mem)?;
                }
                Err(error) => match error.head() {
                    Some(head) => self.queue.complete(mem, head, 0, call)?,
                    None => return Err(error),
                },
            }
        }
    }
}

impl<S: ChainService> QueueHandler for ChainQueue<S> {
    fn process(&mut self, ctx: &QueueContext) {
        if self.broken {
            return;
        }
        let memory = ctx.memory.memory();
        let result = self.run(&memory, &ctx.call);
        // Tell the driver about what was used, even when the ring broke afterwards.
        if self.queue.needs_notification(&*memory).unwrap_or(true) {
            let _ = ctx.call.notify();
        }
        if let Err(error) = result {
            log::warn!(
                "queue {}: the ring broke, no more chains served on it: {error}",
                ctx.index.0
            );
            self.broken = true;
            let _ = ctx.err.notify();
        }
    }

    fn has_more(&self) -> bool {
        self.more && !self.broken
    }

    fn base(&self) -> VringBase {
        self.queue.base()
    }
}
