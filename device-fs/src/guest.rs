//! The guest's side of virtio-fs, over vhu's front-end client: what a VMM and a guest kernel do
//! together, so a test or a benchmark can drive any vhost-user-fs back-end (vhu-fsd, virtiofsd)
//! through its socket without booting a VM.
//!
//! [`GuestFs::connect`] negotiates vhost-user, shares memfd guest memory, starts the first
//! request queue as a split ring and sends FUSE INIT as a Linux guest does; [`GuestFs::call`]
//! then sends one request at a time and returns the reply, checking what the virtio-fs device
//! must get right (the `unique`, the length the used ring reports against the header). It owns
//! the guest's ring and buffers; it does not interpret replies beyond their header.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use vhu_transport_std::client::{eventfd, Client, ClientError, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress};
use zerocopy::{FromBytes, IntoBytes};

use crate::fuse::abi::{
    EntryOut, InHeader, InitFlags, InitIn, InitOut, OpenIn, OpenOut, OutHeader, ReadIn,
    KERNEL_MINOR_VERSION, KERNEL_VERSION,
};
use crate::fuse::Opcode;

/// Guest memory size.
const RAM: u64 = 4 << 20;
/// The ring (descriptor table, available and used rings).
const RING: u64 = 0x1000;
/// Entries in the ring.
const QUEUE_SIZE: u16 = 128;
/// The request buffer (device-readable).
const REQUEST: u64 = 0x1_0000;
/// Most request bytes.
const REQUEST_MAX: u32 = 0x10_0000 - 0x1_0000;
/// The reply buffer (device-writable).
const REPLY: u64 = 0x10_0000;
/// Most reply bytes.
const REPLY_MAX: u32 = 0x20_0000;
/// The first request queue (queue 0 is the high-priority queue).
const REQUEST_QUEUE: VringIndex = VringIndex(1);
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
}

/// A guest with a virtio-fs device; see the module docs.
#[derive(Debug)]
pub struct GuestFs {
    client: Client,
    ram: GuestRegion,
    call: OwnedFd,
    kick: OwnedFd,
    next_avail: u16,
    used_seen: u16,
    unique: u64,
    init: InitOut,
    /// The (uid, gid) requests come from.
    caller: (u32, u32),
}

impl GuestFs {
    /// Connects to a back-end's socket, sets the device up and mounts (FUSE INIT).
    pub fn connect(socket: impl AsRef<Path>) -> Result<Self, GuestError> {
        let mut client = Client::connect(socket)?;
        client.set_timeout(TIMEOUT)?;
        Self::with_client(client)
    }

    /// The same over a connected client.
    pub fn with_client(mut client: Client) -> Result<Self, GuestError> {
        let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
        let protocol = ProtocolFeatures::MQ
            | ProtocolFeatures::REPLY_ACK
            | ProtocolFeatures::CONFIGURE_MEM_SLOTS;
        client.handshake(features, protocol)?;
        let ram = GuestRegion::new(0, RAM)?;
        client.set_mem_table(&[ram.share()])?;
        let (call, kick) = (eventfd()?, eventfd()?);
        let descriptor = ram.host_address(RING)?;
        let start = VringStart::split(QUEUE_SIZE, descriptor, call.as_fd(), kick.as_fd());
        client.start_vring(REQUEST_QUEUE, start)?;
        let mut guest = Self {
            client,
            ram,
            call,
            kick,
            next_avail: 0,
            used_seen: 0,
            unique: 0,
            init: InitOut::default(),
            caller: (0, 0),
        };
        let init = InitIn {
            major: KERNEL_VERSION,
            minor: KERNEL_MINOR_VERSION,
            max_readahead: 128 * 1024,
            flags: linux_guest_flags().bits() as u32,
            flags2: (linux_guest_flags().bits() >> 32) as u32,
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

    fn mem<T>(&self, r: Result<T, impl std::fmt::Display>) -> Result<T, GuestError> {
        r.map_err(|e| GuestError::Memory(e.to_string()))
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
        let len = size_of::<InHeader>() + body.len();
        if len > REQUEST_MAX as usize {
            return Err(GuestError::TooLarge(len));
        }
        self.unique += 2;
        let header = InHeader {
            len: len as u32,
            opcode: opcode as u32,
            unique: self.unique,
            nodeid,
            uid: self.caller.0,
            gid: self.caller.1,
            ..InHeader::default()
        };
        let memory = self.ram.memory();
        self.mem(memory.write_slice(header.as_bytes(), GuestAddress(REQUEST)))?;
        self.mem(memory.write_slice(body, GuestAddress(REQUEST + size_of::<InHeader>() as u64)))?;
        // One chain: the request (readable), then the reply buffer (writable).
        let table = RING;
        self.write_desc(table, 0, REQUEST, len as u32, 1, 1)?;
        self.write_desc(table, 1, REPLY, REPLY_MAX, 2, 0)?;
        let avail = RING + 16 * u64::from(QUEUE_SIZE);
        let slot = u64::from(self.next_avail % QUEUE_SIZE);
        self.mem(memory.write_obj(0u16, GuestAddress(avail + 4 + 2 * slot)))?;
        self.next_avail = self.next_avail.wrapping_add(1);
        fence(Ordering::SeqCst);
        self.mem(memory.write_obj(self.next_avail, GuestAddress(avail + 2)))?;
        fence(Ordering::SeqCst);
        rustix::io::write(&self.kick, &1u64.to_ne_bytes())
            .map_err(|e| GuestError::Memory(format!("kick: {e}")))?;
        let written = self.wait_used(opcode)?;
        if written > REPLY_MAX {
            return Err(
                self.bad(opcode, &format!("{written} bytes used of a {REPLY_MAX}-byte buffer"))
            );
        }
        let mut out = vec![0u8; written as usize];
        self.mem(self.ram.memory().read_slice(&mut out, GuestAddress(REPLY)))?;
        let (head, payload) =
            OutHeader::read_from_prefix(&out).map_err(|_| self.bad(opcode, "short header"))?;
        if head.unique != self.unique {
            return Err(self.bad(opcode, &format!("unique {} for {}", head.unique, self.unique)));
        }
        if head.len as usize != out.len() {
            return Err(self.bad(opcode, &format!("header says {}, ring {}", head.len, out.len())));
        }
        if head.error != 0 {
            return Err(GuestError::Errno { opcode, errno: -head.error });
        }
        Ok(payload.to_vec())
    }

    fn write_desc(
        &self,
        table: u64,
        i: u64,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), GuestError> {
        let mut desc = [0u8; 16];
        desc[..8].copy_from_slice(&addr.to_le_bytes());
        desc[8..12].copy_from_slice(&len.to_le_bytes());
        desc[12..14].copy_from_slice(&flags.to_le_bytes());
        desc[14..].copy_from_slice(&next.to_le_bytes());
        self.mem(self.ram.memory().write_slice(&desc, GuestAddress(table + 16 * i)))
    }

    /// Waits for the used ring to move on; returns the bytes written.
    fn wait_used(&mut self, opcode: Opcode) -> Result<u32, GuestError> {
        let used = (RING + 16 * u64::from(QUEUE_SIZE) + 6 + 2 * u64::from(QUEUE_SIZE) + 3) & !3;
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let idx: u16 = self.mem(self.ram.memory().read_obj(GuestAddress(used + 2)))?;
            if idx != self.used_seen {
                fence(Ordering::SeqCst);
                let slot = u64::from(self.used_seen % QUEUE_SIZE);
                let entry = used + 4 + 8 * slot;
                let len: u32 = self.mem(self.ram.memory().read_obj(GuestAddress(entry + 4)))?;
                self.used_seen = self.used_seen.wrapping_add(1);
                return Ok(len);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(GuestError::Timeout { opcode });
            }
            let timeout =
                rustix::event::Timespec { tv_sec: left.as_secs().min(1) as i64, tv_nsec: 0 };
            let mut fds = [rustix::event::PollFd::new(&self.call, rustix::event::PollFlags::IN)];
            if matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(1)) {
                let _ = rustix::io::read(&self.call, &mut [0u8; 8]);
            }
        }
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
        self.call(Opcode::Read, node, read.as_bytes())
    }
}
