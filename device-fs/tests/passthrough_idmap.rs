//! uid/gid translation (`--translate-uid`/`--translate-gid`): guest callers create files as the
//! mapped host ids, attributes come back as guest ids, SETATTR owners are mapped, forbidden guest
//! ids are refused with EPERM and nothing is created. Creating as other ids needs root (CI).

mod support;

use std::os::unix::fs::MetadataExt;

use support::{args, cstr, Harness};
use vhu_device_fs::fuse::abi::{fattr, AttrOut, MkdirIn, SetattrIn};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::passthrough::{IdMap, IdRule};
use zerocopy::{FromBytes, IntoBytes};

const EPERM: i32 = 1;

fn map(rules: &[&str]) -> IdMap {
    let rules: Vec<IdRule> = rules.iter().map(|r| r.parse().expect("rule")).collect();
    IdMap::new(&rules).expect("map")
}

fn harness(tag: &str) -> Option<Harness> {
    let mut h = Harness::with(tag, |c| {
        c.uid_map = map(&["map:1000:201000:100", "forbid-guest:666:1", "squash-host:0:65534:1"]);
        c.gid_map = map(&["map:1000:301000:100"]);
    });
    h.init();
    if !support::needs_root() {
        eprintln!("not root: cannot create files as other users; skipped");
        return None;
    }
    std::fs::set_permissions(h.share(), std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod share");
    Some(h)
}

fn mkdir(h: &mut Harness, name: &str) -> support::Reply {
    let m = MkdirIn { mode: 0o755, umask: 0 };
    h.call(Opcode::Mkdir, 1, &args(&[m.as_bytes(), &cstr(name)]))
}

#[test]
fn guest_ids_become_host_ids_and_back() {
    let Some(mut h) = harness("idmap-create") else { return };
    h.caller = (1005, 1007);
    let e = mkdir(&mut h, "d").entry();
    assert_eq!((e.attr.uid, e.attr.gid), (1005, 1007), "the guest sees its own ids");
    let m = std::fs::metadata(h.share().join("d")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (201005, 301007), "the host sees the mapped ids");
    // The share root is host root's: squashed for the guest.
    let root = h.call(Opcode::Getattr, 1, &[0u8; 16]);
    let root = AttrOut::read_from_bytes(root.ok()).expect("attr_out").attr;
    assert_eq!(root.uid, 65534);
    // chown to guest ids lands on the mapped host ids.
    h.caller = (0, 0);
    let s =
        SetattrIn { valid: fattr::UID | fattr::GID, uid: 1010, gid: 1020, ..SetattrIn::default() };
    let attr = AttrOut::read_from_bytes(h.call(Opcode::Setattr, e.nodeid, s.as_bytes()).ok())
        .expect("attr_out")
        .attr;
    assert_eq!((attr.uid, attr.gid), (1010, 1020));
    let m = std::fs::metadata(h.share().join("d")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (201010, 301020));
}

#[test]
fn forbidden_guest_ids_are_refused() {
    let Some(mut h) = harness("idmap-forbid") else { return };
    h.caller = (666, 1000);
    assert_eq!(mkdir(&mut h, "nope").errno(), EPERM);
    assert!(!h.share().join("nope").exists());
    h.caller = (0, 0);
    let d = mkdir(&mut h, "d").entry().nodeid;
    let s = SetattrIn { valid: fattr::UID, uid: 666, ..SetattrIn::default() };
    assert_eq!(h.call(Opcode::Setattr, d, s.as_bytes()).errno(), EPERM);
    assert_eq!(std::fs::metadata(h.share().join("d")).expect("stat").uid(), 0);
}
