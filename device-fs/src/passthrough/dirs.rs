//! Directory listing: OPENDIR and READDIR / READDIRPLUS from a cookie.
//!
//! Cookies are the host's `d_off` values, so a listing resumes with a seek. READDIRPLUS takes a
//! lookup reference for every entry it reports except `.` and `..` (which carry no entry
//! information), and checks that a record fits before taking one, so nothing leaks.

use rustix::fs::OFlags;
use rustix::io::Errno;

use super::PassthroughFs;
use crate::fuse::{AddError, DirBuffer, DirEntry, Handle, NodeId, Opened};

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
        // A listing must not interleave with another of the same handle. (A lock poisoned by a
        // panic mid-listing leaves a cursor whose next start seeks or resumes consistently.)
        let mut cursor = h.dir_lock.lock().unwrap_or_else(|e| e.into_inner());
        cursor.start(&h.fd, offset)?;
        loop {
            let item = match cursor.peek(&h.fd) {
                Ok(Some(item)) => item,
                Ok(None) => break,
                // What was listed goes out, as the host's own getdents would return it: for
                // READDIRPLUS its entries hold references only the reply gives the guest. The
                // next request, from the last offset, meets the error.
                Err(_) if !buf.is_empty() => break,
                Err(e) => return Err(e),
            };
            let (name, step) = (item.name, item.step());
            let entry = DirEntry {
                ino: self.devices.guest_ino((dir_inode.key.0, item.ino)),
                next_offset: item.next,
                // The host's d_type: the same DT_* values as the guest's, DT_UNKNOWN (0) where
                // the host file system does not say (the guest then asks with a LOOKUP).
                typ: u32::from(item.typ),
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
                Ok(()) | Err(AddError::BadName) => cursor.advance(step),
                Err(AddError::Full) => break,
            }
        }
        cursor.finish();
        Ok(())
    }
}
