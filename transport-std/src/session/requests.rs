//! What a device asks of the front-end on the back-end channel, and how it learns the outcome:
//! [`DeviceRequest`] (every back-end message type of the spec), the [`BackendRequests`] handle it
//! queues them through from any thread, and the [`RequestResult`] it gets back through
//! [`Device::backend_result`](crate::Device::backend_result).
//!
//! The session takes queued requests between frames and hands each to `Backend`, which accepts or
//! refuses it (feature not negotiated, device suspended, too many outstanding); every request
//! pushed gets exactly one result, named by the [`RequestTicket`] `push` returned. While no channel
//! socket is open there is nothing to carry a request, and `push` says so at once
//! ([`RequestError::NoChannel`]), so a session without a channel never has to watch for requests.
//!
//! This module must not check protocol rules: `Backend` does.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::event::{eventfd, EventfdFlags};
use vhu_core::message::{Iotlb, ShmemMapping, Uuid};
use vhu_core::{ProtocolError, VringIndex};

/// Requests a device may queue at once; more are refused.
const MAX_QUEUED: usize = 64;

/// A back-end request a device asks for (spec "Back-end message types").
#[derive(Debug)]
#[non_exhaustive]
pub enum DeviceRequest {
    /// BACKEND_IOTLB_MSG: an IOTLB miss or access failure.
    Iotlb(Iotlb),
    /// BACKEND_CONFIG_CHANGE_MSG: the config space changed.
    ConfigChange,
    /// BACKEND_VRING_HOST_NOTIFIER_MSG: map (`fd` given) or unmap a ring's notifier area.
    HostNotifier {
        /// The ring.
        index: VringIndex,
        /// Size of the area (the host page size).
        size: u64,
        /// Offset of the area in `fd`.
        offset: u64,
        /// The memory to map; `None` unmaps.
        fd: Option<OwnedFd>,
    },
    /// BACKEND_VRING_CALL: an in-band used-buffer notification.
    VringCall(VringIndex),
    /// BACKEND_VRING_ERR: an in-band error notification.
    VringErr(VringIndex),
    /// BACKEND_SHARED_OBJECT_ADD
    SharedObjectAdd(Uuid),
    /// BACKEND_SHARED_OBJECT_REMOVE
    SharedObjectRemove(Uuid),
    /// BACKEND_SHARED_OBJECT_LOOKUP: the result carries the object's descriptor.
    SharedObjectLookup(Uuid),
    /// BACKEND_SHMEM_MAP: map `fd` into a shared-memory region.
    ShmemMap {
        /// Where and how.
        mapping: ShmemMapping,
        /// The memory to map.
        fd: OwnedFd,
    },
    /// BACKEND_SHMEM_UNMAP: remove a whole mapping.
    ShmemUnmap(ShmemMapping),
}

/// Names one pushed request for its [`RequestResult`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestTicket(pub u64);

/// How a device's back-end request ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestResult {
    /// `Backend` refused to send it; nothing went to the front-end.
    Refused(ProtocolError),
    /// Sent; the front-end was not asked to answer (REPLY_ACK is not negotiated).
    Sent,
    /// The front-end answered with this status: 0 is success.
    Acked(u64),
    /// BACKEND_SHARED_OBJECT_LOOKUP's answer: a status and, on success, the object.
    SharedObject {
        /// 0 on success.
        status: u64,
        /// The object's dma-buf descriptor.
        fd: Option<OwnedFd>,
    },
    /// The channel broke, or was replaced, before the request was sent or answered.
    Lost,
}

impl RequestResult {
    /// Whether the front-end took the request (sent without an answer asked, or answered 0).
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Sent | Self::Acked(0) | Self::SharedObject { status: 0, .. })
    }
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
    /// No back-end channel is open (the front-end has not sent SET_BACKEND_REQ_FD, or the
    /// channel broke): nothing can carry the request.
    #[error("no back-end channel is open")]
    NoChannel,
}

/// The requests waiting, and whether a channel is open to take new ones (under one lock, so a
/// request is never queued after the channel closed).
#[derive(Debug, Default)]
struct Queued {
    requests: VecDeque<(RequestTicket, DeviceRequest)>,
    channel_open: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queued>,
    wake: OwnedFd,
    closed: AtomicBool,
    next_ticket: AtomicU64,
}

/// Queues back-end requests for one connection; cheap to clone and usable from any thread.
#[derive(Clone, Debug)]
pub struct BackendRequests {
    shared: Arc<Shared>,
}

impl BackendRequests {
    pub(super) fn new() -> std::io::Result<Self> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let shared = Shared {
            queue: Mutex::new(Queued::default()),
            wake,
            closed: AtomicBool::new(false),
            next_ticket: AtomicU64::new(0),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Queues `request` and wakes the session; its result names it by the returned ticket.
    pub fn push(&self, request: DeviceRequest) -> Result<RequestTicket, RequestError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(RequestError::Disconnected);
        }
        let mut queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if !queue.channel_open {
            return Err(RequestError::NoChannel);
        }
        if queue.requests.len() >= MAX_QUEUED {
            return Err(RequestError::Full(queue.requests.len()));
        }
        let ticket = RequestTicket(self.shared.next_ticket.fetch_add(1, Ordering::Relaxed));
        queue.requests.push_back((ticket, request));
        drop(queue);
        // A full counter (EAGAIN) already means "wake up".
        let _ = rustix::io::write(&self.shared.wake, &1u64.to_ne_bytes());
        Ok(ticket)
    }

    /// Whether the connection has ended.
    pub fn is_disconnected(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Whether no request waits and none can come (no channel is open).
    pub(super) fn is_quiet(&self) -> bool {
        let queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        !queue.channel_open && queue.requests.is_empty()
    }

    /// Opens or closes the way for new requests, as the channel socket comes and goes.
    pub(super) fn set_channel_open(&self, open: bool) {
        self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner).channel_open = open;
    }

    /// The eventfd that becomes readable when requests wait.
    pub(super) fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.shared.wake.as_fd()
    }

    /// Takes the queued requests (and clears the wake-up).
    pub(super) fn take(&self) -> Vec<(RequestTicket, DeviceRequest)> {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.shared.wake, &mut buf);
        let mut queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.requests.drain(..).collect()
    }

    /// The session has ended: later pushes fail and queued requests are dropped.
    pub(super) fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let mut queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.channel_open = false;
        queue.requests.clear();
    }
}
