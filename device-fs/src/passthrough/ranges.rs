//! A file's contents changed or read other than by READ and WRITE: FALLOCATE and
//! COPY_FILE_RANGE (with what such a change takes under HANDLE_KILLPRIV_V2: set-id bits and a
//! renamed file capability), LSEEK's data and holes, and the descriptors the DAX window maps.
//! It opens no file by name and creates none (`files.rs` does); every handle it uses is one the
//! guest opened, or the node's own inode reopened.

use rustix::fs::{FallocateFlags, OFlags, SeekFrom};
use rustix::io::Errno;

use super::files::{is_regular, MAX_RW_COUNT};
use super::killpriv::Changer;
use super::PassthroughFs;
use crate::fuse::{CopyRange, Handle, NodeId};

impl PassthroughFs {
    /// FALLOCATE for guest user `by`.
    pub(super) fn do_fallocate(
        &self,
        by: Changer,
        node: NodeId,
        handle: Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> Result<(), Errno> {
        let h = self.handles.get(handle, node, false)?;
        let mode = FallocateFlags::from_bits(mode).ok_or(Errno::OPNOTSUPP)?;
        self.killing_unmarked(by, &h.fd, || rustix::fs::fallocate(&h.fd, mode, offset, length))?;
        self.contents_changed(node);
        Ok(())
    }

    /// After a change of `node`'s contents other than a WRITE or a truncation (FALLOCATE, the
    /// destination of COPY_FILE_RANGE), a renamed file capability goes as the host kernel's own
    /// does (`file_modified`): under HANDLE_KILLPRIV the guest leaves that to the server.
    fn contents_changed(&self, node: NodeId) {
        if self.renamed_capability.is_some() {
            if let Ok(inode) = self.inode(node) {
                self.drop_mapped_capability(&inode);
            }
        }
    }

    pub(super) fn do_lseek(
        &self,
        node: NodeId,
        handle: Handle,
        offset: u64,
        whence: u32,
    ) -> Result<u64, Errno> {
        let h = self.handles.get(handle, node, false)?;
        // The guest's loff_t, as its bits: the host answers a negative position as it would
        // its own caller (EINVAL, or ENXIO for SEEK_DATA and SEEK_HOLE).
        let signed = offset as i64;
        let pos = match whence {
            0 => SeekFrom::Start(offset),
            1 => SeekFrom::Current(signed),
            2 => SeekFrom::End(signed),
            3 => SeekFrom::Data(offset),
            4 => SeekFrom::Hole(offset),
            _ => return Err(Errno::INVAL),
        };
        rustix::fs::seek(&h.fd, pos)
    }

    /// What a DAX mapping of `node` maps: the guest's open handle when it named one, whose
    /// access mode must allow the mapping (`mmap` needs a readable descriptor, and a read-write
    /// one to write through a shared mapping), else the regular file opened afresh for reading,
    /// or for reading and writing. The guest's kernel checked its caller's access when that
    /// caller opened the file, as for OPEN.
    pub(super) fn do_mapping_fd(
        &self,
        node: NodeId,
        handle: Option<Handle>,
        writable: bool,
    ) -> Result<std::os::fd::OwnedFd, Errno> {
        let access = if writable { OFlags::RDWR } else { OFlags::RDONLY };
        let Some(handle) = handle else {
            let inode = self.inode(node)?;
            if !is_regular(inode.kind) {
                return Err(Errno::NODEV);
            }
            return self.reopen(&inode, access);
        };
        let h = self.handles.get(handle, node, false)?;
        let mode = rustix::fs::fcntl_getfl(&h.fd)? & OFlags::ACCMODE;
        if mode == OFlags::WRONLY || (writable && mode != OFlags::RDWR) {
            return Err(Errno::ACCESS);
        }
        rustix::io::fcntl_dupfd_cloexec(&h.fd, 0)
    }

    /// COPY_FILE_RANGE for guest user `uid`.
    pub(super) fn do_copy_file_range(&self, by: Changer, r: &CopyRange) -> Result<usize, Errno> {
        if r.flags != 0 {
            return Err(Errno::INVAL);
        }
        let src = self.handles.get(r.handle_in, r.node_in, false)?;
        let dst = self.handles.get(r.handle_out, r.node_out, false)?;
        let (mut off_in, mut off_out) = (r.offset_in, r.offset_out);
        // At most what one call can report (`fuse_write_out.size` is 32 bits) and the kernel
        // moves at once (MAX_RW_COUNT): a larger copy ends short, as copy_file_range(2) may.
        let len = usize::try_from(r.len).unwrap_or(usize::MAX).min(MAX_RW_COUNT);
        // The guest sends a copy only to a file it has without O_APPEND (the kernel refuses
        // one with it), so a handle opened with it had it cleared since (F_SETFL): the host
        // file takes the same change, and the copy goes where its offset says.
        dst.follow(OFlags::APPEND, false)?;
        let mut copy = || {
            rustix::fs::copy_file_range(
                &src.fd,
                Some(&mut off_in),
                &dst.fd,
                Some(&mut off_out),
                len,
            )
        };
        let copied = if len > 0 { self.killing_unmarked(by, &dst.fd, copy)? } else { copy()? };
        if copied > 0 {
            self.contents_changed(r.node_out);
        }
        Ok(copied)
    }
}
