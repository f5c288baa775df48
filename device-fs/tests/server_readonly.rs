//! A read-only export (`--readonly`): everything that reads works, everything that would change
//! the share is refused with EROFS before it reaches the host, whoever asks.

mod support;

use support::{args, cstr, Harness};
use vhu_device_fs::fuse::abi::{fattr, CreateIn, MkdirIn, OpenIn, ReadIn, SetattrIn, WriteIn};
use vhu_device_fs::fuse::{Opcode, ServerConfig};
use zerocopy::IntoBytes;

const EROFS: i32 = 30;
const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_TRUNC: u32 = 0o1000;
const O_CREAT: u32 = 0o100;

#[test]
fn reads_work_and_every_change_is_refused() {
    let config = ServerConfig { read_only: true, ..ServerConfig::for_queue_size(128) };
    let mut h = Harness::serving("readonly", |_| {}, config);
    std::fs::write(h.share().join("f"), b"kept").expect("seed");
    std::fs::create_dir(h.share().join("d")).expect("seed dir");
    h.init();
    let node = h.lookup(1, "f").entry().nodeid;
    let fh = h.call(Opcode::Open, node, OpenIn::default().as_bytes()).open().fh;
    let r = ReadIn { fh, size: 16, ..ReadIn::default() };
    assert_eq!(h.call(Opcode::Read, node, r.as_bytes()).ok(), b"kept");
    for flags in [O_WRONLY, O_RDWR, O_TRUNC] {
        let o = OpenIn { flags, ..OpenIn::default() };
        assert_eq!(h.call(Opcode::Open, node, o.as_bytes()).errno(), EROFS, "{flags:o}");
    }
    let w = WriteIn { fh, size: 1, ..WriteIn::default() };
    assert_eq!(h.call(Opcode::Write, node, &args(&[w.as_bytes(), b"x"])).errno(), EROFS);
    let c = CreateIn { flags: O_CREAT | O_RDWR, mode: 0o100644, ..CreateIn::default() };
    let create = args(&[c.as_bytes(), &cstr("new")]);
    assert_eq!(h.call(Opcode::Create, 1, &create).errno(), EROFS);
    let m = MkdirIn { mode: 0o755, umask: 0 };
    assert_eq!(h.call(Opcode::Mkdir, 1, &args(&[m.as_bytes(), &cstr("nd")])).errno(), EROFS);
    let s = SetattrIn { valid: fattr::MODE, mode: 0o600, ..SetattrIn::default() };
    assert_eq!(h.call(Opcode::Setattr, node, s.as_bytes()).errno(), EROFS);
    assert_eq!(h.call(Opcode::Unlink, 1, &cstr("f")).errno(), EROFS);
    assert_eq!(h.call(Opcode::Rmdir, 1, &cstr("d")).errno(), EROFS);
    // Nothing changed on the host.
    assert_eq!(std::fs::read(h.share().join("f")).expect("read"), b"kept");
    assert!(h.share().join("d").is_dir() && !h.share().join("new").exists());
}
