//! `fuse_request`: FUSE requests through [`Server`] over an in-memory file system.
//!
//! Every session starts with a valid INIT (protocol 7.27 to 7.38, any flags), so the dispatch is
//! reached. Then come up to 64 requests, each either raw bytes or a structured request: an
//! opcode (any number below 64), node id, handle, names (known, arbitrary, unterminated or too
//! long), offsets, sizes and data, built into a `fuse_in_header` with the right `len` and the
//! body that opcode expects, optionally with request extensions or with its arguments cut
//! short. The file system is [`MemFs`]: deterministic, bounded, and no host I/O.
//!
//! Invariants checked after every request:
//! - nothing panics; a request shorter than a header is refused without a reply, and any refused
//!   request leaves the reply buffer empty;
//! - every reply starts with a `fuse_out_header` whose `len` equals the bytes written (and the
//!   value `handle` returns) and whose `unique` is the request's; `error` is 0 or a negative
//!   errno in range, and an error reply is the bare header;
//! - FORGET, BATCH_FORGET and INTERRUPT get no reply, every other request gets one (when the
//!   reply space holds at least a header);
//! - successful replies have the size their opcode defines; READ and READDIR replies stay within
//!   the requested size and READDIR records are well formed;
//! - the file system's tree stays consistent.

use vhu_device_fs::fuse::abi::{
    AccessIn, BatchForgetIn, CopyFileRangeIn, CreateIn, FallocateIn, FlushIn, ForgetIn, ForgetOne,
    FsyncIn, GetattrIn, GetxattrIn, InHeader, InitIn, InitOut, InterruptIn, LinkIn, LseekIn,
    MkdirIn, MknodIn, OpenIn, OutHeader, ReadIn, ReleaseIn, Rename2In, RenameIn, SetattrIn,
    SetxattrInCompat, SyncfsIn, WriteIn, DIRENTPLUS_NAME_OFFSET, DIRENT_NAME_OFFSET,
};
use vhu_device_fs::fuse::{Opcode, Server, ServerConfig, ServerError, VecWriter};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::cursor::{Cursor, Out};
use crate::memfs::{MemFs, MAX_FILE, NAMES};

/// Directory of the seed corpus, relative to this crate's manifest.
pub const CORPUS_DIR: &str = "corpus/fuse_request";

/// Longer inputs are ignored.
const MAX_INPUT: usize = 64 << 10;
const MAX_REQUESTS: usize = 64;
/// Raw requests and structured data are at most this long.
const MAX_RAW: usize = 8 << 10;
/// Reply space when the input does not ask for a small one: more than any reply.
const BIG_REPLY: usize = (1 << 20) + 4096;
/// Highest errno a reply may carry (`MAX_ERRNO`).
const MAX_ERRNO: i32 = 4095;

/// A number: usually small, so that node ids and handles hit live ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Num {
    Small(u8),
    Raw(u64),
}

impl Num {
    fn get(self) -> u64 {
        match self {
            Self::Small(v) => u64::from(v),
            Self::Raw(v) => v,
        }
    }

    fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(if c.u8()? % 4 != 3 { Self::Small(c.u8()?) } else { Self::Raw(c.u64()?) })
    }

    fn encode(self, o: &mut Out) {
        match self {
            Self::Small(v) => (o.u8(0), o.u8(v)).1,
            Self::Raw(v) => (o.u8(3), o.u64(v)).1,
        }
    }
}

/// A name in a request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    /// One of [`NAMES`], NUL-terminated.
    Known(u8),
    /// Arbitrary bytes, NUL-terminated (an inner NUL ends the name early).
    Bytes(Vec<u8>),
    /// Arbitrary bytes without a terminator.
    Unterminated(Vec<u8>),
    /// `200 + n` bytes of `a`, around NAME_MAX.
    Long(u8),
}

impl Name {
    fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(match c.u8()? % 4 {
            0 => Self::Known(c.u8()?),
            1 => Self::Bytes(c.short_bytes()?.to_vec()),
            2 => Self::Unterminated(c.short_bytes()?.to_vec()),
            _ => Self::Long(c.u8()?),
        })
    }

    fn encode(&self, o: &mut Out) {
        match self {
            Self::Known(i) => (o.u8(0), o.u8(*i)).1,
            Self::Bytes(b) => (o.u8(1), o.short_bytes(b)).1,
            Self::Unterminated(b) => (o.u8(2), o.short_bytes(b)).1,
            Self::Long(n) => (o.u8(3), o.u8(*n)).1,
        }
    }

    fn put(&self, body: &mut Vec<u8>) {
        match self {
            Self::Known(i) => {
                body.extend_from_slice(NAMES[usize::from(*i) % NAMES.len()]);
                body.push(0);
            }
            Self::Bytes(b) => {
                body.extend_from_slice(b);
                body.push(0);
            }
            Self::Unterminated(b) => body.extend_from_slice(b),
            Self::Long(n) => {
                body.resize(body.len() + 200 + usize::from(*n), b'a');
                body.push(0);
            }
        }
    }
}

/// A request built from typed fields; `a`, `b`, `c` and `d` fill the opcode's argument struct
/// (handles, offsets, sizes, flags, modes) and `data` its trailing bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Structured {
    pub(crate) opcode: u8,
    pub(crate) unique: u64,
    pub(crate) node: Num,
    pub(crate) a: Num,
    pub(crate) b: Num,
    pub(crate) c: u32,
    pub(crate) d: u32,
    pub(crate) names: [Name; 2],
    pub(crate) data: Vec<u8>,
    /// Request extensions: `ext % 4` words of 8 bytes.
    pub(crate) ext: u8,
    /// Bytes cut from the end of the arguments (0: none).
    pub(crate) cut: u8,
}

/// One request of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Req {
    Raw(Vec<u8>),
    Structured(Box<Structured>),
}

/// A session: limits, the opening INIT and the requests, each with its reply space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) queue_size: u16,
    /// INIT minor: `27 + minor % 12`.
    pub(crate) minor: u8,
    pub(crate) init_flags: u32,
    pub(crate) init_flags2: u32,
    /// Each request and its reply-space selector (below 240: plenty; else `(v - 240) * 8`).
    pub(crate) requests: Vec<(Req, u8)>,
}

impl Structured {
    fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        Some(Self {
            opcode: c.u8()?,
            unique: c.u64()?,
            node: Num::decode(c)?,
            a: Num::decode(c)?,
            b: Num::decode(c)?,
            c: c.u32()?,
            d: c.u32()?,
            names: [Name::decode(c)?, Name::decode(c)?],
            data: c.long_bytes(MAX_RAW)?.to_vec(),
            ext: c.u8()?,
            cut: c.u8()?,
        })
    }

    fn encode(&self, o: &mut Out) {
        o.u8(self.opcode);
        o.u64(self.unique);
        self.node.encode(o);
        self.a.encode(o);
        self.b.encode(o);
        o.u32(self.c);
        o.u32(self.d);
        for n in &self.names {
            n.encode(o);
        }
        o.long_bytes(&self.data);
        o.u8(self.ext);
        o.u8(self.cut);
    }

    fn opcode(&self) -> u32 {
        u32::from(self.opcode % 64)
    }

    /// The request bytes: header and body.
    fn build(&self) -> Vec<u8> {
        let mut body = self.args();
        let cut = usize::from(self.cut) % 64;
        if self.cut >= 192 {
            body.truncate(body.len().saturating_sub(cut));
        }
        let ext_words = usize::from(self.ext % 4);
        // An extension header is `le32 size; le32 type`; the rest is padding here.
        for i in 0..ext_words {
            let word = if i == 0 { [8, 0, 0, 0, 0, 0, 0, 0] } else { [0; 8] };
            body.extend_from_slice(&word);
        }
        let header = InHeader {
            len: (size_of::<InHeader>() + body.len()) as u32,
            opcode: self.opcode(),
            unique: self.unique,
            nodeid: self.node.get(),
            uid: self.c & 0xff,
            gid: self.d & 0xff,
            pid: 1,
            total_extlen: ext_words as u16,
            padding: 0,
        };
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// The arguments the opcode expects.
    fn args(&self) -> Vec<u8> {
        let (a, b, c, d) = (self.a.get(), self.b.get(), self.c, self.d);
        let mut body = Vec::new();
        let put = |body: &mut Vec<u8>, v: &dyn AsBytes| body.extend_from_slice(v.bytes());
        let data_len = if c & 0x8000_0000 != 0 { c & 0xffff } else { self.data.len() as u32 };
        let [n1, n2] = &self.names;
        let read = ReadIn {
            fh: a,
            offset: b,
            size: c,
            read_flags: 0,
            lock_owner: 0,
            flags: d,
            padding: 0,
        };
        match Opcode::from_u32(self.opcode()) {
            Some(Opcode::Lookup | Opcode::Unlink | Opcode::Rmdir | Opcode::Removexattr) => {
                n1.put(&mut body)
            }
            Some(Opcode::Forget) => put(&mut body, &ForgetIn { nlookup: a }),
            Some(Opcode::Getattr) => {
                put(&mut body, &GetattrIn { getattr_flags: c, dummy: 0, fh: a })
            }
            Some(Opcode::Setattr) => put(
                &mut body,
                &SetattrIn {
                    valid: c,
                    fh: a,
                    size: b,
                    atime: b,
                    mtime: a,
                    atimensec: d,
                    mtimensec: d >> 1,
                    mode: d,
                    uid: d & 0xff,
                    gid: d >> 24,
                    ..SetattrIn::default()
                },
            ),
            Some(Opcode::Symlink) => {
                n1.put(&mut body);
                n2.put(&mut body);
            }
            Some(Opcode::Mknod) => {
                put(&mut body, &MknodIn { mode: c, rdev: d, umask: 0o022, padding: 0 });
                n1.put(&mut body);
            }
            Some(Opcode::Mkdir) => {
                put(&mut body, &MkdirIn { mode: c, umask: d });
                n1.put(&mut body);
            }
            Some(Opcode::Rename) => {
                put(&mut body, &RenameIn { newdir: a });
                n1.put(&mut body);
                n2.put(&mut body);
            }
            Some(Opcode::Rename2) => {
                put(&mut body, &Rename2In { newdir: a, flags: c, padding: 0 });
                n1.put(&mut body);
                n2.put(&mut body);
            }
            Some(Opcode::Link) => {
                put(&mut body, &LinkIn { oldnodeid: a });
                n1.put(&mut body);
            }
            Some(Opcode::Open | Opcode::Opendir) => {
                put(&mut body, &OpenIn { flags: c, open_flags: d })
            }
            Some(Opcode::Read | Opcode::Readdir | Opcode::Readdirplus) => put(&mut body, &read),
            Some(Opcode::Write) => {
                let w = WriteIn {
                    fh: a,
                    offset: b,
                    size: data_len,
                    write_flags: d,
                    ..Default::default()
                };
                put(&mut body, &w);
                body.extend_from_slice(&self.data);
            }
            Some(Opcode::Release | Opcode::Releasedir) => {
                put(&mut body, &ReleaseIn { fh: a, flags: c, release_flags: d, lock_owner: b })
            }
            Some(Opcode::Fsync | Opcode::Fsyncdir) => {
                put(&mut body, &FsyncIn { fh: a, fsync_flags: c, padding: 0 })
            }
            Some(Opcode::Setxattr) => {
                put(&mut body, &SetxattrInCompat { size: data_len, flags: d });
                n1.put(&mut body);
                body.extend_from_slice(&self.data);
            }
            Some(Opcode::Getxattr) => {
                put(&mut body, &GetxattrIn { size: c, padding: 0 });
                n1.put(&mut body);
            }
            Some(Opcode::Listxattr) => put(&mut body, &GetxattrIn { size: c, padding: 0 }),
            Some(Opcode::Flush) => {
                put(&mut body, &FlushIn { fh: a, unused: 0, padding: 0, lock_owner: b })
            }
            Some(Opcode::Init) => put(
                &mut body,
                &InitIn {
                    major: 7 + u32::from(c % 8 == 7),
                    minor: 20 + d % 20,
                    max_readahead: 1 << 17,
                    flags: a as u32,
                    flags2: b as u32,
                    ..InitIn::default()
                },
            ),
            Some(Opcode::Access) => put(&mut body, &AccessIn { mask: c, padding: 0 }),
            Some(Opcode::Create) => {
                put(&mut body, &CreateIn { flags: c, mode: d, umask: 0o022, open_flags: 0 });
                n1.put(&mut body);
            }
            Some(Opcode::Interrupt) => put(&mut body, &InterruptIn { unique: a }),
            Some(Opcode::BatchForget) => {
                let count = self.data.len() / 2;
                put(&mut body, &BatchForgetIn { count: c.min(count as u32 + 2), dummy: 0 });
                for pair in self.data.chunks_exact(2) {
                    let one =
                        ForgetOne { nodeid: u64::from(pair[0] % 16), nlookup: u64::from(pair[1]) };
                    put(&mut body, &one);
                }
            }
            Some(Opcode::Fallocate) => put(
                &mut body,
                &FallocateIn { fh: a, offset: b, length: u64::from(c), mode: d, padding: 0 },
            ),
            Some(Opcode::Lseek) => {
                put(&mut body, &LseekIn { fh: a, offset: b, whence: c % 8, padding: 0 })
            }
            Some(Opcode::CopyFileRange) => put(
                &mut body,
                &CopyFileRangeIn {
                    fh_in: a,
                    off_in: b,
                    nodeid_out: u64::from(d % 16),
                    fh_out: u64::from(d >> 16),
                    off_out: u64::from(c >> 8),
                    len: u64::from(c),
                    flags: 0,
                },
            ),
            Some(Opcode::Syncfs) => put(&mut body, &SyncfsIn { padding: a }),
            _ => body.extend_from_slice(&self.data),
        }
        body
    }
}

/// Wire structs as bytes, behind one object-safe trait.
trait AsBytes {
    fn bytes(&self) -> &[u8];
}

impl<T: IntoBytes + Immutable> AsBytes for T {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Session {
    fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        let queue_size = c.u16()?;
        let minor = c.u8()?;
        let init_flags = c.u32()?;
        let init_flags2 = c.u32()?;
        let mut requests = Vec::new();
        while requests.len() < MAX_REQUESTS {
            let Some(tag) = c.u8() else { break };
            let req = if tag % 4 == 0 {
                let Some(bytes) = c.long_bytes(MAX_RAW) else { break };
                Req::Raw(bytes.to_vec())
            } else {
                let Some(s) = Structured::decode(c) else { break };
                Req::Structured(Box::new(s))
            };
            let Some(space) = c.u8() else { break };
            requests.push((req, space));
        }
        Some(Self { queue_size, minor, init_flags, init_flags2, requests })
    }

    fn encode(&self) -> Vec<u8> {
        let mut o = Out::default();
        o.u16(self.queue_size);
        o.u8(self.minor);
        o.u32(self.init_flags);
        o.u32(self.init_flags2);
        for (req, space) in &self.requests {
            match req {
                Req::Raw(bytes) => {
                    o.u8(0);
                    o.long_bytes(bytes);
                }
                Req::Structured(s) => {
                    o.u8(1);
                    s.encode(&mut o);
                }
            }
            o.u8(*space);
        }
        o.0
    }
}

/// What one input did, for the tests.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    /// Replies with `error == 0`.
    ok: usize,
    /// Error replies.
    errors: usize,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    session(data);
}

fn session(data: &[u8]) -> Option<Stats> {
    if data.len() > MAX_INPUT {
        return None;
    }
    let session = Session::decode(&mut Cursor::new(data))?;
    let config = ServerConfig::for_queue_size(session.queue_size);
    let server = Server::new(MemFs::new(), config);
    let mut stats = Stats::default();

    // A valid INIT first, so the requests reach the dispatch.
    let minor = 27 + u32::from(session.minor % 12);
    let init = InitIn {
        major: 7,
        minor,
        max_readahead: 1 << 17,
        flags: session.init_flags,
        flags2: session.init_flags2,
        ..InitIn::default()
    };
    let mut request = InHeader {
        len: (size_of::<InHeader>() + size_of::<InitIn>()) as u32,
        opcode: Opcode::Init as u32,
        unique: 1,
        ..InHeader::default()
    }
    .as_bytes()
    .to_vec();
    request.extend_from_slice(init.as_bytes());
    let (error, payload) =
        exchange(&server, &request, BIG_REPLY, &mut stats).expect("INIT replies");
    assert_eq!(error, 0, "a valid INIT succeeds");
    let out = InitOut::read_from_bytes(&payload).expect("INIT replies with fuse_init_out");
    assert_eq!((out.major, out.max_write), (7, config.max_write()));
    assert_eq!(server.negotiated_minor(), Some(minor));

    for (req, space) in &session.requests {
        let space = if *space < 240 { BIG_REPLY } else { usize::from(*space - 240) * 8 };
        match req {
            Req::Raw(bytes) => {
                exchange(&server, bytes, space, &mut stats);
            }
            Req::Structured(s) => {
                let bytes = s.build();
                if let Some((0, payload)) = exchange(&server, &bytes, space, &mut stats) {
                    check_payload(s, &payload, config);
                }
            }
        }
        server.fs().check();
    }
    Some(stats)
}

/// Sends one request and checks the reply's framing; returns its error and payload.
fn exchange(
    server: &Server<MemFs>,
    request: &[u8],
    space: usize,
    stats: &mut Stats,
) -> Option<(i32, Vec<u8>)> {
    let mut reader: &[u8] = request;
    let mut writer = VecWriter::new(space);
    let result = server.handle(&mut reader, &mut writer);
    let reply = writer.into_bytes();
    let header = InHeader::read_from_prefix(request).ok().map(|(h, _)| h);
    let n = match result {
        Err(ServerError::ShortHeader { got }) => {
            assert!(header.is_none() && got == request.len(), "short header: {result:?}");
            assert!(reply.is_empty(), "a refused request wrote a reply");
            return None;
        }
        Err(ServerError::ReplyTooLarge { need, have }) => {
            assert!(reply.is_empty(), "a refused request wrote a reply");
            assert_eq!(have, space);
            assert!(need > have && have < size_of::<OutHeader>(), "{need} > {have}");
            return None;
        }
        Err(e) => panic!("{e} from byte slices"),
        Ok(n) => n,
    };
    let header = header.expect("a handled request has a header");
    let reply_less = matches!(
        Opcode::from_u32(header.opcode),
        Some(Opcode::Forget | Opcode::BatchForget | Opcode::Interrupt)
    );
    assert_eq!(n, reply.len(), "handle() reports the bytes written");
    if reply_less {
        assert_eq!(n, 0, "opcode {} got a reply: {reply:?}", header.opcode);
        return None;
    }
    assert_ne!(n, 0, "opcode {} got no reply", header.opcode);
    let (out, payload) = OutHeader::read_from_prefix(&reply).expect("a reply starts with a header");
    assert_eq!(out.len as usize, reply.len(), "out header len");
    assert_eq!(out.unique, header.unique, "out header unique");
    assert!(out.error == 0 || (-MAX_ERRNO..0).contains(&out.error), "error {}", out.error);
    if out.error != 0 {
        assert!(payload.is_empty(), "an error reply carries a payload");
        stats.errors += 1;
    } else {
        stats.ok += 1;
    }
    Some((out.error, payload.to_vec()))
}

/// Checks a successful reply's payload against what its opcode defines.
fn check_payload(s: &Structured, payload: &[u8], config: ServerConfig) {
    let max_write = config.max_write() as usize;
    let exact = |len: usize| assert_eq!(payload.len(), len, "opcode {} payload", s.opcode());
    let Some(op) = Opcode::from_u32(s.opcode()) else {
        panic!("unknown opcode {} succeeded", s.opcode())
    };
    match op {
        Opcode::Lookup | Opcode::Symlink | Opcode::Mknod | Opcode::Mkdir | Opcode::Link => {
            exact(128)
        }
        Opcode::Getattr | Opcode::Setattr => exact(104),
        Opcode::Open | Opcode::Opendir => exact(16),
        Opcode::Create => exact(144),
        Opcode::Write | Opcode::CopyFileRange | Opcode::Lseek => exact(8),
        Opcode::Statfs => exact(80),
        Opcode::Init => exact(64),
        Opcode::Read => {
            assert!(payload.len() <= (s.c as usize).min(max_write), "READ beyond its size");
        }
        Opcode::Readdir | Opcode::Readdirplus => {
            assert!(payload.len() <= (s.c as usize).min(max_write), "READDIR beyond its size");
            check_dirents(payload, op == Opcode::Readdirplus);
        }
        Opcode::Readlink => assert!(!payload.is_empty() && payload.len() < 4096),
        Opcode::Getxattr | Opcode::Listxattr => {
            if s.c == 0 {
                exact(8);
            } else {
                assert!(payload.len() <= s.c as usize, "xattr reply beyond its size");
            }
        }
        Opcode::Unlink
        | Opcode::Rmdir
        | Opcode::Rename
        | Opcode::Rename2
        | Opcode::Release
        | Opcode::Releasedir
        | Opcode::Fsync
        | Opcode::Fsyncdir
        | Opcode::Flush
        | Opcode::Access
        | Opcode::Fallocate
        | Opcode::Setxattr
        | Opcode::Removexattr
        | Opcode::Syncfs
        | Opcode::Destroy => exact(0),
        _ => panic!("opcode {op:?} succeeded without an implementation"),
    }
    if op == Opcode::Write {
        let written = u32::from_ne_bytes(payload[..4].try_into().expect("4 bytes"));
        assert!(u64::from(written) <= MAX_FILE, "wrote {written}");
    }
}

/// READDIR records: 8-byte aligned, a name of 1 to 1024 bytes without `/` or NUL, no partial
/// record at the end.
fn check_dirents(mut buf: &[u8], plus: bool) {
    let name_at = if plus { DIRENTPLUS_NAME_OFFSET } else { DIRENT_NAME_OFFSET };
    while !buf.is_empty() {
        assert!(buf.len() >= name_at, "partial record header");
        let namelen_at = name_at - 8;
        let namelen = u32::from_ne_bytes(buf[namelen_at..namelen_at + 4].try_into().expect("4"));
        let namelen = namelen as usize;
        assert!((1..=1024).contains(&namelen), "name length {namelen}");
        let record = (name_at + namelen).div_ceil(8) * 8;
        assert!(buf.len() >= record, "partial record");
        let name = &buf[name_at..name_at + namelen];
        assert!(!name.iter().any(|&b| b == b'/' || b == 0), "bad name {name:?}");
        assert!(buf[name_at + namelen..record].iter().all(|&b| b == 0), "padding not zero");
        buf = &buf[record..];
    }
}

/// A structured request with neutral fields.
fn req(op: Opcode, node: u8) -> Structured {
    Structured {
        opcode: op as u8,
        unique: 0,
        node: Num::Small(node),
        a: Num::Small(0),
        b: Num::Small(0),
        c: 0,
        d: 0,
        names: [Name::Known(0), Name::Known(0)],
        data: Vec::new(),
        ext: 0,
        cut: 0,
    }
}

/// A session of `requests`, numbered from 2, each with plenty of reply space.
fn session_of(requests: Vec<Structured>) -> Session {
    Session {
        queue_size: 128,
        minor: 11,
        init_flags: 0x7fff_ffff,
        init_flags2: 0,
        requests: (2u64..)
            .zip(requests)
            .map(|(unique, r)| (Req::Structured(Box::new(Structured { unique, ..r })), 0))
            .collect(),
    }
}

/// The seed corpus: sessions of valid requests over the initial tree, and malformed ones.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Opcode::*;
    let name =
        |r: Structured, a: u8, b: u8| Structured { names: [Name::Known(a), Name::Known(b)], ..r };
    let args = |r: Structured, a: u64, b: u64, c: u32, d: u32| Structured {
        a: Num::Small(a as u8),
        b: if b < 256 { Num::Small(b as u8) } else { Num::Raw(b) },
        c,
        d,
        ..r
    };
    let data = |r: Structured, data: &[u8]| Structured { data: data.to_vec(), ..r };
    let mut out = Vec::new();

    // /file: lookup, open, read, write, seek, allocate, sync, close, forget.
    let file = vec![
        name(req(Lookup, 1), 0, 0),
        req(Getattr, 2),
        args(req(Open, 2), 0, 0, 2, 0),
        args(req(Read, 2), 1, 0, 4096, 0),
        data(args(req(Write, 2), 1, 5, 0, 0), b"fuzzed bytes"),
        args(req(Read, 2), 1, 3, 8, 0),
        args(req(Lseek, 2), 1, 2, 3, 0),
        args(req(Fallocate, 2), 1, 100, 50, 0),
        args(req(Setattr, 2), 1, 10, 0x49, 0o600),
        args(req(Flush, 2), 1, 0, 0, 0),
        args(req(Fsync, 2), 1, 0, 1, 0),
        args(req(Release, 2), 1, 0, 0, 0),
        args(req(Forget, 2), 1, 0, 0, 0),
    ];
    out.push(("file_io", session_of(file).encode()));

    // Names: mkdir, create, mknod, symlink, link, rename (plain and exchange), unlink, rmdir.
    let names = vec![
        name(args(req(Mkdir, 1), 0, 0, 0o755, 0o022), 5, 0),
        name(args(req(Create, 7), 0, 0, 0o100_644, 2), 0, 0),
        name(args(req(Mknod, 7), 0, 0, 0o010_644, 0), 3, 0),
        name(req(Symlink, 7), 2, 0),
        req(Readlink, 10),
        name(args(req(Link, 7), 2, 0, 0, 0), 4, 0),
        name(args(req(Rename, 7), 3, 0, 0, 0), 4, 1),
        name(args(req(Rename2, 1), 3, 0, 2, 0), 1, 5),
        name(req(Unlink, 3), 1, 0),
        name(req(Rmdir, 1), 1, 0),
        name(req(Lookup, 1), 5, 0),
        name(req(Lookup, 3), 7, 0),
    ];
    out.push(("namespace", session_of(names).encode()));

    // Listings: READDIR, READDIRPLUS (taking references), a small buffer, a later offset.
    let dirs = vec![
        args(req(Opendir, 1), 0, 0, 0, 0),
        args(req(Readdir, 1), 1, 0, 4096, 0),
        args(req(Readdirplus, 1), 1, 0, 4096, 0),
        args(req(Readdir, 1), 1, 3, 40, 0),
        args(req(Readdirplus, 1), 1, 1, 400, 0),
        args(req(Releasedir, 1), 1, 0, 0, 0),
        data(args(req(BatchForget, 0), 0, 0, 3, 0), &[2, 1, 3, 1, 5, 9]),
        args(req(Fsyncdir, 1), 1, 0, 0, 0),
    ];
    out.push(("readdir", session_of(dirs).encode()));

    // Extended attributes.
    let xattrs = vec![
        data(name(args(req(Setxattr, 2), 0, 0, 0, 0), 5, 0), b"value"),
        data(name(args(req(Setxattr, 2), 0, 0, 0, 1), 0, 0), b"other"),
        name(args(req(Getxattr, 2), 0, 0, 0, 0), 5, 0),
        name(args(req(Getxattr, 2), 0, 0, 64, 0), 5, 0),
        name(args(req(Getxattr, 2), 0, 0, 2, 0), 5, 0),
        args(req(Listxattr, 2), 0, 0, 0, 0),
        args(req(Listxattr, 2), 0, 0, 100, 0),
        name(req(Removexattr, 2), 5, 0),
        name(req(Removexattr, 2), 5, 0),
    ];
    out.push(("xattr", session_of(xattrs).encode()));

    // Copies between two open files, statfs, access, syncfs, interrupt, then a second session.
    let misc = vec![
        args(req(Open, 2), 0, 0, 2, 0),
        args(req(Open, 4), 0, 0, 2, 0),
        args(req(CopyFileRange, 4), 2, 10, 4000, (1 << 16) | 2),
        req(Statfs, 1),
        args(req(Access, 2), 0, 0, 4, 0),
        req(Syncfs, 1),
        args(req(Interrupt, 0), 5, 0, 0, 0),
        req(Destroy, 0),
        req(Getattr, 1),
        args(req(Init, 0), 0x4000_0001, 1, 0, 18),
        req(Getattr, 1),
    ];
    out.push(("copy_and_sessions", session_of(misc).encode()));

    // Malformed: a short header, a header claiming more than it has, an unterminated name,
    // cut arguments, extensions, unknown opcodes, reply space too small.
    let mut bad = session_of(vec![
        name(req(Lookup, 1), 0, 0),
        Structured {
            names: [Name::Unterminated(b"file".to_vec()), Name::Known(0)],
            ..req(Lookup, 1)
        },
        Structured { cut: 200, ..req(Getattr, 1) },
        Structured { ext: 2, ..name(req(Lookup, 1), 1, 0) },
        Structured { names: [Name::Long(60), Name::Known(0)], ..req(Mkdir, 1) },
        data(req(Getlk, 1), &[0; 48]),
        data(Structured { opcode: 60, ..req(Lookup, 1) }, &[1, 2, 3]),
        req(Statfs, 1),
        req(Statfs, 1),
    ]);
    bad.requests[7].1 = 241;
    bad.requests[8].1 = 250;
    let truncated = InHeader {
        len: 4000,
        opcode: Opcode::Lookup as u32,
        unique: 77,
        nodeid: 1,
        ..InHeader::default()
    };
    bad.requests.push((Req::Raw(vec![1; 10]), 0));
    bad.requests.push((Req::Raw(truncated.as_bytes().to_vec()), 0));
    out.push(("malformed", bad.encode()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CORPUS_DIR);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.expect("directory entry").path();
                let name = path.file_name().expect("file name").to_string_lossy().into_owned();
                (name, std::fs::read(&path).expect("corpus file reads"))
            })
            .collect();
        files.sort();
        files
    }

    /// The seeds mostly succeed, so the corpus starts inside the file system.
    #[test]
    fn seeds_reach_the_file_system() {
        for (name, input) in seeds() {
            let stats = session(&input).unwrap_or_else(|| panic!("{name}: no session"));
            println!("{name}: {stats:?}");
            if name == "malformed" {
                assert!(stats.errors >= 5, "{name}: {stats:?}");
            } else {
                assert!(stats.ok >= 7 && stats.ok > 2 * stats.errors, "{name}: {stats:?}");
            }
        }
    }

    /// Decoding gives back what was encoded.
    #[test]
    fn input_format_round_trips() {
        for (name, input) in seeds() {
            let session = Session::decode(&mut Cursor::new(&input)).expect("decodes");
            assert_eq!(session.encode(), input, "{name}");
        }
    }

    /// The corpus holds exactly the current seeds; `cargo run -p vhu-fuzz --example write_corpus`
    /// rewrites it.
    #[test]
    fn corpus_matches_seeds() {
        let mut expected: Vec<_> =
            seeds().into_iter().map(|(name, bytes)| (name.to_owned(), bytes)).collect();
        expected.sort();
        assert_eq!(corpus(), expected, "corpus is stale: run the write_corpus example");
    }

    /// Every prefix and a few bit flips of every seed.
    #[test]
    fn replays_mutations_of_seeds() {
        for (_, input) in seeds() {
            for len in 0..=input.len() {
                run(&input[..len]);
            }
            for bit in (0..input.len() * 8).step_by(5) {
                let mut flipped = input.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                run(&flipped);
            }
        }
    }

    /// Replays deterministic pseudo-random inputs, so `cargo test` exercises the target.
    #[test]
    fn replays_pseudo_random_inputs() {
        let mut state = 0xda94_2042_e4dd_58b5u64;
        for len in (0..2000).step_by(4) {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            run(&bytes);
        }
    }

    /// Inputs that once crashed the target, kept in `regressions/fuse_request/` (may be absent).
    /// Each file is replayed on its own and every failing one is listed.
    #[test]
    fn replays_regressions() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/fuse_request");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut paths: Vec<_> = entries.map(|e| e.expect("directory entry").path()).collect();
        paths.sort();
        let failed: Vec<_> = paths
            .iter()
            .filter(|path| {
                println!("replaying {}", path.display());
                let input = std::fs::read(path).expect("regression file reads");
                std::panic::catch_unwind(|| run(&input)).is_err()
            })
            .collect();
        assert!(failed.is_empty(), "failing regressions: {failed:?}");
    }
}
