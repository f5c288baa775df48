//! A brief busy wait before a blocking one, on the control path: the back-end waiting for the
//! front-end's next request, the client waiting for a reply. Its length also bounds how long a
//! request queue polls its ring before it sleeps (`virtq::RingPoll`).
//!
//! vhost-user's control traffic comes in bursts of request and reply (a VMM sets up a device
//! with dozens of round trips, each waiting for the last), and on a busy or virtualized host
//! putting a thread to sleep and waking it costs far more than the exchange itself — twice per
//! round trip. Checking the sockets without blocking for [`SPIN`] first catches the answer of a
//! peer that is awake; a quiet connection costs one spin per wait. There is no spinning where it
//! could only hurt: on a single CPU the peer needs the CPU the spin holds. `VHU_SPIN_US` sets
//! the spin in microseconds (at most 1000), `0` turning it off.
//!
//! This module owns only the waiting; what is read and when a wait is due are its callers'.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, Timespec};
use rustix::io::Errno;

/// How long a side checks its sockets before it sleeps, unless [`SPIN_ENV`] says otherwise:
/// enough for an awake peer to answer a request, little next to the milliseconds a quiet
/// connection waits.
pub const SPIN: Duration = Duration::from_micros(50);

/// The environment variable that sets the spin in microseconds (`0`: never spin), read once.
pub const SPIN_ENV: &str = "VHU_SPIN_US";

/// The longest spin [`SPIN_ENV`] may ask for: a spin is a moment, never a wait.
pub const MAX_SPIN: Duration = Duration::from_millis(1);

/// Polls `fds` without blocking until one is ready or the spin ([`SPIN`]) passed — never
/// longer than `limit`, what is left of the caller's own deadline — and says whether one is
/// (their `revents` then tell which). Returns `false` at once on a single-CPU machine or when
/// spinning is off.
pub fn until_ready(fds: &mut [PollFd<'_>], limit: Option<Duration>) -> bool {
    let Some(spin) = spin() else { return false };
    let spin = limit.map_or(spin, |limit| spin.min(limit));
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    let start = Instant::now();
    loop {
        match poll(fds, Some(&now)) {
            Ok(ready) if ready > 0 => return true,
            Ok(_) | Err(Errno::INTR) => {}
            // The blocking wait that follows reports it.
            Err(_) => return false,
        }
        if start.elapsed() >= spin {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// The CPUs this process may use (its affinity, within its cgroup's quota), found once.
///
/// Finding them reads `/proc/self` and the cgroup file system by path: a daemon that then
/// changes its root to a directory someone else fills (a sandbox rooted in a guest's share)
/// calls this first, so it never opens a file there a guest made, such as a FIFO that would
/// block the open for good.
pub fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The spin: [`SPIN`], or what [`SPIN_ENV`] says; none on a single CPU or when turned off. The
/// request queues' polling ([`crate::virtq::RingPoll`]) never polls longer either.
pub fn spin() -> Option<Duration> {
    static SPIN_FOR: OnceLock<Option<Duration>> = OnceLock::new();
    *SPIN_FOR.get_or_init(|| {
        let many = cpus() > 1;
        let spin = match std::env::var(SPIN_ENV) {
            Ok(value) => value.trim().parse().map_or(SPIN, Duration::from_micros).min(MAX_SPIN),
            Err(_) => SPIN,
        };
        (many && !spin.is_zero()).then_some(spin)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use rustix::event::{PollFd, PollFlags};

    use super::until_ready;

    #[test]
    fn a_ready_socket_ends_the_spin_and_a_quiet_one_does_not_hold_it_forever() {
        let (mut ours, theirs) = UnixStream::pair().expect("socket pair");
        let mut fds = [PollFd::new(&theirs, PollFlags::IN)];
        // Nothing to read: the spin gives up (at once on a single CPU) and says so.
        assert!(!until_ready(&mut fds, None));
        // Nor beyond a caller's deadline that has passed.
        assert!(!until_ready(&mut fds, Some(std::time::Duration::ZERO)));
        ours.write_all(b"x").expect("write");
        let mut fds = [PollFd::new(&theirs, PollFlags::IN)];
        let many = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
        let off = std::env::var(super::SPIN_ENV).is_ok_and(|v| v.trim() == "0");
        assert_eq!(until_ready(&mut fds, None), many && !off);
        if many && !off {
            assert!(fds[0].revents().contains(PollFlags::IN));
        }
    }
}
