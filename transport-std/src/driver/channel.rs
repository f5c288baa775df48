//! The back-end channel (SET_BACKEND_REQ_FD): the device's request queue, and sending the
//! requests `Backend` emits on the channel socket.
//!
//! A device asks for a back-end request through [`BackendRequests`], from any thread. The driver
//! wakes up between frames, hands each request to `Backend` (which checks that the channel exists,
//! that the feature is negotiated and that the device is not suspended, and drops it otherwise),
//! and sends what `Backend` emits, waiting for the front-end's `u64` when NEED_REPLY is set.
//!
//! This module must not check protocol rules itself: `Backend` accepts or refuses each request.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use vhu_core::backend::Backend;
use vhu_core::message::Uuid;
use vhu_core::{BackendRequest, FrameDecoder, VringIndex};

use super::CHANNEL_TIMEOUT;
use crate::fd_table::FdTable;
use crate::scm::{self, RecvOutcome};

/// Requests a device may queue at once; more are refused.
const MAX_QUEUED: usize = 64;

/// A back-end request a device asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceRequest {
    /// BACKEND_CONFIG_CHANGE_MSG: the config space changed.
    ConfigChange,
    /// BACKEND_VRING_CALL: an in-band used-buffer notification.
    VringCall(VringIndex),
    /// BACKEND_VRING_ERR: an in-band error notification.
    VringErr(VringIndex),
    /// BACKEND_SHARED_OBJECT_ADD
    SharedObjectAdd(Uuid),
    /// BACKEND_SHARED_OBJECT_REMOVE
    SharedObjectRemove(Uuid),
}

/// A request could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The connection this handle belongs to has ended.
    #[error("the connection has ended")]
    Disconnected,
    /// Too many requests are waiting to be sent.
    #[error("{0} requests are already waiting")]
    Full(usize),
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<DeviceRequest>>,
    wake: OwnedFd,
    closed: AtomicBool,
}

/// Queues back-end requests for one connection; cheap to clone and usable from any thread.
///
/// Requests are best effort: `Backend` drops one whose channel or feature is missing, or that
/// arrives while the device is suspended (spec "Suspended device state").
#[derive(Clone, Debug)]
pub struct BackendRequests {
    shared: Arc<Shared>,
}

impl BackendRequests {
    fn new() -> std::io::Result<Self> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let shared =
            Shared { queue: Mutex::new(VecDeque::new()), wake, closed: AtomicBool::new(false) };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Queues `request` and wakes the driver.
    pub fn push(&self, request: DeviceRequest) -> Result<(), RequestError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(RequestError::Disconnected);
        }
        let mut queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= MAX_QUEUED {
            return Err(RequestError::Full(queue.len()));
        }
        queue.push_back(request);
        drop(queue);
        // A full counter (EAGAIN) already means "wake up".
        let _ = rustix::io::write(&self.shared.wake, &1u64.to_ne_bytes());
        Ok(())
    }

    /// Whether the connection has ended.
    pub fn is_disconnected(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// The driver's side of the channel.
#[derive(Debug)]
pub(super) struct Channel {
    stream: Option<UnixStream>,
    requests: BackendRequests,
}

impl Channel {
    pub(super) fn new() -> std::io::Result<Self> {
        Ok(Self { stream: None, requests: BackendRequests::new()? })
    }

    pub(super) fn requests(&self) -> BackendRequests {
        self.requests.clone()
    }

    /// Uses `fd` as the channel socket from now on.
    pub(super) fn set_socket(&mut self, fd: OwnedFd) {
        let stream = UnixStream::from(fd);
        // A descriptor that is not a socket fails here or at the first send; either way the
        // channel is dropped then.
        let timeouts = stream.set_read_timeout(Some(CHANNEL_TIMEOUT)).is_ok()
            && stream.set_write_timeout(Some(CHANNEL_TIMEOUT)).is_ok();
        self.stream = timeouts.then_some(stream);
    }

    /// Blocks until `socket` is readable or device requests wait. Returns whether requests wait
    /// and the socket has nothing to read: a frame always goes first, so a front-end blocked on a
    /// reply is never kept waiting behind a back-end request.
    pub(super) fn wait_for_requests(&self, socket: &UnixStream) -> bool {
        let mut fds = [
            PollFd::new(socket, PollFlags::IN),
            PollFd::new(&self.requests.shared.wake, PollFlags::IN),
        ];
        loop {
            match poll(&mut fds, None) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                // The socket read reports whatever is wrong.
                Err(_) => return false,
            }
        }
        fds[0].revents().is_empty() && fds[1].revents().contains(PollFlags::IN)
    }

    /// Takes the queued requests.
    pub(super) fn take_requests(&self) -> Vec<DeviceRequest> {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.requests.shared.wake, &mut buf);
        let mut queue = self.requests.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.drain(..).collect()
    }

    /// Sends `request` (taking its descriptors out of `fds`) and reads the answer if one is
    /// asked for. A channel that fails is dropped; the connection goes on.
    pub(super) fn send(
        &mut self,
        fds: &mut FdTable,
        request: &BackendRequest,
        need_reply: bool,
    ) -> Exchanged {
        let owned: Vec<OwnedFd> = request.fds().iter().filter_map(|t| fds.take(*t)).collect();
        let Some(stream) = self.stream.as_ref() else { return Exchanged::Failed };
        let exchanged = exchange(stream, request, need_reply, &owned);
        if let Exchanged::Failed = exchanged {
            self.stream = None;
        }
        exchanged
    }

    /// Closes the channel socket (its peer broke the protocol).
    pub(super) fn drop_socket(&mut self) {
        self.stream = None;
    }
}

/// Hands one request to `backend`; a refused one is dropped (see [`BackendRequests`]).
pub(super) fn submit(backend: &mut Backend, request: DeviceRequest) {
    let _ = match request {
        DeviceRequest::ConfigChange => backend.send_config_change(),
        DeviceRequest::VringCall(index) => backend.send_vring_call(index),
        DeviceRequest::VringErr(index) => backend.send_vring_err(index),
        DeviceRequest::SharedObjectAdd(uuid) => backend.send_shared_object_add(uuid),
        DeviceRequest::SharedObjectRemove(uuid) => backend.send_shared_object_remove(uuid),
    };
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.requests.shared.closed.store(true, Ordering::Release);
        self.requests.shared.queue.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

/// What became of one request on the channel.
#[derive(Debug)]
pub(super) enum Exchanged {
    /// Sent; no answer was asked for.
    Sent,
    /// Sent and answered with this frame and these descriptors.
    Answered(Vec<u8>, Vec<OwnedFd>),
    /// The channel is missing or broke.
    Failed,
}

fn exchange(
    stream: &UnixStream,
    request: &BackendRequest,
    need_reply: bool,
    fds: &[OwnedFd],
) -> Exchanged {
    let mut buf = [0u8; 64];
    let Ok(len) = request.encode_into(need_reply, &mut buf) else { return Exchanged::Failed };
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    if scm::send(stream, &buf[..len], &borrowed).is_err() {
        return Exchanged::Failed;
    }
    if !need_reply {
        return Exchanged::Sent;
    }
    let mut decoder = Box::new(FrameDecoder::new());
    let mut received = Vec::new();
    match scm::recv_frame(stream, &mut decoder, &mut received) {
        Ok(RecvOutcome::Frame(_)) => {
            Exchanged::Answered(decoder.frame().unwrap_or(&[]).to_vec(), received)
        }
        _ => Exchanged::Failed,
    }
}
