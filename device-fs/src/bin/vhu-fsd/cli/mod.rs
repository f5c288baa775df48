//! The `vhu-fsd` command line: virtiofsd's flags, parsed and checked.
//!
//! Every flag virtiofsd accepts that launchers pass in practice is accepted here with the same
//! spelling and defaults. A flag whose behaviour this daemon does not provide is refused with a
//! message that says so, never silently ignored. This module only parses; it starts nothing.

use std::path::PathBuf;

use clap::Parser;
use vhu_device_fs::passthrough::migration::{MigrationConfig, MigrationMode, OnError};
use vhu_device_fs::passthrough::{CachePolicy, IdMap, IdMapError, IdRule, Negotiation, XattrMap};

use crate::ns_map::{parse_ns_map, NsMap};

mod values;
pub(crate) use values::{
    parse_dax_window, parse_modcaps, Cache, CapEdit, CapEdits, InodeFileHandles, LogLevel,
    MigrationModeArg, Mode, OnErrorArg, Sandbox, Seccomp,
};

/// A virtio-fs back-end over vhost-user, command-line compatible with virtiofsd.
#[derive(Debug, Parser)]
#[command(name = "vhu-fsd", version, args_override_self = true)]
pub(crate) struct Options {
    /// vhost-user socket to listen on.
    #[arg(long, value_name = "PATH", conflicts_with = "fd")]
    pub(crate) socket_path: Option<PathBuf>,
    /// Deprecated alias of --socket-path.
    #[arg(long = "socket", value_name = "PATH", hide = true, conflicts_with_all = ["fd", "socket_path"])]
    pub(crate) socket: Option<PathBuf>,
    /// Inherited, already listening socket descriptor.
    #[arg(long, value_name = "FD")]
    pub(crate) fd: Option<i32>,
    /// Directory to share with the guest.
    #[arg(long, value_name = "DIR")]
    pub(crate) shared_dir: Option<PathBuf>,
    /// Tag advertised in the device config space (at most 36 bytes); only then is the CONFIG
    /// protocol feature offered (QEMU 7.1 to 8.0 crash when it is offered).
    #[arg(long, value_name = "TAG")]
    pub(crate) tag: Option<String>,
    /// Guest caching policy.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Cache::Auto)]
    pub(crate) cache: Cache,
    /// Do not offer READDIRPLUS (never offered with --cache never).
    #[arg(long, overrides_with = "readdirplus")]
    pub(crate) no_readdirplus: bool,
    /// Offer READDIRPLUS (the default; the -o form's `readdirplus`).
    #[arg(long, hide = true, overrides_with = "no_readdirplus")]
    pub(crate) readdirplus: bool,
    /// Offer the guest writeback caching: its page cache gathers writes (safe only when the
    /// guest is the share's only writer).
    #[arg(long, overrides_with = "no_writeback")]
    pub(crate) writeback: bool,
    /// No writeback caching (the default; the -o form's `no_writeback`).
    #[arg(long, hide = true, overrides_with = "writeback")]
    pub(crate) no_writeback: bool,
    /// With --cache never or metadata, let the guest map direct-I/O files shared.
    #[arg(long)]
    pub(crate) allow_mmap: bool,
    /// Keep guest O_NOATIME on host opens (dropped by default).
    #[arg(long)]
    pub(crate) preserve_noatime: bool,
    /// Group allowed to connect to the socket (name or number): the socket is created
    /// read-write for it.
    #[arg(long, value_name = "GROUP")]
    pub(crate) socket_group: Option<String>,
    /// Send the log to syslog instead of stderr.
    #[arg(long)]
    pub(crate) syslog: bool,
    /// How guest-visible inodes are held: `never` (an O_PATH descriptor each), `prefer`
    /// (virtiofsd's default: file handles where the host allows; vhu-fsd serves it as its
    /// fallback, a descriptor each), `mandatory` (refused: vhu-fsd holds no inode by handle).
    #[arg(long, value_enum, value_name = "WHEN")]
    pub(crate) inode_file_handles: Option<InodeFileHandles>,
    /// Edit the capabilities kept when running as root: `+cap:-cap...`.
    #[arg(long, value_name = "EDITS", value_parser = parse_modcaps)]
    pub(crate) modcaps: Option<CapEdits>,
    /// How inodes are described for live migration (find-paths or file-handles).
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) migration_mode: Option<MigrationModeArg>,
    /// What a migration destination does with an inode it cannot open (abort or guest-error).
    #[arg(long, value_enum, value_name = "ACTION")]
    pub(crate) migration_on_error: Option<OnErrorArg>,
    /// Send file handles with migrated paths; the destination compares them.
    #[arg(long)]
    pub(crate) migration_verify_handles: bool,
    /// Re-check every migrated path at switch-over (always done).
    #[arg(long)]
    pub(crate) migration_confirm_paths: bool,
    /// Threads handling each queue's requests; 0 or 1 handles them on the queue's own thread.
    /// Above 1024, the most requests a queue holds, it acts as 1024.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) thread_pool_size: usize,
    /// Offer a DAX window of SIZE bytes (K, M, G, T suffixes; a multiple of 2 MiB): the guest
    /// maps file ranges into it (mount -o dax) instead of copying them through the queues. The
    /// VMM must support shared-memory regions (SHMEM) and REPLY_ACK. 0, the default, offers
    /// none.
    #[arg(long, value_name = "SIZE", value_parser = parse_dax_window, default_value = "0")]
    pub(crate) dax_window: u64,
    /// Isolation mode: namespace (the default), chroot or none.
    #[arg(long, value_enum, ignore_case = true)]
    pub(crate) sandbox: Option<Sandbox>,
    /// Action on a syscall outside the allow-list: kill (the default), log, trap or none.
    #[arg(long, value_enum)]
    pub(crate) seccomp: Option<Seccomp>,
    /// Enable extended attributes.
    #[arg(long, overrides_with = "no_xattr")]
    pub(crate) xattr: bool,
    /// No extended attributes (the default; the -o form's `no_xattr`).
    #[arg(long, hide = true, overrides_with = "xattr")]
    pub(crate) no_xattr: bool,
    /// Honour guest O_DIRECT on the host (by default it is dropped and the host page cache
    /// serves the I/O).
    #[arg(long, overrides_with = "no_allow_direct_io")]
    pub(crate) allow_direct_io: bool,
    /// Drop guest O_DIRECT (the default; the -o form's `no_allow_direct_io`).
    #[arg(long, hide = true, overrides_with = "allow_direct_io")]
    pub(crate) no_allow_direct_io: bool,
    /// Negotiate FUSE_HANDLE_KILLPRIV_V2: the daemon clears set-id bits on write, truncation and
    /// chown for the guest.
    #[arg(long, overrides_with = "no_killpriv_v2")]
    pub(crate) killpriv_v2: bool,
    /// Do not negotiate FUSE_HANDLE_KILLPRIV_V2 (the default).
    #[arg(long, overrides_with = "killpriv_v2")]
    pub(crate) no_killpriv_v2: bool,
    /// POSIX ACLs: never (the default), auto, or always (the bare flag); implies --xattr and
    /// cannot be combined with --translate-uid/--translate-gid.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "always", value_name = "MODE")]
    pub(crate) posix_acl: Option<Mode>,
    /// Security labels: never (the default), auto, or always (the bare flag): new inodes get the
    /// label the guest's LSM chose; implies --xattr.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "always", value_name = "MODE")]
    pub(crate) security_label: Option<Mode>,
    /// Extended attribute name mapping rules (virtiofsd's syntax, e.g. `:map::user.virtiofs.:`);
    /// implies --xattr.
    #[arg(long, value_name = "RULES")]
    pub(crate) xattrmap: Option<XattrMap>,
    /// Translate uids between guest and host inside the daemon:
    /// `<type>:<source>:<target>:<count>` with type guest, host, squash-guest, squash-host or map,
    /// or `forbid-guest:<first>:<count>`. Repeatable.
    #[arg(long, value_name = "RULE")]
    pub(crate) translate_uid: Vec<IdRule>,
    /// Same as --translate-uid, for gids.
    #[arg(long, value_name = "RULE")]
    pub(crate) translate_gid: Vec<IdRule>,
    /// User-namespace uid map `:ns_uid:host_uid:count:` for --sandbox namespace. Repeatable.
    #[arg(long, value_name = "MAP", value_parser = parse_ns_map)]
    pub(crate) uid_map: Vec<NsMap>,
    /// User-namespace gid map `:ns_gid:host_gid:count:` for --sandbox namespace. Repeatable.
    #[arg(long, value_name = "MAP", value_parser = parse_ns_map)]
    pub(crate) gid_map: Vec<NsMap>,
    /// Forward guest POSIX locks to the host (the default where the host file system takes
    /// open-file-description locks).
    #[arg(long, overrides_with = "no_posix_lock")]
    pub(crate) posix_lock: bool,
    /// Keep guest POSIX locks local to the guest.
    #[arg(long, overrides_with = "posix_lock")]
    pub(crate) no_posix_lock: bool,
    /// Forward guest flock locks to the host (the default where the host file system takes them).
    #[arg(long, overrides_with = "no_flock")]
    pub(crate) flock: bool,
    /// Keep guest flock locks local to the guest.
    #[arg(long, overrides_with = "flock")]
    pub(crate) no_flock: bool,
    /// Refuse every change to the share (EROFS); the host may still update access times.
    #[arg(long)]
    pub(crate) readonly: bool,
    /// Report host mount points as submounts, each with its own st_dev in the guest (the
    /// default).
    #[arg(long, overrides_with = "no_announce_submounts")]
    pub(crate) announce_submounts: bool,
    /// Do not report host mount points as submounts: the guest sees one file system (inode
    /// numbers stay unique, and SYNCFS still flushes every host file system).
    #[arg(long, overrides_with = "announce_submounts")]
    pub(crate) no_announce_submounts: bool,
    /// Log verbosity.
    #[arg(long, value_enum, ignore_case = true, default_value_t = LogLevel::Info)]
    pub(crate) log_level: LogLevel,
    /// RLIMIT_NOFILE to set (soft = hard); 0 leaves it as it is.
    #[arg(long, value_name = "N")]
    pub(crate) rlimit_nofile: Option<u64>,
    /// Print the vhost-user.json capabilities and exit.
    #[arg(long)]
    pub(crate) print_capabilities: bool,
    /// Number of request queues (besides the high-priority queue).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) num_request_queues: usize,
    /// Serve the next front-end after one disconnects, instead of exiting.
    #[arg(long)]
    pub(crate) persistent: bool,
    /// Deprecated no-op (run in the foreground), accepted for compatibility.
    #[arg(short = 'f', hide = true)]
    pub(crate) foreground: bool,
    /// Deprecated: --log-level debug.
    #[arg(short = 'd', hide = true)]
    pub(crate) debug: bool,
}

/// Most pool threads per queue: a queue holds at most this many requests at once, so more
/// would never all have work (virtiofsd takes any number; a launcher's larger one acts alike).
const MAX_THREAD_POOL: usize = 1024;

/// Where to listen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Socket {
    /// Bind this path.
    Path(PathBuf),
    /// An inherited listening descriptor.
    Fd(i32),
}

impl std::fmt::Display for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(path) => write!(f, "{}", path.display()),
            Self::Fd(fd) => write!(f, "inherited descriptor {fd}"),
        }
    }
}

/// What the daemon will do, once the options are checked.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The socket.
    pub(crate) socket: Socket,
    /// The shared directory.
    pub(crate) shared_dir: PathBuf,
    /// Config-space tag.
    pub(crate) tag: Option<String>,
    /// Guest caching policy.
    pub(crate) cache: CachePolicy,
    /// Offer READDIRPLUS.
    pub(crate) readdirplus: bool,
    /// Offer writeback caching.
    pub(crate) writeback: bool,
    /// Offer shared mappings of direct-I/O files.
    pub(crate) allow_mmap: bool,
    /// Keep guest O_NOATIME.
    pub(crate) preserve_noatime: bool,
    /// Group given read-write access to the socket.
    pub(crate) socket_group: Option<u32>,
    /// Log to syslog.
    pub(crate) syslog: bool,
    /// Isolation.
    pub(crate) sandbox: Sandbox,
    /// Syscall filter.
    pub(crate) seccomp: Seccomp,
    /// `--seccomp` was given (not the default).
    pub(crate) seccomp_asked: bool,
    /// `--inode-file-handles=prefer` was given (inodes are held by descriptors all the same).
    pub(crate) prefer_file_handles: bool,
    /// Capability edits (root only).
    pub(crate) modcaps: Vec<CapEdit>,
    /// User-namespace uid ranges (not root).
    pub(crate) ns_uid_map: Vec<NsMap>,
    /// User-namespace gid ranges (not root).
    pub(crate) ns_gid_map: Vec<NsMap>,
    /// Serve extended attributes.
    pub(crate) xattr: bool,
    /// Pass guest O_DIRECT to the host.
    pub(crate) allow_direct_io: bool,
    /// Negotiate FUSE_HANDLE_KILLPRIV_V2.
    pub(crate) killpriv_v2: bool,
    /// Announce host mount points as submounts.
    pub(crate) announce_submounts: bool,
    /// xattr name mapping.
    pub(crate) xattrmap: Option<XattrMap>,
    /// POSIX ACL negotiation.
    pub(crate) posix_acl: Negotiation,
    /// Security label negotiation.
    pub(crate) security_label: Negotiation,
    /// Forward POSIX locks.
    pub(crate) posix_lock: bool,
    /// Live migration options.
    pub(crate) migration: MigrationConfig,
    /// Forward flock locks.
    pub(crate) flock: bool,
    /// uid translation.
    pub(crate) uid_map: IdMap,
    /// gid translation.
    pub(crate) gid_map: IdMap,
    /// Log verbosity.
    pub(crate) log_level: LogLevel,
    /// RLIMIT_NOFILE to set (0: leave it; none: raise it as virtiofsd does).
    pub(crate) rlimit_nofile: Option<u64>,
    /// Request queues.
    pub(crate) num_request_queues: usize,
    /// Pool threads per queue.
    pub(crate) thread_pool_size: usize,
    /// DAX window size in bytes (0: none).
    pub(crate) dax_window: u64,
    /// Refuse every change to the share.
    pub(crate) readonly: bool,
    /// Serve front-ends one after another.
    pub(crate) persistent: bool,
}

/// Options that cannot be served, with the reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CliError {
    /// Neither --socket-path nor --fd.
    #[error("one of --socket-path or --fd is required")]
    NoSocket,
    /// No --shared-dir.
    #[error("--shared-dir is required")]
    NoSharedDir,
    /// The shared directory cannot be used: the path and why (the system's error, or that it
    /// is not a directory).
    #[error("--shared-dir {0}: {1}")]
    BadSharedDir(String, String),
    /// A tag longer than the config space holds.
    #[error("--tag is {0} bytes long; the virtio-fs config space holds at most 36")]
    TagTooLong(usize),
    /// --num-request-queues 0.
    #[error("--num-request-queues must be at least 1")]
    NoRequestQueues,
    /// Too many queues for one device.
    #[error("--num-request-queues {0} exceeds 255")]
    TooManyQueues(usize),
    /// Conflicting --translate-uid rules.
    #[error("--translate-uid: {0}")]
    TranslateUid(IdMapError),
    /// Conflicting --translate-gid rules.
    #[error("--translate-gid: {0}")]
    TranslateGid(IdMapError),
    /// ACL entries name host ids, which a translation would leave untranslated.
    #[error("--posix-acl cannot be combined with --translate-uid or --translate-gid: ACL entries hold untranslated ids")]
    AclWithTranslation,
    /// --socket-group names no group.
    #[error("--socket-group {0}: no such group in /etc/group")]
    UnknownGroup(String),
    /// The system's group lookup failed (its name service unreachable, say).
    #[error("--socket-group {0}: looking the group up failed: {1}")]
    GroupLookup(String, String),
    /// --socket-group with an inherited socket, which the daemon does not create.
    #[error("--socket-group applies to a socket the daemon creates (--socket-path), not to --fd")]
    GroupWithFd,
    /// A namespace id map without the namespace sandbox.
    #[error("{0} maps ids of the user namespace that --sandbox namespace creates; it cannot be used with another sandbox")]
    MapWithoutNamespace(String),
    /// An option this daemon accepts but does not implement.
    #[error("{option} is not supported by vhu-fsd: {hint}")]
    NotSupported {
        /// The option as given.
        option: String,
        /// What to do instead.
        hint: &'static str,
    },
}

impl Options {
    /// Checks the options and resolves them into settings.
    pub(crate) fn settings(&self) -> Result<Settings, CliError> {
        let not_supported = |option: String, hint| Err(CliError::NotSupported { option, hint });
        let sandbox = self.sandbox.unwrap_or(Sandbox::Namespace);
        if let Some(map) = self.uid_map.first().or(self.gid_map.first()) {
            if sandbox != Sandbox::Namespace {
                let option = if self.uid_map.is_empty() { "--gid-map" } else { "--uid-map" };
                return Err(CliError::MapWithoutNamespace(format!("{option} {map}")));
            }
        }
        let posix_acl = Mode::negotiation(self.posix_acl);
        let security_label = Mode::negotiation(self.security_label);
        if posix_acl != Negotiation::Never
            && !(self.translate_uid.is_empty() && self.translate_gid.is_empty())
        {
            return Err(CliError::AclWithTranslation);
        }
        if self.inode_file_handles == Some(InodeFileHandles::Mandatory) {
            return not_supported(
                "--inode-file-handles mandatory".into(),
                "inodes are held by O_PATH descriptors; pass never or prefer",
            );
        }
        let socket = match (&self.socket_path, &self.socket, self.fd) {
            (Some(path), _, _) | (None, Some(path), _) => Socket::Path(path.clone()),
            (None, None, Some(fd)) => Socket::Fd(fd),
            (None, None, None) => return Err(CliError::NoSocket),
        };
        let socket_group = match (&self.socket_group, &socket) {
            (None, _) => None,
            (Some(_), Socket::Fd(_)) => return Err(CliError::GroupWithFd),
            (Some(group), Socket::Path(_)) => Some(group_id(group)?),
        };
        let given = self.shared_dir.clone().ok_or(CliError::NoSharedDir)?;
        // Absolute from here on: a sandbox changes the working directory.
        let bad = |why: String| CliError::BadSharedDir(given.display().to_string(), why);
        let shared_dir = std::fs::canonicalize(&given).map_err(|e| bad(e.to_string()))?;
        match std::fs::metadata(&shared_dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(bad("not a directory".into())),
            Err(e) => return Err(bad(e.to_string())),
        }
        if let Some(tag) = &self.tag {
            if tag.len() > 36 {
                return Err(CliError::TagTooLong(tag.len()));
            }
        }
        match self.num_request_queues {
            0 => return Err(CliError::NoRequestQueues),
            n if n > 255 => return Err(CliError::TooManyQueues(n)),
            _ => {}
        }
        Ok(Settings {
            socket,
            shared_dir,
            tag: self.tag.clone(),
            cache: self.cache.policy(),
            readdirplus: !self.no_readdirplus,
            writeback: self.writeback,
            allow_mmap: self.allow_mmap,
            preserve_noatime: self.preserve_noatime,
            socket_group,
            syslog: self.syslog,
            sandbox,
            seccomp: self.seccomp.unwrap_or(Seccomp::Kill),
            seccomp_asked: self.seccomp.is_some(),
            prefer_file_handles: self.inode_file_handles == Some(InodeFileHandles::Prefer),
            modcaps: self.modcaps.clone().map(|edits| edits.0).unwrap_or_default(),
            ns_uid_map: self.uid_map.clone(),
            ns_gid_map: self.gid_map.clone(),
            // As virtiofsd: ACLs and labels are xattrs, so either turns xattrs on.
            xattr: self.xattr
                || self.xattrmap.is_some()
                || posix_acl != Negotiation::Never
                || security_label != Negotiation::Never,
            posix_acl,
            security_label,
            xattrmap: self.xattrmap.clone(),
            allow_direct_io: self.allow_direct_io,
            killpriv_v2: self.killpriv_v2 && !self.no_killpriv_v2,
            announce_submounts: !self.no_announce_submounts,
            posix_lock: !self.no_posix_lock,
            flock: !self.no_flock,
            uid_map: IdMap::new(&self.translate_uid).map_err(CliError::TranslateUid)?,
            gid_map: IdMap::new(&self.translate_gid).map_err(CliError::TranslateGid)?,
            log_level: if self.debug { LogLevel::Debug } else { self.log_level },
            rlimit_nofile: self.rlimit_nofile,
            num_request_queues: self.num_request_queues,
            thread_pool_size: self.thread_pool_size.min(MAX_THREAD_POOL),
            dax_window: self.dax_window,
            readonly: self.readonly,
            persistent: self.persistent,
            migration: MigrationConfig {
                mode: match self.migration_mode {
                    Some(MigrationModeArg::FileHandles) => MigrationMode::FileHandles,
                    Some(MigrationModeArg::FindPaths) | None => MigrationMode::FindPaths,
                },
                on_error: match self.migration_on_error {
                    Some(OnErrorArg::GuestError) => OnError::GuestError,
                    Some(OnErrorArg::Abort) | None => OnError::Abort,
                },
                verify_handles: self.migration_verify_handles,
                confirm_paths: self.migration_confirm_paths,
            },
        })
    }
}

/// A group's id: a number, or a name looked up as the system does (`getgrnam_r`: `/etc/group`,
/// or LDAP or SSSD where the system's name service switch says so).
fn group_id(group: &str) -> Result<u32, CliError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let unknown = || CliError::UnknownGroup(group.into());
    let name = std::ffi::CString::new(group).map_err(|_| unknown())?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut entry = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; `entry`, `found` and `buf` (with its length) are
        // writable for the whole call, and getgrnam_r writes nowhere else.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                entry.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 22 {
            let longer = buf.len() * 2;
            buf.resize(longer, 0);
            continue;
        }
        // getgrnam_r(3): some name services say "no such group" with these instead of a
        // null result.
        let not_found = [libc::ENOENT, libc::ESRCH, libc::EBADF, libc::EPERM].contains(&rc);
        if rc != 0 && !not_found {
            let why = std::io::Error::from_raw_os_error(rc).to_string();
            return Err(CliError::GroupLookup(group.into(), why));
        }
        if not_found || found.is_null() {
            return Err(unknown());
        }
        // SAFETY: getgrnam_r returned 0 with a result: it filled `entry`.
        return Ok(unsafe { entry.assume_init() }.gr_gid);
    }
}

/// The vhost-user.json capabilities (`--print-capabilities`). `migrate-precopy`: device state
/// and dirty logging let QEMU migrate the guest. `separate-options` is not listed: given it,
/// libvirt refuses a domain's `<lock posix=… flock=…>` settings (virtiofsd has no host locks),
/// while without it libvirt passes them in the `-o` form, which vhu-fsd takes in full and
/// honours.
pub(crate) const CAPABILITIES: &str = r#"{
  "type": "fs",
  "features": [
    "migrate-precopy",
    "posix-acl-negotiation-mode",
    "security-label-negotiation-mode"
  ]
}"#;

#[cfg(test)]
mod tests;
