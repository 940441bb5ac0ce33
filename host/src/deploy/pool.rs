//! A version's own worker threads: every call into a module runs on them.
//!
//! tokio's blocking pool is shared by all versions and keeps threads alive, so it cannot be used:
//! a library may only be unmapped once every thread that ran its code has exited (its
//! thread-local destructors pin it). Each version therefore owns a pool that is stopped and
//! joined before its library is closed.

use std::sync::Mutex;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// Work for a pool thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

enum Msg {
    Run(Job),
    Stop,
}

/// A fixed set of threads running jobs from one queue.
#[derive(Debug)]
pub(crate) struct Pool {
    tx: Sender<Msg>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Run(_) => "Run",
            Msg::Stop => "Stop",
        })
    }
}

fn work(rx: Receiver<Msg>) {
    while let Ok(Msg::Run(job)) = rx.recv() {
        job();
    }
}

impl Pool {
    /// Starts `threads` threads named `name`.
    pub(crate) fn start(name: &str, threads: usize) -> std::io::Result<Pool> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut handles = Vec::with_capacity(threads);
        for _ in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || work(rx));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    let pool = Pool {
                        tx,
                        threads: Mutex::new(handles),
                    };
                    pool.stop_and_join();
                    return Err(e);
                }
            }
        }
        Ok(Pool {
            tx,
            threads: Mutex::new(handles),
        })
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

    /// Lets queued jobs finish, then stops and joins every thread. Blocks.
    pub(crate) fn stop_and_join(&self) {
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for _ in &handles {
            let _ = self.tx.send(Msg::Stop);
        }
        for handle in handles {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_queued_job_before_stopping() {
        let pool = Pool::start("test-pool", 3).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let done = Arc::clone(&done);
            pool.submit(Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        pool.stop_and_join();
        assert_eq!(done.load(Ordering::SeqCst), 100);
        assert!(pool.threads.lock().unwrap().is_empty());
    }
}
