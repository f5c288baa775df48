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
