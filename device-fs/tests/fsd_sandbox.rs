//! The daemon's sandbox seen from outside, as an administrator would check it: under
//! `--sandbox namespace` (the default) the process serving the guest lives in its own pid,
//! mount and network namespaces with the share as its root and the host's file system out of
//! reach; under `chroot` its root is the share; as root it keeps only the capabilities file
//! serving needs (`--modcaps` edits them); and it still serves the guest in every mode.

mod daemon;
mod support;

use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{start, Running};

use vhu_device_fs::fuse::abi::CreateIn;
use vhu_device_fs::guest::GuestFs;
use zerocopy::IntoBytes;

fn scratch(name: &str) -> PathBuf {
    let dir = daemon::scratch("vhu-sandbox", name);
    std::fs::write(dir.join("share/inside"), b"in the share").expect("file");
    dir
}

/// The process that serves: the daemon's only child in namespace mode, itself otherwise.
fn server_pid(daemon: &Running, forked: bool) -> u32 {
    let pid = daemon.0.id();
    if !forked {
        return pid;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().expect("a pid");
        }
        assert!(Instant::now() < deadline, "the sandboxed child never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `condition` for at most ten seconds (the daemon sets itself up after it binds).
fn wait_until(condition: impl Fn() -> bool) {
    daemon::wait_for(condition);
}

fn namespace(pid: u32, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("namespace link")
}

/// The effective capability set of `pid`.
fn cap_eff(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("CapEff:")).expect("CapEff");
    u64::from_str_radix(line.split_whitespace().nth(1).expect("value"), 16).expect("hex")
}

/// The kept set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID, MKNOD, SETFCAP.
const KEPT: u64 = 1 | 1 << 1 | 1 << 3 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 27 | 1 << 31;

fn serves(dir: &Path) {
    let mut guest = GuestFs::connect(dir.join("vhost.sock")).expect("connects");
    let entry = guest.lookup(1, "inside").expect("lookup");
    let fh = guest.open(entry.nodeid, 0).expect("open");
    assert_eq!(guest.read(entry.nodeid, fh, 0, 64).expect("read"), b"in the share");
}

#[test]
fn the_default_sandbox_isolates_the_serving_process() {
    if !support::needs_root() {
        return;
    }
    let dir = scratch("namespace");
    // A host file system mounted inside the share stays visible inside the sandbox.
    let sub = dir.join("share/sub");
    std::fs::create_dir(&sub).expect("mount point");
    rustix::mount::mount("vhu-test", &sub, "tmpfs", rustix::mount::MountFlags::empty(), None)
        .expect("tmpfs");
    std::fs::write(sub.join("on-tmpfs"), b"submount").expect("file");
    let daemon = start(&dir, &[]);
    let server = server_pid(&daemon, true);
    // Set up once its root is the share, its capabilities are reduced and its syscall filter
    // is on (the child unshares, pivots and drops after the fork, then installs the filter).
    let root = PathBuf::from(format!("/proc/{server}/root"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let filtered = || {
        std::fs::read_to_string(format!("/proc/{server}/status"))
            .is_ok_and(|status| status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"))
    };
    let ready = || root.join("inside").exists() && cap_eff(server) == KEPT && filtered();
    while !ready() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for kind in ["pid", "mnt", "net"] {
        assert_ne!(namespace(server, kind), namespace(std::process::id(), kind), "{kind}");
    }
    // Its root is the share: the share's file is there, the host's are not.
    assert_eq!(std::fs::read(root.join("inside")).expect("through its root"), b"in the share");
    for host in ["etc", "proc", "usr", "tmp"] {
        assert!(!root.join(host).exists(), "/{host} is reachable from the sandbox");
    }
    // The `/proc/self/fd` it keeps leads by `..` to a /proc of processes only: no system
    // files for a compromised daemon (still uid 0) to write.
    let proc_fd = std::fs::read_dir(format!("/proc/{server}/fd"))
        .expect("its descriptors")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|fd| std::fs::read_link(fd).is_ok_and(|link| link.ends_with("fd")))
        .expect("the file system's /proc/self/fd");
    let proc_root = proc_fd.join("../..");
    // It is pid 1 of its namespace.
    assert!(proc_root.join("1/fd").is_dir(), "{} is its /proc", proc_root.display());
    for system in ["sys", "sysrq-trigger", "kcore"] {
        assert!(!proc_root.join(system).exists(), "/proc/{system} is reachable in the sandbox");
    }
    assert_eq!(cap_eff(server), KEPT, "only the file-serving capabilities are kept");
    let status = std::fs::read_to_string(format!("/proc/{server}/status")).expect("status");
    assert!(status.contains(&format!("CapBnd:\t{KEPT:016x}")), "{status}");
    // A syscall filter is on (mode 2), with no way to gain privileges back.
    assert!(status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"), "{status}");
    assert_eq!(std::fs::read(root.join("sub/on-tmpfs")).expect("submount"), b"submount");
    // The share and the mounts under it are nodev and nosuid there: a device node in the
    // share opens no host device, even for a daemon taken over.
    let mounts = std::fs::read_to_string(format!("/proc/{server}/mountinfo")).expect("mounts");
    for point in ["/", "/sub"] {
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(point))
            .unwrap_or_else(|| panic!("{point} in {mounts}"));
        let options = line.split(' ').nth(5).unwrap_or_default();
        assert!(options.contains("nodev") && options.contains("nosuid"), "{line}");
    }
    let mut guest = GuestFs::connect(dir.join("vhost.sock")).expect("connects");
    let sub_node = guest.lookup(1, "sub").expect("lookup sub").nodeid;
    let entry = guest.lookup(sub_node, "on-tmpfs").expect("the submount's file");
    let fh = guest.open(entry.nodeid, 0).expect("open");
    assert_eq!(guest.read(entry.nodeid, fh, 0, 64).expect("read"), b"submount");
    drop(guest);
    drop(daemon);
    let _ = rustix::mount::unmount(&sub, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where no pid-only `/proc` can be mounted (Linux before 5.8; `VHU_SANDBOX_PROC=bind` takes
/// that way on any kernel), the sandbox binds the daemon's descriptor directory over `/proc`:
/// it still serves, and no descriptor it holds leads by `..` to the system files of a `/proc`.
#[test]
fn without_a_pid_only_proc_no_system_file_is_in_reach() {
    if !support::needs_root() {
        return;
    }
    let dir = scratch("proc-bind");
    let mut program = daemon::fsd();
    program.env("VHU_SANDBOX_PROC", "bind");
    let daemon = daemon::start_program(program, &dir, "vhost", &[]);
    let server = server_pid(&daemon, true);
    let root = PathBuf::from(format!("/proc/{server}/root"));
    wait_until(|| root.join("inside").exists() && cap_eff(server) == KEPT);
    // Looked at while a guest is served (the daemon ends with its front-end's connection).
    let mut guest = GuestFs::connect(dir.join("vhost.sock")).expect("connects");
    let entry = guest.lookup(1, "inside").expect("lookup");
    let fh = guest.open(entry.nodeid, 0).expect("open");
    assert_eq!(guest.read(entry.nodeid, fh, 0, 64).expect("read"), b"in the share");
    let directories = || -> Vec<PathBuf> {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{server}/fd")) else { return Vec::new() };
        fds.filter_map(Result::ok).map(|entry| entry.path()).filter(|fd| fd.is_dir()).collect()
    };
    // Its descriptor directory is among them: the directory holding its own number.
    let own = |fd: &PathBuf| fd.file_name().is_some_and(|n| fd.join(n).exists());
    wait_until(|| directories().iter().any(own));
    let fds = directories();
    assert!(fds.iter().any(own), "no descriptor directory among {fds:?}");
    for fd in &fds {
        for up in ["..", "../.."] {
            for system in ["sys", "sysrq-trigger", "kcore"] {
                let path = fd.join(up).join(system);
                assert!(!path.exists(), "{} is in reach", path.display());
            }
        }
    }
    drop(guest);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the share holds where a host keeps `/proc` and `/sys` is the guest's: a sandboxed daemon
/// must never read it. FIFOs there would block a read of them for good.
#[test]
fn files_the_guest_puts_where_proc_would_be_are_never_read() {
    if !support::needs_root() {
        return;
    }
    for sandbox in ["namespace", "chroot"] {
        let dir = scratch(&format!("proc-in-share-{sandbox}"));
        let share = dir.join("share");
        for fifo in ["proc/self/cgroup", "proc/self/mountinfo", "sys/fs/cgroup/cpu.max"] {
            let path = share.join(fifo);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("directories");
            support::mkfifo(&path, 0o666);
        }
        let daemon = start(&dir, &["--sandbox", sandbox]);
        serves(&dir);
        drop(daemon);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn chroot_and_modcaps() {
    if !support::needs_root() {
        return;
    }
    let dir = scratch("chroot");
    let daemon = start(&dir, &["--sandbox", "chroot", "--modcaps=+sys_admin:-mknod"]);
    let server = server_pid(&daemon, false);
    let want = (KEPT | 1 << 21) & !(1 << 27);
    wait_until(|| cap_eff(server) == want);
    let root = std::fs::read_link(format!("/proc/{server}/root")).expect("root");
    assert_eq!(root, dir.join("share").canonicalize().expect("canonical"));
    assert_eq!(cap_eff(server), want, "CAP_SYS_ADMIN added, CAP_MKNOD removed");
    serves(&dir);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_sandbox_and_no_filter_still_drop_capabilities() {
    if !support::needs_root() {
        return;
    }
    let dir = scratch("none");
    let daemon = start(&dir, &["--sandbox", "none", "--seccomp", "none"]);
    let server = server_pid(&daemon, false);
    wait_until(|| cap_eff(server) == KEPT);
    let status = std::fs::read_to_string(format!("/proc/{server}/status")).expect("status");
    assert!(status.contains("Seccomp:\t0"), "--seccomp none installs no filter: {status}");
    assert_eq!(namespace(server, "mnt"), namespace(std::process::id(), "mnt"));
    assert_eq!(cap_eff(server), KEPT);
    serves(&dir);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What unprivileged libvirt runs when the user has subordinate ids: the daemon, as a regular
/// user, maps its own id to 0 and a subordinate range to 1.. (through newuidmap/newgidmap), and
/// a file a guest user creates belongs on the host to that user's subordinate id.
#[test]
fn an_unprivileged_daemon_maps_guest_users_to_subordinate_ids() {
    const USER: u32 = 65534;
    const SUB: u32 = 300_000;
    if !subordinate_ids_ready(USER, SUB) {
        return;
    }
    let dir = scratch("subids");
    for path in [dir.clone(), dir.join("share")] {
        std::os::unix::fs::chown(&path, Some(USER), Some(USER)).expect("chown");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
    }
    let socket = dir.join("vhost.sock");
    let ids = |flag: &str| [format!("--{flag}=:0:{USER}:1:"), format!("--{flag}=:1:{SUB}:65536:")];
    let child = Command::new("setpriv")
        .args([format!("--reuid={USER}"), format!("--regid={USER}"), "--clear-groups".into()])
        .arg(env!("CARGO_BIN_EXE_vhu-fsd"))
        .args(["--socket-path", socket.to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("share").to_str().expect("utf-8")])
        .args(ids("uid-map"))
        .args(ids("gid-map"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let daemon = Running(child);
    wait_until(|| socket.exists());
    let mut guest = GuestFs::connect(&socket).expect("mounts");
    // Root of its user namespace, it held every capability there: it keeps only the
    // file-serving ones, as a root daemon does.
    assert_eq!(cap_eff(server_pid(&daemon, true)), KEPT, "capabilities in its namespace");
    for (uid, name) in [(1000, "by-1000"), (0, "by-root")] {
        guest.set_caller(uid, uid);
        let args = CreateIn { flags: 0o101, mode: 0o100644, umask: 0, open_flags: 0 };
        let create = [args.as_bytes(), format!("{name}\0").as_bytes()].concat();
        guest.call(vhu_device_fs::fuse::Opcode::Create, 1, &create).expect("create");
    }
    drop(guest);
    drop(daemon);
    let owner = |name: &str| {
        let meta = std::fs::metadata(dir.join("share").join(name)).expect("created");
        (std::os::unix::fs::MetadataExt::uid(&meta), std::os::unix::fs::MetadataExt::gid(&meta))
    };
    assert_eq!(owner("by-1000"), (SUB + 999, SUB + 999), "guest 1000 is subordinate id 999");
    assert_eq!(owner("by-root"), (USER, USER), "guest root is the daemon's own user");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether the tests that start vhu-fsd under `setpriv` can run: as root, with setpriv there.
/// CI always can; anywhere else they are skipped.
fn setpriv_usable() -> bool {
    let usable = rustix::process::geteuid().is_root() && Path::new("/usr/bin/setpriv").exists();
    assert!(usable || std::env::var_os("CI").is_none(), "CI runs this as root, with setpriv");
    usable
}

/// vhu-fsd under `setpriv` with `privs`, serving `dir`'s `share/` on `dir`'s `vhost.sock`.
fn under_setpriv(dir: &Path, privs: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(privs)
        .arg(env!("CARGO_BIN_EXE_vhu-fsd"))
        .args(["--socket-path", dir.join("vhost.sock").to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("share").to_str().expect("utf-8")]);
    command
}

/// Started as a regular user without maps, the daemon maps its own ids to themselves in its
/// user namespace (as virtiofsd does): the guest sees the user's files as the user's, not as
/// root's, so a guest user with the same uid may write them; what it creates is the user's.
#[test]
fn an_unprivileged_daemon_shows_its_own_ids_as_they_are() {
    // Not 65534, the kernel's overflow id, which an id outside the namespace's map reads as.
    const USER: u32 = 4242;
    if !setpriv_usable() {
        return;
    }
    let dir = scratch("own-ids");
    for path in [dir.clone(), dir.join("share"), dir.join("share/inside")] {
        std::os::unix::fs::chown(&path, Some(USER), Some(USER)).expect("chown");
    }
    let daemon = Running(
        under_setpriv(&dir, &["--reuid=4242", "--regid=4242", "--clear-groups"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    );
    let socket = dir.join("vhost.sock");
    wait_until(|| socket.exists());
    let mut guest = GuestFs::connect(&socket).expect("mounts");
    let inside = guest.lookup(1, "inside").expect("lookup").attr;
    assert_eq!((inside.uid, inside.gid), (USER, USER), "the user's file, as the host has it");
    guest.set_caller(USER, USER);
    let args = CreateIn { flags: 0o101, mode: 0o100644, umask: 0, open_flags: 0 };
    let create = [args.as_bytes(), b"made\0"].concat();
    let made = guest.call(vhu_device_fs::fuse::Opcode::Create, 1, &create).expect("create");
    assert!(!made.is_empty(), "an entry and an open file");
    drop(guest);
    drop(daemon);
    let meta = std::fs::metadata(dir.join("share/made")).expect("created");
    let owner =
        (std::os::unix::fs::MetadataExt::uid(&meta), std::os::unix::fs::MetadataExt::gid(&meta));
    assert_eq!(owner, (USER, USER));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether newuidmap/newgidmap can give `user` the 65536 ids from `sub` (CI installs uidmap and
/// gives uid 65534 that range: `.ci/run`); anywhere else the tests that need it are skipped.
fn subordinate_ids_ready(user: u32, sub: u32) -> bool {
    if !support::needs_root() {
        return false;
    }
    let subordinate = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l == format!("{user}:{sub}:65536") || l == format!("nobody:{sub}:65536"))
    };
    let ready = Path::new("/usr/bin/newuidmap").exists()
        && subordinate("/etc/subuid")
        && subordinate("/etc/subgid");
    assert!(ready || std::env::var_os("CI").is_none(), "newuidmap or /etc/subuid is not set up");
    ready
}

/// Guest users are switched to with both ids and the groups: with several uids but one gid (what
/// libvirt passes when the user's primary group has no /etc/subgid range), the daemon says so,
/// naming both options, and serves, creating every file as its own user.
#[test]
fn uid_and_gid_maps_that_disagree_create_as_the_daemon() {
    const USER: u32 = 65534;
    if !setpriv_usable() || !subordinate_ids_ready(USER, 300_000) {
        return;
    }
    let dir = scratch("maps-disagree");
    for path in [dir.clone(), dir.join("share")] {
        std::os::unix::fs::chown(&path, Some(USER), Some(USER)).expect("chown");
    }
    let log = dir.join("vhost.log");
    let daemon = Running(
        under_setpriv(&dir, &["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["--uid-map=:0:65534:1:", "--uid-map=:1:300000:65536:"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("starts"),
    );
    let socket = dir.join("vhost.sock");
    wait_until(|| socket.exists());
    let mut guest = GuestFs::connect(&socket).expect("mounts");
    guest.set_caller(1000, 1000);
    let args = CreateIn { flags: 0o101, mode: 0o100644, umask: 0, open_flags: 0 };
    let create = [args.as_bytes(), b"by-1000\0"].concat();
    guest.call(vhu_device_fs::fuse::Opcode::Create, 1, &create).expect("create");
    drop(guest);
    drop(daemon);
    let meta = std::fs::metadata(dir.join("share/by-1000")).expect("created");
    let owner =
        (std::os::unix::fs::MetadataExt::uid(&meta), std::os::unix::fs::MetadataExt::gid(&meta));
    assert_eq!(owner, (USER, USER), "the daemon's user");
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(log.contains("--uid-map") && log.contains("--gid-map"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A root daemon started without a capability it would keep (a container without MKNOD)
/// serves without it and says so; one that `--modcaps` asks for is still required.
#[test]
fn a_missing_default_capability_is_warned_about_an_asked_one_refused() {
    if !setpriv_usable() {
        return;
    }
    let dir = scratch("no-mknod");
    let socket = dir.join("vhost.sock");
    let run = |extra: &[&str]| {
        under_setpriv(&dir, &["--bounding-set=-mknod"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("vhost.log")).expect("log"))
            .spawn()
            .expect("starts")
    };
    let daemon = Running(run(&[]));
    wait_until(|| socket.exists());
    serves(&dir);
    drop(daemon);
    let log = std::fs::read_to_string(dir.join("vhost.log")).expect("log");
    assert!(log.contains("started without") && log.contains("MKNOD"), "{log}");
    let status = run(&["--modcaps=+mknod"]).wait().expect("exits");
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.join("vhost.log")).expect("log");
    assert!(log.contains("--modcaps: the daemon does not hold") && log.contains("MKNOD"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Root in a container started with a minimal set of capabilities, SETPCAP not among them,
/// still serves (virtiofsd, which must drop its bounding set, refuses to start there): its
/// bounding set stays, which it says, and it keeps only the file-serving capabilities.
#[test]
fn root_without_setpcap_serves_and_says_what_it_kept() {
    if !setpriv_usable() {
        return;
    }
    let dir = scratch("no-setpcap");
    let child = under_setpriv(&dir, &["--bounding-set=-setpcap"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("vhost.log")).expect("log"))
        .spawn()
        .expect("starts");
    let daemon = Running(child);
    wait_until(|| dir.join("vhost.sock").exists());
    serves(&dir);
    assert_eq!(cap_eff(server_pid(&daemon, true)), KEPT, "the file-serving capabilities only");
    drop(daemon);
    let log = std::fs::read_to_string(dir.join("vhost.log")).expect("log");
    assert!(log.contains("without SETPCAP"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A termination signal ends a sandboxed daemon at any point of its set-up (the serving child,
/// pid 1 of its namespace, would ignore one that came before its handler): the daemon exits 0
/// and removes its socket.
#[test]
fn a_daemon_terminated_during_set_up_still_exits_cleanly() {
    if !support::needs_root() {
        return;
    }
    let dir = scratch("early-term");
    let socket = dir.join("vhost.sock");
    for round in 0..10 {
        let mut daemon = start(&dir, &[]);
        let pid = rustix::process::Pid::from_child(&daemon.0);
        // As soon as the socket exists: the child is still setting up, most rounds.
        std::thread::sleep(Duration::from_micros(200 * round));
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = daemon.0.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "round {round}: the daemon did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "round {round}: {status:?}");
        assert!(!socket.exists(), "round {round}: the socket was left behind");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A descriptor the launcher left open by mistake (here a directory outside the share) is not
/// in the serving process, where a daemon a guest took over could walk out of the sandbox
/// through it; the parent outside keeps it, as libvirt's pid-file lock needs.
#[test]
fn a_descriptor_the_launcher_leaked_stays_outside_the_sandbox() {
    if !support::needs_root() {
        return;
    }
    let dir = scratch("leaked");
    let outside = std::fs::File::open(&dir).expect("the directory above the share");
    let mut command = daemon::fsd();
    // Above the numbers the daemon's own descriptors take (a closed number may be reused).
    daemon::pass_fd(&mut command, outside.into(), 40);
    let daemon = daemon::start_program(command, &dir, "vhost", &[]);
    let server = server_pid(&daemon, true);
    let held = |pid: u32| std::fs::read_link(format!("/proc/{pid}/fd/40")).ok();
    // The socket is served once the child is set up: by then it has closed what it will.
    serves(&dir);
    assert_ne!(held(server).as_deref(), Some(dir.as_path()), "the serving process holds it");
    assert_eq!(held(daemon.0.id()).as_deref(), Some(dir.as_path()), "the parent let it go");
}

/// The host's root shared whole (`--shared-dir /`, as virtiofsd allows): the sandbox sets up
/// without a pivot (pivot_root cannot make the root its own new root), the guest reaches the
/// share's files by their host paths, and the `/proc` it reaches is the daemon's descriptor
/// directory alone (no `self`, no `1/mem` of the daemon).
#[test]
fn the_root_shared_whole_is_served_in_the_sandbox() {
    if !support::needs_root() {
        return;
    }
    let dir = scratch("root-share");
    let mut command = daemon::fsd();
    command.args(["--socket-path", dir.join("root.sock").to_str().expect("utf-8")]);
    command.args(["--shared-dir", "/"]);
    let log = std::fs::File::create(dir.join("root.log")).expect("log");
    let child = command.stdin(Stdio::null()).stderr(log).spawn().expect("starts");
    let _daemon = Running(child);
    wait_until(|| dir.join("root.sock").exists());
    let mut guest = GuestFs::connect(dir.join("root.sock")).expect("connects");
    let mut node = 1;
    for name in dir.join("share/inside").components().skip(1) {
        let name = name.as_os_str().to_str().expect("utf-8");
        node = guest.lookup(node, name).unwrap_or_else(|e| panic!("{name}: {e:?}")).nodeid;
    }
    let fh = guest.open(node, 0).expect("open");
    assert_eq!(guest.read(node, fh, 0, 64).expect("read"), b"in the share");
    let proc = guest.lookup(1, "proc").expect("proc").nodeid;
    assert!(guest.lookup(proc, "self").is_err(), "the daemon's /proc is in the guest's reach");
}

/// A sandboxed daemon a signal ends (here SIGKILL, as the OOM killer sends; a system call the
/// filter forbids sends SIGSYS) is named in the log by the parent, whose exit status alone
/// says only 128 and the number.
#[test]
fn a_sandboxed_daemon_ended_by_a_signal_is_named_in_the_log() {
    if !support::needs_root() {
        return;
    }
    let dir = scratch("killed");
    let mut daemon = start(&dir, &[]);
    serves(&dir);
    let server = server_pid(&daemon, true);
    let pid = rustix::process::Pid::from_raw(server as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
    let status = daemon.0.wait().expect("the parent exits");
    assert_eq!(status.code(), Some(128 + 9));
    let log = std::fs::read_to_string(dir.join("vhost.log")).expect("log");
    assert!(log.contains("ended by signal 9"), "{log}");
}
