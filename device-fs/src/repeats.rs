//! Logging what a guest can cause on every request without letting it fill the host's log: a
//! [`Repeats`] counts one kind of event and says which occurrences to log — the first ten, then
//! each one whose count is a power of two — so an operator still sees that it goes on and how
//! often. This module must not log by itself nor know what the events are.

use std::sync::atomic::{AtomicU64, Ordering};

/// Occurrences of one kind of event, process-wide; see the module docs.
#[derive(Debug, Default)]
pub struct Repeats(AtomicU64);

impl Repeats {
    /// Occurrences always logged before thinning out.
    const FIRST: u64 = 10;

    /// No occurrence yet.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Counts one occurrence; its count when it is one to log.
    pub fn next(&self) -> Option<u64> {
        let count = self.0.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        (count <= Self::FIRST || count.is_power_of_two()).then_some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::Repeats;

    #[test]
    fn the_first_ten_then_powers_of_two_are_logged() {
        let repeats = Repeats::new();
        let logged: Vec<u64> = (0..1000).filter_map(|_| repeats.next()).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64, 128, 256, 512]);
    }
}
