//! The token ledger: which descriptor tokens a state machine received and released, and the
//! checks that each enters once, leaves once, and leaves in time.

use std::collections::BTreeMap;

use vhu_core::FdToken;

/// What one side holds of each token: how often it entered and left.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    entered: u8,
    left: u8,
    /// Arrived with a frame or a completion: must leave during the same step.
    transient: bool,
}

/// The descriptor tokens one state machine received and released.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    next: u32,
    entries: BTreeMap<FdToken, Entry>,
}

impl Ledger {
    /// A token the caller owns; it enters only once [`Ledger::enter`] says so.
    pub(crate) fn fresh(&mut self) -> FdToken {
        self.next += 1;
        let fd = FdToken(self.next);
        self.entries.insert(fd, Entry::default());
        fd
    }

    /// `n` tokens arriving with a frame: they enter at once and must leave during the step.
    pub(crate) fn arriving(&mut self, n: usize) -> Vec<FdToken> {
        (0..n)
            .map(|_| {
                let fd = self.fresh();
                self.enter(fd, true);
                fd
            })
            .collect()
    }

    /// The state machine took `fd`.
    pub(crate) fn enter(&mut self, fd: FdToken, transient: bool) {
        let entry = self.entries.entry(fd).or_default();
        assert_eq!(entry.entered, 0, "token {fd:?} entered twice");
        entry.entered = 1;
        entry.transient = transient;
    }

    /// The state machine handed `fd` off or released it.
    pub(crate) fn left(&mut self, fd: FdToken) {
        let entry = self.entries.entry(fd).or_default();
        assert_eq!(
            entry.entered, 1,
            "token {fd:?} left without entering (it stays with the caller)"
        );
        assert_eq!(entry.left, 0, "token {fd:?} left twice");
        entry.left = 1;
    }

    /// Every token that arrived with an input has left.
    pub(crate) fn assert_transients_left(&self) {
        for (fd, entry) in &self.entries {
            if entry.transient {
                assert_eq!(entry.left, entry.entered, "token {fd:?} of an input still held");
            }
        }
    }

    /// Every token that entered has left.
    pub(crate) fn assert_balanced(&self) {
        for (fd, entry) in &self.entries {
            assert_eq!(entry.left, entry.entered, "token {fd:?} still held");
        }
    }
}
