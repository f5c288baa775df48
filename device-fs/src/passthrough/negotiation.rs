//! How an optional FUSE capability is offered: `never`, `auto` or `always`, as virtiofsd's
//! `--posix-acl` and `--security-label` take it, and the warning for an option the guest cannot
//! take. Deciding and saying only; nothing is applied here.

use rustix::io::Errno;

use crate::fuse::abi::InitFlags;

/// Warns, at INIT, of each option asked for (`asked`) whose INIT flag the guest did not offer
/// (`needs`): it is not in effect for this guest, and nothing else would say so.
pub(super) fn warn_untaken(offered: InitFlags, options: &[(bool, InitFlags, &str)]) {
    for (asked, needs, option) in options {
        if *asked && !offered.contains(*needs) {
            log::warn!(
                "{option}: the guest's INIT does not offer {needs:?}; not in effect for this guest"
            );
        }
    }
}

/// When to offer an optional capability the guest must also support.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Negotiation {
    /// Never offered (the default).
    #[default]
    Never,
    /// Offered when the guest supports it.
    Auto,
    /// Required: a guest without it is refused at INIT (EPROTO).
    Always,
}

impl Negotiation {
    /// Whether the capability is on for a guest that does (`offered`) or does not support it;
    /// EPROTO when it is required and missing.
    pub fn decide(self, offered: bool) -> Result<bool, Errno> {
        match self {
            Self::Never => Ok(false),
            Self::Auto => Ok(offered),
            Self::Always if offered => Ok(true),
            Self::Always => Err(Errno::PROTO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_decides() {
        assert_eq!(Negotiation::Never.decide(true), Ok(false));
        assert_eq!(Negotiation::Auto.decide(true), Ok(true));
        assert_eq!(Negotiation::Auto.decide(false), Ok(false));
        assert_eq!(Negotiation::Always.decide(true), Ok(true));
        assert_eq!(Negotiation::Always.decide(false), Err(Errno::PROTO));
    }
}
