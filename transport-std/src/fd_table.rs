//! The table that owns the descriptors `vhu-core` names by [`FdToken`].
//!
//! Core never sees a real descriptor: the transport puts each received [`OwnedFd`] here, hands core
//! the token, and later takes the descriptor back when core's action names the token (or releases
//! it when core says `CloseFd`). Tokens increase monotonically and are never reused during a table's
//! life, so a stale token can never reach a newer descriptor.
//!
//! This module must not decide when a descriptor is used or closed (core's actions do) and must not
//! do I/O on the descriptors it holds.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use vhu_core::FdToken;

/// Every token a table can issue has been issued; the descriptor offered was closed.
///
/// A table issues `u32::MAX` tokens; a peer that sends that many descriptors over one connection
/// is misbehaving, and the connection should be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("file descriptor tokens exhausted after {issued} insertions")]
pub struct TokensExhausted {
    /// Tokens issued by the table.
    pub issued: u64,
}

/// Owned descriptors by token; see the module docs.
#[derive(Debug)]
pub struct FdTable {
    fds: BTreeMap<FdToken, OwnedFd>,
    /// The next token to issue; `None` once `u32::MAX` has been issued.
    next: Option<u32>,
    issued: u64,
}

impl Default for FdTable {
    fn default() -> Self {
        Self::new()
    }
}

impl FdTable {
    /// An empty table whose first token is `FdToken(0)`.
    pub fn new() -> Self {
        Self { fds: BTreeMap::new(), next: Some(0), issued: 0 }
    }

    /// Stores `fd` under a fresh token.
    ///
    /// Fails only when every token has been issued; `fd` is then closed.
    pub fn insert(&mut self, fd: OwnedFd) -> Result<FdToken, TokensExhausted> {
        let Some(raw) = self.next else {
            return Err(TokensExhausted { issued: self.issued });
        };
        self.next = raw.checked_add(1);
        self.issued += 1;
        let token = FdToken(raw);
        self.fds.insert(token, fd);
        Ok(token)
    }

    /// Stores every descriptor, in order, and returns their tokens in the same order.
    ///
    /// All or nothing: if the tokens run out, the descriptors of this call already stored are
    /// removed again and every descriptor of the call is closed.
    pub fn insert_all(
        &mut self,
        fds: impl IntoIterator<Item = OwnedFd>,
    ) -> Result<Vec<FdToken>, TokensExhausted> {
        let fds = fds.into_iter();
        let mut tokens = Vec::with_capacity(fds.size_hint().0);
        for fd in fds {
            match self.insert(fd) {
                Ok(token) => tokens.push(token),
                Err(error) => {
                    for token in tokens {
                        self.release(token);
                    }
                    return Err(error);
                }
            }
        }
        Ok(tokens)
    }

    /// Removes the descriptor and hands it to the caller.
    pub fn take(&mut self, token: FdToken) -> Option<OwnedFd> {
        self.fds.remove(&token)
    }

    /// Borrows the descriptor without removing it.
    pub fn get(&self, token: FdToken) -> Option<BorrowedFd<'_>> {
        self.fds.get(&token).map(|fd| fd.as_fd())
    }

    /// Closes the descriptor; `false` if the token names none.
    pub fn release(&mut self, token: FdToken) -> bool {
        self.fds.remove(&token).is_some()
    }

    /// Number of descriptors held.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether no descriptor is held.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Closes every descriptor. Tokens issued before stay retired.
    pub fn clear(&mut self) {
        self.fds.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use rustix::event::{eventfd, EventfdFlags};
    use rustix::io::{read, write};
    use rustix::pipe::{pipe_with, PipeFlags};

    use super::*;

    fn event() -> OwnedFd {
        eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd")
    }

    /// A pipe's write end and a probe that tells whether every copy of it has been closed.
    fn watched() -> (OwnedFd, OwnedFd) {
        let (reader, writer) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).expect("pipe");
        (writer, reader)
    }

    /// EOF on the read end means no write end is open anywhere (a parallel test reusing the
    /// descriptor number cannot fool this check).
    fn all_writers_closed(reader: &OwnedFd) -> bool {
        matches!(read(reader, &mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn tokens_are_fresh_and_never_reused() {
        let mut table = FdTable::default();
        let a = table.insert(event()).expect("token");
        let b = table.insert(event()).expect("token");
        assert_eq!((a, b), (FdToken(0), FdToken(1)));
        assert!(table.release(a));
        table.clear();
        let c = table.insert(event()).expect("token");
        assert_eq!(c, FdToken(2));
        assert!(table.get(a).is_none());
        assert!(table.get(b).is_none());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn get_borrows_the_stored_descriptor() {
        let mut table = FdTable::new();
        let fd = event();
        let raw = fd.as_raw_fd();
        let token = table.insert(fd).expect("token");
        let borrowed = table.get(token).expect("present");
        assert_eq!(borrowed.as_raw_fd(), raw);
        write(borrowed, &3u64.to_ne_bytes()).expect("eventfd write");
        let owned = table.take(token).expect("present");
        let mut buf = [0u8; 8];
        read(&owned, &mut buf).expect("eventfd read");
        assert_eq!(u64::from_ne_bytes(buf), 3);
        assert!(table.take(token).is_none());
        assert!(!table.release(token));
        assert!(table.is_empty());
    }

    #[test]
    fn release_and_clear_close_descriptors() {
        let mut table = FdTable::new();
        let (first, first_probe) = watched();
        let token = table.insert(first).expect("token");
        let (a, a_probe) = watched();
        let (b, b_probe) = watched();
        let tokens = table.insert_all(vec![a, b]).expect("tokens");
        assert_eq!(tokens, vec![FdToken(1), FdToken(2)]);
        assert!(!all_writers_closed(&a_probe));
        assert!(table.release(token));
        assert!(!table.release(token));
        assert!(all_writers_closed(&first_probe));
        assert_eq!(table.len(), 2);
        assert!(!all_writers_closed(&b_probe));
        table.clear();
        assert!(table.is_empty());
        assert!(all_writers_closed(&a_probe));
        assert!(all_writers_closed(&b_probe));
    }

    #[test]
    fn exhaustion_is_an_error_and_rolls_back() {
        let mut table = FdTable::new();
        table.next = Some(u32::MAX - 1);
        let kept = table.insert(event()).expect("token");
        assert_eq!(kept, FdToken(u32::MAX - 1));
        let (a, a_probe) = watched();
        let (b, b_probe) = watched();
        let error = table.insert_all(vec![a, b]).expect_err("out of tokens");
        assert_eq!(error, TokensExhausted { issued: 2 });
        assert_eq!(table.len(), 1);
        assert!(table.get(kept).is_some());
        assert!(all_writers_closed(&a_probe));
        assert!(all_writers_closed(&b_probe));
        let (c, c_probe) = watched();
        assert!(table.insert(c).is_err());
        assert!(all_writers_closed(&c_probe));
    }
}
