//! The DAX window (`--dax-window`): vhu-fsd announces shared-memory region 0 and MAP_ALIGNMENT,
//! and maps what the guest asks with SETUPMAPPING through the VMM (BACKEND_SHMEM_MAP), whose
//! side here is the client's `ShmemHandler`. What the guest reads through the window is the
//! file; what it writes there reaches the file; ranges are removed whole, mapped again to be made
//! writable, and all removed when the guest's session ends. What the guest may not do it
//! cannot: write through a read-only share or a read-only handle, map a directory, reach outside
//! the window, or remove half a mapping.

mod daemon;

use std::path::PathBuf;

use daemon::{scratch, socket, start, Running};
use vhu_device_fs::fuse::abi::InitFlags;
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::guest::{GuestError, GuestFs, DAX_RANGE};

const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const EROFS: i32 = 30;
const EACCES: i32 = 13;
const ENODEV: i32 = 19;

/// A file of `len` bytes whose every 8 bytes hold their own offset.
fn laid_file(path: &std::path::Path, len: u64) -> Vec<u8> {
    let bytes: Vec<u8> = (0..len / 8).flat_map(|i| (i * 8).to_le_bytes()).collect();
    std::fs::write(path, &bytes).expect("lay the file");
    bytes
}

/// A daemon started with `args` on a share holding `data` (`len` bytes, see [`laid_file`]),
/// and a guest mounted on it; the scratch directory goes when it is dropped.
struct Mounted {
    dir: PathBuf,
    _daemon: Running,
    guest: GuestFs,
    /// The `data` file's node.
    node: u64,
    /// What `data` holds.
    bytes: Vec<u8>,
}

impl Mounted {
    fn new(name: &str, len: u64, args: &[&str]) -> Self {
        let dir = scratch("vhu-dax", name);
        let bytes = laid_file(&dir.join("share/data"), len);
        let daemon = start(&dir, args);
        let mut guest = GuestFs::connect(socket(&dir)).expect("mounts");
        let node = guest.lookup(1, "data").expect("lookup").nodeid;
        Self { dir, _daemon: daemon, guest, node, bytes }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn errno(result: Result<(), GuestError>) -> i32 {
    match result {
        Err(GuestError::Errno { errno, .. }) => errno,
        other => panic!("expected an errno, got {other:?}"),
    }
}

#[test]
fn the_guest_reads_and_writes_files_through_the_window() {
    // Sandboxed and filtered as it runs for real (the default sandbox needs root).
    let root = rustix::process::geteuid().is_root();
    let sandbox: &[&str] = if root { &[] } else { &["--sandbox", "none"] };
    let args = [sandbox, &["--dax-window", "8M"]].concat();
    let mut m = Mounted::new("window", 2 * DAX_RANGE, &args);
    let (guest, node, bytes) = (&mut m.guest, m.node, &m.bytes);
    let window = guest.dax_window().expect("the device announces a window").clone();
    assert_eq!(window.len(), 8 << 20);
    let init = *guest.init_out();
    assert!(InitFlags::from_bits_retain(u64::from(init.flags)).contains(InitFlags::MAP_ALIGNMENT));
    let page = rustix::param::page_size();
    assert_eq!(init.map_alignment, page.trailing_zeros() as u16, "offsets in the host's pages");

    // The file's second 2 MiB at the window's start, read-only, as Linux maps a range to read.
    guest.setup_mapping(node, None, (DAX_RANGE, 0, DAX_RANGE), false).expect("mapped");
    let mut seen = vec![0u8; DAX_RANGE as usize];
    assert!(window.read(0, &mut seen), "the range is mapped in the VMM");
    assert!(seen == bytes[DAX_RANGE as usize..], "the window shows the file");
    assert!(!window.write(0, b"x"), "and only for reading");

    // Made writable by mapping the same range again (Linux's upgrade), then written through.
    guest.setup_mapping(node, None, (DAX_RANGE, 0, DAX_RANGE), true).expect("mapped again");
    assert_eq!(window.mapping_count(), 1, "the old mapping was replaced, not overlapped");
    assert!(window.write(4096, b"written through the window"));
    let on_disk = std::fs::read(m.dir.join("share/data")).expect("read the file");
    let at = DAX_RANGE as usize + 4096;
    assert_eq!(&on_disk[at..at + 26], b"written through the window");

    // The first 2 MiB through an open handle, elsewhere in the window.
    let fh = guest.open(node, libc::O_RDWR as u32).expect("open");
    guest.setup_mapping(node, Some(fh), (0, 2 * DAX_RANGE, DAX_RANGE), true).expect("mapped");
    let mut head = [0u8; 16];
    assert!(window.read(2 * DAX_RANGE, &mut head));
    assert_eq!(head[..], bytes[..16]);

    // Half a mapping cannot be removed; a whole one can, and a range with none is no error.
    assert_eq!(errno(guest.remove_mapping(node, &[(0, 4096)])), EINVAL);
    assert!(window.is_mapped(0, DAX_RANGE), "a refused removal removes nothing");
    guest.remove_mapping(node, &[(0, DAX_RANGE), (DAX_RANGE, DAX_RANGE)]).expect("removed");
    assert!(!window.is_mapped(0, 1));
    assert!(window.is_mapped(2 * DAX_RANGE, DAX_RANGE));

    // The guest's session ends: nothing it mapped stays in the window.
    guest.call(Opcode::Destroy, 0, &[]).expect("destroy");
    assert_eq!(window.mapping_count(), 0);
}

#[test]
fn mappings_the_guest_may_not_have_are_refused() {
    let mut m = Mounted::new("refused", DAX_RANGE, &["--sandbox", "none", "--dax-window", "4M"]);
    std::fs::create_dir(m.dir.join("share/sub")).expect("a directory");
    let (guest, node) = (&mut m.guest, m.node);
    let window = guest.dax_window().expect("a window").clone();
    let sub = guest.lookup(1, "sub").expect("lookup").nodeid;

    let outside = (0, 4 << 20, DAX_RANGE);
    assert_eq!(errno(guest.setup_mapping(node, None, outside, false)), EINVAL, "past the end");
    let straddling = (0, 3 << 20, DAX_RANGE);
    assert_eq!(errno(guest.setup_mapping(node, None, straddling, false)), EINVAL);
    let unaligned = (100, 0, DAX_RANGE);
    assert_eq!(errno(guest.setup_mapping(node, None, unaligned, false)), EINVAL);
    let past_off_t = (1 << 63, 0, DAX_RANGE);
    assert_eq!(errno(guest.setup_mapping(node, None, past_off_t, false)), EINVAL, "no off_t");
    let whole = (0, 0, DAX_RANGE);
    assert_eq!(errno(guest.setup_mapping(sub, None, whole, false)), ENODEV, "a directory");
    let read_only = guest.open(node, libc::O_RDONLY as u32).expect("open");
    assert_eq!(errno(guest.setup_mapping(node, Some(read_only), whole, true)), EACCES);
    assert_eq!(window.mapping_count(), 0, "nothing refused reached the VMM");
    guest.setup_mapping(node, Some(read_only), whole, false).expect("reading is allowed");

    // One REMOVEMAPPING carries up to FUSE_REMOVEMAPPING_MAX_ENTRY ranges (64 KiB of them, as
    // a 64 KiB-page guest sends), whatever the queue's size; one more is refused whole.
    let page = rustix::param::page_size() as u64;
    let mut batch = vec![(DAX_RANGE, page); 4096];
    batch.push((0, DAX_RANGE));
    assert_eq!(errno(guest.remove_mapping(node, &batch)), EINVAL, "4 097 ranges");
    assert_eq!(window.mapping_count(), 1, "a refused batch removes nothing");
    batch.remove(0);
    guest.remove_mapping(node, &batch).expect("4 096 ranges");
    assert_eq!(window.mapping_count(), 0, "the last of 4 096 ranges was removed");
}

#[test]
fn a_read_only_share_maps_only_for_reading() {
    let args = ["--sandbox", "none", "--dax-window", "2M", "--readonly"];
    let mut m = Mounted::new("readonly", DAX_RANGE, &args);
    let (guest, node, bytes) = (&mut m.guest, m.node, &m.bytes);
    let window = guest.dax_window().expect("a window").clone();
    let whole = (0, 0, DAX_RANGE);
    assert_eq!(errno(guest.setup_mapping(node, None, whole, true)), EROFS);
    guest.setup_mapping(node, None, whole, false).expect("mapped for reading");
    let mut tail = [0u8; 8];
    assert!(window.read(DAX_RANGE - 8, &mut tail));
    assert_eq!(tail[..], bytes[bytes.len() - 8..]);
}

#[test]
fn without_a_window_there_is_no_dax() {
    let mut m = Mounted::new("none", DAX_RANGE, &["--sandbox", "none"]);
    let (guest, node) = (&mut m.guest, m.node);
    assert!(guest.dax_window().is_none());
    let flags = InitFlags::from_bits_retain(u64::from(guest.init_out().flags));
    assert!(!flags.contains(InitFlags::MAP_ALIGNMENT));
    assert_eq!(errno(guest.setup_mapping(node, None, (0, 0, DAX_RANGE), false)), ENOSYS);
    assert_eq!(errno(guest.remove_mapping(node, &[(0, DAX_RANGE)])), ENOSYS);
}

#[test]
fn a_guest_with_mappings_does_not_migrate() {
    // The guest is taken by the migration, so it is set up here rather than in a `Mounted`.
    let dir = scratch("vhu-dax", "migrate");
    laid_file(&dir.join("share/data"), DAX_RANGE);
    let args = ["--sandbox", "none", "--dax-window", "2M"];
    let _source = start(&dir, &args);
    let _destination = daemon::start_program(daemon::fsd(), &dir, "destination", &args);
    let mut guest = GuestFs::connect(socket(&dir)).expect("mounts");
    let node = guest.lookup(1, "data").expect("lookup").nodeid;
    guest.setup_mapping(node, None, (0, 0, DAX_RANGE), false).expect("mapped");
    let refused = guest.migrate_to(daemon::socket_named(&dir, "destination"), |_| Ok(()));
    assert!(refused.is_err(), "the state is refused while the window holds a mapping");
    let log = std::fs::read_to_string(dir.join("vhost.log")).expect("the source's log");
    assert!(log.contains("1 DAX mappings are in place"), "the source says why: {log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A guest migrated with an empty window maps files in the destination's window (the source's
/// went with its connection).
#[test]
fn a_migrated_guest_maps_in_the_destinations_window() {
    let dir = scratch("vhu-dax", "migrated");
    let data = laid_file(&dir.join("share/data"), DAX_RANGE);
    let args = ["--sandbox", "none", "--dax-window", "2M"];
    let _source = start(&dir, &args);
    let _destination = daemon::start_program(daemon::fsd(), &dir, "destination", &args);
    let guest = GuestFs::connect(socket(&dir)).expect("mounts");
    let destination = daemon::socket_named(&dir, "destination");
    let (mut guest, _) = guest.migrate_to(destination, |_| Ok(())).expect("migrates");
    let node = guest.lookup(1, "data").expect("lookup").nodeid;
    guest.setup_mapping(node, None, (0, 0, DAX_RANGE), false).expect("mapped at the destination");
    let window = guest.dax_window().expect("the destination's window");
    let mut seen = vec![0u8; 4096];
    assert!(window.read(0, &mut seen), "the range is mapped in the VMM");
    assert!(seen == data[..4096], "the file's bytes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_front_end_that_fails_a_removal_is_not_asked_for_the_rest() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use vhu_transport_std::client::{BackendHandler, BackendResponse, ShmemHandler};
    use vhu_transport_std::vhu_core::BackendRequest;

    let args = ["--sandbox", "none", "--dax-window", "4M"];
    let mut m = Mounted::new("failing", 2 * DAX_RANGE, &args);
    let (guest, node) = (&mut m.guest, m.node);
    guest.setup_mapping(node, None, (0, 0, DAX_RANGE), false).expect("mapped");
    guest.setup_mapping(node, None, (DAX_RANGE, DAX_RANGE, DAX_RANGE), false).expect("mapped");

    // From now on the VMM maps but refuses every removal.
    let sizes = guest.client().get_shmem_config().expect("GET_SHMEM_CONFIG");
    let mut maps = ShmemHandler::new(&sizes).expect("reserved");
    let removals = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&removals);
    let refusing = move |request: &BackendRequest, fds| match request {
        BackendRequest::ShmemUnmap(_) => {
            counted.fetch_add(1, Ordering::Relaxed);
            BackendResponse::Done(Err(5))
        }
        _ => maps.handle(request, fds),
    };
    guest.client().set_backend_handler(refusing);

    guest.call(Opcode::Destroy, 0, &[]).expect("the session ends all the same");
    assert_eq!(removals.load(Ordering::Relaxed), 1, "one refusal, and no more asking");
    let log = std::fs::read_to_string(m.dir.join("vhost.log")).expect("log");
    assert!(log.contains("2 mappings stay in place"), "the daemon says so: {log}");
}

#[test]
fn a_device_reset_empties_the_window_on_both_sides() {
    let mut m = Mounted::new("reset", DAX_RANGE, &["--sandbox", "none", "--dax-window", "2M"]);
    let (guest, node) = (&mut m.guest, m.node);
    let window = guest.dax_window().expect("a window").clone();
    guest.setup_mapping(node, None, (0, 0, DAX_RANGE), false).expect("mapped");
    assert_eq!(window.mapping_count(), 1);
    let client = guest.client();
    client.stop_vring(vhu_transport_std::vhu_core::VringIndex(1)).expect("the queue stops");
    client.reset_device().expect("RESET_DEVICE");
    assert_eq!(window.mapping_count(), 0, "the VMM dropped the mapping");
}
