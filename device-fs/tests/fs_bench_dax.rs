//! `vhu-fs-bench --dax`: against a back-end with a DAX window, the data workloads go through
//! the window (every read checked against the file's pattern, so a range mapped at the wrong
//! place fails the run) with only mapping requests reaching the back-end; against one without
//! a window they go through READ and WRITE as always.

mod daemon;

use std::process::Command;

use daemon::scratch;

/// Runs the bench once on `backend` (a vhu-fsd command line) and returns its stderr.
fn bench(name: &str, backend_args: &str) -> String {
    let dir = scratch("vhu-fs-bench-dax", name).join("bench");
    std::fs::create_dir(&dir).expect("test directory");
    let fsd = env!("CARGO_BIN_EXE_vhu-fsd");
    let backend = format!(
        "vhu={fsd} --socket-path {{socket}} --shared-dir {{shared}} --sandbox none {backend_args}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vhu-fs-bench"))
        .arg("--dir")
        .arg(&dir)
        .args(["--dax", "--backend", &backend, "--rounds", "1", "--requests", "300"])
        .args(["--workload", "seq-read-1m", "--workload", "rand-read-4k"])
        .args(["--workload", "rand-write-4k", "--workload", "lookup-getattr"])
        .output()
        .expect("vhu-fs-bench runs");
    let _ = std::fs::remove_dir_all(dir.parent().expect("scratch"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "every access checked out: {stderr}");
    stderr
}

/// The mapping requests the bench reports for `workload`.
fn mappings(stderr: &str, workload: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.contains(&format!("{workload}: ")))?;
    line.split_whitespace().rev().nth(2)?.parse().ok()
}

#[test]
fn data_workloads_go_through_the_window_when_there_is_one() {
    // 8 MiB: four ranges of the 64 MiB file at once, so ranges are removed and mapped again.
    let stderr = bench("window", "--dax-window 8M");
    for workload in ["seq-read-1m", "rand-read-4k", "rand-write-4k"] {
        let sent = mappings(&stderr, workload);
        assert!(sent.is_some_and(|n| n > 0), "{workload} mapped ranges: {stderr}");
    }
    assert_eq!(mappings(&stderr, "lookup-getattr"), None, "metadata sends its own requests");
    let without = bench("none", "");
    assert_eq!(mappings(&without, "seq-read-1m"), None, "no window, no mapping: {without}");
}
