//! Request bytes of `fuse_request`: a structured request built into a `fuse_in_header` with the
//! right `len` and the argument struct its opcode expects, optionally cut short or extended.

use vhu_device_fs::fuse::abi::{
    AccessIn, BatchForgetIn, CopyFileRangeIn, CreateIn, FallocateIn, FileLock, FlushIn, ForgetIn,
    ForgetOne, FsyncIn, GetattrIn, GetxattrIn, InHeader, InitIn, InterruptIn, LinkIn, LkIn,
    LseekIn, MkdirIn, MknodIn, OpenIn, ReadIn, ReleaseIn, Rename2In, RenameIn, SetattrIn,
    SetxattrInCompat, StatxIn, SyncfsIn, WriteIn,
};
use vhu_device_fs::fuse::abi::{
    RemoveMappingIn, RemoveMappingOne, SetupMappingIn, SETUPMAPPING_NO_HANDLE,
};
use vhu_device_fs::fuse::Opcode;
use zerocopy::{Immutable, IntoBytes};

use super::input::Structured;

impl Structured {
    pub(super) fn opcode(&self) -> u32 {
        u32::from(self.opcode % 64)
    }

    /// The request bytes: header and body.
    pub(super) fn build(&self) -> Vec<u8> {
        let mut body = self.args();
        let cut = usize::from(self.cut) % 64;
        if self.cut >= 192 {
            body.truncate(body.len().saturating_sub(cut));
        }
        let start = body.len();
        self.extensions(&mut body);
        let ext_words = (body.len() - start) / 8;
        let header = InHeader {
            len: (size_of::<InHeader>() + body.len()) as u32,
            opcode: self.opcode(),
            unique: self.unique,
            nodeid: self.node.get(),
            uid: self.c & 0xff,
            gid: self.d & 0xff,
            pid: 1,
            total_extlen: ext_words as u16,
            padding: 0,
        };
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Request extensions, in 8-byte words: `ext % 4` records of the kind `ext >> 2` picks —
    /// empty security-context records (`le32 size; le32 type`), supplementary-group records (one
    /// group, or a wrong count), security contexts with a name and a value from `data`, or a
    /// record whose size comes from `c` (often running past the end).
    fn extensions(&self, body: &mut Vec<u8>) {
        let words = |w: &[u32]| w.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        for _ in 0..self.ext % 4 {
            let record = match self.ext >> 2 & 3 {
                0 => words(&[8, 0]),
                1 => words(&[16, 32, 1 + (self.d & 1), self.d >> 8]),
                2 => {
                    let value = &self.data[..self.data.len().min(24)];
                    let mut r = words(&[0, 1, value.len() as u32, 0]);
                    r.extend_from_slice(b"security.fuzz\0");
                    r.extend_from_slice(value);
                    r.resize(r.len().next_multiple_of(8), 0);
                    let size = r.len() as u32;
                    r[..4].copy_from_slice(&size.to_le_bytes());
                    r
                }
                _ => words(&[(self.c & 0xf8) + 8, self.c >> 24]),
            };
            body.extend_from_slice(&record);
        }
    }

    /// The arguments the opcode expects.
    pub(super) fn args(&self) -> Vec<u8> {
        let (a, b, c, d) = (self.a.get(), self.b.get(), self.c, self.d);
        let mut body = Vec::new();
        let put = |body: &mut Vec<u8>, v: &dyn AsBytes| body.extend_from_slice(v.bytes());
        let data_len = if c & 0x8000_0000 != 0 { c & 0xffff } else { self.data.len() as u32 };
        let [n1, n2] = &self.names;
        let read = ReadIn {
            fh: a,
            offset: b,
            size: c,
            read_flags: 0,
            lock_owner: 0,
            flags: d,
            padding: 0,
        };
        match Opcode::from_u32(self.opcode()) {
            Some(Opcode::Lookup | Opcode::Unlink | Opcode::Rmdir | Opcode::Removexattr) => {
                n1.put(&mut body)
            }
            Some(Opcode::Forget) => put(&mut body, &ForgetIn { nlookup: a }),
            Some(Opcode::Getattr) => {
                put(&mut body, &GetattrIn { getattr_flags: c, dummy: 0, fh: a })
            }
            Some(Opcode::Setattr) => put(
                &mut body,
                &SetattrIn {
                    valid: c,
                    fh: a,
                    size: b,
                    atime: b,
                    mtime: a,
                    atimensec: d,
                    mtimensec: d >> 1,
                    mode: d,
                    uid: d & 0xff,
                    gid: d >> 24,
                    ..SetattrIn::default()
                },
            ),
            Some(Opcode::Symlink) => {
                n1.put(&mut body);
                n2.put(&mut body);
            }
            Some(Opcode::Mknod) => {
                put(&mut body, &MknodIn { mode: c, rdev: d, umask: 0o022, padding: 0 });
                n1.put(&mut body);
            }
            Some(Opcode::Mkdir) => {
                put(&mut body, &MkdirIn { mode: c, umask: d });
                n1.put(&mut body);
            }
            Some(Opcode::Rename) => {
                put(&mut body, &RenameIn { newdir: a });
                n1.put(&mut body);
                n2.put(&mut body);
            }
            Some(Opcode::Rename2) => {
                put(&mut body, &Rename2In { newdir: a, flags: c, padding: 0 });
                n1.put(&mut body);
                n2.put(&mut body);
            }
            Some(Opcode::Link) => {
                put(&mut body, &LinkIn { oldnodeid: a });
                n1.put(&mut body);
            }
            Some(Opcode::Open | Opcode::Opendir) => {
                put(&mut body, &OpenIn { flags: c, open_flags: d })
            }
            Some(Opcode::Read | Opcode::Readdir | Opcode::Readdirplus) => put(&mut body, &read),
            Some(Opcode::Write) => {
                let w = WriteIn {
                    fh: a,
                    offset: b,
                    size: data_len,
                    write_flags: d,
                    ..Default::default()
                };
                put(&mut body, &w);
                body.extend_from_slice(&self.data);
            }
            Some(Opcode::Release | Opcode::Releasedir) => {
                put(&mut body, &ReleaseIn { fh: a, flags: c, release_flags: d, lock_owner: b })
            }
            Some(Opcode::Fsync | Opcode::Fsyncdir) => {
                put(&mut body, &FsyncIn { fh: a, fsync_flags: c, padding: 0 })
            }
            Some(Opcode::Setxattr) => {
                put(&mut body, &SetxattrInCompat { size: data_len, flags: d });
                n1.put(&mut body);
                body.extend_from_slice(&self.data);
            }
            Some(Opcode::Getxattr) => {
                put(&mut body, &GetxattrIn { size: c, padding: 0 });
                n1.put(&mut body);
            }
            Some(Opcode::Listxattr) => put(&mut body, &GetxattrIn { size: c, padding: 0 }),
            Some(Opcode::Flush) => {
                put(&mut body, &FlushIn { fh: a, unused: 0, padding: 0, lock_owner: b })
            }
            Some(Opcode::Init) => put(
                &mut body,
                &InitIn {
                    major: 7 + u32::from(c % 8 == 7),
                    minor: 20 + d % 20,
                    max_readahead: 1 << 17,
                    flags: a as u32,
                    flags2: b as u32,
                    ..InitIn::default()
                },
            ),
            Some(Opcode::Access) => put(&mut body, &AccessIn { mask: c, padding: 0 }),
            Some(Opcode::Create | Opcode::Tmpfile) => {
                put(&mut body, &CreateIn { flags: c, mode: d, umask: 0o022, open_flags: 0 });
                n1.put(&mut body);
            }
            Some(Opcode::Getlk | Opcode::Setlk | Opcode::Setlkw) => {
                let lk = FileLock { start: b, end: b.saturating_add(a % 4096), typ: c % 4, pid: 1 };
                put(
                    &mut body,
                    &LkIn { fh: a, owner: u64::from(d), lk, lk_flags: c >> 31, padding: 0 },
                )
            }
            Some(Opcode::Statx) => put(
                &mut body,
                &StatxIn {
                    getattr_flags: c & 1,
                    fh: a,
                    sx_flags: d,
                    sx_mask: c,
                    ..StatxIn::default()
                },
            ),
            Some(Opcode::Interrupt) => put(&mut body, &InterruptIn { unique: a }),
            Some(Opcode::BatchForget) => {
                let count = self.data.len() / 2;
                put(&mut body, &BatchForgetIn { count: c.min(count as u32 + 2), dummy: 0 });
                for pair in self.data.chunks_exact(2) {
                    let one =
                        ForgetOne { nodeid: u64::from(pair[0] % 16), nlookup: u64::from(pair[1]) };
                    put(&mut body, &one);
                }
            }
            Some(Opcode::Fallocate) => put(
                &mut body,
                &FallocateIn { fh: a, offset: b, length: u64::from(c), mode: d, padding: 0 },
            ),
            Some(Opcode::Lseek) => {
                put(&mut body, &LseekIn { fh: a, offset: b, whence: c % 8, padding: 0 })
            }
            Some(Opcode::CopyFileRange) => put(
                &mut body,
                &CopyFileRangeIn {
                    fh_in: a,
                    off_in: b,
                    nodeid_out: u64::from(d % 16),
                    fh_out: u64::from(d >> 16),
                    off_out: u64::from(c >> 8),
                    len: u64::from(c),
                    flags: 0,
                },
            ),
            Some(Opcode::Syncfs) => put(&mut body, &SyncfsIn { padding: a }),
            Some(Opcode::SetupMapping) => put(
                &mut body,
                &SetupMappingIn {
                    fh: if d & 1 == 0 { SETUPMAPPING_NO_HANDLE } else { a },
                    // Pages, now and then one byte off.
                    foffset: (b >> 32) % 8 * 4096 + u64::from(c >> 31),
                    len: u64::from(c % 6) * 4096 + u64::from(c >> 8 & 1),
                    flags: u64::from(d >> 1 & 3) | u64::from(d >> 3 & 1) << 5,
                    moffset: b % 24 * 4096,
                },
            ),
            Some(Opcode::RemoveMapping) => {
                let entries = self.data.len() / 2;
                let count = if c & 0x100 == 0 { entries as u32 } else { c % 8 };
                put(&mut body, &RemoveMappingIn { count });
                for pair in self.data.chunks_exact(2) {
                    let moffset = u64::from(pair[0] % 24) * 4096;
                    let len = u64::from(pair[1] % 6) * 4096 + u64::from(pair[1] >> 7);
                    put(&mut body, &RemoveMappingOne { moffset, len });
                }
            }
            _ => body.extend_from_slice(&self.data),
        }
        body
    }
}

/// Wire structs as bytes, behind one object-safe trait.
trait AsBytes {
    fn bytes(&self) -> &[u8];
}

impl<T: IntoBytes + Immutable> AsBytes for T {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
