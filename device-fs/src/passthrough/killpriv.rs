//! What a change of a file takes away: its set-user-ID and set-group-ID bits and its file
//! capability, as the host kernel takes them from a local writer without CAP_FSETID
//! (FUSE_HANDLE_KILLPRIV_V2 marks, and the guest's unmarked changes the server must judge), and
//! a renamed file capability the host kernel does not know (CVE-2021-20263). It decides whether
//! and as whom bits go; the operations that change files are the caller's.

use std::os::fd::AsFd;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::inodes::{self, Inode};
use super::{attr, proc_path, PassthroughFs};
use crate::fuse::{Context, FsResult, NodeId};

/// Who changes a file, as clearing its set-id bits goes: the guest caller's uid, and its host
/// gid.
#[derive(Clone, Copy, Debug)]
pub(super) struct Changer {
    pub(super) uid: u32,
    pub(super) group: u32,
}

/// The group a caller whose gid has no host id (`forbid-guest`) is judged by: the kernel's
/// overflow gid, a member of no file's group in practice.
const NO_HOST_GROUP: u32 = 65534;

impl PassthroughFs {
    /// Who changes a file, as clearing its set-id bits goes: the guest caller (`ctx`).
    pub(super) fn changer(&self, ctx: &Context) -> Changer {
        Changer {
            uid: ctx.uid,
            group: self.config.gid_map.to_host(ctx.gid).unwrap_or(NO_HOST_GROUP),
        }
    }

    /// Runs `op` (a write or truncation by `by`) so that the host clears set-id bits when
    /// `kill` says the caller lacks CAP_FSETID (the guest's mark, or
    /// [`PassthroughFs::open_kills`]), judged by the caller's group; otherwise runs it as it
    /// is. Either way a renamed file capability goes afterwards.
    pub(super) fn killing_priv<T>(
        &self,
        inode: &Inode,
        kill: bool,
        by: Changer,
        op: impl FnOnce() -> FsResult<T>,
    ) -> FsResult<T> {
        if !kill {
            let value = op()?;
            // The guest asks for the kill only for a caller without CAP_FSETID, but a write or
            // truncation drops file capabilities whoever makes it: the host does so for the
            // real attribute, and a renamed copy goes here. Without HANDLE_KILLPRIV_V2 too:
            // the guest then removes the attribute itself before a write through its page
            // cache, but not before a direct one (FOPEN_DIRECT_IO, O_DIRECT), as virtiofsd
            // also found.
            self.drop_mapped_capability(inode);
            return Ok(value);
        }
        let value = self.config.credentials.without_fsetid_in(by.group, op)?;
        self.drop_mapped_capability(inode);
        Ok(value)
    }

    /// Whether an O_TRUNC OPEN by guest user `uid` clears set-id bits. Under HANDLE_KILLPRIV_V2
    /// the guest marks the callers without CAP_FSETID (FUSE_OPEN_KILL_SUIDGID). Without it the
    /// guest leaves them to the server too: with ATOMIC_O_TRUNC its own mode change for the
    /// truncation is never sent (Linux's `fuse_do_setattr` ends at ATTR_OPEN), so the bits would
    /// outlive a truncation by a user who may not keep them (POSIX `open` O_TRUNC, Linux's
    /// `should_remove_suid`). A caller other than guest root is then taken to lack CAP_FSETID.
    ///
    /// (A WRITE or SETATTR marked KILL_SUIDGID is honoured as marked, negotiated or not: Linux
    /// marks a direct write, FOPEN_DIRECT_IO's, by a caller without CAP_FSETID whatever was
    /// negotiated, and leaves the bits to the server; other marks come only under
    /// HANDLE_KILLPRIV_V2, and a mark clears no more than the host kernel would for such a
    /// caller, judged by its group; a member of the file's group through a supplementary group
    /// of its own, which the host never learns, loses set-group-ID as an outsider would.)
    pub(super) fn open_kills(&self, uid: u32, open_flags: u32) -> bool {
        if self.killpriv_on() {
            open_flags & crate::fuse::abi::OPEN_KILL_SUIDGID != 0
        } else {
            uid != 0
        }
    }

    /// The host kernel drops `security.capability` on a write, truncation or chown, but not an
    /// attribute the xattr map renamed it to: that copy goes here (CVE-2021-20263), so a guest
    /// file capability never outlives a change of the file.
    pub(super) fn drop_mapped_capability(&self, inode: &Inode) {
        let Some(name) = &self.renamed_capability else { return };
        if !matches!(inode.kind, inodes::S_IFREG | inodes::S_IFDIR) {
            return;
        }
        let Ok(path) = proc_path::through(&self.proc_fd, &inode.fd) else { return };
        // Absent (ENODATA) is the common case; nothing else can be done about a failure.
        let _ = rustix::fs::removexattr(path, name);
    }

    /// Runs `op`, a change by guest user `by` of the contents of the file open as `fd` that
    /// the guest marks nothing for (FALLOCATE, the destination of COPY_FILE_RANGE). Under
    /// HANDLE_KILLPRIV_V2 the guest leaves the set-id bits to the server for these too (Linux's
    /// `fuse_setattr` sends no mode change for its `file_modified`), without saying whether the
    /// caller has CAP_FSETID; a caller other than guest root is taken to lack it, as for an
    /// unmarked O_TRUNC OPEN ([`PassthroughFs::open_kills`]). The bits go before the change, as
    /// the kernel's own `file_modified` takes them, by its long-standing rule (set-user-ID
    /// always, set-group-ID where the group may execute), and the change runs without
    /// CAP_FSETID, as a marked WRITE does: a host file system that clears them on it applies
    /// its own rule on top (Linux 6.2 on also takes a set-group-ID without group execute), and
    /// clears them where the daemon may not change the mode (a user namespace that does not
    /// map the owner, `--modcaps=-fowner`). Without the capability the guest sends that mode
    /// change itself.
    pub(super) fn killing_unmarked<T>(
        &self,
        by: Changer,
        fd: impl AsFd,
        op: impl FnOnce() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        if !self.killpriv_on() || by.uid == 0 {
            return op();
        }
        // A handle the change cannot go through (read-only: EBADF) leaves the bits alone.
        let writable = rustix::fs::fcntl_getfl(&fd)
            .is_ok_and(|flags| flags.intersects(OFlags::WRONLY | OFlags::RDWR));
        if !writable {
            return op();
        }
        let mode = rustix::fs::fstat(&fd)?.st_mode & 0o7777;
        let mut kept = mode & !0o4000;
        if mode & 0o2010 == 0o2010 {
            kept &= !0o2000;
        }
        if kept != mode {
            // Refused: left to the host kernel below.
            let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(kept));
        }
        self.config.credentials.without_fsetid_in(by.group, op)
    }

    /// Clears S_ISGID of `node` (an access ACL was set for a caller outside its group).
    pub(super) fn clear_sgid(&self, node: NodeId) -> FsResult<()> {
        let inode = self.inode(node)?;
        let mode = attr::stat_fd(&inode.fd)?.attr.mode;
        if mode & 0o2000 == 0 || inode.kind == inodes::S_IFLNK {
            return Ok(());
        }
        let mode = rustix::fs::Mode::from_raw_mode(mode & 0o7777 & !0o2000);
        rustix::fs::chmodat(
            &self.proc_fd,
            Self::proc_name(&inode),
            mode,
            rustix::fs::AtFlags::empty(),
        )
    }
}
