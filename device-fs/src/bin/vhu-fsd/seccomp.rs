//! The syscall allow-list (`--seccomp`): once the daemon is sandboxed and its capabilities are
//! reduced, only the syscalls serving the guest needs stay open; any other one kills the
//! process (`kill`, the default), is logged (`log`) or raises SIGSYS (`trap`).
//!
//! The list covers every path the daemon takes after start-up: the vhost-user connection
//! (sockets, descriptor passing, eventfds, polling), guest memory (mappings), the worker
//! threads and pools, every FUSE operation the passthrough file system implements (the
//! `*at` family, xattrs through `/proc/self/fd`, locks, per-thread credentials), logging and
//! signals. Set-up syscalls (namespaces, mounts, capability changes, exec) are not on it: they
//! are done by then. Where a syscall the daemon needs could also undo the sandbox, its
//! arguments are checked: `clone` only makes threads (no process, no namespace), `clone3`,
//! whose flags live in memory a filter cannot read, answers ENOSYS (the C library then uses
//! `clone`), `unshare` only gives a thread its own working directory, `prctl` only names
//! threads and mappings and reads the auxiliary vector. The list is checked by running the
//! launcher table, the sandbox tests and the guest end-to-end workload under `kill`.
//!
//! This module builds and installs the filters; it must not make the daemon's set-up
//! decisions (which sandbox, which capabilities: `sandbox`, `caps`), and nothing may be
//! installed before those are done.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
use std::collections::BTreeMap;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpArgLen::Dword, SeccompCmpArgLen::Qword,
    SeccompCmpOp, SeccompCmpOp::Eq, SeccompCmpOp::MaskedEq, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::cli::Seccomp;

/// Syscalls allowed on every architecture.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
const COMMON: &[libc::c_long] = &[
    // Memory, threads, time, signals.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    // Answered ENOSYS by the second filter (`no_clone3`); `clone` is checked (`only_threads`).
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_prlimit64,
    // A panic's message names the working directory when it prints a backtrace.
    libc::SYS_getcwd,
    // Descriptors, the connection, notifications.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_eventfd2,
    libc::SYS_ppoll,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_accept4,
    libc::SYS_socketpair,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    // Files: data.
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_syncfs,
    libc::SYS_ftruncate,
    libc::SYS_copy_file_range,
    libc::SYS_flock,
    // Files: names and attributes.
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_symlinkat,
    libc::SYS_linkat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_readlinkat,
    // Live migration: inodes described and found again by file handle.
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_fchmodat,
    libc::SYS_fchmod,
    libc::SYS_fchownat,
    libc::SYS_fchown,
    libc::SYS_utimensat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    libc::SYS_umask,
    // Identity: per-thread credentials and working directory.
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_setgroups,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_geteuid,
    libc::SYS_getegid,
    libc::SYS_getuid,
    libc::SYS_getgid,
    libc::SYS_fchdir,
];

/// Syscalls only x86_64 has (aarch64 has their `*at` or `p*` forms only).
#[cfg(target_arch = "x86_64")]
const ARCH: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_poll,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_arch_prctl,
];
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
const ARCH: &[libc::c_long] = &[];

/// The architecture filters are built for (those seccompiler knows; on any other, `install`
/// has no filter to give).
#[cfg(target_arch = "x86_64")]
const TARGET: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const TARGET: TargetArch = TargetArch::aarch64;
#[cfg(target_arch = "riscv64")]
const TARGET: TargetArch = TargetArch::riscv64;

/// The filters for `mode`, none for `--seccomp none`, in the order they are installed: the one
/// that answers `clone3` with ENOSYS, then the allow-list, which closes `seccomp` itself (the
/// kernel runs both on every call, and the stricter answer wins).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
pub(crate) fn filter(mode: Seccomp) -> Result<Vec<BpfProgram>, String> {
    let mismatch = match mode {
        Seccomp::None => return Ok(Vec::new()),
        Seccomp::Kill => SeccompAction::KillProcess,
        Seccomp::Log => SeccompAction::Log,
        Seccomp::Trap => SeccompAction::Trap,
    };
    let mut rules =
        COMMON.iter().chain(ARCH).map(|nr| (*nr, Vec::new())).collect::<BTreeMap<_, _>>();
    rules.insert(libc::SYS_ioctl, vec![rule(1, Dword, Eq, FIONBIO, "ioctl")?]);
    // Signals to its own threads only (abort, a thread's signal): outside a pid namespace a
    // root daemon could otherwise signal any root process of the host.
    let own = u64::from(std::process::id());
    rules.insert(libc::SYS_tgkill, vec![rule(0, Dword, Eq, own, "tgkill")?]);
    rules.insert(libc::SYS_clone, vec![rule(0, Qword, MaskedEq(THREAD_MASK), THREAD, "clone")?]);
    let unshare = rule(0, Qword, Eq, libc::CLONE_FS as u64, "unshare")?;
    rules.insert(libc::SYS_unshare, vec![unshare]);
    let names = [libc::PR_SET_NAME, libc::PR_GET_NAME, PR_SET_VMA, PR_GET_AUXV];
    let prctl = names.iter().map(|op| rule(0, Dword, Eq, *op as u64, "prctl"));
    rules.insert(libc::SYS_prctl, prctl.collect::<Result<_, _>>()?);
    let allow_list = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TARGET)
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("--seccomp: building the filter: {e}"))?;
    let enosys = SeccompAction::Errno(libc::ENOSYS as u32);
    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let no_clone3 = SeccompFilter::new(clone3, SeccompAction::Allow, enosys, TARGET)
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("--seccomp: building the clone3 filter: {e}"))?;
    Ok(vec![no_clone3, allow_list])
}

/// The `clone` flags a new thread has ([`THREAD`]) or must not have: a thread shares the
/// process's memory and files, so without `CLONE_THREAD` it would be a new process, and with
/// a namespace flag a way out of the sandbox's. (A new time namespace, `CLONE_NEWTIME`, is
/// only `unshare`'s and `clone3`'s: in `clone`'s flags its bit is the exit signal's.)
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
const THREAD_MASK: u64 = (libc::CLONE_THREAD
    | libc::CLONE_VM
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// Of [`THREAD_MASK`], what a new thread has.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
const THREAD: u64 = (libc::CLONE_THREAD | libc::CLONE_VM) as u64;

/// `ioctl` only to make a descriptor non-blocking (the connection's channels): nothing else the
/// daemon does after start-up needs one, and any other request on an inherited terminal or a
/// file of the share stays closed. (The request is an `unsigned int` to the kernel: the low 32
/// bits; the constant's type differs between C libraries, hence the cast.)
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
#[allow(clippy::unnecessary_cast)]
const FIONBIO: u64 = libc::FIONBIO as u64;

/// `prctl(PR_SET_VMA)`, with which newer C libraries name their anonymous mappings.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
const PR_SET_VMA: libc::c_int = 0x5356_4d41;

/// `prctl(PR_GET_AUXV)` (Linux 6.4): how a library may read the process's own auxiliary vector
/// (the page size, the vDSO) the first time it needs one, long after start-up. rustix takes it
/// from the C library instead (its `use-libc-auxv`), which also works on older kernels once
/// sandboxed, where `/proc/self/auxv` is the share's or nothing.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
const PR_GET_AUXV: libc::c_int = 0x4155_5856;

/// A rule with one condition: argument `arg` compared by `op` with `value`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
fn rule(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
    what: &str,
) -> Result<SeccompRule, String> {
    SeccompCondition::new(arg, len, op, value)
        .and_then(|condition| SeccompRule::new(vec![condition]))
        .map_err(|e| format!("--seccomp: the {what} rule: {e}"))
}

/// Installs `mode`'s filter on the calling thread; threads started afterwards inherit it. Call
/// after the sandbox and capability set-up, before the first thread starts. Where no filter is
/// built (an architecture seccompiler does not know), the default mode (`asked` false) serves
/// without one and says so; a mode asked for fails.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
pub(crate) fn install(mode: Seccomp, _asked: bool) -> Result<(), String> {
    for program in filter(mode)? {
        seccompiler::apply_filter(&program)
            .map_err(|e| format!("--seccomp: installing the filter: {e}"))?;
    }
    Ok(())
}

/// [`install`] where no filter is built.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")))]
pub(crate) fn install(mode: Seccomp, asked: bool) -> Result<(), String> {
    match (mode, asked) {
        (Seccomp::None, _) => Ok(()),
        (_, false) => {
            log::warn!(
                "no syscall filter on this architecture (vhu-fsd builds them for x86_64, \
                 aarch64 and riscv64): serving without one (--seccomp none says so and stays \
                 quiet)"
            );
            Ok(())
        }
        (mode, true) => Err(format!(
            "--seccomp {}: no syscall filter is built for this architecture (only for x86_64, \
             aarch64 and riscv64); --seccomp none serves without one",
            format!("{mode:?}").to_lowercase()
        )),
    }
}

#[cfg(test)]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
mod tests {
    use super::*;

    #[test]
    fn every_mode_but_none_compiles_its_filters() {
        assert!(filter(Seccomp::None).expect("none").is_empty());
        for mode in [Seccomp::Kill, Seccomp::Log, Seccomp::Trap] {
            let programs = filter(mode).expect("builds");
            assert_eq!(programs.len(), 2, "{mode:?}: clone3's and the allow-list");
            assert!(programs[1].len() > COMMON.len(), "{mode:?}: one test per syscall at least");
        }
    }

    /// How a child that installed the `kill` filters and then ran `call` ended: `Ok(code)`
    /// when it exited with `call`'s code, `Err(signal)` when a signal killed it.
    fn in_filtered_child(call: fn() -> i32) -> Result<i32, i32> {
        // SAFETY: the child builds the filters (for its own pid), makes system calls and, in
        // the thread case, starts a thread (the C library keeps its allocator usable across
        // fork) before it exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let programs = filter(Seccomp::Kill).unwrap_or_default();
            let installed = !programs.is_empty()
                && programs.iter().all(|p| seccompiler::apply_filter(p).is_ok());
            let code = if installed { call() } else { 100 };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if libc::WIFSIGNALED(status) {
            return Err(libc::WTERMSIG(status));
        }
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        Ok(libc::WEXITSTATUS(status))
    }

    /// The errno of the last failed call, as an exit code (0 if the call succeeded).
    fn outcome(ret: libc::c_long) -> i32 {
        if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(99)
        } else {
            0
        }
    }

    /// A signal to one of its own threads passes (signal 0 here); one to another process (its
    /// parent) ends the process.
    #[test]
    fn tgkill_reaches_only_the_daemons_own_threads() {
        fn own() -> i32 {
            // SAFETY: signal 0 checks the thread exists and sends nothing.
            outcome(unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), 0) })
        }
        // The test process's pid, read before the fork (getppid is not on the filter's list).
        static PARENT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
        fn parent() -> i32 {
            let ppid = PARENT.load(std::sync::atomic::Ordering::Relaxed);
            // SAFETY: signal 0 sends nothing; the parent is the test process, waiting for us.
            outcome(unsafe { libc::syscall(libc::SYS_tgkill, ppid, ppid, 0) })
        }
        PARENT.store(std::process::id() as i32, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(in_filtered_child(own), Ok(0));
        assert_eq!(in_filtered_child(parent), Err(libc::SIGSYS));
    }

    /// FIONBIO passes, any other ioctl (a terminal's window size here) ends the process.
    #[test]
    fn ioctl_is_allowed_only_to_make_a_descriptor_non_blocking() {
        fn fionbio() -> i32 {
            let mut on: libc::c_int = 0;
            // SAFETY: FIONBIO reads one int.
            unsafe { libc::ioctl(0, libc::FIONBIO as _, &mut on) };
            0
        }
        fn winsize() -> i32 {
            let mut size = [0u64; 2];
            // SAFETY: a winsize is 8 bytes; `size` has 16.
            unsafe { libc::ioctl(0, libc::TIOCGWINSZ as _, size.as_mut_ptr()) };
            0
        }
        assert_eq!(in_filtered_child(fionbio), Ok(0));
        assert_eq!(in_filtered_child(winsize), Err(libc::SIGSYS));
    }

    /// Threads start (through `clone`, clone3 being ENOSYS); a new process or a namespace does
    /// not, and `unshare` gives only a private working directory.
    #[test]
    fn clone_and_unshare_make_threads_never_processes_or_namespaces() {
        fn thread() -> i32 {
            extern "C" fn seven(_: *mut libc::c_void) -> *mut libc::c_void {
                7 as *mut libc::c_void
            }
            // The C library's thread, without the Rust runtime's locks (this child was forked
            // from a process whose other threads may have held them).
            let mut thread: libc::pthread_t = 0;
            let mut result = std::ptr::null_mut();
            // SAFETY: `thread` and `result` outlive the calls; `seven` touches nothing.
            unsafe {
                if libc::pthread_create(&mut thread, std::ptr::null(), seven, std::ptr::null_mut())
                    != 0
                    || libc::pthread_join(thread, &mut result) != 0
                {
                    return 1;
                }
            }
            result as usize as i32
        }
        fn clone3() -> i32 {
            // SAFETY: a size of 0 is refused before any argument is read.
            outcome(unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) })
        }
        fn fork() -> i32 {
            let null = std::ptr::null::<u8>();
            // SAFETY: clone with only SIGCHLD is fork; a child created would exit with 0 here.
            outcome(unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, null, null, null) })
        }
        fn unshare_fs() -> i32 {
            // SAFETY: CLONE_FS touches only this process's working directory and umask.
            outcome(unsafe { libc::unshare(libc::CLONE_FS) }.into())
        }
        fn unshare_user() -> i32 {
            // SAFETY: a new user namespace for this short-lived child.
            outcome(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into())
        }
        assert_eq!(in_filtered_child(thread), Ok(7));
        assert_eq!(in_filtered_child(clone3), Ok(libc::ENOSYS));
        assert_eq!(in_filtered_child(fork), Err(libc::SIGSYS));
        assert_eq!(in_filtered_child(unshare_fs), Ok(0));
        assert_eq!(in_filtered_child(unshare_user), Err(libc::SIGSYS));
    }

    /// Threads are named; other process controls (dumpable, a ptracer) stay closed. A panic's
    /// backtrace may ask for the working directory.
    #[test]
    fn prctl_only_names_threads_and_getcwd_is_open() {
        fn name() -> i32 {
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            outcome(unsafe { libc::prctl(libc::PR_SET_NAME, c"filtered".as_ptr()) }.into())
        }
        fn dumpable() -> i32 {
            // SAFETY: changes only this short-lived child's dumpable flag.
            outcome(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) }.into())
        }
        fn cwd() -> i32 {
            i32::from(std::env::current_dir().is_err())
        }
        assert_eq!(in_filtered_child(name), Ok(0));
        assert_eq!(in_filtered_child(dumpable), Err(libc::SIGSYS));
        assert_eq!(in_filtered_child(cwd), Ok(0));
    }

    /// Once sandboxed, the daemon still knows its page size (the first guest memory it maps
    /// asks) without `/proc/self/auxv`, which then names a file of the share or nothing, on
    /// kernels before 6.4 too (they answer `prctl(PR_GET_AUXV)` with EINVAL, emulated here):
    /// the auxiliary vector comes from the C library.
    #[test]
    fn the_page_size_needs_no_proc_once_sandboxed() {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: geteuid reads the caller's id.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(root || std::env::var_os("CI").is_none(), "CI runs this as root");
        if !root {
            return;
        }
        let empty = std::env::temp_dir().join(format!("vhu-auxv-{}", std::process::id()));
        std::fs::create_dir_all(&empty).expect("an empty directory");
        let empty_c = std::ffi::CString::new(empty.as_os_str().as_bytes()).expect("path");
        let get_auxv = rule(0, Dword, Eq, PR_GET_AUXV as u64, "prctl").expect("rule");
        let old_kernel = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_prctl, vec![get_auxv])]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EINVAL as u32),
            TARGET,
        )
        .and_then(BpfProgram::try_from)
        .expect("filter");
        // SAFETY: sysconf reads a constant of the C library.
        let expected = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: the child installs a filter, changes its root and reads the page size (all
        // on this thread) before it exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: chroot and chdir read NUL-terminated paths.
            let rooted = || unsafe { libc::chroot(empty_c.as_ptr()) == 0 };
            // SAFETY: as above.
            let moved = || unsafe { libc::chdir(c"/".as_ptr()) == 0 };
            let code = if seccompiler::apply_filter(&old_kernel).is_err() {
                100
            } else if !rooted() || !moved() {
                101
            } else {
                match std::panic::catch_unwind(rustix::param::page_size) {
                    Ok(size) if size == expected => 0,
                    Ok(_) => 102,
                    Err(_) => 103,
                }
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let _ = std::fs::remove_dir(&empty);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "100: filter, 101: chroot, 102/103: page size");
    }
}
