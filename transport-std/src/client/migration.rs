//! Moving a back-end's state as a VMM does when it migrates a guest (spec "Migrating back-end
//! state"): [`Client::save_state`] on the source, [`Client::load_state`] on the destination,
//! each over a pipe through SET_DEVICE_STATE_FD and confirmed with CHECK_DEVICE_STATE.
//!
//! The order the spec asks for is the caller's and is checked by core: every ring stopped
//! (GET_VRING_BASE) before a transfer, dirty logging ([`Client::set_log_base`],
//! [`Client::set_logging`]) while guest memory is copied before that. When the back-end answers
//! with a descriptor of its own, the transfer goes over that one instead. This module must not
//! decide when a transfer is allowed.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use rustix::pipe::{pipe_with, PipeFlags};
use vhu_core::message::TransferDirection;

use super::{Client, ClientError};

fn io(what: &'static str) -> impl Fn(std::io::Error) -> ClientError {
    move |source| ClientError::Io { what, source }
}

impl Client {
    /// Reads the back-end's state (every ring stopped) and checks that it saved it whole.
    pub fn save_state(&mut self) -> Result<Vec<u8>, ClientError> {
        let (read, write) =
            pipe_with(PipeFlags::CLOEXEC).map_err(|e| io("creating the state pipe")(e.into()))?;
        let theirs = self.set_device_state_fd(TransferDirection::Save, write)?;
        let source: OwnedFd = theirs.unwrap_or(read);
        let mut state = Vec::new();
        std::fs::File::from(source).read_to_end(&mut state).map_err(io("reading the state"))?;
        self.check_device_state()?;
        Ok(state)
    }

    /// Hands `state` to the back-end (every ring stopped) and checks that it took it over.
    pub fn load_state(&mut self, state: &[u8]) -> Result<(), ClientError> {
        let (read, write) =
            pipe_with(PipeFlags::CLOEXEC).map_err(|e| io("creating the state pipe")(e.into()))?;
        let theirs = self.set_device_state_fd(TransferDirection::Load, read)?;
        let sink: OwnedFd = theirs.unwrap_or(write);
        let mut sink = std::fs::File::from(sink);
        // A back-end that refuses the state may close its end early: what it says comes next.
        let written = sink.write_all(state);
        drop(sink);
        let checked = self.check_device_state();
        written.map_err(io("writing the state"))?;
        checked
    }
}
