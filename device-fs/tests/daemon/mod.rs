//! Shared helpers for the tests that run the `vhu-fsd` binary: a scratch directory with a
//! share, starting the daemon on a socket in it, waiting, and killing it when a test ends.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon, ready to be given arguments.
pub fn fsd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vhu-fsd"))
}

/// A fresh `<tmp>/<prefix>-<pid>-<name>` with an empty `share/` in it.
pub fn scratch(prefix: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("share")).expect("scratch directory");
    dir
}

/// Polls `done` every 20 ms for at most 10 s; whether it came true.
pub fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Kills the daemon when the test ends, passed or not.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dir/vhost.sock`, where [`start`] has the daemon listen.
pub fn socket(dir: &Path) -> PathBuf {
    socket_named(dir, "vhost")
}

/// `dir/<name>.sock`.
pub fn socket_named(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// Starts the daemon on [`socket`]`(dir)` sharing `dir/share`, with `extra` arguments, and
/// waits until it listens.
pub fn start(dir: &Path, extra: &[&str]) -> Running {
    start_program(fsd(), dir, "vhost", extra)
}

/// Starts `program` (vhu-fsd or a back-end with its options) on [`socket_named`]`(dir, name)`
/// sharing `dir/share`, with `extra` arguments and its errors in `dir/<name>.log`, and waits
/// until it listens.
pub fn start_program(mut program: Command, dir: &Path, name: &str, extra: &[&str]) -> Running {
    let socket = socket_named(dir, name);
    let child = program
        .args(["--socket-path", socket.to_str().expect("utf-8")])
        .args(["--shared-dir", dir.join("share").to_str().expect("utf-8")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file"))
        .spawn()
        .expect("starts");
    wait_for(|| socket.exists());
    Running(child)
}

/// Passes `fd` to the child as descriptor `at`, open across exec.
pub fn pass_fd(command: &mut Command, fd: std::os::fd::OwnedFd, at: i32) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) run, on
    // descriptors this process owns; `fd` is kept alive by the closure until the spawn.
    unsafe {
        command.pre_exec(move || {
            let _keep = &fd;
            if libc::dup2(raw, at) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::fcntl(at, libc::F_SETFD, 0);
            Ok(())
        });
    }
}
