//! One accepted front-end on a non-blocking socket: readiness in, frames through `Backend`,
//! actions to the executor, replies to the outbox.
//!
//! On every event for its token the connection first flushes queued replies, then reads frames
//! with [`recv_frame`] (exactly `next_read_len` bytes per `recvmsg`; on `WouldBlock` the decoder
//! and the descriptors received so far keep the partial frame for the next event), feeds each
//! complete frame to [`Backend::handle_frame`], and drains [`Backend::poll_output`], feeding the
//! owed completion until none is awaited, exactly as the std driver does. Reading stops at
//! `WouldBlock`, when the outbox is backlogged (it resumes on the writable event that drains it),
//! or after [`FRAME_BUDGET`] frames, so one busy peer cannot starve the others. When frames may
//! still wait in the socket with no new edge to come (the budget was spent, or a pause was
//! cleared by the last flush) the connection is re-registered, which on Linux's epoll re-arms the
//! edge-triggered readiness so the rest is read on a later event. Interest is READABLE, plus
//! WRITABLE while replies wait.
//!
//! This module must not decide protocol questions (what to answer, what is valid, when to
//! close): `Backend` does. Tearing down (deregistering, stopping queues, resetting the device,
//! dropping descriptors) is done by the server dropping the connection.

use std::io::ErrorKind;
use std::os::fd::OwnedFd;

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use vhu_core::backend::{Backend, Output};
use vhu_core::{FrameDecoder, ProtocolError};
use vhu_transport_std::{recv_frame, Device, Executor, RecvOutcome, ScmError};

use crate::error::ConnectionError;
use crate::outbox::Outbox;

/// Frames handled per event before the connection yields to the others.
pub(crate) const FRAME_BUDGET: usize = 32;

/// Completion rounds after one input before the driver gives up on a back-end that keeps
/// refusing them (it never needs more than one).
const MAX_COMPLETION_ROUNDS: usize = 4;

/// How an event left the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Still open.
    Open,
    /// The peer hung up at a frame boundary.
    HungUp,
}

/// Why a round of reading stopped.
enum Read {
    /// The socket has nothing more now.
    Drained,
    /// The outbox is backlogged; reading resumes once it drains.
    Paused,
    /// The frame budget is spent; more may be waiting.
    Budget,
    /// The peer hung up at a frame boundary.
    HungUp,
}

/// One front-end connection; see the module docs.
#[derive(Debug)]
pub(crate) struct Connection<D: Device> {
    stream: UnixStream,
    backend: Backend,
    decoder: Box<FrameDecoder>,
    received: Vec<OwnedFd>,
    /// The shared executor of `vhu-transport-std`, owning the device; device-state transfer
    /// stays refused, as a blocking transfer would stall the event loop.
    exec: Executor<D, D>,
    outbox: Outbox,
    interest: Interest,
}

impl<D: Device> Connection<D> {
    /// A fresh back-end for `stream` (non-blocking, as `mio` accepts it) served by `device`.
    pub(crate) fn new(stream: UnixStream, device: D) -> Result<Self, ConnectionError> {
        let backend = Backend::new(device.spec())?;
        let queues = backend.spec().queues;
        Ok(Self {
            stream,
            backend,
            decoder: Box::new(FrameDecoder::new()),
            received: Vec::new(),
            exec: Executor::new(device, queues),
            outbox: Outbox::new(),
            interest: Interest::READABLE,
        })
    }

    /// Registers the socket for reading under `token`.
    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: Token,
    ) -> Result<(), ConnectionError> {
        self.interest = Interest::READABLE;
        registry.register(&mut self.stream, token, self.interest).map_err(ConnectionError::Register)
    }

    /// Removes the socket from the poll (errors are moot: the socket is closed next).
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Makes all the progress the socket allows now. On `Err` the connection must be closed; the
    /// replies queued before a close were flushed as far as the socket took them.
    pub(crate) fn handle_ready(
        &mut self,
        registry: &Registry,
        token: Token,
    ) -> Result<Step, ConnectionError> {
        self.outbox.flush(&self.stream)?;
        let read = if self.outbox.is_backlogged() { Ok(Read::Paused) } else { self.read_frames() };
        let read = match read {
            Ok(read) => read,
            Err(error) => {
                // Best effort: outputs before a close still go out if the socket takes them.
                let _ = self.outbox.flush(&self.stream);
                return Err(error);
            }
        };
        if let Read::HungUp = read {
            // A peer that only shut down its writing side still gets the last replies.
            let _ = self.outbox.flush(&self.stream);
            return Ok(Step::HungUp);
        }
        self.outbox.flush(&self.stream)?;
        let interest = if self.outbox.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        // Re-registering re-arms the edge-triggered readiness: needed when frames may still wait
        // in the socket although no new edge will come (budget spent, or reading paused by a
        // backlog that the last flush already cleared).
        let rearm = match read {
            Read::Budget => true,
            Read::Paused => !self.outbox.is_backlogged(),
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

    fn read_frames(&mut self) -> Result<Read, ConnectionError> {
        for _ in 0..FRAME_BUDGET {
            if self.outbox.is_backlogged() {
                return Ok(Read::Paused);
            }
            match recv_frame(&self.stream, &mut self.decoder, &mut self.received) {
                Ok(RecvOutcome::Frame(_)) => self.handle_frame()?,
                Ok(RecvOutcome::Closed) => return Ok(Read::HungUp),
                Err(ScmError::Io(error)) if error.kind() == ErrorKind::WouldBlock => {
                    return Ok(Read::Drained)
                }
                Err(error) => return Err(ConnectionError::Recv(error)),
            }
        }
        Ok(Read::Budget)
    }

    fn handle_frame(&mut self) -> Result<(), ConnectionError> {
        let tokens = self.exec.insert_fds(std::mem::take(&mut self.received))?;
        let frame = self.decoder.frame().unwrap_or(&[]);
        // A refusal has already been turned into outputs (a NACK or a close).
        let _refusal = self.backend.handle_frame(frame, &tokens);
        self.drain()
    }

    /// Carries out every output, feeding completions until none is owed.
    fn drain(&mut self) -> Result<(), ConnectionError> {
        for _ in 0..MAX_COMPLETION_ROUNDS {
            while let Some(output) = self.backend.poll_output() {
                match output {
                    Output::Reply(reply) => self.outbox.push(&reply, self.exec.fds_mut())?,
                    Output::Action(action) => self.exec.execute(action),
                    Output::BackendRequest { request, .. } => {
                        // Not sent by this driver: its descriptors are closed.
                        for token in request.fds() {
                            self.exec.fds_mut().release(token);
                        }
                    }
                    Output::BackendResult(_) => {}
                    Output::Close(error) => return Err(ConnectionError::Closed(error)),
                }
            }
            if !self.backend.is_awaiting_completion() {
                self.exec.discard_owed();
                return Ok(());
            }
            self.exec.feed_completion(&mut self.backend).map_err(ConnectionError::Completion)?;
        }
        Err(ConnectionError::Completion(ProtocolError::UnexpectedCompletion))
    }
}
