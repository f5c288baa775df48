//! `vhu-fs-bench`: drives a virtio-fs back-end through its vhost-user socket as a guest would,
//! with vhu's own front-end client, and reports what a workload costs it.
//!
//! Each run starts the back-end from a command line (`{socket}` and `{shared}` are filled in),
//! mounts (FUSE INIT), runs the workload from one guest user at depth 1, disconnects, and reaps
//! the back-end to read the CPU time it and its children used (so a sandboxed daemon's forked
//! server counts). With `--vs`, a second command runs in turn with the first, round by round on
//! the same share, and the ratios are taken round by round. A wrong reply ends the run.
//!
//! Workloads: `lookup-getattr` (LOOKUP and GETATTR of existing files) and `create-unlink`
//! (CREATE, RELEASE, UNLINK as a non-root guest user, which exercises credential switching).

mod run;

use std::process::ExitCode;

use clap::Parser;

/// What to run.
#[derive(Debug, Parser)]
#[command(name = "vhu-fs-bench", version)]
struct Options {
    /// The back-end's command line; `{socket}` and `{shared}` are replaced.
    #[arg(long, value_name = "COMMAND")]
    backend: String,
    /// A second back-end command run in turn with the first; ratios are first / second.
    #[arg(long, value_name = "COMMAND")]
    vs: Option<String>,
    /// The workload.
    #[arg(long, value_enum, default_value_t = run::Workload::LookupGetattr)]
    workload: run::Workload,
    /// Workload iterations per run.
    #[arg(long, default_value_t = 20_000)]
    iterations: u32,
    /// Runs of each command.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

fn main() -> ExitCode {
    let options = Options::parse();
    let share = match run::Share::new(options.workload) {
        Ok(share) => share,
        Err(e) => {
            eprintln!("vhu-fs-bench: preparing the share: {e}");
            return ExitCode::FAILURE;
        }
    };
    let commands: Vec<&str> =
        std::iter::once(options.backend.as_str()).chain(options.vs.as_deref()).collect();
    let mut results: Vec<Vec<run::Figures>> = vec![Vec::new(); commands.len()];
    for round in 0..options.rounds {
        for (i, command) in commands.iter().enumerate() {
            match run::once(command, &share, options.workload, options.iterations) {
                Ok(figures) => results[i].push(figures),
                Err(e) => {
                    eprintln!("vhu-fs-bench: round {round}, {command}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!(
        "workload {:?}, {} iterations ({} requests) a run, {} rounds, medians:",
        options.workload,
        options.iterations,
        options.iterations * options.workload.requests(),
        options.rounds
    );
    for (command, figures) in commands.iter().zip(&results) {
        let (rate, cpu) = run::medians(figures);
        println!("  {rate:>10.0} requests/s  {cpu:>8.1} us back-end CPU per request  {command}");
    }
    if let [a, b] = &results[..] {
        let (rate, cpu) = run::ratio_medians(a, b);
        println!("  ratio first/second: requests/s {rate:.3}, CPU per request {cpu:.3}");
    }
    ExitCode::SUCCESS
}
