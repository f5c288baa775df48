//! The virtio-fs device: what the vhost-user back-end offers for it, its config space, and its
//! queues served by the FUSE server over a passthrough file system.
//!
//! Queue 0 is the high-priority queue (FORGET, INTERRUPT), queues 1.. are request queues, as the
//! Linux virtio-fs driver numbers them (virtio spec "File System Device", virtqueues). Every
//! queue runs on its own worker thread and all share one server. This module must not implement
//! vhost-user protocol rules: those are `vhu-core`'s.

pub mod dax;
mod inbox;
mod pool;
mod queue;
pub mod state;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use vhu_core::backend::{BackendSpec, VringConfig};
use vhu_core::message::VringBase;
use vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::vm_memory::{GuestAddressSpace, GuestMemory};
use vhu_transport_std::{
    BackendRequests, Device, DeviceError, Queue, QueueStopped, RequestResult, RequestTicket,
    Workers,
};

use crate::fuse::Server;
use crate::passthrough::PassthroughFs;
use dax::DaxWindow;
pub use queue::FsQueue;
use vhu_transport_std::virtq::Virtqueue;

#[cfg(test)]
mod tests;

/// Largest tag in the config space (virtio spec: `u8 tag[36]`).
pub const MAX_TAG_LEN: usize = 36;
/// Config space: `u8 tag[36]; le32 num_request_queues` (virtio spec "Device configuration
/// layout" of the file system device).
pub const CONFIG_SIZE: u32 = 40;
/// Largest queue size offered.
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// How the device presents itself.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Request queues besides the high-priority one (at least 1).
    pub num_request_queues: usize,
    /// The tag for the config space; only with a tag is CONFIG offered (QEMU 7.1–8.0 crash when
    /// a vhost-user-fs back-end offers it).
    pub tag: Option<String>,
    /// Pool threads handling each queue's requests (`--thread-pool-size`); 0 or 1 handles them
    /// on the queue's own worker thread ([`FsQueue::with_pool`]).
    pub thread_pool_size: usize,
    /// Size of the DAX window (shared-memory region 0) in bytes, a multiple of the page size;
    /// 0 offers none.
    pub dax_window: u64,
}

/// The virtio-fs device served by the std transport.
pub struct FsDevice {
    config: FsConfig,
    server: Arc<Server<PassthroughFs>>,
    workers: Workers<FsQueue>,
    features: VirtioFeatures,
    /// Where each running ring is, as it started.
    rings: BTreeMap<VringIndex, VringConfig>,
    /// The DAX window, with `config.dax_window` bytes.
    window: Option<Arc<dax::DaxWindow>>,
}

impl std::fmt::Debug for FsDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsDevice")
            .field("config", &self.config)
            .field("workers", &self.workers)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl FsDevice {
    /// A device serving `server` with `config`.
    pub fn new(config: FsConfig, server: Server<PassthroughFs>) -> Self {
        let window = (config.dax_window > 0).then(|| Arc::new(DaxWindow::new(config.dax_window)));
        let server = match &window {
            Some(window) => server.with_window(Arc::clone(window) as Arc<dyn crate::fuse::Window>),
            None => server,
        };
        Self {
            window,
            config,
            server: Arc::new(server),
            workers: Workers::new(),
            features: VirtioFeatures::empty(),
            rings: BTreeMap::new(),
        }
    }

    /// The shared FUSE server.
    pub fn server(&self) -> &Server<PassthroughFs> {
        &self.server
    }

    fn config_space(&self) -> [u8; CONFIG_SIZE as usize] {
        let mut space = [0u8; CONFIG_SIZE as usize];
        if let Some(tag) = &self.config.tag {
            let bytes = tag.as_bytes();
            let n = bytes.len().min(MAX_TAG_LEN);
            space[..n].copy_from_slice(&bytes[..n]);
        }
        let queues = u32::try_from(self.config.num_request_queues).unwrap_or(u32::MAX);
        space[MAX_TAG_LEN..].copy_from_slice(&queues.to_le_bytes());
        space
    }

    /// Ends the workers' waits for the front-end's answers to mappings, and asks nothing more
    /// until the stop is over (`false`).
    fn suspend_mappings(&self, suspend: bool) {
        match &self.window {
            Some(window) if suspend => window.suspend(),
            Some(window) => window.resume(),
            None => {}
        }
    }

    /// Validates the ring `config` describes (split or packed) against `memory`.
    fn build_queue<M: GuestMemory>(
        &self,
        index: VringIndex,
        config: &VringConfig,
        memory: &M,
    ) -> Result<Virtqueue, DeviceError> {
        let indirect = self.features.contains(VirtioFeatures::RING_INDIRECT_DESC);
        Virtqueue::from_config(config, memory, indirect)
            .map_err(|reason| DeviceError::Queue { index: index.0, reason })
    }
}

impl Device for FsDevice {
    fn spec(&self) -> BackendSpec {
        let mut spec = BackendSpec::new(1 + self.config.num_request_queues, MAX_QUEUE_SIZE);
        spec.features = VirtioFeatures::VERSION_1
            | VirtioFeatures::RING_INDIRECT_DESC
            | VirtioFeatures::RING_EVENT_IDX
            | VirtioFeatures::RING_PACKED
            // Every write to guest memory goes through the virtqueue layer's logged writes
            // (replies copied or placed by `preadv`, then accounted): dirty logging holds.
            | VirtioFeatures::LOG_ALL;
        spec.protocol_features = ProtocolFeatures::MQ
            | ProtocolFeatures::REPLY_ACK
            | ProtocolFeatures::BACKEND_REQ
            | ProtocolFeatures::CONFIGURE_MEM_SLOTS
            | ProtocolFeatures::RESET_DEVICE
            | ProtocolFeatures::LOG_SHMFD
            // What the guest holds moves to a destination (`passthrough::migration`).
            | ProtocolFeatures::DEVICE_STATE;
        if self.config.tag.is_some() {
            spec.protocol_features |= ProtocolFeatures::CONFIG;
            spec.config_size = CONFIG_SIZE;
        }
        if self.window.is_some() {
            // The window is region 0 (`dax::DAX_SHMID`); a mapping carries the file's fd.
            spec.protocol_features |= ProtocolFeatures::SHMEM | ProtocolFeatures::BACKEND_SEND_FD;
            spec.shmem_sizes.push(self.config.dax_window);
        }
        spec
    }

    fn start_queue(&mut self, queue: Queue) -> Result<(), DeviceError> {
        let memory = queue.memory.memory();
        let ring = self.build_queue(queue.index, &queue.config, &*memory)?;
        drop(memory);
        let handler =
            FsQueue::new(ring, Arc::clone(&self.server)).with_pool(self.config.thread_pool_size);
        let (index, config) = (queue.index, queue.config);
        self.workers.start(queue, handler)?;
        self.rings.insert(index, config);
        // Requests are as large as the smallest request queue carries (queue 0 is hiprio).
        let smallest = self.rings.iter().filter(|(i, _)| i.0 >= 1).map(|(_, c)| c.size).min();
        if let Some(size) = smallest {
            self.server.set_queue_size(size);
        }
        Ok(())
    }

    fn stop_queue(&mut self, index: VringIndex, drain: bool) -> VringBase {
        self.try_stop_queue(index, drain).unwrap_or(VringBase(0))
    }

    fn try_stop_queue(&mut self, index: VringIndex, _drain: bool) -> Option<VringBase> {
        self.rings.remove(&index);
        // This thread waits for the worker: a mapping the worker waits on cannot be answered.
        self.suspend_mappings(true);
        // The worker finishes the request it is processing before it stops: stopping drains. A
        // worker that panicked took the ring's position with it.
        let base = self.workers.stop(index).map(|handler| {
            use vhu_transport_std::QueueHandler;
            handler.base()
        });
        self.suspend_mappings(false);
        base
    }

    fn stop_queue_then(&mut self, index: VringIndex, _drain: bool, done: QueueStopped) {
        self.rings.remove(&index);
        // The worker finishes the request it is processing (and its pool's) before it stops. A
        // front-end waiting for GET_VRING_BASE's answer does not answer a mapping meanwhile
        // (QEMU reads nothing else), so mappings the worker waits on end now, as in
        // `try_stop_queue`, and none is asked until the worker stopped.
        if self.workers.is_running(index) {
            use vhu_transport_std::QueueHandler;
            self.suspend_mappings(true);
            // Resumed once the worker stopped, or when it is dropped unrun (a worker that
            // panicked): mappings are not left suspended for the rest of the connection.
            let resume = dax::ResumeOnDrop(self.window.clone());
            self.workers.stop_then(index, move |handler| {
                drop(resume);
                done.stopped(handler.base());
            });
        } else {
            done.stopped(VringBase(0));
        }
    }

    fn set_queue_enabled(&mut self, index: VringIndex, enabled: bool) {
        self.workers.set_enabled(index, enabled);
    }

    fn replace_kick(&mut self, index: VringIndex, kick: Option<OwnedFd>) {
        self.workers.replace_kick(index, kick);
    }

    fn update_queue(
        &mut self,
        index: VringIndex,
        config: VringConfig,
        logging_only: bool,
    ) -> Result<(), DeviceError> {
        // The same ring again switches used-ring logging on or off; a ring moved while it
        // runs, or logged elsewhere, is refused: never ignored.
        self.workers.update_logging(index, config, logging_only)
    }

    fn kick(&mut self, index: VringIndex) {
        self.workers.kick(index);
    }

    fn connected(&mut self, requests: BackendRequests) {
        // A new front-end has an empty window.
        self.server.forget_mappings();
        if let Some(window) = &self.window {
            window.connect(requests);
        }
    }

    fn backend_result(&mut self, ticket: RequestTicket, result: RequestResult) {
        if let Some(window) = &self.window {
            window.complete(ticket, result);
        }
    }

    fn acked_features(&mut self, features: VirtioFeatures) {
        self.features = features;
    }

    fn reset(&mut self) {
        self.suspend_mappings(true);
        self.workers.stop_all();
        self.suspend_mappings(false);
        self.rings.clear();
        self.features = VirtioFeatures::empty();
        // The next guest (or the same one after a reset) starts a new FUSE session: nothing of
        // the old one's nodes, handles or negotiation may survive.
        self.server.reset();
    }

    fn read_config(&self, offset: u32, data: &mut [u8]) -> Result<(), DeviceError> {
        let space = self.config_space();
        let start = offset as usize;
        let end = start.checked_add(data.len()).filter(|end| *end <= space.len());
        let end = end.ok_or(DeviceError::Config { offset, size: data.len() })?;
        data.copy_from_slice(&space[start..end]);
        Ok(())
    }

    fn write_config(
        &mut self,
        offset: u32,
        data: &[u8],
        _migration: bool,
    ) -> Result<(), DeviceError> {
        // Every field of the file system device's config space is read-only.
        Err(DeviceError::Config { offset, size: data.len() })
    }

    fn save_state(&mut self, out: &mut dyn std::io::Write) -> Result<(), DeviceError> {
        let mapped = self.server.mapping_count();
        if mapped > 0 {
            // A destination would have to map them again in its front-end's window.
            let error = format!("{mapped} DAX mappings are in place; they cannot migrate");
            log::error!("migration: {error}");
            return Err(DeviceError::State(error));
        }
        out.write_all(&state::save(&self.server).map_err(state_error)?)?;
        Ok(())
    }

    fn load_state(&mut self, input: &mut dyn std::io::Read) -> Result<(), DeviceError> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        state::load(&self.server, &bytes).map_err(state_error)
    }
}

/// A state that cannot be saved or taken over, logged with its cause.
fn state_error(error: state::StateError) -> DeviceError {
    log::error!("migration: {error}");
    DeviceError::State(error.to_string())
}
