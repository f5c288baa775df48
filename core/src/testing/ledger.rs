//! The token ledger: which descriptor tokens a state machine received and released, and the
//! checks that each enters once, leaves once, and leaves in time.

use std::collections::BTreeMap;
use std::vec::Vec;

use crate::FdToken;

/// What one side holds of each token: how often it entered and left.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    entered: u8,
    left: u8,
    /// Arrived with an input: must leave while that input is handled.
    transient: bool,
}

/// The descriptor tokens one state machine received and released.
#[derive(Debug, Default)]
pub struct Ledger {
    next: u32,
    entries: BTreeMap<FdToken, Entry>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new token the caller owns; it enters only once [`Ledger::enter`] says so.
    pub fn fresh(&mut self) -> FdToken {
        self.next += 1;
        let fd = FdToken(self.next);
        self.entries.insert(fd, Entry::default());
        fd
    }

    /// `n` tokens arriving with an input: they enter at once and must leave while it is handled.
    pub fn arriving(&mut self, n: usize) -> Vec<FdToken> {
        (0..n)
            .map(|_| {
                let fd = self.fresh();
                self.enter(fd, true);
                fd
            })
            .collect()
    }

    /// The state machine took `fd`; `transient` if it must give it back before the input ends.
    ///
    /// # Panics
    ///
    /// If `fd` entered before.
    pub fn enter(&mut self, fd: FdToken, transient: bool) {
        let entry = self.entries.entry(fd).or_default();
        assert_eq!(entry.entered, 0, "token {fd:?} entered twice");
        entry.entered = 1;
        entry.transient = transient;
    }

    /// The state machine handed `fd` off or released it.
    ///
    /// # Panics
    ///
    /// If `fd` never entered, or left before.
    pub fn left(&mut self, fd: FdToken) {
        let entry = self.entries.entry(fd).or_default();
        assert_eq!(
            entry.entered, 1,
            "token {fd:?} left without entering (it stays with the caller)"
        );
        assert_eq!(entry.left, 0, "token {fd:?} left twice");
        entry.left = 1;
    }

    /// # Panics
    ///
    /// If a token that arrived with an input is still held.
    pub fn assert_transients_left(&self) {
        for (fd, entry) in &self.entries {
            if entry.transient {
                assert_eq!(entry.left, entry.entered, "token {fd:?} of an input still held");
            }
        }
    }

    /// # Panics
    ///
    /// If a token that entered is still held.
    pub fn assert_balanced(&self) {
        for (fd, entry) in &self.entries {
            assert_eq!(entry.left, entry.entered, "token {fd:?} still held");
        }
    }
}
