//! FUSE opcodes (`enum fuse_opcode`, protocol 7.45).
//!
//! Only the numbering lives here; what each opcode does is the server's business. Numbers at or
//! above 54 are not standardised yet and are deliberately absent.

/// A FUSE request opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u32)]
pub enum Opcode {
    /// FUSE_LOOKUP
    Lookup = 1,
    /// FUSE_FORGET (no reply)
    Forget = 2,
    /// FUSE_GETATTR
    Getattr = 3,
    /// FUSE_SETATTR
    Setattr = 4,
    /// FUSE_READLINK
    Readlink = 5,
    /// FUSE_SYMLINK
    Symlink = 6,
    /// FUSE_MKNOD
    Mknod = 8,
    /// FUSE_MKDIR
    Mkdir = 9,
    /// FUSE_UNLINK
    Unlink = 10,
    /// FUSE_RMDIR
    Rmdir = 11,
    /// FUSE_RENAME
    Rename = 12,
    /// FUSE_LINK
    Link = 13,
    /// FUSE_OPEN
    Open = 14,
    /// FUSE_READ
    Read = 15,
    /// FUSE_WRITE
    Write = 16,
    /// FUSE_STATFS
    Statfs = 17,
    /// FUSE_RELEASE
    Release = 18,
    /// FUSE_FSYNC
    Fsync = 20,
    /// FUSE_SETXATTR
    Setxattr = 21,
    /// FUSE_GETXATTR
    Getxattr = 22,
    /// FUSE_LISTXATTR
    Listxattr = 23,
    /// FUSE_REMOVEXATTR
    Removexattr = 24,
    /// FUSE_FLUSH
    Flush = 25,
    /// FUSE_INIT
    Init = 26,
    /// FUSE_OPENDIR
    Opendir = 27,
    /// FUSE_READDIR
    Readdir = 28,
    /// FUSE_RELEASEDIR
    Releasedir = 29,
    /// FUSE_FSYNCDIR
    Fsyncdir = 30,
    /// FUSE_GETLK
    Getlk = 31,
    /// FUSE_SETLK
    Setlk = 32,
    /// FUSE_SETLKW
    Setlkw = 33,
    /// FUSE_ACCESS
    Access = 34,
    /// FUSE_CREATE
    Create = 35,
    /// FUSE_INTERRUPT (no reply)
    Interrupt = 36,
    /// FUSE_BMAP
    Bmap = 37,
    /// FUSE_DESTROY
    Destroy = 38,
    /// FUSE_IOCTL
    Ioctl = 39,
    /// FUSE_POLL
    Poll = 40,
    /// FUSE_NOTIFY_REPLY
    NotifyReply = 41,
    /// FUSE_BATCH_FORGET (no reply)
    BatchForget = 42,
    /// FUSE_FALLOCATE
    Fallocate = 43,
    /// FUSE_READDIRPLUS
    Readdirplus = 44,
    /// FUSE_RENAME2
    Rename2 = 45,
    /// FUSE_LSEEK
    Lseek = 46,
    /// FUSE_COPY_FILE_RANGE
    CopyFileRange = 47,
    /// FUSE_SETUPMAPPING
    SetupMapping = 48,
    /// FUSE_REMOVEMAPPING
    RemoveMapping = 49,
    /// FUSE_SYNCFS
    Syncfs = 50,
    /// FUSE_TMPFILE
    Tmpfile = 51,
    /// FUSE_STATX
    Statx = 52,
    /// FUSE_COPY_FILE_RANGE_64
    CopyFileRange64 = 53,
}

impl Opcode {
    /// The opcode for a raw number, if it is one the protocol defines.
    pub fn from_u32(raw: u32) -> Option<Self> {
        use Opcode::*;
        const ALL: [Opcode; 51] = [
            Lookup,
            Forget,
            Getattr,
            Setattr,
            Readlink,
            Symlink,
            Mknod,
            Mkdir,
            Unlink,
            Rmdir,
            Rename,
            Link,
            Open,
            Read,
            Write,
            Statfs,
            Release,
            Fsync,
            Setxattr,
            Getxattr,
            Listxattr,
            Removexattr,
            Flush,
            Init,
            Opendir,
            Readdir,
            Releasedir,
            Fsyncdir,
            Getlk,
            Setlk,
            Setlkw,
            Access,
            Create,
            Interrupt,
            Bmap,
            Destroy,
            Ioctl,
            Poll,
            NotifyReply,
            BatchForget,
            Fallocate,
            Readdirplus,
            Rename2,
            Lseek,
            CopyFileRange,
            SetupMapping,
            RemoveMapping,
            Syncfs,
            Tmpfile,
            Statx,
            CopyFileRange64,
        ];
        ALL.into_iter().find(|op| *op as u32 == raw)
    }

    /// Whether the request changes the file system (names, data, attributes): what a read-only
    /// export refuses. OPEN, CREATE and SETUPMAPPING with write access are judged by their
    /// flags, not here.
    pub fn modifies(self) -> bool {
        matches!(
            self,
            Self::Setattr
                | Self::Symlink
                | Self::Mknod
                | Self::Mkdir
                | Self::Unlink
                | Self::Rmdir
                | Self::Rename
                | Self::Rename2
                | Self::Link
                | Self::Write
                | Self::Setxattr
                | Self::Removexattr
                | Self::Create
                | Self::Tmpfile
                | Self::Fallocate
                | Self::CopyFileRange
                | Self::CopyFileRange64
        )
    }

    /// Whether the request may wait for long: on storage (a sync to disk, a close that flushes,
    /// space allocated or copied, a truncation), or on the front-end (a DAX mapping made or
    /// removed, a session's mappings removed by INIT or DESTROY). The guest should hear of the
    /// requests that finished before it first.
    pub fn may_wait_long(self) -> bool {
        matches!(
            self,
            Self::SetupMapping
                | Self::RemoveMapping
                | Self::Init
                | Self::Destroy
                | Self::Fsync
                | Self::Fsyncdir
                | Self::Syncfs
                | Self::Flush
                | Self::Release
                | Self::Fallocate
                | Self::CopyFileRange
                | Self::CopyFileRange64
                | Self::Setattr
        )
    }

    /// Whether the protocol sends no reply to this opcode.
    pub fn is_reply_less(self) -> bool {
        matches!(self, Self::Forget | Self::BatchForget | Self::Interrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::Opcode;

    #[test]
    fn numbers_round_trip() {
        for raw in 0..100 {
            if let Some(op) = Opcode::from_u32(raw) {
                assert_eq!(op as u32, raw);
            }
        }
        assert_eq!(Opcode::from_u32(7), None);
        assert_eq!(Opcode::from_u32(19), None);
        assert_eq!(Opcode::from_u32(54), None);
        assert_eq!(Opcode::from_u32(26), Some(Opcode::Init));
        assert_eq!(Opcode::from_u32(53), Some(Opcode::CopyFileRange64));
    }
}
