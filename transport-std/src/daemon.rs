//! A blocking back-end daemon: a listening Unix socket and one [`Device`], serving one front-end
//! at a time.
//!
//! Each accepted connection gets a fresh `Backend` and is served by the driver
//! ([`Connection`]) until it ends; ending it stops every queue, resets the device, unmaps every
//! region and closes every descriptor of the session. The daemon then accepts the next
//! connection. A connection that misbehaves only ends itself.
//!
//! This module must not implement protocol behaviour: it only owns the listener and the device.

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vhu_core::backend::SpecError;

use crate::device::Device;
use crate::driver::{Connection, DriverError};

/// Where the daemon listens.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listen {
    /// Bind a new socket at this path (it must not exist yet). The daemon removes it when
    /// dropped.
    Path(PathBuf),
    /// An inherited descriptor of a bound, listening Unix stream socket.
    Fd(OwnedFd),
    /// A listener the caller set up.
    Listener(UnixListener),
}

/// The daemon could not start or go on accepting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The device's spec cannot be served.
    #[error("the device spec is invalid: {0}")]
    Spec(#[from] SpecError),
    /// Binding the socket path failed.
    #[error("binding {}: {source}", path.display())]
    Bind {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The inherited descriptor is not a usable Unix stream listener.
    #[error("the inherited descriptor is not a listening Unix socket: {0}")]
    Listener(#[source] std::io::Error),
    /// `accept` failed with an error that retrying would not fix.
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] std::io::Error),
}

/// How a served connection ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Disconnect {
    /// The front-end hung up between messages.
    HungUp,
    /// The connection was closed because of this error.
    Closed(DriverError),
}

/// A back-end daemon; see the module docs.
#[derive(Debug)]
pub struct Daemon<D: Device> {
    device: D,
    listener: UnixListener,
    bound: Option<BoundPath>,
}

impl<D: Device> Daemon<D> {
    /// A daemon for `device` listening as `listen` says. The device's spec is checked here.
    pub fn new(device: D, listen: Listen) -> Result<Self, DaemonError> {
        device.spec().validate()?;
        let (listener, bound) = match listen {
            Listen::Path(path) => match bind_owner_only(&path) {
                Ok((listener, lock)) => (listener, Some(BoundPath { path, _lock: lock })),
                Err(source) => return Err(DaemonError::Bind { path, source }),
            },
            Listen::Fd(fd) => {
                let listener = UnixListener::from(fd);
                listener.local_addr().map_err(DaemonError::Listener)?;
                (listener, None)
            }
            Listen::Listener(listener) => (listener, None),
        };
        listener.set_nonblocking(false).map_err(DaemonError::Listener)?;
        Ok(Self { device, listener, bound })
    }

    /// The socket path, when the daemon bound it.
    pub fn path(&self) -> Option<&Path> {
        self.bound.as_ref().map(|b| b.path.as_path())
    }

    /// The pid file locked next to the socket path (`<path>.pid`), when the daemon bound it.
    pub fn pid_file(&self) -> Option<PathBuf> {
        self.bound.as_ref().map(|b| pid_path(&b.path))
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably (between connections).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Accepts one front-end and serves it until it disconnects.
    pub fn serve_one(&mut self) -> Result<Disconnect, DaemonError> {
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) => return Err(DaemonError::Accept(error)),
            }
        };
        Ok(self.serve_stream(stream))
    }

    /// Serves front-ends one after the other until `accept` fails. `on_disconnect` sees how each
    /// connection ended and returns whether to accept the next one.
    pub fn serve(
        &mut self,
        mut on_disconnect: impl FnMut(&Disconnect) -> bool,
    ) -> Result<(), DaemonError> {
        loop {
            let end = self.serve_one()?;
            if !on_disconnect(&end) {
                return Ok(());
            }
        }
    }

    /// Serves an already connected stream until it disconnects.
    pub fn serve_stream(&mut self, stream: UnixStream) -> Disconnect {
        if let Err(error) = stream.set_nonblocking(false) {
            return Disconnect::Closed(DriverError::Setup(error));
        }
        let result = Connection::new(&mut self.device, stream).and_then(Connection::run);
        match result {
            Ok(()) => Disconnect::HungUp,
            Err(error) => Disconnect::Closed(error),
        }
    }

    /// The device, once the daemon is no longer needed (the socket path is removed).
    pub fn into_device(self) -> D {
        self.device
    }
}

/// Binds `path` so that only the daemon's user may connect (mode 0600, whatever the process
/// umask): any local user who can connect acts as the VMM, with the share in reach.
///
/// A live daemon holds an exclusive lock on `<path>.pid` (virtiofsd's convention, with its pid
/// inside): when that lock is taken the socket is in use (AddrInUse) and left alone; when it is
/// free, a socket file at `path` was left by a daemon that died and is replaced. Anything at
/// `path` that is not a socket is never removed.
fn bind_owner_only(path: &Path) -> std::io::Result<(UnixListener, OwnedFd)> {
    use std::os::unix::fs::FileTypeExt;
    let pid_path = pid_path(path);
    let flags = rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC;
    let lock = rustix::fs::open(&pid_path, flags, rustix::fs::Mode::from_raw_mode(0o600))?;
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(std::io::Error::from(std::io::ErrorKind::AddrInUse));
        }
        Err(e) => return Err(e.into()),
    }
    rustix::fs::ftruncate(&lock, 0)?;
    rustix::io::write(&lock, format!("{}\n", std::process::id()).as_bytes())?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
        }
        std::fs::remove_file(path)?;
    }
    // The mode is set by the umask at bind time, so no other user ever sees the socket open.
    // Processes bind before they start threads; the umask is restored right after.
    let previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(previous);
    Ok((bound?, lock))
}

/// `<path>.pid`.
fn pid_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pid");
    PathBuf::from(name)
}

/// A socket path the daemon bound, with its locked pid file; both removed when dropped.
#[derive(Debug)]
struct BoundPath {
    path: PathBuf,
    /// Held for the daemon's life: the lock says the socket is served.
    _lock: OwnedFd,
}

impl Drop for BoundPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // Removed while still locked, so no other daemon takes the name in between.
        let _ = std::fs::remove_file(pid_path(&self.path));
    }
}
