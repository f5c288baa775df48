//! `vhu-fs-bench` stopped by a signal: the back-end it is measuring is killed, its share (data
//! files on `/dev/shm`, which is memory) is removed, and it exits with 128 plus the signal.

mod daemon;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use daemon::{scratch, wait_for};
use rustix::process::{kill_process, Pid, Signal};

/// An empty directory of this test's own for the bench to lay its share out in.
fn parent(name: &str) -> PathBuf {
    let dir = scratch("vhu-fs-bench-signals", name).join("bench");
    std::fs::create_dir(&dir).expect("test directory");
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

/// The pid of each child of `pid` (from `/proc/*/stat`).
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": the command name may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        if rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            found.push(child);
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
    let mut status = None;
    assert!(
        wait_for(|| {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        }),
        "the bench exits promptly after the signal"
    );
    status.expect("exited")
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("test directory").next().is_none()
}

#[test]
fn a_terminated_bench_kills_its_back_end_and_removes_its_share() {
    let parent = parent("term");
    let mut bench = bench(&parent);
    // The back-end starts once the share is laid out.
    let mut backend = None;
    assert!(
        wait_for(|| {
            backend = children(bench.id()).first().copied();
            backend.is_some()
        }),
        "the bench starts its back-end"
    );
    let backend = backend.expect("found");
    assert!(!is_empty(&parent), "the share is laid out under --dir");
    signal(&bench, Signal::TERM);
    assert_eq!(exit_of(&mut bench).code(), Some(128 + 15));
    assert!(is_empty(&parent), "the share is removed");
    assert!(wait_for(|| dead(backend)), "the back-end is killed");
    let _ = std::fs::remove_dir_all(parent.parent().expect("scratch"));
}

#[test]
fn a_bench_interrupted_while_laying_out_its_share_leaves_nothing() {
    let parent = parent("int");
    let mut bench = bench(&parent);
    assert!(wait_for(|| !is_empty(&parent)), "the share's directory appears");
    signal(&bench, Signal::INT);
    assert_eq!(exit_of(&mut bench).code(), Some(128 + 2));
    assert!(is_empty(&parent), "the share, whole or in part, is removed");
    let _ = std::fs::remove_dir_all(parent.parent().expect("scratch"));
}
