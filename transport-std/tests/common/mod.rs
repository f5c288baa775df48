//! Shared pieces of the daemon tests: a small device that records what it is asked to do, a
//! daemon on a thread, guest memory on memfds, and bounded waits.
#![allow(dead_code, unreachable_pub)]

pub mod frontend;
pub mod peers;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use vhu_transport_std::vhu_core::backend::BackendSpec;
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress, GuestAddressSpace};
use vhu_transport_std::{
    BackendRequests, Daemon, Device, DeviceError, DeviceRequest, Listen, Queue, QueueContext,
    QueueHandler, Workers,
};

/// What a VMM saved of a connection to restore it: VERSION_1 and the protocol features bit
/// acked, with `protocol_features`.
pub fn saved(
    protocol_features: ProtocolFeatures,
) -> vhu_transport_std::vhu_core::frontend::Negotiated {
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    vhu_transport_std::vhu_core::frontend::Negotiated {
        offered_features: features,
        features,
        protocol_features,
        queues: None,
        max_mem_slots: None,
    }
}

/// Every blocking wait in these tests gives up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub const QUEUES: usize = 2;
pub const CONFIG_SIZE: usize = 16;
/// Bytes 0..4 of the config space are read-only for the front-end.
pub const READ_ONLY: usize = 4;

/// What the device was asked to do, for the tests to check.
#[derive(Debug, Default)]
pub struct Record {
    pub starts: Vec<u8>,
    /// Per start, the entries of the inflight region the queue came with.
    pub inflight: Vec<Option<u16>>,
    pub stops: Vec<(u8, u32)>,
    pub resets: usize,
    pub acked: Option<VirtioFeatures>,
    pub loaded: Option<Vec<u8>>,
    pub connections: usize,
    /// Queue workers panic at their next kick (a device losing track of a queue).
    pub die_at_kick: bool,
    /// A worker did.
    pub died: bool,
    /// A reset takes this long (a device with much to tear down).
    pub reset_takes: Option<Duration>,
    /// A reset has begun.
    pub resetting: bool,
}

/// A handler that "consumes" every available buffer: it moves its next-available index to the
/// ring's `avail.idx` in guest memory and signals the call eventfd when it moved.
#[derive(Debug)]
pub struct Consumer {
    next_avail: u16,
    record: Arc<Mutex<Record>>,
}

impl QueueHandler for Consumer {
    fn process(&mut self, queue: &QueueContext) {
        if self.record.lock().unwrap().die_at_kick {
            self.record.lock().unwrap().died = true;
            panic!("the queue's worker dies (as the test asked)");
        }
        let memory = queue.memory.memory();
        let mut idx = [0u8; 2];
        if memory.read_slice(&mut idx, GuestAddress(queue.config.available + 2)).is_err() {
            let _ = queue.err.notify();
            return;
        }
        let idx = u16::from_le_bytes(idx);
        if idx != self.next_avail {
            self.next_avail = idx;
            let _ = queue.call.notify();
        }
    }

    fn base(&self) -> VringBase {
        VringBase::split(self.next_avail)
    }
}

/// The test device: two queues run by [`Consumer`]s, a 16-byte config space, and device state
/// that is the config space itself.
#[derive(Debug)]
pub struct TestDevice {
    pub record: Arc<Mutex<Record>>,
    workers: Workers<Consumer>,
    config: [u8; CONFIG_SIZE],
    requests: Option<BackendRequests>,
}

pub fn initial_config() -> [u8; CONFIG_SIZE] {
    core::array::from_fn(|i| i as u8 + 0xa0)
}

impl TestDevice {
    pub fn new(record: Arc<Mutex<Record>>) -> Self {
        Self { record, workers: Workers::new(), config: initial_config(), requests: None }
    }
}

pub fn protocol_features() -> ProtocolFeatures {
    ProtocolFeatures::MQ
        | ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::CONFIG
        | ProtocolFeatures::BACKEND_REQ
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS
        | ProtocolFeatures::RESET_DEVICE
        | ProtocolFeatures::STATUS
        | ProtocolFeatures::DEVICE_STATE
        | ProtocolFeatures::INFLIGHT_SHMFD
}

impl Device for TestDevice {
    fn spec(&self) -> BackendSpec {
        let mut spec = BackendSpec::new(QUEUES, 256);
        spec.protocol_features = protocol_features();
        spec.config_size = CONFIG_SIZE as u32;
        spec
    }

    fn connected(&mut self, requests: BackendRequests) {
        self.record.lock().unwrap().connections += 1;
        self.requests = Some(requests);
    }

    fn start_queue(&mut self, queue: Queue) -> Result<(), DeviceError> {
        let next_avail = queue.config.base.as_split().unwrap_or(0);
        let mut record = self.record.lock().unwrap();
        record.starts.push(queue.index.0);
        record.inflight.push(queue.inflight.as_ref().map(|region| region.entries()));
        drop(record);
        self.workers.start(queue, Consumer { next_avail, record: Arc::clone(&self.record) })
    }

    fn stop_queue(&mut self, index: VringIndex, drain: bool) -> VringBase {
        self.try_stop_queue(index, drain).unwrap_or(VringBase(0))
    }

    fn try_stop_queue(&mut self, index: VringIndex, _drain: bool) -> Option<VringBase> {
        // `None` when the worker panicked.
        let base = self.workers.stop(index).map(|h| h.base())?;
        self.record.lock().unwrap().stops.push((index.0, base.0));
        Some(base)
    }

    fn set_queue_enabled(&mut self, index: VringIndex, enabled: bool) {
        self.workers.set_enabled(index, enabled);
    }

    fn replace_kick(&mut self, index: VringIndex, kick: Option<OwnedFd>) {
        self.workers.replace_kick(index, kick);
    }

    fn reset(&mut self) {
        let takes = {
            let mut record = self.record.lock().unwrap();
            record.resetting = true;
            record.reset_takes
        };
        if let Some(takes) = takes {
            std::thread::sleep(takes);
        }
        assert!(self.workers.stop_all().is_empty(), "reset with queues running");
        self.config = initial_config();
        let mut record = self.record.lock().unwrap();
        record.resets += 1;
        record.acked = None;
    }

    fn acked_features(&mut self, features: VirtioFeatures) {
        self.record.lock().unwrap().acked = Some(features);
    }

    fn read_config(&self, offset: u32, data: &mut [u8]) -> Result<(), DeviceError> {
        let range = offset as usize..offset as usize + data.len();
        data.copy_from_slice(&self.config[range]);
        Ok(())
    }

    fn write_config(
        &mut self,
        offset: u32,
        data: &[u8],
        migration: bool,
    ) -> Result<(), DeviceError> {
        let offset = offset as usize;
        if offset < READ_ONLY && !migration {
            return Err(DeviceError::Config { offset: offset as u32, size: data.len() });
        }
        self.config[offset..offset + data.len()].copy_from_slice(data);
        if let Some(requests) = &self.requests {
            let _ = requests.push(DeviceRequest::ConfigChange);
        }
        Ok(())
    }

    fn save_state(&mut self, out: &mut dyn Write) -> Result<(), DeviceError> {
        out.write_all(b"state:")?;
        out.write_all(&self.config)?;
        Ok(())
    }

    fn load_state(&mut self, input: &mut dyn Read) -> Result<(), DeviceError> {
        let mut bytes = Vec::new();
        input.take(4096).read_to_end(&mut bytes)?;
        let state = bytes.strip_prefix(b"state:").ok_or(DeviceError::InvalidState("prefix"))?;
        self.config = state.try_into().map_err(|_| DeviceError::InvalidState("length"))?;
        self.record.lock().unwrap().loaded = Some(bytes);
        Ok(())
    }
}

/// A daemon serving a [`TestDevice`] on a thread; each ended connection is reported on `ended`.
pub struct Served {
    pub path: PathBuf,
    pub record: Arc<Mutex<Record>>,
    pub ended: Receiver<String>,
    pub thread: JoinHandle<()>,
}

impl Served {
    /// Waits until `n` more connections have ended and returns how each ended.
    pub fn wait_ended(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| self.ended.recv_timeout(TIMEOUT).unwrap_or_else(|e| panic!("end {i}: {e}")))
            .collect()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("vhu-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Starts a daemon at a fresh path.
pub fn serve(name: &str) -> Served {
    let path = socket_path(name);
    let record = Arc::new(Mutex::new(Record::default()));
    let device = TestDevice::new(Arc::clone(&record));
    let mut daemon = Daemon::new(device, Listen::Path(path.clone())).expect("daemon");
    let (tx, ended) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = daemon.serve(|end| tx.send(format!("{end:?}")).is_ok());
    });
    Served { path, record, ended, thread }
}

pub fn memfd(len: u64) -> OwnedFd {
    let fd = memfd_create("guest-ram", MemfdFlags::CLOEXEC).expect("memfd");
    ftruncate(&fd, len).expect("ftruncate");
    fd
}

/// Waits until `fd` is readable, at most [`TIMEOUT`].
pub fn readable(fd: impl AsFd) -> bool {
    let timeout = Timespec { tv_sec: TIMEOUT.as_secs() as i64, tv_nsec: 0 };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&timeout)), Ok(1))
}

/// Polls `condition` every 5 ms for at most [`TIMEOUT`].
pub fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..(TIMEOUT.as_millis() / 5) {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}
