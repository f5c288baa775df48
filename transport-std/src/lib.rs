//! The std runtime around `vhu-core`: descriptor passing, descriptor ownership, guest memory, the
//! device interface, and a blocking driver and daemon.
//!
//! `vhu-core` is sans-io: it names descriptors by opaque tokens and asks for memory mappings with
//! actions. This crate supplies the pieces that touch the operating system:
//!
//! - [`scm`]: `sendmsg`/`recvmsg` with SCM_RIGHTS; [`frame_reader`]: [`FrameReader`], frames
//!   in as few `recvmsg` calls as the stream allows, each header checked by core's
//!   [`frame_len`](vhu_core::frame_len) and each descriptor given to the frame it came with.
//! - [`fd_table`]: [`FdTable`], the owner of every received descriptor, keyed by
//!   [`FdToken`](vhu_core::FdToken).
//! - [`memory`]: [`MemoryMap`], guest memory mapped from the front-end's regions with `vm-memory`
//!   and swapped atomically for workers.
//! - [`device`]: the [`Device`] trait a device author implements; [`worker`]: an optional
//!   thread-per-queue implementation of its queue methods.
//! - [`session`]: [`Session`], the engine of one back-end connection — `Backend`, frame reader,
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
//!
//! # A back-end device
//!
//! A device says what it offers and runs each started queue; [`virtq::ChainQueue`] serves one
//! descriptor chain at a time on a worker thread. This one answers every chain with a greeting
//! (and `examples/vhu-rng.rs` is a whole virtio-rng device):
//!
//! ```
//! use std::os::fd::OwnedFd;
//! use vhu_transport_std::virtq::{ChainQueue, ChainService, DescriptorChain, Reader, Virtqueue, Writer};
//! use vhu_transport_std::vhu_core::backend::BackendSpec;
//! use vhu_transport_std::vhu_core::message::VringBase;
//! use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
//! use vhu_transport_std::{Daemon, Device, DeviceError, Listen, LoggedMemory, Queue, QueueHandler, Workers};
//!
//! struct Greeter;
//! impl ChainService for Greeter {
//!     fn serve(&mut self, _: &DescriptorChain, _: &mut Reader<'_, LoggedMemory>, out: &mut Writer<'_, LoggedMemory>) {
//!         let _ = out.write(b"hello");
//!     }
//! }
//!
//! struct Device1(Workers<ChainQueue<Greeter>>);
//! impl Device for Device1 {
//!     fn spec(&self) -> BackendSpec {
//!         let mut spec = BackendSpec::new(1, 256);
//!         spec.features = VirtioFeatures::VERSION_1;
//!         spec
//!     }
//!     fn start_queue(&mut self, queue: Queue) -> Result<(), DeviceError> {
//!         let ring = Virtqueue::from_config(&queue.config, &*queue.memory.memory(), false)
//!             .map_err(|reason| DeviceError::Queue { index: queue.index.0, reason })?;
//!         self.0.start(queue, ChainQueue::new(ring, Greeter))
//!     }
//!     fn stop_queue(&mut self, i: VringIndex, drain: bool) -> VringBase {
//!         self.try_stop_queue(i, drain).unwrap_or(VringBase(0))
//!     }
//!     // A worker that panicked knows no base: the connection closes rather than guess one.
//!     fn try_stop_queue(&mut self, i: VringIndex, _drain: bool) -> Option<VringBase> {
//!         self.0.stop(i).map(|q| q.base())
//!     }
//!     fn set_queue_enabled(&mut self, i: VringIndex, on: bool) { self.0.set_enabled(i, on) }
//!     fn replace_kick(&mut self, i: VringIndex, kick: Option<OwnedFd>) { self.0.replace_kick(i, kick) }
//!     fn reset(&mut self) { self.0.stop_all(); }
//! }
//! # use vhu_transport_std::vm_memory::GuestAddressSpace;
//!
//! let socket = std::env::temp_dir().join(format!("greeter-{}.sock", std::process::id()));
//! let mut daemon = Daemon::new(Device1(Workers::new()), Listen::Path(socket.clone()))?;
//! std::thread::spawn(move || daemon.serve(|_ended| false));
//! // A front-end (here vhu's own client) connects and negotiates:
//! let mut client = vhu_transport_std::Client::connect(&socket)?;
//! let negotiated = client.handshake(VirtioFeatures::VERSION_1, ProtocolFeatures::empty())?;
//! assert!(negotiated.features.contains(VirtioFeatures::VERSION_1));
//! # std::fs::remove_file(&socket)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # A front-end bring-up
//!
//! What a VMM does with a back-end: negotiate, share guest memory, start a ring with its
//! eventfds, and later stop it where it is (its base resumes it, after a restart or a
//! migration):
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use vhu_transport_std::client::{eventfd, Client, GuestRegion, VringStart};
//! use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
//!
//! let mut client = Client::connect("/run/vhost-user/fs.sock")?;
//! let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
//! let protocol = ProtocolFeatures::MQ | ProtocolFeatures::REPLY_ACK | ProtocolFeatures::CONFIGURE_MEM_SLOTS;
//! let negotiated = client.handshake(features, protocol)?;
//! println!("{} queues, acked {:?}", negotiated.queues.unwrap_or(1), negotiated.features);
//!
//! let ram = GuestRegion::new(0, 64 << 20)?; // 64 MiB at guest-physical 0, on a memfd
//! client.set_mem_table(&[ram.share()])?;
//! let (call, kick) = (eventfd()?, eventfd()?);
//! let ring = ram.host_address(0x1_0000)?; // descriptor table, then available and used rings
//! client.start_vring(VringIndex(1), VringStart::split(256, ring, call.as_fd(), kick.as_fd()))?;
//! // ... the guest's driver fills the ring and writes `kick`; the back-end signals `call` ...
//! let base = client.stop_vring(VringIndex(1))?;
//! println!("stopped at {base:?}");
//! # Ok::<(), vhu_transport_std::ClientError>(())
//! ```

pub mod bus_guard;
pub mod client;
pub mod daemon;
pub mod device;
pub mod dirty;
pub mod driver;
mod encode_buf;
pub mod fd_table;
pub mod frame_reader;
mod in_place;
pub mod memory;
mod nowait;
mod refuser;
pub mod scm;
pub mod session;
pub mod socket_file;
pub mod spin;
pub mod virtq;
pub mod worker;

pub use client::{Client, ClientError};
pub use daemon::{Daemon, DaemonError, Disconnect, Listen};
pub use device::{Device, DeviceError, Notifier, Queue};
pub use dirty::{DirtyBitmap, DirtyLog};
pub use driver::Connection;
pub use fd_table::{FdTable, TokensExhausted};
pub use frame_reader::{FrameFds, FrameReader, ReadAhead};
pub use memory::{LoggedMemory, MemoryError, MemoryMap};
pub use scm::{recv_chunk, send, send_partial, ReceivedFds, RecvOutcome, ScmError};
pub use session::{
    BackendRequests, ChannelChange, DeviceRequest, Executor, Owed, QueueStopped, Read,
    RequestError, RequestResult, RequestTicket, Session, SessionError, Style,
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
