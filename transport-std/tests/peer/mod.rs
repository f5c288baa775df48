//! A small device on rust-vmm's `vhost-user-backend` crate, served by its `VhostUserDaemon` on a
//! thread: two queues, an 8-byte config space, and a record of what the device saw. Shared by the
//! interop test and the benchmark.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::Backend;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

pub const QUEUES: usize = 2;
pub const CONFIG: [u8; 8] = *b"peer-cfg";
/// VIRTIO_F_VERSION_1 and VHOST_USER_F_PROTOCOL_FEATURES.
pub const FEATURES: u64 = (1 << 32) | (1 << 30);

/// What the device saw.
#[derive(Debug, Default)]
pub struct PeerRecord {
    /// Kicks handled: queue, whether the queue was ready (started) and enabled, and the
    /// available index consumed up to (a back-end built on `vhost-user-backend` kicks itself
    /// when a ring starts, so a kick alone does not say the test's buffers were seen).
    pub kicks: Vec<(u16, bool, bool, u16)>,
    /// Rings stopped by GET_VRING_BASE.
    pub stopped: Vec<u32>,
    /// The virtio features SET_FEATURES acked.
    pub acked: Option<u64>,
    /// SET_MEM_TABLE / ADD_MEM_REG updates.
    pub memory_updates: usize,
    /// SET_BACKEND_REQ_FD arrived.
    pub backend_channel: bool,
}

/// The device: on a kick it "consumes" every available buffer by moving the queue's next
/// available index to the ring's `avail.idx`.
pub struct PeerDevice {
    record: Arc<Mutex<PeerRecord>>,
    memory: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    config: [u8; 8],
    /// Kept so the channel stays open.
    channel: Option<Backend>,
    /// When given, DEVICE_STATE is offered and every SET_DEVICE_STATE_FD is answered with this
    /// descriptor instead of the front-end's (how a back-end picks its own channel).
    state: Option<std::fs::File>,
}

impl VhostUserBackendMut for PeerDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        QUEUES
    }

    fn max_queue_size(&self) -> usize {
        256
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn acked_features(&mut self, features: u64) {
        self.record.lock().unwrap().acked = Some(features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::BACKEND_REQ
            | if self.state.is_some() {
                VhostUserProtocolFeatures::DEVICE_STATE
            } else {
                VhostUserProtocolFeatures::empty()
            }
    }

    fn set_device_state_fd(
        &mut self,
        _direction: vhost::vhost_user::message::VhostTransferStateDirection,
        _phase: vhost::vhost_user::message::VhostTransferStatePhase,
        _file: std::fs::File,
    ) -> std::io::Result<Option<std::fs::File>> {
        let state = self.state.as_ref().ok_or(std::io::ErrorKind::Unsupported)?;
        state.try_clone().map(Some)
    }

    fn check_device_state(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn reset_device(&mut self) {
        self.config = CONFIG;
        self.record.lock().unwrap().acked = None;
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let start = offset as usize;
        let end = start.saturating_add(size as usize);
        self.config.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
    }

    fn set_config(&mut self, offset: u32, buf: &[u8]) -> std::io::Result<()> {
        let start = offset as usize;
        let slot = self
            .config
            .get_mut(start..start + buf.len())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        slot.copy_from_slice(buf);
        Ok(())
    }

    fn update_memory(&mut self, memory: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.memory = Some(memory);
        self.record.lock().unwrap().memory_updates += 1;
        Ok(())
    }

    fn set_backend_req_fd(&mut self, backend: Backend) {
        self.channel = Some(backend);
        self.record.lock().unwrap().backend_channel = true;
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn stop_vring(&mut self, queue_index: u32) -> std::io::Result<()> {
        self.record.lock().unwrap().stopped.push(queue_index);
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let Some(vring) = vrings.get(usize::from(device_event)) else { return Ok(()) };
        let (ready, enabled, avail) = {
            let state = vring.get_ref();
            (state.get_queue().ready(), state.is_enabled(), state.get_queue().avail_ring())
        };
        let mut consumed = 0;
        if let Some(memory) = &self.memory {
            if let Ok(idx) = memory.memory().read_obj::<u16>(GuestAddress(avail + 2)) {
                vring.set_queue_next_avail(idx);
                consumed = idx;
            }
        }
        // Recorded once the buffers are consumed: a test that saw the kick may stop the ring.
        self.record.lock().unwrap().kicks.push((device_event, ready, enabled, consumed));
        Ok(())
    }
}

/// A `VhostUserDaemon` serving one connection at `path` on a thread.
pub struct Peer {
    pub path: PathBuf,
    pub record: Arc<Mutex<PeerRecord>>,
    pub thread: Option<JoinHandle<Result<(), String>>>,
}

impl Peer {
    /// Starts the daemon; it binds `path` on its thread (see [`connect_retrying`]).
    pub fn spawn(path: &Path) -> Self {
        Self::spawn_with_state(path, None)
    }

    /// [`Peer::spawn`], answering state transfers with `state` (see [`PeerDevice`]).
    pub fn spawn_with_state(path: &Path, state: Option<std::fs::File>) -> Self {
        let _ = std::fs::remove_file(path);
        let record = Arc::new(Mutex::new(PeerRecord::default()));
        let record_here = Arc::clone(&record);
        let device =
            PeerDevice { record: record_here, memory: None, config: CONFIG, channel: None, state };
        let memory = GuestMemoryAtomic::new(GuestMemoryMmap::<()>::new());
        let backend = Arc::new(Mutex::new(device));
        let mut daemon =
            VhostUserDaemon::new("peer".to_owned(), backend, memory).expect("peer daemon");
        let socket = path.to_path_buf();
        let thread = std::thread::spawn(move || daemon.serve(&socket).map_err(|e| e.to_string()));
        Self { path: path.to_path_buf(), record, thread: Some(thread) }
    }

    /// Waits (bounded) until the daemon's connection ended and returns how.
    pub fn join(&mut self, timeout: Duration) -> Result<(), String> {
        let thread = self.thread.take().ok_or("already joined")?;
        for _ in 0..timeout.as_millis() / 2 {
            if thread.is_finished() {
                return thread.join().map_err(|_| "peer panicked".to_owned())?;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err("the peer daemon did not end".to_owned())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connects to `path`, retrying for up to `timeout` while the daemon has not bound it yet.
pub fn connect_retrying(path: &Path, timeout: Duration) -> std::os::unix::net::UnixStream {
    let mut last = None;
    for _ in 0..timeout.as_micros() / 200 {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(stream) => return stream,
            Err(error) => last = Some(error),
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    panic!("connecting to {}: {last:?}", path.display());
}
