//! Replies that the guest left too little room for: an operation whose reply hands the guest a
//! node reference or an open handle is refused before it is done (EOVERFLOW), so nothing stays
//! held that the guest never heard of; READDIRPLUS fills only the room there is.

mod support;

use support::{args, cstr, exists, parse_direntplus, Harness};
use vhu_device_fs::fuse::abi::{CreateIn, MkdirIn, OpenIn, ReadIn};
use vhu_device_fs::fuse::{NodeId, Opcode};
use zerocopy::IntoBytes;

const EOVERFLOW: i32 = 75;
/// `fuse_out_header`.
const HEADER: usize = 16;

#[test]
fn lookup_mkdir_and_create_without_room_for_their_reply_take_nothing() {
    let mut h = Harness::new("room-entry");
    std::fs::write(h.share().join("f"), b"x").expect("file");
    h.init();
    let before = h.server.fs().inodes().len();
    // Room for the header and most of a `fuse_entry_out` (128 bytes), not all of it.
    h.reply_room = HEADER + 100;
    assert_eq!(h.lookup(1, "f").errno(), EOVERFLOW);
    let m = MkdirIn { mode: 0o755, umask: 0 };
    assert_eq!(h.call(Opcode::Mkdir, 1, &args(&[m.as_bytes(), &cstr("d")])).errno(), EOVERFLOW);
    assert!(!exists(&h.share().join("d")), "the directory was not made");
    let c = CreateIn { flags: 0o2 | 0o100, mode: 0o100644, ..CreateIn::default() };
    // An entry fits, the open handle after it does not.
    h.reply_room = HEADER + 130;
    assert_eq!(h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr("c")])).errno(), EOVERFLOW);
    assert!(!exists(&h.share().join("c")), "the file was not created");
    assert_eq!(h.server.fs().inodes().len(), before, "no node was taken");

    h.reply_room = HEADER + 128;
    let node = h.lookup(1, "f").entry().nodeid;
    assert_eq!(h.server.fs().inodes().lookups(NodeId(node)), Some(1), "one reference, the guest's");
}

#[test]
fn readdirplus_fills_only_the_room_the_reply_has() {
    let mut h = Harness::new("room-dirplus");
    for i in 0..20 {
        std::fs::write(h.share().join(format!("file-{i:02}")), b"x").expect("file");
    }
    h.init();
    let fh = h.call(Opcode::Opendir, 1, OpenIn::default().as_bytes()).open().fh;
    let before = h.server.fs().inodes().len();
    // The guest asks for 64 KiB but left room for about two records (152 bytes each and a name).
    h.reply_room = HEADER + 400;
    let r = ReadIn { fh, offset: 0, size: 1 << 16, ..ReadIn::default() };
    let reply = h.call(Opcode::Readdirplus, 1, r.as_bytes());
    let entries = parse_direntplus(reply.ok());
    assert!(reply.ok().len() <= 400);
    assert!(!entries.is_empty(), "what fits is sent");
    let referenced: Vec<u64> =
        entries.iter().map(|(_, node, _)| *node).filter(|node| *node != 0).collect();
    assert_eq!(
        h.server.fs().inodes().len(),
        before + referenced.len(),
        "a reference only for each entry sent"
    );
}
