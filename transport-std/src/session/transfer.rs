//! Device-state transfer (SET_DEVICE_STATE_FD): the device saves into, or loads from, the
//! front-end's pipe end.
//!
//! The transfer runs after the reply to SET_DEVICE_STATE_FD is sent (the front-end only starts
//! reading or writing its end then), before the next frame is read. The descriptor is switched to
//! non-blocking mode and every read or write waits at most the given timeout for the pipe, so a
//! front-end that never closes its end cannot hang the daemon. Saving closes the pipe when the
//! device is done (EOF for the front-end). The outcome is kept for CHECK_DEVICE_STATE.
//!
//! This module must not decide when a transfer is allowed (core checks that the device is
//! suspended) nor interpret the state bytes (the device's format).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use vhu_core::message::TransferDirection;

use crate::device::{Device, DeviceError};

/// A transfer waiting to run.
#[derive(Debug)]
pub(super) struct Transfer {
    pub(super) direction: TransferDirection,
    pub(super) fd: OwnedFd,
}

impl Transfer {
    /// Runs the device's save or load over the pipe.
    pub(super) fn run<D: Device + ?Sized>(
        self,
        device: &mut D,
        timeout: Duration,
    ) -> Result<(), DeviceError> {
        rustix::io::ioctl_fionbio(&self.fd, true).map_err(|errno| DeviceError::Io(errno.into()))?;
        let mut pipe = TimedPipe { fd: self.fd, timeout };
        match self.direction {
            TransferDirection::Save => {
                device.save_state(&mut pipe)?;
                pipe.flush()?;
                Ok(())
            }
            TransferDirection::Load => device.load_state(&mut pipe),
        }
    }
}

/// A non-blocking pipe end whose reads and writes wait for readiness at most `timeout`.
struct TimedPipe {
    fd: OwnedFd,
    timeout: Duration,
}

impl TimedPipe {
    fn wait(&self, flags: PollFlags) -> std::io::Result<()> {
        let timeout = crate::timespec(self.timeout);
        let mut fds = [PollFd::new(&self.fd, flags)];
        loop {
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => return Err(std::io::ErrorKind::TimedOut.into()),
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
    }
}

impl Read for TimedPipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match rustix::io::read(&self.fd, &mut *buf) {
                Ok(n) => return Ok(n),
                Err(Errno::AGAIN) => self.wait(PollFlags::IN)?,
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
    }
}

impl Write for TimedPipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match rustix::io::write(&self.fd, buf) {
                Ok(n) => return Ok(n),
                Err(Errno::AGAIN) => self.wait(PollFlags::OUT)?,
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
