//! Deployments: the registry of apps and their versions, the deploy pipeline and the drain and
//! retirement of old versions.
//!
//! - [`Registry`] (`registry/`): apps by name and by mount. A deploy is one request run through
//!   named stages — copy, validate, open, start, warm, switch — whatever asked for it (the
//!   watcher, the scan at start, an upload, the restore of the host state, a rollback or a
//!   canary). Each app has a slot whose versions change only through its one `switch`; what a
//!   switch takes out of service drains and unloads through one drain-then-unload. Operator
//!   actions, canary splits, the guard window, `state.json` and the crash quarantine each have
//!   a file of their own.
//! - [`Version`] (`version.rs`, `version/requests.rs`): one loaded version — its state, worker
//!   pool and instance from load to unload, and the requests running on it.
//! - `pool.rs`: a version's own worker threads; `store.rs`: the private copies of module files;
//!   `outcomes.rs`: the per-version traffic figures the guard compares.
//!
//! A request takes the version it finds in its app's slot (`arc-swap`), claims it (the
//! in-flight count), and runs on that version's own worker pool. A version that stopped taking
//! requests retires once its in-flight count is zero: shutdown hook, pool joined, library
//! closed, mappings checked. With a guard window the version switched away from waits in
//! standby first, and a clear regression of the new version's outcomes switches back to it.

mod collect;
mod outcomes;
mod pool;
mod registry;
mod store;
mod version;

pub(crate) use collect::register_collector;
pub(crate) use registry::is_module_file;
pub(crate) use registry::{
    AppSlot, CanaryStatus, DeployMode, Deployed, GuardState, Registry, Rejection, SwapTimings,
};
pub(crate) use version::{
    BodyRest, InFlight, Origin, OwnedRequest, Reply, RequestSpan, StreamAbort, StreamBody,
};
pub(crate) use version::{Running, State, Version};

/// How many nice levels below the host a deploy's file work runs (see [`in_the_background`]):
/// the kernel gives such a thread about a tenth of the CPU of a request's thread when both
/// want it.
const BACKGROUND_NICE: i32 = 10;

/// Runs `f` — a deploy's copying, hashing, mapping or unmapping of a module — on a thread of its
/// own at a lower CPU priority ([`BACKGROUND_NICE`] levels lower, at most nice 19), and waits for
/// it: on a few cores a swap then takes a little longer instead of delaying the requests being
/// served. A panic in `f` goes on in the caller. If the thread cannot be started, or its priority
/// not lowered, `f` runs anyway.
pub(crate) fn in_the_background<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    lowered(deploy_thread(), f)
}

fn deploy_thread() -> std::thread::Builder {
    // Not `baton-<name>`: a crash here must not read as one of an app named `deploy`'s workers
    // (crash blame), and no app name has a `/`.
    std::thread::Builder::new().name("baton/deploy".into())
}

/// [`in_the_background`] on a thread made by `thread`.
fn lowered<T: Send>(thread: std::thread::Builder, f: impl FnOnce() -> T + Send) -> T {
    let f = std::sync::Mutex::new(Some(f));
    let run = || {
        let f = crate::sync::lock(&f).take();
        f.map(|f| f())
    };
    let outcome = std::thread::scope(|scope| {
        let lowered = thread.spawn_scoped(scope, || {
            // On Linux a nice value is the calling thread's own; a new thread starts with
            // its creator's.
            let host = rustix::process::getpriority_process(None).unwrap_or(0);
            let _ = rustix::process::setpriority_process(None, (host + BACKGROUND_NICE).min(19));
            run()
        });
        match lowered {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => None,
        }
    });
    match outcome {
        Some(value) => value,
        // No thread could be started: here, at the caller's priority.
        None => run().expect("`f` runs once, here when the thread did not start"),
    }
}

/// [`in_the_background`] off the async threads: what a deploy stage awaits for its file work.
/// The runtime's blocking thread only waits for the lowered one.
pub(crate) fn spawn_in_the_background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(move || in_the_background(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(None).expect("the thread's nice value")
    }

    #[test]
    fn background_work_runs_at_a_lower_priority_and_leaves_the_caller_as_it_was() {
        let before = nice();
        let (inside, thread) =
            in_the_background(|| (nice(), std::thread::current().name().map(str::to_owned)));
        assert_eq!(inside, (before + BACKGROUND_NICE).min(19), "nice inside");
        assert_eq!(thread.as_deref(), Some("baton/deploy"));
        assert_eq!(nice(), before, "the caller's own priority is unchanged");
        // What it borrows, it may change.
        let mut copied = Vec::new();
        in_the_background(|| copied.extend_from_slice(b"module"));
        assert_eq!(copied, b"module");
    }

    #[tokio::test]
    async fn a_deploy_stage_awaits_its_file_work_on_the_lowered_thread() {
        let before = nice();
        let (inside, thread) =
            spawn_in_the_background(|| (nice(), std::thread::current().name().map(str::to_owned)))
                .await
                .expect("the task joins");
        assert_eq!(inside, (before + BACKGROUND_NICE).min(19));
        assert_eq!(thread.as_deref(), Some("baton/deploy"));
        let failed = spawn_in_the_background(|| -> u8 { panic!("copy failed") }).await;
        assert!(
            failed.is_err_and(|e| e.is_panic()),
            "a panic is the task's error"
        );
    }

    #[test]
    fn background_work_runs_on_the_caller_when_no_thread_can_be_started() {
        let before = nice();
        let caller = std::thread::current().name().map(str::to_owned);
        // A 1 PiB stack, more than a process's address space: the thread is refused.
        let refused = deploy_thread().stack_size(1 << 50);
        let (inside, thread) = lowered(refused, || {
            (nice(), std::thread::current().name().map(str::to_owned))
        });
        assert_eq!(inside, before, "at the caller's priority");
        assert_eq!(thread, caller, "on the caller's thread");
    }

    #[test]
    fn a_panic_in_background_work_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| {
            in_the_background(|| -> u8 { panic!("copy failed") });
        })
        .expect_err("the panic goes on in the caller");
        assert_eq!(caught.downcast_ref::<&str>(), Some(&"copy failed"));
    }
}
