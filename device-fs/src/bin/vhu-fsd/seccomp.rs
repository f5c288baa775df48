//! The syscall allow-list (`--seccomp`): once the daemon is sandboxed and its capabilities are
//! reduced, only the syscalls serving the guest needs stay open; any other one kills the
//! process (`kill`, the default), is logged (`log`) or raises SIGSYS (`trap`).
//!
//! The list covers every path the daemon takes after start-up: the vhost-user connection
//! (sockets, descriptor passing, eventfds, polling), guest memory (mappings), the worker
//! threads and pools, every FUSE operation the passthrough file system implements (the
//! `*at` family, xattrs through `/proc/self/fd`, locks, per-thread credentials), logging and
//! signals. Set-up syscalls (namespaces, mounts, capability changes, exec) are not on it: they
//! are done by then. The list is checked by running the launcher table, the sandbox tests and
//! the guest end-to-end workload under `kill`. This module builds and installs the filter.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
use std::collections::BTreeMap;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
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
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
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
    libc::SYS_prctl,
    libc::SYS_prlimit64,
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
    libc::SYS_unshare,
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

/// The filter for `mode`, or `None` for `--seccomp none`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
pub(crate) fn filter(mode: Seccomp) -> Result<Option<BpfProgram>, String> {
    let mismatch = match mode {
        Seccomp::None => return Ok(None),
        Seccomp::Kill => SeccompAction::KillProcess,
        Seccomp::Log => SeccompAction::Log,
        Seccomp::Trap => SeccompAction::Trap,
    };
    let mut rules =
        COMMON.iter().chain(ARCH).map(|nr| (*nr, Vec::new())).collect::<BTreeMap<_, _>>();
    rules.insert(libc::SYS_ioctl, vec![only_fionbio()?]);
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TARGET)
        .map_err(|e| format!("--seccomp: building the filter: {e}"))?;
    BpfProgram::try_from(filter)
        .map(Some)
        .map_err(|e| format!("--seccomp: compiling the filter: {e}"))
}

/// `ioctl` only to make a descriptor non-blocking (the connection's channels): nothing else
/// the daemon does after start-up needs one, and any other request on an inherited terminal
/// or a file of the share stays closed.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
fn only_fionbio() -> Result<SeccompRule, String> {
    // The request is an `unsigned int` to the kernel: the low 32 bits of the argument. (The
    // constant's type differs between C libraries, hence the cast.)
    #[allow(clippy::unnecessary_cast)]
    SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, libc::FIONBIO as u64)
        .and_then(|condition| SeccompRule::new(vec![condition]))
        .map_err(|e| format!("--seccomp: the ioctl rule: {e}"))
}

/// Installs `mode`'s filter on the calling thread; threads started afterwards inherit it. Call
/// after the sandbox and capability set-up, before the first thread starts. Where no filter is
/// built (an architecture seccompiler does not know), the default mode (`asked` false) serves
/// without one and says so; a mode asked for fails.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
pub(crate) fn install(mode: Seccomp, _asked: bool) -> Result<(), String> {
    match filter(mode)? {
        Some(program) => seccompiler::apply_filter(&program)
            .map_err(|e| format!("--seccomp: installing the filter: {e}")),
        None => Ok(()),
    }
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
    fn every_mode_but_none_compiles_a_filter() {
        assert!(filter(Seccomp::None).expect("none").is_none());
        for mode in [Seccomp::Kill, Seccomp::Log, Seccomp::Trap] {
            let program = filter(mode).expect("builds").expect("a program");
            assert!(program.len() > COMMON.len(), "{mode:?}: one test per syscall at least");
        }
    }

    /// Under `kill`, in a child: FIONBIO passes, any other ioctl (a terminal's window size
    /// here) ends the process with SIGSYS.
    #[test]
    fn ioctl_is_allowed_only_to_make_a_descriptor_non_blocking() {
        let program = filter(Seccomp::Kill).expect("builds").expect("a program");
        for (request, killed) in [(libc::FIONBIO, false), (libc::TIOCGWINSZ, true)] {
            // SAFETY: the child only makes system calls before it exits (no allocation, no
            // lock another thread of this test process could hold).
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork");
            if pid == 0 {
                let code = match seccompiler::apply_filter(&program) {
                    Ok(()) => {
                        let mut arg = [0u64; 2];
                        // SAFETY: `arg` has room for what either request writes (an int for
                        // FIONBIO is read, a winsize is 8 bytes).
                        unsafe { libc::ioctl(0, request as _, arg.as_mut_ptr()) };
                        0
                    }
                    _ => 2,
                };
                // SAFETY: ends the child without running the parent's exit handlers.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: waits for the child forked above.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            if killed {
                assert!(libc::WIFSIGNALED(status), "request {request:#x}: status {status:#x}");
                assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
            } else {
                assert!(libc::WIFEXITED(status), "request {request:#x}: status {status:#x}");
                assert_eq!(libc::WEXITSTATUS(status), 0);
            }
        }
    }
}
