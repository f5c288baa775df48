//! SETATTR: mode, owner, size and timestamps, through an open handle when the guest gave one and
//! through the inode's `/proc/self/fd` entry otherwise.
//!
//! A symlink is never followed: its owner changes through its own O_PATH fd, its times through
//! its `/proc/self/fd` entry (a magic link that lands on the symlink itself, not its target), and
//! a mode change is refused with EOPNOTSUPP as Linux refuses `lchmod`.

use std::sync::Arc;

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Timespec, Timestamps, Uid, UTIME_NOW, UTIME_OMIT};
use rustix::io::Errno;

use super::handles::HandleData;
use super::inodes::{Inode, S_IFLNK, S_IFREG};
use super::killpriv::Changer;
use super::PassthroughFs;
use crate::fuse::{AttrReply, NodeId, SetAttr, SetTime};

fn timespec(t: Option<SetTime>) -> Timespec {
    match t {
        None => Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        Some(SetTime::Now) => Timespec { tv_sec: 0, tv_nsec: UTIME_NOW },
        Some(SetTime::At(secs, nsecs)) => Timespec {
            // The kernel sends a signed `time64_t` in the unsigned field: a time before 1970
            // arrives as its two's complement.
            tv_sec: secs as i64,
            tv_nsec: i64::from(nsecs.min(999_999_999)),
        },
    }
}

impl PassthroughFs {
    pub(super) fn do_setattr(
        &self,
        by: Changer,
        node: NodeId,
        set: &SetAttr,
    ) -> Result<AttrReply, Errno> {
        let inode = self.inode(node)?;
        let handle: Option<Arc<HandleData>> = match set.handle {
            Some(h) => Some(self.handles.get(h, node, false)?),
            None => None,
        };
        // Refused before anything changes: a symlink's mode is not the host's to set.
        if set.mode.is_some() && handle.is_none() && inode.kind == S_IFLNK {
            return Err(Errno::OPNOTSUPP);
        }
        if set.uid.is_some() || set.gid.is_some() {
            let uid = set.uid.map(|u| self.config.uid_map.to_host(u)).transpose()?;
            let gid = set.gid.map(|g| self.config.gid_map.to_host(g)).transpose()?;
            rustix::fs::chownat(
                &inode.fd,
                c"",
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )?;
            // A chown drops file capabilities, renamed ones included, when the guest leaves
            // that to the server.
            if self.killpriv_on() {
                self.drop_mapped_capability(&inode);
            }
        }
        if let Some(size) = set.size {
            self.killing_priv(&inode, set.kill_suidgid, by, || match &handle {
                Some(h) => rustix::fs::ftruncate(&h.fd, size),
                None if inode.kind == S_IFREG => {
                    let fd = self.reopen(&inode, OFlags::WRONLY)?;
                    rustix::fs::ftruncate(fd, size)
                }
                None if inode.is_dir() => Err(Errno::ISDIR),
                None => Err(Errno::INVAL),
            })?;
        }
        // The mode after the size, as Linux's own file systems apply a change: a truncation the
        // host refuses (EFBIG, ETXTBSY) leaves the mode as it was, set-id bits included. After
        // the owner too, which clears those bits on the host: the guest's mode is the last word.
        if let Some(mode) = set.mode {
            self.set_mode(&inode, handle.as_deref(), mode)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            self.set_times(&inode, handle.as_deref(), set)?;
        } else if set.ctime
            && set.mode.is_none()
            && set.uid.is_none()
            && set.gid.is_none()
            && set.size.is_none()
        {
            // Nothing else changed, so nothing moved the change time: an owner change to the
            // same owner (-1, -1) moves it to now without changing anything else.
            let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
            rustix::fs::chownat(&inode.fd, c"", None, None, flags)?;
        }
        self.attr_reply(&inode)
    }

    fn set_mode(&self, inode: &Inode, handle: Option<&HandleData>, mode: u32) -> Result<(), Errno> {
        let mode = Mode::from_raw_mode(mode & 0o7777);
        if let Some(h) = handle {
            return rustix::fs::fchmod(&h.fd, mode);
        }
        if inode.kind == S_IFLNK {
            return Err(Errno::OPNOTSUPP);
        }
        rustix::fs::chmodat(&self.proc_fd, Self::proc_name(inode), mode, AtFlags::empty())
    }

    fn set_times(
        &self,
        inode: &Inode,
        handle: Option<&HandleData>,
        set: &SetAttr,
    ) -> Result<(), Errno> {
        let times =
            Timestamps { last_access: timespec(set.atime), last_modification: timespec(set.mtime) };
        if let Some(h) = handle {
            return rustix::fs::futimens(&h.fd, &times);
        }
        rustix::fs::utimensat(&self.proc_fd, Self::proc_name(inode), &times, AtFlags::empty())
    }
}
