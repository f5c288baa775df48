//! The sandbox the daemon serves from (`--sandbox`): namespaces with the share as the root
//! (the default), a chroot into the share, or none.
//!
//! `namespace`: the process forks. The parent stays outside, keeps the socket file it bound, ends
//! the child when it gets SIGTERM/SIGINT/SIGHUP, and when the child ends removes the socket and
//! exits with the child's status (0 after a termination signal); launchers see one pid (the one in
//! the pid file) behave like the daemon. The child is pid 1 of a new pid namespace, in new mount
//! and network namespaces (and a new user namespace when not started as root, mapped by
//! `--uid-map`/`--gid-map` through newuidmap/newgidmap, or to the daemon's own ids alone). It
//! mounts a fresh `/proc` holding only the processes' directories (before Linux 5.8: its own
//! descriptor directory bound over a fresh `/proc`), long enough for the file system to open its
//! descriptor directory, then makes the share its root (`pivot_root`) and detaches everything else:
//! the host's file system is out of reach even to a path the kernel would resolve for it. A share
//! of `/` stays the root, as with virtiofsd (nothing is detached: the whole host is shared), and
//! its `/proc` is the daemon's descriptor directory alone, since the guest reaches it. The share's
//! mounts present at start are made `nodev` and `nosuid` there (Linux 5.12+): a device node in the
//! share, which a guest may create, opens no host device even for a daemon that has been taken
//! over. (A host mount made under the share later propagates in with its own flags.)
//!
//! `chroot`: the share becomes the root directory, nothing else changes (for launchers that set
//! up namespaces themselves). The descriptors opened before it (the host's `/proc/self/fd`, the
//! socket's directory) still lead outside the share through `..`: only the namespace mode
//! detaches the host.
//!
//! Everything here runs before the first thread starts (fork and unshare need a single thread).
//! This module sets up isolation; it serves nothing.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rustix::mount::{
    mount, mount_bind, mount_bind_recursive, mount_change, unmount, MountFlags,
    MountPropagationFlags, UnmountFlags,
};
use rustix::process::{getegid, geteuid, Pid, Signal, WaitOptions};
use rustix::thread::UnshareFlags;
use vhu_transport_std::SocketFile;

use crate::ns_map::NsMap;

/// Whether the daemon started as root in the initial user namespace.
pub(crate) fn started_as_root() -> bool {
    geteuid().is_root()
}

/// How a new user namespace is mapped, for a daemon not started as root.
#[derive(Debug)]
pub(crate) struct UserMaps<'a> {
    /// `--uid-map` ranges (none: the daemon's uid alone, as itself).
    pub(crate) uid: &'a [NsMap],
    /// `--gid-map` ranges (none: the daemon's gid alone, as itself).
    pub(crate) gid: &'a [NsMap],
}

fn unshare(flags: UnshareFlags, what: &str) -> Result<(), String> {
    // SAFETY: called while the process has one thread (see the module docs), so no other
    // thread's view of the process changes under it; no memory is touched.
    unsafe { rustix::thread::unshare_unsafe(flags) }
        .map_err(|e| format!("--sandbox namespace: creating the {what} namespace: {e}"))
}

/// Enters the namespaces. Returns in the child, which owns nothing of the socket file and
/// holds none of the launcher's `leaked` descriptors, with
/// the path of its descriptor directory (see [`setup_child`]); the parent never returns (it
/// exits with the child's status).
pub(crate) fn enter_namespaces(
    share: &Path,
    maps: Option<UserMaps<'_>>,
    socket: Option<SocketFile>,
    leaked: &[i32],
) -> Result<&'static str, String> {
    if let Some(maps) = maps {
        enter_user_namespace(&maps)?;
    }
    unshare(UnshareFlags::NEWPID, "pid")?;
    // The parent holds the write end for its life (never writing): the child, once it is set
    // to die with the parent, sees the end hung up if the parent died before that.
    let (alive_r, alive_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("--sandbox namespace: pipe: {e}"))?;
    // SAFETY: the process has one thread, so the child is a complete copy of it; it goes on
    // with the same code and no lock can be held by a thread that does not exist there.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(format!("--sandbox namespace: fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(alive_w);
            // The launcher's descriptors stay with the parent (`inherited`).
            crate::inherited::close(leaked);
            if let Some(socket) = socket {
                socket.release();
            }
            setup_child(share, alive_r)
        }
        child => {
            drop(alive_r);
            let _alive = alive_w;
            supervise(child, socket)
        }
    }
}

/// Whether the parent, which holds the other end of `alive` until it ends, has ended.
fn parent_gone(alive: &rustix::fd::OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(alive, PollFlags::IN)];
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// The child: dies with the parent (or ends at once if it already has), leaves the host's mounts
/// and network, mounts its own `/proc` (the one its pid namespace shows), and binds the share on
/// itself: pivot_root wants a mount point, and the file system must open the share through that
/// mount, whose submounts stay attached when the rest of the host's tree is detached (a share of
/// `/` is not bound: it stays the root). Returns where the file system finds the process's
/// descriptor directory.
fn setup_child(share: &Path, alive: rustix::fd::OwnedFd) -> Result<&'static str, String> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("--sandbox namespace: parent death signal: {e}"))?;
    // A parent that died between the fork and that call sent nothing: an orphan would serve
    // the socket with no one to end it or clean up after it.
    if parent_gone(&alive) {
        return Err("--sandbox namespace: the parent ended while the daemon set up".into());
    }
    drop(alive);
    unshare(UnshareFlags::NEWNS | UnshareFlags::NEWNET, "mount and network")?;
    // Nothing mounted here propagates back to the host.
    mount_change("/", MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)
        .map_err(|e| format!("--sandbox namespace: making / a slave mount: {e}"))?;
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    // Only the processes' directories (Linux 5.8+): the `/proc/self/fd` the file system keeps
    // leads by `..` to this mount's root, which must not hold `sys/` or `sysrq-trigger` for
    // the daemon, still uid 0, to write.
    // A share of the whole root keeps `/proc` in the guest's reach, so there it is the
    // daemon's descriptor directory alone (the older kernels' way below), as virtiofsd binds it:
    // a pid-only `/proc` would show the guest the daemon's `1/mem`.
    let whole_root = share == Path::new("/");
    let pid_only = match std::env::var_os(PROC_ENV) {
        Some(how) if how == "bind" => Err(rustix::io::Errno::INVAL),
        _ if whole_root => Err(rustix::io::Errno::INVAL),
        _ => mount("proc", "/proc", "proc", flags, Some(c"subset=pid")),
    };
    let proc_fd = match pid_only {
        Ok(()) => "/proc/self/fd",
        Err(e) => {
            // Older kernels: a whole /proc, then its `self/fd` bound over it, so that `/proc`
            // is this process's descriptor directory and nothing else; `..` from a mount's
            // root leaves the mount, which the pivot below detaches.
            if !whole_root {
                log::info!(
                    "--sandbox namespace: no pid-only /proc ({e}); /proc is the daemon's \
                     descriptor directory alone"
                );
            }
            mount("proc", "/proc", "proc", flags, None)
                .and_then(|()| mount_bind("/proc/self/fd", "/proc"))
                .map_err(|e| format!("--sandbox namespace: mounting /proc: {e}"))?;
            "/proc"
        }
    };
    // The host's root shared whole needs no mount of its own, nor a pivot (`pivot_into`).
    if share != Path::new("/") {
        mount_bind_recursive(share, share)
            .map_err(|e| format!("--sandbox namespace: binding the share: {e}"))?;
    }
    match forbid_devices_and_setid(share) {
        Ok(()) => {}
        // A kernel before 5.12, or an outer filter (a container's, systemd's) that refuses the
        // call: serve all the same, as without SETPCAP.
        Err(e @ (rustix::io::Errno::NOSYS | rustix::io::Errno::PERM)) => log::warn!(
            "--sandbox namespace: mount_setattr: {e}: device nodes in the share stay openable \
             by the daemon"
        ),
        Err(e) => return Err(format!("--sandbox namespace: making the share nodev: {e}")),
    }
    Ok(proc_fd)
}

/// `struct mount_attr` of `linux/mount.h`, for mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_NOSUID` and `MOUNT_ATTR_NODEV` of `linux/mount.h`.
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Makes every mount at and under `path` `nodev` and `nosuid` (mount_setattr(2) with
/// AT_RECURSIVE), leaving their other attributes as they are (a read-only share stays so).
fn forbid_devices_and_setid(path: &Path) -> Result<(), rustix::io::Errno> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| rustix::io::Errno::INVAL)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads the NUL-terminated `path` and `size_of::<MountAttr>()` bytes
    // of `attr`, both alive for the call, and writes nothing of this process's memory.
    let done = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(rustix::io::Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO),
        ))
    }
}

/// `VHU_SANDBOX_PROC=bind` takes the older kernels' way to a `/proc` without system files even
/// where a pid-only `/proc` can be mounted (so that way is tested on every kernel).
const PROC_ENV: &str = "VHU_SANDBOX_PROC";

/// Makes `share` (bound on itself by [`enter_namespaces`]) the root of the child's mount
/// namespace and detaches the rest. A share that is the root already stays as it is, as with
/// virtiofsd: pivot_root cannot make the root its own new root (EBUSY), and with the whole host
/// shared there is nothing to detach (the namespaces, a `/proc` of the daemon's descriptors
/// alone, the filter and the capabilities still apply).
pub(crate) fn pivot_into(share: &Path) -> Result<(), String> {
    let fail = |step: &str, e: rustix::io::Errno| format!("--sandbox namespace: {step}: {e}");
    if share == Path::new("/") {
        log::info!("--sandbox namespace: the share is the host's root; nothing to pivot into");
        return Ok(());
    }
    rustix::process::chdir(share).map_err(|e| fail("entering the share", e))?;
    rustix::process::pivot_root(".", ".").map_err(|e| fail("pivot_root", e))?;
    // The old root is stacked under the new one at `.`: detach it.
    unmount(".", UnmountFlags::DETACH).map_err(|e| fail("detaching the host's root", e))?;
    rustix::process::chdir("/").map_err(|e| fail("entering the new root", e))
}

/// `--sandbox chroot`.
pub(crate) fn chroot_into(share: &Path) -> Result<(), String> {
    rustix::process::chroot(share)
        .and_then(|()| rustix::process::chdir("/"))
        .map_err(|e| format!("--sandbox chroot: {}: {e}", share.display()))
}

/// The parent: forwards termination signals, waits, cleans up, exits as the child did.
fn supervise(child: libc::pid_t, socket: Option<SocketFile>) -> ! {
    let code = match wait_forwarding(child) {
        Ok(code) => code,
        Err(error) => {
            log::error!("{error}");
            1
        }
    };
    if let Some(socket) = &socket {
        socket.remove();
    }
    std::process::exit(code)
}

/// Waits for the child on this thread (after unsharing the pid namespace this process cannot
/// start threads): SIGCHLD says it may have ended. A termination signal ends the child with
/// SIGKILL: as pid 1 of its namespace it ignores any other signal it has no handler for yet
/// (one sent during its set-up would be lost), and it holds nothing that needs a clean exit;
/// the daemon then exits with status 0, as it does when terminated unsandboxed.
fn wait_forwarding(child: libc::pid_t) -> Result<i32, String> {
    use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
    let pid = Pid::from_raw(child).ok_or("fork returned no pid")?;
    let mut signals = signal_hook::iterator::Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    crate::signals::hold_termination(false);
    let mut terminated = false;
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(Some(_)) if terminated => return Ok(0),
            Ok(Some((_, status))) => {
                if let Some(code) = status.exit_status() {
                    return Ok(code);
                }
                if let Some(signal) = status.terminating_signal() {
                    log::error!("{}", ended_by(signal));
                    return Ok(128 + signal);
                }
            }
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("waiting for the sandboxed daemon: {e}")),
        }
        for signal in signals.wait() {
            if signal != SIGCHLD {
                terminated = true;
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
    }
}

/// What the log says of a sandboxed daemon a signal ended (the parent's exit status says only
/// 128 and the number).
fn ended_by(signal: i32) -> String {
    let why = match signal {
        libc::SIGSYS => " (a system call the --seccomp filter does not allow)",
        libc::SIGKILL => " (killed: by the OOM killer, a launcher's timeout or an operator)",
        libc::SIGSEGV | libc::SIGBUS | libc::SIGABRT => " (a crash)",
        _ => "",
    };
    format!("the sandboxed daemon was ended by signal {signal}{why}")
}

/// A new user namespace in which the daemon holds every capability, mapped as `maps` says.
/// Without a map, the daemon's own ids map to themselves (as virtiofsd maps them): the guest
/// sees the user's files as the user's, and a guest user of the same uid may write them.
fn enter_user_namespace(maps: &UserMaps<'_>) -> Result<(), String> {
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    // A map of the daemon's own id alone needs no helper: the process writes that map itself.
    let own = |ranges: &[NsMap], id: u32| match ranges {
        [] => Some(id),
        [NsMap { inside, outside, count: 1 }] if *outside == id => Some(*inside),
        _ => None,
    };
    let (own_uid, own_gid) = (own(maps.uid, uid), own(maps.gid, gid));
    // newuidmap/newgidmap must run outside the new namespace: started now, they wait for a
    // line on stdin, sent once it exists.
    let helpers: Vec<(Child, &str)> =
        [("newuidmap", maps.uid, own_uid.is_some()), ("newgidmap", maps.gid, own_gid.is_some())]
            .into_iter()
            .filter(|(_, _, own)| !own)
            .map(|(tool, ranges, _)| spawn_mapper(tool, ranges).map(|child| (child, tool)))
            .collect::<Result<_, _>>()?;
    unshare(UnshareFlags::NEWUSER, "user")?;
    for (mut helper, tool) in helpers {
        use std::io::Write;
        let go = helper.stdin.take().map(|mut stdin| stdin.write_all(b"\n"));
        let status = helper.wait().map_err(|e| format!("{tool}: {e}"))?;
        if !matches!(go, Some(Ok(()))) || !status.success() {
            return Err(format!(
                "--sandbox namespace: {tool} failed ({status}): check /etc/sub{}id for this user",
                if tool == "newuidmap" { "u" } else { "g" }
            ));
        }
    }
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .map_err(|e| format!("--sandbox namespace: writing /proc/self/{file}: {e}"))
    };
    if let Some(inside) = own_gid {
        write("setgroups", "deny".into())?;
        write("gid_map", format!("{inside} {gid} 1"))?;
    }
    if let Some(inside) = own_uid {
        write("uid_map", format!("{inside} {uid} 1"))?;
    }
    Ok(())
}

/// `tool PID inside outside count...`, started now and run when a line arrives on its stdin.
fn spawn_mapper(tool: &str, ranges: &[NsMap]) -> Result<Child, String> {
    let mut args: Vec<OsString> =
        vec!["-c".into(), "read _ && exec \"$@\"".into(), "sh".into(), tool.into()];
    args.push(std::process::id().to_string().into());
    for r in ranges {
        args.extend([r.inside, r.outside, r.count].map(|n| OsString::from(n.to_string())));
    }
    Command::new("/bin/sh")
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("--sandbox namespace: starting {tool}: {e}"))
}

#[cfg(test)]
mod tests {
    /// The child tells a parent that ended from one still there by the pipe's other end.
    #[test]
    fn a_parent_that_ended_is_told_from_one_alive() {
        let (alive_r, alive_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        assert!(!super::parent_gone(&alive_r), "the write end is open");
        drop(alive_w);
        assert!(super::parent_gone(&alive_r), "hung up");
    }
}
