//! File I/O: OPEN, CREATE, TMPFILE, READ, WRITE, FLUSH, FSYNC, ACCESS (what else changes a
//! file's ranges is `ranges.rs`).
//!
//! Guest open flags are filtered to the ones that make sense on the host (no O_CREAT on OPEN, no
//! O_NOATIME, always O_CLOEXEC, O_DIRECT only with [`Config::allow_direct_io`]); CREATE never
//! follows a symlink at the final component. READ and WRITE of a direct handle go through an
//! aligned buffer ([`super::direct`]).
//!
//! [`Config::allow_direct_io`]: super::Config::allow_direct_io

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};

use rustix::fs::{openat, Mode, OFlags};
use rustix::io::Errno;

use super::direct::AlignedBuf;
use super::handles::HandleData;
use super::inodes::Inode;
use super::killpriv::Changer;
use super::names::validate;
use super::{Config, PassthroughFs};
use crate::fuse::abi::Attr;
use crate::fuse::{
    until_done, Entry, Handle, NodeId, Opened, Partial, ReadTarget, WriteFlags, WriteSource,
};

/// The most one read, write or copy moves in Linux (`MAX_RW_COUNT`: `INT_MAX` rounded down to
/// a page).
pub(super) const MAX_RW_COUNT: usize = 0x7fff_f000;

/// An O_PATH descriptor, never followed further.
const PATH_FLAGS: OFlags = OFlags::PATH.union(OFlags::CLOEXEC);

/// The `/proc/self/fd` entry name of `fd`.
fn fd_name(fd: &impl AsRawFd) -> String {
    fd.as_raw_fd().to_string()
}

/// Open flags passed through to the host: O_DIRECT only when the configuration allows it,
/// O_NOATIME only when it keeps it. With the writeback cache (`writeback`: negotiated) the
/// guest reads to fill partial pages of a file it opened write-only, and appends at the size
/// it knows, so the host file is opened read-write and without O_APPEND.
fn open_flags(raw: u32, config: &Config, writeback: bool) -> OFlags {
    let mut keep = OFlags::ACCMODE
        | OFlags::APPEND
        | OFlags::TRUNC
        | OFlags::NONBLOCK
        | OFlags::DSYNC
        | OFlags::SYNC
        | OFlags::LARGEFILE;
    if config.allow_direct_io {
        keep |= OFlags::DIRECT;
    }
    if config.preserve_noatime {
        keep |= OFlags::NOATIME;
    }
    let mut flags = OFlags::from_bits_retain(raw) & keep;
    if writeback {
        if flags & OFlags::ACCMODE == OFlags::WRONLY {
            flags = (flags - OFlags::WRONLY) | OFlags::RDWR;
        }
        flags -= OFlags::APPEND;
    }
    flags
}

/// How a write is to be synced before it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    /// `fdatasync` (O_DSYNC).
    Data,
    /// `fsync` (O_SYNC).
    All,
}

/// The sync a guest asked for one write (`fuse_write_in.flags`: O_DSYNC or O_SYNC, from the
/// file's flags or the write's own, RWF_DSYNC or RWF_SYNC) that the host file, opened with
/// `opened`, does not already do.
fn sync_asked(file: u32, opened: OFlags) -> Option<Sync> {
    // The C values: O_SYNC is O_DSYNC and one more bit (rustix's `DSYNC` holds both).
    const O_DSYNC: u32 = libc::O_DSYNC as u32;
    const O_SYNC: u32 = libc::O_SYNC as u32;
    let opened = opened.bits();
    if file & O_SYNC == O_SYNC && opened & O_SYNC != O_SYNC {
        Some(Sync::All)
    } else if file & O_DSYNC != 0 && opened & O_DSYNC == 0 {
        Some(Sync::Data)
    } else {
        None
    }
}

/// The errno of an I/O error (EIO when it has none).
fn io_errno(error: &std::io::Error) -> Errno {
    Errno::from_io_error(error).unwrap_or(Errno::IO)
}

/// `offset + done`, as the file offset it must be.
fn at(offset: u64, done: usize) -> std::io::Result<u64> {
    offset.checked_add(done as u64).ok_or_else(|| Errno::INVAL.into())
}

/// Reads at `offset` until `buf` is full or the file ends (a short reply means end of file to
/// the guest, so a failure part of the way is the error: [`Partial::Error`]). For a file open
/// with O_DIRECT (the aligned buffer's reads): a read shorter than asked that ended off a
/// 512-byte boundary ended at the end of the file (direct I/O stopped by a failure stops at a
/// block's edge), and no next read is made (older kernels' direct I/O, ext4 before 5.5 or fat,
/// answers it, unaligned, with EINVAL rather than 0); one that ended on a boundary reads on, to
/// meet the end (0) or the failure that cut it short.
fn pread_full(fd: impl AsFd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    let off_boundary = |done: usize| offset.wrapping_add(done as u64) % 512 != 0;
    read_until_short(buf.len(), off_boundary, |done| {
        Ok(rustix::io::pread(&fd, &mut buf[done..], at(offset, done)?)?)
    })
}

/// [`pread_full`]'s loop over `read(done)`, which reads at `done` bytes in; `at_end(done)` says
/// whether a short read that ended `done` bytes in ended at the end of the file.
fn read_until_short(
    len: usize,
    at_end: impl Fn(usize) -> bool,
    mut read: impl FnMut(usize) -> std::io::Result<usize>,
) -> Result<usize, Errno> {
    let mut ended = false;
    until_done(len, Partial::Error, |done| {
        if ended {
            return Ok(0);
        }
        let n = read(done)?;
        ended = done + n < len && at_end(done + n);
        Ok(n)
    })
    .map_err(|e| io_errno(&e))
}

/// Writes all of `data` at `offset`, or as much as the host takes before an error (a write of
/// the guest's own: never a write-back, which goes through the plain file).
fn pwrite_full(fd: impl AsFd, data: &[u8], offset: u64) -> Result<usize, Errno> {
    until_done(data.len(), Partial::Count, |done| {
        Ok(rustix::io::pwrite(&fd, &data[done..], at(offset, done)?)?)
    })
    .map_err(|e| io_errno(&e))
}

/// faccessat2(2) with AT_EACCESS: whether this thread, with its filesystem ids, groups and
/// capabilities as they are, may access `name` in `dir` as `mode` (R_OK, W_OK) asks. Never the
/// flagless faccessat(2), which judges by the real ids (root's, for the daemon): ENOSYS before
/// Linux 5.8, for the caller to check another way.
fn access_as_thread(dir: &impl AsRawFd, name: &str, mode: libc::c_int) -> Result<(), Errno> {
    let name = std::ffi::CString::new(name).map_err(|_| Errno::INVAL)?;
    // SAFETY: faccessat2 reads the NUL-terminated `name`, alive for the call, and touches no
    // other memory; `dir` is an open descriptor.
    let done = unsafe {
        libc::syscall(libc::SYS_faccessat2, dir.as_raw_fd(), name.as_ptr(), mode, libc::AT_EACCESS)
    };
    if done < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
    }
    Ok(())
}

pub(super) fn is_regular(mode: u32) -> bool {
    rustix::fs::FileType::from_raw_mode(mode) == rustix::fs::FileType::RegularFile
}

fn is_symlink(mode: u32) -> bool {
    rustix::fs::FileType::from_raw_mode(mode) == rustix::fs::FileType::Symlink
}

impl PassthroughFs {
    /// OPEN by guest user `by`.
    pub(super) fn do_open(
        &self,
        by: Changer,
        node: NodeId,
        flags: u32,
        open: u32,
    ) -> Result<Opened, Errno> {
        let inode = self.inode(node)?;
        if inode.is_dir() {
            return Err(Errno::ISDIR);
        }
        self.check_open_budget()?;
        let wanted = open_flags(flags, &self.config, self.writeback_on());
        // Only a truncating open changes the file: any other leaves set-id bits and
        // capabilities alone.
        let fd = if wanted.contains(OFlags::TRUNC) {
            let kill = self.open_kills(by.uid, open);
            self.killing_priv(&inode, kill, by, || self.reopen(&inode, wanted))?
        } else {
            self.reopen(&inode, wanted)?
        };
        Ok(Opened {
            handle: self.handles.insert_file(fd, node, wanted),
            flags: self.config.open_flags.0,
        })
    }

    /// CREATE by `by`; the flag says whether the file was created (rather than an existing one
    /// opened). `kill`: an existing file it truncates loses its set-id bits
    /// ([`PassthroughFs::open_kills`]), judged by the caller's group.
    pub(super) fn do_create(
        &self,
        by: Changer,
        parent: NodeId,
        name: &CStr,
        mode: u32,
        flags: u32,
        kill: bool,
    ) -> Result<(Entry, Opened, bool), Errno> {
        let name = validate(name)?;
        let dir = self.dir_inode(parent)?;
        self.check_open_budget()?;
        let guest_excl = OFlags::from_bits_retain(flags).contains(OFlags::EXCL);
        let wanted = open_flags(flags, &self.config, self.writeback_on());
        // O_CREAT | O_EXCL never opens what is already there, so nothing swapped in under the
        // name can be opened by it. When the name exists (and the guest did not ask for O_EXCL),
        // the existing inode is taken by an O_PATH fd, its type checked, and that very inode is
        // opened through /proc/self/fd: special files are never opened (a FIFO would block a
        // queue forever, a device node would reach host hardware), and a file renamed over the
        // name meanwhile is not opened either.
        let create = wanted | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (fd, path, created) = match openat(&dir.fd, name, create, Mode::from_raw_mode(mode)) {
            Ok(fd) => {
                let path = openat(&self.proc_fd, fd_name(&fd), PATH_FLAGS, Mode::empty())?;
                (fd, path, true)
            }
            Err(Errno::EXIST) if !guest_excl => {
                let path = openat(&dir.fd, name, PATH_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
                let st = rustix::fs::fstat(&path)?;
                if is_symlink(st.st_mode) {
                    return Err(Errno::LOOP);
                }
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Directory
                {
                    // What open(2) with O_CREAT answers for a directory.
                    return Err(Errno::ISDIR);
                }
                if !is_regular(st.st_mode) {
                    // FIFOs and devices are never opened for the guest.
                    return Err(Errno::ACCESS);
                }
                // The guest checked only that it may create in the directory: the host checks
                // the caller may open this file, for the access the guest asked. The writeback
                // cache's O_RDWR for an O_WRONLY is the daemon's, as for OPEN: the caller's
                // write access is checked, then the daemon opens it so.
                let asked = open_flags(flags, &self.config, false);
                let credentials = &self.config.credentials;
                let open_as = |flags: OFlags| {
                    credentials.without_lent_override(|| {
                        openat(
                            &self.proc_fd,
                            fd_name(&path),
                            flags | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                    })
                };
                // Only the writeback cache widens an access (O_WRONLY to O_RDWR): the caller's
                // write access is asked of the kernel without opening where it can (an open
                // would break a host lease, or tell a host watcher of a write that never came);
                // before Linux 5.8 by an open that does not wait.
                if asked & OFlags::ACCMODE != wanted & OFlags::ACCMODE {
                    credentials.without_lent_override(|| {
                        match access_as_thread(&self.proc_fd, &fd_name(&path), libc::W_OK) {
                            Err(Errno::NOSYS) => {
                                let check = (asked & OFlags::ACCMODE) | OFlags::NONBLOCK;
                                open_as(check).map(drop)
                            }
                            checked => checked,
                        }
                    })?;
                    credentials.as_daemon()?;
                }
                let open = || open_as(wanted);
                let fd = if kill && wanted.contains(OFlags::TRUNC) {
                    credentials.without_fsetid_in(by.group, open)
                } else {
                    open()
                }?;
                (fd, path, false)
            }
            Err(e) => return Err(e),
        };
        // The entry is the inode opened, not whatever the name points at by now.
        let entry = self.entry_of(&dir, path)?;
        if !created && wanted.contains(OFlags::TRUNC) {
            // Truncated: a renamed file capability goes as the host's own did.
            if let Ok(inode) = self.inode(entry.node) {
                self.drop_mapped_capability(&inode);
            }
        }
        let handle = self.handles.insert_file(fd, entry.node, wanted);
        Ok((entry, Opened { handle, flags: self.config.open_flags.0 }, created))
    }

    /// TMPFILE: an `O_TMPFILE` file in `parent`, open, with no name until a LINK gives it one.
    pub(super) fn do_tmpfile(
        &self,
        parent: NodeId,
        mode: u32,
        flags: u32,
    ) -> Result<(Entry, Opened), Errno> {
        let dir = self.dir_inode(parent)?;
        self.check_open_budget()?;
        let wanted = open_flags(flags, &self.config, self.writeback_on());
        let oflags = wanted | OFlags::TMPFILE | OFlags::CLOEXEC;
        let fd = openat(&dir.fd, c".", oflags, Mode::from_raw_mode(mode & 0o7777))?;
        let path = openat(&self.proc_fd, fd_name(&fd), PATH_FLAGS, Mode::empty())?;
        let entry = self.entry_of(&dir, path)?;
        let handle = self.handles.insert_file(fd, entry.node, wanted);
        Ok((entry, Opened { handle, flags: self.config.open_flags.0 }))
    }

    /// FLUSH: closes a duplicate of the handle's fd, so what a `close(2)` of the guest's own
    /// descriptor would report (a network file system's deferred write error) reaches the guest.
    pub(super) fn do_flush(&self, node: NodeId, handle: Handle) -> Result<(), Errno> {
        let h = self.handles.get(handle, node, false)?;
        let dup = rustix::io::fcntl_dupfd_cloexec(&h.fd, 0)?;
        let raw = dup.into_raw_fd();
        // SAFETY: `raw` was just taken out of an OwnedFd, so it is open and owned here alone;
        // it is closed exactly once, by this call.
        if unsafe { libc::close(raw) } == 0 {
            return Ok(());
        }
        match Errno::from_io_error(&std::io::Error::last_os_error()) {
            // Linux closes the descriptor even when close is interrupted.
            Some(Errno::INTR) => Ok(()),
            other => Err(other.unwrap_or(Errno::IO)),
        }
    }

    /// READ: straight from the file into `dst` (the guest's buffers); through an aligned
    /// buffer when the file is open with O_DIRECT, which, with `--allow-direct-io`, it is as
    /// the guest's file is now (`flags`).
    pub(super) fn do_read(
        &self,
        node: NodeId,
        handle: Handle,
        offset: u64,
        flags: u32,
        dst: &mut dyn ReadTarget,
    ) -> Result<usize, Errno> {
        let h = self.handles.get(handle, node, false)?;
        if self.config.allow_direct_io {
            h.follow(OFlags::DIRECT, flags & OFlags::DIRECT.bits() != 0)?;
        }
        if !h.is_direct() {
            return dst.read_file(h.fd.as_fd(), offset).map_err(|e| io_errno(&e));
        }
        let mut aligned = AlignedBuf::new(dst.room())?;
        let n = pread_full(&h.fd, aligned.as_mut_slice(), offset)?;
        dst.copy_in(&aligned.as_slice()[..n]).map_err(|e| io_errno(&e))
    }

    /// WRITE: straight from `src` (the guest's buffers) to the file; through an aligned buffer
    /// when the file is open with O_DIRECT. A write-back of the guest's page cache goes where
    /// its offset says even through a handle opened with O_APPEND, and needs no alignment
    /// through one opened with O_DIRECT: it is written through the file opened without them.
    /// The guest's own writes append as its file's flags say now (`fuse_write_in.flags`: the
    /// guest may have changed O_APPEND with F_SETFL since it opened the file, which FUSE does
    /// not tell): the handle's host file takes the same change first, as virtiofsd's writes
    /// follow those flags; with the writeback cache the guest places its appends itself. With
    /// `--allow-direct-io` the host file's O_DIRECT follows the same way. A write the guest
    /// asked to be synchronous is synced before the answer.
    pub(super) fn do_write(
        &self,
        by: Changer,
        node: NodeId,
        handle: Handle,
        offset: u64,
        src: &mut dyn WriteSource,
        flags: WriteFlags,
    ) -> Result<usize, Errno> {
        let h = self.handles.get(handle, node, false)?;
        // A page-cache write-back: the guest's other requests may change the host file's flags
        // at any time, so they stay as they are from this decision to the write.
        let _steady = flags.cache().then(|| h.steady());
        let kill = flags.kill_suidgid();
        // A renamed file capability may have to go after any write (`killing_priv`).
        let renamed_capability = self.renamed_capability.is_some();
        if !flags.cache() && !self.writeback_on() {
            h.follow(OFlags::APPEND, flags.file & OFlags::APPEND.bits() != 0)?;
        }
        if !flags.cache() && self.config.allow_direct_io {
            h.follow(OFlags::DIRECT, flags.file & OFlags::DIRECT.bits() != 0)?;
        }
        let direct = h.is_direct();
        // A page-cache write-back goes through the file opened without O_APPEND and O_DIRECT.
        let plain = flags.cache() && (direct || h.is_appending());
        // The plain file is opened without the handle's O_DSYNC/O_SYNC: a write through it that
        // the guest's flags want synchronous is synced here.
        let sync = sync_asked(flags.file, if plain { OFlags::empty() } else { h.flags });
        // A write-back whose count the guest never reads fails as a whole (`Partial`).
        let partial = if flags.cache() { Partial::Error } else { Partial::Count };
        if !kill && !direct && !renamed_capability && !plain && sync.is_none() {
            // Nothing to clear: no need to look the inode up.
            return src.write_file(h.fd.as_fd(), offset, partial).map_err(|e| io_errno(&e));
        }
        let inode = self.inode(node)?;
        let n = self.killing_priv(&inode, kill, by, || {
            let fd = if plain { self.plain_fd(&inode, handle, &h)? } else { &h.fd };
            // The plain file is never O_DIRECT; the handle's is as the guest's file is.
            if !direct || plain {
                return src.write_file(fd.as_fd(), offset, partial).map_err(|e| io_errno(&e));
            }
            let mut aligned = AlignedBuf::new(src.len())?;
            src.copy_out(aligned.as_mut_slice()).map_err(|e| io_errno(&e))?;
            pwrite_full(fd, aligned.as_slice(), offset)
        })?;
        match sync {
            Some(Sync::Data) => rustix::fs::fdatasync(&h.fd)?,
            Some(Sync::All) => rustix::fs::fsync(&h.fd)?,
            None => {}
        }
        Ok(n)
    }

    /// `h`'s file opened again for writing without O_APPEND and O_DIRECT (once per handle).
    fn plain_fd<'h>(
        &self,
        inode: &Inode,
        handle: Handle,
        h: &'h HandleData,
    ) -> Result<&'h OwnedFd, Errno> {
        if h.flags & OFlags::ACCMODE == OFlags::RDONLY {
            return Err(Errno::BADF);
        }
        if let Some(fd) = h.plain.get() {
            return Ok(fd);
        }
        // A descriptor more, counted as the guest's like every other it makes the daemon hold.
        self.check_open_budget()?;
        let fd = self.reopen(inode, OFlags::WRONLY | (h.flags & OFlags::LARGEFILE))?;
        Ok(self.handles.install_plain(handle, h, fd))
    }

    pub(super) fn do_fsync(
        &self,
        node: NodeId,
        handle: Handle,
        datasync: bool,
        dir: bool,
    ) -> Result<(), Errno> {
        let h = self.handles.get(handle, node, dir)?;
        let synced = if datasync { rustix::fs::fdatasync(&h.fd) } else { rustix::fs::fsync(&h.fd) };
        // A failure the daemon's own sync took from this file before is the guest's to hear,
        // or one another handle of the file kept until the guest released it unsynced.
        let unheard = || self.inode(node).ok().and_then(|i| self.take_unheard_sync_failure(&i));
        match h.take_sync_failure().or_else(unheard) {
            Some(errno) => Err(errno),
            None => synced,
        }
    }

    /// Keeps `errno`, a sync failure a released handle of `node` held, for the next FSYNC of
    /// the file (the first one kept stays).
    pub(super) fn keep_unheard_sync_failure(&self, node: NodeId, errno: Errno) {
        let Ok(inode) = self.inode(node) else { return };
        let mut unheard = self.unheard_sync_failures.lock().unwrap_or_else(|e| e.into_inner());
        unheard.entry(inode.key).or_insert((inode, errno));
    }

    fn take_unheard_sync_failure(&self, inode: &Inode) -> Option<Errno> {
        let mut unheard = self.unheard_sync_failures.lock().unwrap_or_else(|e| e.into_inner());
        unheard.remove(&inode.key).map(|(_, errno)| errno)
    }

    /// ACCESS, on a thread with the caller's ids: asked with AT_EACCESS, so the host judges
    /// by them (plain `faccessat` judges by the process's real ids, the daemon's). A Linux guest
    /// never sends it (virtio-fs mounts with `default_permissions`); other drivers may. The
    /// caller's supplementary groups are unknown here: access it has only through one of them
    /// is refused. Before Linux 5.8 (no faccessat2) the mode bits decide, as virtiofsd does.
    pub(super) fn do_access(&self, node: NodeId, mask: u32) -> Result<(), Errno> {
        let inode = self.inode(node)?;
        // R_OK, W_OK and X_OK (F_OK is none of them), as every Linux architecture numbers them.
        if mask & !0o7 != 0 {
            return Err(Errno::INVAL);
        }
        match access_as_thread(&self.proc_fd, &Self::proc_name(&inode), mask as libc::c_int) {
            Err(Errno::NOSYS) => {
                let attr = super::attr::stat_fd(&inode.fd)?.attr;
                access_by_mode(&attr, super::credentials::filesystem_ids(), mask)
            }
            asked => asked,
        }
    }
}

/// Whether ids `(uid, gid)` may access a file of attributes `attr` as `mask` (R_OK 4, W_OK 2,
/// X_OK 1) says, by its mode bits alone: root reads and writes anything and executes what
/// anyone may (any directory).
fn access_by_mode(attr: &Attr, (uid, gid): (u32, u32), mask: u32) -> Result<(), Errno> {
    let dir = attr.mode & libc::S_IFMT == libc::S_IFDIR;
    let allowed = if uid == 0 {
        mask & 1 == 0 || dir || attr.mode & 0o111 != 0
    } else {
        let shift = if attr.uid == uid {
            6
        } else if attr.gid == gid {
            3
        } else {
            0
        };
        (attr.mode >> shift) & mask == mask
    };
    if allowed {
        Ok(())
    } else {
        Err(Errno::ACCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mode-bit answer of ACCESS on hosts without faccessat2.
    #[test]
    fn access_by_mode_reads_the_caller_s_class() {
        let file = Attr { mode: libc::S_IFREG | 0o640, uid: 0, gid: 100, ..Attr::default() };
        assert_eq!(access_by_mode(&file, (1000, 100), 4), Ok(()), "the group reads");
        assert_eq!(access_by_mode(&file, (1000, 100), 2), Err(Errno::ACCESS));
        assert_eq!(access_by_mode(&file, (1000, 5), 4), Err(Errno::ACCESS), "others do not");
        assert_eq!(access_by_mode(&file, (0, 0), 6), Ok(()), "root reads and writes");
        assert_eq!(access_by_mode(&file, (0, 0), 1), Err(Errno::ACCESS), "not executable");
        let dir = Attr { mode: libc::S_IFDIR | 0o700, ..file };
        assert_eq!(access_by_mode(&dir, (0, 0), 1), Ok(()), "root searches any directory");
        assert_eq!(access_by_mode(&dir, (0, 0), 0), Ok(()), "F_OK");
    }

    /// O_DSYNC and O_SYNC of one write are done unless the host file already does them.
    #[test]
    fn a_synchronous_write_is_synced_once() {
        let (dsync, sync) = (libc::O_DSYNC as u32, libc::O_SYNC as u32);
        let opened = |bits: u32| OFlags::RDWR | OFlags::from_bits_retain(bits);
        assert_eq!(sync_asked(0o2, opened(0)), None);
        assert_eq!(sync_asked(dsync, opened(0)), Some(Sync::Data));
        assert_eq!(sync_asked(sync, opened(0)), Some(Sync::All));
        assert_eq!(sync_asked(dsync, opened(dsync)), None);
        assert_eq!(sync_asked(sync, opened(dsync)), Some(Sync::All));
        assert_eq!(sync_asked(sync | dsync, opened(sync)), None);
        assert_eq!(sync_asked(dsync, opened(sync)), None);
    }

    /// A direct read that came back short off a block's edge ended at the end of the file: the
    /// next read, at an unaligned offset, is not made (older kernels answer it EINVAL). One
    /// that ended on an edge reads on, and the failure that cut it short is the answer.
    #[test]
    fn a_short_direct_read_off_a_block_edge_is_the_end_of_the_file() {
        let mut calls = Vec::new();
        let n = read_until_short(
            8192,
            |done| done % 512 != 0,
            |done| {
                calls.push(done);
                if done == 0 {
                    Ok(5000)
                } else {
                    Err(Errno::INVAL.into())
                }
            },
        );
        assert_eq!((n, calls), (Ok(5000), vec![0]));
        let mut answers = vec![Ok(4096), Err(Errno::IO.into())].into_iter();
        let failed =
            read_until_short(8192, |done| done % 512 != 0, |_| answers.next().unwrap_or(Ok(0)));
        assert_eq!(failed, Err(Errno::IO));
    }
}
