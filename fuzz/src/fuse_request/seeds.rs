//! The `fuse_request` seed corpus: sessions of valid requests over the initial tree (file I/O,
//! names, listings, extended attributes, copies) and a malformed one.

use vhu_device_fs::fuse::abi::InHeader;
use vhu_device_fs::fuse::Opcode;
use zerocopy::IntoBytes;

use super::input::{Name, Num, Req, Session, Structured};

/// A structured request with neutral fields.
pub(super) fn req(op: Opcode, node: u8) -> Structured {
    Structured {
        opcode: op as u8,
        unique: 0,
        node: Num::Small(node),
        a: Num::Small(0),
        b: Num::Small(0),
        c: 0,
        d: 0,
        names: [Name::Known(0), Name::Known(0)],
        data: Vec::new(),
        ext: 0,
        cut: 0,
    }
}

/// A session of `requests`, numbered from 2, each with plenty of reply space.
pub(super) fn session_of(requests: Vec<Structured>) -> Session {
    Session {
        queue_size: 128,
        minor: 11,
        init_flags: 0x7fff_ffff,
        init_flags2: 0,
        requests: (2u64..)
            .zip(requests)
            .map(|(unique, r)| (Req::Structured(Box::new(Structured { unique, ..r })), 0))
            .collect(),
    }
}

/// The seed corpus: sessions of valid requests over the initial tree, and malformed ones.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Opcode::*;
    let name =
        |r: Structured, a: u8, b: u8| Structured { names: [Name::Known(a), Name::Known(b)], ..r };
    let args = |r: Structured, a: u64, b: u64, c: u32, d: u32| Structured {
        a: Num::Small(a as u8),
        b: if b < 256 { Num::Small(b as u8) } else { Num::Raw(b) },
        c,
        d,
        ..r
    };
    let data = |r: Structured, data: &[u8]| Structured { data: data.to_vec(), ..r };
    let mut out = Vec::new();

    // /file: lookup, open, read, write, seek, allocate, sync, close, forget.
    let file = vec![
        name(req(Lookup, 1), 0, 0),
        req(Getattr, 2),
        args(req(Open, 2), 0, 0, 2, 0),
        args(req(Read, 2), 1, 0, 4096, 0),
        data(args(req(Write, 2), 1, 5, 0, 0), b"fuzzed bytes"),
        args(req(Read, 2), 1, 3, 8, 0),
        args(req(Lseek, 2), 1, 2, 3, 0),
        args(req(Fallocate, 2), 1, 100, 50, 0),
        args(req(Setattr, 2), 1, 10, 0x49, 0o600),
        args(req(Flush, 2), 1, 0, 0, 0),
        args(req(Fsync, 2), 1, 0, 1, 0),
        args(req(Release, 2), 1, 0, 0, 0),
        args(req(Forget, 2), 1, 0, 0, 0),
    ];
    out.push(("file_io", session_of(file).encode()));

    // Names: mkdir, create, mknod, symlink, link, rename (plain and exchange), unlink, rmdir.
    let names = vec![
        name(args(req(Mkdir, 1), 0, 0, 0o755, 0o022), 5, 0),
        name(args(req(Create, 7), 0, 0, 0o100_644, 2), 0, 0),
        name(args(req(Mknod, 7), 0, 0, 0o010_644, 0), 3, 0),
        name(req(Symlink, 7), 2, 0),
        req(Readlink, 10),
        name(args(req(Link, 7), 2, 0, 0, 0), 4, 0),
        name(args(req(Rename, 7), 3, 0, 0, 0), 4, 1),
        name(args(req(Rename2, 1), 3, 0, 2, 0), 1, 5),
        name(req(Unlink, 3), 1, 0),
        name(req(Rmdir, 1), 1, 0),
        name(req(Lookup, 1), 5, 0),
        name(req(Lookup, 3), 7, 0),
    ];
    out.push(("namespace", session_of(names).encode()));

    // Listings: READDIR, READDIRPLUS (taking references), a small buffer, a later offset.
    let dirs = vec![
        args(req(Opendir, 1), 0, 0, 0, 0),
        args(req(Readdir, 1), 1, 0, 4096, 0),
        args(req(Readdirplus, 1), 1, 0, 4096, 0),
        args(req(Readdir, 1), 1, 3, 40, 0),
        args(req(Readdirplus, 1), 1, 1, 400, 0),
        args(req(Releasedir, 1), 1, 0, 0, 0),
        data(args(req(BatchForget, 0), 0, 0, 3, 0), &[2, 1, 3, 1, 5, 9]),
        args(req(Fsyncdir, 1), 1, 0, 0, 0),
    ];
    out.push(("readdir", session_of(dirs).encode()));

    // Extended attributes.
    let xattrs = vec![
        data(name(args(req(Setxattr, 2), 0, 0, 0, 0), 5, 0), b"value"),
        data(name(args(req(Setxattr, 2), 0, 0, 0, 1), 0, 0), b"other"),
        name(args(req(Getxattr, 2), 0, 0, 0, 0), 5, 0),
        name(args(req(Getxattr, 2), 0, 0, 64, 0), 5, 0),
        name(args(req(Getxattr, 2), 0, 0, 2, 0), 5, 0),
        args(req(Listxattr, 2), 0, 0, 0, 0),
        args(req(Listxattr, 2), 0, 0, 100, 0),
        name(req(Removexattr, 2), 5, 0),
        name(req(Removexattr, 2), 5, 0),
    ];
    out.push(("xattr", session_of(xattrs).encode()));

    // Copies between two open files, statfs, access, syncfs, interrupt, then a second session.
    let misc = vec![
        args(req(Open, 2), 0, 0, 2, 0),
        args(req(Open, 4), 0, 0, 2, 0),
        args(req(CopyFileRange, 4), 2, 10, 4000, (1 << 16) | 2),
        req(Statfs, 1),
        args(req(Access, 2), 0, 0, 4, 0),
        req(Syncfs, 1),
        args(req(Interrupt, 0), 5, 0, 0, 0),
        req(Destroy, 0),
        req(Getattr, 1),
        args(req(Init, 0), 0x4000_0001, 1, 0, 18),
        req(Getattr, 1),
    ];
    out.push(("copy_and_sessions", session_of(misc).encode()));

    // The DAX window: mappings for reading and writing, one over another (removed first), whole
    // and partial removals, a directory, a range past the window, and the session's end.
    let dax = vec![
        name(req(Lookup, 1), 0, 0),
        args(req(Open, 2), 0, 0, 2, 0),
        args(req(SetupMapping, 2), 1, 0, 2, 4),
        args(req(SetupMapping, 2), 1, 4, 2, 7),
        args(req(SetupMapping, 2), 1, 1, 2, 6),
        args(req(SetupMapping, 2), 1, 0, 2, 4),
        data(req(RemoveMapping, 2), &[0, 2]),
        data(req(RemoveMapping, 2), &[4, 1]),
        data(req(RemoveMapping, 2), &[4, 2]),
        args(req(SetupMapping, 1), 1, 0, 2, 4),
        args(req(SetupMapping, 2), 1, 23, 2, 4),
        args(req(SetupMapping, 2), 1, 2, 3, 4),
        req(Destroy, 0),
    ];
    out.push(("dax", session_of(dax.clone()).encode()));
    // The same with every second call to the window refused.
    let mut refused = session_of(dax);
    refused.init_flags2 = 2 << 28;
    out.push(("dax_refused", refused.encode()));

    // Malformed: a short header, a header claiming more than it has, an unterminated name,
    // cut arguments, extensions, unknown opcodes, reply space too small.
    let mut bad = session_of(vec![
        name(req(Lookup, 1), 0, 0),
        Structured {
            names: [Name::Unterminated(b"file".to_vec()), Name::Known(0)],
            ..req(Lookup, 1)
        },
        Structured { cut: 200, ..req(Getattr, 1) },
        Structured { ext: 2, ..name(req(Lookup, 1), 1, 0) },
        Structured { names: [Name::Long(60), Name::Known(0)], ..req(Mkdir, 1) },
        data(req(Getlk, 1), &[0; 48]),
        data(Structured { opcode: 60, ..req(Lookup, 1) }, &[1, 2, 3]),
        req(Statfs, 1),
        req(Statfs, 1),
    ]);
    bad.requests[7].1 = 241;
    bad.requests[8].1 = 250;
    let truncated = InHeader {
        len: 4000,
        opcode: Opcode::Lookup as u32,
        unique: 77,
        nodeid: 1,
        ..InHeader::default()
    };
    bad.requests.push((Req::Raw(vec![1; 10]), 0));
    bad.requests.push((Req::Raw(truncated.as_bytes().to_vec()), 0));
    out.push(("malformed", bad.encode()));
    out
}
