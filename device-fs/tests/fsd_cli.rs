//! The `vhu-fsd` binary as a launcher runs it: capabilities, refused options, clear start-up
//! errors, and a clean exit on SIGTERM that removes its socket.

mod daemon;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{fsd, pass_fd, Running};

fn scratch(name: &str) -> PathBuf {
    daemon::scratch("vhu-fsd-cli", name)
}

fn wait_for(path: &Path, present: bool) -> bool {
    daemon::wait_for(|| path.exists() == present)
}

#[test]
fn prints_capabilities() {
    let out = fsd().arg("--print-capabilities").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains(r#""type": "fs""#), "{text}");
}

#[test]
fn refuses_options_it_does_not_honour() {
    let dir = scratch("refuse");
    let out = fsd()
        .args(["--socket-path", dir.join("s").to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("share").to_str().expect("utf-8")])
        .arg("--inode-file-handles=mandatory")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--inode-file-handles mandatory is not supported"), "{err}");
    assert!(!dir.join("s").exists(), "nothing was bound");
}

#[test]
fn missing_shared_dir_is_a_clear_error() {
    let dir = scratch("missing");
    let out = fsd()
        .args(["--socket-path", dir.join("s").to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("nope").to_str().expect("utf-8")])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope: No such file or directory"), "{err}");
}

/// An open-file limit above what the kernel allows names that bound.
#[test]
fn an_open_file_limit_above_the_kernels_is_a_clear_error() {
    let Some(most) = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return;
    };
    let dir = scratch("rlimit-too-high");
    let out = fsd()
        .args(["--socket-path", dir.join("s").to_str().expect("utf-8")])
        .args(["--shared-dir", dir.to_str().expect("utf-8")])
        .args(["--rlimit-nofile", &(most + 1).to_string()])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("at most {most} (fs.nr_open)")), "{err}");
}

#[test]
fn socket_in_use_is_a_clear_error_and_sigterm_exits_cleanly() {
    let dir = scratch("sigterm");
    let socket = dir.join("vhost.sock");
    let share = dir.join("share");
    let mut first = fsd()
        .args(["--socket-path", socket.to_str().expect("utf-8")])
        .args(["--shared-dir", share.to_str().expect("utf-8")])
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    assert!(wait_for(&socket, true), "the daemon creates its socket");

    let second = fsd()
        .args(["--socket-path", socket.to_str().expect("utf-8")])
        .args(["--shared-dir", share.to_str().expect("utf-8")])
        .output()
        .expect("runs");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains(socket.to_str().expect("utf-8")), "names the path: {err}");
    assert!(socket.exists(), "the second daemon leaves the first one's socket alone");

    let pid = rustix::process::Pid::from_child(&first);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = first.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon exits on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(wait_for(&socket, false), "the socket is removed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run as another user than root, the daemon serves as that user and says so once, naming
/// the uid every file will get.
#[test]
fn a_daemon_that_is_not_root_says_so_once() {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("not-root");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::set_permissions(dir.join("share"), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let socket = dir.join("vhost.sock");
    let root = rustix::process::geteuid().is_root();
    let (mut command, uid) = if root {
        // setpriv(1) from util-linux drops to an unprivileged user for the daemon alone.
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(env!("CARGO_BIN_EXE_vhu-fsd"));
        (c, 65534)
    } else {
        (fsd(), rustix::process::geteuid().as_raw())
    };
    let mut child = command
        .args(["--socket-path", socket.to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("share").to_str().expect("utf-8")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    assert!(wait_for(&socket, true), "the daemon creates its socket");
    // Ready when it says so, as launchers wait for it: a signal during its set-up ends it
    // before it reports anything.
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut err = String::new();
    while !err.contains("Waiting for vhost-user socket connection") {
        let read = std::io::BufRead::read_line(&mut stderr, &mut err).expect("read stderr");
        assert!(read > 0, "the daemon ended before it was ready: {err}");
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal");
    stderr.read_to_string(&mut err).expect("read stderr");
    assert!(child.wait().expect("wait").success());
    let line = format!("not running as root (uid {uid})");
    assert_eq!(err.matches(&line).count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Connects to `socket` from a thread whose filesystem uid is `uid` (a local user's view:
/// connecting to a Unix socket needs write permission on it).
fn connect_as(uid: u32, socket: &Path) -> std::io::Result<()> {
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        // SAFETY: setfsuid takes one integer and touches no memory; it changes this thread only.
        unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
        std::os::unix::net::UnixStream::connect(&socket).map(drop)
    })
    .join()
    .expect("connecting thread")
}

/// The socket is meant for the VMM alone: another local user cannot connect to it, even when
/// the directory it lives in is open to everyone.
#[test]
fn another_local_user_cannot_connect() {
    use std::os::unix::fs::PermissionsExt;
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
        return;
    }
    let dir = scratch("other-user");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let socket = dir.join("vhost.sock");
    let daemon = fsd()
        .args(["--socket-path", socket.to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("share").to_str().expect("utf-8")])
        .arg("--persistent")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let _daemon = Running(daemon);
    assert!(wait_for(&socket, true), "the daemon creates its socket");
    let refused = connect_as(65534, &socket).expect_err("another user connects");
    assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
    connect_as(0, &socket).expect("the daemon's own user connects");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a daemon at `level`, has a guest mount and look up a file, and returns its stderr.
fn log_of_a_session(level: &str) -> String {
    log_of_a_session_with(level, None)
}

/// [`log_of_a_session`] with `RUST_LOG` set to `rust_log` (unset when `None`).
fn log_of_a_session_with(level: &str, rust_log: Option<&str>) -> String {
    use std::io::Read;
    let dir = scratch(&format!("log-{level}-{}", rust_log.is_some()));
    std::fs::write(dir.join("share/f"), b"x").expect("file");
    let socket = dir.join("vhost.sock");
    let mut command = fsd();
    match rust_log {
        Some(spec) => command.env("RUST_LOG", spec),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child = command
        .args(["--socket-path", socket.to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("share").to_str().expect("utf-8")])
        .args(["--sandbox", "none", "--log-level", level])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    assert!(wait_for(&socket, true), "the daemon creates its socket");
    let mut guest = vhu_device_fs::guest::GuestFs::connect(&socket).expect("mounts");
    guest.lookup(1, "f").expect("lookup");
    assert!(guest.lookup(1, "missing").is_err());
    drop(guest);
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read stderr");
    assert!(child.wait().expect("wait").success());
    let _ = std::fs::remove_dir_all(&dir);
    err
}

#[test]
fn the_log_level_chooses_what_is_logged() {
    let trace = log_of_a_session("trace");
    assert!(trace.contains("Init unique"), "{trace}");
    assert!(trace.contains("Lookup unique") && trace.contains("errno 2"), "{trace}");
    // Every line starts with a UTC timestamp.
    for line in trace.lines() {
        let stamp = line.split(' ').next().unwrap_or_default();
        assert!(
            stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{line}"
        );
    }
    let info = log_of_a_session("info");
    // virtiofsd's readiness words to the last dot, ending the line (launchers match them so).
    assert!(info.contains("Waiting for vhost-user socket connection...\n"), "{info}");
    assert!(!info.contains("Lookup"), "{info}");
    let quiet = log_of_a_session("off");
    assert!(quiet.is_empty(), "{quiet}");
    // RUST_LOG overrides --log-level, as virtiofsd's does; one it cannot read is named.
    let traced = log_of_a_session_with("off", Some("vhu_device_fs=TRACE"));
    assert!(traced.contains("Lookup unique"), "{traced}");
    assert!(!traced.contains("Waiting for vhost-user"), "other targets stay off: {traced}");
    let refused = log_of_a_session_with("info", Some("vhu=loud"));
    assert!(refused.contains("RUST_LOG: `vhu=loud`"), "{refused}");
    assert!(refused.contains("Waiting for vhost-user socket connection"), "{refused}");
}

/// `--socket-group` opens the socket to one group (read-write), and to nobody else.
#[test]
fn socket_group_gets_read_write() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !rustix::process::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
        return;
    }
    let dir = scratch("group");
    let socket = dir.join("vhost.sock");
    let daemon = fsd()
        .args(["--socket-path", socket.to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("share").to_str().expect("utf-8")])
        .args(["--socket-group", "4242", "--persistent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let _daemon = Running(daemon);
    let deadline = Instant::now() + Duration::from_secs(10);
    let group_owned = || {
        std::fs::metadata(&socket)
            .is_ok_and(|m| m.gid() == 4242 && m.permissions().mode() & 0o777 == 0o660)
    };
    while !group_owned() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let meta = std::fs::metadata(&socket).expect("the socket");
    assert_eq!((meta.gid(), meta.permissions().mode() & 0o777), (4242, 0o660));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The daemon's soft open-file limit, from its /proc entry.
fn soft_open_file_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a nofile line");
    line.split_whitespace().nth(3).and_then(|soft| soft.parse().ok()).expect("a number")
}

/// `--rlimit-nofile 0` leaves the open-file limit the launcher set; without the option the
/// daemon raises it, as virtiofsd does.
#[test]
fn rlimit_nofile_zero_leaves_the_limit_alone() {
    use std::os::unix::process::CommandExt;
    const LOWERED: u64 = 1000;
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    if hard.is_some_and(|hard| hard <= LOWERED) {
        eprintln!("skipped: the hard open-file limit is at most {LOWERED}");
        return;
    }
    for (extra, raised) in [(&["--rlimit-nofile", "0"][..], false), (&[][..], true)] {
        let dir = scratch(if raised { "rlimit-default" } else { "rlimit-zero" });
        let mut command = fsd();
        // SAFETY: between fork and exec only setrlimit, async-signal-safe, runs in the child.
        unsafe {
            command.pre_exec(move || {
                let limit = rustix::process::Rlimit { current: Some(LOWERED), maximum: hard };
                rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)?;
                Ok(())
            });
        }
        let running = daemon::start_program(command, &dir, "vhost", extra);
        assert!(daemon::socket(&dir).exists(), "the daemon listens");
        let soft = soft_open_file_limit(running.0.id());
        if raised {
            assert!(soft > LOWERED, "the default raises the limit: {soft}");
        } else {
            assert_eq!(soft, LOWERED, "0 leaves the limit as the launcher set it");
        }
        drop(running);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `--fd` must be a listening stream socket the launcher passed: anything else is refused at
/// start with the cause, before the daemon says it waits for a connection (and before it opens
/// a descriptor of its own that could take the number of one the launcher failed to pass).
#[test]
fn an_inherited_descriptor_that_cannot_serve_is_refused_at_start() {
    let dir = scratch("bad-fd");
    std::fs::create_dir_all(dir.join("share")).expect("share");
    let run = |fd: Option<std::os::fd::OwnedFd>| {
        let mut command = fsd();
        command.args(["--fd=7", "--shared-dir", dir.join("share").to_str().expect("utf-8")]);
        if let Some(fd) = fd {
            pass_fd(&mut command, fd, 7);
        }
        let out = command.stdin(Stdio::null()).output().expect("runs");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(None);
    assert!(!ok && err.contains("--fd 7: not an open descriptor"), "{err}");
    // A connected stream (a socket pair's end) and a bound socket nobody listens on.
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
    let (ok, err) = run(Some(ours.into()));
    assert!(!ok && err.contains("--fd 7: not a listening stream socket"), "{err}");
    let datagram = std::os::unix::net::UnixDatagram::bind(dir.join("d")).expect("datagram");
    let (ok, err) = run(Some(datagram.into()));
    assert!(!ok && err.contains("--fd 7: not a listening stream socket"), "{err}");
    assert!(!err.contains("Waiting for vhost-user socket"), "{err}");
}

/// The capabilities a process holds, from its `/proc` status line `field` (CapPrm, CapEff, ...).
fn capabilities_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .expect("capability line");
    u64::from_str_radix(hex.trim(), 16).expect("hex")
}

/// A daemon started as a user from a binary given file capabilities (`setcap`) keeps only
/// those a root daemon keeps: one that serving never needs (NET_RAW here) is gone from every
/// set while it serves, one it keeps (CHOWN) stays.
#[test]
fn a_users_daemon_with_file_capabilities_drops_what_serving_does_not_need() {
    use std::os::unix::fs::PermissionsExt;
    let root = rustix::process::geteuid().is_root();
    assert!(root || std::env::var_os("CI").is_none(), "CI runs this as root");
    if !root {
        return;
    }
    let dir = scratch("file-caps");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::set_permissions(dir.join("share"), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let binary = dir.join("vhu-fsd");
    std::fs::copy(env!("CARGO_BIN_EXE_vhu-fsd"), &binary).expect("copy");
    let set = Command::new("setcap").arg("cap_net_raw,cap_chown+ep").arg(&binary).status();
    if !set.is_ok_and(|s| s.success()) {
        // CI installs setcap (libcap2-bin) and keeps its temporary files on ext4.
        assert!(std::env::var_os("CI").is_none(), "setcap failed in CI");
        eprintln!("setcap is missing or the file system keeps no file capabilities: skipped");
        return;
    }
    let socket = dir.join("vhost.sock");
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .args(["--sandbox", "none", "--socket-path", socket.to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("share").to_str().expect("utf-8")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    // Ready (capabilities reduced) when it says it waits for a connection.
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut err = String::new();
    while !err.contains("Waiting for vhost-user socket connection") {
        let read = std::io::BufRead::read_line(&mut stderr, &mut err).expect("read stderr");
        assert!(read > 0, "the daemon ended before it was ready: {err}");
    }
    assert!(socket.exists(), "{err}");
    assert!(!err.contains("started without"), "a file-capability daemon lacks the rest: {err}");
    let pid = child.id();
    const CHOWN: u64 = 1 << 0;
    const NET_RAW: u64 = 1 << 13;
    for field in ["CapPrm", "CapEff"] {
        let caps = capabilities_of(pid, field);
        assert_eq!(caps & NET_RAW, 0, "{field} {caps:#x}: NET_RAW dropped");
        assert_eq!(caps & CHOWN, CHOWN, "{field} {caps:#x}: CHOWN kept");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
