//! The std runtime around `vhu-core`: descriptor passing, descriptor ownership, guest memory, the
//! device interface, and a blocking driver and daemon.
//!
//! `vhu-core` is sans-io: it names descriptors by opaque tokens and asks for memory mappings with
//! actions. This crate supplies the pieces that touch the operating system:
//!
//! - [`scm`]: `sendmsg`/`recvmsg` with SCM_RIGHTS; [`frame_reader`]: [`FrameReader`], frames
//!   through core's [`FrameDecoder`](vhu_core::FrameDecoder) in as few `recvmsg` calls as the
//!   stream allows, each descriptor given to the frame it came with.
//! - [`fd_table`]: [`FdTable`], the owner of every received descriptor, keyed by
//!   [`FdToken`](vhu_core::FdToken).
//! - [`memory`]: [`MemoryMap`], guest memory mapped from the front-end's regions with `vm-memory`
//!   and swapped atomically for workers.
//! - [`device`]: the [`Device`] trait a device author implements; [`worker`]: an optional
//!   thread-per-queue implementation of its queue methods.
//! - [`session`]: [`Session`], the engine of one back-end connection — `Backend`, frame decoder,
//!   received descriptors, the [`Executor`] of actions, replies, the back-end channel and the
//!   device's requests — that every socket adapter drives; [`driver`]: [`Connection`], the
//!   blocking adapter over it; [`daemon`]: [`Daemon`], which accepts front-ends one at a time.
//! - [`virtq`]: split and packed virtqueues over guest memory — descriptor chains, readers and
//!   writers, EVENT_IDX — for any device's queues.
//! - [`client`]: [`Client`], the blocking front-end (VMM side) over core's `Frontend`, with guest
//!   memory on memfds and eventfds for the rings.
//!
//! It must never re-implement a protocol rule: which message carries which descriptors, when a
//! region may be added or removed, and whether an error is answered or closes the connection are all
//! decided by `vhu-core`. Linux only (SCM_RIGHTS, `MSG_CMSG_CLOEXEC`, memfd-backed guest memory).

pub mod client;
pub mod daemon;
pub mod device;
pub mod dirty;
pub mod driver;
pub mod fd_table;
pub mod frame_reader;
pub mod memory;
pub mod scm;
pub mod session;
pub mod socket_file;
pub mod virtq;
pub mod worker;

pub use client::{Client, ClientError};
pub use daemon::{Daemon, DaemonError, Disconnect, Listen};
pub use device::{Device, DeviceError, Notifier, Queue};
pub use dirty::{DirtyBitmap, DirtyLog};
pub use driver::Connection;
pub use fd_table::{FdTable, TokensExhausted};
pub use frame_reader::{FrameReader, ReadAhead};
pub use memory::{LoggedMemory, MemoryError, MemoryMap};
pub use scm::{recv_chunk, send, send_partial, RecvOutcome, ScmError};
pub use session::{
    BackendRequests, DeviceRequest, Executor, Owed, QueueStopped, Read, RequestError,
    RequestResult, RequestTicket, Session, SessionError, Style,
};
pub use socket_file::SocketFile;
pub use vhu_core;
pub use vm_memory;
pub use worker::{QueueContext, QueueHandler, QueueWaker, Workers};

/// A poll timeout; durations beyond what `Timespec` holds become the longest it holds.
pub(crate) fn timespec(duration: std::time::Duration) -> rustix::event::Timespec {
    rustix::event::Timespec::try_from(duration)
        .unwrap_or(rustix::event::Timespec { tv_sec: i64::MAX, tv_nsec: 0 })
}
