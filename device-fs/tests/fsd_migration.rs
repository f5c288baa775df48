//! `vhu-fsd` under live migration, as a VMM drives it: dirty-page logging while the guest reads
//! (the zero-copy `preadv` path included).

mod daemon;

use std::collections::BTreeSet;

use vhu_device_fs::guest::{GuestFs, ONE_AT_A_TIME};
use vhu_transport_std::client::LogBuffer;
use vhu_transport_std::dirty::LOG_PAGE;

/// Guest memory of [`GuestFs::connect`].
const RAM: u64 = 4 << 20;

fn pages(start: u64, len: u64) -> impl Iterator<Item = u64> {
    start / LOG_PAGE..=(start + len - 1) / LOG_PAGE
}

/// A READ reply lands in guest memory by `preadv` straight from the file; with logging on,
/// every page of it and the used ring is marked, the request pages the daemon only read are
/// not, and nothing is marked while logging is off.
#[test]
fn every_page_a_read_reply_fills_is_marked() {
    for (name, extra) in [("inline", &[][..]), ("pool", &["--thread-pool-size", "4"][..])] {
        let dir = daemon::scratch("vhu-fsd-migration", name);
        let data: Vec<u8> = (0..128 * 1024u32).map(|i| (i * 7 + 1) as u8).collect();
        std::fs::write(dir.join("share/data"), &data).expect("file");
        let mut args = vec!["--sandbox", "none", "--seccomp", "none"];
        args.extend_from_slice(extra);
        let _daemon = daemon::start(&dir, &args);
        let mut guest = GuestFs::connect(daemon::socket(&dir)).expect("mounts");
        let log = LogBuffer::new(RAM).expect("log");
        guest.client().set_log_base(log.fd(), log.size(), 0).expect("set_log_base");
        let node = guest.lookup(1, "data").expect("lookup").nodeid;
        let fh = guest.open(node, libc::O_RDONLY as u32).expect("open");
        assert_eq!(log.take_dirty(), Vec::<u64>::new(), "{name}: nothing logged before LOG_ALL");

        guest.client().set_logging(true).expect("LOG_ALL on");
        let read = guest.read(node, fh, 0, data.len() as u32).expect("read");
        assert!(read == data, "{name}: the guest reads the file");
        let got: BTreeSet<u64> = log.take_dirty().into_iter().collect();
        let reply = ONE_AT_A_TIME.reply(0);
        let mut want: BTreeSet<u64> = pages(reply, 16 + data.len() as u64).collect();
        want.insert(ONE_AT_A_TIME.ring / LOG_PAGE); // the used ring
        for page in &want {
            assert!(got.contains(page), "{name}: page {page:#x} was written, not marked");
        }
        assert_eq!(got, want, "{name}: only the pages the daemon wrote are marked");
        assert!(!got.contains(&(ONE_AT_A_TIME.request(0) / LOG_PAGE)));

        guest.client().set_logging(false).expect("LOG_ALL off");
        // The device may still have touched the used ring (EVENT_IDX's avail_event) after the
        // guest saw the reply, while logging was on: that counts as logged, not as a leak.
        log.take_dirty();
        guest.read(node, fh, 0, 4096).expect("read");
        assert_eq!(log.take_dirty(), Vec::<u64>::new(), "{name}: nothing logged after LOG_ALL");
        drop(guest);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// virtiofsd from crates.io, where `.ci/run` installs it (`VHU_VIRTIOFSD` overrides).
fn virtiofsd() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("VHU_VIRTIOFSD") {
        return Some(path.into());
    }
    // The test binary is target/<profile>/deps/<name>; peers are installed in target/peers.
    let exe = std::env::current_exe().ok()?;
    let peer = exe.parent()?.parent()?.parent()?.join("peers/bin/virtiofsd");
    peer.exists().then_some(peer)
}

/// A VMM written with vhu's client moves a guest from one back-end process to another on the
/// same share: the guest's node ids and open handle keep working, and the pages the source
/// wrote while logging are reported dirty. Panics, naming `tag`, on the first thing that is not
/// so.
fn vmm_migrates(program: impl Fn() -> std::process::Command, tag: &str, extra: &[&str]) {
    let dir = daemon::scratch("vhu-vmm-migration", tag);
    std::fs::create_dir(dir.join("share/work")).expect("dir");
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 13 + 5) as u8).collect();
    std::fs::write(dir.join("share/work/held"), &data).expect("file");
    let _src = daemon::start_program(program(), &dir, "src", extra);
    let _dst = daemon::start_program(program(), &dir, "dst", extra);
    let mut guest = GuestFs::connect(daemon::socket_named(&dir, "src")).expect("mounts");
    let work = guest.lookup(1, "work").expect("lookup").nodeid;
    let node = guest.lookup(work, "held").expect("lookup").nodeid;
    let fh = guest.open(node, libc::O_RDONLY as u32).expect("open");
    let (mut guest, migrated) = guest
        .migrate_to(daemon::socket_named(&dir, "dst"), |g| {
            // The guest keeps reading while its memory is copied.
            assert!(g.read(node, fh, 0, 4096).expect("read at the source") == data[..4096]);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{tag}: migrates: {e}"));
    assert!(migrated.state_bytes > 0, "{tag}: some state moved");
    let reply = ONE_AT_A_TIME.reply(0) / LOG_PAGE * LOG_PAGE;
    assert!(
        migrated.dirty_pages.contains(&reply),
        "{tag}: the page the source read into is dirty: {:x?}",
        migrated.dirty_pages
    );
    // The destination serves the same session: the open handle, the node ids.
    let read = guest.read(node, fh, 0, data.len() as u32).expect("read at the destination");
    assert!(read == data, "{tag}: the handle reads the file");
    assert_eq!(guest.lookup(work, "held").expect("lookup").nodeid, node, "{tag}: same node");
    drop(guest);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_vmm_built_on_the_client_migrates_a_guest_between_two_vhu_fsd() {
    vmm_migrates(daemon::fsd, "vhu-fsd", &["--sandbox", "none", "--seccomp", "none"]);
}

/// With `--migration-mode file-handles` and nothing else (virtiofsd's command line for it), two
/// sandboxed root daemons migrate: the destination keeps the capability opening by handle needs.
#[test]
fn a_file_handles_migration_needs_no_further_option() {
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
        return;
    }
    vmm_migrates(daemon::fsd, "vhu-fsd-handles", &["--migration-mode", "file-handles"]);
}

#[test]
fn the_same_vmm_migrates_a_guest_between_two_virtiofsd() {
    let Some(path) = virtiofsd() else {
        eprintln!("virtiofsd is not installed (scripts/peers.sh); .ci/run installs it");
        return;
    };
    let program = || std::process::Command::new(&path);
    vmm_migrates(program, "virtiofsd", &[]);
}
