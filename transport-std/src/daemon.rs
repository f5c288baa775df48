//! A blocking back-end daemon: a listening Unix socket and one [`Device`], serving one front-end
//! at a time.
//!
//! Each accepted connection gets a fresh `Backend` and is served by the driver
//! ([`Connection`]) until it ends; ending it stops every queue, resets the device, unmaps every
//! region and closes every descriptor of the session. The daemon then accepts the next
//! connection. A connection that misbehaves only ends itself. While one is served, others are
//! accepted and closed at once by one thread, kept from one connection to the next.
//!
//! This module must not implement protocol behaviour: it only owns the listener and the device.

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vhu_core::backend::SpecError;

use crate::device::Device;
use crate::driver::Connection;
use crate::refuser::{Refuser, Refusing};
use crate::session::SessionError;
use crate::socket_file::SocketFile;

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
    Closed(SessionError),
}

/// A back-end daemon; see the module docs.
#[derive(Debug)]
pub struct Daemon<D: Device> {
    device: D,
    listener: UnixListener,
    bound: Option<SocketFile>,
    /// Refuses other front-ends while one is served; started with the first.
    refuser: Option<Refuser>,
}

impl<D: Device> Daemon<D> {
    /// A daemon for `device` listening as `listen` says. The device's spec is checked here.
    pub fn new(device: D, listen: Listen) -> Result<Self, DaemonError> {
        device.spec().validate()?;
        let (listener, bound) = match listen {
            Listen::Path(path) => match SocketFile::bind(&path) {
                Ok((listener, file)) => (listener, Some(file)),
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
        Ok(Self { device, listener, bound, refuser: None })
    }

    /// The socket path, when the daemon bound it.
    pub fn path(&self) -> Option<&Path> {
        self.bound.as_ref().map(SocketFile::path)
    }

    /// The pid file locked next to the socket path (`<path>.pid`), when the daemon bound it.
    pub fn pid_file(&self) -> Option<PathBuf> {
        self.bound.as_ref().map(SocketFile::pid_file)
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
        // The front-end must not see the connection end while the refusing thread still runs:
        // one that reconnects at once would be refused. A duplicate keeps the socket open until
        // the thread has paused; later connections wait in the backlog for the next accept.
        let held = stream.try_clone().ok();
        // A thread that is gone is dropped here and another started for the next connection.
        let refusing = self.refuser.take().or_else(|| Refuser::start(&self.listener));
        let refusing = refusing.and_then(Refuser::refusing);
        let refuser = &mut self.refuser;
        // Refusing pauses as soon as the session ends, before its teardown (queues joined,
        // the device reset, guest memory unmapped), which may take a while: a front-end that
        // reconnects meanwhile waits in the backlog for the next accept, not refused.
        let end = serve_then(&mut self.device, stream, || {
            *refuser = refusing.and_then(Refusing::end);
            drop(held);
        });
        Ok(end)
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
        serve_then(&mut self.device, stream, || {})
    }

    /// The device, once the daemon is no longer needed (the socket path is removed).
    pub fn into_device(self) -> D {
        self.device
    }
}

/// Serves `stream` with `device` until the front-end hangs up or the session fails; `ended` runs
/// once the session is over, before its teardown (dropping the connection stops the queues,
/// resets the device and unmaps guest memory).
fn serve_then<D: Device>(device: &mut D, stream: UnixStream, ended: impl FnOnce()) -> Disconnect {
    let serving = stream
        .set_nonblocking(false)
        .map_err(SessionError::Setup)
        .and_then(|()| Connection::new(device, stream));
    let (result, connection) = match serving {
        Ok(mut connection) => (connection.serve(), Some(connection)),
        Err(error) => (Err(error), None),
    };
    ended();
    drop(connection);
    match result {
        Ok(()) => Disconnect::HungUp,
        Err(error) => Disconnect::Closed(error),
    }
}
