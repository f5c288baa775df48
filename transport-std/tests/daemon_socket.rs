//! The socket a daemon binds: only its user may connect, a socket left by a dead daemon is
//! replaced, one a live daemon serves is not, nothing else is ever removed, and the pid file
//! next to it says who serves it.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::{Arc, Mutex};

use common::{readable, serve, socket_path, Record, TestDevice};
use vhu_transport_std::{Daemon, DaemonError, Listen, SocketFile};

fn daemon(path: &std::path::Path) -> Result<Daemon<TestDevice>, DaemonError> {
    let device = TestDevice::new(Arc::new(Mutex::new(Record::default())));
    Daemon::new(device, Listen::Path(path.to_owned()))
}

fn pid_file(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pid");
    name.into()
}

/// The daemon's socket and pid file (whatever the umask: see the next test, the only one here
/// that changes it).
#[test]
fn the_socket_is_the_owners_only_and_the_pid_file_names_the_daemon() {
    let path = socket_path("owner-only");
    let d = daemon(&path).expect("binds");
    let meta = std::fs::metadata(&path).expect("stat");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "no other user may connect");
    let pid = std::fs::read_to_string(pid_file(&path)).expect("pid file");
    assert_eq!(pid.trim(), std::process::id().to_string());
    assert_eq!(d.pid_file(), Some(pid_file(&path)));
    drop(d);
    assert!(!path.exists() && !pid_file(&path).exists(), "both removed with the daemon");
}

/// Threads binding at once under a umask that masks nothing: each socket is its owner's only,
/// and the process umask is what it was (a bind that set the umask and put it back could give
/// another thread's socket a umask of its own, and leave the process with the wrong one).
#[test]
fn sockets_bound_by_many_threads_at_once_are_each_the_owners_only_whatever_the_umask() {
    let umask = rustix::process::umask(rustix::fs::Mode::empty());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..100 {
                    let path = socket_path(&format!("threads-{t}-{i}"));
                    let (_listener, file) = SocketFile::bind(&path).expect("binds");
                    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
                    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
                    drop(file);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("every socket owner-only");
    }
    let now = rustix::process::umask(umask);
    assert_eq!(now.bits(), 0, "the process umask is left as it was");
}

#[test]
fn a_dead_daemons_socket_is_replaced_a_live_ones_is_not() {
    let path = socket_path("stale");
    // A socket file nobody serves (its daemon died without cleaning up).
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let live = daemon(&path).expect("the stale socket is replaced");
    match daemon(&path) {
        Err(DaemonError::Bind { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse)
        }
        other => panic!("a second daemon on a live socket: {other:?}"),
    }
    assert!(path.exists(), "the live daemon keeps its socket");
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok(), "and still listens");
    drop(live);
    // Something that is not a socket is never removed.
    std::fs::write(&path, b"not a socket").expect("write");
    match daemon(&path) {
        Err(DaemonError::Bind { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists);
            assert!(source.to_string().contains("other than a socket"), "{source}");
        }
        other => panic!("a daemon over a regular file: {other:?}"),
    }
    assert_eq!(std::fs::read(&path).expect("read"), b"not a socket");
    assert!(!pid_file(&path).exists(), "a refused bind leaves no pid file behind");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(pid_file(&path));
}

#[test]
fn a_second_front_end_is_refused_while_one_is_served() {
    use std::io::Read;
    let served = serve("second");
    let first = std::os::unix::net::UnixStream::connect(&served.path).expect("first");
    // The second connection is closed at once, without a byte.
    let mut second = std::os::unix::net::UnixStream::connect(&served.path).expect("connects");
    assert!(readable(&second), "the second connection ends instead of hanging");
    assert_eq!(second.read(&mut [0u8; 16]).expect("EOF"), 0);
    // The first is still served: it ends only when it hangs up, and the next one is served.
    drop(first);
    served.wait_ended(1);
    let third = std::os::unix::net::UnixStream::connect(&served.path).expect("third");
    let mut probe = third.try_clone().expect("clone");
    probe.set_read_timeout(Some(std::time::Duration::from_millis(200))).expect("timeout");
    let err = probe.read(&mut [0u8; 16]).expect_err("served, so no EOF: the read times out");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    // Refusing starts again with each front-end served.
    let mut fourth = std::os::unix::net::UnixStream::connect(&served.path).expect("connects");
    assert!(readable(&fourth), "the fourth connection ends instead of hanging");
    assert_eq!(fourth.read(&mut [0u8; 16]).expect("EOF"), 0);
    drop((third, probe));
    served.wait_ended(1);
}

/// A front-end that hangs up and connects again while the daemon still tears its session down
/// (a reset that takes a while) waits for the next accept and is served: only a live session
/// refuses a second front-end.
#[test]
fn a_front_end_reconnecting_during_teardown_is_served() {
    use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures};
    let served = serve("reconnect-teardown");
    served.record.lock().unwrap().reset_takes = Some(std::time::Duration::from_millis(300));
    drop(std::os::unix::net::UnixStream::connect(&served.path).expect("first"));
    assert!(
        common::eventually(|| served.record.lock().unwrap().resetting),
        "the first session's teardown began"
    );
    let mut second = vhu_transport_std::Client::connect(&served.path).expect("connects");
    second
        .handshake(VirtioFeatures::VERSION_1, ProtocolFeatures::empty())
        .expect("served once the teardown is done");
    drop(second);
    served.wait_ended(2);
}

#[test]
fn a_socket_file_is_removed_through_its_directory_and_released_copies_remove_nothing() {
    let path = socket_path("socket-file");
    let (listener, file) = SocketFile::bind(&path).expect("binds");
    assert_eq!(file.pid_file(), pid_file(&path));
    // Renaming the directory's path does not matter: removal goes through its descriptor.
    let dir = std::env::temp_dir().join(format!("vhu-{}-moved", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let inner = dir.join("s.sock");
    let (_l, moved) = SocketFile::bind(&inner).expect("binds");
    let renamed = std::env::temp_dir().join(format!("vhu-{}-renamed", std::process::id()));
    std::fs::rename(&dir, &renamed).expect("rename");
    drop(moved);
    assert!(!renamed.join("s.sock").exists() && !renamed.join("s.sock.pid").exists());
    let _ = std::fs::remove_dir_all(&renamed);
    // A released copy (a forked child's) leaves the files to their owner.
    file.release();
    assert!(path.exists() && pid_file(&path).exists());
    drop(listener);
    let (_l, again) = SocketFile::bind(&path).expect("the lock went with the release: stale");
    drop(again);
    assert!(!path.exists() && !pid_file(&path).exists());
}

/// A launcher connects as soon as the socket file exists: by then it already accepts
/// connections, and nothing of the binding is left next to it.
#[test]
fn the_socket_appears_only_once_it_accepts_connections() {
    let path = socket_path("appears-listening");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = Arc::clone(&stop);
    let watched = path.clone();
    let watcher = std::thread::spawn(move || {
        let mut connected = 0;
        while !watching.load(std::sync::atomic::Ordering::Relaxed) {
            if watched.exists() {
                match std::os::unix::net::UnixStream::connect(&watched) {
                    Ok(_) => connected += 1,
                    // Removed between the check and the connect: the daemon went away.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("the socket file existed but refused: {e}"),
                }
            }
        }
        connected
    });
    for _ in 0..50 {
        let (listener, file) = SocketFile::bind(&path).expect("binds");
        // The name goes first, then the listener, as a daemon ends.
        drop(file);
        drop(listener);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join().expect("never refused");
    let dir = path.parent().expect("a directory");
    let name = path.file_name().expect("a name").to_string_lossy().into_owned();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(&format!(".{name}.")))
        .collect();
    assert!(leftovers.is_empty(), "binding left {leftovers:?}");
}

/// Whoever can write to the socket's directory cannot make the daemon (often root) truncate or
/// change another file through a symlink.
#[test]
fn nothing_is_written_or_changed_through_a_symlink_next_to_the_socket() {
    use std::os::unix::fs::MetadataExt;
    let path = socket_path("symlinked-pid");
    let victim = std::env::temp_dir().join(format!("vhu-{}-victim", std::process::id()));
    std::fs::write(&victim, b"precious").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("mode");
    let _ = std::fs::remove_file(pid_file(&path));
    std::os::unix::fs::symlink(&victim, pid_file(&path)).expect("symlink");
    assert!(SocketFile::bind(&path).is_err(), "a symlinked pid file is refused");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    std::fs::remove_file(pid_file(&path)).expect("remove the symlink");

    // With a group, the socket is that group's, read-write, as soon as it is there.
    let gid = rustix::process::getegid();
    let (_listener, file) = SocketFile::bind_for(&path, Some(gid)).expect("binds");
    let meta = std::fs::symlink_metadata(&path).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!((meta.gid(), meta.mode() & 0o777), (gid.as_raw(), 0o660));
    let victim_meta = std::fs::metadata(&victim).expect("victim");
    assert_eq!(victim_meta.mode() & 0o777, 0o600, "the victim's mode is untouched");
    drop(file);
    let _ = std::fs::remove_file(&victim);
}

/// A path `sockaddr_un` cannot hold is refused by name, before anything is created next to it.
#[test]
fn a_socket_path_too_long_for_an_address_is_refused_and_leaves_nothing() {
    let dir = socket_path("long-dir");
    std::fs::create_dir_all(&dir).expect("directory");
    let long = dir.join("s".repeat(120));
    match daemon(&long) {
        Err(DaemonError::Bind { source, .. }) => {
            assert!(source.to_string().contains("107 bytes"), "names the limit: {source}")
        }
        other => panic!("a daemon on a {}-byte path: {other:?}", long.as_os_str().len()),
    }
    let left: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir(&dir).expect("the directory is empty");
}
