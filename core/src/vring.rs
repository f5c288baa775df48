//! The vring lifecycle as a pure transition function.
//!
//! The spec ("Ring states") tracks two things independently for every ring: started/stopped and
//! enabled/disabled. Every ring starts stopped and disabled. A ring starts when it gets a kick fd
//! (SET_VRING_KICK, or VRING_KICK with in-band notifications) and stops on GET_VRING_BASE; it is
//! enabled by SET_VRING_ENABLE, or by SET_FEATURES without VHOST_USER_F_PROTOCOL_FEATURES, which may
//! only ever enable rings. This module holds no fds, no addresses and no memory: it only says which
//! effect a transition has, and the back-end turns effects into actions.

/// The two independent flags of one ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RingState {
    /// The back-end may touch the ring.
    pub started: bool,
    /// The ring's buffers have side effects (a disabled started ring is processed without them).
    pub enabled: bool,
}

/// What happened to a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingEvent {
    /// A kick fd (or an in-band VRING_KICK) arrived: the ring starts.
    Start,
    /// GET_VRING_BASE (or its skip-drain variant): the ring stops.
    Stop,
    /// SET_VRING_ENABLE.
    SetEnabled(bool),
    /// SET_FEATURES without VHOST_USER_F_PROTOCOL_FEATURES: enable, never disable.
    EnableByFeatures,
    /// RESET_OWNER (deprecated): disable, keep running state as it is.
    Disable,
    /// RESET_DEVICE: stopped and disabled, as at the start.
    Reset,
}

/// What the driver must do after a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingEffect {
    /// Nothing changes for the driver.
    None,
    /// Start processing the ring (enabled or not); if enabled, process the buffers already
    /// available without waiting for a kick.
    Start {
        /// Whether the ring starts enabled.
        enabled: bool,
    },
    /// Stop processing the ring.
    Stop,
    /// A started ring was enabled or disabled; when enabled, process available buffers now.
    EnableChanged(bool),
}

impl RingState {
    /// Stopped and disabled.
    pub const INITIAL: Self = Self { started: false, enabled: false };

    /// Whether the ring is processed with side effects.
    pub fn is_runnable(self) -> bool {
        self.started && self.enabled
    }

    /// Applies `event` and returns the new state and its effect.
    pub fn transition(self, event: RingEvent) -> (Self, RingEffect) {
        let enable = |state: Self, enabled: bool| {
            let next = Self { enabled, ..state };
            let effect = if state.started && state.enabled != enabled {
                RingEffect::EnableChanged(enabled)
            } else {
                RingEffect::None
            };
            (next, effect)
        };
        match event {
            RingEvent::Start if !self.started => {
                (Self { started: true, ..self }, RingEffect::Start { enabled: self.enabled })
            }
            RingEvent::Start => (self, RingEffect::None),
            RingEvent::Stop if self.started => (Self { started: false, ..self }, RingEffect::Stop),
            RingEvent::Stop => (self, RingEffect::None),
            RingEvent::SetEnabled(enabled) => enable(self, enabled),
            RingEvent::EnableByFeatures => enable(self, true),
            RingEvent::Disable => enable(self, false),
            RingEvent::Reset => (Self::INITIAL, RingEffect::None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_EVENTS: [RingEvent; 7] = [
        RingEvent::Start,
        RingEvent::Stop,
        RingEvent::SetEnabled(true),
        RingEvent::SetEnabled(false),
        RingEvent::EnableByFeatures,
        RingEvent::Disable,
        RingEvent::Reset,
    ];

    #[test]
    fn started_and_enabled_are_independent() {
        let s = RingState::INITIAL;
        let (s, e) = s.transition(RingEvent::SetEnabled(true));
        assert_eq!((s, e), (RingState { started: false, enabled: true }, RingEffect::None));
        let (s, e) = s.transition(RingEvent::Start);
        assert_eq!(e, RingEffect::Start { enabled: true });
        assert!(s.is_runnable());
        let (s, e) = s.transition(RingEvent::Stop);
        assert_eq!((s, e), (RingState { started: false, enabled: true }, RingEffect::Stop));
    }

    #[test]
    fn features_only_ever_enable() {
        for started in [false, true] {
            for enabled in [false, true] {
                let s = RingState { started, enabled };
                let (next, effect) = s.transition(RingEvent::EnableByFeatures);
                assert!(next.enabled);
                assert_eq!(next.started, started);
                let expected = if started && !enabled {
                    RingEffect::EnableChanged(true)
                } else {
                    RingEffect::None
                };
                assert_eq!(effect, expected);
            }
        }
    }

    #[test]
    fn effects_match_state_changes() {
        // Exhaustively: an effect is reported exactly when the driver-visible state changes.
        for started in [false, true] {
            for enabled in [false, true] {
                for event in ALL_EVENTS {
                    let s = RingState { started, enabled };
                    let (next, effect) = s.transition(event);
                    match effect {
                        RingEffect::Start { enabled } => {
                            assert!(!s.started && next.started && next.enabled == enabled);
                        }
                        RingEffect::Stop => assert!(s.started && !next.started),
                        RingEffect::EnableChanged(e) => {
                            assert!(
                                s.started && next.started && s.enabled != e && next.enabled == e
                            );
                        }
                        RingEffect::None => {
                            if event != RingEvent::Reset {
                                assert_eq!(s.started, next.started, "{event:?} from {s:?}");
                                assert!(!s.started || s.enabled == next.enabled, "{event:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn reset_returns_to_initial() {
        let s = RingState { started: true, enabled: true };
        assert_eq!(s.transition(RingEvent::Reset), (RingState::INITIAL, RingEffect::None));
    }
}
