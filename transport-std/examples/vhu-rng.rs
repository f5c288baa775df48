//! vhu-rng: a vhost-user entropy device (virtio-rng, virtio spec §5.4) in well under 200 lines,
//! to show how a device is written on vhu.
//!
//! The device has one queue. The guest's driver posts write-only buffers; each is filled from the
//! host's entropy (`getrandom(2)`, up to 64 KiB a chain) and returned with its length.
//! Everything else — negotiation, memory tables, ring start and stop, REPLY_ACK, dirty logging,
//! reconnection — is the stack's: the device only says what it offers (`spec`), which queue
//! handler runs a started queue, and what one chain means (`ChainService::serve`).
//!
//! ```text
//! cargo run --release -p vhu-transport-std --example vhu-rng -- --socket-path /tmp/rng.sock
//! qemu-system-x86_64 ... -chardev socket,id=rng,path=/tmp/rng.sock \
//!     -device vhost-user-rng-pci,chardev=rng  (guest memory shared: memory-backend-memfd,share=on)
//! ```
//!
//! In the guest, `/dev/hwrng` then reads from the host.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::io::Errno;
use rustix::rand::{getrandom, GetRandomFlags};

use vhu_transport_std::vhu_core::backend::{BackendSpec, VringConfig};
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::virtq::{
    ChainQueue, ChainService, DescriptorChain, Reader, Virtqueue, Writer,
};
use vhu_transport_std::vm_memory::GuestAddressSpace;
use vhu_transport_std::{
    Daemon, Device, DeviceError, Listen, LoggedMemory, Queue, QueueHandler, QueueStopped, Workers,
};

/// The largest ring the device accepts.
const MAX_QUEUE_SIZE: u16 = 1024;

/// The most one chain gets: a driver may post buffers of gigabytes, and a stop waits for the
/// chain being filled. The device may use less than a buffer's length (virtio spec 5.4.6.1).
const MAX_PER_CHAIN: usize = 64 * 1024;

/// Fills each chain's writable buffers with random bytes.
struct Entropy;

impl ChainService for Entropy {
    fn serve(
        &mut self,
        _chain: &DescriptorChain,
        _reader: &mut Reader<'_, LoggedMemory>,
        writer: &mut Writer<'_, LoggedMemory>,
    ) {
        let mut bytes = [0u8; 4096];
        let mut left = writer.remaining().min(MAX_PER_CHAIN);
        while left > 0 {
            let n = left.min(bytes.len());
            // Never waiting: before the host's pool is ready a wait could last, holding the ring
            // and any stop of it.
            match getrandom(&mut bytes[..n], GetRandomFlags::NONBLOCK) {
                Ok(got) if writer.write(&bytes[..got]).is_ok() => left -= got,
                // Guest memory that cannot be written ends the chain with what it holds.
                Ok(_) => return,
                Err(Errno::INTR) => {}
                // The pool is not ready yet: the chain goes back with what it holds (possibly
                // nothing, which the guest's driver takes as "try again later").
                Err(Errno::AGAIN) => return,
                Err(error) => {
                    eprintln!("vhu-rng: no entropy from the host: {error}");
                    return;
                }
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
        self.workers.start(queue, ChainQueue::new(ring, Entropy))
    }

    fn stop_queue(&mut self, index: VringIndex, drain: bool) -> VringBase {
        self.try_stop_queue(index, drain).unwrap_or(VringBase(0))
    }

    fn try_stop_queue(&mut self, index: VringIndex, _drain: bool) -> Option<VringBase> {
        // `None` when the worker panicked: the session closes rather than guess the base.
        self.workers.stop(index).map(|handler| handler.base())
    }

    fn stop_queue_then(&mut self, index: VringIndex, _drain: bool, done: QueueStopped) {
        // An event loop serving this device (transport-mio) does not wait for the chain being
        // filled. A worker that is gone drops `done` unused: the session closes.
        self.workers.stop_then(index, move |handler| done.stopped(handler.base()));
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
        index: VringIndex,
        config: VringConfig,
        logging_only: bool,
    ) -> Result<(), DeviceError> {
        // A migration switches used-ring logging this way; moving a running ring is refused.
        self.workers.update_logging(index, config, logging_only)
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
