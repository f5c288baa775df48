//! Guest caching policy (`--cache`): how long the guest may trust what it learnt, and whether it
//! keeps file data in its page cache.
//!
//! The policy only decides reply values (timeouts, FOPEN_* flags, whether READDIRPLUS is
//! offered); it never touches the host. The four policies and what each answers are
//! virtiofsd's (its `--cache` option), so a launcher's choice means the same here.

use std::time::Duration;

use crate::fuse::abi::fopen;

/// A guest caching policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// Nothing cached: every access, lookup and attribute read goes to the host; files are
    /// opened for direct I/O and READDIRPLUS is not offered.
    Never,
    /// Metadata cached for a long time, file data never (direct I/O).
    Metadata,
    /// Close-to-open consistency: metadata for one second, data until the file changes on the
    /// host (the default).
    #[default]
    Auto,
    /// Everything cached for a long time: the host does not change the share behind the guest.
    Always,
}

/// How long a long-lived cache entry lives (one day).
const LONG: Duration = Duration::from_secs(86_400);

impl CachePolicy {
    /// The entry and attribute timeout given with every entry and attribute reply.
    pub fn timeout(self) -> Duration {
        match self {
            Self::Never => Duration::ZERO,
            Self::Auto => Duration::from_secs(1),
            Self::Metadata | Self::Always => LONG,
        }
    }

    /// FOPEN_* flags for an opened (or created) regular file.
    pub fn file_open_flags(self) -> u32 {
        match self {
            Self::Never | Self::Metadata => fopen::DIRECT_IO,
            Self::Auto => 0,
            Self::Always => fopen::KEEP_CACHE,
        }
    }

    /// FOPEN_* flags for an opened directory.
    pub fn dir_open_flags(self) -> u32 {
        match self {
            Self::Never | Self::Auto => 0,
            Self::Metadata | Self::Always => fopen::KEEP_CACHE | fopen::CACHE_DIR,
        }
    }

    /// Whether READDIRPLUS may be offered: an entry it returns would be cached, which `Never`
    /// rules out.
    pub fn allows_readdirplus(self) -> bool {
        self != Self::Never
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_answer_as_virtiofsd_does() {
        use fopen::{CACHE_DIR, DIRECT_IO, KEEP_CACHE};
        let table = [
            (CachePolicy::Never, 0, DIRECT_IO, 0, false),
            (CachePolicy::Metadata, 86_400, DIRECT_IO, KEEP_CACHE | CACHE_DIR, true),
            (CachePolicy::Auto, 1, 0, 0, true),
            (CachePolicy::Always, 86_400, KEEP_CACHE, KEEP_CACHE | CACHE_DIR, true),
        ];
        for (policy, secs, file, dir, plus) in table {
            assert_eq!(policy.timeout(), Duration::from_secs(secs), "{policy:?}");
            assert_eq!(policy.file_open_flags(), file, "{policy:?}");
            assert_eq!(policy.dir_open_flags(), dir, "{policy:?}");
            assert_eq!(policy.allows_readdirplus(), plus, "{policy:?}");
        }
        assert_eq!(CachePolicy::default(), CachePolicy::Auto);
    }
}
