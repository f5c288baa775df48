//! One benchmark run: start the back-end, mount, run the workload, reap the back-end; and the
//! medians of several.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vhu_device_fs::fuse::abi::{CreateIn, GetattrIn, OpenOut, ReleaseIn};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::guest::{GuestError, GuestFs};
use zerocopy::{FromBytes, IntoBytes};

/// Files the lookup workload cycles through.
const FILES: u32 = 100;
/// The guest user of the workloads.
const GUEST_USER: (u32, u32) = (1000, 1000);

/// A workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Workload {
    /// LOOKUP and GETATTR of existing files.
    LookupGetattr,
    /// CREATE, RELEASE and UNLINK of a new file.
    CreateUnlink,
}

impl Workload {
    /// Requests one iteration sends.
    pub(crate) fn requests(self) -> u32 {
        match self {
            Self::LookupGetattr => 2,
            Self::CreateUnlink => 3,
        }
    }
}

/// A share laid out for the workloads, removed on drop.
pub(crate) struct Share {
    dir: PathBuf,
}

impl Share {
    pub(crate) fn new(_: Workload) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vhu-fs-bench-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("share"))?;
        for i in 0..FILES {
            std::fs::write(dir.join(format!("share/f{i}")), b"bench")?;
        }
        // The guest user creates its files here.
        std::fs::set_permissions(dir.join("share"), std::fs::Permissions::from_mode(0o777))?;
        Ok(Self { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("share")
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Figures {
    /// Requests per second of the workload.
    pub(crate) rate: f64,
    /// Back-end CPU (user + system, children included) per request, in microseconds.
    pub(crate) cpu_us: f64,
}

/// Runs `workload` once against a fresh back-end started by `command`.
pub(crate) fn once(
    command: &str,
    share: &Share,
    workload: Workload,
    iterations: u32,
) -> Result<Figures, String> {
    let socket = share.dir.join("vhost.sock");
    let line = command
        .replace("{socket}", &socket.display().to_string())
        .replace("{shared}", &share.path().display().to_string());
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {line}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the back-end: {e}"))?;
    let pid = child.id();
    let result = wait_for(&socket).and_then(|()| drive(&socket, workload, iterations));
    let cpu = reap(pid, result.is_err());
    let (elapsed, requests) = result?;
    let cpu = cpu?;
    Ok(Figures {
        rate: f64::from(requests) / elapsed.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / f64::from(requests),
    })
}

fn wait_for(socket: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err(format!("{} never appeared", socket.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Mounts and runs the workload; returns its time and request count.
fn drive(socket: &Path, workload: Workload, iterations: u32) -> Result<(Duration, u32), String> {
    let fail = |e: GuestError| e.to_string();
    let mut guest = GuestFs::connect(socket).map_err(fail)?;
    guest.set_caller(GUEST_USER.0, GUEST_USER.1);
    let start = Instant::now();
    for i in 0..iterations {
        match workload {
            Workload::LookupGetattr => {
                let entry = guest.lookup(1, &format!("f{}", i % FILES)).map_err(fail)?;
                guest
                    .call(Opcode::Getattr, entry.nodeid, GetattrIn::default().as_bytes())
                    .map_err(fail)?;
            }
            Workload::CreateUnlink => {
                let name = format!("new{i}\0");
                let create = CreateIn { flags: 0o101, mode: 0o100644, umask: 0o022, open_flags: 0 };
                let body = [create.as_bytes(), name.as_bytes()].concat();
                let reply = guest.call(Opcode::Create, 1, &body).map_err(fail)?;
                let node = u64::read_from_prefix(&reply).map_err(|_| "short CREATE reply")?.0;
                let open = reply.get(128..).and_then(|r| OpenOut::read_from_prefix(r).ok());
                let fh = open.ok_or("short CREATE reply")?.0.fh;
                let release = ReleaseIn { fh, ..ReleaseIn::default() };
                guest.call(Opcode::Release, node, release.as_bytes()).map_err(fail)?;
                guest.call(Opcode::Unlink, 1, name.as_bytes()).map_err(fail)?;
            }
        }
    }
    Ok((start.elapsed(), iterations * workload.requests()))
}

/// Waits for the back-end to leave (it does once the front-end hangs up; `kill` ends it at
/// once) and returns the CPU time it and the children it reaped used.
fn reap(pid: u32, kill: bool) -> Result<Duration, String> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| "pid out of range")?;
    if kill {
        // SAFETY: kill takes two integers and touches no memory.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes for the duration of the call.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if got != pid {
        return Err(format!("waiting for the back-end: {}", std::io::Error::last_os_error()));
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(time(usage.ru_utime) + time(usage.ru_stime))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median requests/s and CPU per request.
pub(crate) fn medians(figures: &[Figures]) -> (f64, f64) {
    (
        median(figures.iter().map(|f| f.rate).collect()),
        median(figures.iter().map(|f| f.cpu_us).collect()),
    )
}

/// Medians of the round-by-round ratios a/b.
pub(crate) fn ratio_medians(a: &[Figures], b: &[Figures]) -> (f64, f64) {
    let pairs = a.iter().zip(b);
    let rate = median(pairs.clone().map(|(a, b)| a.rate / b.rate).collect());
    let cpu = median(pairs.map(|(a, b)| a.cpu_us / b.cpu_us).collect());
    (rate, cpu)
}
