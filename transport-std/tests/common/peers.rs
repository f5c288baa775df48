//! Other projects' back-ends as the tests start them: QEMU's qemu-storage-daemon exporting a
//! disk image over vhost-user-blk, and virtiofsd where `.ci/run` installs it. Each is `None`
//! where it is not installed, so a test can say so and end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A qemu-storage-daemon serving `disk` on `socket`; ended when dropped.
pub struct StorageDaemon {
    child: Child,
    pub socket: PathBuf,
}

impl StorageDaemon {
    /// Starts one and waits until it listens; `None` when qemu-storage-daemon is not installed.
    pub fn start(disk: &Path, socket: PathBuf) -> Option<Self> {
        Command::new("qemu-storage-daemon").arg("--version").output().ok()?;
        let child = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!("driver=file,node-name=disk,filename={}", disk.display()))
            .arg("--export")
            .arg(format!(
                "type=vhost-user-blk,id=exp,node-name=disk,addr.type=unix,addr.path={},writable=on",
                socket.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-storage-daemon starts");
        // The socket file appears when it is bound, a moment before it listens: a connection
        // refused in between is no answer. A probe that connects and leaves is.
        let listening = || std::os::unix::net::UnixStream::connect(&socket).is_ok();
        assert!(super::eventually(listening), "qemu-storage-daemon listens");
        Some(Self { child, socket })
    }
}

impl Drop for StorageDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// virtiofsd from crates.io, where `.ci/run` installs it (`VHU_VIRTIOFSD` overrides).
pub fn virtiofsd() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("VHU_VIRTIOFSD") {
        return Some(path.into());
    }
    // The test binary is target/<profile>/deps/<name>; peers are installed in target/peers.
    let exe = std::env::current_exe().ok()?;
    let peer = exe.parent()?.parent()?.parent()?.join("peers/bin/virtiofsd");
    peer.exists().then_some(peer)
}
