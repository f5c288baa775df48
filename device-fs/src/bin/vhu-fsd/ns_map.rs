//! `--uid-map` / `--gid-map` values: `:inside:outside:count:`, the ranges a user namespace maps
//! (virtiofsd's syntax, as unprivileged libvirt passes them). Parsing and checking only.

use std::fmt;

/// One namespace id map line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NsMap {
    /// First id inside the namespace.
    pub(crate) inside: u32,
    /// First id outside (on the host).
    pub(crate) outside: u32,
    /// Number of ids.
    pub(crate) count: u32,
}

impl fmt::Display for NsMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ":{}:{}:{}:", self.inside, self.outside, self.count)
    }
}

/// Parses `:inside:outside:count:`; the error names what is wrong.
pub(crate) fn parse_ns_map(s: &str) -> Result<NsMap, String> {
    let inner = s
        .strip_prefix(':')
        .and_then(|rest| rest.strip_suffix(':'))
        .ok_or_else(|| format!("'{s}' must have the form :inside:outside:count:"))?;
    let fields: Vec<&str> = inner.split(':').collect();
    let [inside, outside, count] = fields[..] else {
        return Err(format!("'{s}' has {} fields, not 3 (:inside:outside:count:)", fields.len()));
    };
    let num = |v: &str| v.parse::<u32>().map_err(|_| format!("'{s}': '{v}' is not an id"));
    let map = NsMap { inside: num(inside)?, outside: num(outside)?, count: num(count)? };
    let fits = |base: u32| u64::from(base) + u64::from(map.count) <= 1 << 32;
    if map.count == 0 || !fits(map.inside) || !fits(map.outside) {
        return Err(format!("'{s}': the range is empty or runs past 4294967295"));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_maps_parse_and_bad_ones_say_why() {
        let m = parse_ns_map(":0:100000:65536:").expect("valid");
        assert_eq!(m, NsMap { inside: 0, outside: 100000, count: 65536 });
        assert_eq!(m.to_string(), ":0:100000:65536:");
        for bad in ["0:100000:65536", ":0:100000:", ":0:x:1:", ":0:1:0:", ":4294967295:0:2:"] {
            assert!(parse_ns_map(bad).is_err(), "{bad}");
        }
    }
}
