//! The values options take: caching, sandbox and seccomp modes, log levels, negotiation modes,
//! capability edits. Parsing only; what each value does lives with the code that does it.

use clap::ValueEnum;
use vhu_device_fs::device::dax::DAX_RANGE;
use vhu_device_fs::passthrough::{CachePolicy, Negotiation};

/// Guest caching policy (`--cache`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Cache {
    /// Metadata for one second, data until the file changes on the host; the default.
    Auto,
    /// Cache everything for a long time; the host does not change the share behind the guest.
    Always,
    /// Cache nothing: every access goes to the host.
    Never,
    /// Cache metadata, not data.
    Metadata,
}

impl Cache {
    /// The file system's policy.
    pub(crate) fn policy(self) -> CachePolicy {
        match self {
            Self::Auto => CachePolicy::Auto,
            Self::Always => CachePolicy::Always,
            Self::Never => CachePolicy::Never,
            Self::Metadata => CachePolicy::Metadata,
        }
    }
}

/// How guest-visible inodes are held (`--inode-file-handles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum InodeFileHandles {
    /// One `O_PATH` descriptor per inode.
    Never,
    /// File handles where the host allows, descriptors otherwise (virtiofsd's default); served
    /// as its fallback everywhere: vhu-fsd holds no inode by file handle.
    #[value(alias = "fallback")]
    Prefer,
    /// File handles only.
    Mandatory,
}

/// How a migration source describes inodes (`--migration-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum MigrationModeArg {
    /// By path in the share.
    #[value(name = "find-paths")]
    FindPaths,
    /// By host file handle (the destination needs CAP_DAC_READ_SEARCH).
    #[value(name = "file-handles")]
    FileHandles,
}

/// What a migration destination does with an inode it cannot open (`--migration-on-error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnErrorArg {
    /// Fail the migration.
    #[value(name = "abort")]
    Abort,
    /// Let the guest's uses of that inode fail with EIO.
    #[value(name = "guest-error")]
    GuestError,
}

/// Sandbox modes virtiofsd knows (`--sandbox`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Sandbox {
    /// Namespaces (virtiofsd's default).
    Namespace,
    /// chroot into the shared directory.
    Chroot,
    /// No isolation beyond the path checks every request gets.
    None,
}

/// Seccomp actions virtiofsd knows (`--seccomp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Seccomp {
    /// No filter.
    None,
    /// Kill on a syscall outside the allow-list (virtiofsd's default).
    Kill,
    /// Log it.
    Log,
    /// Send SIGSYS.
    Trap,
}

/// Log levels (`--log-level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum LogLevel {
    /// Nothing.
    Off,
    /// Errors.
    Error,
    /// Warnings and errors.
    Warn,
    /// Informational messages (the default).
    Info,
    /// Debugging detail.
    Debug,
    /// Every request.
    Trace,
}

/// `--posix-acl` and `--security-label` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Never negotiate it.
    Never,
    /// Negotiate it when the guest supports it.
    Auto,
    /// Require it: a guest without it fails to mount.
    Always,
}

impl Mode {
    pub(crate) fn negotiation(flag: Option<Self>) -> Negotiation {
        match flag {
            None | Some(Self::Never) => Negotiation::Never,
            Some(Self::Auto) => Negotiation::Auto,
            Some(Self::Always) => Negotiation::Always,
        }
    }
}

/// Capabilities a `--modcaps` edit may name: the Linux capability set, without the `cap_` prefix.
const CAPABILITY_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// One `--modcaps` edit: add or remove a capability (by its number) from the kept set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CapEdit {
    /// Add (`+`) or remove (`-`).
    pub(crate) add: bool,
    /// The capability number (`CAP_*`).
    pub(crate) cap: u8,
}

/// A `--modcaps` value: its edits in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CapEdits(pub(crate) Vec<CapEdit>);

/// Parses `+cap:-cap...` (virtiofsd's `--modcaps`): names with or without `cap_`, any case.
pub(crate) fn parse_modcaps(s: &str) -> Result<CapEdits, String> {
    s.split(':')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (add, name) = match item.as_bytes()[0] {
                b'+' => (true, &item[1..]),
                b'-' => (false, &item[1..]),
                _ => return Err(format!("'{item}' must start with + or -")),
            };
            let lower = name.to_ascii_lowercase();
            let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
            let cap = CAPABILITY_NAMES
                .iter()
                .position(|known| *known == bare)
                .ok_or_else(|| format!("'{name}' is not a capability name"))?;
            // The table has 41 entries, so the index fits in a u8.
            Ok(CapEdit { add, cap: cap as u8 })
        })
        .collect::<Result<_, _>>()
        .map(CapEdits)
}

/// Parses a `--dax-window` size: bytes, or a number with a K, M, G or T suffix (powers of 1024),
/// a multiple of 2 MiB; 0 offers no window.
pub(crate) fn parse_dax_window(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        Some(b'T') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let number: u64 = digits.parse().map_err(|_| format!("'{s}' is not a size (such as 8G)"))?;
    let size = number
        .checked_mul(1 << shift)
        .filter(|size| *size < 1 << 47)
        .ok_or_else(|| format!("'{s}' is larger than 128 TiB"))?;
    if size % DAX_RANGE != 0 {
        return Err(format!("'{s}' is not a multiple of 2 MiB, the guest's mapping unit"));
    }
    Ok(size)
}
