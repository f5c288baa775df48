//! The EVENT_IDX notification rule (virtio 1.2 §2.7.10, `vring_need_event`).
//!
//! A pure function of three ring indices; it reads no memory and keeps no state.

/// Whether moving an index from `old` to `new` crosses `event`, in wrapping `u16` arithmetic.
///
/// The peer asked to be notified once the index passes `event`; a notification is due when `event`
/// lies in the half-open window `[old, new)`, i.e. `new - event - 1 < new - old`.
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::need_event;

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
