//! Races between two queues (two threads on one server) and the host:
//! - CREATE of an existing name opens the inode it reports, never one renamed over the name
//!   meanwhile, and never opens a FIFO swapped in;
//! - xattr operations act on the inode they were asked about even while another queue forgets
//!   it and opens other files (an fd number closed and reused midway must not redirect them).
//!
//! Also: the guest cannot write `trusted.*` or `security.*` attributes on the host.

mod support;

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{args, cstr, Harness};
use vhu_device_fs::fuse::abi::{CreateIn, ForgetIn, OpenOut, ReleaseIn, SetxattrInCompat};
use vhu_device_fs::fuse::{Handle, NodeId, Opcode};
use zerocopy::{FromBytes, IntoBytes};

const EPERM: i32 = 1;
const EOPNOTSUPP: i32 = 95;
const RUN_FOR: Duration = Duration::from_millis(1500);

fn setxattr(h: &mut Harness, node: u64, name: &str, value: &[u8]) -> support::Reply {
    let set = SetxattrInCompat { size: value.len() as u32, flags: 0 };
    h.call(Opcode::Setxattr, node, &args(&[set.as_bytes(), &cstr(name), value]))
}

#[test]
fn create_opens_the_inode_it_reports() {
    let mut h = Harness::new("race-create");
    h.init();
    let share = h.share();
    std::fs::write(share.join("target"), b"first").expect("host write");
    let stop = Arc::new(AtomicBool::new(false));
    // The host keeps replacing `target`: another regular file, then a FIFO.
    let renamer = {
        let (share, stop) = (share.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tmp = share.join(format!("tmp-{i}"));
                if i % 2 == 0 {
                    std::fs::write(&tmp, b"other").expect("host write");
                } else {
                    support::mkfifo(&tmp, 0o666);
                }
                std::fs::rename(&tmp, share.join("target")).expect("rename over");
                i += 1;
            }
        })
    };
    // Nobody reads the FIFOs: opening one for writing succeeds only while the daemon holds its
    // read end open, which it must never do.
    let fifo_opened = {
        let (share, stop) = (share.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let w = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                    .open(share.join("target"));
                if w.is_ok_and(|f| f.metadata().is_ok_and(|m| m.file_type().is_fifo())) {
                    return true;
                }
            }
            false
        })
    };
    // The CREATE loop runs on its own thread so that a CREATE blocked on a FIFO fails the test
    // instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    let mut q = h.sharing();
    std::thread::spawn(move || {
        let mut opened = 0u32;
        let deadline = Instant::now() + RUN_FOR;
        while Instant::now() < deadline {
            let c = CreateIn { flags: 0o2 | 0o100, mode: 0o100644, ..CreateIn::default() };
            let r = q.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr("target")]));
            if r.header.error != 0 {
                continue; // a FIFO under the name: refused, as it must be
            }
            let entry = r.entry();
            let fh = OpenOut::read_from_bytes(&r.ok()[128..]).expect("open_out").fh;
            let data = q.server.fs().handles().get(Handle(fh), NodeId(entry.nodeid), false);
            let st = rustix::fs::fstat(&data.expect("handle").fd).expect("fstat");
            assert_eq!(st.st_mode & 0o170000, 0o100000, "a regular file was opened");
            assert_eq!(entry.attr.ino, st.st_ino, "the entry is the inode opened");
            let rel = ReleaseIn { fh, ..ReleaseIn::default() };
            q.call(Opcode::Release, entry.nodeid, rel.as_bytes()).ok();
            let forget = ForgetIn { nlookup: 1 };
            assert!(q.try_call(Opcode::Forget, entry.nodeid, forget.as_bytes()).is_none());
            opened += 1;
        }
        let _ = done.send(opened);
    });
    let opened = finished.recv_timeout(RUN_FOR + Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    let opened = opened.expect("a CREATE blocked (or failed an assertion above)");
    renamer.join().expect("renamer");
    assert!(!fifo_opened.join().expect("fifo watcher"), "the daemon opened a FIFO swapped in");
    assert!(opened > 0, "some CREATE found a regular file");
}

#[test]
fn xattr_calls_keep_their_inode_while_another_queue_forgets_it() {
    let mut h = Harness::with("race-xattr", |c| c.xattr = true);
    h.init();
    let share = h.share();
    std::fs::write(share.join("victim"), b"v").expect("host write");
    std::fs::write(share.join("bystander"), b"b").expect("host write");
    let probe = h.lookup(1, "victim").entry().nodeid;
    if setxattr(&mut h, probe, "user.probe", b"1").errno() == EOPNOTSUPP {
        return; // the temporary directory's file system has no user xattrs
    }
    let node = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Queue A: looks the victim up, forgets it (closing its fd), opens the bystander (which
        // tends to get the same fd number), forgets that too.
        let mut a = h.sharing();
        let (node, stop) = (&node, &stop);
        scope.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let v = a.lookup(1, "victim").entry().nodeid;
                node.store(v, Ordering::Relaxed);
                let forget = ForgetIn { nlookup: 1 };
                let _ = a.try_call(Opcode::Forget, v, forget.as_bytes());
                let b = a.lookup(1, "bystander").entry().nodeid;
                let _ = a.try_call(Opcode::Forget, b, forget.as_bytes());
            }
        });
        // Queue B: tags whatever the victim's node is right now.
        let mut b = h.sharing();
        let deadline = Instant::now() + RUN_FOR;
        while Instant::now() < deadline {
            let v = node.load(Ordering::Relaxed);
            if v != 0 {
                let _ = setxattr(&mut b, v, "user.tag", b"victim");
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let tagged = rustix::fs::getxattr(share.join("bystander"), "user.tag", &mut [0u8; 16]);
    assert!(tagged.is_err(), "an xattr meant for the victim landed on another file");
}

#[test]
fn protected_xattr_names_are_never_written_but_a_capability_may_go() {
    let mut h = Harness::with("xattr-protected", |c| c.xattr = true);
    h.init();
    std::fs::write(h.share().join("f"), b"f").expect("host write");
    let f = h.lookup(1, "f").entry().nodeid;
    for name in ["trusted.overlay.opaque", "security.capability", "security.selinux"] {
        assert_eq!(setxattr(&mut h, f, name, b"x").errno(), EPERM, "{name}");
        if name != "security.capability" {
            assert_eq!(h.call(Opcode::Removexattr, f, &cstr(name)).errno(), EPERM, "{name}");
        }
    }
    let mut buf = [0u8; 32];
    assert!(rustix::fs::getxattr(h.share().join("f"), "security.capability", &mut buf).is_err());
    assert!(rustix::fs::getxattr(h.share().join("f"), "trusted.overlay.opaque", &mut buf).is_err());
    // A file capability may be removed (what the guest kernel does before a write by a caller
    // that may not keep it): it only takes privilege away.
    if rustix::process::geteuid().is_root() {
        // VFS_CAP_REVISION_2, CAP_NET_RAW permitted.
        let cap: Vec<u8> =
            [0x0200_0000u32, 1 << 13, 0, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
        let path = h.share().join("f");
        rustix::fs::setxattr(&path, "security.capability", &cap, rustix::fs::XattrFlags::empty())
            .expect("a file capability");
        let removed = h.call(Opcode::Removexattr, f, &cstr("security.capability"));
        assert_eq!(removed.errno(), 0);
        assert!(rustix::fs::getxattr(&path, "security.capability", &mut buf).is_err());
    }
}
