//! In-daemon uid/gid translation between the guest and the host (`--translate-uid` and
//! `--translate-gid`, with virtiofsd's rule syntax), no user namespace needed.
//!
//! A rule is `<type>:<a>:<b>:<count>` (any one non-alphanumeric separator other than `-` and
//! `_`; `forbid-guest` takes two numbers):
//!
//! | type | direction | meaning |
//! |---|---|---|
//! | `guest:G:H:N` | guest → host | guest ids G..G+N are host ids H..H+N |
//! | `host:H:G:N` | host → guest | host ids H..H+N show as guest ids G..G+N |
//! | `squash-guest:G:H:N` | guest → host | guest ids G..G+N all become host id H |
//! | `squash-host:H:G:N` | host → guest | host ids H..H+N all show as guest id G |
//! | `map:G:H:N` | both | `guest:G:H:N` and `host:H:G:N` together |
//! | `forbid-guest:G:N` | guest → host | guest ids G..G+N are refused (EPERM) |
//!
//! Ids no rule covers map to themselves. Rules of one direction must not overlap. This module
//! only computes; the passthrough applies it to the caller's ids, to SETATTR owners and to the
//! attributes it returns.

use std::fmt;
use std::str::FromStr;

use rustix::io::Errno;

/// One translation rule as written on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdRule {
    /// `guest:from:to:count`.
    Guest {
        /// First guest id.
        from: u32,
        /// First host id.
        to: u32,
        /// Number of ids.
        count: u32,
    },
    /// `host:from:to:count`.
    Host {
        /// First host id.
        from: u32,
        /// First guest id.
        to: u32,
        /// Number of ids.
        count: u32,
    },
    /// `squash-guest:from:to:count`.
    SquashGuest {
        /// First guest id.
        from: u32,
        /// The one host id.
        to: u32,
        /// Number of ids.
        count: u32,
    },
    /// `squash-host:from:to:count`.
    SquashHost {
        /// First host id.
        from: u32,
        /// The one guest id.
        to: u32,
        /// Number of ids.
        count: u32,
    },
    /// `map:guest:host:count`.
    Map {
        /// First guest id.
        guest: u32,
        /// First host id.
        host: u32,
        /// Number of ids.
        count: u32,
    },
    /// `forbid-guest:from:count`.
    ForbidGuest {
        /// First guest id.
        from: u32,
        /// Number of ids.
        count: u32,
    },
}

/// Why a rule or a set of rules is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdMapError {
    /// The type before the first separator is none of the six.
    #[error(
        "unknown id map type '{0}' (guest, host, squash-guest, squash-host, map, forbid-guest)"
    )]
    UnknownType(String),
    /// Wrong number of fields for the type.
    #[error("'{rule}': {kind} takes {want} numbers, got {got}")]
    FieldCount {
        /// The rule.
        rule: String,
        /// Its type.
        kind: String,
        /// Numbers expected.
        want: usize,
        /// Numbers given.
        got: usize,
    },
    /// A field is not a 32-bit unsigned number.
    #[error("'{rule}': '{field}' is not an id")]
    BadNumber {
        /// The rule.
        rule: String,
        /// The field.
        field: String,
    },
    /// A range is empty or runs past the largest id.
    #[error("'{0}': the range is empty or reaches 4294967295, which is no id")]
    BadRange(String),
    /// Two rules of one direction cover the same id.
    #[error("'{0}' overlaps an earlier rule of the same direction")]
    Overlap(String),
}

impl FromStr for IdRule {
    type Err = IdMapError;

    fn from_str(s: &str) -> Result<Self, IdMapError> {
        let split = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let (kind, rest) = match split {
            Some(at) => s.split_at(at),
            None => (s, ""),
        };
        let kind = kind.to_ascii_lowercase();
        let mut chars = rest.chars();
        let fields: Vec<&str> = match chars.next() {
            Some(sep) => chars.as_str().split(sep).collect(),
            None => Vec::new(),
        };
        let want = match kind.as_str() {
            "guest" | "host" | "squash-guest" | "squash-host" | "map" => 3,
            "forbid-guest" => 2,
            _ => return Err(IdMapError::UnknownType(kind)),
        };
        if fields.len() != want {
            let got = fields.len();
            return Err(IdMapError::FieldCount { rule: s.into(), kind, want, got });
        }
        let mut n = [0u32; 3];
        for (slot, field) in n.iter_mut().zip(&fields) {
            *slot = field
                .parse()
                .map_err(|_| IdMapError::BadNumber { rule: s.into(), field: (*field).into() })?;
        }
        let rule = match kind.as_str() {
            "guest" => Self::Guest { from: n[0], to: n[1], count: n[2] },
            "host" => Self::Host { from: n[0], to: n[1], count: n[2] },
            "squash-guest" => Self::SquashGuest { from: n[0], to: n[1], count: n[2] },
            "squash-host" => Self::SquashHost { from: n[0], to: n[1], count: n[2] },
            "map" => Self::Map { guest: n[0], host: n[1], count: n[2] },
            _ => Self::ForbidGuest { from: n[0], count: n[1] },
        };
        rule.check().map_err(|()| IdMapError::BadRange(s.into()))?;
        Ok(rule)
    }
}

impl fmt::Display for IdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Guest { from, to, count } => write!(f, "guest:{from}:{to}:{count}"),
            Self::Host { from, to, count } => write!(f, "host:{from}:{to}:{count}"),
            Self::SquashGuest { from, to, count } => write!(f, "squash-guest:{from}:{to}:{count}"),
            Self::SquashHost { from, to, count } => write!(f, "squash-host:{from}:{to}:{count}"),
            Self::Map { guest, host, count } => write!(f, "map:{guest}:{host}:{count}"),
            Self::ForbidGuest { from, count } => write!(f, "forbid-guest:{from}:{count}"),
        }
    }
}

/// Where a covered id goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// 1:1 onto a range starting here.
    Range(u32),
    /// All onto this one id.
    Squash(u32),
    /// Refused.
    Forbid,
}

/// `[start, end)` of ids and where they go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
    target: Target,
}

fn span(from: u32, count: u32, target: Target) -> Span {
    Span { start: u64::from(from), end: u64::from(from) + u64::from(count), target }
}

impl IdRule {
    /// Both ends of every range fit in 32 bits and no range is empty.
    fn check(&self) -> Result<(), ()> {
        let ranges: &[(u32, u32)] = match *self {
            Self::Guest { from, to, count } | Self::Host { from, to, count } => {
                &[(from, count), (to, count)]
            }
            Self::Map { guest, host, count } => &[(guest, count), (host, count)],
            Self::SquashGuest { from, to, count } | Self::SquashHost { from, to, count } => {
                &[(from, count), (to, 1)]
            }
            Self::ForbidGuest { from, count } => &[(from, count)],
        };
        // Id 4294967295 is no id: to `chown(2)` and `setfsuid(2)` it means "leave as is", so a
        // range stops below it (as virtiofsd's, whose end must fit in 32 bits).
        let fits = |&(base, count): &(u32, u32)| {
            count > 0 && u64::from(base) + u64::from(count) <= u64::from(u32::MAX)
        };
        if ranges.iter().all(fits) {
            Ok(())
        } else {
            Err(())
        }
    }

    /// (guest → host span, host → guest span) this rule adds.
    fn spans(&self) -> (Option<Span>, Option<Span>) {
        match *self {
            Self::Guest { from, to, count } => (Some(span(from, count, Target::Range(to))), None),
            Self::Host { from, to, count } => (None, Some(span(from, count, Target::Range(to)))),
            Self::SquashGuest { from, to, count } => {
                (Some(span(from, count, Target::Squash(to))), None)
            }
            Self::SquashHost { from, to, count } => {
                (None, Some(span(from, count, Target::Squash(to))))
            }
            Self::Map { guest, host, count } => (
                Some(span(guest, count, Target::Range(host))),
                Some(span(host, count, Target::Range(guest))),
            ),
            Self::ForbidGuest { from, count } => (Some(span(from, count, Target::Forbid)), None),
        }
    }
}

/// A translation of one kind of id (uids or gids), both directions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    to_host: Vec<Span>,
    to_guest: Vec<Span>,
}

impl IdMap {
    /// The identity: every id maps to itself.
    pub fn identity() -> Self {
        Self::default()
    }

    /// The translation the rules describe, in order; overlapping rules of one direction are
    /// refused.
    pub fn new(rules: &[IdRule]) -> Result<Self, IdMapError> {
        let mut map = Self::default();
        for rule in rules {
            let (to_host, to_guest) = rule.spans();
            for (list, new) in [(&mut map.to_host, to_host), (&mut map.to_guest, to_guest)] {
                let Some(new) = new else { continue };
                if list.iter().any(|s| s.start < new.end && new.start < s.end) {
                    return Err(IdMapError::Overlap(rule.to_string()));
                }
                list.push(new);
            }
        }
        Ok(map)
    }

    /// Whether every id maps to itself.
    pub fn is_identity(&self) -> bool {
        self.to_host.is_empty() && self.to_guest.is_empty()
    }

    /// The host id for guest id `id`; EPERM when a rule forbids it.
    pub fn to_host(&self, id: u32) -> Result<u32, Errno> {
        translate(&self.to_host, id).ok_or(Errno::PERM)
    }

    /// The guest id that host id `id` shows as.
    pub fn to_guest(&self, id: u32) -> u32 {
        // No host → guest rule forbids: only `forbid-guest` does, and it is guest → host.
        translate(&self.to_guest, id).unwrap_or(id)
    }
}

fn translate(spans: &[Span], id: u32) -> Option<u32> {
    let at = u64::from(id);
    match spans.iter().find(|s| s.start <= at && at < s.end) {
        None => Some(id),
        Some(s) => match s.target {
            // In range by construction: base + count fits in 32 bits (`IdRule::check`).
            Target::Range(base) => u32::try_from(u64::from(base) + (at - s.start)).ok(),
            Target::Squash(to) => Some(to),
            Target::Forbid => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> IdMap {
        let parsed: Vec<IdRule> = list.iter().map(|r| r.parse().expect("rule")).collect();
        IdMap::new(&parsed).expect("map")
    }

    #[test]
    fn virtiofsd_syntax_parses_and_prints_back() {
        for text in [
            "guest:1000:100000:1000",
            "host:100000:1000:1000",
            "squash-guest:0:65534:1000",
            "squash-host:100000:1000:65536",
            "map:0:100000:65536",
            "forbid-guest:500:10",
        ] {
            assert_eq!(text.parse::<IdRule>().expect(text).to_string(), text);
        }
        // Any one separator, and a case-insensitive type.
        assert_eq!(
            "MAP/0/100000/65536".parse::<IdRule>(),
            Ok(IdRule::Map { guest: 0, host: 100000, count: 65536 })
        );
    }

    #[test]
    fn malformed_rules_name_the_cause() {
        let err = |s: &str| s.parse::<IdRule>().expect_err(s);
        assert!(matches!(err("bogus:1:2:3"), IdMapError::UnknownType(t) if t == "bogus"));
        assert!(matches!(err("map:1:2"), IdMapError::FieldCount { want: 3, got: 2, .. }));
        assert!(matches!(err("forbid-guest:1:2:3"), IdMapError::FieldCount { want: 2, .. }));
        assert!(matches!(err("guest:1:x:3"), IdMapError::BadNumber { field, .. } if field == "x"));
        assert!(matches!(err("guest:1:2:0"), IdMapError::BadRange(_)));
        assert!(matches!(err("map:4294967295:0:2"), IdMapError::BadRange(_)));
        // A range reaching id 4294967295, which chown(2) takes for "unchanged".
        assert!(matches!(err("map:0:4294901760:65536"), IdMapError::BadRange(_)));
        assert!(matches!(err("guest:4294967294:0:2"), IdMapError::BadRange(_)));
        assert!(matches!(err("squash-guest:0:4294967295:1"), IdMapError::BadRange(_)));
        assert!(matches!(err("squash-host:0:4294967295:1"), IdMapError::BadRange(_)));
        assert!("map:0:4294901759:65536".parse::<IdRule>().is_ok(), "ending just below it");
        assert!(matches!(err("map"), IdMapError::FieldCount { got: 0, .. }));
        let overlap = ["guest:0:100:10", "squash-guest:5:0:10"].map(|r| r.parse().expect(r));
        assert!(matches!(IdMap::new(&overlap), Err(IdMapError::Overlap(_))));
        // Different directions may cover the same ids.
        let both = ["guest:0:100:10", "host:0:500:10"].map(|r| r.parse().expect(r));
        assert!(IdMap::new(&both).is_ok());
    }

    #[test]
    fn ids_translate_both_ways() {
        let m = rules(&["map:1000:100000:10", "squash-host:0:65534:1", "forbid-guest:5:2"]);
        assert_eq!(m.to_host(1003), Ok(100003));
        assert_eq!(m.to_guest(100003), 1003);
        assert_eq!(m.to_host(2000), Ok(2000), "uncovered ids map to themselves");
        assert_eq!(m.to_guest(0), 65534, "host root shows squashed");
        assert_eq!(m.to_host(0), Ok(0));
        assert_eq!(
            (m.to_host(5), m.to_host(6), m.to_host(7)),
            (Err(Errno::PERM), Err(Errno::PERM), Ok(7))
        );
        let top = rules(&["guest:4294967293:0:2"]);
        assert_eq!(top.to_host(u32::MAX - 1), Ok(1));
        assert!(IdMap::identity().is_identity() && !m.is_identity());
    }
}
