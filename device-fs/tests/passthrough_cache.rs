//! The guest caching policies (`--cache`) and their companions, as the guest sees them in
//! replies: entry and attribute timeouts, FOPEN_* flags on OPEN, CREATE and OPENDIR, READDIRPLUS
//! and writeback caching in INIT, and how a writeback guest's opens reach the host.

mod support;

use support::{args, cstr, Harness};
use vhu_device_fs::fuse::abi::{fopen, CreateIn, InitFlags, OpenIn, OpenOut, ReadIn};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::passthrough::CachePolicy;
use zerocopy::{FromBytes, IntoBytes};

const O_RDONLY: u32 = 0;
const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_APPEND: u32 = 0o2000;

/// What the guest learns under one policy: (entry timeout s, CREATE flags, OPEN flags,
/// OPENDIR flags, READDIRPLUS offered).
fn observe(policy: CachePolicy) -> (u64, u32, u32, u32, bool) {
    let mut h = Harness::with(&format!("cache-{policy:?}"), |c| c.cache(policy));
    let init = h.init();
    let flags = InitFlags::from_bits_retain(u64::from(init.flags));
    let c = CreateIn { flags: O_WRONLY | O_CREAT, mode: 0o100644, ..CreateIn::default() };
    let r = h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr("f")]));
    let entry = r.entry();
    let created = OpenOut::read_from_bytes(&r.ok()[128..]).expect("open_out").open_flags;
    let o = OpenIn { flags: O_RDONLY, ..OpenIn::default() };
    let opened = h.call(Opcode::Open, entry.nodeid, o.as_bytes()).open().open_flags;
    let dir = h.call(Opcode::Opendir, 1, OpenIn::default().as_bytes()).open().open_flags;
    assert_eq!(entry.entry_valid, entry.attr_valid, "{policy:?}");
    (entry.entry_valid, created, opened, dir, flags.contains(InitFlags::DO_READDIRPLUS))
}

#[test]
fn each_policy_answers_what_it_promises() {
    let keep_dir = fopen::KEEP_CACHE | fopen::CACHE_DIR;
    assert_eq!(observe(CachePolicy::Never), (0, fopen::DIRECT_IO, fopen::DIRECT_IO, 0, false));
    assert_eq!(
        observe(CachePolicy::Metadata),
        (86_400, fopen::DIRECT_IO, fopen::DIRECT_IO, keep_dir, true)
    );
    assert_eq!(observe(CachePolicy::Auto), (1, 0, 0, 0, true));
    assert_eq!(
        observe(CachePolicy::Always),
        (86_400, fopen::KEEP_CACHE, fopen::KEEP_CACHE, keep_dir, true)
    );
}

#[test]
fn writeback_is_offered_only_when_asked_and_opens_allow_reading() {
    let mut plain = Harness::new("wb-off");
    let init = plain.init();
    let flags = InitFlags::from_bits_retain(u64::from(init.flags) | (u64::from(init.flags2) << 32));
    assert!(!flags.contains(InitFlags::WRITEBACK_CACHE));
    assert!(!flags.contains(InitFlags::DIRECT_IO_ALLOW_MMAP));

    let mut h = Harness::with("wb-on", |c| {
        c.writeback = true;
        c.allow_mmap = true;
    });
    let init = h.init();
    let flags = InitFlags::from_bits_retain(u64::from(init.flags) | (u64::from(init.flags2) << 32));
    assert!(flags.contains(InitFlags::WRITEBACK_CACHE | InitFlags::DIRECT_IO_ALLOW_MMAP));
    std::fs::write(h.share().join("f"), b"0123456789").expect("seed");
    let node = h.lookup(1, "f").entry().nodeid;
    // The guest opened write-only and for appending; with writeback it still reads the file to
    // fill partial pages, and it writes at the offsets it chose.
    let o = OpenIn { flags: O_WRONLY | O_APPEND, ..OpenIn::default() };
    let fh = h.call(Opcode::Open, node, o.as_bytes()).open().fh;
    let r = ReadIn { fh, offset: 2, size: 4, ..ReadIn::default() };
    assert_eq!(h.call(Opcode::Read, node, r.as_bytes()).ok(), b"2345");
    let w = vhu_device_fs::fuse::abi::WriteIn { fh, offset: 0, size: 2, ..Default::default() };
    h.call(Opcode::Write, node, &args(&[w.as_bytes(), b"ab"]));
    assert_eq!(std::fs::read(h.share().join("f")).expect("read"), b"ab23456789");
}
