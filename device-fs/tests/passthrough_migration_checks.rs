//! What a migration destination checks of a state against what it finds: the capability that
//! opening file handles needs (a state of handles alone is refused where they cannot be opened,
//! one that names a node by handle only where its path failed is loaded as ever), that a
//! handle is of the kind its node is, and that a node of a file system not mounted here is not
//! taken for a file of another that has its inode number.

mod support;

use std::os::unix::fs::MetadataExt;

use support::{Harness, Tmpfs};
use vhu_device_fs::device::state;
use vhu_device_fs::device::state::StateError;
use vhu_device_fs::fuse::abi::{GetattrIn, OpenIn, ReadIn, WriteIn};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::passthrough::migration::{FsState, MigrationError, MigrationMode, OnError};
use zerocopy::IntoBytes;

/// A state whose handle is a directory's for a file (or a file's for a directory) fails the
/// load as configured, or comes across lost: it was not what the source opened.
#[test]
fn a_handle_of_the_wrong_kind_for_its_node_is_refused_or_lost() {
    let mut src = Harness::new("migrate-handle-kind");
    std::fs::create_dir(src.share().join("dir")).expect("dir");
    src.init();
    let dir = src.lookup(1, "dir").entry().nodeid;
    let dh = src.call(Opcode::Opendir, dir, OpenIn::default().as_bytes()).open().fh;
    let mut altered = FsState::decode(&state::save(&src.server).expect("saves")).expect("decodes");
    altered.handles.iter_mut().find(|h| h.handle == dh).expect("the handle").is_dir = false;
    let bytes = altered.encode();
    let dst = src.another_server(|c| c.migration.on_error = OnError::Abort);
    let err = state::load(&dst.server, &bytes).expect_err("refused");
    assert!(
        matches!(
            err,
            StateError::FileSystem(MigrationError::Handle { errno, .. })
                if errno == rustix::io::Errno::ISDIR
        ),
        "{err}"
    );
    let mut dst = src.another_server(|c| c.migration.on_error = OnError::GuestError);
    state::load(&dst.server, &bytes).expect("loads with the handle lost");
    let read = ReadIn { fh: dh, size: 16, ..ReadIn::default() };
    assert_eq!(dst.call(Opcode::Read, dir, read.as_bytes()).errno(), libc::EIO, "lost");
}

/// A destination that may not open file handles (it dropped CAP_DAC_READ_SEARCH, started
/// without --migration-mode file-handles) refuses a state of handles whatever
/// --migration-on-error says: it would otherwise lose every node, not one. A state that names
/// most nodes by path and one by handle (what a find-paths source could not describe) loses
/// that one only, as ever.
#[test]
fn a_destination_without_dac_read_search_refuses_a_state_of_handles() {
    if !support::needs_root() {
        return;
    }
    let mut src =
        Harness::with("handles-no-cap", |c| c.migration.mode = MigrationMode::FileHandles);
    std::fs::create_dir(src.share().join("dir")).expect("dir");
    std::fs::write(src.share().join("dir/f"), b"before").expect("file");
    src.init();
    let dir = src.lookup(1, "dir").entry().nodeid;
    src.lookup(dir, "f").entry();
    let bytes = state::save(&src.server).expect("saves");
    let mut mixed = FsState::decode(&bytes).expect("decodes");
    mixed.nodes.iter_mut().find(|n| n.node == dir).expect("dir").path = Some(b"dir".to_vec());
    let dst = |src: &Harness| src.another_server(|c| c.migration.on_error = OnError::GuestError);
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    let mut caps = capabilities(None).expect("this thread's capabilities");
    caps.effective.remove(CapabilitySet::DAC_READ_SEARCH);
    set_capabilities(None, caps).expect("drops DAC_READ_SEARCH on this thread");
    let err = state::load(&dst(&src).server, &bytes).expect_err("refused");
    assert!(err.to_string().contains("CAP_DAC_READ_SEARCH"), "{err}");
    state::load(&dst(&src).server, &mixed.encode()).expect("a mixed state loads");
}

/// The source's `data` is a mount that the destination lacks, where another file system,
/// mounted at `backup`, has a file of the same inode number as `data/db` (fresh tmpfs number
/// their files alike). The path fails; the file system it named is not known here (no node of
/// it came across), so an inode number found on some other one names nothing: `data` and
/// `data/db` are lost, and the guest's writes through its handle go nowhere, not into
/// `backup/old`.
#[test]
fn a_node_of_a_file_system_missing_here_is_not_found_on_another() {
    if !support::needs_root() {
        return;
    }
    let mut src = Harness::new("migrate-other-fs");
    let data = Tmpfs::mount(&src.share().join("data"));
    std::fs::write(src.share().join("data/db"), b"mine").expect("db");
    let ino = std::fs::metadata(src.share().join("data/db")).expect("stat").ino();
    src.init();
    let dir = src.lookup(1, "data").entry().nodeid;
    let db = src.lookup(dir, "db").entry().nodeid;
    let open = OpenIn { flags: libc::O_RDWR as u32, ..OpenIn::default() };
    let fh = src.call(Opcode::Open, db, open.as_bytes()).open().fh;
    let bytes = state::save(&src.server).expect("saves");
    drop(data);
    let _backup = Tmpfs::mount(&src.share().join("backup"));
    let old = src.share().join("backup/old");
    std::fs::write(&old, b"other").expect("old");
    if std::fs::metadata(&old).expect("stat").ino() != ino {
        eprintln!("the second tmpfs numbered its file otherwise; skipped");
        return;
    }
    let mut dst = src.another_server(|c| c.migration.on_error = OnError::GuestError);
    state::load(&dst.server, &bytes).expect("loads with the nodes lost");
    let getattr = GetattrIn::default();
    assert_eq!(dst.call(Opcode::Getattr, db, getattr.as_bytes()).errno(), libc::EIO, "lost");
    assert_eq!(dst.call(Opcode::Getattr, dir, getattr.as_bytes()).errno(), libc::EIO, "lost");
    let write = WriteIn { fh, size: 4, ..WriteIn::default() };
    let body = [write.as_bytes(), b"lost"].concat();
    assert_ne!(dst.call(Opcode::Write, db, &body).errno(), 0, "no write lands");
    assert_eq!(std::fs::read(&old).expect("read"), b"other", "the other file is untouched");
}
