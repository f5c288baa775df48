//! Reply checks of `fuse_request`: the framing of every reply (length, unique, errno range,
//! which opcodes get none) and the payload a successful reply must carry for its opcode.

use vhu_device_fs::fuse::abi::{InHeader, OutHeader, DIRENTPLUS_NAME_OFFSET, DIRENT_NAME_OFFSET};
use vhu_device_fs::fuse::{Opcode, Server, ServerConfig, ServerError, VecWriter};
use zerocopy::FromBytes;

use crate::memfs::{MemFs, MAX_FILE};

use super::input::Structured;
use super::{Stats, MAX_ERRNO};

/// Sends one request and checks the reply's framing; returns its error and payload.
pub(super) fn exchange(
    server: &Server<MemFs>,
    request: &[u8],
    space: usize,
    stats: &mut Stats,
) -> Option<(i32, Vec<u8>)> {
    let mut reader: &[u8] = request;
    let mut writer = VecWriter::new(space);
    let result = server.handle(&mut reader, &mut writer);
    let reply = writer.into_bytes();
    let header = InHeader::read_from_prefix(request).ok().map(|(h, _)| h);
    let n = match result {
        Err(ServerError::ShortHeader { got }) => {
            assert!(header.is_none() && got == request.len(), "short header: {result:?}");
            assert!(reply.is_empty(), "a refused request wrote a reply");
            return None;
        }
        Err(ServerError::ReplyTooLarge { need, have }) => {
            assert!(reply.is_empty(), "a refused request wrote a reply");
            assert_eq!(have, space);
            assert!(need > have && have < size_of::<OutHeader>(), "{need} > {have}");
            return None;
        }
        Err(e) => panic!("{e} from byte slices"),
        Ok(n) => n,
    };
    let header = header.expect("a handled request has a header");
    let reply_less = matches!(
        Opcode::from_u32(header.opcode),
        Some(Opcode::Forget | Opcode::BatchForget | Opcode::Interrupt)
    );
    assert_eq!(n, reply.len(), "handle() reports the bytes written");
    if reply_less {
        assert_eq!(n, 0, "opcode {} got a reply: {reply:?}", header.opcode);
        return None;
    }
    assert_ne!(n, 0, "opcode {} got no reply", header.opcode);
    let (out, payload) = OutHeader::read_from_prefix(&reply).expect("a reply starts with a header");
    assert_eq!(out.len as usize, reply.len(), "out header len");
    assert_eq!(out.unique, header.unique, "out header unique");
    assert!(out.error == 0 || (-MAX_ERRNO..0).contains(&out.error), "error {}", out.error);
    if out.error != 0 {
        assert!(payload.is_empty(), "an error reply carries a payload");
        stats.errors += 1;
    } else {
        stats.ok += 1;
    }
    Some((out.error, payload.to_vec()))
}

/// Checks a successful reply's payload against what its opcode defines.
pub(super) fn check_payload(s: &Structured, payload: &[u8], config: ServerConfig) {
    let max_write = config.max_write() as usize;
    let exact = |len: usize| assert_eq!(payload.len(), len, "opcode {} payload", s.opcode());
    let Some(op) = Opcode::from_u32(s.opcode()) else {
        panic!("unknown opcode {} succeeded", s.opcode())
    };
    match op {
        Opcode::Lookup | Opcode::Symlink | Opcode::Mknod | Opcode::Mkdir | Opcode::Link => {
            exact(128)
        }
        Opcode::Getattr | Opcode::Setattr => exact(104),
        Opcode::Open | Opcode::Opendir => exact(16),
        Opcode::Create => exact(144),
        Opcode::Write | Opcode::CopyFileRange | Opcode::Lseek => exact(8),
        Opcode::Statfs => exact(80),
        Opcode::Init => exact(64),
        Opcode::Read => {
            let max_read = config.max_read() as usize;
            assert!(payload.len() <= (s.c as usize).min(max_read), "READ beyond its size");
        }
        Opcode::Readdir | Opcode::Readdirplus => {
            assert!(payload.len() <= (s.c as usize).min(max_write), "READDIR beyond its size");
            check_dirents(payload, op == Opcode::Readdirplus);
        }
        Opcode::Readlink => assert!(!payload.is_empty() && payload.len() < 4096),
        Opcode::Getxattr | Opcode::Listxattr => {
            if s.c == 0 {
                exact(8);
            } else {
                assert!(payload.len() <= s.c as usize, "xattr reply beyond its size");
            }
        }
        Opcode::Unlink
        | Opcode::Rmdir
        | Opcode::Rename
        | Opcode::Rename2
        | Opcode::Release
        | Opcode::Releasedir
        | Opcode::Fsync
        | Opcode::Fsyncdir
        | Opcode::Flush
        | Opcode::Access
        | Opcode::Fallocate
        | Opcode::Setxattr
        | Opcode::Removexattr
        | Opcode::Syncfs
        | Opcode::SetupMapping
        | Opcode::RemoveMapping
        | Opcode::Destroy => exact(0),
        _ => panic!("opcode {op:?} succeeded without an implementation"),
    }
    if op == Opcode::Write {
        let written = u32::from_ne_bytes(payload[..4].try_into().expect("4 bytes"));
        assert!(u64::from(written) <= MAX_FILE, "wrote {written}");
    }
}

/// READDIR records: 8-byte aligned, a name of 1 to 1024 bytes without `/` or NUL, no partial
/// record at the end.
pub(super) fn check_dirents(mut buf: &[u8], plus: bool) {
    let name_at = if plus { DIRENTPLUS_NAME_OFFSET } else { DIRENT_NAME_OFFSET };
    while !buf.is_empty() {
        assert!(buf.len() >= name_at, "partial record header");
        let namelen_at = name_at - 8;
        let namelen = u32::from_ne_bytes(buf[namelen_at..namelen_at + 4].try_into().expect("4"));
        let namelen = namelen as usize;
        assert!((1..=1024).contains(&namelen), "name length {namelen}");
        let record = (name_at + namelen).div_ceil(8) * 8;
        assert!(buf.len() >= record, "partial record");
        let name = &buf[name_at..name_at + namelen];
        assert!(!name.iter().any(|&b| b == b'/' || b == 0), "bad name {name:?}");
        assert!(buf[name_at + namelen..record].iter().all(|&b| b == 0), "padding not zero");
        buf = &buf[record..];
    }
}
