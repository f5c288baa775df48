//! `--xattrmap`: how extended attribute names travel between the guest and the host, with
//! virtiofsd's rule language.
//!
//! A map is a list of rules separated by white space. Each rule starts with its own separator
//! character and is `<sep>type<sep>scope<sep>key<sep>prepend<sep>` or the short form
//! `<sep>map<sep>key<sep>prepend<sep>`. Rules are tried in order and the first that matches
//! decides:
//!
//! - a name from the guest (GETXATTR, SETXATTR, REMOVEXATTR) matches a `client` or `all` rule
//!   whose `key` it starts with: `prefix` sends `prepend` + name to the host, `ok` sends the name
//!   unchanged, `bad` refuses it with EPERM, `unsupported` with EOPNOTSUPP;
//! - a name from the host (LISTXATTR) matches a `server` or `all` rule whose `prepend` it starts
//!   with: `prefix` shows it to the guest without `prepend`, `ok` unchanged, `bad` and
//!   `unsupported` hide it.
//!
//! A name no rule matches is refused (guest) or hidden (host). `map:K:P` stands for
//! `prefix:all:K:P`, then (when `K` is not empty) `bad:server::K` and `bad:client:P:`, then
//! `ok:all::` — or `bad:all::` when `K` is empty — and must be the last rule. This module only
//! translates names; it touches no file.

use rustix::io::Errno;

/// What a rule does with a name it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Prefix,
    Ok,
    Bad,
    Unsupported,
}

/// Which direction a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Client,
    Server,
    All,
}

impl Scope {
    fn client(self) -> bool {
        matches!(self, Self::Client | Self::All)
    }

    fn server(self) -> bool {
        matches!(self, Self::Server | Self::All)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    kind: Kind,
    scope: Scope,
    key: Vec<u8>,
    prepend: Vec<u8>,
}

/// Why a map is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XattrMapError {
    /// A rule ended before all its fields.
    #[error("xattrmap rule {index}: '{rule}' has too few fields")]
    Truncated {
        /// 1-based rule number.
        index: usize,
        /// The rule text.
        rule: String,
    },
    /// Unknown type.
    #[error("xattrmap rule {index}: unknown type '{kind}' (prefix, ok, bad, unsupported, map)")]
    Type {
        /// 1-based rule number.
        index: usize,
        /// The type given.
        kind: String,
    },
    /// Unknown scope.
    #[error("xattrmap rule {index}: unknown scope '{scope}' (client, server, all)")]
    Scope {
        /// 1-based rule number.
        index: usize,
        /// The scope given.
        scope: String,
    },
    /// A `map` rule that is not the last.
    #[error("xattrmap rule {index}: a map rule must be the last rule")]
    MapNotLast {
        /// 1-based rule number.
        index: usize,
    },
    /// No rule at all.
    #[error("xattrmap has no rules")]
    Empty,
}

/// A parsed `--xattrmap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XattrMap {
    rules: Vec<Rule>,
}

impl std::str::FromStr for XattrMap {
    type Err = XattrMapError;

    fn from_str(s: &str) -> Result<Self, XattrMapError> {
        let mut rules = Vec::new();
        let mut rest = s.trim_start();
        let mut index = 0;
        let mut after_map = false;
        while let Some(sep) = rest.chars().next() {
            index += 1;
            if after_map {
                return Err(XattrMapError::MapNotLast { index: index - 1 });
            }
            let body = &rest[sep.len_utf8()..];
            let kind_end = body.find(sep).ok_or_else(|| truncated(index, rest))?;
            let kind = &body[..kind_end];
            let want = if kind == "map" { 2 } else { 3 };
            let mut fields = Vec::with_capacity(want);
            let mut cursor = &body[kind_end + sep.len_utf8()..];
            for _ in 0..want {
                let end = cursor.find(sep).ok_or_else(|| truncated(index, rest))?;
                fields.push(&cursor[..end]);
                cursor = &cursor[end + sep.len_utf8()..];
            }
            if kind == "map" {
                push_map(&mut rules, fields[0].as_bytes(), fields[1].as_bytes());
                after_map = true;
            } else {
                let kind = match kind {
                    "prefix" => Kind::Prefix,
                    "ok" => Kind::Ok,
                    "bad" => Kind::Bad,
                    "unsupported" => Kind::Unsupported,
                    other => return Err(XattrMapError::Type { index, kind: other.into() }),
                };
                let scope = match fields[0] {
                    "client" => Scope::Client,
                    "server" => Scope::Server,
                    "all" => Scope::All,
                    other => return Err(XattrMapError::Scope { index, scope: other.into() }),
                };
                let (key, prepend) = (fields[1].as_bytes().to_vec(), fields[2].as_bytes().to_vec());
                rules.push(Rule { kind, scope, key, prepend });
            }
            rest = cursor.trim_start();
        }
        if rules.is_empty() {
            return Err(XattrMapError::Empty);
        }
        Ok(Self { rules })
    }
}

fn truncated(index: usize, rest: &str) -> XattrMapError {
    let rule = rest.split_whitespace().next().unwrap_or(rest).to_string();
    XattrMapError::Truncated { index, rule }
}

fn push_map(rules: &mut Vec<Rule>, key: &[u8], prepend: &[u8]) {
    let rule = |kind, scope, key: &[u8], prepend: &[u8]| Rule {
        kind,
        scope,
        key: key.to_vec(),
        prepend: prepend.to_vec(),
    };
    rules.push(rule(Kind::Prefix, Scope::All, key, prepend));
    if key.is_empty() {
        rules.push(rule(Kind::Bad, Scope::All, b"", b""));
    } else {
        rules.push(rule(Kind::Bad, Scope::Server, b"", key));
        rules.push(rule(Kind::Bad, Scope::Client, prepend, b""));
        rules.push(rule(Kind::Ok, Scope::All, b"", b""));
    }
}

impl XattrMap {
    /// The host name for a name from the guest; EPERM or EOPNOTSUPP when a rule refuses it.
    pub fn to_host(&self, name: &[u8]) -> Result<Vec<u8>, Errno> {
        for rule in self.rules.iter().filter(|r| r.scope.client()) {
            if !name.starts_with(&rule.key) {
                continue;
            }
            return match rule.kind {
                Kind::Prefix => Ok([rule.prepend.as_slice(), name].concat()),
                Kind::Ok => Ok(name.to_vec()),
                Kind::Bad => Err(Errno::PERM),
                Kind::Unsupported => Err(Errno::OPNOTSUPP),
            };
        }
        Err(Errno::PERM)
    }

    /// The name the guest sees for a host name, or `None` when it is hidden.
    pub fn to_guest<'a>(&self, name: &'a [u8]) -> Option<&'a [u8]> {
        for rule in self.rules.iter().filter(|r| r.scope.server()) {
            if !name.starts_with(&rule.prepend) {
                continue;
            }
            return match rule.kind {
                Kind::Prefix => Some(&name[rule.prepend.len()..]),
                Kind::Ok => Some(name),
                Kind::Bad | Kind::Unsupported => None,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(s: &str) -> XattrMap {
        s.parse().expect(s)
    }

    #[test]
    fn everything_under_one_prefix() {
        for m in [map(":prefix:all::user.virtiofs.::bad:all:::"), map(":map::user.virtiofs.:")] {
            assert_eq!(m.to_host(b"trusted.x"), Ok(b"user.virtiofs.trusted.x".to_vec()));
            assert_eq!(m.to_host(b"user.y"), Ok(b"user.virtiofs.user.y".to_vec()));
            assert_eq!(
                m.to_guest(b"user.virtiofs.security.selinux"),
                Some(&b"security.selinux"[..])
            );
            assert_eq!(m.to_guest(b"user.plain"), None, "unprefixed host names are hidden");
        }
    }

    #[test]
    fn one_namespace_remapped_and_the_rest_through() {
        let long = map("/prefix/all/trusted./user.virtiofs./\n /bad/server//trusted./\n\
             /bad/client/user.virtiofs.//\n /ok/all///");
        for m in [long, map("/map/trusted./user.virtiofs./")] {
            assert_eq!(
                m.to_host(b"trusted.overlay.x"),
                Ok(b"user.virtiofs.trusted.overlay.x".to_vec())
            );
            assert_eq!(m.to_host(b"user.virtiofs.sneaky"), Err(Errno::PERM), "no bypass");
            assert_eq!(m.to_host(b"user.ok"), Ok(b"user.ok".to_vec()));
            assert_eq!(m.to_guest(b"user.virtiofs.trusted.a"), Some(&b"trusted.a"[..]));
            assert_eq!(m.to_guest(b"trusted.host-only"), None);
            assert_eq!(m.to_guest(b"user.ok"), Some(&b"user.ok"[..]));
        }
    }

    #[test]
    fn bad_unsupported_and_unmatched_names() {
        let m =
            map(":bad:all:security.:security.: :unsupported:client:system.:: :ok:client:user.::");
        assert_eq!(m.to_host(b"security.capability"), Err(Errno::PERM));
        assert_eq!(m.to_host(b"system.posix_acl_access"), Err(Errno::OPNOTSUPP));
        assert_eq!(m.to_host(b"user.a"), Ok(b"user.a".to_vec()));
        assert_eq!(m.to_host(b"trusted.a"), Err(Errno::PERM), "no rule matches");
        assert_eq!(m.to_guest(b"security.selinux"), None);
        assert_eq!(m.to_guest(b"user.a"), None, "no server rule for user.");
    }

    #[test]
    fn malformed_maps_name_the_rule() {
        let err = |s: &str| s.parse::<XattrMap>().expect_err(s);
        assert!(matches!(err(":prefix:all:x"), XattrMapError::Truncated { index: 1, .. }));
        assert!(matches!(err(":ok:all::: :frob:all:::"), XattrMapError::Type { index: 2, .. }));
        assert!(matches!(err(":ok:both:::"), XattrMapError::Scope { index: 1, .. }));
        assert!(matches!(err(":map::p.: :ok:all:::"), XattrMapError::MapNotLast { index: 1 }));
        assert_eq!(err("   "), XattrMapError::Empty);
    }
}
