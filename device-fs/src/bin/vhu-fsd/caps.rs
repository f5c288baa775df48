//! The capabilities the daemon keeps, started as root or as a user in its own user namespace
//! (where it starts with every capability), or started as a user from a binary given file
//! capabilities: what serving files for the guest's users needs and nothing else, adjusted by
//! `--modcaps`.
//!
//! Kept by default (virtiofsd's set, less DAC_READ_SEARCH, which only opening by file handle
//! needs): CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID, MKNOD, SETFCAP; with
//! `--migration-mode file-handles`, whose destination opens the guest's inodes by handle,
//! DAC_READ_SEARCH too (as virtiofsd keeps it). Every other capability leaves the effective, permitted and inheritable sets,
//! the ambient set and the bounding set, so nothing the daemon becomes later (no exec happens,
//! but a compromised worker might try) can regain it. Call before any thread starts:
//! capability sets are per thread and threads inherit them. This module only drops.

use rustix::thread::{
    capabilities, capability_is_in_bounding_set, clear_ambient_capability_set,
    remove_capability_from_bounding_set, set_capabilities, CapabilitySet, CapabilitySets,
};

use crate::cli::CapEdit;

/// The default set (see the module docs).
pub(crate) fn default_set() -> CapabilitySet {
    CapabilitySet::CHOWN
        | CapabilitySet::DAC_OVERRIDE
        | CapabilitySet::FOWNER
        | CapabilitySet::FSETID
        | CapabilitySet::SETGID
        | CapabilitySet::SETUID
        | CapabilitySet::MKNOD
        | CapabilitySet::SETFCAP
}

/// The default set, with DAC_READ_SEARCH when inodes are opened by handle (`by_handle`), and
/// `edits` applied in order (so `--modcaps=-dac_read_search` still takes it away).
pub(crate) fn kept(edits: &[CapEdit], by_handle: bool) -> CapabilitySet {
    let mut base = default_set();
    if by_handle {
        base |= CapabilitySet::DAC_READ_SEARCH;
    }
    edits.iter().fold(base, |set, edit| {
        let cap = CapabilitySet::from_bits_retain(1 << edit.cap);
        if edit.add {
            set | cap
        } else {
            set - cap
        }
    })
}

/// The capabilities `edits` add: those the daemon must hold to start.
pub(crate) fn asked(edits: &[CapEdit]) -> CapabilitySet {
    edits.iter().filter(|edit| edit.add).fold(CapabilitySet::empty(), |set, edit| {
        set | CapabilitySet::from_bits_retain(1 << edit.cap)
    })
}

/// Whether the calling thread holds any capability (in its permitted set).
pub(crate) fn holds_any() -> bool {
    capabilities(None).is_ok_and(|sets| !sets.permitted.is_empty())
}

/// Reduces the calling thread (the whole process, before threads start) to `keep`. A capability
/// of `keep` the daemon does not hold (a container that started it without MKNOD) is warned
/// about and served without, as virtiofsd does, unless `--modcaps` asked for it (`asked`).
/// With `bounding`, the bounding set goes too, which needs CAP_SETPCAP: root and a user
/// namespace's owner have it; a user's binary given file capabilities usually does not, nor
/// does root in a container started with a minimal set (virtiofsd's known failure in pods):
/// those keep their bounding set, said in a warning for root, which only an exec would use
/// (the syscall filter closes exec, and no_new_privs is set either way).
pub(crate) fn reduce(
    keep: CapabilitySet,
    asked: CapabilitySet,
    bounding: bool,
) -> Result<(), String> {
    let have = capabilities(None).map_err(|e| format!("reading capabilities: {e}"))?;
    let missing = keep - have.permitted;
    if !(missing & asked).is_empty() {
        let missing = missing & asked;
        return Err(format!("--modcaps: the daemon does not hold {missing:?} to keep it"));
    }
    // A user's binary given a few file capabilities on purpose lacks the rest by design.
    if !missing.is_empty() && bounding {
        log::warn!(
            "the daemon was started without {missing:?}: what needs it fails for the guest \
             (e.g. mknod without MKNOD)"
        );
    }
    let keep = keep & have.permitted;
    let setpcap = have.effective.contains(CapabilitySet::SETPCAP);
    if bounding && !setpcap {
        log::warn!(
            "the daemon was started without SETPCAP: its bounding set stays as it was (only an \
             exec would use it, and the daemon never executes anything)"
        );
    }
    // Nothing executed later gains privileges, whatever the bounding set keeps.
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("setting no_new_privs: {e}"))?;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which may go below.
    for bit in (0..64).filter(|_| bounding && setpcap) {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        if keep.contains(cap) {
            continue;
        }
        // Numbers past the kernel's last capability answer EINVAL: nothing to drop there.
        if capability_is_in_bounding_set(cap).unwrap_or(false) {
            remove_capability_from_bounding_set(cap)
                .map_err(|e| format!("dropping capability {bit} from the bounding set: {e}"))?;
        }
    }
    clear_ambient_capability_set().map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    let sets =
        CapabilitySets { effective: keep, permitted: keep, inheritable: CapabilitySet::empty() };
    set_capabilities(None, sets).map_err(|e| format!("setting capabilities: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_order_to_the_default_set() {
        assert_eq!(kept(&[], false), default_set());
        let admin = CapEdit { add: true, cap: 21 };
        let no_mknod = CapEdit { add: false, cap: 27 };
        let set = kept(&[admin, no_mknod], false);
        assert!(set.contains(CapabilitySet::SYS_ADMIN) && !set.contains(CapabilitySet::MKNOD));
        assert_eq!(kept(&[admin, CapEdit { add: false, cap: 21 }], false), default_set());
    }

    /// Opening by handle (a file-handles migration's destination) keeps DAC_READ_SEARCH,
    /// unless `--modcaps` takes it away.
    #[test]
    fn file_handles_keep_dac_read_search() {
        let search = CapabilitySet::DAC_READ_SEARCH;
        assert!(!kept(&[], false).contains(search));
        assert_eq!(kept(&[], true), default_set() | search);
        assert!(!kept(&[CapEdit { add: false, cap: 2 }], true).contains(search));
    }
}
