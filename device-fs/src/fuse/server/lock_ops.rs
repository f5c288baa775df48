//! Lock operations: GETLK, SETLK, SETLKW, and INTERRUPT of a SETLKW being waited for.
//!
//! A SETLKW that finds its lock held is answered later: the file system waits off this thread
//! and the reply goes to the caller's [`Defer`] with the request's `unique`. Waits are kept by
//! `unique` until they finish, so an INTERRUPT (or the end of the session) can cancel them; a
//! cancelled wait is answered with EINTR. An INTERRUPT may overtake the request it names (it
//! comes on the high-priority queue, or another queue's thread handles it first): the last
//! [`EARLY_INTERRUPTS`] such uniques are remembered, and a SETLKW that arrives under one of
//! them waits already cancelled. Nothing here touches host locks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, MutexGuard};

use rustix::io::Errno;

use super::{encode_reply, Defer, OpResult, Reply, Request, Server};
use crate::fuse::abi::{InterruptIn, LkIn, LkOut, LK_FLOCK};
use crate::fuse::filesystem::FileSystem;
use crate::fuse::lock::{Cancel, Lock, LockRequest, LockStatus, LockType, LockWait};
use crate::fuse::types::Handle;

/// INTERRUPTs of requests not seen yet that are remembered (FUSE lets a server drop any).
const EARLY_INTERRUPTS: usize = 64;

/// How long [`Server::cancel_and_settle`] waits for cancelled waits to end: a waiter looks
/// at its cancel between attempts, which are at most tens of milliseconds apart.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

fn lock_request(args: &LkIn) -> Result<LockRequest, Errno> {
    Ok(LockRequest {
        handle: Handle(args.fh),
        owner: args.owner,
        lock: Lock::from_wire(&args.lk)?,
        flock: args.lk_flags & LK_FLOCK != 0,
    })
}

impl<F: FileSystem> Server<F> {
    pub(super) fn do_getlk(&self, mut req: Request<'_>) -> OpResult {
        let args: LkIn = req.take()?;
        let lock = self.fs.getlk(&req.ctx(), req.node(), &lock_request(&args)?)?;
        Ok(Reply::of(&LkOut { lk: lock.to_wire() }))
    }

    /// SETLK (`defer` is `None` or `wait` false) or SETLKW. A POSIX SETLKW is tried first as a
    /// SETLK: an unlock (Linux sends one as SETLKW when the caller used the blocking form) or a
    /// free lock is answered at once, and only one that has to wait takes room on the queue
    /// ([`Defer::hold`]; ENOLCK when there is none). A flock lock takes the room first: its
    /// attempt converts a lock the owner holds (flock(2) lets go of it first), so one refused
    /// for want of room after it would leave the owner with nothing.
    pub(super) fn do_setlk(
        &self,
        mut req: Request<'_>,
        wait: bool,
        defer: Option<&Arc<dyn Defer>>,
    ) -> OpResult {
        let args: LkIn = req.take()?;
        let request = lock_request(&args)?;
        let unique = req.unique();
        let Some(defer) = defer.filter(|_| wait) else {
            return self.fs.setlk(&req.ctx(), req.node(), &request, None).map(|_| Reply::empty());
        };
        if self.waiting().contains_key(&unique) {
            // A guest reusing the unique of a request still waiting: that one keeps it.
            return Err(Errno::INVAL);
        }
        let converts = request.flock && request.lock.typ != LockType::Unlock;
        if !converts {
            match self.fs.setlk(&req.ctx(), req.node(), &request, None) {
                Err(Errno::AGAIN) => {}
                done => return done.map(|_| Reply::empty()),
            }
        }
        // It may have to wait: room on the queue first (POSIX: ENOLCK, no more locks
        // available).
        if !defer.hold() {
            return Err(Errno::NOLCK);
        }
        let cancel = Cancel::default();
        let mut waiting = self.waiting();
        if waiting.contains_key(&unique) {
            drop(waiting);
            defer.unhold();
            return Err(Errno::INVAL);
        }
        let mut early = self.interrupted_early();
        if let Some(at) = early.iter().position(|u| *u == unique) {
            early.remove(at);
            cancel.cancel();
        }
        drop(early);
        waiting.insert(unique, cancel.clone());
        drop(waiting);
        let completer = Arc::clone(defer);
        let (waiting, ending) = (Arc::clone(&self.waiting), Arc::clone(&self.ending));
        let own = cancel.clone();
        let waiter = LockWait::new(cancel, move |result: Result<(), Errno>| {
            // Among the ending before out of the table, so a stop that settles the waits
            // (`cancel_and_settle`) finds it in one or the other until its outcome is posted,
            // and does not answer its chain EINTR meanwhile for a lock taken. Out of the table
            // before the reply: once the guest has it, the unique is free.
            lock_table(&ending).push((unique, own.clone()));
            lock_table(&waiting).remove(&unique);
            let error = result.err().map_or(0, |e| -e.raw_os_error());
            completer.complete(unique, encode_reply(unique, error, &[]));
            lock_table(&ending).retain(|(_, cancel)| !cancel.same(&own));
        });
        let status = self.fs.setlk(&req.ctx(), req.node(), &request, Some(waiter));
        if !matches!(status, Ok(LockStatus::Waiting)) {
            // Answered now (or failed): the wait was dropped unfinished. Only this request's
            // own entry may go: a SETLK reusing the unique of a SETLKW still waiting must not
            // take that wait's cancel away.
            self.waiting().remove(&unique);
            defer.unhold();
        }
        match status? {
            LockStatus::Done => Ok(Reply::empty()),
            LockStatus::Waiting => Ok(Reply::Deferred(unique)),
        }
    }

    /// INTERRUPT: cancels the named request if it is a lock being waited for (the wait then
    /// answers EINTR), or remembers it for a SETLKW that has not arrived yet; anything else has
    /// been answered already or cannot be interrupted.
    pub(super) fn do_interrupt(&self, mut req: Request<'_>) -> OpResult {
        let Ok(args) = req.take::<InterruptIn>() else { return Ok(Reply::None) };
        let waiting = self.waiting();
        match waiting.get(&args.unique) {
            Some(cancel) => cancel.cancel(),
            // Ended, its reply posted or on its way: nothing to cancel, and nothing to keep
            // for a request that reuses the unique.
            None if lock_table(&self.ending).iter().any(|(u, _)| *u == args.unique) => {}
            None => {
                let mut early = self.interrupted_early();
                if early.len() == EARLY_INTERRUPTS {
                    early.pop_front();
                }
                early.push_back(args.unique);
            }
        }
        Ok(Reply::None)
    }

    /// Cancels the SETLKW `unique` if it is being waited for: it is answered with EINTR.
    pub fn cancel(&self, unique: u64) {
        if let Some(cancel) = self.waiting().get(&unique) {
            cancel.cancel();
        }
    }

    /// Cancels the SETLKWs `uniques` and waits, up to a second, until each wait has
    /// ended and posted its outcome (EINTR, or the lock it took just before the cancel), as
    /// does each that has ended and is posting it.
    pub fn cancel_and_settle(&self, uniques: &[u64]) {
        let mut waits: Vec<Cancel> = {
            let waiting = self.waiting();
            uniques.iter().filter_map(|unique| waiting.get(unique).cloned()).collect()
        };
        // Then those that ended and are posting their outcome: one that left the table since
        // was put here first.
        let ending = lock_table(&self.ending);
        waits.extend(
            ending.iter().filter(|(unique, _)| uniques.contains(unique)).map(|(_, c)| c.clone()),
        );
        drop(ending);
        waits.iter().for_each(Cancel::cancel);
        let deadline = std::time::Instant::now() + SETTLE_LIMIT;
        while !waits.iter().all(Cancel::is_finished) {
            if std::time::Instant::now() >= deadline {
                log::warn!("a cancelled lock wait did not end within {SETTLE_LIMIT:?}");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Cancels every SETLKW being waited for.
    pub(super) fn cancel_all(&self) {
        self.waiting().values().for_each(Cancel::cancel);
    }

    pub(super) fn interrupted_early(&self) -> MutexGuard<'_, VecDeque<u64>> {
        // Single pushes and removals: a panic elsewhere cannot leave it half-changed.
        self.interrupted_early.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn waiting(&self) -> MutexGuard<'_, HashMap<u64, Cancel>> {
        lock_table(&self.waiting)
    }
}

/// One of the wait tables, locked: single inserts and removals, so a panic elsewhere cannot
/// leave one half-changed.
fn lock_table<T>(table: &std::sync::Mutex<T>) -> MutexGuard<'_, T> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}
