//! The daemon's own syncs before a save: a failure fails the save and stays for the guest's
//! next FSYNC, on the handle or, once the guest released it, on its file.

use super::*;
use crate::fuse::{Context, FileSystem};
use crate::passthrough::handles::HandleTable;

/// A failure the daemon's sync kept on a handle the guest then released without an FSYNC
/// (a database closing a file it wrote and never synced) goes to the next FSYNC of another
/// handle of the file, once, even under another node: the host told the daemon, so no
/// descriptor opened since hears.
#[test]
fn a_kept_failure_outlives_its_released_handle() {
    let dir = std::env::temp_dir().join(format!("vhu-unheard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("share");
    std::fs::write(dir.join("db"), b"rows").expect("file");
    let fs = PassthroughFs::new(crate::passthrough::Config::new(&dir)).expect("fs");
    fs.init(crate::fuse::abi::InitFlags::empty()).expect("init");
    let ctx = Context::default();
    let node = fs.lookup(&ctx, NodeId::ROOT, c"db").expect("lookup").node;
    let a = fs.open(&ctx, node, libc::O_WRONLY as u32, 0).expect("open a").handle;
    fs.handles.get(a, node, false).expect("a").note_sync_failure(Errno::IO);
    fs.release(&ctx, node, a, 0, 0, 0).expect("release a");
    // The guest forgets the inode and looks it up again: another node, the same file.
    fs.forget(node, 1);
    let again = fs.lookup(&ctx, NodeId::ROOT, c"db").expect("lookup").node;
    assert_ne!(again, node);
    let b = fs.open(&ctx, again, libc::O_WRONLY as u32, 0).expect("open b").handle;
    assert_eq!(fs.fsync(&ctx, again, b, true), Err(Errno::IO), "the guest hears of it");
    assert_eq!(fs.fsync(&ctx, again, b, true), Ok(()), "once");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sync that fails before a save fails that save and is kept on the handle (a second
/// sync would succeed: the host reports the error once) until the guest hears of it.
#[test]
fn a_failed_sync_is_kept_for_the_guest() {
    let table = HandleTable::default();
    let file = std::fs::File::open("/dev/null").expect("a file");
    let handle = table.insert_file(file.into(), NodeId(5), OFlags::WRONLY);
    let (handles, _) = table.snapshot();
    let failed = sync_written_with(&handles, |_| Err(Errno::IO));
    assert!(matches!(failed, Err(MigrationError::Sync { node: 5, errno: Errno::IO, .. })));
    // A second failure before the guest heard of the first: the first is what it hears.
    let again = sync_written_with(&handles, |_| Err(Errno::NOSPC));
    assert!(matches!(again, Err(MigrationError::Sync { errno: Errno::NOSPC, .. })));
    assert!(sync_written_with(&handles, |_| Ok(())).is_ok(), "a later save goes on");
    let data = table.get(handle, NodeId(5), false).expect("open");
    assert_eq!(data.take_sync_failure(), Some(Errno::IO), "kept for the guest's FSYNC");
    // Nothing to sync on a file system without fsync: nothing is kept. A file system gone
    // read-only under a file open for writing lost what was written.
    assert!(sync_written_with(&handles, |_| Err(Errno::INVAL)).is_ok());
    assert_eq!(data.sync_failure(), None);
    let read_only = sync_written_with(&handles, |_| Err(Errno::ROFS));
    assert!(matches!(read_only, Err(MigrationError::Sync { errno: Errno::ROFS, .. })));
}
