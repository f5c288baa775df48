//! Migrating what a guest holds from one server to another on the same share
//! (`device::state`): node ids, lookup counts, open handles and the FUSE session come across;
//! files renamed or replaced in between are found or refused, never confused; bad states and
//! held locks fail with a cause.

mod support;

use support::{args, Harness};
use vhu_device_fs::device::state::{self, StateError};
use vhu_device_fs::fuse::abi::{
    AttrOut, ForgetIn, GetattrIn, LkIn, OpenIn, ReadIn, ReleaseIn, WriteIn, WriteOut,
};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::passthrough::migration::{
    FormatError, FsState, MigrationError, MigrationMode, OnError,
};
use zerocopy::{FromBytes, IntoBytes};

fn open(h: &mut Harness, node: u64, flags: i32) -> u64 {
    h.call(Opcode::Open, node, OpenIn { flags: flags as u32, open_flags: 0 }.as_bytes()).open().fh
}

fn read(h: &mut Harness, node: u64, fh: u64, size: u32) -> Result<Vec<u8>, i32> {
    let r = h.call(Opcode::Read, node, ReadIn { fh, size, ..ReadIn::default() }.as_bytes());
    if r.errno() != 0 {
        return Err(r.errno());
    }
    Ok(r.payload)
}

fn write(h: &mut Harness, node: u64, fh: u64, offset: u64, data: &[u8]) -> u32 {
    let w = WriteIn { fh, offset, size: data.len() as u32, ..WriteIn::default() };
    let r = h.call(Opcode::Write, node, &args(&[w.as_bytes(), data]));
    WriteOut::read_from_bytes(r.ok()).expect("write_out").size
}

fn getattr(h: &mut Harness, node: u64) -> Result<AttrOut, i32> {
    let r = h.call(Opcode::Getattr, node, GetattrIn::default().as_bytes());
    if r.errno() != 0 {
        return Err(r.errno());
    }
    Ok(AttrOut::read_from_prefix(&r.payload).expect("attr_out").0)
}

/// A source that mounted, looked `dir/f` up twice, and holds `f` open for writing and `dir`
/// open as a directory. Returns the source and the nodes and handles.
fn source(tag: &str) -> (Harness, [u64; 2], [u64; 2]) {
    source_with(tag, |_| {})
}

fn source_with(
    tag: &str,
    tweak: impl FnOnce(&mut vhu_device_fs::passthrough::Config),
) -> (Harness, [u64; 2], [u64; 2]) {
    let mut h = Harness::with(tag, tweak);
    std::fs::create_dir(h.share().join("dir")).expect("dir");
    std::fs::write(h.share().join("dir/f"), b"before").expect("file");
    h.init();
    let dir = h.lookup(1, "dir").entry().nodeid;
    let f = h.lookup(dir, "f").entry().nodeid;
    assert_eq!(h.lookup(dir, "f").entry().nodeid, f);
    let fh = open(&mut h, f, libc::O_RDWR);
    let dh = h.call(Opcode::Opendir, dir, OpenIn::default().as_bytes()).open().fh;
    (h, [dir, f], [fh, dh])
}

fn migrate(from: &Harness, to: &Harness) -> Result<(), StateError> {
    let bytes = state::save(&from.server)?;
    state::load(&to.server, &bytes)
}

#[test]
fn nodes_handles_and_the_session_come_across() {
    let (mut src, [dir, f], [fh, dh]) = source("migrate-all");
    let before = getattr(&mut src, f).expect("attr").attr;
    let mut dst = src.another_server(|_| {});
    migrate(&src, &dst).expect("migrates");
    assert_eq!(dst.server.negotiated(), src.server.negotiated(), "no INIT on the destination");
    assert_eq!(dst.server.negotiated_minor(), src.server.negotiated_minor());
    let after = getattr(&mut dst, f).expect("the node exists").attr;
    assert_eq!((after.ino, after.mode), (before.ino, before.mode), "the same file");
    assert_eq!(dst.server.fs().inodes().lookups(vhu_device_fs::fuse::NodeId(f)), Some(2));
    // The handle is open for writing, at the same id.
    assert_eq!(write(&mut dst, f, fh, 0, b"AFTER!"), 6);
    assert_eq!(std::fs::read(dst.share().join("dir/f")).expect("host"), b"AFTER!");
    assert_eq!(read(&mut dst, f, fh, 16).expect("readable"), b"AFTER!");
    let listing = dst.call(
        Opcode::Readdir,
        dir,
        ReadIn { fh: dh, size: 4096, ..ReadIn::default() }.as_bytes(),
    );
    let names: Vec<String> =
        support::parse_dirents(listing.ok()).into_iter().map(|(name, _)| name).collect();
    assert!(names.contains(&"f".to_string()), "{names:?}");
    // A new lookup of a migrated file finds its node; new ids do not collide.
    assert_eq!(dst.lookup(dir, "f").entry().nodeid, f);
    std::fs::write(dst.share().join("dir/g"), b"new").expect("file");
    let g = dst.lookup(dir, "g").entry().nodeid;
    assert!(g > f && g > dir, "{g}");
    let fh2 = open(&mut dst, g, libc::O_RDONLY);
    assert!(fh2 != fh && fh2 != dh);
    // FORGET balances the lookups the source counted.
    let forget = ForgetIn { nlookup: 3 };
    assert!(dst.try_call(Opcode::Forget, f, forget.as_bytes()).is_none());
    assert_eq!(dst.server.fs().inodes().lookups(vhu_device_fs::fuse::NodeId(f)), None);
}

#[test]
fn a_file_renamed_between_save_and_load_is_found() {
    let (src, [_, f], [fh, _]) = source("migrate-renamed");
    let bytes = state::save(&src.server).expect("saves");
    std::fs::create_dir(src.share().join("elsewhere")).expect("dir");
    std::fs::rename(src.share().join("dir/f"), src.share().join("elsewhere/moved")).expect("mv");
    // Something else now has the old name: it must not be mistaken for the file.
    std::fs::write(src.share().join("dir/f"), b"impostor").expect("file");
    let mut dst = src.another_server(|_| {});
    state::load(&dst.server, &bytes).expect("loads");
    assert_eq!(read(&mut dst, f, fh, 16).expect("readable"), b"before", "the file, not its name");
}

/// A held file on a submount that moved before the load is looked for on that submount only:
/// another file system's file with the same inode number (every fresh tmpfs counts from the
/// same start) is never taken for it.
#[test]
fn a_moved_file_is_found_on_its_own_file_system() {
    if !support::needs_root() {
        return; // mounting needs root
    }
    let mut src = Harness::new("migrate-submount-ino");
    let share = src.share().to_owned();
    let _other = support::Tmpfs::mount(&share.join("a"));
    let _sub = support::Tmpfs::mount(&share.join("z/sub"));
    std::fs::write(share.join("a/f"), b"another file").expect("file");
    std::fs::write(share.join("z/sub/g"), b"the file").expect("file");
    let ino =
        |p: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(share.join(p)).unwrap());
    if ino("a/f") != ino("z/sub/g") {
        return; // a kernel whose tmpfs numbers inodes across mounts: nothing to confuse
    }
    src.init();
    let z = src.lookup(1, "z").entry().nodeid;
    let sub = src.lookup(z, "sub").entry().nodeid;
    let g = src.lookup(sub, "g").entry().nodeid;
    let fh = open(&mut src, g, libc::O_RDONLY);
    let bytes = state::save(&src.server).expect("saves");
    std::fs::rename(share.join("z/sub/g"), share.join("z/sub/moved")).expect("mv");
    let mut dst = src.another_server(|_| {});
    state::load(&dst.server, &bytes).expect("loads");
    assert_eq!(read(&mut dst, g, fh, 32).expect("readable"), b"the file");
}

/// A submount the guest met but holds nothing on when the state is saved keeps its place in
/// guest inode numbers: its files show the same numbers on the destination, and no other
/// submount takes its index.
#[test]
fn a_submount_met_but_not_held_keeps_its_inode_numbers() {
    if !support::needs_root() {
        return; // mounting needs root
    }
    let mut src = Harness::new("migrate-submount-index");
    let share = src.share().to_owned();
    let _a = support::Tmpfs::mount(&share.join("a"));
    let _b = support::Tmpfs::mount(&share.join("b"));
    std::fs::write(share.join("a/f"), b"on a").expect("file");
    std::fs::write(share.join("b/g"), b"on b").expect("file");
    src.init();
    let a = src.lookup(1, "a").entry();
    let f = src.lookup(a.nodeid, "f").entry();
    let b = src.lookup(1, "b").entry().nodeid;
    let g = src.lookup(b, "g").entry();
    for node in [f.nodeid, a.nodeid] {
        let forget = ForgetIn { nlookup: 1 };
        assert!(src.try_call(Opcode::Forget, node, forget.as_bytes()).is_none());
    }
    let bytes = state::save(&src.server).expect("saves");
    let mut dst = src.another_server(|_| {});
    state::load(&dst.server, &bytes).expect("loads");
    let b_again = dst.lookup(1, "b").entry().nodeid;
    assert_eq!(dst.lookup(b_again, "g").entry().attr.ino, g.attr.ino, "the submount held");
    let a_again = dst.lookup(1, "a").entry().nodeid;
    assert_eq!(dst.lookup(a_again, "f").entry().attr.ino, f.attr.ino, "the one met before");
}

/// Device numbers are handed out at mount time, so a destination's submount may carry the
/// number another file system had on the source. A device found again keeps its index first;
/// an unheld one's number never takes it away.
#[test]
fn a_found_device_keeps_its_index_over_an_unheld_one_with_its_number() {
    if !support::needs_root() {
        return; // mounting needs root
    }
    let mut src = Harness::new("migrate-dev-numbers");
    let share = src.share().to_owned();
    let _b = support::Tmpfs::mount(&share.join("b"));
    std::fs::write(share.join("b/g"), b"on b").expect("file");
    src.init();
    let b = src.lookup(1, "b").entry().nodeid;
    let g = src.lookup(b, "g").entry();
    let mut state = FsState::decode(&state::save(&src.server).expect("saves")).expect("decodes");
    // As if b had another number on the source, and its number here had been an unheld
    // device's, met before it (a smaller index).
    let (here, index) = *state.devices.iter().find(|(_, i)| *i != 0).expect("b's device");
    let elsewhere = here ^ 0x5a5a;
    for node in state.nodes.iter_mut().filter(|n| n.dev == here) {
        node.dev = elsewhere;
    }
    state.devices.retain(|(dev, _)| *dev != here);
    state.devices.push((elsewhere, index + 1));
    state.devices.push((here, index));
    state.devices.sort_unstable_by_key(|(_, i)| *i);
    let mut dst = src.another_server(|_| {});
    state::load(&dst.server, &state.encode()).expect("loads");
    let again = dst.lookup(b, "g").entry();
    assert_eq!(again.attr.ino, g.attr.ino + (1 << 48), "b keeps the index it had (one more)");
}

#[test]
fn a_file_the_destination_cannot_find_fails_as_configured() {
    for on_error in [OnError::Abort, OnError::GuestError] {
        let (src, [dir, f], [fh, _]) = source("migrate-gone");
        let bytes = state::save(&src.server).expect("saves");
        std::fs::remove_file(src.share().join("dir/f")).expect("rm");
        std::fs::write(src.share().join("dir/f"), b"impostor").expect("file");
        let mut dst = src.another_server(|c| c.migration.on_error = on_error);
        let result = state::load(&dst.server, &bytes);
        match on_error {
            OnError::Abort => {
                let err = result.expect_err("refused");
                assert!(
                    matches!(err, StateError::FileSystem(MigrationError::Inode { .. })),
                    "{err}"
                );
                assert!(err.to_string().contains("dir/f"), "{err}");
                assert_eq!(dst.server.negotiated(), None, "a failed load leaves a fresh server");
                assert_eq!(dst.server.fs().inodes().len(), 1);
            }
            OnError::GuestError => {
                result.expect("loads");
                assert_eq!(getattr(&mut dst, f), Err(libc::EIO), "lost, never the impostor");
                assert_eq!(read(&mut dst, f, fh, 16), Err(libc::EIO));
                assert!(getattr(&mut dst, dir).is_ok(), "the rest came across");
                let release = ReleaseIn { fh, ..ReleaseIn::default() };
                let r = dst.call(Opcode::Release, f, release.as_bytes());
                assert_eq!(r.errno(), 0, "a lost handle is still released");
            }
        }
    }
}

#[test]
fn an_unlinked_open_file_cannot_be_described_by_path() {
    let (mut src, [_, f], [fh, _]) = source("migrate-unlinked");
    std::fs::remove_file(src.share().join("dir/f")).expect("rm");
    assert_eq!(read(&mut src, f, fh, 16).expect("still open"), b"before");
    let state = FsState::decode(&state::save(&src.server).expect("saves")).expect("decodes");
    let record = state.nodes.iter().find(|n| n.node == f).expect("recorded");
    assert_eq!((&record.path, &record.handle), (&None, &None));
    let dst = src.another_server(|_| {});
    assert!(migrate(&src, &dst).is_err(), "abort is the default");
}

#[test]
fn file_handles_mode_reopens_by_handle_and_refuses_handles_outside_the_share() {
    if !support::needs_root() {
        return; // open_by_handle_at needs CAP_DAC_READ_SEARCH
    }
    let (mut src, [_, f], [fh, _]) =
        source_with("migrate-handles", |c| c.migration.mode = MigrationMode::FileHandles);
    let bytes = state::save(&src.server).expect("saves");
    let mut state = FsState::decode(&bytes).expect("decodes");
    assert!(state.nodes.iter().all(|n| n.path.is_none() && n.handle.is_some()));
    std::fs::rename(src.share().join("dir/f"), src.share().join("renamed")).expect("mv");
    let mut dst = src.another_server(|_| {});
    state::load(&dst.server, &bytes).expect("loads by handle");
    assert_eq!(read(&mut dst, f, fh, 16).expect("readable"), b"before");

    // A handle of a file outside the share is never opened for the guest.
    std::fs::write(src.dirs.outside().join("secret"), b"secret").expect("file");
    let out = std::fs::File::open(src.dirs.outside().join("secret")).expect("open");
    let foreign = outsider_handle(&out);
    let node = state.nodes.iter_mut().find(|n| n.node == f).expect("node");
    node.handle = Some(foreign);
    let dst = src.another_server(|_| {});
    let err = state::load(&dst.server, &state.encode()).expect_err("refused");
    assert!(err.to_string().contains("outside the share"), "{err}");
    // Also when the record names that very file: its link shows no path in the share, and a
    // search of the share does not find it.
    let node = state.nodes.iter_mut().find(|n| n.node == f).expect("node");
    node.ino = std::os::unix::fs::MetadataExt::ino(&out.metadata().expect("stat"));
    let dst = src.another_server(|_| {});
    let err = state::load(&dst.server, &state.encode()).expect_err("refused");
    assert!(err.to_string().contains("outside the share (or unlinked)"), "{err}");
    let _ = read(&mut src, f, fh, 1);
}

/// In file-handles mode an inode the guest reached through a read-only bind mount comes
/// across through that mount: a handle alone would open it through the share root's writable
/// mount on the destination.
#[test]
fn file_handles_mode_keeps_a_read_only_bind_mount_read_only() {
    if !support::needs_root() {
        return; // mounting and open_by_handle_at need root
    }
    let (mut src, _, _) =
        source_with("migrate-handles-bind", |c| c.migration.mode = MigrationMode::FileHandles);
    let _bind = support::ReadOnlyBind::mount(&src.share().join("dir"), &src.share().join("ro"));
    let ro = src.lookup(1, "ro").entry().nodeid;
    let f = src.lookup(ro, "f").entry().nodeid;
    let bytes = state::save(&src.server).expect("saves");
    let state = FsState::decode(&bytes).expect("decodes");
    let record = state.nodes.iter().find(|n| n.node == f).expect("the bound file's node");
    assert_eq!(record.path.as_deref(), Some(&b"ro/f"[..]), "described by its path too");
    let mut dst = src.another_server(|c| c.migration.mode = MigrationMode::FileHandles);
    state::load(&dst.server, &bytes).expect("loads");
    let write_only = OpenIn { flags: libc::O_WRONLY as u32, ..OpenIn::default() };
    assert_eq!(dst.call(Opcode::Open, f, write_only.as_bytes()).errno(), libc::EROFS);
    let fh = open(&mut dst, f, libc::O_RDONLY);
    assert_eq!(read(&mut dst, f, fh, 16).expect("readable"), b"before");
}

/// The file handle of an open file, as a forged state would carry it.
fn outsider_handle(file: &std::fs::File) -> vhu_device_fs::passthrough::migration::FileHandle {
    use std::os::fd::AsRawFd;
    let mut buf = [0u32; 34];
    buf[0] = 128;
    let mut mount_id = 0;
    // SAFETY: a file_handle with 128 bytes of room, an empty path and an int: the kernel writes
    // only there.
    let rc = unsafe {
        libc::name_to_handle_at(
            file.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    assert_eq!(rc, 0, "the test file system has file handles");
    let bytes = buf[2..].iter().flat_map(|w| w.to_ne_bytes()).take(buf[0] as usize).collect();
    vhu_device_fs::passthrough::migration::FileHandle { kind: buf[1] as i32, bytes }
}

#[test]
fn paths_in_a_state_never_leave_the_share() {
    let (src, [_, f], _) = source("migrate-escape");
    std::fs::write(src.dirs.outside().join("secret"), b"secret").expect("file");
    let mut state = FsState::decode(&state::save(&src.server).expect("saves")).expect("decodes");
    for path in [&b"../outside/secret"[..], b"dir/../../outside/secret", b"/etc/passwd", b"dir//f"]
    {
        let node = state.nodes.iter_mut().find(|n| n.node == f).expect("node");
        node.path = Some(path.to_vec());
        node.ino = 0; // no search can find it either
        let dst = src.another_server(|_| {});
        let err = state::load(&dst.server, &state.encode()).expect_err("refused");
        assert!(matches!(err, StateError::FileSystem(MigrationError::Inode { .. })), "{err}");
    }
}

#[test]
fn a_destination_that_may_keep_fewer_files_open_refuses_the_state() {
    // The root, `dir` and `f`, and a handle on each of the two: five descriptors.
    let (src, [_, f], [fh, _]) = source("migrate-budget");
    let bytes = state::save(&src.server).expect("saves");
    for on_error in [OnError::Abort, OnError::GuestError] {
        let dst = src.another_server(|c| {
            c.max_open = 4;
            c.migration.on_error = on_error;
        });
        let err = state::load(&dst.server, &bytes).expect_err("refused");
        assert!(
            matches!(
                err,
                StateError::FileSystem(MigrationError::TooManyOpen { needed: 5, max: 4 })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--rlimit-nofile"), "{err}");
        assert_eq!(dst.server.negotiated(), None, "a refused load leaves a fresh server");
        assert_eq!(dst.server.fs().inodes().len(), 1);
    }
    let mut dst = src.another_server(|c| c.max_open = 5);
    state::load(&dst.server, &bytes).expect("exactly the budget loads");
    assert_eq!(read(&mut dst, f, fh, 16).expect("readable"), b"before");
    // Handles lost on the source hold no descriptor but fill the tables the budget counts: a
    // state cannot bring in more of them than the budget either, whatever ids it picks.
    let mut padded = FsState::decode(&bytes).expect("decodes");
    let lost = |i: u64| vhu_device_fs::passthrough::migration::HandleRecord {
        handle: (i + 1) << 24,
        node: f,
        is_dir: false,
        flags: 0,
        lost: true,
        sync_failed: 0,
    };
    padded.handles.extend((0..100).map(lost));
    let dst = src.another_server(|c| c.max_open = 5);
    let err = state::load(&dst.server, &padded.encode()).expect_err("refused");
    // Counted before they are read into memory.
    let count = padded.handles.len() as u64;
    assert!(
        matches!(err, StateError::Format(FormatError::TooMany { what: "handles", count: c, max: 5 })
            if c == count),
        "{err}"
    );
    assert!(err.to_string().contains("--rlimit-nofile"), "{err}");
}

/// A node whose path in the share is longer than PATH_MAX cannot be described by it: that
/// node is lost (or fails the load, as configured), never the whole state.
#[test]
fn a_path_longer_than_path_max_loses_only_its_node() {
    use rustix::fs::{mkdirat, openat, Mode, OFlags, CWD};
    let (mut src, [_, f], [fh, _]) = source("migrate-deep");
    let name = "d".repeat(250);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = openat(CWD, src.share(), flags, Mode::empty()).expect("share");
    let mut node = 1;
    for _ in 0..17 {
        mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).expect("mkdir");
        dir = openat(&dir, name.as_str(), flags, Mode::empty()).expect("open");
        node = src.lookup(node, &name).entry().nodeid;
    }
    let bytes = state::save(&src.server).expect("saves");
    let state = FsState::decode(&bytes).expect("every path in it fits");
    let deep = state.nodes.iter().find(|n| n.node == node).expect("the deep node");
    assert_eq!(deep.path, None, "17 names of 250 bytes are past PATH_MAX");
    let mut dst = src.another_server(|c| c.migration.on_error = OnError::GuestError);
    state::load(&dst.server, &bytes).expect("the rest loads");
    assert_eq!(read(&mut dst, f, fh, 16).expect("readable"), b"before");
    assert_eq!(getattr(&mut dst, node), Err(libc::EIO), "the deep node is lost");
}

/// A daemon that already serves a guest refuses a state, and its guest keeps its mount: the
/// session, nodes and handles it had.
#[test]
fn a_destination_serving_a_guest_refuses_the_state_and_keeps_serving() {
    let (src, _, _) = source("migrate-busy-src");
    let (mut busy, [_, f], [fh, _]) = source("migrate-busy-dst");
    let negotiated = busy.server.negotiated();
    let err = migrate(&src, &busy).expect_err("refused");
    assert!(matches!(err, StateError::FileSystem(MigrationError::NotFresh(_))), "{err}");
    assert_eq!(busy.server.negotiated(), negotiated, "the session stays");
    assert_eq!(read(&mut busy, f, fh, 16).expect("still open"), b"before");
    // A mounted guest with nothing looked up yet is a guest too.
    let mut mounted = src.another_server(|_| {});
    mounted.init();
    let err = migrate(&src, &mounted).expect_err("refused");
    assert!(matches!(err, StateError::FileSystem(MigrationError::NotFresh(_))), "{err}");
    assert!(mounted.server.negotiated().is_some(), "still mounted");
}

#[test]
fn held_locks_and_foreign_options_stop_a_migration() {
    let (mut src, [_, f], [fh, _]) = source("migrate-locks");
    // The destination's options must negotiate what the guest was told.
    let dst = src.another_server(|c| c.writeback = !c.writeback);
    let err = migrate(&src, &dst).expect_err("refused");
    assert!(matches!(err, StateError::Session(_)), "{err}");
    assert_eq!(dst.server.negotiated(), None);
    // A lock the guest holds cannot move.
    let lk = LkIn {
        fh,
        owner: 7,
        lk: vhu_device_fs::fuse::abi::FileLock {
            start: 0,
            end: 10,
            typ: libc::F_WRLCK as u32,
            pid: 1,
        },
        ..LkIn::default()
    };
    assert_eq!(src.call(Opcode::Setlk, f, lk.as_bytes()).errno(), 0);
    let err = state::save(&src.server).expect_err("refused");
    assert!(matches!(err, StateError::FileSystem(MigrationError::LocksHeld(1))), "{err}");
    // Unlocking part of it still holds the rest; unlocking all of it, with the file still
    // open (as a database does between transactions), holds nothing.
    let mut unlock = lk;
    unlock.lk.typ = libc::F_UNLCK as u32;
    unlock.lk.end = 4;
    assert_eq!(src.call(Opcode::Setlk, f, unlock.as_bytes()).errno(), 0);
    assert!(state::save(&src.server).is_err(), "bytes 5 to 10 are still locked");
    unlock.lk.start = 5;
    unlock.lk.end = 10;
    assert_eq!(src.call(Opcode::Setlk, f, unlock.as_bytes()).errno(), 0);
    state::save(&src.server).expect("nothing is locked: the state saves");
    // Garbage is not a state.
    let dst = src.another_server(|_| {});
    assert!(matches!(state::load(&dst.server, b"garbage"), Err(StateError::Format(_))));
}

/// A write-back error the daemon's own sync met before a save (and so took from the file, which
/// reports one once) is the guest's: the state carries it with the handle, and the guest's
/// next FSYNC of the file on the destination fails with it, once.
#[test]
fn a_sync_failure_before_a_save_reaches_the_guests_next_fsync_on_the_destination() {
    use vhu_device_fs::fuse::abi::FsyncIn;
    use vhu_device_fs::fuse::{Handle, NodeId};
    let (src, [_, f], [fh, _]) = source("migrate-sync-failed");
    let handle = src.server.fs().handles().get(Handle(fh), NodeId(f), false).expect("handle");
    handle.note_sync_failure(rustix::io::Errno::IO);
    let state = FsState::decode(&state::save(&src.server).expect("saves")).expect("decodes");
    let kept = state.handles.iter().find(|h| h.handle == fh).expect("the handle");
    assert_eq!(kept.sync_failed, libc::EIO);
    let mut dst = src.another_server(|_| {});
    migrate(&src, &dst).expect("migrates");
    let fsync = FsyncIn { fh, ..FsyncIn::default() };
    assert_eq!(dst.call(Opcode::Fsync, f, fsync.as_bytes()).errno(), libc::EIO);
    assert_eq!(dst.call(Opcode::Fsync, f, fsync.as_bytes()).errno(), 0, "told once");
}

/// A state no daemon saves is refused while it is read, before anything is reopened: a table
/// that names an id, a device or a device index (below the largest, which devices past it
/// share) twice, the root node (every daemon's own), node 0, or a node the guest forgot (no
/// lookups).
#[test]
fn states_no_daemon_saves_are_refused_as_they_are_read() {
    let (src, _, _) = source("migrate-impossible");
    let saved = FsState::decode(&state::save(&src.server).expect("saves")).expect("decodes");
    assert!(saved.nodes.len() >= 2 && saved.handles.len() >= 2, "{saved:?}");
    let refused = |change: &dyn Fn(&mut FsState)| {
        let mut state = saved.clone();
        change(&mut state);
        FsState::decode(&state.encode()).expect_err("refused")
    };
    let (n0, n1) = (saved.nodes[0].node, saved.nodes[1].node);
    let duplicate = |what, value| FormatError::Duplicate { what, value };
    let invalid = |what, value| FormatError::Invalid { what, value };
    assert_eq!(refused(&|s| s.nodes[1].node = n0), duplicate("a node id", n0));
    assert_eq!(refused(&|s| s.nodes[0].node = 1), invalid("a node id", 1));
    assert_eq!(refused(&|s| s.nodes[0].node = 0), invalid("a node id", 0));
    assert_eq!(refused(&|s| s.nodes[1].lookups = 0), invalid("the lookup count of node", n1));
    let h0 = saved.handles[0].handle;
    assert_eq!(refused(&|s| s.handles[1].handle = h0), duplicate("a handle id", h0));
    let dev = saved.devices[0].0;
    assert_eq!(refused(&|s| s.devices.push((dev, 7))), duplicate("a device", dev));
    assert_eq!(refused(&|s| s.devices.push((dev + 1, 0))), duplicate("a device index", 0));
    // Devices past the largest index share it, as the source numbers them.
    let mut shared = saved.clone();
    shared.devices.extend([(dev + 1, 0xffff), (dev + 2, 0xffff)]);
    assert_eq!(FsState::decode(&shared.encode()), Ok(shared));
    // The saved state itself reads back.
    assert_eq!(FsState::decode(&saved.encode()), Ok(saved.clone()));
}

/// A handle is reopened with the open flags this daemon passes on, whatever the source did:
/// O_NOATIME, kept by a source with `--preserve-noatime`, reaches the host on a destination
/// with it and not on one without.
#[test]
fn a_reopened_handle_takes_the_flags_this_daemon_allows() {
    use vhu_device_fs::fuse::{Handle, NodeId};
    let noatime = |h: &Harness, node: u64, fh: u64| {
        let data = h.server.fs().handles().get(Handle(fh), NodeId(node), false).expect("handle");
        let flags = rustix::fs::fcntl_getfl(&data.fd).expect("flags");
        flags.contains(rustix::fs::OFlags::NOATIME)
    };
    let (mut src, [_, f], _) = source_with("migrate-noatime", |c| c.preserve_noatime = true);
    let fh = open(&mut src, f, libc::O_RDONLY | libc::O_NOATIME);
    assert!(noatime(&src, f, fh), "the source kept O_NOATIME");
    let keeps = src.another_server(|c| c.preserve_noatime = true);
    migrate(&src, &keeps).expect("migrates");
    assert!(noatime(&keeps, f, fh), "a destination that keeps it");
    let drops = src.another_server(|_| {});
    migrate(&src, &drops).expect("migrates");
    assert!(!noatime(&drops, f, fh), "a destination that does not");
    assert_eq!(read(&mut src, f, fh, 16).expect("readable"), b"before");
}

/// A guest may forget a node it still holds open (Linux never does): the state then carries
/// that handle as lost, the destination takes the state, and only that handle reads EIO.
#[test]
fn a_handle_whose_node_was_forgotten_comes_across_lost() {
    const EIO: i32 = 5;
    let (mut src, [dir, f], [fh, dh]) = source("migrate-forgotten");
    assert!(src.try_call(Opcode::Forget, f, ForgetIn { nlookup: 2 }.as_bytes()).is_none());
    assert_eq!(read(&mut src, f, fh, 16).expect("still open on the source"), b"before");
    let dst = src.another_server(|_| {});
    migrate(&src, &dst).expect("migrates");
    let mut dst = dst;
    assert_eq!(read(&mut dst, f, fh, 16), Err(EIO), "the forgotten node's handle is lost");
    let listing = dst.call(
        Opcode::Readdir,
        dir,
        ReadIn { fh: dh, size: 4096, ..ReadIn::default() }.as_bytes(),
    );
    assert_eq!(listing.errno(), 0, "the directory's handle came across");
}
