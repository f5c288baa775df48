//! One accepted front-end on a non-blocking socket: a [`Session`] and the readiness of its
//! sources in the caller's `mio::Poll`.
//!
//! The main socket, the device's request eventfd and, once the front-end sent one, the back-end
//! channel socket are registered under the connection's one token; every event for it makes all
//! the progress the sources allow: queued replies are flushed, frames are read (at most
//! [`FRAME_BUDGET`] per event so one busy peer cannot starve the others, none while replies are
//! backlogged), and then device requests and channel answers are serviced. When frames may still
//! wait with no new edge to come (the budget was spent, or a pause was cleared by the last flush)
//! the main socket is re-registered, which on Linux's epoll re-arms the edge-triggered readiness.
//! Interest is READABLE, plus WRITABLE while replies (or channel requests) wait.
//!
//! This module must not decide protocol questions nor carry out outputs: the session does.
//! Tearing down (deregistering, stopping queues, resetting the device, dropping descriptors) is
//! done by the server dropping the connection.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use vhu_transport_std::{Device, Read, Session};

use crate::error::ConnectionError;

/// Frames handled per event before the connection yields to the others.
pub(crate) const FRAME_BUDGET: usize = 32;

/// How an event left the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Still open.
    Open,
    /// The peer hung up at a frame boundary.
    HungUp,
}

/// One front-end connection; see the module docs.
#[derive(Debug)]
pub(crate) struct Connection<D: Device> {
    stream: UnixStream,
    session: Session<D, D>,
    interest: Interest,
    /// The channel socket registered, by descriptor and the session's channel generation.
    channel: Option<(RawFd, u64, Interest)>,
}

impl<D: Device> Connection<D> {
    /// A fresh session for `stream` (non-blocking, as `mio` accepts it) served by `device`.
    pub(crate) fn new(stream: UnixStream, device: D) -> Result<Self, ConnectionError> {
        Ok(Self {
            stream,
            session: Session::new(device)?,
            interest: Interest::READABLE,
            channel: None,
        })
    }

    /// Registers the socket and the device's request eventfd under `token`.
    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: Token,
    ) -> Result<(), ConnectionError> {
        self.interest = Interest::READABLE;
        registry
            .register(&mut self.stream, token, self.interest)
            .map_err(ConnectionError::Register)?;
        let wake = self.session.requests_fd().as_raw_fd();
        registry
            .register(&mut SourceFd(&wake), token, Interest::READABLE)
            .map_err(ConnectionError::Register)
    }

    /// Removes the sources from the poll (errors are moot: they are closed next).
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
        let wake = self.session.requests_fd().as_raw_fd();
        let _ = registry.deregister(&mut SourceFd(&wake));
        if let Some((fd, _, _)) = self.channel.take() {
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
    }

    /// Makes all the progress the sources allow now. On `Err` the connection must be closed; the
    /// replies queued before a close were flushed as far as the socket took them.
    pub(crate) fn handle_ready(
        &mut self,
        registry: &Registry,
        token: Token,
    ) -> Result<Step, ConnectionError> {
        let read = self.progress();
        // Best effort on the way out: replies before a close still go if the socket takes them.
        let _ = self.session.flush(self.stream.as_fd());
        let read = read?;
        if read == Read::HungUp {
            return Ok(Step::HungUp);
        }
        self.update_channel(registry, token)?;
        let interest = if self.session.unsent_reply().is_none() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let rearm = match read {
            Read::Budget => true,
            Read::Paused => !self.session.is_backlogged(),
            Read::Drained | Read::HungUp => false,
        };
        if interest != self.interest || rearm {
            self.interest = interest;
            registry
                .reregister(&mut self.stream, token, interest)
                .map_err(ConnectionError::Register)?;
        }
        Ok(Step::Open)
    }

    fn progress(&mut self) -> Result<Read, ConnectionError> {
        self.session.flush(self.stream.as_fd())?;
        let read = if self.session.is_backlogged() {
            Read::Paused
        } else {
            self.session.read(self.stream.as_fd(), FRAME_BUDGET)?
        };
        if read != Read::HungUp {
            self.session.service()?;
        }
        Ok(read)
    }

    /// Keeps the channel socket's registration in step with the session's.
    fn update_channel(&mut self, registry: &Registry, token: Token) -> Result<(), ConnectionError> {
        let generation = self.session.channel_generation();
        let interest = if self.session.channel_wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let current = self.session.channel_fd().map(|fd| fd.as_raw_fd());
        match (self.channel, current) {
            (Some((fd, g, i)), Some(now)) if g == generation && fd == now => {
                if i != interest {
                    registry
                        .reregister(&mut SourceFd(&fd), token, interest)
                        .map_err(ConnectionError::Register)?;
                    self.channel = Some((fd, g, interest));
                }
                return Ok(());
            }
            (None, None) => return Ok(()),
            (Some((fd, _, _)), _) => {
                // The old socket may already be closed; its registration went with it then.
                let _ = registry.deregister(&mut SourceFd(&fd));
                self.channel = None;
            }
            (None, Some(_)) => {}
        }
        if let Some(fd) = current {
            registry
                .register(&mut SourceFd(&fd), token, interest)
                .map_err(ConnectionError::Register)?;
            self.channel = Some((fd, generation, interest));
            // Answers may have arrived before the registration: look once more.
            self.session.service()?;
        }
        Ok(())
    }
}
