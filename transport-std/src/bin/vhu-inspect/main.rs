//! `vhu-inspect`: what a vhost-user back-end offers, and whether it keeps the protocol's rules.
//!
//! Point it at a back-end's socket (or give the command that starts one, `{socket}` in it) and
//! it asks, as a front-end would, for the virtio and protocol features (printed by name), the
//! queue count, the largest ring size, memory slots, config space, shared-memory regions and
//! device-state support;
//! then runs conformance checks, each naming the spec section it comes from: REPLY_ACK with and
//! without the GET_* messages a restoring front-end skips, an unknown and a malformed request
//! refused with the connection surviving, a ring's base kept across a start and a stop, and a
//! new front-end served after one left.
//!
//! ```text
//! vhu-inspect [--json] SOCKET
//! vhu-inspect [--json] --spawn 'COMMAND {socket}' SOCKET
//! ```
//!
//! Exit status: 0 when no check failed, 1 when one did, 2 when the back-end cannot be asked.

mod checks;
mod probe;
mod raw;
mod report;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use target::Target;

const USAGE: &str = "usage: vhu-inspect [--json] [--spawn 'COMMAND {socket}'] SOCKET";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut json, mut spawn, mut socket) = (false, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--spawn" => match args.next() {
                Some(command) => spawn = Some(command),
                None => return usage(),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if socket.is_none() && !arg.starts_with('-') => socket = Some(PathBuf::from(arg)),
            _ => return usage(),
        }
    }
    let Some(socket) = socket else { return usage() };
    let shown = socket.display().to_string();
    let mut target = Target::new(socket, spawn);
    let stream = match target.connect() {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("vhu-inspect: {e}");
            return ExitCode::from(2);
        }
    };
    let mut probing = match raw::Raw::new(stream, checks::WAIT) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("vhu-inspect: {e}");
            return ExitCode::from(2);
        }
    };
    let offers = match probe::probe(&mut probing) {
        Ok(offers) => offers,
        Err(e) => {
            eprintln!("vhu-inspect: {shown}: {e}");
            return ExitCode::from(2);
        }
    };
    drop(probing);
    let results = checks::run(&mut target, &offers);
    if json {
        print!("{}", report::json(&shown, &offers, &results));
    } else {
        print!("{}", report::table(&shown, &offers, &results));
    }
    if results.iter().any(|c| c.outcome == checks::Outcome::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
