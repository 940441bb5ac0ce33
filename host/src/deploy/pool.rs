//! A version's own worker threads: every call into a module runs on them.
//!
//! tokio's blocking pool is shared by all versions and keeps threads alive, so it cannot be used:
//! a library may only be unmapped once every thread that ran its code has exited (its
//! thread-local destructors pin it). Each version therefore owns a pool that is stopped and
//! joined before its library is closed.
//!
//! A handler that overruns its request timeout keeps its thread: Rust cannot stop a thread from
//! outside. The pool then starts a replacement ([`Pool::replace_stuck`]) so the version keeps its
//! capacity, and the stuck thread exits once its handler returns ([`Pool::leave_after_job`]), so
//! the pool settles back to its size. Replacements are bounded by the caller.

use std::cell::Cell;
use std::sync::Mutex;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// Work for a pool thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

enum Msg {
    Run(Job),
    Stop,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Run(_) => "Run",
            Msg::Stop => "Stop",
        })
    }
}

/// Why a pool thread could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// The pool was stopped; its version is being unloaded.
    #[error("the worker pool is stopped")]
    Stopped,
    /// The OS refused the thread.
    #[error("cannot start a worker thread: {0}")]
    Spawn(#[source] std::io::Error),
}

thread_local! {
    /// Set by a job whose thread was replaced while it ran: the thread exits after the job.
    static LEAVE: Cell<bool> = const { Cell::new(false) };
}

/// A set of threads running jobs from one queue.
#[derive(Debug)]
pub(crate) struct Pool {
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    name: String,
    stack_bytes: usize,
    threads: Mutex<Threads>,
}

#[derive(Debug, Default)]
struct Threads {
    handles: Vec<JoinHandle<()>>,
    /// Set by [`Pool::stop_and_join`]: no thread is started after it.
    stopped: bool,
}

fn work(rx: Receiver<Msg>) {
    while let Ok(Msg::Run(job)) = rx.recv() {
        job();
        if LEAVE.get() {
            return;
        }
    }
}

impl Pool {
    /// Starts `threads` threads named `name`, each with a stack of `stack_bytes`.
    pub(crate) fn start(name: &str, threads: usize, stack_bytes: usize) -> Result<Pool, PoolError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool = Pool {
            tx,
            rx,
            name: name.to_owned(),
            stack_bytes,
            threads: Mutex::default(),
        };
        for _ in 0..threads {
            if let Err(e) = pool.spawn() {
                pool.stop_and_join();
                return Err(e);
            }
        }
        Ok(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Threads> {
        crate::sync::lock(&self.threads)
    }

    fn spawn(&self) -> Result<(), PoolError> {
        let mut threads = self.lock();
        if threads.stopped {
            return Err(PoolError::Stopped);
        }
        // Threads that left after a stuck job: join them now, so their stacks are given back.
        for finished in extract_finished(&mut threads.handles) {
            let _ = finished.join();
        }
        let rx = self.rx.clone();
        let handle = std::thread::Builder::new()
            .name(self.name.clone())
            .stack_size(self.stack_bytes)
            .spawn(move || work(rx))
            .map_err(PoolError::Spawn)?;
        threads.handles.push(handle);
        Ok(())
    }

    /// Starts one more thread in place of one whose job overran its time.
    ///
    /// # Errors
    /// If the pool is stopped or the thread cannot be started.
    pub(crate) fn replace_stuck(&self) -> Result<(), PoolError> {
        self.spawn()
    }

    /// Called from inside a job whose thread was replaced: the thread exits after the job
    /// instead of taking the next one.
    pub(crate) fn leave_after_job() {
        LEAVE.set(true);
    }

    /// Threads started and not yet joined (including those busy with a stuck job).
    pub(crate) fn threads(&self) -> usize {
        self.lock()
            .handles
            .iter()
            .filter(|t| !t.is_finished())
            .count()
    }

    /// Queues a job. Jobs submitted after [`stop_and_join`](Self::stop_and_join) never run.
    pub(crate) fn submit(&self, job: Job) {
        let _ = self.tx.send(Msg::Run(job));
    }

    /// Runs `f` on a pool thread and waits for its result.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(f());
        }));
        rx.await.ok()
    }

    /// Lets queued jobs finish, then stops and joins every thread. Blocks, also for jobs that
    /// are stuck, until they return.
    pub(crate) fn stop_and_join(&self) {
        let handles = {
            let mut threads = self.lock();
            threads.stopped = true;
            std::mem::take(&mut threads.handles)
        };
        for _ in &handles {
            let _ = self.tx.send(Msg::Stop);
        }
        for handle in handles {
            let _ = handle.join();
        }
    }
}

fn extract_finished(threads: &mut Vec<JoinHandle<()>>) -> Vec<JoinHandle<()>> {
    let mut finished = Vec::new();
    let mut i = 0;
    while i < threads.len() {
        if threads[i].is_finished() {
            finished.push(threads.swap_remove(i));
        } else {
            i += 1;
        }
    }
    finished
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn runs_every_queued_job_before_stopping() {
        let pool = Pool::start("test-pool", 3, 256 * 1024).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let done = Arc::clone(&done);
            pool.submit(Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        pool.stop_and_join();
        assert_eq!(done.load(Ordering::SeqCst), 100);
        assert_eq!(pool.threads(), 0);
    }

    #[test]
    fn a_replaced_thread_leaves_after_its_job_and_the_pool_keeps_its_size() {
        let pool = Arc::new(Pool::start("test-pool", 1, 256 * 1024).unwrap());
        let (release, wait) = crossbeam_channel::bounded::<()>(0);
        pool.submit(Box::new(move || {
            let _ = wait.recv();
            Pool::leave_after_job();
        }));
        pool.replace_stuck().unwrap();
        // The replacement runs new jobs while the first thread is still busy.
        let (tx, rx) = crossbeam_channel::bounded(1);
        pool.submit(Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(pool.threads(), 2);
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.threads() != 1 {
            assert!(Instant::now() < deadline, "the stuck thread did not leave");
            std::thread::sleep(Duration::from_millis(5));
        }
        pool.stop_and_join();
    }

    #[test]
    fn threads_get_the_stack_size_asked_for() {
        let pool = Pool::start("test-pool", 1, 64 * 1024 * 1024).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        pool.submit(Box::new(move || {
            // At least 6 MiB of stack: more than Rust's 2 MiB default for spawned threads.
            fn deep(n: usize) -> usize {
                let pad = std::hint::black_box([n as u8; 1024]);
                if n == 0 {
                    pad[0] as usize
                } else {
                    deep(n - 1) + usize::from(pad[1]) % 2
                }
            }
            tx.send(deep(6 * 1024)).unwrap();
        }));
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        pool.stop_and_join();
    }
}
