//! The back-end under inspection: a socket to connect to, and optionally the command that
//! starts it (`{socket}` replaced), run anew for every connection a check needs (virtiofsd and
//! vhu-fsd serve one front-end and exit).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started back-end may take to listen.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Target {
    pub(crate) socket: PathBuf,
    spawn: Option<String>,
    child: Option<Child>,
}

impl Target {
    pub(crate) fn new(socket: PathBuf, spawn: Option<String>) -> Self {
        Self { socket, spawn, child: None }
    }

    /// Whether a new process is started when the last one left.
    pub(crate) fn respawns(&self) -> bool {
        self.spawn.is_some()
    }

    /// A new connection: to the back-end at the socket, or, with a command, to a new process of
    /// it (the last one is given two seconds to leave on its own, then ended).
    pub(crate) fn connect(&mut self) -> Result<UnixStream, String> {
        if let Some(command) = self.spawn.clone() {
            self.reap();
            let line = command.replace("{socket}", &self.socket.display().to_string());
            let _ = std::fs::remove_file(&self.socket);
            let child = Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("exec {line}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting `{line}`: {e}"))?;
            self.child = Some(child);
        }
        let deadline = Instant::now() + LISTEN_WAIT;
        loop {
            match UnixStream::connect(&self.socket) {
                // A back-end that serves one front-end at a time turns a new one away until it
                // has seen the last one leave: try again then.
                Ok(stream) if turned_away(&stream) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(stream) => return Ok(stream),
                Err(e) if Instant::now() > deadline || self.spawn.is_none() => {
                    return Err(format!("connecting to {}: {e}", self.socket.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Ends a process this tool started.
    pub(crate) fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Whether the back-end closed `stream` right after accepting it (within 200 ms, before a
/// word was said).
fn turned_away(stream: &UnixStream) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(stream, PollFlags::IN | PollFlags::RDHUP)];
    let wait = Timespec { tv_sec: 0, tv_nsec: 200_000_000 };
    if !matches!(poll(&mut fds, Some(&wait)), Ok(1)) {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!(rustix::net::recv(stream, &mut byte, rustix::net::RecvFlags::PEEK), Ok((0, _)))
}
