//! Directory listing: OPENDIR and READDIR / READDIRPLUS from a cookie.
//!
//! Cookies are the host's `d_off` values, so a listing resumes with a seek. READDIRPLUS takes a
//! lookup reference for every entry it reports except `.` and `..` (which carry no entry
//! information), and checks that a record fits before taking one, so nothing leaks.

use std::mem::MaybeUninit;

use rustix::fs::{FileType, OFlags, RawDir, SeekFrom};
use rustix::io::Errno;

use super::PassthroughFs;
use crate::fuse::{AddError, DirBuffer, DirEntry, Handle, NodeId, Opened};

/// getdents buffer size.
const DIRENT_BUF: usize = 16 * 1024;

impl PassthroughFs {
    pub(super) fn do_opendir(&self, node: NodeId) -> Result<Opened, Errno> {
        self.check_open_budget()?;
        let inode = self.dir_inode(node)?;
        let fd = self.reopen(&inode, OFlags::RDONLY)?;
        Ok(Opened { handle: self.handles.insert_dir(fd, node), flags: self.config.open_flags.1 })
    }

    pub(super) fn do_readdir(
        &self,
        node: NodeId,
        handle: Handle,
        offset: u64,
        buf: &mut DirBuffer,
        plus: bool,
    ) -> Result<(), Errno> {
        let h = self.handles.get(handle, node, true)?;
        let dir_inode = self.dir_inode(node)?;
        // Seek + getdents must not interleave with another listing of the same handle.
        let _guard = h.dir_lock.lock().unwrap_or_else(|e| e.into_inner());
        rustix::fs::seek(&h.fd, SeekFrom::Start(offset))?;
        let mut scratch = vec![MaybeUninit::<u8>::uninit(); DIRENT_BUF];
        let mut dir = RawDir::new(&h.fd, &mut scratch);
        while let Some(item) = dir.next() {
            let item = match item {
                Ok(item) => item,
                // What was listed goes out, as the host's own getdents would return it: for
                // READDIRPLUS its entries hold references only the reply gives the guest. The
                // next request, from the last offset, meets the error.
                Err(_) if !buf.is_empty() => break,
                Err(e) => return Err(e),
            };
            let name = item.file_name();
            let entry = DirEntry {
                ino: self.devices.guest_ino((dir_inode.key.0, item.ino())),
                next_offset: item.next_entry_cookie(),
                typ: dirent_type(item.file_type()),
                name: name.to_bytes(),
            };
            let added = if !plus {
                buf.add(&entry)
            } else if !buf.fits(entry.name.len(), true) {
                Err(AddError::Full)
            } else if matches!(entry.name, b"." | b"..") {
                buf.add_plus(&entry, None)
            } else {
                match self.lookup_at(&dir_inode, name) {
                    Ok(e) => {
                        let r = buf.add_plus(&entry, Some(&e));
                        if r.is_err() {
                            self.inodes.forget(e.node, 1);
                        }
                        r
                    }
                    // Gone since getdents saw it: report the name without entry information.
                    Err(_) => buf.add_plus(&entry, None),
                }
            };
            match added {
                Ok(()) | Err(AddError::BadName) => {}
                Err(AddError::Full) => break,
            }
        }
        Ok(())
    }
}

/// The `d_type` of a directory entry as the guest reads it: `mode >> 12` for a known type,
/// `DT_UNKNOWN` (0) when the host file system does not say (then the guest asks with a
/// LOOKUP or stat). rustix reports an unknown type with every type bit set, which shifted
/// would be 15, a type that does not exist.
fn dirent_type(kind: FileType) -> u32 {
    match kind {
        FileType::Unknown => 0,
        known => known.as_raw_mode() >> 12,
    }
}

#[cfg(test)]
mod tests {
    use rustix::fs::FileType;

    use super::dirent_type;

    #[test]
    fn entry_types_are_the_dt_values() {
        // DT_UNKNOWN 0, DT_FIFO 1, DT_CHR 2, DT_DIR 4, DT_BLK 6, DT_REG 8, DT_LNK 10, DT_SOCK 12.
        let want = [
            (FileType::Unknown, 0),
            (FileType::Fifo, 1),
            (FileType::CharacterDevice, 2),
            (FileType::Directory, 4),
            (FileType::BlockDevice, 6),
            (FileType::RegularFile, 8),
            (FileType::Symlink, 10),
            (FileType::Socket, 12),
        ];
        for (kind, dt) in want {
            assert_eq!(dirent_type(kind), dt, "{kind:?}");
        }
    }
}
