//! vhu-rng: a vhost-user entropy device (virtio-rng, virtio spec §5.4) in well under 200 lines,
//! to show how a device is written on vhu.
//!
//! The device has one queue. The guest's driver posts write-only buffers; each is filled from the
//! host's `/dev/urandom` and returned with its length. Everything else — negotiation, memory
//! tables, ring start and stop, REPLY_ACK, reconnection — is the stack's: the device only says
//! what it offers (`spec`), which queue handler runs a started queue, and what one chain means
//! (`ChainService::serve`).
//!
//! ```text
//! cargo run --release -p vhu-transport-std --example vhu-rng -- --socket-path /tmp/rng.sock
//! qemu-system-x86_64 ... -chardev socket,id=rng,path=/tmp/rng.sock \
//!     -device vhost-user-rng-pci,chardev=rng  (guest memory shared: memory-backend-memfd,share=on)
//! ```
//!
//! In the guest, `/dev/hwrng` then reads from the host.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use vhu_transport_std::vhu_core::backend::{BackendSpec, VringConfig};
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::virtq::{
    ChainQueue, ChainService, DescriptorChain, Reader, Virtqueue, Writer,
};
use vhu_transport_std::vm_memory::GuestAddressSpace;
use vhu_transport_std::{
    Daemon, Device, DeviceError, Listen, LoggedMemory, Queue, QueueHandler, Workers,
};

/// The largest ring the device accepts.
const MAX_QUEUE_SIZE: u16 = 1024;

/// Fills each chain's writable buffers with random bytes.
struct Entropy {
    source: File,
}

impl ChainService for Entropy {
    fn serve(
        &mut self,
        _chain: &DescriptorChain,
        _reader: &mut Reader<'_, LoggedMemory>,
        writer: &mut Writer<'_, LoggedMemory>,
    ) {
        let mut bytes = [0u8; 4096];
        while writer.remaining() > 0 {
            let n = writer.remaining().min(bytes.len());
            // A short read of /dev/urandom ends the chain with what was written so far.
            let Ok(()) = self.source.read_exact(&mut bytes[..n]) else { return };
            if writer.write(&bytes[..n]).is_err() {
                return;
            }
        }
    }
}

/// The virtio-rng device.
struct Rng {
    workers: Workers<ChainQueue<Entropy>>,
    features: VirtioFeatures,
}

impl Device for Rng {
    fn spec(&self) -> BackendSpec {
        let mut spec = BackendSpec::new(1, MAX_QUEUE_SIZE);
        spec.features = VirtioFeatures::VERSION_1
            | VirtioFeatures::RING_INDIRECT_DESC
            | VirtioFeatures::RING_EVENT_IDX
            | VirtioFeatures::RING_PACKED
            // Entropy reaches guest memory only through `Writer::write`, which is logged.
            | VirtioFeatures::LOG_ALL;
        // Requests in flight survive a restart of this process: the ring records them.
        spec.protocol_features |= ProtocolFeatures::INFLIGHT_SHMFD | ProtocolFeatures::LOG_SHMFD;
        spec
    }

    fn acked_features(&mut self, features: VirtioFeatures) {
        self.features = features;
    }

    fn start_queue(&mut self, mut queue: Queue) -> Result<(), DeviceError> {
        let indirect = self.features.contains(VirtioFeatures::RING_INDIRECT_DESC);
        let memory = queue.memory.memory();
        let index = queue.index.0;
        let mut ring = Virtqueue::from_config(&queue.config, &*memory, indirect)
            .map_err(|reason| DeviceError::Queue { index, reason })?;
        if let Some(region) = queue.inflight.take() {
            ring.track_inflight(region, &*memory).map_err(|_| DeviceError::Queue {
                index,
                reason: "the inflight region does not fit the ring",
            })?;
        }
        drop(memory);
        let source = File::open("/dev/urandom")?;
        self.workers.start(queue, ChainQueue::new(ring, Entropy { source }))
    }

    fn stop_queue(&mut self, index: VringIndex, drain: bool) -> VringBase {
        self.try_stop_queue(index, drain).unwrap_or(VringBase(0))
    }

    fn try_stop_queue(&mut self, index: VringIndex, _drain: bool) -> Option<VringBase> {
        // `None` when the worker panicked: the session closes rather than guess the base.
        self.workers.stop(index).map(|handler| handler.base())
    }

    fn set_queue_enabled(&mut self, index: VringIndex, enabled: bool) {
        self.workers.set_enabled(index, enabled);
    }

    fn replace_kick(&mut self, index: VringIndex, kick: Option<OwnedFd>) {
        self.workers.replace_kick(index, kick);
    }

    fn kick(&mut self, index: VringIndex) {
        self.workers.kick(index);
    }

    fn update_queue(
        &mut self,
        _index: VringIndex,
        _config: VringConfig,
    ) -> Result<(), DeviceError> {
        // The ring's addresses are fixed while it runs; moving it needs a stop and a start.
        Err(DeviceError::Unsupported)
    }

    fn reset(&mut self) {
        self.workers.stop_all();
        self.features = VirtioFeatures::empty();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let socket = match (args.next().as_deref(), args.next()) {
        (Some("--socket-path"), Some(path)) => PathBuf::from(path),
        _ => {
            eprintln!("usage: vhu-rng --socket-path PATH");
            std::process::exit(2);
        }
    };
    let device = Rng { workers: Workers::new(), features: VirtioFeatures::empty() };
    let mut daemon = match Daemon::new(device, Listen::Path(socket.clone())) {
        Ok(daemon) => daemon,
        Err(error) => {
            eprintln!("vhu-rng: {}: {error}", socket.display());
            std::process::exit(1);
        }
    };
    eprintln!("vhu-rng: waiting for a front-end on {}", socket.display());
    let served = daemon.serve(|end| {
        eprintln!("vhu-rng: front-end gone: {end:?}");
        true
    });
    if let Err(error) = served {
        eprintln!("vhu-rng: {error}");
        std::process::exit(1);
    }
}
