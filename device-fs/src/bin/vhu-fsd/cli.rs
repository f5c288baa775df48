//! The `vhu-fsd` command line: virtiofsd's flags, parsed and checked.
//!
//! Every flag virtiofsd accepts that launchers pass in practice is accepted here with the same
//! spelling and defaults. A flag whose behaviour this daemon does not provide is refused with a
//! message that says so, never silently ignored. This module only parses; it starts nothing.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use vhu_device_fs::passthrough::{IdMap, IdMapError, IdRule, Negotiation, XattrMap};

use crate::ns_map::{parse_ns_map, NsMap};

/// Guest caching policy (`--cache`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum CachePolicy {
    /// Metadata and data cached for a short time (1 s); the default.
    Auto,
    /// Cache everything for a long time; the host does not change the share behind the guest.
    Always,
    /// Cache nothing: every access goes to the host.
    Never,
    /// Cache metadata, not data.
    Metadata,
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
    fn negotiation(flag: Option<Self>) -> Negotiation {
        match flag {
            None | Some(Self::Never) => Negotiation::Never,
            Some(Self::Auto) => Negotiation::Auto,
            Some(Self::Always) => Negotiation::Always,
        }
    }
}

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
    #[arg(long, value_enum, default_value_t = CachePolicy::Auto)]
    pub(crate) cache: CachePolicy,
    /// Worker threads per request queue; 0 processes requests on the queue's own thread.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) thread_pool_size: usize,
    /// Isolation mode.
    #[arg(long, value_enum)]
    pub(crate) sandbox: Option<Sandbox>,
    /// Action on a syscall outside the allow-list.
    #[arg(long, value_enum)]
    pub(crate) seccomp: Option<Seccomp>,
    /// Enable extended attributes.
    #[arg(long)]
    pub(crate) xattr: bool,
    /// Honour guest O_DIRECT on the host (by default it is dropped and the host page cache
    /// serves the I/O).
    #[arg(long)]
    pub(crate) allow_direct_io: bool,
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
    /// label the guest's LSM chose.
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
    /// Refuse every modifying operation.
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
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
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

/// Where to listen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Socket {
    /// Bind this path.
    Path(PathBuf),
    /// An inherited listening descriptor.
    Fd(i32),
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
    /// Entry and attribute timeout given to the guest.
    pub(crate) timeout: std::time::Duration,
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
    /// Forward flock locks.
    pub(crate) flock: bool,
    /// uid translation.
    pub(crate) uid_map: IdMap,
    /// gid translation.
    pub(crate) gid_map: IdMap,
    /// Log verbosity.
    pub(crate) log_level: LogLevel,
    /// RLIMIT_NOFILE to set.
    pub(crate) rlimit_nofile: Option<u64>,
    /// Request queues.
    pub(crate) num_request_queues: usize,
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
    /// The shared directory is not a directory.
    #[error("--shared-dir {0}: not an existing directory")]
    BadSharedDir(String),
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
        match self.sandbox {
            Some(Sandbox::Namespace) => {
                return not_supported("--sandbox namespace".into(), "run it with --sandbox none");
            }
            Some(Sandbox::Chroot) => {
                return not_supported("--sandbox chroot".into(), "run it with --sandbox none");
            }
            _ => {}
        }
        if let Some(mode @ (Seccomp::Kill | Seccomp::Log | Seccomp::Trap)) = self.seccomp {
            let option = format!("--seccomp {}", format!("{mode:?}").to_lowercase());
            return not_supported(option, "run it with --seccomp none");
        }
        if self.thread_pool_size != 0 {
            return not_supported(
                format!("--thread-pool-size {}", self.thread_pool_size),
                "requests are served on each queue's own thread; pass 0",
            );
        }
        if let Some(map) = self.uid_map.first().or(self.gid_map.first()) {
            let option = if self.uid_map.is_empty() { "--gid-map" } else { "--uid-map" };
            return not_supported(
                format!("{option} {map}"),
                "namespace id maps need --sandbox namespace, which vhu-fsd does not provide yet; \
                 --translate-uid/--translate-gid translate ids without a namespace",
            );
        }
        let posix_acl = Mode::negotiation(self.posix_acl);
        if posix_acl != Negotiation::Never
            && !(self.translate_uid.is_empty() && self.translate_gid.is_empty())
        {
            return Err(CliError::AclWithTranslation);
        }
        if self.readonly {
            return not_supported("--readonly".into(), "share a read-only mount instead");
        }
        let timeout = match self.cache {
            CachePolicy::Auto => std::time::Duration::from_secs(1),
            CachePolicy::Always => std::time::Duration::from_secs(86_400),
            CachePolicy::Never | CachePolicy::Metadata => {
                let option = format!("--cache {}", format!("{:?}", self.cache).to_lowercase());
                return not_supported(option, "use --cache auto or --cache always");
            }
        };
        let socket = match (&self.socket_path, &self.socket, self.fd) {
            (Some(path), _, _) | (None, Some(path), _) => Socket::Path(path.clone()),
            (None, None, Some(fd)) => Socket::Fd(fd),
            (None, None, None) => return Err(CliError::NoSocket),
        };
        let shared_dir = self.shared_dir.clone().ok_or(CliError::NoSharedDir)?;
        if !shared_dir.is_dir() {
            return Err(CliError::BadSharedDir(shared_dir.display().to_string()));
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
            timeout,
            xattr: self.xattr || self.xattrmap.is_some() || posix_acl != Negotiation::Never,
            posix_acl,
            security_label: Mode::negotiation(self.security_label),
            xattrmap: self.xattrmap.clone(),
            allow_direct_io: self.allow_direct_io,
            killpriv_v2: self.killpriv_v2 && !self.no_killpriv_v2,
            announce_submounts: !self.no_announce_submounts,
            posix_lock: !self.no_posix_lock,
            flock: !self.no_flock,
            uid_map: IdMap::new(&self.translate_uid).map_err(CliError::TranslateUid)?,
            gid_map: IdMap::new(&self.translate_gid).map_err(CliError::TranslateGid)?,
            log_level: if self.debug { LogLevel::Debug } else { self.log_level },
            rlimit_nofile: self.rlimit_nofile.filter(|n| *n != 0),
            num_request_queues: self.num_request_queues,
            persistent: self.persistent,
        })
    }
}

/// The vhost-user.json capabilities (`--print-capabilities`): a file-system back-end taking its
/// options separately. Migration is not listed: device state is not transferred.
pub(crate) const CAPABILITIES: &str = r#"{
  "type": "fs",
  "features": [
    "posix-acl-negotiation-mode",
    "security-label-negotiation-mode",
    "separate-options"
  ]
}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("vhu-fsd").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn virtiofsd_command_lines_parse() {
        let dir = std::env::temp_dir();
        let dir = dir.to_str().expect("utf-8 temp dir");
        let options = parse(&[
            "--socket-path=/tmp/vfs.sock",
            "--shared-dir",
            dir,
            "--cache=auto",
            "--sandbox",
            "none",
            "--seccomp=none",
            "--thread-pool-size=1",
            "--thread-pool-size=0",
            "--log-level",
            "debug",
        ]);
        let settings = options.settings().expect("supported");
        assert_eq!(settings.socket, Socket::Path("/tmp/vfs.sock".into()));
        assert_eq!(settings.log_level, LogLevel::Debug);
        assert_eq!(settings.num_request_queues, 1);
        assert!(!settings.persistent);
        assert!(!settings.allow_direct_io, "guest O_DIRECT is dropped by default");
        assert!(!settings.killpriv_v2, "KILLPRIV_V2 is off by default");
        let options = parse(&["--socket-path=/s", "--shared-dir", dir, "--allow-direct-io"]);
        assert!(options.settings().expect("supported").allow_direct_io);
        let options = parse(&["--socket-path=/s", "--shared-dir", dir, "--killpriv-v2"]);
        assert!(options.settings().expect("supported").killpriv_v2);
        let last = ["--socket-path=/s", "--shared-dir", dir, "--killpriv-v2", "--no-killpriv-v2"];
        assert!(!parse(&last).settings().expect("supported").killpriv_v2, "the last one wins");
        let last = ["--socket-path=/s", "--shared-dir", dir, "--no-killpriv-v2", "--killpriv-v2"];
        assert!(parse(&last).settings().expect("supported").killpriv_v2, "the last one wins");
        assert!(settings.announce_submounts, "submounts are announced by default");
        assert!(settings.posix_lock && settings.flock, "locks are forwarded by default");
        let mapped = ["--socket-path=/s", "--shared-dir", dir, "--xattrmap=:map::user.virtiofs.:"];
        let s = parse(&mapped).settings().expect("supported");
        assert!(s.xattr && s.xattrmap.is_some(), "--xattrmap implies --xattr");
        assert_eq!(settings.posix_acl, Negotiation::Never, "ACLs are off by default");
        for (flag, want) in
            [("--posix-acl", Negotiation::Always), ("--posix-acl=auto", Negotiation::Auto)]
        {
            let s = parse(&["--socket-path=/s", "--shared-dir", dir, flag]).settings().expect("ok");
            assert_eq!((s.posix_acl, s.xattr), (want, true), "{flag}");
        }
        let mixed =
            ["--socket-path=/s", "--shared-dir", dir, "--posix-acl", "--translate-uid=map:0:1:1"];
        assert_eq!(parse(&mixed).settings().err(), Some(CliError::AclWithTranslation));
        let bad = ["vhu-fsd", "--socket-path=/s", "--shared-dir", dir, "--xattrmap=:frob:all:::"];
        assert!(Options::try_parse_from(bad).is_err(), "a bad map is a usage error");
        let off = ["--socket-path=/s", "--shared-dir", dir, "--no-posix-lock", "--no-flock"];
        let s = parse(&off).settings().expect("supported");
        assert!(!s.posix_lock && !s.flock);
        let on = ["--socket-path=/s", "--shared-dir", dir, "--no-flock", "--flock"];
        assert!(parse(&on).settings().expect("supported").flock, "the last one wins");
        let off = ["--socket-path=/s", "--shared-dir", dir, "--no-announce-submounts"];
        assert!(!parse(&off).settings().expect("supported").announce_submounts);
        let on = [
            "--socket-path=/s",
            "--shared-dir",
            dir,
            "--no-announce-submounts",
            "--announce-submounts",
        ];
        assert!(parse(&on).settings().expect("supported").announce_submounts);
    }

    #[test]
    fn id_translation_rules_and_namespace_maps() {
        let dir = std::env::temp_dir();
        let dir = dir.to_str().expect("utf-8 temp dir");
        let base = ["--socket-path=/s", "--shared-dir", dir];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            Options::try_parse_from(std::iter::once("vhu-fsd").chain(args)).map(|o| o.settings())
        };
        let s = with(&[
            "--translate-uid",
            "map:1000:100000:10",
            "--translate-gid=squash-host:0:65534:1",
        ])
        .expect("parses")
        .expect("supported");
        assert_eq!(s.uid_map.to_host(1001), Ok(100001));
        assert_eq!(s.gid_map.to_guest(0), 65534);
        assert!(with(&["--translate-uid", "bogus:1:2:3"]).is_err(), "a bad rule is a usage error");
        let overlap = with(&["--translate-uid=guest:0:5:10", "--translate-uid=guest:5:50:1"]);
        assert!(matches!(overlap, Ok(Err(CliError::TranslateUid(IdMapError::Overlap(_))))));
        // Namespace maps parse, and are refused until the namespace sandbox exists.
        let ns =
            with(&["--uid-map=:0:100000:65536:", "--gid-map", ":0:100000:65536:"]).expect("parses");
        assert!(
            matches!(ns, Err(CliError::NotSupported { ref option, .. }) if option == "--uid-map :0:100000:65536:"),
            "{ns:?}"
        );
        assert!(with(&["--uid-map=0:1:2"]).is_err());
    }

    #[test]
    fn unsupported_options_are_refused_not_ignored() {
        let dir = std::env::temp_dir();
        let dir = dir.to_str().expect("utf-8 temp dir");
        for (extra, option) in [
            ("--sandbox=namespace", "--sandbox namespace"),
            ("--sandbox=chroot", "--sandbox chroot"),
            ("--seccomp=kill", "--seccomp kill"),
            ("--thread-pool-size=4", "--thread-pool-size 4"),
            ("--readonly", "--readonly"),
            ("--cache=never", "--cache never"),
        ] {
            let options = parse(&["--socket-path=/tmp/x", "--shared-dir", dir, extra]);
            match options.settings() {
                Err(CliError::NotSupported { option: got, .. }) => assert_eq!(got, option),
                other => panic!("{extra}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_and_bad_values() {
        assert_eq!(parse(&["--shared-dir=/"]).settings().err(), Some(CliError::NoSocket));
        assert_eq!(parse(&["--socket-path=/tmp/x"]).settings().err(), Some(CliError::NoSharedDir));
        assert!(matches!(
            parse(&["--socket-path=/tmp/x", "--shared-dir=/nonexistent/dir"]).settings(),
            Err(CliError::BadSharedDir(_))
        ));
        let long = "t".repeat(37);
        assert_eq!(
            parse(&["--socket-path=/tmp/x", "--shared-dir=/", "--tag", &long]).settings().err(),
            Some(CliError::TagTooLong(37))
        );
        assert!(Options::try_parse_from(["vhu-fsd", "--socket-path=/a", "--fd=3"]).is_err());
        assert_eq!(
            parse(&["--fd=3", "--shared-dir=/", "--num-request-queues=0"]).settings().err(),
            Some(CliError::NoRequestQueues)
        );
    }

    #[test]
    fn capabilities_are_json_for_a_file_system() {
        assert!(CAPABILITIES.contains(r#""type": "fs""#));
        assert!(CAPABILITIES.contains(r#""posix-acl-negotiation-mode""#), "--posix-acl=MODE works");
    }
}
