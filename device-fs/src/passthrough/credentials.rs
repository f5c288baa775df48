//! Per-request credentials: the worker thread's filesystem ids become the guest caller's for the
//! operations that create an inode, so the host kernel gives the new file its owner, its group
//! (with set-group-ID directory inheritance) and strips S_ISGID exactly as it would for a local
//! process of that user (`inode_init_owner`, `mode_strip_sgid`), and for ACCESS, which asks the
//! host what that user may do.
//!
//! The switch is per thread: `setfsuid(2)`/`setfsgid(2)` and the raw `setgroups(2)` syscall change
//! only the calling thread, so queues served on other threads are unaffected. The ids a thread has
//! are cached in a thread-local, so a run of requests from one user costs no syscalls after the
//! first: every operation says whose identity it runs under ([`Credentials::as_caller`] or
//! [`Credentials::as_daemon`]) and only a change of identity touches the kernel.
//!
//! Supplementary groups: as the guest caller the thread has none, except the one group the guest
//! names in a FUSE_CREATE_SUPP_GROUP extension (CVE-2022-0358: a daemon that kept root's groups
//! let a guest user create set-group-ID files in directories of groups it is not in); as the
//! daemon it has none at all. A guest that cannot name the group (no CREATE_SUPP_GROUP) has
//! already checked the caller's groups itself (virtio-fs mounts with `default_permissions`), so
//! the thread then keeps CAP_DAC_OVERRIDE for the create, as virtiofsd does; ownership and set-id
//! stripping still follow the caller. So does a guest with POSIX ACLs on: the one group Linux
//! names is the parent's own, where an ACL's named-group entry may let the caller in through any
//! of its groups, which the host never learns (`posix_acl_permission`).
//!
//! A daemon that is not root cannot take other ids: everything then runs as the daemon's user and
//! [`Credentials::is_enabled`] is false. This module decides nothing about which operations run as
//! whom; the passthrough operations do.

use std::cell::Cell;

use rustix::io::Errno;
use rustix::process::Gid;
use rustix::thread::{CapabilitySet, CapabilitySets};

/// The identity an operation runs under, in host ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Filesystem uid.
    pub uid: u32,
    /// Filesystem gid.
    pub gid: u32,
    /// The one supplementary group the guest named, if any.
    pub group: Option<u32>,
    /// Whether the ids above are all the host needs to judge the caller's access to the parent:
    /// the guest could name the parent's group (CREATE_SUPP_GROUP negotiated) and no POSIX ACL
    /// can let the caller in through another of its groups. When not, the create keeps
    /// CAP_DAC_OVERRIDE: the guest checked the caller's groups.
    pub groups_suffice: bool,
}

/// What a thread currently has, as far as this module set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    fsuid: u32,
    fsgid: u32,
    /// The thread's supplementary groups when this module set them (`None`: inherited).
    groups: Option<Option<u32>>,
    /// Whether CAP_DAC_OVERRIDE was raised again after a switch to a non-root fsuid.
    dac_override: bool,
}

thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// The credential switcher of one passthrough file system.
#[derive(Debug, Clone, Copy)]
pub struct Credentials {
    /// The daemon's own ids, restored for operations that do not act as the caller.
    daemon: (u32, u32),
    enabled: bool,
}

impl Credentials {
    /// Switching is enabled when the process runs as root; otherwise every operation keeps the
    /// daemon's ids.
    pub fn detect() -> Self {
        let enabled = rustix::process::geteuid().is_root();
        Self::with(enabled)
    }

    /// Never switch: everything runs as the daemon's user.
    pub fn disabled() -> Self {
        Self::with(false)
    }

    fn with(enabled: bool) -> Self {
        let daemon = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
        Self { daemon, enabled }
    }

    /// Whether operations run with the guest caller's ids.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The owner a file created for a caller whose host uid is `caller_uid` gets: the caller
    /// when switching, the daemon's user otherwise.
    pub fn creator(&self, caller_uid: u32) -> u32 {
        if self.enabled {
            caller_uid
        } else {
            self.daemon.0
        }
    }

    /// Gives this thread the caller's ids (and groups) until another identity is asked for.
    pub fn as_caller(&self, caller: Caller) -> Result<(), Errno> {
        if !self.enabled {
            return Ok(());
        }
        let dac_override = caller.uid != 0 && !caller.groups_suffice;
        switch(caller.uid, caller.gid, Some(caller.group), dac_override)
    }

    /// Gives this thread back the daemon's ids; free when it already has them.
    pub fn as_daemon(&self) -> Result<(), Errno> {
        if !self.enabled {
            return Ok(());
        }
        // Nearly every request (all but creations) finds the thread as the daemon already:
        // what `switch` would compare, without building the wanted state. As the daemon the
        // thread has no supplementary group, neither a caller's nor those the process started
        // with: the host judges what the daemon does without CAP_FSETID (a marked WRITE
        // clearing set-group-ID) by the thread's groups, which must not depend on whose request
        // the thread served before (one `setgroups` the first time, and after a creation that
        // named a group).
        let (uid, gid) = self.daemon;
        let current = CURRENT.get();
        if current.is_some_and(|c| {
            c.fsuid == uid && c.fsgid == gid && !c.dac_override && c.groups == Some(None)
        }) {
            return Ok(());
        }
        switch(uid, gid, Some(None), false)
    }
}

impl Credentials {
    /// Runs `op` without CAP_FSETID in the thread's effective set, so the host kernel clears
    /// set-user-ID and set-group-ID bits on a write or truncation as it would for an
    /// unprivileged writer (FUSE_HANDLE_KILLPRIV_V2), then raises it again.
    pub fn without_fsetid<T>(&self, op: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
        without(CapabilitySet::FSETID, op)
    }

    /// [`Credentials::without_fsetid`], with `group` as the thread's filesystem gid during `op`:
    /// from Linux 6.2 the host also clears a set-group-ID bit without group execute
    /// when the writer is outside the file's group (`setattr_should_drop_sgid`), which is the
    /// guest caller's group to decide, not the daemon's. The caller's other groups are unknown
    /// here: a member through one of them loses the bit as an outsider would.
    pub fn without_fsetid_in<T>(
        &self,
        group: u32,
        op: impl FnOnce() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        if !self.enabled {
            return self.without_fsetid(op);
        }
        // A group this process cannot take (a user namespace that does not map it) leaves the
        // thread's own to judge, as before the switch was tried.
        let before = setfsgid(group);
        // Back to what the thread had (the cache still says it) however `op` ends: CAP_SETGID
        // lets it.
        let _restore = Restore(|| {
            setfsgid(before);
        });
        self.without_fsetid(op)
    }

    /// Runs `op` without the CAP_DAC_OVERRIDE a caller was lent because the host cannot judge
    /// by its groups (see the module docs), for a host object the guest has not checked (an
    /// existing file CREATE found under a name the guest believed free). Callers that were not
    /// lent it, guest root among them, run `op` as they are.
    pub fn without_lent_override<T>(
        &self,
        op: impl FnOnce() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        if CURRENT.get().is_some_and(|c| c.dac_override) {
            without(CapabilitySet::DAC_OVERRIDE, op)
        } else {
            op()
        }
    }
}

/// Runs `op` with `caps` lowered in the thread's effective set, then raises again those that
/// were raised before: a thread acting as a guest user, whose fsuid change already lowered
/// them, must not come out of `op` holding them. A panic in `op` raises them too: the thread
/// may go on serving (a pool's thread catches it), and its cache says nothing of them.
fn without<T>(caps: CapabilitySet, op: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
    let raised = rustix::thread::capabilities(None)?.effective & caps;
    if raised.is_empty() {
        return op();
    }
    set_effective(raised, false)?;
    let raise = Restore(|| {
        // Raising what the thread held, within its permitted set, cannot be refused.
        let _ = set_effective(raised, true);
    });
    let result = op();
    drop(raise);
    result
}

/// Runs its closure when dropped: what a thread's identity needs put back, whether the
/// operation between returned or panicked.
struct Restore<F: FnMut()>(F);

impl<F: FnMut()> Drop for Restore<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// What this thread has now: the cached value, or the kernel's answer the first time.
fn current() -> Current {
    CURRENT.get().unwrap_or_else(|| {
        // -1 is never a valid id: both calls only report the current value.
        let fsuid = setfsuid(u32::MAX);
        let effective = rustix::thread::capabilities(None).map(|c| c.effective);
        Current {
            fsuid,
            fsgid: setfsgid(u32::MAX),
            groups: None,
            // Unknown counts as raised, so a caller that must not have it gets it lowered.
            dac_override: fsuid != 0
                && effective.map_or(true, |e| e.contains(CapabilitySet::DAC_OVERRIDE)),
        }
    })
}

fn switch(
    uid: u32,
    gid: u32,
    groups: Option<Option<u32>>,
    dac_override: bool,
) -> Result<(), Errno> {
    let mut now = current();
    let wanted = Current {
        fsuid: uid,
        fsgid: gid,
        groups: groups.or(now.groups),
        dac_override: dac_override && uid != 0,
    };
    if now == wanted {
        // Remember what the kernel said, so the next request asks it nothing.
        CURRENT.set(Some(now));
        return Ok(());
    }
    // Until every step succeeded the cache says nothing, so a failure is retried from the
    // kernel's state instead of trusted.
    CURRENT.set(None);
    if wanted.groups != now.groups {
        if let Some(group) = wanted.groups {
            let list: Vec<Gid> = group.into_iter().map(Gid::from_raw).collect();
            rustix::thread::set_thread_groups(&list)?;
        }
        now.groups = wanted.groups;
    }
    // Groups and gid first: CAP_SETGID is not a filesystem capability and survives the uid
    // switch anyway, but the order keeps the thread's groups consistent with its gid.
    if wanted.fsgid != now.fsgid {
        setfsgid(wanted.fsgid);
        if setfsgid(u32::MAX) != wanted.fsgid {
            return Err(Errno::PERM);
        }
    }
    if wanted.fsuid != now.fsuid {
        setfsuid(wanted.fsuid);
        if setfsuid(u32::MAX) != wanted.fsuid {
            return Err(Errno::PERM);
        }
        // A switch between root and non-root re-derives the filesystem capabilities from the
        // permitted set; between two non-root ids they stay as they were.
        if (now.fsuid == 0) != (wanted.fsuid == 0) {
            now.dac_override = false;
        }
    }
    if wanted.fsuid != 0 && wanted.dac_override != now.dac_override {
        set_effective(CapabilitySet::DAC_OVERRIDE, wanted.dac_override)?;
    }
    CURRENT.set(Some(wanted));
    Ok(())
}

/// This thread's filesystem uid and gid, as the kernel has them.
pub(super) fn filesystem_ids() -> (u32, u32) {
    // -1 is never a valid id: both calls only report the current value.
    (setfsuid(u32::MAX), setfsgid(u32::MAX))
}

/// Raises or lowers `caps` in this thread's effective set (never beyond its permitted set).
pub(super) fn set_effective(caps: CapabilitySet, on: bool) -> Result<(), Errno> {
    let CapabilitySets { effective, permitted, inheritable } = rustix::thread::capabilities(None)?;
    let effective = if on { effective | (caps & permitted) } else { effective - caps };
    rustix::thread::set_capabilities(None, CapabilitySets { effective, permitted, inheritable })
}

/// `setfsuid(2)` on this thread; returns the previous fsuid (the current one when `uid` is -1).
fn setfsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid takes one integer argument and touches no memory of this process.
    let previous = unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    // The kernel returns the previous fsuid, a 32-bit id.
    previous as u32
}

/// `setfsgid(2)` on this thread; returns the previous fsgid (the current one when `gid` is -1).
fn setfsgid(gid: u32) -> u32 {
    // SAFETY: setfsgid takes one integer argument and touches no memory of this process.
    let previous = unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    // The kernel returns the previous fsgid, a 32-bit id.
    previous as u32
}
