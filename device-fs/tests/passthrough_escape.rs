//! Attempts to reach outside the shared directory must fail and leave the outside untouched.

mod support;

use std::os::unix::fs::symlink;

use support::{args, cstr, exists, Harness};
use vhu_device_fs::fuse::abi::{CreateIn, MkdirIn, MknodIn, OpenIn, RenameIn};
use vhu_device_fs::fuse::Opcode;
use zerocopy::IntoBytes;

const ENOTDIR: i32 = 20;
const EINVAL: i32 = 22;
const ELOOP: i32 = 40;

fn setup(tag: &str) -> Harness {
    let mut h = Harness::new(tag);
    h.init();
    std::fs::write(h.dirs.outside().join("secret"), b"secret").expect("outside file");
    symlink("/etc", h.share().join("abs")).expect("absolute symlink");
    symlink("../outside", h.share().join("rel")).expect("relative symlink");
    symlink("../outside/secret", h.share().join("relfile")).expect("file symlink");
    h
}

#[test]
fn dot_dot_and_slashes_are_refused() {
    let mut h = setup("dots");
    assert_eq!(h.lookup(1, "..").errno(), EINVAL);
    assert_eq!(h.lookup(1, ".").errno(), EINVAL);
    assert_eq!(h.lookup(1, "../outside").errno(), EINVAL);
    assert_eq!(h.lookup(1, "rel/secret").errno(), EINVAL);
    assert_eq!(h.lookup(1, "").errno(), EINVAL);
    let m = MkdirIn { mode: 0o755, umask: 0 };
    let r = h.call(Opcode::Mkdir, 1, &args(&[m.as_bytes(), &cstr("../evil")]));
    assert_eq!(r.errno(), EINVAL);
    let r = h.call(Opcode::Symlink, 1, &args(&[&cstr("/tmp/abs-evil"), &cstr("x")]));
    assert_eq!(r.errno(), EINVAL, "an absolute symlink *name* is refused");
    let ren = RenameIn { newdir: 1 };
    let r = h.call(Opcode::Rename, 1, &args(&[ren.as_bytes(), &cstr("abs"), &cstr("../moved")]));
    assert_eq!(r.errno(), EINVAL);
    let r = h.call(Opcode::Unlink, 1, &cstr("../outside/secret"));
    assert_eq!(r.errno(), EINVAL);
    let mk = MknodIn { mode: 0o100644, ..MknodIn::default() };
    let r = h.call(Opcode::Mknod, 1, &args(&[mk.as_bytes(), &cstr("..")]));
    assert_eq!(r.errno(), EINVAL);
    assert!(exists(&h.dirs.outside().join("secret")));
    assert!(!exists(&h.dirs.base.join("evil")));
    assert!(!exists(&h.dirs.base.join("moved")));
}

#[test]
fn symlinks_are_nodes_never_followed() {
    let mut h = setup("symlinks");
    for name in ["abs", "rel"] {
        let e = h.lookup(1, name).entry();
        assert_eq!(e.attr.mode & 0o170000, 0o120000, "{name} is reported as a symlink");
        // Using the symlink as a directory does not go through it.
        assert_eq!(h.lookup(e.nodeid, "passwd").errno(), ENOTDIR);
        assert_eq!(h.lookup(e.nodeid, "secret").errno(), ENOTDIR);
        let r = h.call(Opcode::Opendir, e.nodeid, OpenIn::default().as_bytes());
        assert_eq!(r.errno(), ENOTDIR);
        let m = MkdirIn { mode: 0o755, umask: 0 };
        let r = h.call(Opcode::Mkdir, e.nodeid, &args(&[m.as_bytes(), &cstr("new")]));
        assert_eq!(r.errno(), ENOTDIR);
    }
    let abs = h.lookup(1, "abs").entry().nodeid;
    assert_eq!(h.call(Opcode::Readlink, abs, &[]).ok(), b"/etc");
    // Opening a symlink node for I/O is refused.
    let f = h.lookup(1, "relfile").entry().nodeid;
    let r = h.call(Opcode::Open, f, OpenIn { flags: 2, open_flags: 0 }.as_bytes());
    assert_eq!(r.errno(), ELOOP);
    // CREATE over an existing symlink does not write through it.
    let c = CreateIn { flags: 0o2 | 0o100 | 0o1000, mode: 0o100644, ..CreateIn::default() };
    let r = h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr("relfile")]));
    assert_eq!(r.errno(), ELOOP);
    assert_eq!(
        std::fs::read(h.dirs.outside().join("secret")).expect("outside file"),
        b"secret",
        "the outside file is unchanged"
    );
    // The outside directory gained nothing.
    assert_eq!(std::fs::read_dir(h.dirs.outside()).expect("outside").count(), 1);
}

/// CREATE without O_EXCL opens an existing name; a FIFO or device node there is refused, never
/// opened (a FIFO would block the queue's worker forever, a device node would reach the host's
/// hardware).
#[test]
fn create_over_a_special_file_is_refused_without_blocking() {
    let mut h = Harness::new("create-fifo");
    h.init();
    let fifo = h.share().join("pipe");
    support::mkfifo(&fifo, 0o644);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let c = CreateIn { flags: 0o100, mode: 0o100644, ..CreateIn::default() }; // O_RDONLY|O_CREAT
        let r = h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr("pipe")]));
        let _ = tx.send(r.errno());
    });
    let errno = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("CREATE returns");
    assert_eq!(errno, 13, "EACCES");
}
