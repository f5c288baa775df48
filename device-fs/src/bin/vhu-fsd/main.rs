//! `vhu-fsd`: a virtio-fs back-end daemon that QEMU connects to, command-line compatible with
//! virtiofsd.
//!
//! It listens on a vhost-user socket, serves one front-end at a time through the std transport,
//! and exits when that front-end disconnects (with `--persistent` it serves the next one from a
//! clean state). SIGTERM and SIGINT end it cleanly, removing the socket it created. It owns no
//! protocol or file-system logic: the options are checked in `cli`, the device is the library's.

mod cli;
mod compat;
mod logging;
mod ns_map;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

use clap::Parser;
use cli::{Options, Settings, Socket};
use log::{info, warn};
use vhu_device_fs::device::{FsConfig, FsDevice};
use vhu_device_fs::fuse::{Server, ServerConfig};
use vhu_device_fs::passthrough::{Config, PassthroughFs};
use vhu_transport_std::{Daemon, Disconnect, Listen};

fn main() -> ExitCode {
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
    logging::init(settings.log_level, settings.syslog);
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vhu-fsd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings) -> Result<(), String> {
    if let Some(limit) = settings.rlimit_nofile {
        let rlimit = rustix::process::Rlimit { current: Some(limit), maximum: Some(limit) };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, rlimit)
            .map_err(|e| format!("--rlimit-nofile {limit}: {e}"))?;
    } else {
        // Each inode the guest looks up holds a descriptor: raise the soft limit to the hard one.
        let current = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        if current.current != current.maximum {
            let raised = rustix::process::Rlimit { current: current.maximum, ..current };
            if rustix::process::setrlimit(rustix::process::Resource::Nofile, raised).is_err() {
                warn!("could not raise the open-file limit");
            }
        }
    }
    // The guest applied its own umask to the modes it sends; do not apply ours on top.
    rustix::process::umask(rustix::fs::Mode::empty());
    let mut config = Config::new(&settings.shared_dir);
    config.xattr = settings.xattr;
    config.xattrmap = settings.xattrmap;
    config.posix_acl = settings.posix_acl;
    config.security_label = settings.security_label;
    config.allow_direct_io = settings.allow_direct_io;
    config.killpriv_v2 = settings.killpriv_v2;
    config.announce_submounts = settings.announce_submounts;
    config.posix_locks = settings.posix_lock;
    config.flock = settings.flock;
    config.uid_map = settings.uid_map;
    config.gid_map = settings.gid_map;
    config.readdirplus = settings.readdirplus;
    config.cache(settings.cache);
    config.writeback = settings.writeback;
    config.allow_mmap = settings.allow_mmap;
    config.preserve_noatime = settings.preserve_noatime;
    let fs = PassthroughFs::new(config)
        .map_err(|e| format!("--shared-dir {}: {e}", settings.shared_dir.display()))?;
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
        let uid = rustix::process::geteuid().as_raw();
        warn!(
            "not running as root (uid {uid}): every file the guest creates is owned by uid \
             {uid}, whichever guest user creates it"
        );
    }
    // Limits for the smallest queue QEMU configures by default (128 entries).
    let server = Server::new(fs, ServerConfig::for_queue_size(128));
    let device = FsDevice::new(
        FsConfig { num_request_queues: settings.num_request_queues, tag: settings.tag.clone() },
        server,
    );
    let listen = match &settings.socket {
        Socket::Path(path) => Listen::Path(path.clone()),
        Socket::Fd(fd) => {
            let open = *fd > 2 && std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok();
            if !open {
                return Err(format!("--fd {fd}: not an open descriptor other than stdio"));
            }
            // SAFETY: the descriptor is open (checked above), is not stdio, and was inherited for
            // this daemon alone: nothing else in the process owns or closes it.
            Listen::Fd(unsafe { OwnedFd::from_raw_fd(*fd) })
        }
    };
    let mut daemon = Daemon::new(device, listen).map_err(|e| e.to_string())?;
    if let (Some(gid), Some(path)) = (settings.socket_group, daemon.path()) {
        // The socket was bound owner-only; the group gets read-write once it owns the file.
        rustix::fs::chown(path, None, Some(rustix::process::Gid::from_raw(gid)))
            .and_then(|()| rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o660)))
            .map_err(|e| format!("--socket-group: {}: {e}", path.display()))?;
    }
    let bound: Vec<_> =
        daemon.path().map(ToOwned::to_owned).into_iter().chain(daemon.pid_file()).collect();
    signals::exit_cleanly_on_termination(bound)?;
    info!("waiting for a front-end on {:?}", settings.socket);
    loop {
        match daemon.serve_one().map_err(|e| e.to_string())? {
            Disconnect::HungUp => info!("front-end disconnected"),
            Disconnect::Closed(error) => warn!("connection closed: {error}"),
            other => info!("connection ended: {other:?}"),
        }
        if !settings.persistent {
            return Ok(());
        }
    }
}

mod signals {
    //! SIGTERM/SIGINT: remove the socket the daemon bound and its pid file, then exit with
    //! status 0.

    use std::path::PathBuf;

    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    pub(super) fn exit_cleanly_on_termination(bound: Vec<PathBuf>) -> Result<(), String> {
        let mut signals = Signals::new([SIGTERM, SIGINT])
            .map_err(|e| format!("installing signal handlers: {e}"))?;
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                for path in &bound {
                    let _ = std::fs::remove_file(path);
                }
                std::process::exit(0);
            }
        });
        Ok(())
    }
}
