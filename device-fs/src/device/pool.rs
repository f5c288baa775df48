//! A queue's worker pool (`--thread-pool-size N`): requests of one queue handled by up to N
//! threads at once, so a slow request (a large write, a fsync on a slow host file system) does
//! not hold up the rest of the queue behind it.
//!
//! The pool only runs jobs; which chain a job answers and how its result reaches the ring is
//! the queue's (`queue.rs`). Dropping the pool lets every queued job run, then joins the threads.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// One request's work.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Jobs not yet taken, and whether the pool is closing.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    closed: bool,
}

/// What the pool's threads share: the queue and the condition idle threads wait on. An idle
/// thread waits on the condition, not on the lock, so a job wakes exactly one thread (a
/// channel behind a lock woke the thread holding the lock, whose release then woke the next
/// one to wait in its place).
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Single pushes and pops: a panic elsewhere cannot leave the queue half-changed.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Up to `size` threads taking jobs in order.
pub(super) struct Pool {
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared::default());
        let threads = (0..size.max(1))
            .filter_map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("vhu-fs-pool-{i}"))
                    .spawn(move || work(&shared))
                    .ok()
            })
            .collect();
        Self { shared, threads }
    }

    /// Runs `job` on a pool thread.
    pub(super) fn run(&self, job: Job) {
        if self.threads.is_empty() {
            return job();
        }
        let mut queue = self.shared.lock();
        queue.jobs.push_back(job);
        let wake = queue.idle > 0;
        drop(queue);
        // A thread that is busy takes the job when it is done: only an idle one is woken.
        if wake {
            self.shared.ready.notify_one();
        }
    }
}

fn work(shared: &Shared) {
    let mut queue = shared.lock();
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            // The lock is held only to take the next job, never while running it.
            drop(queue);
            job();
            queue = shared.lock();
        } else if queue.closed {
            return;
        } else {
            queue.idle += 1;
            queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            queue.idle -= 1;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
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

    #[test]
    fn a_job_queued_while_every_thread_is_busy_runs_when_one_is_free() {
        let pool = Pool::new(1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        pool.run(Box::new(move || {
            let _ = started.send(());
            let _ = held.recv();
        }));
        running.recv().expect("the first job runs");
        // The only thread is busy: nobody is woken for this one; the thread takes it next.
        let (finished, done) = std::sync::mpsc::channel::<()>();
        pool.run(Box::new(move || {
            let _ = finished.send(());
        }));
        release.send(()).expect("release the first job");
        done.recv_timeout(std::time::Duration::from_secs(10)).expect("the second job ran");
    }
}
