//! The EVENT_IDX notification rules: split rings (virtio 1.2 §2.7.10, `vring_need_event`) and
//! packed rings (§2.8.10, event suppression in DESC mode).
//!
//! Pure functions of ring positions; they read no memory and keep no state.

/// Whether moving an index from `old` to `new` crosses `event`, in wrapping `u16` arithmetic.
///
/// The peer asked to be notified once the index passes `event`; a notification is due when `event`
/// lies in the half-open window `[old, new)`, i.e. `new - event - 1 < new - old`.
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Whether a packed ring's used position moving from `old` to `new` reaches the descriptor the
/// driver named in `off_wrap` (offset in bits 0–14, wrap counter in bit 15).
///
/// Positions are `(index, wrap counter)` pairs on a ring of `size` entries. The driver asked to be
/// notified once the device writes a used descriptor at `off_wrap`; a notification is due when
/// that position lies in the half-open window `[old, new)`. The window must be shorter than two
/// laps of the ring, which it is when no more than `size` descriptors are in flight.
pub fn packed_need_event(size: u16, off_wrap: u16, new: (u16, bool), old: (u16, bool)) -> bool {
    let size = u32::from(size);
    let period = 2 * size;
    if period == 0 {
        return true;
    }
    let linear = |index: u16, wrap: bool| (u32::from(index) + if wrap { 0 } else { size }) % period;
    let distance = |from: u32, to: u32| (to + period - from) % period;
    let event = linear(off_wrap & 0x7fff, off_wrap & 0x8000 != 0);
    let (old, new) = (linear(old.0, old.1), linear(new.0, new.1));
    distance(old, event) < distance(old, new)
}

#[cfg(test)]
mod tests {
    use super::{need_event, packed_need_event};

    #[test]
    fn packed_window_rules() {
        const W: u16 = 0x8000;
        // Size 5, wrap counter set: 0 -> 3 passes offsets 0, 1, 2.
        assert!(packed_need_event(5, W, (3, true), (0, true)));
        assert!(packed_need_event(5, 2 | W, (3, true), (0, true)));
        assert!(!packed_need_event(5, 3 | W, (3, true), (0, true)));
        // The same offset with the other wrap counter is a lap away.
        assert!(!packed_need_event(5, 1, (3, true), (0, true)));
        // Across the end of the ring: (4, set) -> (2, clear) passes 4/set, 0/clear, 1/clear.
        assert!(packed_need_event(5, 4 | W, (2, false), (4, true)));
        assert!(packed_need_event(5, 1, (2, false), (4, true)));
        assert!(!packed_need_event(5, 2, (2, false), (4, true)));
        assert!(!packed_need_event(5, 3 | W, (2, false), (4, true)));
        // Second lap back to a set wrap counter.
        assert!(packed_need_event(5, W, (1, true), (3, false)));
        // Nothing new.
        assert!(!packed_need_event(5, 3 | W, (3, true), (3, true)));
        // Out-of-range values do not panic.
        let _ = packed_need_event(0, u16::MAX, (7, true), (9, false));
        let _ = packed_need_event(32768, u16::MAX, (u16::MAX, true), (0, false));
    }

    #[test]
    fn window_rules() {
        assert!(need_event(0, 1, 0));
        assert!(!need_event(1, 1, 0));
        assert!(need_event(5, 10, 3));
        assert!(!need_event(10, 10, 3));
        assert!(!need_event(2, 10, 3));
        assert!(!need_event(0, 0, 0));
        // Across the wrap.
        assert!(need_event(65535, 2, 65530));
        assert!(need_event(0, 2, 65530));
        assert!(!need_event(3, 2, 65530));
    }
}
