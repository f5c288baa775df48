//! `vhu-fs-bench`: measures virtio-fs back-ends without a VM. It drives any vhost-user-fs
//! back-end through its socket as a Linux guest's driver would — vhu's own front-end client,
//! memfd guest memory, N request queues, FUSE INIT with MAX_PAGES, requests split to the
//! negotiated size — keeping a chosen number of requests in flight per queue (a driver waiting
//! for a reply watches its ring for a while first, as KVM polls a halted vCPU), and reports
//! requests/s, MiB/s, latency p50/p99 and the back-end's CPU per 1 000 requests. With `--host`
//! the same workloads run as system calls on the directory itself: the floor. With `--dax` the
//! data workloads go through a back-end's DAX window where it has one (`dax`).
//!
//! Each round starts every back-end afresh from its command line (`{socket}`, `{shared}` and
//! `{queues}` are filled in), in turn on the same share, so the targets are measured side by
//! side; the report gives medians over rounds and, for every target after the first, the
//! median of the round-by-round ratios first/target. A wrong reply (unique, length, an error,
//! data that is not the file's) fails the run, and so does a written file that does not hold
//! what the run's writes sent (`written`).

mod dax;
mod guest;
mod host;
mod interrupt;
mod measure;
mod share;
mod workload;
mod written;

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

use guest::Plan;
use measure::{json, medians, ratios, Entry, Summary};
use share::Share;
use workload::Workload;
use written::Written;

/// What to run.
#[derive(Debug, Parser)]
#[command(name = "vhu-fs-bench", version)]
struct Options {
    /// A back-end to measure, `NAME=COMMAND` (or just the command); repeat for several. The
    /// first is the one the ratios are of. `NAME:Q=COMMAND` drives it with Q request queues
    /// instead of `--queues` (virtiofsd serves one); a NAME ending in `+log` has dirty-page
    /// logging on for the whole run, as while a VMM migrates the guest.
    #[arg(long = "backend", value_name = "NAME=COMMAND")]
    backends: Vec<String>,
    /// Also run every workload as system calls on the directory (target `host`).
    #[arg(long)]
    host: bool,
    /// A workload; repeat for several (all of them when none is given).
    #[arg(long = "workload", value_enum)]
    workloads: Vec<Workload>,
    /// Request queues driven at once (the back-end must serve that many: `{queues}`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    queues: u16,
    /// Requests in flight per queue.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    depth: u16,
    /// Requests per run, over every queue (large I/O moves at most 1 GiB a run).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Runs of each target per workload.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Where to lay the share out (default: `/dev/shm`, else the temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// How long a queue's driver watches its used ring for a reply before it sleeps on the
    /// call eventfd, at most, in microseconds. The default is how long a KVM host polls a
    /// halted vCPU before it schedules it out (x86's `halt_poll_ns`); 0 sleeps at once, as a
    /// vCPU on a host without halt polling does.
    #[arg(long, value_name = "US", default_value_t = 200)]
    driver_poll_us: u64,
    /// Mount as `-o dax` where the back-end has a DAX window: data workloads then copy through
    /// the window, mapping its 2 MiB ranges as they are first touched, and count accesses
    /// instead of requests (on a back-end without a window they send READ and WRITE as always).
    #[arg(long)]
    dax: bool,
}

/// Something measured: a back-end's command line, or the host.
enum Target {
    Backend { name: String, command: String, queues: Option<u16>, dirty_log: bool },
    Host,
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Self::Backend { name, .. } => name,
            Self::Host => "host",
        }
    }
}

fn targets(options: &Options) -> Vec<Target> {
    let mut targets: Vec<Target> = options
        .backends
        .iter()
        .map(|spec| match spec.split_once('=') {
            Some((name, command)) if !name.contains(' ') => {
                let dirty_log = name.ends_with("+log");
                let (label, queues) = match name.split_once(':') {
                    Some((label, rest)) => {
                        let queues = rest.trim_end_matches("+log");
                        let label = if dirty_log { format!("{label}+log") } else { label.into() };
                        // A request's unique has 8 bits for its queue (as vhost-user rings).
                        (label, queues.parse().ok().filter(|q| (1..=255).contains(q)))
                    }
                    None => (name.to_string(), None),
                };
                Target::Backend { name: label, command: command.into(), queues, dirty_log }
            }
            _ => {
                let program = spec.split_whitespace().next().unwrap_or("backend");
                let name = program.rsplit('/').next().unwrap_or(program).to_string();
                Target::Backend { name, command: spec.clone(), queues: None, dirty_log: false }
            }
        })
        .collect();
    if options.host {
        targets.push(Target::Host);
    }
    targets
}

/// Starts `command` with the placeholders filled in.
fn spawn(command: &str, share: &Share, queues: u16) -> Result<Child, String> {
    let line = command
        .replace("{socket}", &share.socket().display().to_string())
        .replace("{shared}", &share.path().display().to_string())
        .replace("{queues}", &queues.to_string());
    let _ = std::fs::remove_file(share.socket());
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("exec {line}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    interrupt::start_backend(&mut command).map_err(|e| format!("starting `{line}`: {e}"))
}

/// Waits (bounded) for the back-end to listen, or to die.
fn wait_listening(child: &mut Child, share: &Share) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !share.socket().exists() {
        if let Some(status) = interrupt::try_reap(child) {
            return Err(format!("the back-end exited before listening: {status}"));
        }
        if Instant::now() > deadline {
            return Err("the back-end's socket never appeared".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Lets the back-end leave on its own (it does when the front-end hangs up), else ends it.
fn reap(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if interrupt::try_reap(&mut child).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    interrupt::kill_and_reap(&mut child);
}

fn run_once(target: &Target, share: &Share, plan: &Plan) -> Result<Summary, String> {
    let written = Written::new();
    let figures = match target {
        Target::Host => host::run(&share.path(), plan, &written)?,
        Target::Backend { command, queues, dirty_log, .. } => {
            let plan =
                Plan { queues: queues.unwrap_or(plan.queues), dirty_log: *dirty_log, ..*plan };
            let mut child = spawn(command, share, plan.queues)?;
            let result = wait_listening(&mut child, share)
                .and_then(|()| guest::run(&share.socket(), child.id(), &plan, &written));
            if result.is_err() {
                let _ = child.kill();
            }
            reap(child);
            result?
        }
    };
    if written.any() {
        written.check_and_restore(&share.path().join("wdata"))?;
    }
    Ok(figures.summary())
}

fn print_table(
    workload: Workload,
    plan: &Plan,
    rounds: u32,
    targets: &[Target],
    runs: &[Vec<Summary>],
) {
    println!(
        "\n{}: {} queue(s) x depth {}, {} requests a run, medians of {} rounds",
        workload.name(),
        plan.queues,
        plan.depth,
        plan.requests,
        rounds
    );
    println!(
        "  {:<14} {:>11} {:>9} {:>8} {:>8} {:>16}",
        "target", "requests/s", "MiB/s", "p50 us", "p99 us", "CPU ms/1k req"
    );
    for (target, runs) in targets.iter().zip(runs) {
        let m = medians(runs);
        let name = match target {
            Target::Backend { name, queues: Some(q), .. } => format!("{name} ({q}q)"),
            _ => target.name().to_string(),
        };
        println!(
            "  {:<14} {:>11.0} {:>9.1} {:>8.1} {:>8.1} {:>16.2}",
            name, m.rate, m.mib, m.p50, m.p99, m.cpu
        );
    }
    for (target, other) in targets.iter().zip(runs).skip(1) {
        let (rate, cpu) = ratios(&runs[0], other);
        let cpu = if cpu.is_finite() { format!("{cpu:.2}x") } else { "-".into() };
        println!(
            "  {} / {}: requests/s {rate:.2}x, CPU per request {cpu}",
            targets[0].name(),
            target.name()
        );
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    let targets = targets(&options);
    if targets.is_empty() {
        eprintln!("vhu-fs-bench: nothing to measure: give --backend and/or --host");
        return ExitCode::FAILURE;
    }
    if let Err(e) = interrupt::clean_up_on_termination() {
        eprintln!("vhu-fs-bench: {e}");
        return ExitCode::FAILURE;
    }
    let share = match Share::new(options.dir.as_deref()) {
        Ok(share) => share,
        Err(e) => {
            eprintln!("vhu-fs-bench: laying out the share: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workloads = if options.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        options.workloads.clone()
    };
    let mut all: Vec<(Workload, Vec<Vec<Summary>>)> = Vec::new();
    for workload in workloads {
        // Large I/O moves at most a GiB a run.
        let cap = (1u64 << 30) / u64::from(workload.request_size(1 << 20).max(4096));
        let lanes = u64::from(options.queues) * u64::from(options.depth);
        let plan = Plan {
            workload,
            queues: options.queues,
            depth: options.depth,
            requests: options.requests.min(cap).max(lanes),
            dirty_log: false,
            driver_poll: Duration::from_micros(options.driver_poll_us),
            dax: options.dax,
        };
        let mut runs = vec![Vec::new(); targets.len()];
        for round in 0..options.rounds {
            // Each round starts with the next target: none is always measured first (on a
            // share the one before warmed, or a machine the one before loaded).
            for k in 0..targets.len() {
                let i = (k + round as usize) % targets.len();
                let target = &targets[i];
                match run_once(target, &share, &plan) {
                    Ok(summary) => runs[i].push(summary),
                    Err(e) => {
                        eprintln!(
                            "vhu-fs-bench: {} on {}, round {}: {e}",
                            workload.name(),
                            target.name(),
                            round + 1
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        print_table(workload, &plan, options.rounds, &targets, &runs);
        all.push((workload, runs));
    }
    if let Some(path) = &options.json {
        let entries: Vec<Entry<'_>> = all
            .iter()
            .flat_map(|(workload, runs)| {
                targets.iter().zip(runs).map(|(target, runs)| Entry {
                    workload: workload.name(),
                    target: target.name(),
                    runs,
                })
            })
            .collect();
        let text = json(options.queues, options.depth, options.requests, &entries);
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("vhu-fs-bench: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
