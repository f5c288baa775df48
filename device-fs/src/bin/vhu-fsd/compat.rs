//! The old `-o opt[,opt...]` form of the options (C virtiofsd's, which launchers still pass),
//! rewritten into the long options before parsing, so one parser checks everything.
//!
//! `-o source=DIR,cache=none,xattr,no_posix_lock` becomes `--shared-dir=DIR --cache=never --xattr
//! --no-posix-lock`; `,,` is a comma inside a value. Every key virtiofsd's `-o` form knows has a
//! long form (the negative ones are hidden long options, so the last spelling wins wherever it
//! stands); any other key is an error naming it. Only rewriting happens here.

use std::ffi::OsString;

/// One `-o` item as long options, or why it has none.
fn long_form(item: &str) -> Result<Vec<String>, String> {
    let (key, value) = match item.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (item, None),
    };
    let with = |long: &str| Ok(vec![format!("--{long}={}", value.unwrap_or_default())]);
    let flag = |long: &str| Ok(vec![format!("--{long}")]);
    match (key, value) {
        ("source", Some(_)) => with("shared-dir"),
        ("cache", Some("none")) => flag("cache=never"),
        ("cache", Some(_)) => with("cache"),
        ("loglevel" | "log_level", Some("err")) => flag("log-level=error"),
        ("loglevel" | "log_level", Some(_)) => with("log-level"),
        ("sandbox", Some(_)) => with("sandbox"),
        ("xattrmap", Some(_)) => with("xattrmap"),
        ("modcaps", Some(_)) => with("modcaps"),
        (
            "xattr"
            | "no_xattr"
            | "readdirplus"
            | "no_readdirplus"
            | "writeback"
            | "no_writeback"
            | "allow_direct_io"
            | "no_allow_direct_io"
            | "announce_submounts"
            | "no_announce_submounts"
            | "killpriv_v2"
            | "no_killpriv_v2"
            | "flock"
            | "no_flock"
            | "posix_lock"
            | "no_posix_lock",
            None,
        ) => flag(&key.replace('_', "-")),
        ("posix_acl", None) => flag("posix-acl"),
        ("no_posix_acl", None) => flag("posix-acl=never"),
        ("security_label", None) => flag("security-label"),
        ("no_security_label", None) => flag("security-label=never"),
        _ => Err(format!("-o {item}: not an option virtiofsd's -o form knows")),
    }
}

/// Splits a `-o` list at single commas; `,,` is a literal comma inside an item (a path or an
/// xattr map that holds one).
fn items(list: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            current.push(c);
        } else if chars.next_if_eq(&',').is_some() {
            current.push(',');
        } else {
            items.push(std::mem::take(&mut current));
        }
    }
    items.push(current);
    items.retain(|item| !item.is_empty());
    items
}

/// The arguments with every `-o LIST` / `-oLIST` replaced by long options; the program name
/// and everything else are kept in order. A `-o` without a list is left for the parser; an
/// item the old form never had is an error that names it.
pub(crate) fn expand(args: impl IntoIterator<Item = OsString>) -> Result<Vec<OsString>, String> {
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
        let list = list.into_string().map_err(|raw| format!("-o {raw:?}: not UTF-8"))?;
        for item in items(&list) {
            out.extend(long_form(&item)?.into_iter().map(OsString::from));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(args: &[&str]) -> Vec<String> {
        expand(args.iter().map(OsString::from))
            .expect("known options")
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
            ["x", "--no-xattr", "--killpriv-v2", "--posix-acl=never", "--sandbox=chroot"]
        );
        assert_eq!(
            expanded(&["x", "-o", "readdirplus,no_readdirplus,writeback,no_writeback"]),
            ["x", "--readdirplus", "--no-readdirplus", "--writeback", "--no-writeback"]
        );
        // A dangling -o is the parser's to report.
        assert_eq!(expanded(&["x", "-o"]), ["x", "-o"]);
    }

    #[test]
    fn doubled_commas_are_literal_and_unknown_items_are_named() {
        assert_eq!(
            expanded(&["x", "-o", "source=/srv/a,,b,,,xattr,cache=always"]),
            ["x", "--shared-dir=/srv/a,b,", "--xattr", "--cache=always"]
        );
        assert_eq!(items(",,a,,"), [",a,"]);
        assert_eq!(items("a,,,,b"), ["a,,b"]);
        for (bad, named) in [("timeout=5", "-o timeout=5"), ("norace", "-o norace")] {
            let error = expand(["x", "-o", bad].map(OsString::from)).expect_err(bad);
            assert!(error.starts_with(named), "{error}");
        }
    }

    #[test]
    fn lock_options_in_the_old_form_reach_the_settings() {
        use clap::Parser;
        let dir = std::env::temp_dir();
        let source = format!("source={},no_posix_lock,flock", dir.display());
        let args = ["vhu-fsd", "--socket-path=/s", "-o", &source];
        let expanded = expand(args.iter().map(OsString::from)).expect("known options");
        let options = crate::cli::Options::parse_from(expanded);
        let settings = options.settings().expect("supported");
        assert!(!settings.posix_lock && settings.flock);
        assert_eq!(settings.shared_dir, dir);
    }
}
