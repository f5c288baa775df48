//! INIT negotiation and request-level behaviour of the FUSE server.

mod support;

use support::{linux_guest_flags, Harness};
use vhu_device_fs::fuse::abi::{GetattrIn, InHeader, InitFlags, InitIn, InitOut};
use vhu_device_fs::fuse::{Opcode, Server, ServerConfig, ServerError, VecWriter};
use zerocopy::{FromBytes, IntoBytes};

const EIO: i32 = 5;
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const EPROTO: i32 = 71;

#[test]
fn init_claims_only_what_is_implemented() {
    let mut h = Harness::new("init");
    let out = h.init();
    assert_eq!((out.major, out.minor), (7, 38));
    let claimed = InitFlags::from_bits_retain(u64::from(out.flags) | (u64::from(out.flags2) << 32));
    for must in [
        InitFlags::INIT_EXT,
        InitFlags::MAX_PAGES,
        InitFlags::BIG_WRITES,
        InitFlags::DO_READDIRPLUS,
        InitFlags::ATOMIC_O_TRUNC,
        InitFlags::SUBMOUNTS,
    ] {
        assert!(claimed.contains(must), "missing {must:?}");
    }
    // Locks are offered where the share's host file system takes them (the test's does).
    let (posix, flock) = h.server.fs().locking();
    assert_eq!(claimed.contains(InitFlags::POSIX_LOCKS), posix);
    assert_eq!(claimed.contains(InitFlags::FLOCK_LOCKS), flock);
    for must in [InitFlags::POSIX_LOCKS, InitFlags::FLOCK_LOCKS] {
        assert!(claimed.contains(must), "missing {must:?}");
    }
    for never in [
        InitFlags::EXPORT_SUPPORT,
        InitFlags::HANDLE_KILLPRIV,
        InitFlags::HANDLE_KILLPRIV_V2,
        InitFlags::POSIX_ACL,
        InitFlags::DONT_MASK,
        InitFlags::WRITEBACK_CACHE,
        InitFlags::SPLICE_READ,
        InitFlags::NO_OPEN_SUPPORT,
        InitFlags::SETXATTR_EXT,
        InitFlags::HAS_IOCTL_DIR,
    ] {
        assert!(!claimed.contains(never), "claimed {never:?}");
    }
    // Of flags2, only CREATE_SUPP_GROUP, and only when guest credentials are applied (root).
    let supp = (InitFlags::CREATE_SUPP_GROUP.bits() >> 32) as u32;
    let want = if h.server.fs().credentials().is_enabled() { supp } else { 0 };
    assert_eq!(out.flags2, want, "flags2 holds only what is implemented");
    assert!(linux_guest_flags().contains(claimed));
    // 128-entry queue: 124 pages.
    assert_eq!(out.max_pages, 124);
    assert_eq!(out.max_write, 124 * 4096);
    assert_eq!(out.max_readahead, 128 * 1024);
    assert_eq!(out.time_gran, 1);
    // The guest's background requests (readahead, asynchronous direct I/O) are not capped
    // below what its queues carry: virtiofsd's figures.
    assert_eq!((out.max_background, out.congestion_threshold), (65535, 49149));
    assert_eq!(h.server.negotiated_minor(), Some(38));
}

#[test]
fn init_refuses_old_guests_and_stays_uninitialised() {
    let mut h = Harness::new("old");
    let r = h.init_with(26, InitFlags::ASYNC_READ.bits());
    assert_eq!(r.errno(), EPROTO);
    assert_eq!(r.payload.len(), 0);
    assert_eq!(h.server.negotiated(), None);
    let r = h.call(Opcode::Getattr, 1, GetattrIn::default().as_bytes());
    assert_eq!(r.errno(), EIO);
}

#[test]
fn init_accepts_the_short_pre_7_36_form_and_ignores_flags2_without_init_ext() {
    let mut h = Harness::new("short");
    let mut body = [0u8; 16];
    body[0..4].copy_from_slice(&7u32.to_ne_bytes());
    body[4..8].copy_from_slice(&31u32.to_ne_bytes());
    body[12..16].copy_from_slice(&(InitFlags::MAX_PAGES.bits() as u32).to_ne_bytes());
    let r = h.call(Opcode::Init, 0, &body);
    let out = InitOut::read_from_prefix(r.ok()).expect("init_out").0;
    assert_eq!(out.flags, InitFlags::MAX_PAGES.bits() as u32);
    assert_eq!(h.server.negotiated_minor(), Some(31));

    // flags2 bits without INIT_EXT are not read.
    let r = h.init_with(38, InitFlags::SECURITY_CTX.bits());
    let out = InitOut::read_from_prefix(r.ok()).expect("init_out").0;
    assert_eq!((out.flags, out.flags2), (0, 0));
}

#[test]
fn newer_major_gets_our_version_only() {
    let mut h = Harness::new("major");
    let body = InitIn { major: 8, ..InitIn::default() };
    let r = h.call(Opcode::Init, 0, body.as_bytes());
    let out = InitOut::read_from_prefix(r.ok()).expect("init_out").0;
    assert_eq!((out.major, out.minor, out.flags), (7, 38, 0));
    assert_eq!(h.server.negotiated(), None);
}

#[test]
fn requests_before_init_unknown_opcodes_and_reply_less_ones() {
    let mut h = Harness::new("misc");
    assert_eq!(h.lookup(1, "x").errno(), EIO);
    h.init();
    // Unknown and unimplemented opcodes: ENOSYS, never silence.
    let mut reader_bytes =
        InHeader { len: 40, opcode: 54, unique: 99, ..InHeader::default() }.as_bytes().to_vec();
    let mut reader: &[u8] = &reader_bytes;
    let mut w = VecWriter::new(64);
    h.server.handle(&mut reader, &mut w).expect("handled");
    assert_eq!(i32::from_ne_bytes(w.bytes()[4..8].try_into().expect("4 bytes")), -ENOSYS);
    assert_eq!(h.call(Opcode::Bmap, 1, &[0; 16]).errno(), ENOSYS);
    assert_eq!(h.call(Opcode::Ioctl, 1, &[0; 32]).errno(), ENOSYS);
    // FORGET, BATCH_FORGET and INTERRUPT write nothing, even when malformed.
    assert!(h.try_call(Opcode::Forget, 5, &1u64.to_ne_bytes()).is_none());
    assert!(h.try_call(Opcode::Forget, 5, &[]).is_none());
    assert!(h.try_call(Opcode::BatchForget, 0, &[1, 0, 0, 0]).is_none());
    assert!(h.try_call(Opcode::Interrupt, 0, &7u64.to_ne_bytes()).is_none());
    // Truncated arguments: EINVAL.
    assert_eq!(h.call(Opcode::Getattr, 1, &[0; 3]).errno(), EINVAL);
    // A name without its NUL: EINVAL.
    assert_eq!(h.call(Opcode::Lookup, 1, b"abc").errno(), EINVAL);
    // A header claiming more bytes than the request has: EINVAL.
    reader_bytes = InHeader {
        len: 4000,
        opcode: Opcode::Lookup as u32,
        unique: 7,
        nodeid: 1,
        ..InHeader::default()
    }
    .as_bytes()
    .to_vec();
    let mut reader: &[u8] = &reader_bytes;
    let mut w = VecWriter::new(64);
    h.server.handle(&mut reader, &mut w).expect("handled");
    assert_eq!(i32::from_ne_bytes(w.bytes()[4..8].try_into().expect("4 bytes")), -EINVAL);
    // DESTROY answers with a bare header and ends the session.
    let r = h.call(Opcode::Destroy, 0, &[]);
    assert_eq!((r.header.error, r.payload.len()), (0, 0));
    assert_eq!(h.lookup(1, "x").errno(), EIO);
}

#[test]
fn short_header_and_tiny_reply_space_are_server_errors() {
    let dirs = support::TempDirs::new("short-hdr");
    let fs = vhu_device_fs::passthrough::PassthroughFs::new(
        vhu_device_fs::passthrough::Config::new(dirs.share()),
    )
    .expect("fs");
    let server = Server::new(fs, ServerConfig::default());
    let mut reader: &[u8] = &[0u8; 10];
    let mut w = VecWriter::new(64);
    assert_eq!(server.handle(&mut reader, &mut w), Err(ServerError::ShortHeader { got: 10 }));
    let hdr = InHeader { len: 40, opcode: Opcode::Statfs as u32, ..InHeader::default() };
    let mut reader: &[u8] = hdr.as_bytes();
    let mut w = VecWriter::new(8);
    assert!(matches!(server.handle(&mut reader, &mut w), Err(ServerError::ReplyTooLarge { .. })));
}

#[test]
fn max_pages_follows_the_queue_size() {
    assert_eq!(ServerConfig::for_queue_size(1024).max_pages, 256);
    assert_eq!(ServerConfig::for_queue_size(128).max_pages, 124);
    assert_eq!(ServerConfig::for_queue_size(4).max_pages, 1);
    assert_eq!(ServerConfig::for_queue_size(64).max_write(), 60 * 4096);
}

/// Found by fuzzing: a FORGET whose header length is below the header size, and an INTERRUPT
/// whose extension length exceeds its body, got an EINVAL reply; reply-less opcodes never get one.
#[test]
fn malformed_reply_less_requests_get_no_reply() {
    let mut h = Harness::new("reply-less");
    h.init();
    let forget =
        InHeader { len: 0, opcode: Opcode::Forget as u32, unique: 5, ..InHeader::default() };
    let mut bytes = forget.as_bytes().to_vec();
    bytes.extend_from_slice(&1u64.to_ne_bytes());
    let mut reader: &[u8] = &bytes;
    let mut w = VecWriter::new(64);
    assert_eq!(h.server.handle(&mut reader, &mut w).expect("handled"), 0);
    assert!(w.bytes().is_empty());
    let interrupt = InHeader {
        len: 48,
        opcode: Opcode::Interrupt as u32,
        unique: 6,
        total_extlen: 2,
        ..InHeader::default()
    };
    let mut bytes = interrupt.as_bytes().to_vec();
    bytes.extend_from_slice(&7u64.to_ne_bytes());
    let mut reader: &[u8] = &bytes;
    let mut w = VecWriter::new(64);
    assert_eq!(h.server.handle(&mut reader, &mut w).expect("handled"), 0);
    assert!(w.bytes().is_empty());
}

#[test]
fn a_new_session_starts_at_the_share_even_when_its_path_names_another_directory() {
    // After the daemon pivots or chroots into the share, the configured path names nothing,
    // or a directory the guest made inside the share. Moving the share away and putting a
    // decoy at its path stands in for both.
    let mut h = Harness::new("reset-root");
    std::fs::write(h.share().join("real"), b"data").expect("file");
    h.init();
    let old = h.lookup(1, "real").entry().nodeid;
    let moved = h.dirs.base.join("moved");
    std::fs::rename(h.share(), &moved).expect("move the share");
    std::fs::create_dir(h.share()).expect("decoy directory");
    std::fs::write(h.share().join("decoy"), b"").expect("decoy file");

    let r = h.call(Opcode::Destroy, 0, &[]);
    assert_eq!(r.header.error, 0);
    h.init();
    assert_eq!(h.lookup(1, "decoy").errno(), 2, "the new root is the share, not the decoy");
    let fresh = h.lookup(1, "real").entry();
    assert_eq!(fresh.attr.size, 4);
    let stale = h.call(Opcode::Getattr, old, GetattrIn::default().as_bytes());
    if old != fresh.nodeid {
        assert_ne!(stale.header.error, 0, "the old session's node {old} was forgotten");
    }
}

/// A guest counts `max_pages` in its own pages, which may be 64 KiB (arm64, ppc64): a READ
/// larger than `max_pages` 4 KiB pages is filled as far as its reply buffers reach, not cut
/// short (a short READ is end of file to the guest's page cache, which then shrinks the file).
#[test]
fn a_read_of_larger_guest_pages_is_filled() {
    use vhu_device_fs::fuse::abi::{OpenIn, ReadIn};
    let config = ServerConfig::for_queue_size(16);
    let mut h = Harness::serving("read-large-pages", |_| {}, config);
    h.init();
    let data: Vec<u8> = (0..(256 * 1024u32)).map(|i| (i % 251) as u8).collect();
    std::fs::write(h.share().join("f"), &data).expect("host write");
    let node = h.lookup(1, "f").entry().nodeid;
    let fh = h.call(Opcode::Open, node, OpenIn::default().as_bytes()).open().fh;
    let size = 12 * 16384; // max_pages of 16 KiB pages, beyond 12 pages of 4 KiB
    assert!(size > config.max_write());
    let read = ReadIn { fh, size, ..ReadIn::default() };
    let reply = h.call(Opcode::Read, node, read.as_bytes());
    assert_eq!(reply.ok(), &data[..size as usize]);
}

/// An extended attribute's value goes whole in one argument whatever `max_pages` (up to
/// 64 KiB): a small queue's server takes it to the file system.
#[test]
fn a_large_xattr_value_reaches_the_file_system_on_a_small_queue() {
    use vhu_device_fs::fuse::abi::SetxattrInCompat;
    let config = ServerConfig::for_queue_size(8);
    let mut h = Harness::serving("xattr-small-queue", |c| c.xattr = true, config);
    h.init();
    std::fs::write(h.share().join("f"), b"f").expect("host write");
    let node = h.lookup(1, "f").entry().nodeid;
    let value = vec![7u8; 60_000];
    assert!(value.len() > config.max_write() as usize);
    let set = SetxattrInCompat { size: value.len() as u32, flags: 0 };
    let body = support::args(&[set.as_bytes(), b"user.big\0", &value]);
    let errno = h.call(Opcode::Setxattr, node, &body).errno();
    // The host file system decides (tmpfs may refuse a value this large with ENOSPC or
    // E2BIG); the server does not refuse it as malformed.
    assert_ne!(errno, EINVAL, "refused before the file system saw it");
}

/// Node ids are never handed out twice, across sessions too: a FORGET of the session before
/// (a guest's last FORGET can reach the back-end after its DESTROY, on another queue) names no
/// node of the next one.
#[test]
fn a_new_session_does_not_reuse_the_last_ones_node_ids() {
    use vhu_device_fs::fuse::abi::ForgetIn;
    let mut h = Harness::new("ids-across-sessions");
    std::fs::write(h.share().join("a"), b"a").expect("file");
    std::fs::write(h.share().join("b"), b"b").expect("file");
    h.init();
    let a = h.lookup(1, "a").entry().nodeid;
    assert_eq!(h.call(Opcode::Destroy, 0, &[]).header.error, 0);
    h.init();
    let b = h.lookup(1, "b").entry().nodeid;
    assert_ne!(a, b, "a new id");
    assert!(h.try_call(Opcode::Forget, a, ForgetIn { nlookup: 1 }.as_bytes()).is_none());
    let inodes = h.server.fs().inodes();
    assert_eq!(inodes.lookups(vhu_device_fs::fuse::NodeId(b)), Some(1), "b is untouched");
}

/// A request that raced a DESTROY on another queue (it passed the gate before the session
/// ended) may leave a node behind; the next INIT drops it with everything else, so the new
/// session starts clean.
#[test]
fn the_first_init_after_destroy_drops_what_a_raced_request_left() {
    use vhu_device_fs::fuse::{Context, FileSystem, NodeId};
    let mut h = Harness::new("destroy-race");
    h.init();
    std::fs::write(h.share().join("x"), b"x").expect("file");
    assert_eq!(h.call(Opcode::Destroy, 0, &[]).header.error, 0);
    // What the raced LOOKUP did, straight on the file system.
    let left = h.server.fs().lookup(&Context::default(), NodeId(1), c"x").expect("lookup").node;
    h.init();
    let getattr = h.call(Opcode::Getattr, left.0, GetattrIn::default().as_bytes());
    assert_ne!(getattr.header.error, 0, "node {} of the ended session still answers", left.0);
}
