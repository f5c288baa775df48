//! The old `-o opt[,opt...]` form of the options (C virtiofsd's, which launchers still pass),
//! rewritten into the long options before parsing, so one parser checks everything.
//!
//! `-o source=DIR,cache=none,xattr,no_posix_lock` becomes `--shared-dir=DIR --cache=never --xattr
//! --no-posix-lock`. A spelling with no long form becomes `--name` anyway, so the parser refuses
//! it by name instead of it being dropped silently; the defaults (`no_xattr`,
//! `no_allow_direct_io`, ...) need no option. Only rewriting happens here.

use std::ffi::OsString;

/// One `-o` item as long options.
fn long_form(item: &str) -> Vec<String> {
    let (key, value) = match item.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (item, None),
    };
    let with = |long: &str| vec![format!("--{long}={}", value.unwrap_or_default())];
    match (key, value) {
        ("source", Some(_)) => with("shared-dir"),
        ("cache", Some("none")) => vec!["--cache=never".into()],
        ("cache", Some(_)) => with("cache"),
        ("loglevel" | "log_level", Some("err")) => vec!["--log-level=error".into()],
        ("loglevel" | "log_level", Some(_)) => with("log-level"),
        ("sandbox", Some(_)) => with("sandbox"),
        ("xattrmap", Some(_)) => with("xattrmap"),
        ("modcaps", Some(_)) => with("modcaps"),
        // Defaults: nothing to pass.
        ("no_xattr" | "no_allow_direct_io" | "readdirplus" | "no_writeback", None) => Vec::new(),
        ("no_posix_acl", None) => vec!["--posix-acl=never".into()],
        ("no_security_label", None) => vec!["--security-label=never".into()],
        (flag, None) => vec![format!("--{}", flag.replace('_', "-"))],
        (other, Some(_)) => with(&other.replace('_', "-")),
    }
}

/// The arguments with every `-o LIST` / `-oLIST` replaced by long options; the program name
/// and everything else are kept in order. A `-o` without a list is left for the parser.
pub(crate) fn expand(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let list = match arg.to_str() {
            Some("-o") => match args.next() {
                Some(next) => next,
                None => {
                    out.push(arg);
                    break;
                }
            },
            Some(s) if s.starts_with("-o") && s.len() > 2 => OsString::from(&s[2..]),
            _ => {
                out.push(arg);
                continue;
            }
        };
        match list.to_str() {
            // Commas inside an xattrmap would be ambiguous; C virtiofsd had the same rule.
            Some(list) => {
                for item in list.split(',').filter(|i| !i.is_empty()) {
                    out.extend(long_form(item).into_iter().map(OsString::from));
                }
            }
            // Not UTF-8: hand it on unchanged, the parser names it.
            None => out.extend([OsString::from("-o"), list]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(args: &[&str]) -> Vec<String> {
        expand(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn old_options_become_long_ones() {
        assert_eq!(
            expanded(&["vhu-fsd", "--socket-path=/s", "-o", "source=/srv,cache=none,xattr", "-f"]),
            ["vhu-fsd", "--socket-path=/s", "--shared-dir=/srv", "--cache=never", "--xattr", "-f"]
        );
        assert_eq!(
            expanded(&["x", "-oposix_lock,no_flock,loglevel=err,allow_direct_io"]),
            ["x", "--posix-lock", "--no-flock", "--log-level=error", "--allow-direct-io"]
        );
        assert_eq!(
            expanded(&["x", "-o", "no_xattr,killpriv_v2,no_posix_acl,sandbox=chroot"]),
            ["x", "--killpriv-v2", "--posix-acl=never", "--sandbox=chroot"]
        );
        // Unknown spellings reach the parser by name; a dangling -o too.
        assert_eq!(expanded(&["x", "-o", "timeout=5,norace"]), ["x", "--timeout=5", "--norace"]);
        assert_eq!(expanded(&["x", "-o"]), ["x", "-o"]);
    }

    #[test]
    fn lock_options_in_the_old_form_reach_the_settings() {
        use clap::Parser;
        let dir = std::env::temp_dir();
        let source = format!("source={},no_posix_lock,flock", dir.display());
        let args = ["vhu-fsd", "--socket-path=/s", "-o", &source];
        let options = crate::cli::Options::parse_from(expand(args.iter().map(OsString::from)));
        let settings = options.settings().expect("supported");
        assert!(!settings.posix_lock && settings.flock);
        assert_eq!(settings.shared_dir, dir);
    }
}
