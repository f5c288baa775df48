//! The client's I/O loop: carries out the front-end state machine's outputs on the sockets and
//! feeds it what arrives, until it has nothing left to wait for.
//!
//! [`settle`] drains [`Frontend::poll_output`] — requests are encoded and sent with the
//! descriptors taken out of the [`FdTable`], back-end replies go out on the back-end channel,
//! `CloseFd` releases a descriptor, events are copied into owned [`Answer`]s — then, while the
//! state machine waits for a reply or has requests queued, polls the main socket and the
//! back-end channel (bounded by the call's wait — the client's timeout, or its drain bound for a
//! call that stops rings; without a channel it just reads, each read bounded by the socket's read
//! timeout; either after checking for a moment without blocking,
//! [`crate::spin`]), reads one frame (reading ahead, so a reply usually takes one `recvmsg`) and
//! feeds it to [`Frontend::handle_reply`] or
//! [`Frontend::handle_backend_request`]. Back-end requests are answered at once by the client's
//! [`BackendHandler`], so a back-end that waits for an answer never stalls the main socket.
//!
//! This module must not decide anything about the protocol: which request goes next, whether it
//! waits for a reply, what an error costs, and which descriptors travel with what are all the
//! state machine's outputs. A transport failure (I/O error, hang-up, timeout) marks the client
//! broken; nothing is retried.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use vhu_core::frontend::{BackendAnswer, Event, Frontend, FrontendError, Negotiated, Output};
use vhu_core::limits::MAX_FDS_PER_MSG;
use vhu_core::message::{encode_status, InflightDesc, Uuid, VringBase};
use vhu_core::{BackendRequest, FdToken, FrontendCode, VringIndex};

use super::channel::{BackendHandler, BackendResponse, ReceivedRequest};
use super::ClientError;
use crate::encode_buf::EncodeBuf;
use crate::fd_table::FdTable;
use crate::frame_reader::{FrameFds, FrameReader, ReadAhead};
use crate::scm::{self, RecvOutcome, ScmError};

/// Back-end requests kept for [`Client::poll_backend_requests`](super::Client) before the oldest
/// are dropped (a back-end can send any number of them).
const MAX_LOGGED: usize = 256;

/// An event of the state machine, with borrowed data copied and tokens turned into descriptors.
#[derive(Debug)]
pub(super) enum Answer {
    Connected(Negotiated),
    VringStopped { index: VringIndex, base: VringBase },
    ConfigRead { offset: u32, data: Vec<u8> },
    Status(u8),
    ShmemConfig(Vec<u64>),
    InflightFd { desc: InflightDesc, fd: Option<OwnedFd> },
    DeviceStateFd { fd: Option<OwnedFd> },
    SharedObject { uuid: Uuid, fd: OwnedFd },
    PostcopyAdvised { userfaultfd: OwnedFd },
    PostcopyBases(Vec<u64>),
    CryptoSession(Vec<u8>),
}

/// What one settled call produced.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) answers: Vec<Answer>,
    /// The first failure the back-end reported.
    pub(super) failed: Option<FrontendError>,
}

/// Our end of the back-end channel.
#[derive(Debug)]
pub(super) struct Channel {
    pub(super) sock: UnixStream,
    reader: FrameReader,
}

impl Channel {
    pub(super) fn new(sock: UnixStream) -> Self {
        Self { sock, reader: FrameReader::new(ReadAhead::Greedy) }
    }
}

/// Everything but the state machine: sockets, descriptors, buffers, the back-end side.
pub(super) struct Io {
    pub(super) sock: UnixStream,
    pub(super) fds: FdTable,
    reader: FrameReader,
    buf: EncodeBuf,
    pub(super) channel: Option<Channel>,
    pub(super) handler: Box<dyn BackendHandler>,
    pub(super) log: VecDeque<ReceivedRequest>,
    /// The last request sent that waits for its reply.
    waiting: Option<FrontendCode>,
    pub(super) timeout: Duration,
    /// The bound of a call that stops rings (their requests in flight finish first).
    pub(super) drain_timeout: Duration,
    /// The bound of a whole device-state transfer.
    pub(super) transfer_timeout: Duration,
    pub(super) broken: bool,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("sock", &self.sock)
            .field("fds", &self.fds.len())
            .field("channel", &self.channel)
            .field("waiting", &self.waiting)
            .field("timeout", &self.timeout)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Io {
    pub(super) fn new(sock: UnixStream, handler: Box<dyn BackendHandler>) -> Self {
        Self {
            sock,
            fds: FdTable::new(),
            reader: FrameReader::new(ReadAhead::Greedy),
            buf: EncodeBuf::new(),
            channel: None,
            handler,
            log: VecDeque::new(),
            waiting: None,
            timeout: super::DEFAULT_TIMEOUT,
            drain_timeout: super::DEFAULT_DRAIN_TIMEOUT,
            transfer_timeout: super::DEFAULT_TRANSFER_TIMEOUT,
            broken: false,
        }
    }

    /// How long a call that stops rings waits: the drain bound, or the client's timeout when
    /// that is longer.
    pub(super) fn drain_wait(&self) -> Duration {
        self.timeout.max(self.drain_timeout)
    }

    fn take(&mut self, token: FdToken) -> Result<OwnedFd, ClientError> {
        self.fds.take(token).ok_or(ClientError::MissingFd(token))
    }

    fn take_opt(&mut self, token: Option<FdToken>) -> Result<Option<OwnedFd>, ClientError> {
        token.map(|t| self.take(t)).transpose()
    }
}

/// Runs the state machine until it is idle, waiting at most `wait` in all; see the module docs.
/// A transport failure marks the client broken.
pub(super) fn settle(
    frontend: &mut Frontend,
    io: &mut Io,
    wait: Duration,
) -> Result<Outcome, ClientError> {
    if io.broken {
        return Err(ClientError::Broken);
    }
    let result = run(frontend, io, wait);
    if matches!(&result, Err(e) if e.is_fatal()) {
        io.broken = true;
    }
    result
}

/// `timeout` from now; a timeout too long for the clock is as good as none.
pub(super) fn deadline_after(timeout: Duration) -> Instant {
    // A century: beyond any wait, and within what the clock adds without overflowing.
    const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + FOREVER)
}

fn run(frontend: &mut Frontend, io: &mut Io, wait: Duration) -> Result<Outcome, ClientError> {
    let mut outcome = Outcome::default();
    let deadline = deadline_after(wait);
    loop {
        if let Some(error) = drain(frontend, io, &mut outcome)? {
            return Err(ClientError::Closed(error));
        }
        // Postcopy bases wait for the caller to register them before anything more is sent.
        if frontend.is_idle() || frontend.is_awaiting_registration() {
            // Back-end requests read ahead with the last one are served now: nothing would
            // make the channel's socket readable for them.
            if channel_read_ahead(io) {
                receive_backend_request(frontend, io);
                continue;
            }
            return Ok(outcome);
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Timeout { waiting: io.waiting, timeout: wait });
        }
        if io.channel.is_none() {
            // One socket only: a blocking read, bounded by the socket's read timeout (and the
            // call's deadline, looked at again after each read that timed out).
            receive_reply(frontend, io, deadline, wait)?;
            continue;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (main, channel) = wait_readable(io, remaining)?;
        if main {
            receive_reply(frontend, io, deadline, wait)?;
        }
        if channel {
            receive_backend_request(frontend, io);
        }
    }
}

/// Serves the back-end channel alone for up to `timeout` (or until one request was handled).
pub(super) fn serve_channel(
    frontend: &mut Frontend,
    io: &mut Io,
    timeout: Duration,
) -> Result<(), ClientError> {
    if io.broken {
        return Err(ClientError::Broken);
    }
    let result = serve_channel_once(frontend, io, timeout);
    if matches!(&result, Err(e) if e.is_fatal()) {
        io.broken = true;
    }
    result
}

fn serve_channel_once(
    frontend: &mut Frontend,
    io: &mut Io,
    timeout: Duration,
) -> Result<(), ClientError> {
    let mut outcome = Outcome::default();
    if let Some(error) = drain(frontend, io, &mut outcome)? {
        return Err(ClientError::Closed(error));
    }
    if io.channel.is_none() {
        return Ok(());
    }
    let (main, channel) = wait_readable(io, timeout)?;
    if channel {
        receive_backend_request(frontend, io);
        // Requests read ahead with it are served too: nothing would make the channel's
        // socket readable for them.
        while channel_read_ahead(io) {
            if let Some(error) = drain(frontend, io, &mut outcome)? {
                return Err(ClientError::Closed(error));
            }
            receive_backend_request(frontend, io);
        }
    }
    if main && !frontend.is_awaiting_reply() {
        // Nothing waits for a reply: the main socket is readable only at a hang-up (or a
        // reply nobody asked for, which the state machine refuses), given the client's timeout
        // to arrive whole.
        receive_reply(frontend, io, deadline_after(io.timeout), io.timeout)?;
    }
    match drain(frontend, io, &mut outcome)? {
        Some(error) => Err(ClientError::Closed(error)),
        None => Ok(()),
    }
}

/// Whether the main socket and the back-end channel are readable, waiting at most `timeout`;
/// frames already read ahead count as readable without a wait.
fn wait_readable(io: &Io, timeout: Duration) -> Result<(bool, bool), ClientError> {
    let channel_buffered = channel_read_ahead(io);
    if io.reader.has_buffered() || channel_buffered {
        return Ok((io.reader.has_buffered(), channel_buffered));
    }
    let flags = PollFlags::IN;
    // On the stack: two at most, the capacity.
    let mut fds = ArrayVec::<PollFd<'_>, 2>::new();
    fds.push(PollFd::new(&io.sock, flags));
    if let Some(channel) = &io.channel {
        fds.push(PollFd::new(&channel.sock, flags));
    }
    let started = Instant::now();
    let left = || timeout.saturating_sub(started.elapsed());
    while !crate::spin::until_ready(&mut fds, Some(left())) {
        match poll(&mut fds, Some(&crate::timespec(left()))) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(ClientError::Io { what: "poll", source: errno.into() }),
        }
    }
    let ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
    Ok((ready(&fds[0]), fds.get(1).is_some_and(ready)))
}

/// Reads the next reply; a reply still incomplete at `deadline` (`wait` from the call's start)
/// is a timeout. A read that times out earlier returns with nothing read, what arrived kept.
fn receive_reply(
    frontend: &mut Frontend,
    io: &mut Io,
    deadline: Instant,
    wait: Duration,
) -> Result<(), ClientError> {
    if !io.reader.has_buffered() {
        // The read blocks either way; a reply that comes during the spin is read at once.
        crate::spin::until_ready(&mut [PollFd::new(&io.sock, PollFlags::IN)], Some(io.timeout));
    }
    match io.reader.recv_by(&io.sock, deadline) {
        Ok(RecvOutcome::Frame(_)) => {}
        Ok(RecvOutcome::Closed) => return Err(ClientError::Disconnected { waiting: io.waiting }),
        Err(ScmError::Io(error)) if is_timeout(&error) && Instant::now() < deadline => {
            return Ok(())
        }
        Err(ScmError::Io(error)) if is_timeout(&error) => {
            return Err(ClientError::Timeout { waiting: io.waiting, timeout: wait })
        }
        Err(error) => return Err(ClientError::Recv(error)),
    }
    let tokens = io.fds.insert_all(io.reader.take_fds())?;
    let frame = io.reader.frame().unwrap_or_default();
    // A refused reply has already been acted on: the close comes out of `poll_output`.
    let _ = frontend.handle_reply(frame, &tokens);
    Ok(())
}

/// Whether a whole back-end request read ahead with the last one waits in the channel's reader
/// (its socket says nothing of it). A request only partly read ahead is not served from here:
/// its rest makes the socket readable. So serving these reads nothing, and a back-end writing
/// requests as fast as it can holds no call, nor a VMM's loop, past the one read's worth.
fn channel_read_ahead(io: &Io) -> bool {
    io.channel.as_ref().is_some_and(|c| c.reader.has_whole_frame())
}

/// Reads one back-end request of what has arrived, never waiting for more (a back-end that
/// sends half a request must not hold the caller: what came is kept for the next read, when the
/// channel is readable again); a broken channel is dropped (the main socket goes on).
fn receive_backend_request(frontend: &mut Frontend, io: &mut Io) {
    let Some(channel) = io.channel.as_mut() else { return };
    match channel.reader.recv_arrived(&channel.sock) {
        Ok(RecvOutcome::Frame(_)) => {}
        Err(ScmError::Io(error)) if is_timeout(&error) => return,
        Ok(RecvOutcome::Closed) | Err(_) => {
            io.channel = None;
            return;
        }
    }
    let Ok(tokens) = io.fds.insert_all(channel.reader.take_fds()) else {
        io.channel = None;
        return;
    };
    let frame = channel.reader.frame().unwrap_or_default();
    // A refused request has already been answered or closed by the state machine.
    let _ = frontend.handle_backend_request(frame, &tokens);
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// Borrows a message's descriptors for `sendmsg`, without a heap allocation.
fn borrow_all(fds: &[OwnedFd]) -> ArrayVec<BorrowedFd<'_>, MAX_FDS_PER_MSG> {
    // Cannot overflow: a message carries at most MAX_FDS_PER_MSG descriptors, the capacity.
    fds.iter().take(MAX_FDS_PER_MSG).map(AsFd::as_fd).collect()
}

/// Sends the `len`-byte reply encoded in `io.buf` on the back-end channel; a channel that
/// cannot take it is dropped (the back-end closed it).
fn send_backend_reply(io: &mut Io, len: usize, fds: &[BorrowedFd<'_>]) {
    if let Some(channel) = &io.channel {
        if scm::send(&channel.sock, io.buf.frame(len), fds).is_err() {
            io.channel = None;
        }
    }
}

/// Carries out every output; returns the error of an `Output::Close`.
fn drain(
    frontend: &mut Frontend,
    io: &mut Io,
    outcome: &mut Outcome,
) -> Result<Option<FrontendError>, ClientError> {
    let mut closed = None;
    loop {
        let Some(output) = frontend.poll_output() else { return Ok(closed) };
        match output {
            Output::Request { request, need_reply } => {
                let code = request.code();
                let len = io
                    .buf
                    .encode(|buf| request.encode_into(need_reply, buf))
                    .map_err(ClientError::Encode)?;
                let mut owned = FrameFds::new();
                for token in request.fds() {
                    // Cannot fail: a request carries at most MAX_FDS_PER_MSG, the capacity.
                    let _ = owned.try_push(io.take(token)?);
                }
                let borrowed = borrow_all(&owned);
                scm::send(&io.sock, io.buf.frame(len), &borrowed)
                    .map_err(|source| ClientError::Send { code, source })?;
                if frontend.is_awaiting_reply() {
                    io.waiting = Some(code);
                }
            }
            Output::BackendReply(reply) => {
                let len =
                    io.buf.encode(|buf| reply.encode_into(buf)).map_err(ClientError::Encode)?;
                let owned = io.take_opt(reply.fds())?;
                send_backend_reply(io, len, &borrow_all(owned.as_slice()));
            }
            Output::BackendNack { request, status } => {
                let len = io
                    .buf
                    .encode(|buf| encode_status(request, status, buf))
                    .map_err(ClientError::Encode)?;
                send_backend_reply(io, len, &[]);
            }
            Output::Event(Event::BackendRequest { request, need_reply }) => {
                answer_backend(frontend, io, request, need_reply)?;
            }
            Output::Event(event) => {
                if let Some(answer) = own_event(io, event, outcome)? {
                    outcome.answers.push(answer);
                }
            }
            Output::CloseFd(token) => {
                io.fds.release(token);
            }
            Output::Close(error) => {
                closed.get_or_insert(error);
            }
        }
    }
}

fn own_event(
    io: &mut Io,
    event: Event<'_>,
    outcome: &mut Outcome,
) -> Result<Option<Answer>, ClientError> {
    Ok(Some(match event {
        Event::Connected(negotiated) => Answer::Connected(negotiated),
        Event::Failed(error) => {
            outcome.failed.get_or_insert(error);
            return Ok(None);
        }
        Event::VringStopped { index, base } => Answer::VringStopped { index, base },
        Event::ConfigRead { offset, data } => Answer::ConfigRead { offset, data: data.to_vec() },
        Event::Status(status) => Answer::Status(status),
        Event::ShmemConfig(config) => {
            Answer::ShmemConfig(config.memory_sizes.iter().map(|size| size.get()).collect())
        }
        Event::InflightFd { desc, fd } => Answer::InflightFd { desc, fd: io.take_opt(fd)? },
        Event::DeviceStateFd { fd, .. } => Answer::DeviceStateFd { fd: io.take_opt(fd)? },
        Event::SharedObject { uuid, fd } => Answer::SharedObject { uuid, fd: io.take(fd)? },
        Event::PostcopyAdvised { userfaultfd } => {
            Answer::PostcopyAdvised { userfaultfd: io.take(userfaultfd)? }
        }
        Event::PostcopyBases(bases) => Answer::PostcopyBases(bases.to_vec()),
        Event::CryptoSession(session) => Answer::CryptoSession(session.to_vec()),
        _ => return Ok(None),
    }))
}

/// Hands a back-end request to the handler and gives its answer to the state machine.
fn answer_backend(
    frontend: &mut Frontend,
    io: &mut Io,
    request: BackendRequest,
    need_reply: bool,
) -> Result<(), ClientError> {
    let fds = request.fds().iter().map(|t| io.take(*t)).collect::<Result<Vec<_>, _>>()?;
    if io.log.len() >= MAX_LOGGED {
        io.log.pop_front();
    }
    io.log.push_back(ReceivedRequest { request, need_reply });
    let answer = match io.handler.handle(&request, fds) {
        BackendResponse::Done(result) => BackendAnswer::Done(result),
        BackendResponse::SharedObject(Ok(fd)) => {
            BackendAnswer::SharedObject(Ok(io.fds.insert(fd)?))
        }
        BackendResponse::SharedObject(Err(status)) => BackendAnswer::SharedObject(Err(status)),
    };
    if frontend.handle_backend_answer(answer).is_err() {
        // The answer does not fit the request; the token in it stays with us.
        if let BackendAnswer::SharedObject(Ok(token)) = answer {
            io.fds.release(token);
        }
        const EINVAL: u64 = 22;
        if frontend.handle_backend_answer(BackendAnswer::Done(Err(EINVAL))).is_err() {
            let _ = frontend.handle_backend_answer(BackendAnswer::SharedObject(Err(EINVAL)));
        }
    }
    Ok(())
}
