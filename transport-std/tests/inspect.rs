//! `vhu-inspect` against real back-ends: vhu's own daemon conforms, and the tool reports what it
//! offers; QEMU's qemu-storage-daemon (libvhost-user, serving vhost-user-blk) and virtiofsd 1.14
//! (rust-vmm's vhost) are caught on the rules they break. The peers run when installed (CI
//! installs them: Debian's qemu-utils, and virtiofsd from crates.io through scripts/peers.sh).

mod common;

use common::peers::StorageDaemon;

use std::process::{Command, Stdio};

fn inspect(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vhu-inspect"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("vhu-inspect runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The outcome of check `id` in a JSON report.
fn outcome<'a>(report: &'a str, id: &str) -> &'a str {
    let at = report.find(&format!("\"id\": \"{id}\"")).unwrap_or_else(|| panic!("{id}: {report}"));
    let rest = &report[at..];
    let o = rest.find("\"outcome\": \"").expect("an outcome") + 12;
    &rest[o..o + rest[o..].find('"').expect("closing quote")]
}

#[test]
fn vhu_s_own_daemon_conforms() {
    let served = common::serve("inspect");
    let socket = served.path.to_str().expect("utf-8").to_string();
    let (code, report) = inspect(&["--json", &socket]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("\"conforms\": true"), "{report}");
    for id in ["reply-ack", "unknown-request", "malformed-payload", "restore-path", "reconnect"] {
        assert_eq!(outcome(&report, id), "pass", "{id}: {report}");
    }
    // PAGEFAULT is never offered: the transport does not carry userfaultfds out.
    assert_eq!(outcome(&report, "postcopy"), "skip", "{report}");
    assert!(report.contains("\"REPLY_ACK\""), "protocol features by name: {report}");
    assert!(report.contains("\"VERSION_1\""), "virtio features by name: {report}");
    assert!(report.contains(&format!("\"queues\": {}", common::QUEUES)), "{report}");
    assert!(report.contains("\"max_queue_size\": 256"), "{report}");
    let (code, table) = inspect(&[&socket]);
    assert_eq!(code, 0);
    assert!(table.contains("pass restore-path"), "{table}");
}

#[test]
fn an_unreachable_socket_is_exit_status_2() {
    let (code, _) = inspect(&["/nonexistent/vhu-inspect.sock"]);
    assert_eq!(code, 2);
}

#[test]
fn qemu_storage_daemon_is_caught_on_unknown_and_malformed_requests() {
    let dir = std::env::temp_dir().join(format!("vhu-inspect-qsd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(16 << 20)).expect("disk");
    let Some(qsd) = StorageDaemon::start(&disk, dir.join("blk.sock")) else {
        eprintln!("qemu-storage-daemon is not installed (Debian: qemu-utils)");
        return;
    };
    let socket = qsd.socket.clone();
    let (code, report) = inspect(&["--json", socket.to_str().expect("utf-8")]);
    drop(qsd);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{report}");
    // libvhost-user: vu_panic on an unknown request; a 4-byte SET_VRING_NUM acknowledged.
    assert_eq!(outcome(&report, "unknown-request"), "fail", "{report}");
    assert_eq!(outcome(&report, "malformed-payload"), "fail", "{report}");
    assert_eq!(outcome(&report, "restore-path"), "pass", "{report}");
    assert_eq!(outcome(&report, "ring-start-stop"), "pass", "{report}");
    // libvhost-user since QEMU 9.0 writes its bases into a copy of the table and sends the
    // front-end's addresses back; it offers PAGEFAULT only where it can open a userfaultfd.
    let postcopy = if report.contains("\"PAGEFAULT\"") { "fail" } else { "skip" };
    assert_eq!(outcome(&report, "postcopy"), postcopy, "{report}");
    // virtio-blk's config space (capacity first: 16 MiB is 0x8000 sectors).
    assert!(report.contains("\"config\": \"0080000000000000"), "{report}");
}

#[test]
fn virtiofsd_is_caught_on_the_restore_path() {
    let Some(virtiofsd) = common::peers::virtiofsd() else {
        eprintln!("virtiofsd is not installed (scripts/peers.sh); .ci/run installs it");
        return;
    };
    let dir = std::env::temp_dir().join(format!("vhu-inspect-vfsd-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("share")).expect("dir");
    let spawn = format!(
        "{} --socket-path {{socket}} --shared-dir {} --sandbox none",
        virtiofsd.display(),
        dir.join("share").display()
    );
    let socket = dir.join("vfsd.sock");
    let (code, report) = inspect(&["--json", "--spawn", &spawn, socket.to_str().expect("utf-8")]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{report}");
    // rust-vmm's vhost acks only once it has seen GET_PROTOCOL_FEATURES (its PR #290).
    assert_eq!(outcome(&report, "restore-path"), "fail", "{report}");
    assert_eq!(outcome(&report, "reply-ack"), "pass", "{report}");
    assert!(report.contains("\"device_state\": true"), "{report}");
}
