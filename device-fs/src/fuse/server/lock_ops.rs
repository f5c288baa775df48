//! Lock operations: GETLK, SETLK, SETLKW, and INTERRUPT of a SETLKW being waited for.
//!
//! A SETLKW that finds its lock held is answered later: the file system waits off this thread
//! and the reply goes to the caller's [`Defer`] with the request's `unique`. Waits are kept by
//! `unique` until they finish, so an INTERRUPT (or the end of the session) can cancel them; a
//! cancelled wait is answered with EINTR. Nothing here touches host locks.

use std::sync::Arc;

use rustix::io::Errno;

use super::{encode_reply, Defer, OpResult, Reply, Request, Server};
use crate::fuse::abi::{InterruptIn, LkIn, LkOut, LK_FLOCK};
use crate::fuse::filesystem::FileSystem;
use crate::fuse::lock::{Cancel, Lock, LockRequest, LockStatus, LockWait};
use crate::fuse::types::Handle;

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

    /// SETLK (`defer` is `None` or `wait` false) or SETLKW.
    pub(super) fn do_setlk(
        &self,
        mut req: Request<'_>,
        wait: bool,
        defer: Option<&Arc<dyn Defer>>,
    ) -> OpResult {
        let args: LkIn = req.take()?;
        let request = lock_request(&args)?;
        let unique = req.unique();
        let waiter = match defer.filter(|_| wait) {
            None => None,
            Some(defer) => {
                let cancel = Cancel::default();
                let mut waiting = self.waiting();
                if waiting.contains_key(&unique) {
                    // A guest reusing the unique of a request still waiting: that one keeps it.
                    return Err(Errno::INVAL);
                }
                waiting.insert(unique, cancel.clone());
                drop(waiting);
                let (defer, waiting) = (Arc::clone(defer), Arc::clone(&self.waiting));
                Some(LockWait::new(cancel, move |result: Result<(), Errno>| {
                    waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&unique);
                    let error = result.err().map_or(0, |e| -e.raw_os_error());
                    defer.complete(unique, encode_reply(unique, error, &[]));
                }))
            }
        };
        let status = self.fs.setlk(&req.ctx(), req.node(), &request, waiter);
        if !matches!(status, Ok(LockStatus::Waiting)) {
            // Answered now (or failed): the wait, if any, was dropped unfinished.
            self.waiting().remove(&unique);
        }
        match status? {
            LockStatus::Done => Ok(Reply::empty()),
            LockStatus::Waiting => Ok(Reply::Deferred(unique)),
        }
    }

    /// INTERRUPT: cancels the named request if it is a lock being waited for (the wait then
    /// answers EINTR); anything else has been answered already or cannot be interrupted.
    pub(super) fn do_interrupt(&self, mut req: Request<'_>) -> OpResult {
        if let Ok(args) = req.take::<InterruptIn>() {
            self.cancel(args.unique);
        }
        Ok(Reply::None)
    }
}
