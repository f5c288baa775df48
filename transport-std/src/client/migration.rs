//! Moving a back-end's state as a VMM does when it migrates a guest (spec "Migrating back-end
//! state"): [`Client::save_state`] on the source, [`Client::load_state`] on the destination,
//! each over a pipe through SET_DEVICE_STATE_FD and confirmed with CHECK_DEVICE_STATE.
//!
//! The order the spec asks for is the caller's and is checked by core: every ring stopped
//! (GET_VRING_BASE) before a transfer, dirty logging ([`Client::set_log_base`],
//! [`Client::set_logging`]) while guest memory is copied before that. When the back-end answers
//! with a descriptor of its own, the transfer goes over that one instead: it must be a pipe or a
//! socket, no more state is read than a load accepts ([`MAX_STATE_SIZE`]), no wait for the
//! back-end's next bytes, or for room to write, lasts longer than the client's timeout, and the
//! whole transfer no longer than its own ([`Client::set_transfer_timeout`]: a back-end
//! trickling a byte per timeout holds a migration no longer). This module must not decide when
//! a transfer is allowed.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};
use vhu_core::message::TransferDirection;
use vhu_core::FrontendCode;

use super::{Client, ClientError};
use crate::session::transfer::is_stream;
use crate::session::MAX_STATE_SIZE;

fn io(what: &'static str) -> impl Fn(std::io::Error) -> ClientError {
    move |source| ClientError::Io { what, source }
}

impl Client {
    /// Reads the back-end's state (every ring stopped) and checks that it saved it whole.
    pub fn save_state(&mut self) -> Result<Vec<u8>, ClientError> {
        let (read, write) =
            pipe_with(PipeFlags::CLOEXEC).map_err(|e| io("creating the state pipe")(e.into()))?;
        let theirs = self.set_device_state_fd(TransferDirection::Save, write)?;
        let source = stream(theirs.unwrap_or(read))?;
        let state = read_state(&source, self.limits())?;
        drop(source);
        self.check_device_state()?;
        Ok(state)
    }

    /// Bounds a whole state transfer ([`Client::save_state`], [`Client::load_state`]); each
    /// wait in it is bounded by [`Client::set_timeout`] too.
    /// [`DEFAULT_TRANSFER_TIMEOUT`](super::DEFAULT_TRANSFER_TIMEOUT) unless set.
    pub fn set_transfer_timeout(&mut self, timeout: Duration) {
        self.io.transfer_timeout = timeout;
    }

    fn limits(&self) -> Limits {
        let whole = self.io.transfer_timeout;
        Limits { wait: self.io.timeout, whole, deadline: super::io::deadline_after(whole) }
    }

    /// Hands `state` to the back-end (every ring stopped) and checks that it took it over.
    pub fn load_state(&mut self, state: &[u8]) -> Result<(), ClientError> {
        let (read, write) =
            pipe_with(PipeFlags::CLOEXEC).map_err(|e| io("creating the state pipe")(e.into()))?;
        let theirs = self.set_device_state_fd(TransferDirection::Load, read)?;
        let sink = stream(theirs.unwrap_or(write))?;
        // A back-end that refuses the state may close its end early: what it says comes next.
        let written = write_state(&sink, state, self.limits());
        drop(sink);
        let checked = self.check_device_state();
        written?;
        checked
    }
}

/// `fd`, if it is a pipe or a socket: a regular file or a device such as `/dev/zero` would
/// never end or never wait.
fn stream(fd: OwnedFd) -> Result<OwnedFd, ClientError> {
    if is_stream(fd.as_fd()) {
        Ok(fd)
    } else {
        Err(ClientError::Transfer("the back-end's descriptor is not a pipe or a socket"))
    }
}

/// How long a transfer may wait: each time, and in all (until `deadline`).
#[derive(Clone, Copy)]
struct Limits {
    wait: Duration,
    whole: Duration,
    deadline: Instant,
}

/// Waits until `fd` is ready for `flags`, for at most one wait and never past the deadline.
fn ready(fd: &OwnedFd, flags: PollFlags, limits: Limits) -> Result<(), ClientError> {
    let waiting = Some(FrontendCode::SetDeviceStateFd);
    loop {
        let left = limits.deadline.saturating_duration_since(Instant::now());
        let (wait, timeout) =
            if left < limits.wait { (left, limits.whole) } else { (limits.wait, limits.wait) };
        match poll(&mut [PollFd::new(fd, flags)], Some(&crate::timespec(wait))) {
            Ok(ready) if ready == 0 || left.is_zero() => {
                return Err(ClientError::Timeout { waiting, timeout })
            }
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(e) => return Err(io("waiting on the state descriptor")(e.into())),
        }
    }
}

/// Reads the state until the back-end closes its end.
fn read_state(fd: &OwnedFd, limits: Limits) -> Result<Vec<u8>, ClientError> {
    let mut state = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        ready(fd, PollFlags::IN, limits)?;
        match rustix::io::read(fd, &mut chunk) {
            Ok(0) => return Ok(state),
            Ok(n) if state.len() + n > MAX_STATE_SIZE => {
                return Err(ClientError::Transfer("more state than a load accepts"));
            }
            Ok(n) => state.extend_from_slice(&chunk[..n]),
            Err(Errno::INTR | Errno::AGAIN) => {}
            Err(e) => return Err(io("reading the state")(e.into())),
        }
    }
}

/// Bytes a write may take once a pipe is writable without blocking (`PIPE_BUF`): the
/// descriptor may be the back-end's own, so it stays as blocking as the back-end made it.
const PIPE_BUF: usize = 4096;

/// Writes all of `state`.
fn write_state(fd: &OwnedFd, mut state: &[u8], limits: Limits) -> Result<(), ClientError> {
    while !state.is_empty() {
        ready(fd, PollFlags::OUT, limits)?;
        match rustix::io::write(fd, &state[..state.len().min(PIPE_BUF)]) {
            Ok(n) => state = &state[n..],
            Err(Errno::INTR | Errno::AGAIN) => {}
            Err(e) => return Err(io("writing the state")(e.into())),
        }
    }
    Ok(())
}
