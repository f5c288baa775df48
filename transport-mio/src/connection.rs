//! One accepted front-end on a non-blocking socket: a [`Session`] and the readiness of its
//! sources in the caller's `mio::Poll`.
//!
//! The main socket, the device's request eventfd and, while they exist, the back-end channel
//! socket and a device-state transfer's pipe are registered under the connection's one token; every event for it makes all
//! the progress the sources allow: queued replies are flushed, frames are read (at most
//! [`FRAME_BUDGET`] per event so one busy peer cannot starve the others, none while replies are
//! backlogged, none while a queue is still stopping), and then device requests, channel answers,
//! a transfer and a queue's stop are serviced. A transfer moves as its pipe allows and a queue
//! that takes a while to stop reports through an eventfd registered under the same token: the
//! event loop never waits for either. When frames may still
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
use vhu_transport_std::{Device, Read, Session, Style};

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
    /// The back-end channel socket, as registered.
    channel: Followed,
    /// A device-state transfer's pipe, as registered.
    transfer: Followed,
}

impl<D: Device> Connection<D> {
    /// A fresh session for `stream` (non-blocking, as `mio` accepts it) served by `device`.
    pub(crate) fn new(stream: UnixStream, device: D) -> Result<Self, ConnectionError> {
        Ok(Self {
            stream,
            session: Session::new(device, Style::Evented)?,
            interest: Interest::READABLE,
            channel: Followed::default(),
            transfer: Followed::default(),
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
            .map_err(ConnectionError::Register)?;
        if let Some(stopped) = self.session.stop_fd() {
            let stopped = stopped.as_raw_fd();
            registry
                .register(&mut SourceFd(&stopped), token, Interest::READABLE)
                .map_err(ConnectionError::Register)?;
        }
        Ok(())
    }

    /// Removes the sources from the poll (errors are moot: they are closed next).
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
        let wake = self.session.requests_fd().as_raw_fd();
        let _ = registry.deregister(&mut SourceFd(&wake));
        if let Some(stopped) = self.session.stop_fd() {
            let _ = registry.deregister(&mut SourceFd(&stopped.as_raw_fd()));
        }
        self.channel.forget(registry);
        self.transfer.forget(registry);
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
        self.update_sources(registry, token)?;
        let interest = if self.session.unsent_reply().is_none() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let rearm = match read {
            Read::Budget => true,
            Read::Paused => !self.session.is_backlogged(),
            // The stop's eventfd brings the next event.
            Read::Drained | Read::HungUp | Read::Awaiting => false,
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
        let mut read = self.read()?;
        if read != Read::HungUp {
            self.session.service()?;
            // A queue that finished stopping lets frames be read again.
            if read == Read::Awaiting && !self.session.is_awaiting() {
                self.session.flush(self.stream.as_fd())?;
                read = self.read()?;
            }
        }
        Ok(read)
    }

    fn read(&mut self) -> Result<Read, ConnectionError> {
        if self.session.is_backlogged() {
            return Ok(Read::Paused);
        }
        Ok(self.session.read(self.stream.as_fd(), FRAME_BUDGET)?)
    }

    /// Keeps the registrations of the back-end channel socket and a transfer pipe in step with
    /// the session's.
    fn update_sources(&mut self, registry: &Registry, token: Token) -> Result<(), ConnectionError> {
        // A new registration is followed by one more look (something may have become ready
        // before it), and that look may close a source (a channel whose peer just left): follow
        // again at once, before the number it freed can name another connection's socket,
        // whose registration a later removal by number would take away. A look registers
        // nothing new itself, so the second pass ends it; every pass ends in a follow.
        let mut looks = 0;
        loop {
            let channel = self.channel_source();
            let pipe = self.pipe_source();
            let sources = [(&mut self.channel, channel), (&mut self.transfer, pipe)];
            if !follow_all(registry, token, sources)? || looks == 2 {
                break;
            }
            looks += 1;
            self.session.service()?;
        }
        if self.session.take_transfer_spent() {
            // The transfer stopped at its budget with its pipe perhaps ready: re-arm it, so
            // the rest comes as a new event, after the other connections had their turn. (The
            // look once more may have ended it: follow it first.)
            let pipe = self.pipe_source();
            follow_all(registry, token, [(&mut self.transfer, pipe)])?;
            self.transfer.rearm(registry, token)?;
        }
        Ok(())
    }

    /// The back-end channel's socket as a followed source, if there is one.
    fn channel_source(&self) -> Option<Source> {
        self.session.channel_fd().map(|fd| {
            let interest = if self.session.channel_wants_write() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            (fd.as_raw_fd(), self.session.channel_generation(), interest)
        })
    }

    /// The transfer pipe as a followed source, if a transfer is under way.
    fn pipe_source(&self) -> Option<Source> {
        self.session.transfer_pipe().map(|(fd, writes, generation)| {
            let interest = if writes { Interest::WRITABLE } else { Interest::READABLE };
            (fd.as_raw_fd(), generation, interest)
        })
    }
}

/// Brings every followed source in step with the session; whether a new one was registered.
///
/// Every registration that went stale is removed before any new one is made: the session may
/// have closed one source's descriptor and received another under the same number (a transfer
/// pipe closed, then a new back-end channel socket in the same batch of frames), and removing
/// the old registration by number afterwards would remove the new one.
fn follow_all<const N: usize>(
    registry: &Registry,
    token: Token,
    mut sources: [(&mut Followed, Option<Source>); N],
) -> Result<bool, ConnectionError> {
    for (followed, now) in &mut sources {
        followed.drop_stale(registry, *now);
    }
    let mut changed = false;
    for (followed, now) in sources {
        changed |= followed.follow(registry, token, now)?;
    }
    Ok(changed)
}

/// A source the session owns and replaces, registered under the connection's token: which
/// descriptor, of which generation, with which interest.
#[derive(Debug, Default)]
struct Followed(Option<Source>);

/// A followed source: its descriptor, the session's generation of it, and the interest.
type Source = (RawFd, u64, Interest);

impl Followed {
    /// Removes the registration if the session no longer has that source (`now` is another
    /// descriptor or generation, or none).
    fn drop_stale(&mut self, registry: &Registry, now: Option<Source>) {
        let same = |old: Source| now.is_some_and(|n| n.0 == old.0 && n.1 == old.1);
        if self.0.is_some_and(|old| !same(old)) {
            self.forget(registry);
        }
    }

    /// Registers, re-registers or deregisters to match `now`; whether a new source was
    /// registered.
    fn follow(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Option<Source>,
    ) -> Result<bool, ConnectionError> {
        match (self.0, now) {
            (Some(old), Some(new)) if old.0 == new.0 && old.1 == new.1 => {
                if old.2 != new.2 {
                    registry
                        .reregister(&mut SourceFd(&new.0), token, new.2)
                        .map_err(ConnectionError::Register)?;
                    self.0 = Some(new);
                }
                return Ok(false);
            }
            (None, None) => return Ok(false),
            (Some((fd, _, _)), _) => {
                // The old descriptor may already be closed; its registration went with it then.
                let _ = registry.deregister(&mut SourceFd(&fd));
                self.0 = None;
            }
            (None, Some(_)) => {}
        }
        let Some(new) = now else { return Ok(false) };
        match registry.register(&mut SourceFd(&new.0), token, new.2) {
            // epoll keys a registration on the number and the open file, and removes it only
            // when the file's last descriptor closes: a front-end that sends the same socket
            // again leaves the old number's registration alive, and the new descriptor may get
            // that number. The registration is then already this source's; set its interest.
            Err(error) if error.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) => {
                registry
                    .reregister(&mut SourceFd(&new.0), token, new.2)
                    .map_err(ConnectionError::Register)?
            }
            result => result.map_err(ConnectionError::Register)?,
        }
        self.0 = Some(new);
        Ok(true)
    }

    /// Registers again with the same interest, which on Linux's epoll reports readiness that
    /// is already there.
    fn rearm(&self, registry: &Registry, token: Token) -> Result<(), ConnectionError> {
        let Some((fd, _, interest)) = self.0 else { return Ok(()) };
        registry.reregister(&mut SourceFd(&fd), token, interest).map_err(ConnectionError::Register)
    }

    /// Removes the registration (errors are moot: the descriptor is closed next).
    fn forget(&mut self, registry: &Registry) {
        if let Some((fd, _, _)) = self.0.take() {
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// A transfer pipe closed and a channel socket received under its number, in one batch:
    /// the channel's registration survives the pipe's removal.
    #[test]
    fn a_reused_descriptor_number_keeps_its_new_registration() {
        let poll = mio::Poll::new().expect("poll");
        let registry = poll.registry();
        let token = Token(1);
        let (mut channel, mut transfer) = (Followed::default(), Followed::default());
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        let number = read.as_raw_fd();
        let pipe = Some((number, 1, Interest::READABLE));
        assert!(follow_all(registry, token, [(&mut channel, None), (&mut transfer, pipe)])
            .expect("registered"));
        // The pipe's end closes and the socket takes its number in one step (waiting for the
        // lowest free number would race whatever else the process opens meanwhile).
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut renumbered = read;
        rustix::io::dup2(&socket, &mut renumbered).expect("dup2");
        drop(socket);
        assert_eq!(renumbered.as_raw_fd(), number);
        let now = Some((number, 1, Interest::READABLE));
        follow_all(registry, token, [(&mut channel, now), (&mut transfer, None)]).expect("ok");
        registry
            .reregister(&mut SourceFd(&number), token, Interest::WRITABLE)
            .expect("the channel socket is still registered");
        drop((renumbered, write));
    }
}
