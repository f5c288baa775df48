//! [`Server`]: a non-blocking listening socket and the connections it accepted, driven by the
//! events of a `mio::Poll` the user owns.
//!
//! The user registers the server under one listener token and a range of connection tokens
//! ([`Tokens`]); every other token stays theirs. Each event goes to [`Server::handle_event`],
//! which accepts on the listener's (each connection with a fresh device from the factory, a
//! fresh `Backend`, descriptor table and guest memory), makes progress on a connection's, and
//! tells the caller what happened ([`Handled`]). A connection that ends — the peer hung up, an
//! I/O error, a malformed stream, `Output::Close` — is deregistered and dropped, which stops its
//! queues, resets its device and closes its mappings and descriptors (on a thread of its own
//! with [`Server::teardown_on_threads`], for devices that can be sent there); the others go on. When
//! every connection token is in use, a new connection is accepted and closed at once. When
//! `accept` itself fails (the process is out of descriptors, say), the failure is reported as a
//! refusal and the server goes on: the listener is looked at again when a connection ends and
//! frees what it held, or when another front-end connects.
//!
//! This module must not implement protocol behaviour; it only owns sockets, tokens and devices.

use std::io::ErrorKind;
use std::ops::{ControlFlow, Range};
use std::path::Path;

use mio::event::Event;
use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Registry, Token};
use vhu_transport_std::{Device, SocketFile};

use crate::connection::{Connection, Step};
use crate::error::{ConnectionError, ServerError};

/// Connections accepted per listener event before the server yields to other sources.
const ACCEPT_BUDGET: usize = 64;

/// The tokens a server uses in the caller's poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// The listening socket's token.
    pub listener: Token,
    /// Token values for connections, one per connection served at a time; must not contain
    /// `listener`.
    pub connections: Range<usize>,
}

/// How a connection ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Ended {
    /// The front-end hung up between messages.
    HungUp,
    /// The connection was closed because of this error.
    Closed(ConnectionError),
    /// The caller closed it with [`Server::close`].
    ByCaller,
}

/// What [`Server::handle_event`] did with an event.
#[derive(Debug)]
#[non_exhaustive]
pub enum Handled {
    /// The token is not the server's (or the server is not registered): the caller's own source.
    NotOurs(Token),
    /// A connection token with no connection behind it (it ended earlier in the same batch).
    Stale(Token),
    /// The listener was ready: these connections were accepted and registered, these refused.
    Accepted {
        /// Tokens of the new connections.
        accepted: Vec<Token>,
        /// Why others were closed at once.
        refused: Vec<ConnectionError>,
    },
    /// A connection made progress and stays open.
    Served(Token),
    /// A connection ended and its token is free again.
    Ended {
        /// Its token.
        token: Token,
        /// Why.
        how: Ended,
    },
}

/// The poll the server is registered with.
#[derive(Debug)]
struct Registered {
    registry: Registry,
    tokens: Tokens,
}

/// A vhost-user back-end server over `mio`; see the module docs.
pub struct Server<D: Device, F: FnMut() -> D> {
    listener: UnixListener,
    new_device: F,
    registered: Option<Registered>,
    /// Connection `i` has token `tokens.connections.start + i`.
    slots: Vec<Option<Connection<D>>>,
    /// The socket file [`Server::bind`] made, removed with the server.
    bound: Option<SocketFile>,
    /// `accept` failed and the listener was left unarmed until a connection ends.
    accept_paused: bool,
    /// Tears an ended connection down somewhere else than the loop's thread
    /// ([`Server::teardown_on_threads`]).
    teardown: Option<fn(Connection<D>)>,
}

impl<D: Device, F: FnMut() -> D> std::fmt::Debug for Server<D, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("registered", &self.registered)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl<D: Device, F: FnMut() -> D> Server<D, F> {
    /// Binds a socket at `path` as a daemon does ([`SocketFile`]): mode 0600 whatever the
    /// umask (whoever connects acts as the VMM), with a locked `<path>.pid`, taking over a
    /// socket a dead server left and never one a live server holds; both files are removed
    /// when the server is dropped, while their names still hold its own. `new_device` makes the
    /// device of each accepted connection.
    pub fn bind(path: impl AsRef<Path>, new_device: F) -> Result<Self, ServerError> {
        let path = path.as_ref().to_path_buf();
        let bound = SocketFile::bind(&path)
            .and_then(|(listener, file)| listener.set_nonblocking(true).map(|()| (listener, file)));
        match bound {
            Ok((listener, file)) => {
                Ok(Self::with_listener(UnixListener::from_std(listener), new_device, Some(file)))
            }
            Err(source) => Err(ServerError::Bind { path, source }),
        }
    }

    /// A server on a listening socket the caller set up (or inherited); it is made non-blocking.
    pub fn from_listener(
        listener: std::os::unix::net::UnixListener,
        new_device: F,
    ) -> Result<Self, ServerError> {
        listener.local_addr().map_err(ServerError::Listener)?;
        listener.set_nonblocking(true).map_err(ServerError::Listener)?;
        Ok(Self::with_listener(UnixListener::from_std(listener), new_device, None))
    }

    fn with_listener(listener: UnixListener, new_device: F, bound: Option<SocketFile>) -> Self {
        Self {
            listener,
            new_device,
            registered: None,
            slots: Vec::new(),
            bound,
            accept_paused: false,
            teardown: None,
        }
    }

    /// The socket path, when the server bound it.
    pub fn path(&self) -> Option<&Path> {
        self.bound.as_ref().map(SocketFile::path)
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_some()).count()
    }

    /// Registers the listener with `registry` under `tokens.listener`; accepted connections are
    /// registered with the same poll under tokens from `tokens.connections`.
    pub fn register(&mut self, registry: &Registry, tokens: Tokens) -> Result<(), ServerError> {
        if self.registered.is_some() {
            return Err(ServerError::AlreadyRegistered);
        }
        if tokens.connections.is_empty() {
            return Err(ServerError::Tokens("the connection token range is empty"));
        }
        if tokens.connections.contains(&tokens.listener.0) {
            return Err(ServerError::Tokens("the listener token is in the connection range"));
        }
        let registry = registry.try_clone().map_err(ServerError::Register)?;
        registry
            .register(&mut self.listener, tokens.listener, Interest::READABLE)
            .map_err(ServerError::Register)?;
        self.registered = Some(Registered { registry, tokens });
        Ok(())
    }

    /// Handles one event of the poll the server is registered with. Connection failures are
    /// reported in [`Handled::Ended`]; `Err` only when the listener itself fails.
    pub fn handle_event(&mut self, event: &Event) -> Result<Handled, ServerError> {
        let token = event.token();
        let Some(registered) = &self.registered else { return Ok(Handled::NotOurs(token)) };
        if token == registered.tokens.listener {
            return self.accept();
        }
        let Some(index) = token.0.checked_sub(registered.tokens.connections.start) else {
            return Ok(Handled::NotOurs(token));
        };
        if token.0 >= registered.tokens.connections.end {
            return Ok(Handled::NotOurs(token));
        }
        let Some(connection) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return Ok(Handled::Stale(token));
        };
        let how = match connection.handle_ready(&registered.registry, token) {
            Ok(Step::Open) => return Ok(Handled::Served(token)),
            Ok(Step::HungUp) => Ended::HungUp,
            Err(error) => Ended::Closed(error),
        };
        self.remove_now_or_elsewhere(index, true);
        Ok(Handled::Ended { token, how })
    }

    /// Closes the connection behind `token`, as if it had ended; `false` if there is none.
    pub fn close(&mut self, token: Token) -> bool {
        let Some(registered) = &self.registered else { return false };
        let Some(index) = token.0.checked_sub(registered.tokens.connections.start) else {
            return false;
        };
        if token.0 >= registered.tokens.connections.end
            || !self.slots.get(index).is_some_and(Option::is_some)
        {
            return false;
        }
        self.remove_now_or_elsewhere(index, true);
        true
    }

    /// Polls `poll` (which the server must be registered with) and handles every event until
    /// `on_handled` says stop. Events of other tokens reach `on_handled` as [`Handled::NotOurs`].
    pub fn run(
        &mut self,
        poll: &mut Poll,
        mut on_handled: impl FnMut(&Handled) -> ControlFlow<()>,
    ) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(64);
        loop {
            match poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(ServerError::Poll(error)),
            }
            for event in &events {
                let handled = self.handle_event(event)?;
                if on_handled(&handled).is_break() {
                    return Ok(());
                }
            }
        }
    }

    fn accept(&mut self) -> Result<Handled, ServerError> {
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for _ in 0..ACCEPT_BUDGET {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    return Ok(Handled::Accepted { accepted, refused });
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(error) => {
                    // Retrying now would fail alike and, re-armed, spin: wait for a connection
                    // to end (`remove`) or for another to arrive.
                    refused.push(ConnectionError::Accept(error));
                    self.accept_paused = true;
                    return Ok(Handled::Accepted { accepted, refused });
                }
            };
            match self.admit(stream) {
                Ok(token) => accepted.push(token),
                Err(error) => refused.push(error),
            }
        }
        // More may be pending: re-arm the edge-triggered listener so a later event reports them.
        self.arm_listener()?;
        Ok(Handled::Accepted { accepted, refused })
    }

    /// Asks the poll to report the listener again if connections are pending.
    fn arm_listener(&mut self) -> Result<(), ServerError> {
        if let Some(registered) = &self.registered {
            let listener = registered.tokens.listener;
            registered
                .registry
                .reregister(&mut self.listener, listener, Interest::READABLE)
                .map_err(ServerError::Register)?;
        }
        self.accept_paused = false;
        Ok(())
    }

    /// Gives `stream` a free token, a device and a back-end, and registers it.
    fn admit(&mut self, stream: mio::net::UnixStream) -> Result<Token, ConnectionError> {
        let Some(registered) = &self.registered else {
            return Err(ConnectionError::NoFreeToken { slots: 0 });
        };
        let range = &registered.tokens.connections;
        let index = match self.slots.iter().position(Option::is_none) {
            Some(index) => index,
            None if self.slots.len() < range.len() => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(ConnectionError::NoFreeToken { slots: range.len() }),
        };
        let token = Token(range.start + index);
        let mut connection = Connection::new(stream, (self.new_device)())?;
        connection.register(&registered.registry, token)?;
        self.slots[index] = Some(connection);
        Ok(token)
    }

    /// Deregisters and drops connection `index` (which tears its session down), on a thread of
    /// its own when [`Server::teardown_on_threads`] asked for it and `elsewhere` allows.
    fn remove_now_or_elsewhere(&mut self, index: usize, elsewhere: bool) {
        let Some(mut connection) = self.slots.get_mut(index).and_then(Option::take) else {
            return;
        };
        if let Some(registered) = &self.registered {
            connection.deregister(&registered.registry);
        }
        match self.teardown.filter(|_| elsewhere) {
            Some(teardown) => teardown(connection),
            None => drop(connection),
        }
        if self.accept_paused {
            // What the connection held is free: connections left waiting may be accepted now.
            // Should the registry refuse, the pause stays and the next ending tries again.
            let _ = self.arm_listener();
        }
    }
}

impl<D: Device + Send + 'static, F: FnMut() -> D> Server<D, F> {
    /// Tears each ended connection down on a thread of its own instead of the loop's: stopping
    /// a busy device's queues (they finish the requests they hold) and resetting it then hold up
    /// no other connection's messages. Dropping the server still tears every connection down
    /// before it returns.
    pub fn teardown_on_threads(&mut self) {
        self.teardown = Some(teardown_on_thread::<D>);
    }
}

/// Drops `connection` (stopping its queues and resetting its device) on a new thread; on this
/// one if no thread can be started.
fn teardown_on_thread<D: Device + Send + 'static>(connection: Connection<D>) {
    // Should the thread not start, the closure — the connection with it — is dropped here.
    let _ = std::thread::Builder::new().name("vhu-teardown".into()).spawn(move || drop(connection));
}

impl<D: Device, F: FnMut() -> D> Drop for Server<D, F> {
    fn drop(&mut self) {
        for index in 0..self.slots.len() {
            self.remove_now_or_elsewhere(index, false);
        }
        if let Some(registered) = &self.registered {
            let _ = registered.registry.deregister(&mut self.listener);
        }
        if let Some(file) = &self.bound {
            file.remove();
        }
    }
}
