//! A passthrough [`FileSystem`](crate::fuse::FileSystem) exporting one host directory.
//!
//! Every guest node is a host inode held open as an `O_PATH | O_NOFOLLOW` fd (`inodes`); open files
//! and directories are separate fds (`handles`). Every name from the guest is validated as one
//! path component (`names`) and used only in an `*at` call relative to its parent's fd, so host
//! paths are never resolved through a symlink and never leave the share. Regular files are reopened
//! for I/O through `/proc/self/fd`; special files are never opened.
//!
//! Split by concern: `entries` (namespace), `files` (file I/O), `dirs` (listing), `xattrs`
//! and `xattrmap`, `setattr`, `locks`, `acl`, `idmap`, `submounts`; `dispatch` maps
//! each FUSE operation to them. This file holds the configuration, the shared state and the
//! helpers every concern uses.
//!
//! Identity (`credentials`): CREATE, TMPFILE, MKNOD, MKDIR and SYMLINK run with the guest caller's ids,
//! so new inodes get the caller's owner and the host kernel's group inheritance and set-group-ID
//! stripping. Every other operation runs as the daemon, as virtiofsd does: the guest has checked
//! the caller's permission already (virtio-fs mounts with `default_permissions`, with the caller's
//! full group list), and a host check without those groups would refuse legitimate calls (running
//! an execute-only file, `chgrp` to one of the caller's supplementary groups). A RENAME with
//! RENAME_WHITEOUT runs as the daemon too, and the whiteout it leaves is then given to the
//! caller, as a local rename would have made it.
//!
//! Host mounts inside the share (`submounts`) are announced to the guest, and guest inode
//! numbers never collide across host file systems.
//!
//! Not done here: file handles instead of O_PATH fds, locks. The daemon is expected to
//! run with umask 0, since the guest already applied its own umask to the modes it sends.

mod acl;
mod attr;
mod cache;
mod credentials;
mod dir_cursor;
mod direct;
mod dirs;
mod dispatch;
mod entries;
mod files;
mod handles;
mod host_keys;
mod idmap;
mod ids;
mod inodes;
mod killpriv;
mod labels;
mod lock_ranges;
mod locks;
pub mod migration;
mod names;
mod negotiation;
mod proc_path;
mod ranges;
mod setattr;
mod submounts;
mod xattrmap;
mod xattrs;

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{openat, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::fuse::abi::Attr;
use crate::fuse::{AttrReply, Context, Entry, FsResult, NodeId};
pub use cache::CachePolicy;
pub use credentials::{Caller, Credentials};
pub use handles::HandleTable;
pub use idmap::{IdMap, IdMapError, IdRule};
pub use inodes::{Inode, InodeTable};
pub use names::{validate as validate_name, FUSE_NAME_MAX};
pub use negotiation::Negotiation;
pub use xattrmap::{XattrMap, XattrMapError};

/// How the share is exported.
#[derive(Clone, Debug)]
pub struct Config {
    /// The host directory to export.
    pub root: PathBuf,
    /// The directory of this process's descriptors, through which xattrs and reopens reach
    /// inodes: `/proc/self/fd`, or where a sandbox bound it.
    pub proc_fd: PathBuf,
    /// Serve extended attributes (otherwise all xattr operations answer ENOSYS).
    pub xattr: bool,
    /// Offer READDIRPLUS.
    pub readdirplus: bool,
    /// Entry and attribute cache timeout given to the guest.
    pub timeout: Duration,
    /// FOPEN_* flags answered to OPEN and CREATE of regular files, and to OPENDIR
    /// ([`CachePolicy`] sets them with the timeout).
    pub open_flags: (u32, u32),
    /// Offer FUSE_WRITEBACK_CACHE (`--writeback`): the guest page cache gathers writes, so
    /// files opened write-only are opened read-write on the host (the guest reads to fill
    /// partial pages) and O_APPEND is left to the guest.
    pub writeback: bool,
    /// Offer FUSE_DIRECT_IO_ALLOW_MMAP (`--allow-mmap`): shared mappings of direct-I/O files.
    pub allow_mmap: bool,
    /// Keep the guest's O_NOATIME on host opens (`--preserve-noatime`); dropped by default, since
    /// the host refuses it with EPERM to a daemon that does not own the file.
    pub preserve_noatime: bool,
    /// Most host descriptors the guest may keep open through inodes and handles together; past
    /// it, LOOKUP, OPEN, OPENDIR and CREATE answer ENFILE until the guest forgets or releases.
    /// The rest of the process's descriptors stay free for the vhost-user connection.
    pub max_open: usize,
    /// Whether creations run with the guest caller's ids (the default when running as root).
    pub credentials: Credentials,
    /// Pass guest O_DIRECT to the host (`--allow-direct-io`); by default it is dropped and the
    /// host page cache serves the I/O.
    pub allow_direct_io: bool,
    /// Offer FUSE_HANDLE_KILLPRIV_V2 (`--killpriv-v2`): the guest leaves clearing set-id bits on
    /// write, truncation and chown to the server, which writes without CAP_FSETID when asked.
    /// Off by default, as in virtiofsd (some host file systems, NFS among them, mishandle it).
    pub killpriv_v2: bool,
    /// Report host mount points inside the share as submounts (FUSE_ATTR_SUBMOUNT), so the guest
    /// gives each its own `st_dev` and syncs it on its own (`--announce-submounts`, the default).
    pub announce_submounts: bool,
    /// Forward guest POSIX locks to the host (`posix_lock`, on by default); offered only where
    /// the host file system takes open-file-description locks.
    pub posix_locks: bool,
    /// Forward guest `flock` locks to the host (`flock`, on by default); offered only where the
    /// host file system takes them.
    pub flock: bool,
    /// POSIX ACLs (`--posix-acl`): never offered by default. With them the guest enforces ACLs,
    /// the server applies the umask where no default ACL does, and xattrs are served.
    pub posix_acl: Negotiation,
    /// Security labels (`--security-label`): never offered by default. With them every created
    /// inode gets the label the guest's LSM chose, stored as the attribute it names.
    pub security_label: Negotiation,
    /// How extended attribute names travel between guest and host (`--xattrmap`); without a
    /// map, names pass unchanged but `trusted.*` and `security.*` are never written.
    pub xattrmap: Option<XattrMap>,
    /// Guest ↔ host uid translation (`--translate-uid`; identity by default).
    pub uid_map: IdMap,
    /// Guest ↔ host gid translation (`--translate-gid`; identity by default).
    pub gid_map: IdMap,
    /// How the guest's state is described and taken over in a live migration.
    pub migration: migration::MigrationConfig,
}

/// Descriptors kept free for the daemon itself (sockets, eventfds, memory regions, workers).
const RESERVED_FDS: u64 = 512;

/// The open-file soft limit less [`RESERVED_FDS`], at least 64.
fn default_max_open() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let usable = limit.unwrap_or(1 << 20).saturating_sub(RESERVED_FDS).max(64);
    usize::try_from(usable).unwrap_or(usize::MAX)
}

impl Config {
    /// Defaults for exporting `root`: no xattrs, READDIRPLUS on, 1 s timeouts, descriptors up to
    /// the open-file limit less a reserve, guest credentials applied when running as root.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            proc_fd: PathBuf::from("/proc/self/fd"),
            xattr: false,
            readdirplus: true,
            timeout: CachePolicy::Auto.timeout(),
            open_flags: (0, 0),
            writeback: false,
            allow_mmap: false,
            preserve_noatime: false,
            max_open: default_max_open(),
            credentials: Credentials::detect(),
            allow_direct_io: false,
            killpriv_v2: false,
            announce_submounts: true,
            posix_locks: true,
            flock: true,
            xattrmap: None,
            posix_acl: Negotiation::Never,
            security_label: Negotiation::Never,
            uid_map: IdMap::identity(),
            gid_map: IdMap::identity(),
            migration: migration::MigrationConfig::default(),
        }
    }
}

impl Config {
    /// Applies a caching policy: timeouts, FOPEN_* flags, and whether READDIRPLUS is offered
    /// (a policy that caches nothing turns it off; otherwise `readdirplus` is left as it is).
    pub fn cache(&mut self, policy: CachePolicy) {
        self.timeout = policy.timeout();
        self.open_flags = (policy.file_open_flags(), policy.dir_open_flags());
        self.readdirplus &= policy.allows_readdirplus();
    }
}

/// Sync failures kept for a file's next FSYNC, with the inode that keeps its number taken.
type UnheardSyncFailures = std::collections::HashMap<attr::InodeKey, (Arc<inodes::Inode>, Errno)>;

/// The passthrough file system.
#[derive(Debug)]
pub struct PassthroughFs {
    config: Config,
    inodes: InodeTable,
    handles: HandleTable,
    proc_fd: OwnedFd,
    /// The share's root directory (`O_PATH`), opened once by its configured path. A session
    /// reset reopens the root through it: once the daemon has pivoted or chrooted into the
    /// share, that path names nothing, or a directory the guest made.
    share: OwnedFd,
    /// Whether the guest names the caller's supplementary group (CREATE_SUPP_GROUP negotiated).
    supp_groups_known: AtomicBool,
    /// Host devices met, for guest inode numbers and SYNCFS.
    devices: submounts::Devices,
    /// Guest locks held on the host.
    locks: locks::Locks,
    /// Whether POSIX ACLs were negotiated.
    acl_on: AtomicBool,
    /// Whether security labels were negotiated.
    labels_on: AtomicBool,
    /// Whether the writeback cache was negotiated (offered with `--writeback` and taken).
    writeback_on: AtomicBool,
    /// HANDLE_KILLPRIV_V2 was negotiated (`--killpriv-v2` and a guest that offered it).
    killpriv_on: AtomicBool,
    /// Whether the share's host file system takes (OFD, flock) locks.
    lock_support: (bool, bool),
    /// The host name the xattr map gives `security.capability`, when it renames it (the copy
    /// the host kernel does not drop on a write, truncation or chown).
    renamed_capability: Option<CString>,
    /// Sync failures a released handle kept for the guest (`handles::HandleData`), by host
    /// inode: the next FSYNC of any handle of the file reports one, under whichever node the
    /// guest has it by then (the host reported it to the daemon's own sync, so no descriptor
    /// opened since will). Each holds its inode, so that the number names no other file while
    /// it waits (one descriptor a file, only after a failed save).
    unheard_sync_failures: std::sync::Mutex<UnheardSyncFailures>,
}

impl PassthroughFs {
    /// Opens the share root and the descriptor directory (`Config::proc_fd`).
    pub fn new(config: Config) -> std::io::Result<Self> {
        let proc_fd = openat(
            CWD,
            &config.proc_fd,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        config.credentials.as_daemon()?;
        let share = openat(
            CWD,
            &config.root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let fs = Self {
            config,
            inodes: InodeTable::default(),
            handles: HandleTable::default(),
            proc_fd,
            share,
            supp_groups_known: AtomicBool::new(false),
            devices: submounts::Devices::default(),
            locks: locks::Locks::default(),
            acl_on: AtomicBool::new(false),
            labels_on: AtomicBool::new(false),
            writeback_on: AtomicBool::new(false),
            killpriv_on: AtomicBool::new(false),
            lock_support: (false, false),
            renamed_capability: None,
            unheard_sync_failures: std::sync::Mutex::default(),
        };
        let mut fs = fs;
        fs.renamed_capability = fs.config.xattrmap.as_ref().and_then(|map| {
            let name = map.to_host(b"security.capability").ok()?;
            (name != b"security.capability").then(|| CString::new(name).ok()).flatten()
        });
        fs.install_root()?;
        let root = fs.inode(NodeId::ROOT)?;
        fs.lock_support = locks::probe(&fs.reopen(&root, OFlags::RDONLY)?);
        Ok(fs)
    }

    fn install_root(&self) -> Result<(), Errno> {
        self.config.credentials.as_daemon()?;
        let fd = openat(
            &self.share,
            c".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = attr::stat_fd(&fd)?;
        self.devices.reset(st.key.0);
        let kind = st.attr.mode & inodes::S_IFMT;
        self.inodes.reset(Inode { fd, key: st.key, kind, mnt_id: st.mnt_id });
        Ok(())
    }

    /// Runs `op` with the daemon's own ids.
    fn as_daemon<T>(&self, op: impl FnOnce() -> FsResult<T>) -> FsResult<T> {
        self.config.credentials.as_daemon()?;
        op()
    }

    /// Runs `op` with the guest caller's ids and nothing lent: no supplementary group and no
    /// CAP_DAC_OVERRIDE for a user, so the host judges as it would the user alone.
    fn as_caller_alone<T>(&self, ctx: &Context, op: impl FnOnce() -> FsResult<T>) -> FsResult<T> {
        self.config.credentials.as_caller(Caller {
            uid: self.config.uid_map.to_host(ctx.uid)?,
            gid: self.config.gid_map.to_host(ctx.gid)?,
            group: None,
            groups_suffice: true,
        })?;
        op()
    }

    /// Runs `op` with the guest caller's ids (when credentials are enabled).
    fn as_caller<T>(&self, ctx: &Context, op: impl FnOnce() -> FsResult<T>) -> FsResult<T> {
        let (uids, gids) = (&self.config.uid_map, &self.config.gid_map);
        self.config.credentials.as_caller(Caller {
            uid: uids.to_host(ctx.uid)?,
            gid: gids.to_host(ctx.gid)?,
            group: ctx.supp_group.map(|g| gids.to_host(g)).transpose()?,
            groups_suffice: self.supp_groups_known.load(Ordering::Relaxed)
                && !self.acl_on.load(Ordering::Relaxed),
        })?;
        op()
    }

    /// The mode a creation in `parent` uses: with ACLs on, the guest left the umask to the
    /// server, which applies it unless the parent's default ACL takes its place.
    fn creation_mode(&self, parent: NodeId, mode: u32, umask: u32) -> FsResult<u32> {
        if !self.acl_on.load(Ordering::Relaxed) {
            return Ok(mode);
        }
        // Asked as the daemon: the thread may still have the last caller's ids.
        self.config.credentials.as_daemon()?;
        let dir = self.dir_inode(parent)?;
        let path = proc_path::through(&self.proc_fd, &dir.fd)?;
        let has_default = rustix::fs::getxattr_query(path, acl::DEFAULT).is_ok();
        Ok(acl::creation_mode(true, has_default, mode, umask))
    }

    /// Whether security labels were negotiated for this session.
    fn labels_on(&self) -> bool {
        self.labels_on.load(Ordering::Relaxed)
    }

    /// Whether the guest took HANDLE_KILLPRIV_V2 at its INIT.
    fn killpriv_on(&self) -> bool {
        self.killpriv_on.load(Ordering::Relaxed)
    }

    /// Whether the guest's page cache gathers writes in this session (WRITEBACK_CACHE
    /// negotiated: a guest that did not take it writes as without `--writeback`).
    fn writeback_on(&self) -> bool {
        self.writeback_on.load(Ordering::Relaxed)
    }

    /// Which locks are forwarded to the host: (POSIX, flock), each as configured and as the
    /// share's host file system supports.
    pub fn locking(&self) -> (bool, bool) {
        let (posix, flock) = self.lock_support;
        (posix && self.config.posix_locks, flock && self.config.flock)
    }

    /// A new open file description of a regular file's inode, to own locks on the host:
    /// read-only unless `write` (a POSIX lock asked through a handle the guest may write
    /// through, which a write lock needs), and read-only too where the daemon may not write.
    /// The daemon's privileges never give a guest that may only read the file a writable
    /// description of it (which the host would see: a close-write event, a broken read lease,
    /// ETXTBSY for whoever executes the file meanwhile). Nothing is written through it: it is
    /// opened for appending, which an append-only file (`chattr +a`) requires of a writable open.
    fn lock_fd(&self, node: NodeId, write: bool) -> Result<OwnedFd, Errno> {
        let inode = self.inode(node)?;
        if inode.kind != inodes::S_IFREG {
            return Err(Errno::INVAL);
        }
        self.check_open_budget()?;
        if !write {
            return self.reopen(&inode, OFlags::RDONLY | OFlags::NONBLOCK);
        }
        match self.reopen(&inode, OFlags::RDWR | OFlags::APPEND | OFlags::NONBLOCK) {
            Err(Errno::ACCESS | Errno::ROFS | Errno::PERM | Errno::TXTBSY) => {
                self.reopen(&inode, OFlags::RDONLY | OFlags::NONBLOCK)
            }
            other => other,
        }
    }

    /// How operations take the guest caller's ids.
    pub fn credentials(&self) -> &Credentials {
        &self.config.credentials
    }

    /// The inode table (for inspection).
    pub fn inodes(&self) -> &InodeTable {
        &self.inodes
    }

    /// The handle table (for inspection).
    pub fn handles(&self) -> &HandleTable {
        &self.handles
    }

    fn inode(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        self.inodes.get(node)
    }

    fn dir_inode(&self, node: NodeId) -> Result<Arc<Inode>, Errno> {
        let inode = self.inodes.get(node)?;
        if !inode.is_dir() {
            return Err(Errno::NOTDIR);
        }
        Ok(inode)
    }

    /// The `/proc/self/fd` entry name of an inode's O_PATH fd.
    fn proc_name(inode: &Inode) -> String {
        inode.fd.as_raw_fd().to_string()
    }

    /// Opens an inode for I/O with `flags`: directories through `.`, regular files through
    /// `/proc/self/fd`; anything else is refused.
    fn reopen(&self, inode: &Inode, flags: OFlags) -> Result<OwnedFd, Errno> {
        let flags = flags | OFlags::CLOEXEC;
        match inode.kind {
            inodes::S_IFDIR => openat(&inode.fd, c".", flags | OFlags::DIRECTORY, Mode::empty()),
            inodes::S_IFREG => openat(&self.proc_fd, Self::proc_name(inode), flags, Mode::empty()),
            inodes::S_IFLNK => Err(Errno::LOOP),
            _ => Err(Errno::ACCESS),
        }
    }

    /// Looks `name` up in `parent` without following a symlink and takes one reference. A
    /// directory on another host mount than `parent` is marked as a submount when announced.
    ///
    /// A name that leads to an inode the guest already holds (a guest revalidating its cached
    /// entry, mostly) through the same mount takes one `statx` by name: the table's O_PATH fd
    /// keeps that inode alive, so no other inode can have its (device, inode number) meanwhile,
    /// and no descriptor is opened. Any other name is opened ([`Self::open_entry`]).
    fn lookup_at(&self, parent: &Inode, name: &CStr) -> Result<Entry, Errno> {
        let st = attr::stat_at(&parent.fd, name)?;
        match self.inodes.lookup_known(st.key, st.mnt_id) {
            Some(node) => Ok(self.entry(parent, node, st)),
            None => self.open_entry(parent, name),
        }
    }

    /// Opens `name` in `parent` as an O_PATH fd without following a symlink and takes one
    /// reference to the inode it names (a new node, or the one already known).
    fn open_entry(&self, parent: &Inode, name: &CStr) -> Result<Entry, Errno> {
        self.check_open_budget()?;
        self.open_made(parent, name)
    }

    /// [`Self::open_entry`] of what this request has just made, asked of the budget before it
    /// was made and not again: a slot another queue took meanwhile must not leave the guest a
    /// refusal and an entry it never got, which its retry would meet as EEXIST (the table may
    /// go over by the creations in flight).
    fn open_made(&self, parent: &Inode, name: &CStr) -> Result<Entry, Errno> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = openat(&parent.fd, name, flags, Mode::empty())?;
        self.entry_of(parent, fd)
    }

    /// The entry for the inode `fd` (an O_PATH fd) names in `parent`, taking one reference.
    fn entry_of(&self, parent: &Inode, fd: OwnedFd) -> Result<Entry, Errno> {
        let st = attr::stat_fd(&fd)?;
        let kind = st.attr.mode & inodes::S_IFMT;
        let node = self.inodes.lookup(Inode { fd, key: st.key, kind, mnt_id: st.mnt_id });
        Ok(self.entry(parent, node, st))
    }

    /// The entry of `node`, named in `parent`, whose host inode `st` describes.
    fn entry(&self, parent: &Inode, node: NodeId, st: attr::HostStat) -> Entry {
        let kind = st.attr.mode & inodes::S_IFMT;
        let mut attr = self.guest_attr(st.attr, st.key);
        let submount = submounts::is_submount(parent.mnt_id, st.mnt_id, kind == inodes::S_IFDIR);
        if submount && self.config.announce_submounts {
            attr.flags |= submounts::ATTR_SUBMOUNT;
        }
        Entry {
            node,
            generation: 0,
            attr,
            attr_timeout: self.config.timeout,
            entry_timeout: self.config.timeout,
        }
    }

    /// Refuses a new host descriptor once the guest holds [`Config::max_open`] of them. An
    /// operation that makes an entry asks before making it, so that a refusal leaves nothing
    /// behind for the guest's retry to meet as EEXIST.
    fn check_open_budget(&self) -> Result<(), Errno> {
        if self.inodes.len() + self.handles.len() + self.locks.len() >= self.config.max_open {
            return Err(Errno::NFILE);
        }
        Ok(())
    }

    fn attr_reply(&self, inode: &Inode) -> Result<AttrReply, Errno> {
        let st = attr::stat_fd(&inode.fd)?;
        Ok(AttrReply { attr: self.guest_attr(st.attr, st.key), timeout: self.config.timeout })
    }

    /// Host attributes as the guest sees them: the inode number made unique across host
    /// devices, the owner translated.
    fn guest_attr(&self, mut attr: Attr, key: attr::InodeKey) -> Attr {
        attr.ino = self.devices.guest_ino(key);
        attr.uid = self.config.uid_map.to_guest(attr.uid);
        attr.gid = self.config.gid_map.to_guest(attr.gid);
        attr
    }

    /// SYNCFS: flushes every host file system the guest has reached, starting with `node`'s. A
    /// guest without submounts sees them all as one, and even with them a file bind-mounted into
    /// the share has no superblock of its own in the guest. One that fails does not keep the
    /// others from being flushed; the guest hears the first failure.
    fn sync_all(&self, node: NodeId) -> Result<(), Errno> {
        let first = self.inode(node)?;
        let mut result = self.reopen(&first, OFlags::RDONLY).and_then(rustix::fs::syncfs);
        // Every other device the guest holds a node on, found in one pass over the nodes (a
        // migration state may list many devices the guest holds nothing on).
        let mut held = self.inodes.by_device();
        held.remove(&first.key.0);
        for inodes in held.values() {
            // Devices whose only known inodes cannot be opened (symlinks, special files) are
            // left to the host's own writeback.
            if let Some(fd) = inodes.iter().find_map(|i| self.reopen(i, OFlags::RDONLY).ok()) {
                result = result.and(rustix::fs::syncfs(fd));
            }
        }
        result
    }
}
