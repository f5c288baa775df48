//! The guest's side of virtio-fs, over vhu's front-end client: what a VMM and a guest kernel do
//! together, so a test or a benchmark can drive any vhost-user-fs back-end (vhu-fsd, virtiofsd)
//! through its socket without booting a VM.
//!
//! [`GuestFs::connect`] negotiates vhost-user, shares memfd guest memory, starts the first
//! request queue as a split ring and sends FUSE INIT as a Linux guest does; [`GuestFs::call`]
//! then sends one request at a time and returns the reply, checking what the virtio-fs device
//! must get right (the `unique`, the length the used ring reports against the header).
//! [`GuestFs::connect_with`] starts several request queues, each a [`GuestRing`] with many
//! requests in flight, and [`GuestFs::into_parts`] hands them to a driver's threads.
//! [`GuestFs::migrate_to`] moves the guest to another back-end process as a VMM's live migration
//! does (dirty logging, rings stopped, device state saved and loaded). It owns the guest's rings
//! and buffers; it does not interpret replies beyond their header.

mod dax;
mod layout;
mod migrate;
mod ring;
mod span;

pub use crate::device::dax::DAX_RANGE;
pub use dax::{remove_mapping_body, setup_mapping_args};
pub use layout::{Pages, RingLayout};
pub use migrate::Migrated;
pub use ring::{Completed, GuestRing};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhu_transport_std::client::{Client, ClientError, GuestRegion, ShmemRegion};
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use zerocopy::{FromBytes, IntoBytes};

use crate::fuse::abi::{
    EntryOut, InHeader, InitFlags, InitIn, InitOut, OpenIn, OpenOut, OutHeader, ReadIn,
    KERNEL_MINOR_VERSION, KERNEL_VERSION,
};
use crate::fuse::Opcode;

/// Guest memory size of [`GuestFs::connect`].
const RAM: u64 = 4 << 20;
/// The ring of [`GuestFs::connect`]: one request at a time, up to 960 KiB out and 2 MiB back.
pub const ONE_AT_A_TIME: RingLayout = RingLayout {
    ring: 0x1000,
    size: 128,
    slots: 1,
    buffers: 0x1_0000,
    request_max: 0xf_0000,
    reply_max: 0x20_0000,
};
/// How long a reply may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The flags a current Linux guest offers in INIT.
pub fn linux_guest_flags() -> InitFlags {
    let all_low =
        InitFlags::from_bits_retain(0x7fff_ffff) - InitFlags::FILE_OPS - InitFlags::MAP_ALIGNMENT;
    all_low
        | InitFlags::SECURITY_CTX
        | InitFlags::HAS_INODE_DAX
        | InitFlags::CREATE_SUPP_GROUP
        | InitFlags::HAS_EXPIRE_ONLY
        | InitFlags::DIRECT_IO_ALLOW_MMAP
        | InitFlags::NO_EXPORT_SUPPORT
        | InitFlags::HAS_RESEND
        | InitFlags::ALLOW_IDMAP
        | InitFlags::REQUEST_TIMEOUT
}

/// What went wrong talking to the device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestError {
    /// The vhost-user connection failed.
    #[error("vhost-user: {0}")]
    Client(#[from] ClientError),
    /// Guest memory could not be read or written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// No reply in time.
    #[error("no reply to {opcode:?} within {TIMEOUT:?}")]
    Timeout {
        /// The request.
        opcode: Opcode,
    },
    /// The device broke a virtio-fs rule.
    #[error("bad reply to {opcode:?}: {what}")]
    BadReply {
        /// The request.
        opcode: Opcode,
        /// Which rule.
        what: String,
    },
    /// The request failed with this errno.
    #[error("{opcode:?} failed: errno {errno}")]
    Errno {
        /// The request.
        opcode: Opcode,
        /// The error, positive.
        errno: i32,
    },
    /// A request or reply larger than the buffers.
    #[error("{0} bytes do not fit the guest's buffers")]
    TooLarge(usize),
    /// A migration cannot go on.
    #[error("migration: {0}")]
    Migration(&'static str),
}

/// A guest with a virtio-fs device; see the module docs.
#[derive(Debug)]
pub struct GuestFs {
    client: Client,
    ram: GuestRegion,
    /// Request queues 1, 2, ...: INIT and [`GuestFs::call`] go through the first.
    rings: Vec<GuestRing>,
    unique: u64,
    init: InitOut,
    /// The (uid, gid) requests come from.
    caller: (u32, u32),
    /// The device's DAX window, when it offers one and the front-end side maps it.
    dax: Option<Arc<ShmemRegion>>,
}

/// A client connected to `socket`, with the guest's timeout.
fn client_of(socket: impl AsRef<Path>) -> Result<Client, GuestError> {
    let mut client = Client::connect(socket)?;
    client.set_timeout(TIMEOUT)?;
    Ok(client)
}

impl GuestFs {
    /// Connects to a back-end's socket, sets the device up and mounts (FUSE INIT).
    pub fn connect(socket: impl AsRef<Path>) -> Result<Self, GuestError> {
        Self::with_client(client_of(socket)?)
    }

    /// The same over a connected client.
    pub fn with_client(client: Client) -> Result<Self, GuestError> {
        Self::in_memory(client, GuestRegion::new(0, RAM)?, &[ONE_AT_A_TIME])
    }

    /// Connects with `ram` bytes of guest memory and one request queue per layout (queues 1,
    /// 2, ...; the layouts must not overlap), and mounts through the first.
    pub fn connect_with(
        socket: impl AsRef<Path>,
        ram: u64,
        layouts: &[RingLayout],
    ) -> Result<Self, GuestError> {
        Self::connect_in(socket, GuestRegion::new(0, ram)?, layouts)
    }

    /// Connects with `ram` as guest memory (its own file: [`GuestRegion::from_file`]) and one
    /// request queue per layout, as [`GuestFs::connect_with`] does.
    pub fn connect_in(
        socket: impl AsRef<Path>,
        ram: GuestRegion,
        layouts: &[RingLayout],
    ) -> Result<Self, GuestError> {
        Self::in_memory(client_of(socket)?, ram, layouts)
    }

    fn in_memory(
        mut client: Client,
        ram: GuestRegion,
        layouts: &[RingLayout],
    ) -> Result<Self, GuestError> {
        // What a Linux guest's virtio-fs driver accepts.
        let features = VirtioFeatures::VERSION_1
            | VirtioFeatures::PROTOCOL_FEATURES
            | VirtioFeatures::RING_EVENT_IDX
            | VirtioFeatures::RING_INDIRECT_DESC;
        let protocol = ProtocolFeatures::MQ
            | ProtocolFeatures::REPLY_ACK
            | ProtocolFeatures::CONFIGURE_MEM_SLOTS
            | ProtocolFeatures::LOG_SHMFD
            | ProtocolFeatures::DEVICE_STATE
            | ProtocolFeatures::RESET_DEVICE
            // A DAX window, if the device has one (`dax`).
            | ProtocolFeatures::BACKEND_REQ
            | ProtocolFeatures::BACKEND_SEND_FD
            | ProtocolFeatures::SHMEM;
        let negotiated = client.handshake(features, protocol)?;
        let dax = dax::window(&mut client, negotiated.protocol_features)?;
        let event_idx = negotiated.features.contains(VirtioFeatures::RING_EVENT_IDX);
        let indirect = negotiated.features.contains(VirtioFeatures::RING_INDIRECT_DESC);
        client.set_mem_table(&[ram.share()])?;
        let mut rings = Vec::new();
        for (i, layout) in layouts.iter().enumerate() {
            let ring = GuestRing::new(ram.memory().clone(), *layout, (event_idx, indirect))?;
            let index = u8::try_from(i + 1).map_err(|_| GuestError::TooLarge(i + 1))?;
            client.start_vring(VringIndex(index), ring.start(ram.host_address(layout.ring)?))?;
            rings.push(ring);
        }
        if rings.is_empty() {
            return Err(GuestError::TooLarge(0));
        }
        // Linux offers MAP_ALIGNMENT when the device has a DAX window.
        let offered = match dax {
            Some(_) => linux_guest_flags() | InitFlags::MAP_ALIGNMENT,
            None => linux_guest_flags(),
        };
        let mut guest =
            Self { client, ram, rings, unique: 0, init: InitOut::default(), caller: (0, 0), dax };
        let init = InitIn {
            major: KERNEL_VERSION,
            minor: KERNEL_MINOR_VERSION,
            max_readahead: 128 * 1024,
            flags: offered.bits() as u32,
            flags2: (offered.bits() >> 32) as u32,
            ..InitIn::default()
        };
        let reply = guest.call(Opcode::Init, 0, init.as_bytes())?;
        guest.init = InitOut::read_from_prefix(&reply)
            .map_err(|_| guest.bad(Opcode::Init, "short init_out"))?
            .0;
        Ok(guest)
    }

    /// What INIT answered.
    pub fn init_out(&self) -> &InitOut {
        &self.init
    }

    /// The vhost-user client.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    fn bad(&self, opcode: Opcode, what: &str) -> GuestError {
        GuestError::BadReply { opcode, what: what.into() }
    }

    /// Requests from now on come from this guest user (root, 0/0, at first).
    pub fn set_caller(&mut self, uid: u32, gid: u32) {
        self.caller = (uid, gid);
    }

    /// Sends one request as the current caller and returns the reply's payload (after the
    /// header); an error reply is [`GuestError::Errno`].
    pub fn call(
        &mut self,
        opcode: Opcode,
        nodeid: u64,
        body: &[u8],
    ) -> Result<Vec<u8>, GuestError> {
        let room = self.rings[0].layout().reply_max;
        self.call_with_room(opcode, nodeid, body, room)
    }

    /// [`GuestFs::call`] with `room` bytes for the reply (header included), as a Linux guest
    /// gives a READ exactly the pages it asked for.
    pub fn call_with_room(
        &mut self,
        opcode: Opcode,
        nodeid: u64,
        body: &[u8],
        room: u32,
    ) -> Result<Vec<u8>, GuestError> {
        self.unique += 2;
        let header = InHeader {
            opcode: opcode as u32,
            unique: self.unique,
            nodeid,
            uid: self.caller.0,
            gid: self.caller.1,
            ..InHeader::default()
        };
        let ring = &mut self.rings[0];
        ring.submit(header, &[body], room)?;
        ring.kick()?;
        // With a back-end channel open, the device may ask the VMM something (a DAX mapping)
        // before it answers: the channel is served while the reply is awaited.
        let serve = self.client.has_backend_channel();
        let slice = if serve { Duration::from_millis(2) } else { TIMEOUT };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(done) = self.rings[0].complete(slice)? {
                if done.errno != 0 {
                    return Err(GuestError::Errno { opcode, errno: done.errno });
                }
                return Ok(done.payload.to_vec());
            }
            if Instant::now() >= deadline {
                return Err(GuestError::Timeout { opcode });
            }
            if serve {
                self.client.serve_backend_channel()?;
            }
        }
    }

    /// The vhost-user client, guest memory and request queues, for a driver that keeps many
    /// requests in flight on several threads (the client must outlive the rings' use: dropping
    /// it disconnects).
    pub fn into_parts(self) -> (Client, GuestRegion, Vec<GuestRing>) {
        (self.client, self.ram, self.rings)
    }

    /// LOOKUP of `name` in `parent`.
    pub fn lookup(&mut self, parent: u64, name: &str) -> Result<EntryOut, GuestError> {
        let mut body = name.as_bytes().to_vec();
        body.push(0);
        let reply = self.call(Opcode::Lookup, parent, &body)?;
        EntryOut::read_from_prefix(&reply)
            .map(|(entry, _)| entry)
            .map_err(|_| self.bad(Opcode::Lookup, "short entry_out"))
    }

    /// OPEN of `node` with `open(2)` flags; returns the file handle.
    pub fn open(&mut self, node: u64, flags: u32) -> Result<u64, GuestError> {
        let reply = self.call(Opcode::Open, node, OpenIn { flags, open_flags: 0 }.as_bytes())?;
        OpenOut::read_from_prefix(&reply)
            .map(|(open, _)| open.fh)
            .map_err(|_| self.bad(Opcode::Open, "short open_out"))
    }

    /// READ of `size` bytes at `offset`.
    pub fn read(
        &mut self,
        node: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, GuestError> {
        let read = ReadIn { fh, offset, size, ..ReadIn::default() };
        let room = size.saturating_add(size_of::<OutHeader>() as u32);
        self.call_with_room(Opcode::Read, node, read.as_bytes(), room)
    }
}
