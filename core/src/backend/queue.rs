//! The back-end's output queue: bounded, allocation-free, in the order the driver must act.
//!
//! Actions come first, then the per-ring enable changes (derived from ring state so that "enable
//! all rings" never needs one queue slot per ring), then the one reply or close that ends the
//! input's outputs. This module decides order only, never content.

use heapless::Deque;

use super::output::{Action, Output};
use super::vrings::Vring;
use crate::limits::{MAX_OUTPUTS, MAX_QUEUES};
use crate::message::{ConfigFlags, Reply};
use crate::{ProtocolError, VringIndex};

/// A queued output; the variants other than `Out` borrow the back-end's buffers when polled.
#[derive(Debug)]
pub(super) enum Item {
    Out(Output<'static>),
    ConfigReply { offset: u32, flags: ConfigFlags },
    WriteConfig { offset: u32, migration: bool },
    LogReply,
    ShmemReply,
    PostcopyReply,
}

impl Item {
    fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Out(Output::Reply(_) | Output::Nack { .. } | Output::Close(_))
                | Self::ConfigReply { .. }
                | Self::LogReply
                | Self::ShmemReply
                | Self::PostcopyReply
        )
    }
}

#[derive(Debug)]
pub(super) struct OutputQueue {
    items: Deque<Item, MAX_OUTPUTS>,
    enable_changes: [u64; MAX_QUEUES / 64],
    last: Option<Item>,
    replies: u64,
    overflowed: bool,
}

impl OutputQueue {
    pub(super) const fn new() -> Self {
        Self {
            items: Deque::new(),
            enable_changes: [0; MAX_QUEUES / 64],
            last: None,
            replies: 0,
            overflowed: false,
        }
    }

    /// How many replies were ever queued (to tell whether an input produced one).
    pub(super) fn replies(&self) -> u64 {
        self.replies
    }

    pub(super) fn push(&mut self, item: Item) {
        if item.is_final() {
            if matches!(
                item,
                Item::Out(Output::Reply(_) | Output::Nack { .. })
                    | Item::ConfigReply { .. }
                    | Item::LogReply
                    | Item::ShmemReply
                    | Item::PostcopyReply
            ) {
                self.replies += 1;
            }
            // A driver that did not drain the previous input's outputs: keep their order.
            if let Some(previous) = self.last.take() {
                self.push_item(previous);
            }
            self.last = Some(item);
        } else {
            self.push_item(item);
        }
    }

    fn push_item(&mut self, item: Item) {
        if self.items.push_back(item).is_err() {
            // Only a driver that never drains can get here; the session is unusable.
            self.overflowed = true;
        }
    }

    pub(super) fn push_action(&mut self, action: Action<'static>) {
        self.push(Item::Out(Output::Action(action)));
    }

    pub(super) fn push_reply(&mut self, reply: Reply<'static>) {
        self.push(Item::Out(Output::Reply(reply)));
    }

    pub(super) fn push_close(&mut self, error: ProtocolError) {
        self.push(Item::Out(Output::Close(error)));
    }

    /// Records that ring `index` changed enabled state while started.
    pub(super) fn mark_enable_change(&mut self, index: usize) {
        if let Some(word) = self.enable_changes.get_mut(index / 64) {
            *word |= 1 << (index % 64);
        }
    }

    pub(super) fn pop(&mut self, vrings: &[Vring]) -> Option<Item> {
        if self.overflowed {
            self.overflowed = false;
            self.items.clear();
            self.last = None;
            self.enable_changes = [0; MAX_QUEUES / 64];
            return Some(Item::Out(Output::Close(ProtocolError::OutputOverflow)));
        }
        if let Some(item) = self.items.pop_front() {
            return Some(item);
        }
        while let Some(index) = self.take_enable_change() {
            if let Some(vring) = vrings.get(index).filter(|v| v.state.started) {
                return Some(Item::Out(Output::Action(Action::SetVringEnabled {
                    // Cannot truncate: index < MAX_QUEUES = 256.
                    index: VringIndex(index as u8),
                    enabled: vring.state.enabled,
                })));
            }
        }
        self.last.take()
    }

    fn take_enable_change(&mut self) -> Option<usize> {
        for (w, word) in self.enable_changes.iter_mut().enumerate() {
            if *word != 0 {
                let bit = word.trailing_zeros() as usize;
                *word &= !(1 << bit);
                return Some(w * 64 + bit);
            }
        }
        None
    }
}
