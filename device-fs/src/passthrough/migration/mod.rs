//! Live migration of the passthrough file system: what the guest holds — nodes with their lookup
//! counts, open handles with their flags, the host devices behind its inode numbers — described
//! on the source so that a destination sharing the same directory can open the very same
//! inodes again, under the same ids (vhost-user DEVICE_STATE; no file data moves).
//!
//! Options, as virtiofsd 1.14 names them:
//! - [`MigrationMode::FindPaths`] (source): each inode is described by its path in the share,
//!   read from its `/proc/self/fd` link and confirmed by opening it again (same device and inode
//!   number), or found by walking the share when the link is stale (a rename). An unlinked inode
//!   has no path and cannot be described. With `verify_handles` its file handle goes along.
//! - [`MigrationMode::FileHandles`] (source): each inode is described by its file handle; the
//!   destination needs CAP_DAC_READ_SEARCH to open it (`open_by_handle_at`). A handle opens
//!   through the mount of the destination's share root, so an inode the guest reached through
//!   another mount (a submount, a read-only bind mount) is described by its path as well, and
//!   opened by that path.
//! - `on_error` (destination): what to do with an inode that cannot be opened again, or that
//!   the source could not describe: [`OnError::Abort`] fails the load, so the front-end cancels
//!   the migration and the source carries on; [`OnError::GuestError`] keeps the node and its
//!   handles as *lost*, answering every use with EIO.
//! - `confirm_paths`: paths are always confirmed when the state is saved (at switch-over), so
//!   this only makes the source say so.
//!
//! A destination that may keep fewer descriptors open (`Config::max_open`) than the state's
//! nodes and handles take refuses it whatever `on_error` says: nothing in it is unopenable, the
//! destination is only too small, and the source carrying on loses nothing.
//!
//! No file position moves, because none matters: every READ and WRITE the guest sends carries
//! its offset, READDIR its cookie (the daemon seeks the directory to it each time), and
//! `O_APPEND` goes with a handle's flags.
//!
//! The destination never hands the guest a wrong file: every inode it opens by path is checked
//! against the inode number and kind the source recorded (and the file handle, whenever the source
//! sent one); a mismatch — the path now names another file — starts a search of the share for the
//! right one before `on_error` applies, on a file system another node already tied to the record's
//! (or by file handle): an inode number alone names a file of any file system. Guest-held locks do
//! not migrate: saving while the guest holds one fails, so the migration is cancelled rather than a
//! lock silently dropped. This module must not read or write the transfer pipe: [`FsState`] bytes
//! are the device's to move.

mod error;
mod format;
mod locate;

use rustix::fs::OFlags;
use rustix::io::Errno;

pub use error::MigrationError;
pub use format::{
    FileHandle, FormatError, FsState, HandleRecord, NodeRecord, VERSION as STATE_VERSION,
};

use super::attr;
use super::handles::HandleSlot;
use super::inodes::Inode;
use super::PassthroughFs;
use crate::fuse::{Handle, NodeId};

/// How the source describes inodes (`--migration-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MigrationMode {
    /// By path in the share (the default).
    #[default]
    FindPaths,
    /// By host file handle.
    FileHandles,
}

/// What the destination does with an inode it cannot open (`--migration-on-error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Fail the load: the migration is cancelled (the default).
    #[default]
    Abort,
    /// Keep the node, answering the guest's every use of it with EIO.
    GuestError,
}

/// Migration options; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrationConfig {
    /// How the source describes inodes.
    pub mode: MigrationMode,
    /// What the destination does with an inode it cannot open.
    pub on_error: OnError,
    /// Find-paths, on a source: send file handles too. A destination compares every handle a
    /// source sent, whatever its own setting.
    pub verify_handles: bool,
    /// Find-paths: confirm every path at switch-over (always done).
    pub confirm_paths: bool,
}

/// Open flags a handle is reopened with, when it had them: how it reads and writes. Everything
/// else acted when it was first opened (creation, truncation, how the path was resolved) or
/// does not apply to a reopening through the inode.
const KEPT: OFlags = OFlags::RWMODE
    .union(OFlags::APPEND)
    .union(OFlags::DIRECT)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOATIME)
    .union(OFlags::SYNC)
    .union(OFlags::DSYNC)
    .union(OFlags::LARGEFILE);

impl PassthroughFs {
    /// [`KEPT`] as this daemon's configuration allows it: O_DIRECT and O_NOATIME only where an
    /// OPEN here would pass them on (a source configured otherwise does not decide).
    fn reopen_flags(&self) -> OFlags {
        let mut kept = KEPT;
        if !self.config.allow_direct_io {
            kept -= OFlags::DIRECT;
        }
        if !self.config.preserve_noatime {
            kept -= OFlags::NOATIME;
        }
        kept
    }

    /// Describes what the guest holds (the FUSE session is the server's to add).
    pub fn save_state(&self) -> Result<FsState, MigrationError> {
        self.config.credentials.as_daemon().map_err(MigrationError::Credentials)?;
        let locks = self.locks.holding();
        if locks > 0 {
            return Err(MigrationError::LocksHeld(locks));
        }
        let options = self.config.migration;
        let root = self.inode(NodeId::ROOT).map_err(MigrationError::Root)?;
        let root_link = locate::link_of(&self.proc_fd, &root.fd).unwrap_or_default();
        let (nodes, next_node) = self.inodes.snapshot();
        let budget = locate::SearchBudget::new();
        let mut records = Vec::with_capacity(nodes.len());
        for n in nodes {
            let Some(inode) = n.inode else {
                records.push(lost_record(n.node.0, n.lookups));
                continue;
            };
            let (dev, ino) = inode.key;
            let mut record = NodeRecord {
                node: n.node.0,
                lookups: n.lookups,
                dev,
                ino,
                kind: inode.kind,
                path: None,
                handle: None,
            };
            match options.mode {
                MigrationMode::FileHandles => {
                    let handle = locate::file_handle(&inode.fd);
                    let handle = handle.ok_or(MigrationError::NoFileHandle { node: n.node.0 })?;
                    // A destination opens a handle through its share root's mount. An inode
                    // reached through another mount (a submount, a read-only bind) goes by its
                    // path, which crosses that mount there too, the handle confirming the file;
                    // without a path it is lost rather than opened through the wrong mount.
                    if inode.mnt_id == root.mnt_id {
                        record.handle = Some(handle);
                    } else {
                        record.path = self.path_of((&root.fd, &root_link), &inode, &budget);
                        match record.path {
                            Some(_) => record.handle = Some(handle),
                            None => log::warn!(
                                "migration: node {} is on another mount and has no path there",
                                n.node.0
                            ),
                        }
                    }
                }
                MigrationMode::FindPaths => {
                    record.path = self.path_of((&root.fd, &root_link), &inode, &budget);
                    if record.path.is_none() {
                        log::warn!("migration: node {} has no path in the share", n.node.0);
                    }
                    if options.verify_handles {
                        record.handle = locate::file_handle(&inode.fd);
                    }
                }
            }
            records.push(record);
        }
        let (handles, last_handle) = self.handles.snapshot();
        sync_written(&handles)?;
        // A guest may forget a node it still holds open (Linux never does): with no node to
        // find it by, such a handle cannot come across, and goes as lost.
        let mut saved: Vec<u64> = records.iter().map(|r| r.node).collect();
        saved.sort_unstable();
        let carried = |node: NodeId| node == NodeId::ROOT || saved.binary_search(&node.0).is_ok();
        let handles = handles
            .into_iter()
            .map(|(h, slot)| match slot {
                HandleSlot::Open(data) if !carried(data.node) => {
                    log::warn!(
                        "migration: handle {} of forgotten node {} is lost",
                        h.0,
                        data.node.0
                    );
                    HandleRecord {
                        handle: h.0,
                        node: data.node.0,
                        is_dir: data.is_dir,
                        flags: 0,
                        lost: true,
                        sync_failed: 0,
                    }
                }
                HandleSlot::Open(data) => HandleRecord {
                    handle: h.0,
                    node: data.node.0,
                    is_dir: data.is_dir,
                    flags: rustix::fs::fcntl_getfl(&data.fd).map_or(0, |f| f.bits()),
                    lost: false,
                    sync_failed: data.sync_failure().map_or(0, Errno::raw_os_error),
                },
                HandleSlot::Lost { node, is_dir } => HandleRecord {
                    handle: h.0,
                    node: node.0,
                    is_dir,
                    flags: 0,
                    lost: true,
                    sync_failed: 0,
                },
            })
            .collect();
        Ok(FsState {
            session: None,
            devices: self.devices.indexes(),
            next_node,
            nodes: records,
            last_handle,
            handles,
        })
    }

    /// The path of `inode` in the share, confirmed to name it now.
    fn path_of(
        &self,
        (root, root_link): (&rustix::fd::OwnedFd, &[u8]),
        inode: &Inode,
        budget: &locate::SearchBudget,
    ) -> Option<Vec<u8>> {
        // Through the same mount too: a path through another mount of the same file (a
        // read-only bind, say) would give the destination's node that mount's access.
        let is_it = |fd: &rustix::fd::OwnedFd| {
            locate::identify(fd).is_ok_and(|(key, kind, mnt_id)| {
                key == inode.key && kind == inode.kind && mnt_id == inode.mnt_id
            })
        };
        let from_link = locate::link_of(&self.proc_fd, &inode.fd)
            .ok()
            .and_then(|link| locate::relative(root_link, &link))
            .filter(|path| !path.is_empty());
        if let Some(path) = from_link {
            if path.len() <= format::PATH_MAX
                && locate::open_in_share(root, &path).is_ok_and(|fd| is_it(&fd))
            {
                return Some(path);
            }
        }
        // An inode without a name (unlinked, still held) is nowhere to be found.
        if attr::stat_fd(&inode.fd).is_ok_and(|st| st.attr.nlink == 0) {
            return None;
        }
        // Renamed since it was opened (or its link is stale): look for it. A path longer than
        // a state may carry (PATH_MAX) describes nothing: the node alone is lost, not the state.
        locate::search(root, inode.key.1, is_it, (budget, Some(format::PATH_MAX)))
            .map(|(path, _)| path)
            .filter(|path| path.len() <= format::PATH_MAX)
    }

    /// The most nodes and handles a state may bring: the open-file budget (see
    /// [`PassthroughFs::load_state`]).
    pub fn state_records_at_most(&self) -> u64 {
        self.config.max_open as u64
    }

    /// Takes over what a source described: nodes under their ids, handles reopened, devices
    /// indexed as before. Runs before the guest sends anything (the destination of a migration).
    pub fn load_state(&self, state: &FsState) -> Result<(), MigrationError> {
        self.config.credentials.as_daemon().map_err(MigrationError::Credentials)?;
        self.check_fresh(false)?;
        // Every node and handle takes a descriptor here, as it did there, or a place in the
        // tables that the open-file budget counts (a lost one); past the budget the guest could
        // never have opened them on this daemon, and a state cannot fill memory with lost ones.
        let needed = 1
            + state.nodes.iter().filter(|n| n.node != NodeId::ROOT.0).count()
            + state.handles.len();
        if needed > self.config.max_open {
            return Err(MigrationError::TooManyOpen { needed, max: self.config.max_open });
        }
        let result = self.restore(state);
        if result.is_err() {
            // Nothing half-restored stays behind.
            self.locks.clear();
            self.handles.clear();
            let _ = self.install_root();
        }
        result
    }

    /// Refuses a state while a guest is served: a FUSE session (`session`), nodes beyond the
    /// root or open handles. Checked before anything changes, so the guest keeps its mount.
    pub fn check_fresh(&self, session: bool) -> Result<(), MigrationError> {
        let held = self.inodes.len();
        if session || held > 1 || !self.handles.is_empty() {
            return Err(MigrationError::NotFresh(held));
        }
        Ok(())
    }

    fn restore(&self, state: &FsState) -> Result<(), MigrationError> {
        let options = self.config.migration;
        let root = self.inode(NodeId::ROOT).map_err(MigrationError::Root)?;
        let root_link = locate::link_of(&self.proc_fd, &root.fd).unwrap_or_default();
        // Source device -> this host's device, learned from the inodes opened again.
        let source_root = state.devices.iter().find(|(_, index)| *index == 0);
        let mut devices = DeviceImages::default();
        if let Some((dev, _)) = source_root {
            devices.learn(*dev, root.key.0);
        }
        // A source in file-handles mode (every node named by handle alone) needs
        // CAP_DAC_READ_SEARCH here, whatever this side's own --migration-mode: without it every
        // node would be lost, not one. (A find-paths source names by handle only what it
        // could not by path, which is lost or found as ever.)
        let by_handle = state.nodes.iter().all(|r| r.path.is_none() && r.handle.is_some());
        let first = state.nodes.first().and_then(|r| r.handle.as_ref());
        if let Some(handle) = first.filter(|_| by_handle) {
            if let Err(Errno::PERM) = locate::open_by_handle(&root.fd, handle) {
                return Err(MigrationError::HandlesNeedCapability);
            }
        }
        let budget = locate::SearchBudget::new();
        for record in &state.nodes {
            match self.reopen_node((&root.fd, &root_link), record, &devices, &budget) {
                Ok(inode) => {
                    devices.learn(record.dev, inode.key.0);
                    self.inodes.restore(
                        NodeId(record.node),
                        Some(inode),
                        record.lookups,
                        state.next_node,
                    );
                }
                Err(reason) => {
                    let what = describe(record);
                    if options.on_error == OnError::Abort {
                        return Err(MigrationError::Inode { node: record.node, what, reason });
                    }
                    log::warn!("migration: node {} ({what}) is lost: {reason}", record.node);
                    self.inodes.restore(NodeId(record.node), None, record.lookups, state.next_node);
                }
            }
        }
        // Every index the source gave stays that device's: first those whose inodes came across,
        // by the device they were opened on here; then those the guest met but holds nothing
        // on, by their source device number (the same on one host), so their files keep their
        // numbers when met again. Found devices go first: a source number may name another
        // file system here (numbers are handed out at mount time).
        let found = |source: &u64| devices.by_source.get(source).copied();
        let listed = state.devices.iter();
        let found_here = listed.clone().filter_map(|(dev, index)| Some((found(dev)?, *index)));
        let by_number = listed.filter(|(dev, _)| found(dev).is_none()).copied();
        self.devices.assign(found_here.chain(by_number));
        for h in &state.handles {
            let reopened = match (h.lost, self.inode(NodeId(h.node))) {
                // A directory's handle on a file, or a file's on a directory: what the source
                // opened is not what came across.
                (false, Ok(inode)) if inode.is_dir() != h.is_dir => {
                    Some(Err(if h.is_dir { Errno::NOTDIR } else { Errno::ISDIR }))
                }
                (false, Ok(inode)) => {
                    let flags = OFlags::from_bits_retain(h.flags) & self.reopen_flags();
                    Some(self.reopen(&inode, flags))
                }
                _ => None,
            };
            let fd = match reopened {
                Some(Ok(fd)) => Some(fd),
                Some(Err(errno)) if options.on_error == OnError::Abort => {
                    return Err(MigrationError::Handle { handle: h.handle, node: h.node, errno });
                }
                Some(Err(errno)) => {
                    log::warn!("migration: handle {} is lost: {errno}", h.handle);
                    None
                }
                None => None,
            };
            // Decoding keeps it below 512; anything else is no errno to tell a guest.
            let kept = (1..=format::MAX_ERRNO)
                .contains(&h.sync_failed)
                .then(|| Errno::from_raw_os_error(h.sync_failed));
            self.handles.restore(Handle(h.handle), NodeId(h.node), h.is_dir, fd, state.last_handle);
            if let (Some(errno), Ok(data)) =
                (kept, self.handles.get(Handle(h.handle), NodeId(h.node), h.is_dir))
            {
                // The source's sync took the failure from its file; the guest hears of it here.
                data.note_sync_failure(errno);
            }
        }
        Ok(())
    }

    /// Opens the inode `record` describes again, checking it is the same one. `devices` maps
    /// the source's devices to this host's as far as the nodes opened so far tell: a node of a
    /// mapped device is looked for on its image only, any other one on no image of another
    /// (an inode number of one file system says nothing about another's, and submounts reuse
    /// small numbers).
    fn reopen_node(
        &self,
        (root, root_link): (&rustix::fd::OwnedFd, &[u8]),
        record: &NodeRecord,
        devices: &DeviceImages,
        budget: &locate::SearchBudget,
    ) -> Result<Inode, String> {
        // A handle the source attached is checked whatever this side's options: attaching it
        // is how a source asks for the check (--migration-verify-handles).
        let check_handle = record.handle.as_ref();
        let device_fits = |here: u64| match devices.by_source.get(&record.dev) {
            Some(image) => *image == here,
            None => !devices.images.contains(&here),
        };
        let is_it = |fd: &rustix::fd::OwnedFd| {
            locate::is_same(fd, record.ino, record.kind, check_handle, device_fits)
        };
        // The share is searched only where what it finds can be told from another file: on a
        // file system a node opened here already tied to the record's, or by a file handle.
        // Otherwise only an inode number would say it is the one, which any file system not
        // yet tied to another names its own files with: the file system the record is of may
        // be one not mounted here at all.
        let searchable = devices.by_source.contains_key(&record.dev) || check_handle.is_some();
        let search = |gone: String| {
            if !searchable {
                return Err(format!(
                    "{gone}; its file system is not one a node came across on, so a file of \
                     its inode number elsewhere could be another's"
                ));
            }
            locate::search(root, record.ino, is_it, (budget, None))
                .map(|(_, fd)| fd)
                .ok_or_else(|| format!("{gone}, and it is nowhere else in the share"))
        };
        let fd = match (&record.path, &record.handle) {
            (Some(path), _) => match locate::open_in_share(root, path) {
                Ok(fd) if is_it(&fd) => fd,
                found => search(match found {
                    Ok(_) => "the path names another file now".to_string(),
                    Err(errno) => errno.to_string(),
                })?,
            },
            (None, Some(handle)) => {
                let fd = locate::open_by_handle(root, handle).map_err(|errno| match errno {
                    Errno::PERM => {
                        "opening a file handle needs CAP_DAC_READ_SEARCH (--modcaps=+dac_read_search)"
                            .to_string()
                    }
                    other => format!("its file handle does not open: {other}"),
                })?;
                // A handle names an inode on the whole file system: it must be one in the share.
                if !is_it(&fd) {
                    return Err(
                        "its file handle names another file, or one outside the share".into()
                    );
                }
                if locate::in_share(&self.proc_fd, root, root_link, &fd) {
                    fd
                } else {
                    // Its link may not show a path (a file whose dentry the destination's
                    // cache never had reads as `/`): the share is searched for it, and only
                    // what is found there is taken, by the path found.
                    search("its file handle names a file outside the share (or unlinked)".into())?
                }
            }
            (None, None) => return Err("the source could not describe it (unlinked?)".into()),
        };
        let (key, kind, mnt_id) = locate::identify(&fd).map_err(|e| e.to_string())?;
        Ok(Inode { fd, key, kind, mnt_id })
    }
}

/// Makes durable what the guest wrote through each writable open file before the state goes:
/// the guest was told those writes completed, and a destination on other hosts' view of shared
/// storage (NFS, say) must find them there, not in this host's page cache. (The guest's own
/// FSYNCs cover what it asked to be durable; this covers the rest.)
///
/// A failed sync fails this save, and is kept on the handle for the guest's next FSYNC of it
/// (the host reports a write-back error once per open file, and this sync took it), or, once
/// the guest released the handle without one, on its node for the next FSYNC of any handle; a
/// later save carries a handle's to the destination, where that FSYNC then goes.
fn sync_written(handles: &[(Handle, HandleSlot)]) -> Result<(), MigrationError> {
    sync_written_with(handles, |fd| rustix::fs::fdatasync(fd))
}

/// [`sync_written`] with `fdatasync` as given.
fn sync_written_with(
    handles: &[(Handle, HandleSlot)],
    fdatasync: impl Fn(&std::os::fd::OwnedFd) -> Result<(), Errno>,
) -> Result<(), MigrationError> {
    for (handle, slot) in handles {
        let HandleSlot::Open(data) = slot else { continue };
        if data.is_dir || data.flags & OFlags::ACCMODE == OFlags::RDONLY {
            continue;
        }
        match fdatasync(&data.fd) {
            // A file system with nothing to sync (no fsync at all): nothing is lost by it. (Not
            // EROFS: a file open for writing meets it only where the file system went read-only
            // under it, as ext4 does when its journal aborts, with the data not on disk.)
            Ok(()) | Err(Errno::INVAL) => {}
            Err(errno) => {
                data.note_sync_failure(errno);
                return Err(MigrationError::Sync { handle: handle.0, node: data.node.0, errno });
            }
        }
    }
    Ok(())
}

/// Whether the source described the node (a lost one is restored without a descriptor).
/// The source's devices and this host's they turned out to be, as far as the nodes opened so
/// far tell (looked up by hash: a state may name many).
#[derive(Debug, Default)]
struct DeviceImages {
    /// Source device number -> this host's.
    by_source: std::collections::HashMap<u64, u64>,
    /// This host's devices some source device is known to be.
    images: std::collections::HashSet<u64>,
}

impl DeviceImages {
    /// Source device `source` is this host's `here` (the first learned stays).
    fn learn(&mut self, source: u64, here: u64) {
        self.by_source.entry(source).or_insert(here);
        self.images.insert(here);
    }
}

fn lost_record(node: u64, lookups: u64) -> NodeRecord {
    NodeRecord { node, lookups, dev: 0, ino: 0, kind: 0, path: None, handle: None }
}

fn describe(record: &NodeRecord) -> String {
    match (&record.path, &record.handle) {
        (Some(path), _) => String::from_utf8_lossy(path).into_owned(),
        (None, Some(_)) => format!("file handle of inode {}", record.ino),
        (None, None) => format!("inode {}", record.ino),
    }
}

#[cfg(test)]
mod sync_tests;
