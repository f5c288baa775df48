//! The byte ranges one guest lock owner holds, with their types: what the lock table keeps
//! beside the host's own records, so it can tell an owner that holds nothing from one that holds
//! a lock, find the guest owner in the way of a request, and bound how many ranges apart an
//! owner may hold. This module keeps the list only; it must not take or drop host locks.

use crate::fuse::{Lock, LockType};

/// The byte ranges an owner holds, inclusive, sorted and apart, with their types (a flock lock
/// is the whole file); ranges of one type that touch are one, as the kernel keeps them (a
/// region locked piece by piece is one lock). A migration can so tell an owner that holds
/// nothing from one that holds a lock, and a SETLKW which guest owners hold what it asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Ranges(pub(super) Vec<(u64, u64, LockType)>);

impl Ranges {
    /// Ranges one owner holds apart at most: a lock, or an unlock splitting a held range, that
    /// would make more is refused with ENOLCK (POSIX: "the number of locked regions would
    /// exceed a system-imposed limit", for an unlock too, and for a SETLKW when it is granted),
    /// so a guest cannot make the host kernel keep lock records without end. Should the record
    /// go past it all the same, it merges into one write lock that covers them all (the owner
    /// still counts as holding, and as in the way of anything there).
    pub(super) const KEPT: usize = 1024;

    /// Whether locking `start..=end` as `taking` (or unlocking it, `None`) would make the owner
    /// hold more than [`Ranges::KEPT`] ranges apart: an unlock inside a held range splits it in
    /// two, and a lock that touches no range of its type adds one.
    pub(super) fn would_exceed(&self, start: u64, end: u64, taking: Option<LockType>) -> bool {
        // Either splits at most one held range in two; taking adds at most the range itself.
        if self.0.len() + 2 <= Self::KEPT {
            return false;
        }
        let mut after = Self(self.0.clone());
        after.give_back(start, end);
        if let Some(typ) = taking {
            after.insert(start, end, typ);
        }
        after.0.len() > Self::KEPT
    }

    /// The owner now holds `start..=end` as `typ` (POSIX replaces an owner's lock on the
    /// range).
    pub(super) fn take(&mut self, start: u64, end: u64, typ: LockType) {
        self.give_back(start, end);
        self.insert(start, end, typ);
        if self.0.len() > Self::KEPT {
            let (first, last) = (self.0[0].0, self.0[self.0.len() - 1].1);
            self.0 = vec![(first, last, LockType::Write)];
        }
    }

    /// Adds `start..=end`, which no held range overlaps, joined with the ranges of its type
    /// right before and after it.
    fn insert(&mut self, mut start: u64, mut end: u64, typ: LockType) {
        let mut at = self.0.partition_point(|r| r.0 < start);
        if let Some(&(after, last, t)) = self.0.get(at) {
            if t == typ && end.checked_add(1) == Some(after) {
                end = last;
                self.0.remove(at);
            }
        }
        if let Some(&(first, before, t)) = at.checked_sub(1).and_then(|i| self.0.get(i)) {
            if t == typ && before.checked_add(1) == Some(start) {
                start = first;
                at -= 1;
                self.0.remove(at);
            }
        }
        self.0.insert(at, (start, end, typ));
    }

    /// The owner no longer holds anything of `start..=end`.
    pub(super) fn give_back(&mut self, start: u64, end: u64) {
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(a, b, typ) in &self.0 {
            if b < start || a > end {
                kept.push((a, b, typ));
                continue;
            }
            if a < start {
                kept.push((a, start - 1, typ));
            }
            if b > end {
                kept.push((end + 1, b, typ));
            }
        }
        self.0 = kept;
    }

    /// Whether something held is in the way of `lock` (a write lock, or any lock where a write
    /// lock is asked for, overlapping it).
    pub(super) fn conflicts(&self, lock: &Lock) -> bool {
        self.0.iter().any(|&(a, b, typ)| {
            a <= lock.end
                && lock.start <= b
                && (typ == LockType::Write || lock.typ == LockType::Write)
        })
    }

    /// Whether a range of type `typ` is held somewhere in `start..=end`.
    pub(super) fn holds(&self, start: u64, end: u64, typ: LockType) -> bool {
        self.0.iter().any(|&(a, b, t)| t == typ && a <= end && start <= b)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Ranges;
    use crate::fuse::{Lock, LockType};

    #[test]
    fn ranges_held_follow_locks_and_unlocks() {
        let (r, w) = (LockType::Read, LockType::Write);
        let mut held = Ranges::default();
        held.take(10, 20, r);
        held.take(30, 40, w);
        held.take(15, 35, w);
        assert_eq!(held.0, [(10, 14, r), (15, 40, w)], "touching write ranges are one");
        let asked = |start, end, typ| Lock { start, end, typ, pid: 0 };
        assert!(!held.conflicts(&asked(10, 14, r)), "read locks share");
        assert!(held.conflicts(&asked(14, 14, w)));
        assert!(held.conflicts(&asked(20, 20, r)));
        assert!(!held.conflicts(&asked(41, 50, w)));
        held.give_back(12, 38);
        assert_eq!(held.0, [(10, 11, r), (39, 40, w)]);
        held.give_back(0, u64::MAX);
        assert!(held.is_empty());
        held.take(5, u64::MAX, r);
        held.give_back(0, 4);
        assert_eq!(held.0, [(5, u64::MAX, r)]);
        held.give_back(6, u64::MAX);
        assert_eq!(held.0, [(5, 5, r)]);
    }

    /// A region locked piece by piece is one range, as the kernel keeps it: an owner may lock
    /// as many touching pieces as it likes, and ranges of another type stay apart.
    #[test]
    fn touching_ranges_of_one_type_are_one() {
        let (r, w) = (LockType::Read, LockType::Write);
        let mut held = Ranges::default();
        for i in 0..=2 * Ranges::KEPT as u64 {
            assert!(!held.would_exceed(i, i, Some(r)), "piece {i}");
            held.take(i, i, r);
        }
        assert_eq!(held.0, [(0, 2 * Ranges::KEPT as u64, r)]);
        held.take(20, 29, w);
        assert_eq!(held.0, [(0, 19, r), (20, 29, w), (30, 2 * Ranges::KEPT as u64, r)]);
        held.take(20, 29, r);
        assert_eq!(held.0, [(0, 2 * Ranges::KEPT as u64, r)], "rejoined");
        held.take(u64::MAX - 1, u64::MAX, w);
        held.take(u64::MAX - 3, u64::MAX - 2, w);
        assert_eq!(held.0[1], (u64::MAX - 3, u64::MAX, w));
        // Apart, they still count against the bound.
        let mut apart = Ranges::default();
        for i in 0..Ranges::KEPT as u64 - 1 {
            apart.take(2 * i, 2 * i, r);
        }
        let next = 2 * Ranges::KEPT as u64;
        assert!(!apart.would_exceed(next, next, Some(r)), "the last one allowed");
        apart.take(next, next, r);
        assert!(apart.would_exceed(next + 2, next + 2, Some(r)));
        assert!(!apart.would_exceed(next + 1, next + 1, Some(r)), "touching: no new range");
        assert!(!apart.would_exceed(2, 2, None), "unlocking a whole range leaves fewer");
    }

    #[test]
    fn many_ranges_merge_into_one_that_still_holds() {
        let mut held = Ranges::default();
        for i in 0..=Ranges::KEPT as u64 {
            held.take(4 * i, 4 * i + 1, LockType::Read);
        }
        assert_eq!(held.0, [(0, 4 * Ranges::KEPT as u64 + 1, LockType::Write)]);
        assert!(!held.is_empty());
    }
}
