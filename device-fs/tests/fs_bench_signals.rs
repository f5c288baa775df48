//! `vhu-fs-bench` stopped by a signal: the back-end it is measuring is killed, its share (data
//! files on `/dev/shm`, which is memory) is removed, and it exits with 128 plus the signal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// An empty directory of this test's own for the bench to lay its share out in.
fn parent(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vhu-fs-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    dir
}

/// The bench, its share under `parent`, measuring a "back-end" that never listens.
fn bench(parent: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vhu-fs-bench"))
        .arg("--dir")
        .arg(parent)
        .args(["--backend", "sleep 86399", "--workload", "lookup-getattr", "--rounds", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting vhu-fs-bench")
}

fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The pid and state of each child of `pid` (from `/proc/*/stat`).
fn children(pid: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": the command name may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            found.push((child, state));
        }
    }
    found
}

/// Whether process `pid` is gone (or a zombie: dead, waiting to be reaped by its new parent).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
    }
}

fn signal(child: &Child, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("non-zero pid");
    kill_process(pid, signal).expect("kill");
}

fn exit_of(child: &mut Child) -> ExitStatus {
    eventually(Duration::from_secs(10), || child.try_wait().expect("try_wait"))
        .expect("the bench exits promptly after the signal")
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("test directory").next().is_none()
}

#[test]
fn a_terminated_bench_kills_its_back_end_and_removes_its_share() {
    let parent = parent("term");
    let mut bench = bench(&parent);
    // The back-end starts once the share is laid out.
    let backend = eventually(Duration::from_secs(120), || children(bench.id()).first().copied())
        .expect("the bench starts its back-end")
        .0;
    assert!(!is_empty(&parent), "the share is laid out under --dir");
    signal(&bench, Signal::TERM);
    assert_eq!(exit_of(&mut bench).code(), Some(128 + 15));
    assert!(is_empty(&parent), "the share is removed");
    assert!(
        eventually(Duration::from_secs(5), || dead(backend).then_some(())).is_some(),
        "the back-end is killed"
    );
    let _ = std::fs::remove_dir_all(&parent);
}

#[test]
fn a_bench_interrupted_while_laying_out_its_share_leaves_nothing() {
    let parent = parent("int");
    let mut bench = bench(&parent);
    eventually(Duration::from_secs(30), || (!is_empty(&parent)).then_some(()))
        .expect("the share's directory appears");
    signal(&bench, Signal::INT);
    assert_eq!(exit_of(&mut bench).code(), Some(128 + 2));
    assert!(is_empty(&parent), "the share, whole or in part, is removed");
    let _ = std::fs::remove_dir_all(&parent);
}
