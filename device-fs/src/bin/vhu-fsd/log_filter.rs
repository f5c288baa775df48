//! Which log records pass: `--log-level`, or `RUST_LOG` when it is set (as virtiofsd, where
//! it overrides the option). `RUST_LOG` is read as env_logger reads it: comma-separated
//! directives, each a level (`debug`: every record), a target (`vhu_device_fs`: every record
//! of it) or both (`vhu_transport_std::session=trace`); a record takes the level of the
//! longest target its own starts with, or the plain level. Levels are taken in any case.
//!
//! Parsing and deciding only; where records go is `logging`'s.

use log::{LevelFilter, Metadata};

/// The filter in force.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filter {
    /// For records no target directive names.
    default: LevelFilter,
    /// `(target prefix, level)`, longest prefix first.
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// Every record up to `level`.
    pub(crate) fn level(level: LevelFilter) -> Self {
        Self { default: level, targets: Vec::new() }
    }

    /// The filter `spec` (a `RUST_LOG` value) describes, starting from `default`; a directive
    /// that is not one is named in the error, and nothing of `spec` is used then.
    pub(crate) fn parse(spec: &str, default: LevelFilter) -> Result<Self, String> {
        let mut filter = Self::level(default);
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, level)) => {
                    let level = parse_level(level)
                        .ok_or_else(|| format!("RUST_LOG: `{directive}` has no level"))?;
                    filter.targets.push((target.trim().to_owned(), level));
                }
                None => match parse_level(directive) {
                    Some(level) => filter.default = level,
                    None => filter.targets.push((directive.to_owned(), LevelFilter::Trace)),
                },
            }
        }
        // The longest prefix decides; among equal ones, the last given (a stable sort keeps
        // their order, and the search below takes the first).
        filter.targets.reverse();
        filter.targets.sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));
        Ok(filter)
    }

    /// The most any record may have: the facade's own cut-off.
    pub(crate) fn max(&self) -> LevelFilter {
        self.targets.iter().map(|(_, level)| *level).fold(self.default, Ord::max)
    }

    /// Whether a record passes.
    pub(crate) fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        let level = self
            .targets
            .iter()
            .find(|(prefix, _)| target.starts_with(prefix.as_str()))
            .map_or(self.default, |(_, level)| *level);
        metadata.level() <= level
    }
}

fn parse_level(text: &str) -> Option<LevelFilter> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use log::Level;

    use super::*;

    fn passes(filter: &Filter, target: &str, level: Level) -> bool {
        filter.enabled(&Metadata::builder().target(target).level(level).build())
    }

    #[test]
    fn a_plain_level_sets_every_record_in_any_case() {
        let filter = Filter::parse("DEBUG", LevelFilter::Error).expect("parses");
        assert_eq!(filter, Filter::level(LevelFilter::Debug));
        assert!(passes(&filter, "vhu_device_fs::fuse", Level::Debug));
        assert!(!passes(&filter, "vhu_device_fs::fuse", Level::Trace));
    }

    #[test]
    fn the_longest_target_decides_and_the_rest_keep_the_default() {
        let spec = "warn,vhu_transport_std=debug,vhu_transport_std::session=trace,vhu_device_fs";
        let filter = Filter::parse(spec, LevelFilter::Info).expect("parses");
        assert!(passes(&filter, "vhu_transport_std::session::x", Level::Trace));
        assert!(passes(&filter, "vhu_transport_std::worker", Level::Debug));
        assert!(!passes(&filter, "vhu_transport_std::worker", Level::Trace));
        assert!(passes(&filter, "vhu_device_fs::passthrough", Level::Trace), "a bare target");
        assert!(!passes(&filter, "vhu_fsd", Level::Info), "the plain level");
        assert!(passes(&filter, "vhu_fsd", Level::Warn));
        assert_eq!(filter.max(), LevelFilter::Trace);
    }

    #[test]
    fn a_directive_without_a_level_is_named() {
        let error = Filter::parse("vhu_device_fs=loud", LevelFilter::Info).expect_err("refused");
        assert!(error.contains("vhu_device_fs=loud"), "{error}");
        assert_eq!(Filter::parse("", LevelFilter::Info), Ok(Filter::level(LevelFilter::Info)));
    }
}
