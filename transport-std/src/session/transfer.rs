//! Device-state transfer (SET_DEVICE_STATE_FD): the device's state moved through the
//! front-end's pipe end, without ever blocking on the pipe unless asked to.
//!
//! A transfer starts once the reply to SET_DEVICE_STATE_FD is written (the front-end only uses
//! its end then). Saving asks the device for its whole state at once, in memory, and then writes
//! it to the pipe as the pipe takes it, closing it at the end (EOF for the front-end). Loading
//! reads the pipe as data comes until EOF, then hands the bytes to the device. Each step
//! ([`Transfer::progress`]) does what the pipe allows now, up to [`STEP_BUDGET`] bytes (a
//! front-end that keeps the pipe full must not keep an event loop from its other connections),
//! so an event loop drives it by the pipe's readiness; [`Transfer::finish`] drives it to the
//! end, waiting at most a timeout for each read or write, so a front-end that never closes its
//! end cannot hang anyone (an event loop's CHECK_DEVICE_STATE waits for nothing, and moves a
//! bounded amount: a front-end writing on while it checks cannot hold the loop). A blocking
//! session's whole transfer is bounded too (the session's
//! [`TRANSFER_DEADLINE`](super::TRANSFER_DEADLINE)): a front-end that sends or takes a byte now
//! and then, each within the wait's timeout, would otherwise hold its connection for as long as
//! it likes (an event loop's transfer holds nobody up, and is not bounded). The outcome is kept
//! for CHECK_DEVICE_STATE; a failed one is logged.
//!
//! This module must not decide when a transfer is allowed (core checks that the device is
//! suspended) nor interpret the state bytes (the device's format).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use vhu_core::message::TransferDirection;

use crate::device::{Device, DeviceError};

/// State a load accepts at most; a front-end that sends more is refused.
pub const MAX_STATE_SIZE: usize = 1 << 30;

/// Bytes one step moves at most; the step then says more may be ready at once
/// ([`Step::Budget`]).
pub(crate) const STEP_BUDGET: usize = 64 * 1024;

/// Steps a [`Transfer::finish`] that never waits takes at most (16 MiB): more than a pipe holds
/// once the front-end closed its end (1 MiB unless a privileged process raised it past that, or
/// a socket's buffer was forced larger), so a front-end that keeps the pipe full while it asks
/// for the outcome cannot hold an event loop.
const UNWAITED_STEPS: usize = 256;

/// One transfer; see the module docs.
#[derive(Debug)]
pub(super) struct Transfer {
    direction: TransferDirection,
    fd: Option<OwnedFd>,
    /// Saving: the state, and how much of it the pipe took. Loading: what arrived so far.
    data: Vec<u8>,
    written: usize,
    started: bool,
    /// How long the whole transfer may take, from its first step (unbounded: `None`).
    whole: Option<Duration>,
    /// When its first step ran.
    begun: Option<Instant>,
}

/// Where a transfer stands after a step.
#[derive(Debug)]
pub(super) enum Step {
    /// The pipe has to become readable (loading) or writable (saving) first.
    Waiting,
    /// The step moved [`STEP_BUDGET`] bytes and stopped: the pipe may be ready still, with no
    /// new readiness to come (an event loop must look again by itself).
    Budget,
    /// Finished, with this outcome.
    Done(Result<(), DeviceError>),
}

/// Whether `fd` is a pipe or a socket, as a transfer needs: a regular file or a device such as
/// `/dev/zero` is never "not ready", so reading it would run an event loop's step up to
/// [`MAX_STATE_SIZE`] in one go.
pub(crate) fn is_stream(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|stat| {
        let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        matches!(kind, rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket)
    })
}

impl Transfer {
    /// A transfer over `fd` that may take `whole` at most, however its bytes come.
    pub(super) fn new(direction: TransferDirection, fd: OwnedFd, whole: Option<Duration>) -> Self {
        Self {
            direction,
            fd: Some(fd),
            data: Vec::new(),
            written: 0,
            started: false,
            whole,
            begun: None,
        }
    }

    /// The failure of a transfer that used up its whole time.
    fn out_of_time(&self) -> DeviceError {
        let whole = self.whole.unwrap_or_default();
        timed_out(format!("it took longer than {whole:?} in all"))
    }

    /// What is left of the whole transfer's time (nothing before its first step is counted;
    /// an unbounded transfer always has `Duration::MAX`).
    fn time_left(&self) -> Duration {
        let Some(whole) = self.whole else { return Duration::MAX };
        self.begun.map_or(whole, |begun| whole.saturating_sub(begun.elapsed()))
    }

    /// The pipe, and whether the transfer waits to write (else to read).
    pub(super) fn pipe(&self) -> Option<(BorrowedFd<'_>, bool)> {
        let writes = matches!(self.direction, TransferDirection::Save);
        self.fd.as_ref().map(|fd| (fd.as_fd(), writes))
    }

    /// Does what the pipe allows now.
    pub(super) fn progress<D: Device + ?Sized>(&mut self, device: &mut D) -> Step {
        match self.step(device) {
            Ok(step) => step,
            Err(error) => {
                self.fd = None;
                log::warn!("device-state transfer failed: {error}");
                Step::Done(Err(error))
            }
        }
    }

    /// Runs the transfer to its end, waiting at most `timeout` for each read or write, and no
    /// longer in all than the transfer's whole time; without a wait, [`UNWAITED_STEPS`] at most.
    pub(super) fn finish<D: Device + ?Sized>(
        &mut self,
        device: &mut D,
        timeout: Duration,
    ) -> Result<(), DeviceError> {
        let mut steps = 0;
        loop {
            if let Step::Done(result) = self.progress(device) {
                return result;
            }
            steps += 1;
            if timeout.is_zero() && steps >= UNWAITED_STEPS {
                self.fd = None;
                let error = timed_out("still moving data when checked".into());
                log::warn!("device-state transfer failed: {error}");
                return Err(error);
            }
            let Some((fd, writes)) = self.pipe() else { return Ok(()) };
            let flags = if writes { PollFlags::OUT } else { PollFlags::IN };
            let mut fds = [PollFd::from_borrowed_fd(fd, flags)];
            let wait = timeout.min(self.time_left());
            match poll(&mut fds, Some(&crate::timespec(wait))) {
                Ok(0) => {
                    self.fd = None;
                    let error = match wait.as_millis() {
                        _ if self.time_left().is_zero() => self.out_of_time(),
                        0 => timed_out("unfinished when checked".into()),
                        ms => timed_out(format!("no progress on the pipe in {ms} ms")),
                    };
                    log::warn!("device-state transfer failed: {error}");
                    return Err(error);
                }
                Ok(_) | Err(Errno::INTR) => {}
                Err(errno) => {
                    self.fd = None;
                    log::warn!("device-state transfer failed: waiting for the pipe: {errno}");
                    return Err(DeviceError::Io(errno.into()));
                }
            }
        }
    }

    /// One step; a failure is the transfer's outcome.
    fn step<D: Device + ?Sized>(&mut self, device: &mut D) -> Result<Step, DeviceError> {
        let Some(fd) = &self.fd else { return Ok(Step::Done(Ok(()))) };
        self.begun.get_or_insert_with(Instant::now);
        if self.time_left().is_zero() {
            return Err(self.out_of_time());
        }
        let mut moved = 0;
        if !self.started {
            self.started = true;
            rustix::io::ioctl_fionbio(fd, true).map_err(io)?;
            if let TransferDirection::Save = self.direction {
                device.save_state(&mut self.data)?;
            }
        }
        match self.direction {
            TransferDirection::Save => {
                while self.written < self.data.len() {
                    if moved >= STEP_BUDGET {
                        return Ok(Step::Budget);
                    }
                    let end = self.data.len().min(self.written + STEP_BUDGET - moved);
                    match crate::nowait::write(fd, &self.data[self.written..end]) {
                        Ok(n) => {
                            self.written += n;
                            moved += n;
                        }
                        Err(Errno::AGAIN) => return Ok(Step::Waiting),
                        Err(Errno::INTR) => {}
                        Err(errno) => return Err(io(errno)),
                    }
                }
                // Closing the pipe is the front-end's EOF.
                self.fd = None;
                Ok(Step::Done(Ok(())))
            }
            TransferDirection::Load => {
                let mut chunk = [0u8; 64 * 1024];
                loop {
                    if moved >= STEP_BUDGET {
                        return Ok(Step::Budget);
                    }
                    match crate::nowait::read(fd, &mut chunk) {
                        Ok(0) => break,
                        Ok(n) if self.data.len() + n > MAX_STATE_SIZE => {
                            return Err(DeviceError::InvalidState("more state than a load accepts"))
                        }
                        Ok(n) => {
                            self.data.extend_from_slice(&chunk[..n]);
                            moved += n;
                        }
                        Err(Errno::AGAIN) => return Ok(Step::Waiting),
                        Err(Errno::INTR) => {}
                        Err(errno) => return Err(io(errno)),
                    }
                }
                self.fd = None;
                device.load_state(&mut self.data.as_slice())?;
                Ok(Step::Done(Ok(())))
            }
        }
    }
}

fn io(errno: Errno) -> DeviceError {
    DeviceError::Io(errno.into())
}

/// A transfer that ran out of time, and how: ETIMEDOUT for CHECK_DEVICE_STATE.
fn timed_out(why: String) -> DeviceError {
    DeviceError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use vhu_core::backend::BackendSpec;
    use vhu_core::message::{TransferDirection, VringBase};
    use vhu_core::VringIndex;

    use super::Transfer;
    use crate::device::{Device, DeviceError, Queue};

    /// A device with no queues that keeps what it loads.
    #[derive(Default)]
    struct Keeper(Option<Vec<u8>>);

    impl Device for Keeper {
        fn spec(&self) -> BackendSpec {
            BackendSpec::new(1, 256)
        }
        fn start_queue(&mut self, _: Queue) -> Result<(), DeviceError> {
            Err(DeviceError::Unsupported)
        }
        fn stop_queue(&mut self, _: VringIndex, _: bool) -> VringBase {
            VringBase(0)
        }
        fn set_queue_enabled(&mut self, _: VringIndex, _: bool) {}
        fn replace_kick(&mut self, _: VringIndex, _: Option<std::os::fd::OwnedFd>) {}
        fn reset(&mut self) {}
        fn load_state(&mut self, input: &mut dyn Read) -> Result<(), DeviceError> {
            let mut state = Vec::new();
            input.read_to_end(&mut state).map_err(DeviceError::Io)?;
            self.0 = Some(state);
            Ok(())
        }
    }

    /// A front-end that writes a byte now and then, each well within the wait for the next,
    /// and never closes its end: the transfer's whole bound ends it, and nothing is loaded.
    #[test]
    fn a_trickled_state_ends_at_the_transfers_whole_bound() {
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        let stop = Arc::new(AtomicBool::new(false));
        let trickling = Arc::clone(&stop);
        let trickler = std::thread::spawn(move || {
            while !trickling.load(Ordering::Relaxed) {
                if rustix::io::write(&write, b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let whole = Duration::from_millis(400);
        let mut transfer = Transfer::new(TransferDirection::Load, read, Some(whole));
        let mut device = Keeper::default();
        let started = Instant::now();
        let outcome = transfer.finish(&mut device, Duration::from_secs(30));
        stop.store(true, Ordering::Relaxed);
        trickler.join().expect("trickler");
        match outcome {
            Err(error @ DeviceError::Io(_)) => {
                assert_eq!(error.status(), libc::ETIMEDOUT as u64, "{error}");
                assert!(error.to_string().contains("in all"), "{error}");
            }
            other => panic!("a state trickled without end: {other:?}"),
        }
        assert!(started.elapsed() >= whole);
        assert!(started.elapsed() < Duration::from_secs(30), "ended by the whole bound");
        assert!(device.0.is_none(), "nothing loaded");
        assert!(transfer.pipe().is_none(), "the pipe is let go");
    }

    /// A check that never waits (an event loop's) on a pipe that never runs dry — a front-end
    /// writing on while it asks for the outcome — ends after a bounded amount, as unfinished.
    #[test]
    fn an_unwaited_check_moves_a_bounded_amount() {
        let endless = std::fs::File::open("/dev/zero").expect("/dev/zero");
        let mut transfer = Transfer::new(TransferDirection::Load, endless.into(), None);
        let mut device = Keeper::default();
        match transfer.finish(&mut device, Duration::ZERO) {
            Err(error @ DeviceError::Io(_)) => {
                assert_eq!(error.status(), libc::ETIMEDOUT as u64, "{error}");
                assert!(error.to_string().contains("still moving"), "{error}");
            }
            other => panic!("an endless pipe checked: {other:?}"),
        }
        assert!(transfer.data.len() <= super::UNWAITED_STEPS * super::STEP_BUDGET);
        assert!(device.0.is_none(), "nothing loaded");
        assert!(transfer.pipe().is_none(), "the pipe is let go");
    }

    /// A state that comes whole within the bound loads.
    #[test]
    fn a_state_within_the_bound_loads() {
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        rustix::io::write(&write, b"state").expect("write");
        drop(write);
        let mut transfer = Transfer::new(TransferDirection::Load, read, None);
        let mut device = Keeper::default();
        transfer.finish(&mut device, Duration::from_secs(5)).expect("loaded");
        assert_eq!(device.0.as_deref(), Some(&b"state"[..]));
    }
}
