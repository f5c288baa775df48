//! A queue's worker pool (`--thread-pool-size N`): requests of one queue handled by up to N
//! threads at once, so a slow request (a large write, a fsync on a slow host file system) does
//! not hold up the rest of the queue behind it.
//!
//! The pool only runs jobs; which chain a job answers and how its result reaches the ring is
//! the queue's (`queue.rs`). Dropping the pool lets every queued job run, then joins the threads.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One request's work.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Up to `size` threads taking jobs in order.
pub(super) struct Pool {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads.len()).finish()
    }
}

impl Pool {
    /// Starts `size` threads (at least one). A thread the system refuses to start is simply
    /// missing; if none starts, jobs run on the caller's thread.
    pub(super) fn new(size: usize) -> Self {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..size.max(1))
            .filter_map(|i| {
                let queue = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("vhu-fs-pool-{i}"))
                    .spawn(move || work(&queue))
                    .ok()
            })
            .collect();
        Self { jobs: Some(jobs), threads }
    }

    /// Runs `job` on a pool thread.
    pub(super) fn run(&self, job: Job) {
        let job = match &self.jobs {
            Some(jobs) if !self.threads.is_empty() => match jobs.send(job) {
                Ok(()) => return,
                Err(refused) => refused.0,
            },
            _ => job,
        };
        job();
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only to take the next job, never while running it.
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    use super::*;

    #[test]
    fn jobs_run_at_once_up_to_the_size_and_all_run_before_drop_returns() {
        let pool = Pool::new(3);
        // Three jobs that can only finish together: they run on three threads at once.
        let barrier = Arc::new(Barrier::new(3));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let (barrier, done) = (Arc::clone(&barrier), Arc::clone(&done));
            pool.run(Box::new(move || {
                barrier.wait();
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        for _ in 0..50 {
            let done = Arc::clone(&done);
            pool.run(Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        drop(pool);
        assert_eq!(done.load(Ordering::SeqCst), 53);
    }
}
