//! `vhu-fsd`: a virtio-fs back-end daemon that QEMU connects to, command-line compatible with
//! virtiofsd.
//!
//! It listens on a vhost-user socket, serves one front-end at a time through the std transport,
//! and exits when that front-end disconnects (with `--persistent` it serves the next one from a
//! clean state). SIGTERM and SIGINT end it cleanly, removing the socket it created. It owns no
//! protocol or file-system logic: the options are checked in `cli`, the device is the library's.

mod caps;
mod cli;
mod compat;
mod inherited;
mod log_filter;
mod logging;
mod ns_map;
mod sandbox;
mod seccomp;
mod signals;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use cli::{Options, Sandbox, Settings, Socket};
use log::{info, warn};
use vhu_device_fs::device::{FsConfig, FsDevice};
use vhu_device_fs::fuse::{Server, ServerConfig};
use vhu_device_fs::passthrough::migration::MigrationMode;
use vhu_device_fs::passthrough::{Config, Credentials, PassthroughFs};
use vhu_transport_std::{Daemon, Disconnect, Listen, SocketFile};

fn main() -> ExitCode {
    // Before anything opens a descriptor (a name service may, to resolve --socket-group).
    let passed = inherited::passed();
    let args = match compat::expand(std::env::args_os()) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("vhu-fsd: {error}");
            return ExitCode::from(2);
        }
    };
    let options = Options::parse_from(args);
    if options.print_capabilities {
        println!("{}", cli::CAPABILITIES);
        return ExitCode::SUCCESS;
    }
    let settings = match options.settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("vhu-fsd: {error}");
            return ExitCode::from(2);
        }
    };
    // Before the log opens a descriptor of its own; reported once it is open.
    let kept = match &settings.socket {
        Socket::Fd(fd) => Some(*fd),
        Socket::Path(_) => None,
    };
    let inherited = kept.map_or(Ok(()), inherited::check_open);
    let to_syslog = logging::init(settings.log_level, settings.syslog);
    let leaked = match passed {
        Ok(passed) => inherited::leaked(passed, kept),
        Err(e) => {
            warn!("/proc/self/fd: {e}: descriptors inherited by mistake stay open in the sandbox");
            Vec::new()
        }
    };
    match inherited.and_then(|()| run(settings, &leaked)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // A launcher that asked for syslog (Kata does) reads why the daemon stopped there.
            if to_syslog {
                log::error!("{message}");
            }
            eprintln!("vhu-fsd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up and serves; `leaked` are the descriptors the launcher left open besides `--fd`.
fn run(settings: Settings, leaked: &[i32]) -> Result<(), String> {
    raise_open_file_limit(settings.rlimit_nofile)?;
    // The guest applied its own umask to the modes it sends; do not apply ours on top.
    rustix::process::umask(rustix::fs::Mode::empty());
    let as_root = sandbox::started_as_root();
    // The daemon's uid as the host sees it (inside a user namespace mapped by --uid-map it
    // may read as another).
    let host_uid = rustix::process::geteuid().as_raw();
    // A user's daemon holds capabilities in its own user namespace (the namespace sandbox), or
    // from file capabilities of its binary.
    let outside_namespace = !as_root && settings.sandbox != Sandbox::Namespace;
    let file_caps = outside_namespace && caps::holds_any();
    if outside_namespace && !file_caps && !settings.modcaps.is_empty() {
        warn!(
            "--modcaps has no effect: a daemon started as a user holds capabilities only in the \
             namespace sandbox or from file capabilities of its binary"
        );
    }
    if as_root && !(settings.ns_uid_map.is_empty() && settings.ns_gid_map.is_empty()) {
        return Err("--uid-map/--gid-map map the user namespace of a daemon started as a \
                    regular user; as root, guest ids reach the host as they are"
            .into());
    }
    if one_id(&settings.ns_uid_map) != one_id(&settings.ns_gid_map) {
        // Switching to a guest user sets both ids and the groups: with one side a single id
        // (setgroups denied), every CREATE, MKDIR and MKNOD as a guest user would fail with
        // EPERM. libvirt passes such maps when the user's primary group has no /etc/subgid
        // range of its own: serve, creating every file as the daemon's user.
        warn!(
            "--uid-map and --gid-map do not both map several ids: files are created as the \
             daemon's user, whichever guest user asks (give both several ids to create them \
             as each guest user)"
        );
    }
    // Found now, from the host's /proc: once sandboxed, /proc and /sys name the share's files.
    vhu_transport_std::spin::cpus();
    // A termination request waits until a handler can act on it (removing the socket).
    signals::hold_termination(true);
    // The socket first: its path is outside the share, out of reach once sandboxed.
    let (listener, socket) = listen(&settings)?;
    let (socket, proc_fd) = match settings.sandbox {
        Sandbox::Namespace => {
            let maps = (!as_root).then_some(sandbox::UserMaps {
                uid: &settings.ns_uid_map,
                gid: &settings.ns_gid_map,
            });
            (None, Some(sandbox::enter_namespaces(&settings.shared_dir, maps, socket, leaked)?))
        }
        Sandbox::Chroot | Sandbox::None => (socket.map(Arc::new), None),
    };
    // Made in the sandbox's user namespace, if any: whether credentials switch depends on it.
    let mut config = passthrough_config(&settings, as_root);
    if let Some(proc_fd) = proc_fd {
        config.proc_fd = proc_fd.into();
    }
    let fs = PassthroughFs::new(config)
        .map_err(|e| format!("--shared-dir {}: {e}", settings.shared_dir.display()))?;
    match settings.sandbox {
        Sandbox::Namespace => sandbox::pivot_into(&settings.shared_dir)?,
        Sandbox::Chroot => sandbox::chroot_into(&settings.shared_dir)?,
        Sandbox::None => {}
    }
    // Root, a user that is root of the user namespace it just entered, or a user's binary
    // with file capabilities: each holds capabilities to reduce.
    if as_root || settings.sandbox == Sandbox::Namespace || file_caps {
        let by_handle = settings.migration.mode == MigrationMode::FileHandles;
        let keep = caps::kept(&settings.modcaps, by_handle);
        caps::reduce(keep, caps::asked(&settings.modcaps), !file_caps)?;
    }
    seccomp::install(settings.seccomp, settings.seccomp_asked)?;
    report_limits(&fs, &settings, host_uid);
    // Limits for the smallest queue QEMU configures by default (128 entries).
    let limits = ServerConfig::for_queue_size(128);
    let server = Server::new(fs, ServerConfig { read_only: settings.readonly, ..limits });
    let device = FsDevice::new(
        FsConfig {
            num_request_queues: settings.num_request_queues,
            tag: settings.tag.clone(),
            thread_pool_size: settings.thread_pool_size,
            dax_window: settings.dax_window,
        },
        server,
    );
    let mut daemon = Daemon::new(device, Listen::Listener(listener)).map_err(|e| e.to_string())?;
    signals::exit_cleanly_on_termination(socket.clone())?;
    // Launchers wait for this line on stderr before they start the VMM, some matching
    // virtiofsd's words to the last dot: the socket goes on a line of its own.
    info!("Listening on {}", settings.socket);
    info!("Waiting for vhost-user socket connection...");
    let result = loop {
        match daemon.serve_one() {
            Ok(Disconnect::HungUp) => info!("front-end disconnected"),
            Ok(Disconnect::Closed(error)) => warn!("connection closed: {error}"),
            Ok(other) => info!("connection ended: {other:?}"),
            Err(error) => break Err(error.to_string()),
        }
        if !settings.persistent {
            break Ok(());
        }
    };
    if let Some(socket) = socket {
        socket.remove();
    }
    result
}

/// RLIMIT_NOFILE: `--rlimit-nofile N` sets it (0 leaves it); by default, as virtiofsd, the
/// smaller of one million and the kernel's `nr_open`, unless the soft limit is already higher.
/// Each inode the guest looks up holds a descriptor.
fn raise_open_file_limit(asked: Option<u64>) -> Result<(), String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    if asked == Some(0) {
        return Ok(());
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(limit) = asked {
        if let Some(most) = nr_open.filter(|most| limit > *most) {
            return Err(format!(
                "--rlimit-nofile {limit}: the kernel allows at most {most} (fs.nr_open)"
            ));
        }
        let rlimit = Rlimit { current: Some(limit), maximum: Some(limit) };
        return setrlimit(Resource::Nofile, rlimit)
            .map_err(|e| format!("--rlimit-nofile {limit}: {e}"));
    }
    let nr_open = nr_open.unwrap_or(1 << 20);
    let wanted = nr_open.min(1_000_000);
    let current = getrlimit(Resource::Nofile);
    if current.current.is_none_or(|soft| soft >= wanted) {
        return Ok(());
    }
    let target = Rlimit { current: Some(wanted), maximum: Some(wanted) };
    if setrlimit(Resource::Nofile, target).is_ok() {
        return Ok(());
    }
    // Not allowed past the hard limit: up to it, then.
    let raised = Rlimit { current: current.maximum, ..current };
    if current.current != current.maximum && setrlimit(Resource::Nofile, raised).is_err() {
        warn!("could not raise the open-file limit");
    }
    Ok(())
}

/// The listening socket: bound at `--socket-path` (owner-only, or the `--socket-group`'s too),
/// or the inherited `--fd`.
fn listen(settings: &Settings) -> Result<(UnixListener, Option<SocketFile>), String> {
    match &settings.socket {
        Socket::Path(path) => {
            // Bound owner-only; with --socket-group, the group gets read-write before the
            // socket appears.
            let group = settings.socket_group.map(rustix::process::Gid::from_raw);
            let (listener, file) =
                SocketFile::bind_for(path, group).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        format!("--socket-path {}: a running daemon serves it", path.display())
                    }
                    _ if group.is_some() => {
                        format!("--socket-path {} with --socket-group: {e}", path.display())
                    }
                    _ => format!("--socket-path {}: {e}", path.display()),
                })?;
            Ok((listener, Some(file)))
        }
        Socket::Fd(fd) => {
            inherited::check_open(*fd)?;
            // SAFETY: the descriptor is open (checked above, and before the daemon opened any
            // of its own, so it is the inherited one), is not stdio, and was inherited for this
            // daemon alone: nothing else in the process owns or closes it.
            let listener = UnixListener::from(unsafe { OwnedFd::from_raw_fd(*fd) });
            listener.local_addr().map_err(|e| format!("--fd {fd}: not a Unix socket: {e}"))?;
            use rustix::net::{sockopt, SocketType};
            let stream = sockopt::socket_type(&listener).is_ok_and(|t| t == SocketType::STREAM);
            if !stream || !sockopt::socket_acceptconn(&listener).unwrap_or(false) {
                return Err(format!("--fd {fd}: not a listening stream socket"));
            }
            rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::CLOEXEC)
                .map_err(|e| format!("--fd {fd}: {e}"))?;
            Ok((listener, None))
        }
    }
}

/// Whether a user namespace map (`--uid-map` or `--gid-map`; none is the daemon's own id)
/// maps a single id.
fn one_id(map: &[ns_map::NsMap]) -> bool {
    match map {
        [] => true,
        [only] => only.count == 1,
        _ => false,
    }
}

/// The file system's configuration from the settings.
fn passthrough_config(settings: &Settings, as_root: bool) -> Config {
    let mut config = Config::new(&settings.shared_dir);
    let several = !one_id(&settings.ns_uid_map) && !one_id(&settings.ns_gid_map);
    if !as_root && settings.sandbox == Sandbox::Namespace && !several {
        // A namespace that maps one uid or one gid: other guest users have nothing to become.
        config.credentials = Credentials::disabled();
    }
    config.xattr = settings.xattr;
    config.xattrmap = settings.xattrmap.clone();
    config.posix_acl = settings.posix_acl;
    config.security_label = settings.security_label;
    config.allow_direct_io = settings.allow_direct_io;
    config.killpriv_v2 = settings.killpriv_v2;
    config.announce_submounts = settings.announce_submounts;
    config.posix_locks = settings.posix_lock;
    config.flock = settings.flock;
    config.uid_map = settings.uid_map.clone();
    config.gid_map = settings.gid_map.clone();
    config.readdirplus = settings.readdirplus;
    config.cache(settings.cache);
    config.writeback = settings.writeback;
    config.allow_mmap = settings.allow_mmap;
    config.preserve_noatime = settings.preserve_noatime;
    config.migration = settings.migration;
    config
}

/// Says at start-up what the guest will not get from this host.
fn report_limits(fs: &PassthroughFs, settings: &Settings, uid: u32) {
    if settings.prefer_file_handles {
        info!(
            "--inode-file-handles=prefer: inodes are held by O_PATH descriptors, the fallback \
             that option allows (file handles are not used)"
        );
    }
    let (posix, flock) = fs.locking();
    for (asked, got, kind) in
        [(settings.posix_lock, posix, "POSIX"), (settings.flock, flock, "flock")]
    {
        if asked && !got {
            warn!(
                "the shared directory's file system refuses {kind} locks: guest {kind} locks \
                 stay local to the guest"
            );
        }
    }
    if !fs.credentials().is_enabled() {
        warn!(
            "not running as root (uid {uid}): every file the guest creates is owned by uid \
             {uid}, whichever guest user creates it"
        );
    }
}
