//! Shared helpers for the FUSE tests: a temporary share and a request/reply harness.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vhu_device_fs::fuse::abi::{EntryOut, InHeader, InitIn, InitOut, OpenOut, OutHeader};
use vhu_device_fs::fuse::{Opcode, Server, ServerConfig, VecWriter};
use vhu_device_fs::passthrough::{Config, PassthroughFs};
use zerocopy::{FromBytes, IntoBytes};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory with `share/` (exported) and `outside/` (must stay unreachable).
pub struct TempDirs {
    pub base: PathBuf,
}

impl TempDirs {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base =
            std::env::temp_dir().join(format!("vhu-fs-{}-{}-{}", std::process::id(), tag, n));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("share")).expect("create share");
        std::fs::create_dir_all(base.join("outside")).expect("create outside");
        Self { base }
    }
    pub fn share(&self) -> PathBuf {
        self.base.join("share")
    }
    pub fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }
}

impl Drop for TempDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A decoded reply.
#[derive(Debug)]
pub struct Reply {
    pub header: OutHeader,
    pub payload: Vec<u8>,
}

impl Reply {
    pub fn errno(&self) -> i32 {
        -self.header.error
    }
    pub fn ok(&self) -> &[u8] {
        assert_eq!(self.header.error, 0, "unexpected error reply {self:?}");
        &self.payload
    }
    pub fn entry(&self) -> EntryOut {
        EntryOut::read_from_prefix(self.ok()).expect("entry_out").0
    }
    pub fn open(&self) -> OpenOut {
        OpenOut::read_from_prefix(self.ok()).expect("open_out").0
    }
}

pub struct Harness {
    pub dirs: Arc<TempDirs>,
    pub server: Arc<Server<PassthroughFs>>,
    unique: u64,
    /// (uid, gid) the requests come from.
    pub caller: (u32, u32),
    /// Bytes the guest leaves for each reply.
    pub reply_room: usize,
}

pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub fn args(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

impl Harness {
    pub fn new(tag: &str) -> Self {
        Self::with(tag, |_| {})
    }

    pub fn with(tag: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::serving(tag, tweak, ServerConfig::for_queue_size(128))
    }

    /// A harness whose server has `server` limits and policy.
    pub fn serving(tag: &str, tweak: impl FnOnce(&mut Config), server: ServerConfig) -> Self {
        let dirs = TempDirs::new(tag);
        let mut config = Config::new(dirs.share());
        tweak(&mut config);
        let fs = PassthroughFs::new(config).expect("passthrough");
        let server = Server::new(fs, server);
        Self {
            dirs: Arc::new(dirs),
            server: Arc::new(server),
            unique: 0,
            caller: (0, 0),
            reply_room: 1 << 21,
        }
    }

    /// Another daemon's server on the same share, with its own file system (a migration's
    /// destination), configured by `tweak`.
    pub fn another_server(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(self.dirs.share());
        tweak(&mut config);
        let fs = PassthroughFs::new(config).expect("passthrough");
        let server = Server::new(fs, ServerConfig::for_queue_size(128));
        Self {
            dirs: Arc::clone(&self.dirs),
            server: Arc::new(server),
            unique: 1 << 40,
            caller: (0, 0),
            reply_room: 1 << 21,
        }
    }

    /// A second client of the same server and share (for another thread).
    pub fn sharing(&self) -> Self {
        Self {
            dirs: Arc::clone(&self.dirs),
            server: Arc::clone(&self.server),
            unique: 1 << 32,
            caller: self.caller,
            reply_room: self.reply_room,
        }
    }

    pub fn share(&self) -> PathBuf {
        self.dirs.share()
    }

    /// Sends one request; `None` when the server wrote no reply.
    pub fn try_call(&mut self, op: Opcode, node: u64, body: &[u8]) -> Option<Reply> {
        self.try_call_ext(op, node, body, &[])
    }

    /// Sends one request with request extensions (`ext`, a multiple of 8 bytes) after `body`.
    /// The harness thread gets the daemon's ids back afterwards, so the test's own host checks
    /// run as the daemon.
    pub fn try_call_ext(
        &mut self,
        op: Opcode,
        node: u64,
        body: &[u8],
        ext: &[u8],
    ) -> Option<Reply> {
        self.unique += 1;
        let header = InHeader {
            len: (size_of::<InHeader>() + body.len() + ext.len()) as u32,
            opcode: op as u32,
            unique: self.unique,
            nodeid: node,
            uid: self.caller.0,
            gid: self.caller.1,
            pid: 1,
            total_extlen: (ext.len() / 8) as u16,
            padding: 0,
        };
        let request = [header.as_bytes(), body, ext].concat();
        let reply = self.send(&request);
        self.server.fs().credentials().as_daemon().expect("daemon ids back");
        reply
    }

    fn send(&mut self, request: &[u8]) -> Option<Reply> {
        let mut reader: &[u8] = request;
        let mut writer = VecWriter::new(self.reply_room);
        let n = self.server.handle(&mut reader, &mut writer).expect("server handles the request");
        let bytes = writer.into_bytes();
        assert_eq!(n, bytes.len());
        if n == 0 {
            return None;
        }
        let (out, payload) = OutHeader::read_from_prefix(&bytes).expect("out header");
        assert_eq!(out.len as usize, bytes.len(), "out_header.len is exact");
        assert_eq!(out.unique, self.unique);
        assert!(out.error <= 0);
        Some(Reply { header: out, payload: payload.to_vec() })
    }

    pub fn call(&mut self, op: Opcode, node: u64, body: &[u8]) -> Reply {
        self.try_call(op, node, body).expect("a reply")
    }

    pub fn call_ext(&mut self, op: Opcode, node: u64, body: &[u8], ext: &[u8]) -> Reply {
        self.try_call_ext(op, node, body, ext).expect("a reply")
    }

    pub fn init_with(&mut self, minor: u32, flags: u64) -> Reply {
        let init = InitIn {
            major: 7,
            minor,
            max_readahead: 128 * 1024,
            flags: flags as u32,
            flags2: (flags >> 32) as u32,
            ..InitIn::default()
        };
        self.call(Opcode::Init, 0, init.as_bytes())
    }

    /// INIT as a current Linux guest sends it.
    pub fn init(&mut self) -> InitOut {
        let r = self.init_with(38, linux_guest_flags().bits());
        InitOut::read_from_prefix(r.ok()).expect("init_out").0
    }

    pub fn lookup(&mut self, parent: u64, name: &str) -> Reply {
        self.call(Opcode::Lookup, parent, &cstr(name))
    }
}

pub use vhu_device_fs::guest::linux_guest_flags;

/// A FUSE_EXT_GROUPS request extension naming one supplementary group.
pub fn supp_group_ext(gid: u32) -> Vec<u8> {
    [16u32, 32, 1, gid].iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Whether the tests run as root (CI does; the identity tests need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The errno an unaligned O_DIRECT write gets from the host file system of `share`: EINVAL
/// where it checks alignment, 0 where it serves such writes anyway (btrfs falls back to
/// buffered I/O, tmpfs checks nothing since Linux 6.6).
pub fn unaligned_direct_errno(share: &Path) -> i32 {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = share.join(".probe");
    let probe = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("O_DIRECT open");
    let errno = probe.write_at(b"x", 3).err().and_then(|e| e.raw_os_error()).unwrap_or(0);
    std::fs::remove_file(&path).expect("probe removed");
    errno
}

/// Whether a test that needs root (to mount) can run: outside CI a run as another user skips
/// it; CI, which runs as root, fails it instead.
pub fn needs_root() -> bool {
    let root = is_root();
    assert!(root || std::env::var_os("CI").is_none(), "CI runs this as root");
    root
}

/// Names in a READDIR payload, with their cookies.
pub fn parse_dirents(mut buf: &[u8]) -> Vec<(String, u64)> {
    use vhu_device_fs::fuse::abi::Dirent;
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (d, rest) = Dirent::read_from_prefix(buf).expect("dirent header");
        let name = &rest[..d.namelen as usize];
        out.push((String::from_utf8_lossy(name).into_owned(), d.off));
        let rec = (24 + d.namelen as usize).div_ceil(8) * 8;
        buf = &buf[rec..];
    }
    out
}

/// (name, nodeid) in a READDIRPLUS payload.
pub fn parse_direntplus(mut buf: &[u8]) -> Vec<(String, u64, u64)> {
    use vhu_device_fs::fuse::abi::Direntplus;
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (d, rest) = Direntplus::read_from_prefix(buf).expect("direntplus header");
        let name = &rest[..d.dirent.namelen as usize];
        out.push((String::from_utf8_lossy(name).into_owned(), d.entry_out.nodeid, d.dirent.off));
        let rec = (152 + d.dirent.namelen as usize).div_ceil(8) * 8;
        buf = &buf[rec..];
    }
    out
}

/// Makes a FIFO at `path` with permission bits `mode`, as a host process would.
pub fn mkfifo(path: &Path, mode: u32) {
    let (fifo, mode) = (rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(mode));
    rustix::fs::mknodat(rustix::fs::CWD, path, fifo, mode, 0).expect("mkfifo on the host");
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// A read-only bind mount of `source` at `path`, unmounted when dropped.
pub struct ReadOnlyBind(PathBuf);

impl ReadOnlyBind {
    pub fn mount(source: &Path, path: &Path) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let run = |args: &[&str]| {
            let mut mount = std::process::Command::new("mount");
            let ok = mount.args(args).arg(path).status().expect("run mount");
            assert!(ok.success(), "mount {args:?} {}", path.display());
        };
        run(&["--bind", source.to_str().expect("utf-8")]);
        let bind = Self(path.to_owned());
        run(&["-o", "remount,bind,ro"]);
        bind
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A tmpfs mounted at a directory (created) for a test's life: a host file system of its own,
/// whose inode numbers count from the same start as any other fresh tmpfs's.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path) -> Self {
        Self::mount_with(path, None)
    }

    /// A tmpfs mounted with `options` (`size=64k`, say).
    pub fn mount_with(path: &Path, options: Option<&std::ffi::CStr>) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let flags = rustix::mount::MountFlags::empty();
        rustix::mount::mount("vhu-test", path, "tmpfs", flags, options).expect("tmpfs");
        Self(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}
