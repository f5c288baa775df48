//! vhu-fsd started exactly as each launcher starts virtiofsd — libvirt (new and old option
//! forms, privileged and session), Kata Containers (Go runtime and runtime-rs), cloud-hypervisor
//! and podman — on an inherited listening descriptor where the launcher passes one, then driven
//! as a guest would: FUSE INIT, LOOKUP, OPEN and READ through vhu's own front-end client.
//!
//! Each row's argv is the launcher's, with its paths and numbers filled in.

mod daemon;

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon::{pass_fd, wait_for, Running};
use vhu_device_fs::guest::GuestFs;

const CONTENT: &[u8] = b"served through the launcher's command line\n";

/// One launcher's way of starting the daemon.
struct Launcher {
    name: &'static str,
    /// The arguments; `{dir}`, `{sock}` and `{fd}` are filled in.
    argv: &'static [&'static str],
    /// Descriptor number the listening socket is passed as (`--fd`), if any.
    fd: Option<i32>,
    /// A locked pid file is inherited at this number (libvirt leaves it open across exec).
    pidfile_fd: Option<i32>,
    /// The share's directory name (some hold a comma).
    dir_name: &'static str,
    /// Run from the share with `--shared-dir .`.
    in_share: bool,
    /// Wait for the readiness line on stderr before connecting (Kata's runtime-rs does).
    wait_for_line: bool,
    /// Run as this uid/gid (an unprivileged launcher) when the test runs as root.
    as_user: Option<u32>,
}

const fn row(name: &'static str, argv: &'static [&'static str]) -> Launcher {
    Launcher {
        name,
        argv,
        fd: None,
        pidfile_fd: None,
        dir_name: "share",
        in_share: false,
        wait_for_line: false,
        as_user: None,
    }
}

fn launchers() -> Vec<Launcher> {
    vec![
        // libvirt's form for a back-end listing "separate-options" (virtiofsd), no tuning.
        Launcher {
            fd: Some(27),
            pidfile_fd: Some(9),
            ..row("libvirt", &["--fd={fd}", "--shared-dir", "{dir}"])
        },
        Launcher {
            fd: Some(27),
            pidfile_fd: Some(9),
            ..row(
                "libvirt cache none, sandbox namespace",
                &[
                    "--fd={fd}",
                    "--shared-dir",
                    "{dir}",
                    "--cache",
                    "never",
                    "--sandbox",
                    "namespace",
                ],
            )
        },
        Launcher {
            fd: Some(31),
            pidfile_fd: Some(12),
            dir_name: "with,comma",
            ..row(
                "libvirt cache always, sandbox chroot, xattr",
                &[
                    "--fd={fd}",
                    "--shared-dir",
                    "{dir}",
                    "--cache",
                    "always",
                    "--sandbox",
                    "chroot",
                    "--xattr",
                ],
            )
        },
        // libvirt 11's <readonly/>.
        Launcher {
            fd: Some(27),
            pidfile_fd: Some(9),
            ..row("libvirt readonly", &["--fd={fd}", "--shared-dir", "{dir}", "--readonly"])
        },
        // libvirt's form for vhu-fsd's capabilities (no "separate-options"): -o, commas
        // doubled, lock settings passed.
        Launcher {
            fd: Some(27),
            pidfile_fd: Some(9),
            dir_name: "old,form",
            ..row(
                "libvirt -o",
                &[
                    "--fd={fd}",
                    "-o",
                    "source={dir,,},cache=none,sandbox=chroot,xattr,flock,posix_lock",
                ],
            )
        },
        // Session libvirt: the daemon runs as the user, ids mapped to it alone.
        Launcher {
            fd: Some(27),
            as_user: Some(65534),
            ..row(
                "libvirt session",
                &[
                    "--fd={fd}",
                    "--shared-dir",
                    "{dir}",
                    "--uid-map=:0:65534:1:",
                    "--gid-map=:0:65534:1:",
                ],
            )
        },
        // Kata's Go runtime (virtcontainers/virtiofsd.go), with its default extra arguments;
        // the socket is its child's descriptor 3.
        Launcher {
            fd: Some(3),
            ..row(
                "Kata Go runtime",
                &[
                    "--syslog",
                    "-o",
                    "cache=auto",
                    "-o",
                    "no_posix_lock",
                    "-o",
                    "source={dir}",
                    "--fd={fd}",
                    "-f",
                    "--thread-pool-size=1",
                    "--announce-submounts",
                ],
            )
        },
        Launcher {
            wait_for_line: true,
            ..row(
                "Kata runtime-rs",
                &[
                    "--socket-path",
                    "{sock}",
                    "--shared-dir",
                    "{dir}",
                    "--cache",
                    "never",
                    "-o",
                    "announce_submounts",
                ],
            )
        },
        row(
            "cloud-hypervisor tests",
            &[
                "--shared-dir",
                "{dir}",
                "--socket-path",
                "{sock}",
                "--cache",
                "never",
                "--tag",
                "myfs",
            ],
        ),
        Launcher {
            in_share: true,
            ..row(
                "podman machine",
                &[
                    "--sandbox",
                    "none",
                    "--socket-path",
                    "{sock}",
                    "--shared-dir",
                    ".",
                    "--seccomp=none",
                ],
            )
        },
    ]
}

fn scratch(launcher: &Launcher, i: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vhu-launch-{}-{i}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(launcher.dir_name)).expect("scratch directory");
    dir
}

fn run(launcher: &Launcher, i: usize) -> Result<(), String> {
    let root = rustix::process::geteuid().is_root();
    if launcher.as_user.is_some() && !root {
        return Ok(());
    }
    let scratch = scratch(launcher, i);
    let share = scratch.join(launcher.dir_name);
    std::fs::write(share.join("hello"), CONTENT).expect("content");
    let sock = scratch.join("vhost.sock");
    if let Some(uid) = launcher.as_user {
        for path in [&scratch, &share] {
            std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
        }
        std::os::unix::fs::chown(share.join("hello"), Some(uid), Some(uid)).expect("chown");
    }
    let dir = share.to_str().expect("utf-8");
    let fill = |arg: &str| {
        arg.replace("{dir,,}", &dir.replace(',', ",,"))
            .replace("{dir}", dir)
            .replace("{sock}", sock.to_str().expect("utf-8"))
            .replace("{fd}", &launcher.fd.unwrap_or(-1).to_string())
    };
    let mut command = match launcher.as_user {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into()]);
            c.arg(env!("CARGO_BIN_EXE_vhu-fsd"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_vhu-fsd")),
    };
    command.args(launcher.argv.iter().map(|a| fill(a)));
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    if launcher.in_share {
        command.current_dir(&share);
    }
    let mut listener_path = None;
    if let Some(at) = launcher.fd {
        // The launcher binds and listens; the daemon only accepts.
        let listener = UnixListener::bind(&sock).expect("bind");
        if let Some(uid) = launcher.as_user {
            std::os::unix::fs::chown(&sock, Some(uid), Some(uid)).expect("chown socket");
        }
        pass_fd(&mut command, OwnedFd::from(listener), at);
        listener_path = Some(sock.clone());
    }
    let pidfile = scratch.join("daemon.pid");
    if let Some(at) = launcher.pidfile_fd {
        let file = std::fs::File::create(&pidfile).expect("pid file");
        pass_fd(&mut command, OwnedFd::from(file), at);
    }
    let mut child = command.spawn().map_err(|e| format!("spawn: {e}"))?;
    // Only the daemon holds the listening socket now.
    drop(command);
    let stderr = child.stderr.take().expect("stderr");
    let pid = child.id();
    let mut daemon = Running(child);
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    if launcher.wait_for_line {
        let ready = loop {
            match lines.recv_timeout(Duration::from_secs(10)) {
                Ok(line) => {
                    let ready = line.contains("Waiting for vhost-user socket connection");
                    seen.push(line);
                    if ready {
                        break true;
                    }
                }
                Err(_) => break false,
            }
        };
        if !ready {
            return Err(format!("no readiness line on stderr: {seen:?}"));
        }
    } else if listener_path.is_none() && !wait_for(|| sock.exists()) {
        return Err("the socket never appeared".into());
    }
    let said = |e: String| {
        let lines: Vec<String> = seen.iter().cloned().chain(lines.try_iter()).collect();
        format!("{e}; stderr: {lines:?}")
    };
    let mut guest = GuestFs::connect(&sock).map_err(|e| said(format!("connect: {e}")))?;
    let entry = guest.lookup(1, "hello").map_err(|e| said(e.to_string()))?;
    let fh = guest.open(entry.nodeid, 0).map_err(|e| said(e.to_string()))?;
    let data = guest.read(entry.nodeid, fh, 0, 4096).map_err(|e| said(e.to_string()))?;
    if data != CONTENT {
        return Err(format!("read {data:?}"));
    }
    if let Some(at) = launcher.pidfile_fd {
        let held = std::fs::read_link(format!("/proc/{pid}/fd/{at}"));
        if held.ok().as_deref() != Some(pidfile.as_path()) {
            return Err(format!("the inherited descriptor {at} was closed"));
        }
    }
    drop(guest);
    // The front-end hung up: the daemon exits cleanly, and removes a socket it created.
    let exited = wait_for(|| matches!(daemon.0.try_wait(), Ok(Some(_))));
    let status = daemon.0.try_wait().ok().flatten();
    seen.extend(lines.try_iter());
    if !exited || !status.is_some_and(|s| s.success()) {
        return Err(format!("did not exit cleanly ({status:?}): {seen:?}"));
    }
    if listener_path.is_none()
        && (sock.exists() || Path::new(&format!("{}.pid", sock.display())).exists())
    {
        return Err("the socket or its pid file was left behind".into());
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

#[test]
fn every_launchers_command_line_serves_a_guest() {
    let failures: Vec<String> = launchers()
        .iter()
        .enumerate()
        .filter_map(|(i, launcher)| {
            run(launcher, i).err().map(|e| format!("{}: {e}", launcher.name))
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
