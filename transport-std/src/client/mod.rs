//! A blocking vhost-user front-end client for VMM authors, over `vhu-core`'s
//! [`Frontend`] state machine.
//!
//! [`Client`] owns one connection: the socket, the [`Frontend`], the
//! [`FdTable`](crate::FdTable) that holds every
//! descriptor the state machine names by token, and (when BACKEND_REQ is wanted) the VMM's end of
//! the back-end channel. Each method makes one front-end call and then drives the sockets until
//! the state machine has nothing left to wait for: requests are sent with their descriptors,
//! replies are fed back, back-end requests are answered by the [`BackendHandler`], and the
//! outcome comes back typed — the answer the call waits for, [`ClientError::Failed`] when the
//! back-end reported a failure, [`ClientError::Closed`] when the state machine closed the
//! connection, or a transport error. Every wait is bounded by [`Client::set_timeout`] (a call
//! that stops rings by [`Client::set_drain_timeout`] when that is longer).
//!
//! ```no_run
//! use std::os::fd::AsFd;
//!
//! use vhu_transport_std::client::{eventfd, Client, GuestRegion, VringStart};
//! use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
//!
//! # fn main() -> Result<(), vhu_transport_std::client::ClientError> {
//! let mut client = Client::connect("/tmp/vhost.sock")?;
//! let wanted = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
//! client.handshake(wanted, ProtocolFeatures::REPLY_ACK | ProtocolFeatures::MQ)?;
//! let ram = GuestRegion::new(0, 1 << 20)?;
//! client.set_mem_table(&[ram.share()])?;
//! let (call, kick) = (eventfd()?, eventfd()?);
//! let ring = VringStart::split(256, ram.host_address(0x1000)?, call.as_fd(), kick.as_fd());
//! client.start_vring(VringIndex(0), ring)?;
//! let base = client.stop_vring(VringIndex(0))?;
//! # let _ = base; Ok(()) }
//! ```
//!
//! This module and its children must not implement protocol rules — order of messages,
//! NEED_REPLY, what a reply must look like, feature dependencies — nor retry anything: they are the
//! state machine's. They only move bytes and descriptors and copy its events out.

mod channel;
mod dirty_log;
mod error;
mod io;
mod memory;
mod migration;
mod ops;
mod postcopy;
mod sessions;
mod shmem;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vhu_core::frontend::{Frontend, FrontendConfig, Negotiated};
use vhu_core::VirtioFeatures;

pub use channel::{BackendHandler, BackendResponse, NoMappings, ReceivedRequest};
pub use dirty_log::LogBuffer;
pub use error::ClientError;
pub use memory::{eventfd, GuestRegion, SharedRegion};
pub use ops::VringStart;
pub use shmem::{ShmemHandler, ShmemRegion};

/// How long a call waits for the back-end unless [`Client::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a call that stops rings (GET_VRING_BASE, RESET_DEVICE) may wait for the back-end
/// unless [`Client::set_drain_timeout`] says otherwise: the back-end answers once the rings'
/// requests in flight are done, and one request may wait long on storage (a virtio-fs FSYNC on a
/// slow network file system).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a whole device-state transfer may take unless [`Client::set_transfer_timeout`] says
/// otherwise.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// One front-end connection to a vhost-user back-end; see the module docs.
#[derive(Debug)]
pub struct Client {
    /// Boxed: the state machine holds its buffers inline (KiBs), and a client moves.
    frontend: Box<Frontend>,
    io: io::Io,
    /// `handshake` or `restore` was called.
    started: bool,
    /// Rings one queue of GET_QUEUE_NUM's answer stands for ([`Client::set_rings_per_queue`]).
    rings_per_queue: u8,
}

impl Client {
    /// Connects to the back-end listening at `path`, waiting at most [`DEFAULT_TIMEOUT`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        Self::connect_within(path, DEFAULT_TIMEOUT)
    }

    /// Connects to the back-end listening at `path`, waiting at most `timeout` for it to take
    /// the connection (a back-end that stopped accepting, its backlog full, would otherwise
    /// hold a blocking `connect` for good).
    pub fn connect_within(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let failed = |source| ClientError::Connect { path: path.to_path_buf(), source };
        let stream = connect_by(path, io::deadline_after(timeout)).map_err(failed)?;
        Self::from_stream(stream)
    }

    /// A client over an already connected stream (made blocking, with the default timeout).
    pub fn from_stream(stream: UnixStream) -> Result<Self, ClientError> {
        let setup = |what| move |source| ClientError::Io { what, source };
        stream.set_nonblocking(false).map_err(setup("making the socket blocking"))?;
        let mut client = Self {
            frontend: crate::in_place::boxed(|| {
                Frontend::new(FrontendConfig::new(VirtioFeatures::empty()))
            }),
            io: io::Io::new(stream, Box::new(NoMappings)),
            started: false,
            rings_per_queue: 1,
        };
        client.set_timeout(DEFAULT_TIMEOUT)?;
        Ok(client)
    }

    /// Bounds every wait for the back-end: each call (one that stops rings waits for the longer
    /// of this and [`Client::set_drain_timeout`]), and each socket read and write.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let what = "setting the socket timeouts";
        let io = |source| ClientError::Io { what, source };
        self.io.sock.set_read_timeout(Some(timeout)).map_err(io)?;
        self.io.sock.set_write_timeout(Some(timeout)).map_err(io)?;
        if let Some(channel) = &self.io.channel {
            channel.sock.set_read_timeout(Some(timeout)).map_err(io)?;
            channel.sock.set_write_timeout(Some(timeout)).map_err(io)?;
        }
        self.io.timeout = timeout;
        Ok(())
    }

    /// How many rings one queue of GET_QUEUE_NUM's answer stands for, before the handshake: 2
    /// for a net device, whose back-ends answer in queue pairs (DPDK), 1 (the default) for the
    /// others. Ring indices are checked against the answer times this.
    pub fn set_rings_per_queue(&mut self, rings: u8) {
        self.rings_per_queue = rings.max(1);
    }

    /// Bounds a call that stops rings ([`Client::stop_vring`], [`Client::stop_vring_skip_drain`],
    /// [`Client::reset_device`]): it waits for the back-end to finish the rings' requests in
    /// flight, which may take longer than any other answer ([`DEFAULT_DRAIN_TIMEOUT`] unless
    /// set; [`Client::set_timeout`]'s bound when that is longer). Each read still waits at most
    /// [`Client::set_timeout`]'s bound, and goes on waiting while the call's bound lasts.
    pub fn set_drain_timeout(&mut self, timeout: Duration) {
        self.io.drain_timeout = timeout.max(Duration::from_millis(1));
    }

    /// The front-end state machine, for its predicates (`is_vring_started`, `regions`, ...).
    pub fn frontend(&self) -> &Frontend {
        &self.frontend
    }

    /// What the handshake negotiated, once it completed.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.frontend.negotiated()
    }

    /// Whether a transport failure or a close ended the connection.
    pub fn is_closed(&self) -> bool {
        self.io.broken || self.frontend.is_closed()
    }

    /// Descriptors the client holds for the state machine (0 whenever no call is in progress,
    /// unless a call failed in the middle).
    pub fn held_fds(&self) -> usize {
        self.io.fds.len()
    }
}

/// A Unix stream connection to `path`, tried without blocking until `deadline`: a listener whose
/// backlog is full refuses with EAGAIN (Linux never makes a Unix `connect` pending).
fn connect_by(path: &Path, deadline: std::time::Instant) -> std::io::Result<UnixStream> {
    use rustix::net::{connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags};
    let address = SocketAddrUnix::new(path)?;
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let socket = socket_with(AddressFamily::UNIX, rustix::net::SocketType::STREAM, flags, None)?;
    let mut pause = Duration::from_micros(100);
    loop {
        match connect(&socket, &address) {
            Ok(()) => return Ok(UnixStream::from(socket)),
            Err(rustix::io::Errno::AGAIN) if std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(rustix::io::Errno::AGAIN) => return Err(std::io::ErrorKind::TimedOut.into()),
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
}
