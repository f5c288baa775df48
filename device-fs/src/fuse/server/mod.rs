//! The FUSE request dispatcher: one request in, at most one reply out.
//!
//! [`Server::handle`] reads the `fuse_in_header` and the request body from a [`RequestReader`],
//! dispatches on the opcode to one small function per operation (grouped by concern in the sibling
//! files), and writes exactly one reply — header and payload with an exact `len` — to a
//! [`ReplyWriter`], or nothing for FORGET, BATCH_FORGET and INTERRUPT. A malformed request gets an
//! errno reply; only a request whose header cannot be read, or a reply that does not fit, is a
//! [`ServerError`]. This module does not touch virtqueues or the host file system.

mod dax_ops;
mod dir_ops;
mod entry_ops;
mod file_ops;
mod init;
mod lock_ops;
mod reply;
mod request;
mod xattr_ops;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use rustix::io::Errno;
use zerocopy::{FromBytes, IntoBytes};

use super::abi::{InHeader, InitFlags, OutHeader, WriteIn};
use super::filesystem::FileSystem;
use super::io::{ReplyWriter, RequestReader, TransportError};
use super::lock::Cancel;
use super::opcode::Opcode;
use super::window::Window;
pub use init::{SessionMismatch, SessionState};
use reply::{answer, encode_reply};
use request::Request;

/// Page size the guest counts `max_pages` in.
pub const PAGE_SIZE: u32 = 4096;
/// Pages the Linux guest reserves per request for headers (`FUSE_HEADER_OVERHEAD`).
pub const QUEUE_HEADER_OVERHEAD: u16 = 4;
/// Upper bound on `max_pages` (1 MiB requests).
pub const MAX_PAGES_LIMIT: u16 = 256;
/// Body bytes a request may have beyond `max_write` (argument structs, names, extensions).
const BODY_SLACK: usize = 8192;
/// The largest argument Linux sends whole whatever `max_pages`: an extended attribute's value
/// (`XATTR_SIZE_MAX`), or a page of REMOVEMAPPING entries on a 64 KiB-page guest.
const LARGEST_ARGUMENT: usize = 65536;
/// The largest page a Linux guest counts `max_pages` in (arm64 and ppc64 kernels use 64 KiB):
/// it may READ that many of its pages at once.
const LARGEST_GUEST_PAGE: u32 = 65536;

/// Limits the server announces in INIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest request in pages (`max_pages`).
    pub max_pages: u16,
    /// Refuse every request that would change the file system with EROFS (`--readonly`).
    pub read_only: bool,
}

impl ServerConfig {
    /// Limits a queue of `queue_size` descriptors can carry: the guest needs one descriptor per page
    /// plus its header overhead, so at most `queue_size - 4` pages.
    pub fn for_queue_size(queue_size: u16) -> Self {
        let pages = queue_size.saturating_sub(QUEUE_HEADER_OVERHEAD);
        Self { max_pages: pages.clamp(1, MAX_PAGES_LIMIT), read_only: false }
    }

    /// Largest WRITE payload: `max_pages` pages (INIT's `max_write`).
    pub fn max_write(&self) -> u32 {
        u32::from(self.max_pages) * PAGE_SIZE
    }

    /// Largest READ payload the server fills: `max_pages` of the guest's own pages, which may
    /// be larger than 4 KiB (a READ also stops at the room its reply buffers have).
    pub fn max_read(&self) -> u32 {
        u32::from(self.max_pages) * LARGEST_GUEST_PAGE
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::for_queue_size(128)
    }
}

/// A request that could not be answered at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Fewer than 40 readable bytes: there is no header, hence no `unique` to answer.
    #[error("request has {got} readable bytes, less than a fuse_in_header")]
    ShortHeader {
        /// Readable bytes.
        got: usize,
    },
    /// The writable part cannot hold the reply.
    #[error("reply of {need} bytes does not fit {have} writable bytes")]
    ReplyTooLarge {
        /// Reply size.
        need: usize,
        /// Writable bytes.
        have: usize,
    },
    /// Moving bytes failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// What the session negotiated in INIT.
#[derive(Clone, Copy, Debug, Default)]
struct Session {
    initialized: bool,
    minor: u32,
    /// What the guest offered in INIT (empty before).
    offered: InitFlags,
    flags: Option<InitFlags>,
}

/// Where replies go that are sent after [`Server::handle_with`] returned (a SETLKW granted
/// later). The transport puts the reply into the request's buffers and completes it.
pub trait Defer: Send + Sync {
    /// The whole reply (`fuse_out_header` and payload) to the request `unique`, which
    /// [`Defer::hold`] made room for.
    fn complete(&self, unique: u64, reply: Vec<u8>);

    /// Makes room for one more request answered later; false when there is none. A deferred
    /// request keeps its chain in the ring until it is answered, so a queue must keep room for
    /// the requests that would end the waits (the unlock, the close): were the ring full of
    /// waits, the guest could send none of them and every request on it would wait for good.
    /// Room is given back by [`Defer::complete`], or by [`Defer::unhold`] when the request
    /// was answered at once after all.
    fn hold(&self) -> bool {
        true
    }

    /// Gives back the room [`Defer::hold`] made, for a request answered at once after all.
    fn unhold(&self) {}
}

/// What [`Server::handle_with`] did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Replied now with this many bytes (0: no reply is due, as for FORGET).
    Replied(usize),
    /// The reply will go to the [`Defer`] later, under this `unique`.
    Deferred(u64),
}

/// What a per-opcode function produced.
// One lives per request, on the stack; small payloads inline spare it a heap allocation.
#[allow(clippy::large_enum_variant)]
enum Reply {
    /// Send nothing (FORGET and friends).
    None,
    /// Send nothing now: the reply to this `unique` goes to the [`Defer`] later.
    Deferred(u64),
    /// Send a success reply with this payload.
    Payload(Vec<u8>),
    /// Send a success reply with this small payload.
    Inline(Inline),
    /// Send a success reply whose payload, this many bytes, is already in place behind the
    /// header (a READ's data, read straight into the reply's buffers).
    Placed(usize),
}

impl Reply {
    fn empty() -> Self {
        Self::Payload(Vec::new())
    }

    #[inline]
    fn of<T: IntoBytes + zerocopy::Immutable>(value: &T) -> Self {
        Self::of_parts(&[value.as_bytes()])
    }

    /// A payload of these parts: held inline when it is small (every fixed reply struct is).
    #[inline]
    fn of_parts(parts: &[&[u8]]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > INLINE_REPLY {
            return Self::Payload(parts.concat());
        }
        let mut inline = Inline { bytes: [0; INLINE_REPLY], len: 0 };
        for part in parts {
            inline.bytes[inline.len..inline.len + part.len()].copy_from_slice(part);
            inline.len += part.len();
        }
        Self::Inline(inline)
    }
}

/// Bytes a reply payload may have to be held without a heap allocation.
const INLINE_REPLY: usize = 320;

/// A small reply payload, held in place.
struct Inline {
    bytes: [u8; INLINE_REPLY],
    len: usize,
}

/// Bytes of a request body read onto the stack (READ, WRITE's arguments, GETATTR, LOOKUP and
/// most other requests fit); larger bodies go to [`BODY`].
const SMALL_BODY: usize = 128;

thread_local! {
    /// Each server thread's request body buffer for bodies larger than [`SMALL_BODY`].
    static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

type OpResult = Result<Reply, Errno>;

/// A request's two streams, and where a deferred reply goes.
struct Streams<'a, R, W> {
    reader: &'a mut R,
    writer: &'a mut W,
    defer: Option<&'a Arc<dyn Defer>>,
}

/// What READ and WRITE move in place: the reply's buffers, and the request's bytes not read
/// into the body (a WRITE's data).
struct Data<'a, R, W> {
    reader: &'a mut R,
    /// Bytes of a WRITE's data left in the reader (`None`: the data is in the body).
    unread: Option<usize>,
    writer: &'a mut W,
}

/// The body length the header announces.
fn read_len(header: &InHeader) -> usize {
    (header.len as usize).saturating_sub(size_of::<InHeader>())
}

/// A FUSE server over a [`FileSystem`].
pub struct Server<F: FileSystem> {
    fs: F,
    config: ServerConfig,
    /// `max_pages`, set from the request queues' size as they start.
    max_pages: AtomicU16,
    session: Mutex<Session>,
    /// `session.initialized`, read by every request without taking the lock.
    initialized: AtomicBool,
    /// SETLKW requests being waited for, by `unique`.
    waiting: Arc<Mutex<HashMap<u64, Cancel>>>,
    /// SETLKW waits that have ended and are posting their outcome, by `unique` (see
    /// `lock_ops`): out of `waiting`, as the guest may reuse the unique once it has the reply.
    ending: Arc<Mutex<Vec<(u64, Cancel)>>>,
    /// INTERRUPTs that came before the request they name (see `lock_ops`); taken with
    /// `waiting` held.
    interrupted_early: Mutex<std::collections::VecDeque<u64>>,
    /// The DAX window, if the device has one (see `dax_ops`).
    window: Option<Arc<dyn Window>>,
    /// What is mapped in the window, held across each mapping operation.
    mappings: Mutex<dax_ops::Mappings>,
    /// How many times the window was emptied for a session's end (see `dax_ops`).
    window_era: std::sync::atomic::AtomicU64,
}

impl<F: FileSystem> Server<F> {
    /// A server for `fs` with the given limits.
    pub fn new(fs: F, config: ServerConfig) -> Self {
        Self {
            fs,
            config,
            max_pages: AtomicU16::new(config.max_pages),
            session: Mutex::new(Session::default()),
            initialized: AtomicBool::new(false),
            waiting: Arc::new(Mutex::new(HashMap::new())),
            ending: Arc::new(Mutex::new(Vec::new())),
            interrupted_early: Mutex::new(std::collections::VecDeque::new()),
            window: None,
            mappings: Mutex::new(dax_ops::Mappings::new()),
            window_era: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Serves SETUPMAPPING and REMOVEMAPPING with `window` (announcing MAP_ALIGNMENT in INIT to
    /// a guest that looks for a window).
    pub fn with_window(mut self, window: Arc<dyn Window>) -> Self {
        self.window = Some(window);
        self
    }

    /// Ends the session as DESTROY does: the file system drops every node and handle, and the
    /// next request must be INIT. For a device reset or a front-end that went away.
    pub fn reset(&self) {
        // The front-end dropped the window's mappings with the device: forgotten once the
        // session has ended, as DESTROY empties the window (`dax_ops`).
        self.end_session();
        self.forget_mappings();
    }

    /// What ends a session, before its window's mappings are dealt with (a reset, DESTROY, an INIT;
    /// see `dax_ops` for why before): INIT awaited first (requests on other queues are refused from
    /// now on; one that passed the gate just before may still leave a node, which the next INIT
    /// drops), pending requests cancelled, early INTERRUPTs forgotten (the next session numbers its
    /// requests afresh), every node and handle dropped.
    fn end_session(&self) {
        self.set_session(Session::default());
        self.cancel_all();
        self.interrupted_early().clear();
        self.fs.destroy();
    }

    /// The file system.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// The limits.
    pub fn config(&self) -> ServerConfig {
        ServerConfig { max_pages: self.max_pages.load(Ordering::Relaxed), ..self.config }
    }

    /// Sizes requests for queues of `queue_size` descriptors (the smallest request queue): the
    /// `max_pages` the next INIT announces, up to [`MAX_PAGES_LIMIT`].
    pub fn set_queue_size(&self, queue_size: u16) {
        let pages = ServerConfig::for_queue_size(queue_size).max_pages;
        self.max_pages.store(pages, Ordering::Relaxed);
    }

    /// The INIT flags agreed for the current session, if INIT succeeded.
    pub fn negotiated(&self) -> Option<InitFlags> {
        self.session().flags
    }

    /// The protocol minor in use (the smaller of the guest's and ours), if INIT succeeded.
    pub fn negotiated_minor(&self) -> Option<u32> {
        let s = self.session();
        s.initialized.then_some(s.minor)
    }

    fn session(&self) -> Session {
        // A panic elsewhere cannot leave a `Session` half-written: it is a Copy value.
        *self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_session(&self, s: Session) {
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        *session = s;
        // SeqCst: a SETUPMAPPING orders its look at the window's era against it (`dax_ops`).
        self.initialized.store(s.initialized, Ordering::SeqCst);
    }

    /// Handles one request; returns the number of reply bytes written (0 when no reply is due).
    /// Without a [`Defer`], a SETLKW whose lock is held is answered EAGAIN at once.
    pub fn handle<R: RequestReader, W: ReplyWriter>(
        &self,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<usize, ServerError> {
        match self.handle_with(reader, writer, None)? {
            Handled::Replied(n) => Ok(n),
            // Without a Defer nothing is deferred.
            Handled::Deferred(_) => Ok(0),
        }
    }

    /// Handles one request; a SETLKW whose lock is held is answered later through `defer`.
    pub fn handle_with<R: RequestReader, W: ReplyWriter>(
        &self,
        reader: &mut R,
        writer: &mut W,
        defer: Option<&Arc<dyn Defer>>,
    ) -> Result<Handled, ServerError> {
        let mut raw = [0u8; size_of::<InHeader>()];
        let got = reader.remaining();
        if got < raw.len() {
            return Err(ServerError::ShortHeader { got });
        }
        reader.read_exact(&mut raw)?;
        // 40 bytes always hold one header.
        let header =
            InHeader::read_from_bytes(&raw).map_err(|_| ServerError::ShortHeader { got })?;
        let opcode = Opcode::from_u32(header.opcode);
        self.body_and_dispatch(&header, opcode, Streams { reader, writer, defer })
    }

    /// Reads the body, dispatches and answers. The answer is written here, where the operation
    /// returned it: a [`Reply`] holds its payload in place, and moving it up through the callers
    /// would copy all of it on every request.
    fn body_and_dispatch<R: RequestReader, W: ReplyWriter>(
        &self,
        header: &InHeader,
        opcode: Option<Opcode>,
        streams: Streams<'_, R, W>,
    ) -> Result<Handled, ServerError> {
        let Streams { reader, writer, defer } = streams;
        // Every malformed-request answer goes through `reply_less_or`: FORGET, BATCH_FORGET and
        // INTERRUPT never get a reply, not even an error (the guest does not wait for one).
        let Some(body_len) = (header.len as usize).checked_sub(size_of::<InHeader>()) else {
            return answer(header, opcode, &reply_less_or(opcode, Errno::INVAL), writer);
        };
        let limit = (self.config().max_write() as usize).max(LARGEST_ARGUMENT) + BODY_SLACK;
        if body_len > reader.remaining() || body_len > limit {
            return answer(header, opcode, &reply_less_or(opcode, Errno::INVAL), writer);
        }
        // A WRITE's data stays in the request's buffers, to go from there to the file; the
        // arguments are read (request extensions, after the data, need the whole body).
        let in_place = opcode == Some(Opcode::Write)
            && header.total_extlen == 0
            && body_len >= size_of::<WriteIn>();
        let read = if in_place { size_of::<WriteIn>() } else { body_len };
        let unread = in_place.then(|| read_len(header) - read);
        let streams = Streams { reader, writer, defer };
        // A small body (nearly every request's) is read onto the stack; a larger one into this
        // thread's buffer, kept from request to request.
        if read <= SMALL_BODY {
            let mut small = [0u8; SMALL_BODY];
            return self.read_and_dispatch(header, opcode, &mut small[..read], unread, streams);
        }
        BODY.with_borrow_mut(|body| {
            body.clear();
            body.resize(read, 0);
            self.read_and_dispatch(header, opcode, body, unread, streams)
        })
    }

    /// Reads the body into `body` (its length), dispatches and answers; `unread` is the data
    /// a WRITE leaves in the request's buffers.
    fn read_and_dispatch<R: RequestReader, W: ReplyWriter>(
        &self,
        header: &InHeader,
        opcode: Option<Opcode>,
        body: &mut [u8],
        unread: Option<usize>,
        streams: Streams<'_, R, W>,
    ) -> Result<Handled, ServerError> {
        let Streams { reader, writer, defer } = streams;
        let result = if reader.read_exact(body).is_err() {
            reply_less_or(opcode, Errno::IO)
        } else {
            let data = Data { reader, unread, writer: &mut *writer };
            self.parse_and_dispatch(header, opcode, body, defer, data)
        };
        answer(header, opcode, &result, writer)
    }

    fn parse_and_dispatch<R: RequestReader, W: ReplyWriter>(
        &self,
        header: &InHeader,
        opcode: Option<Opcode>,
        body: &[u8],
        defer: Option<&Arc<dyn Defer>>,
        data: Data<'_, R, W>,
    ) -> OpResult {
        let body_len = body.len();
        let ext_len = usize::from(header.total_extlen) * 8;
        let Some(args_len) = body_len.checked_sub(ext_len) else {
            return reply_less_or(opcode, Errno::INVAL);
        };
        let Some(op) = opcode else {
            return Err(Errno::NOSYS);
        };
        let ext = match request::extensions(&body[args_len..]) {
            Ok(ext) => ext,
            Err(errno) => return reply_less_or(Some(op), errno),
        };
        let req = Request::new(header, &body[..args_len], ext);
        if op != Opcode::Init && !self.initialized.load(Ordering::Acquire) {
            return reply_less_or(Some(op), Errno::IO);
        }
        if self.config.read_only && op.modifies() {
            return Err(Errno::ROFS);
        }
        self.dispatch(op, req, defer, data)
    }

    fn dispatch<R: RequestReader, W: ReplyWriter>(
        &self,
        op: Opcode,
        req: Request<'_>,
        defer: Option<&Arc<dyn Defer>>,
        data: Data<'_, R, W>,
    ) -> OpResult {
        let room = data.writer.remaining().saturating_sub(size_of::<OutHeader>());
        if room < reply_floor(op) {
            // The node reference or open handle the operation takes reaches the guest only in
            // this reply; in one that cannot fit it would stay held. Refuse before doing it.
            return Err(Errno::OVERFLOW);
        }
        match op {
            Opcode::Init => self.do_init(req),
            Opcode::Destroy => self.do_destroy(),
            Opcode::Interrupt => self.do_interrupt(req),
            Opcode::Getlk => self.do_getlk(req),
            Opcode::Setlk => self.do_setlk(req, false, defer),
            Opcode::Setlkw => self.do_setlk(req, true, defer),
            Opcode::Lookup => self.do_lookup(req),
            Opcode::Forget => self.do_forget(req),
            Opcode::BatchForget => self.do_batch_forget(req),
            Opcode::Getattr => self.do_getattr(req),
            Opcode::Statx => self.do_statx(req),
            Opcode::Setattr => self.do_setattr(req),
            Opcode::Readlink => self.do_readlink(req),
            Opcode::Symlink => self.do_symlink(req),
            Opcode::Mknod => self.do_mknod(req),
            Opcode::Mkdir => self.do_mkdir(req),
            Opcode::Unlink => self.do_unlink(req),
            Opcode::Rmdir => self.do_rmdir(req),
            Opcode::Rename => self.do_rename(req),
            Opcode::Rename2 => self.do_rename2(req),
            Opcode::Link => self.do_link(req),
            Opcode::Statfs => self.do_statfs(req),
            Opcode::Open => self.do_open(req),
            Opcode::Read => self.do_read(req, data.writer),
            Opcode::Write => self.do_write(req, data.reader, data.unread),
            Opcode::Release => self.do_release(req),
            Opcode::Fsync => self.do_fsync(req),
            Opcode::Flush => self.do_flush(req),
            Opcode::Create => self.do_create(req),
            Opcode::Tmpfile => self.do_tmpfile(req),
            Opcode::Access => self.do_access(req),
            Opcode::Fallocate => self.do_fallocate(req),
            Opcode::Lseek => self.do_lseek(req),
            Opcode::CopyFileRange => self.do_copy_file_range(req),
            Opcode::Opendir => self.do_opendir(req),
            Opcode::Readdir => self.do_readdir(req, false, room),
            Opcode::Readdirplus => self.do_readdir(req, true, room),
            Opcode::Releasedir => self.do_releasedir(req),
            Opcode::Fsyncdir => self.do_fsyncdir(req),
            Opcode::Syncfs => self.do_syncfs(req),
            Opcode::SetupMapping => self.do_setupmapping(req),
            Opcode::RemoveMapping => self.do_removemapping(req),
            Opcode::Setxattr => self.do_setxattr(req, &self.session()),
            Opcode::Getxattr => self.do_getxattr(req),
            Opcode::Listxattr => self.do_listxattr(req),
            Opcode::Removexattr => self.do_removexattr(req),
            _ => Err(Errno::NOSYS),
        }
    }

    fn do_destroy(&self) -> OpResult {
        // The session first (no request passes the gate after), then its window (`dax_ops`).
        self.end_session();
        self.unmap_all();
        Ok(Reply::empty())
    }
}

/// The payload of a successful reply to `op` when it hands the guest a node reference or an
/// open handle (0 for the others).
fn reply_floor(op: Opcode) -> usize {
    use super::abi::{EntryOut, OpenOut};
    match op {
        Opcode::Lookup | Opcode::Mknod | Opcode::Mkdir | Opcode::Symlink | Opcode::Link => {
            size_of::<EntryOut>()
        }
        Opcode::Create | Opcode::Tmpfile => size_of::<EntryOut>() + size_of::<OpenOut>(),
        Opcode::Open | Opcode::Opendir => size_of::<OpenOut>(),
        _ => 0,
    }
}

/// FORGET-like opcodes get no reply even when malformed; others get `errno`.
fn reply_less_or(opcode: Option<Opcode>, errno: Errno) -> OpResult {
    match opcode {
        Some(op) if op.is_reply_less() => Ok(Reply::None),
        _ => Err(errno),
    }
}
