//! One loaded version of an app: its state, counters, worker pool and instance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use tokio::sync::Notify;

use super::outcomes::Outcomes;
use super::pool::Pool;
use crate::config::Limits;
use crate::loader::{CallError, Instance, Module, ModuleInfo, ModuleRequest, ModuleResponse};
use crate::metrics::VersionMetrics;

/// Where a version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum State {
    /// Being mapped and initialised.
    Loading = 0,
    /// Running its warm-up; takes no traffic yet.
    Warming = 1,
    /// Taking new requests.
    Active = 2,
    /// Finishing the requests it already has; takes no new ones.
    Draining = 3,
    /// Shut down and unloaded.
    Retired = 4,
    /// Refused before it took traffic.
    Failed = 5,
    /// The previous version during its successor's guard window: takes no new requests but
    /// stays loaded and warm, its worker threads up, ready to be switched back to.
    Standby = 6,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Loading,
            1 => State::Warming,
            2 => State::Active,
            3 => State::Draining,
            4 => State::Retired,
            6 => State::Standby,
            _ => State::Failed,
        }
    }
}

/// A request running on a version, as shown while it drains.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Running {
    /// Method.
    pub method: String,
    /// Path relative to the mount.
    pub path: String,
    /// How long it has been running.
    pub elapsed_ms: u64,
    /// Its handler overran the request timeout (the client got a 504) and still runs.
    pub stuck: bool,
}

/// Where a dispatched request's handler is, shared by its worker and the task awaiting it.
#[derive(Debug, Default)]
pub(crate) struct Ticket(AtomicU8);

impl Ticket {
    const RUNNING: u8 = 0;
    const DONE: u8 = 1;
    /// Overran its time; a replacement thread took its place.
    const REPLACED: u8 = 2;
    /// Overran its time; no thread was started in its place.
    const STUCK: u8 = 3;

    fn stuck(&self) -> bool {
        self.0.load(SeqCst) >= Self::REPLACED
    }
}

/// A running request, as tracked for status and drains.
#[derive(Debug)]
struct Tracked {
    method: http::Method,
    path: String,
    started: Instant,
    ticket: Arc<Ticket>,
}

/// A request handed to a worker: its reply, and its ticket for [`Version::overran`].
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) reply: tokio::sync::oneshot::Receiver<Result<ModuleResponse, CallError>>,
    ticket: Arc<Ticket>,
    id: u64,
}

/// A request's claim on a version: while it exists the version cannot retire.
#[derive(Debug)]
pub(crate) struct InFlight {
    version: Arc<Version>,
    tracked: Option<u64>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let version = &self.version;
        if let Some(id) = self.tracked {
            lock(&version.running).remove(&id);
        }
        version.served.fetch_add(1, SeqCst);
        if version.in_flight.fetch_sub(1, SeqCst) == 1 && version.state() != State::Active {
            version.idle.notify_waiters();
        }
    }
}

/// An owned request, ready to cross to a worker thread.
#[derive(Debug)]
pub(crate) struct OwnedRequest {
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: bytes::Bytes,
    pub(crate) session: Option<Arc<crate::session::RequestSession>>,
}

use crate::sync::lock;

/// One loaded module version.
#[derive(Debug)]
pub struct Version {
    id: u64,
    info: ModuleInfo,
    source: PathBuf,
    copy: PathBuf,
    hash: u64,
    limits: Limits,
    state: AtomicU8,
    in_flight: AtomicUsize,
    served: AtomicU64,
    idle: Notify,
    pool: Pool,
    instance: ArcSwapOption<Instance>,
    module: Mutex<Option<Arc<Module>>>,
    error: Mutex<Option<String>>,
    running: Mutex<HashMap<u64, Tracked>>,
    next_request: AtomicU64,
    /// Handlers running past their timeout.
    stuck: AtomicUsize,
    stored: AtomicBool,
    loaded_at: SystemTime,
    metrics: VersionMetrics,
    outcomes: Outcomes,
    header: Option<http::HeaderValue>,
}

impl Version {
    /// A version in state `Loading`, with its worker threads started.
    ///
    /// # Errors
    /// If the threads cannot be started.
    pub(crate) fn new(
        id: u64,
        module: Arc<Module>,
        source: PathBuf,
        hash: u64,
        limits: Limits,
        metrics: VersionMetrics,
    ) -> Result<Arc<Version>, String> {
        let info = module.info().clone();
        let pool = Pool::start(
            &format!("baton-{}", info.app),
            limits.worker_threads,
            limits.worker_stack_bytes(),
        )
        .map_err(|e| e.to_string())?;
        // Validated app names and versions are header-safe; built once, not per response.
        let header = http::HeaderValue::from_str(&format!("{}@{}", info.app, info.version)).ok();
        Ok(Arc::new(Version {
            id,
            copy: module.path().to_owned(),
            info,
            source,
            hash,
            limits,
            state: AtomicU8::new(State::Loading as u8),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle: Notify::new(),
            pool,
            instance: ArcSwapOption::empty(),
            module: Mutex::new(Some(module)),
            error: Mutex::new(None),
            running: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(0),
            stuck: AtomicUsize::new(0),
            stored: AtomicBool::new(true),
            loaded_at: SystemTime::now(),
            metrics,
            outcomes: Outcomes::default(),
            header,
        }))
    }

    /// Builds the app instance on a worker thread with its config table (JSON).
    ///
    /// # Errors
    /// The app's `init` error or panic.
    pub(crate) async fn init(&self, config: Vec<u8>, timeout: Duration) -> Result<(), CallError> {
        let Some(module) = lock(&self.module).clone() else {
            return Err(CallError::Failed("module already unloaded".into()));
        };
        let instance = self
            .bounded_call(timeout, move || module.instantiate(&config))
            .await?;
        self.instance.store(Some(Arc::new(instance)));
        self.set_state(State::Warming);
        Ok(())
    }

    /// Runs a lifecycle hook on a worker thread, giving up on it after `timeout` (the hook goes
    /// on running on its thread; unloading the version waits for it).
    async fn bounded_call<T: Send + 'static>(
        &self,
        timeout: Duration,
        hook: impl FnOnce() -> Result<T, CallError> + Send + 'static,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(timeout, self.pool.call(hook)).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(CallError::Failed("worker pool stopped".into())),
            Err(_) => Err(CallError::Overran(timeout)),
        }
    }

    /// Deployment id, unique in this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What the module says about itself.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// The file the operator deployed.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The private copy the library was mapped from.
    pub fn copy_path(&self) -> &Path {
        &self.copy
    }

    /// Hash of the module file's bytes.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Whether the private copy is still kept in the store (for rollback).
    pub fn stored(&self) -> bool {
        self.stored.load(SeqCst)
    }

    pub(crate) fn set_stored(&self, stored: bool) {
        self.stored.store(stored, SeqCst);
    }

    /// Current state.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(SeqCst))
    }

    pub(crate) fn set_state(&self, state: State) {
        self.state.store(state as u8, SeqCst);
        if state != State::Active {
            // Wake a drain that waits for in-flight requests.
            self.idle.notify_waiters();
        }
    }

    /// Requests running on this version now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    /// Requests this version has finished.
    pub fn served(&self) -> u64 {
        self.served.load(SeqCst)
    }

    /// When it was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The last error recorded for this version.
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    pub(crate) fn set_error(&self, reason: &str) {
        *lock(&self.error) = Some(reason.to_owned());
    }

    /// The `x-baton-version` value, `<app>@<version>`.
    pub(crate) fn header(&self) -> Option<&http::HeaderValue> {
        self.header.as_ref()
    }

    /// The metric handles of this version's requests.
    pub fn metrics(&self) -> &VersionMetrics {
        &self.metrics
    }

    /// Counts one answered request in the version's metrics and in the outcomes the guard
    /// compares.
    pub(crate) fn observe(&self, status: http::StatusCode, took: Duration) {
        self.metrics.observe(status, took);
        self.outcomes.record(status, took);
    }

    /// What this version's requests came to.
    pub(crate) fn outcomes(&self) -> &Outcomes {
        &self.outcomes
    }

    /// The limits this version runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Handlers running past their request timeout now.
    pub fn stuck(&self) -> usize {
        self.stuck.load(SeqCst)
    }

    /// More handlers are stuck than `max_stuck_threads` allows: the version answers 503 to new
    /// requests until some of them return.
    pub fn unhealthy(&self) -> bool {
        self.stuck() > self.limits.max_stuck_threads
    }

    /// Worker threads alive now (replacements for stuck handlers included).
    pub fn worker_threads(&self) -> usize {
        self.pool.threads()
    }

    /// The requests running on this version now, longest-running first.
    pub fn running(&self) -> Vec<Running> {
        let mut running: Vec<Running> = lock(&self.running)
            .values()
            .map(|t| Running {
                method: t.method.to_string(),
                path: t.path.clone(),
                elapsed_ms: crate::clock::millis(t.started.elapsed()),
                stuck: t.ticket.stuck(),
            })
            .collect();
        running.sort_by_key(|r| std::cmp::Reverse(r.elapsed_ms));
        running
    }

    /// Claims the version for one request, unless it stopped taking new ones.
    pub(crate) fn try_enter(self: &Arc<Self>) -> Option<InFlight> {
        // Paired with `set_state` + `wait_idle`: either the request sees the new state and backs
        // off, or the drain sees the request in flight and waits for it.
        self.in_flight.fetch_add(1, SeqCst);
        match self.state() {
            State::Active | State::Warming => Some(InFlight {
                version: Arc::clone(self),
                tracked: None,
            }),
            _ => {
                if self.in_flight.fetch_sub(1, SeqCst) == 1 {
                    self.idle.notify_waiters();
                }
                None
            }
        }
    }

    /// Runs the app's warm-up hook on a worker thread.
    pub(crate) async fn warmup(&self, timeout: Duration) -> Result<(), CallError> {
        let Some(instance) = self.instance.load_full() else {
            return Err(CallError::Failed("no instance".into()));
        };
        self.bounded_call(timeout, move || instance.warmup()).await
    }

    /// Sends `GET path` to this version directly; it must answer 2xx within `timeout`.
    pub(crate) async fn warm_request(
        self: &Arc<Self>,
        path: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let guard = self
            .try_enter()
            .ok_or_else(|| "version stopped taking requests".to_owned())?;
        let mut call = self.dispatch(
            guard,
            None,
            OwnedRequest {
                method: http::Method::GET,
                path: path.to_owned(),
                query: query.to_owned(),
                headers: http::HeaderMap::new(),
                body: bytes::Bytes::new(),
                // Warm-up requests have no client and so no session.
                session: None,
            },
        );
        let outcome = tokio::time::timeout(timeout, &mut call.reply).await;
        if outcome.is_err() {
            self.overran(&call);
        }
        match outcome {
            Ok(Ok(Ok(response))) if response.status.is_success() => Ok(()),
            Ok(Ok(Ok(response))) => Err(format!(
                "warm-up request GET {path} answered {}",
                response.status
            )),
            Ok(Ok(Err(e))) => Err(format!("warm-up request GET {path} {e}")),
            Ok(Err(_)) => Err("worker pool stopped".into()),
            Err(_) => Err(format!(
                "warm-up request GET {path} took longer than {} ms",
                timeout.as_millis()
            )),
        }
    }

    /// Handles a request on a worker thread; `guard` is released there when the handler returns.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        mut guard: InFlight,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        request: OwnedRequest,
    ) -> Call {
        let id = self.next_request.fetch_add(1, SeqCst);
        let ticket = Arc::new(Ticket::default());
        lock(&self.running).insert(
            id,
            Tracked {
                method: request.method.clone(),
                path: request.path.clone(),
                started: Instant::now(),
                ticket: Arc::clone(&ticket),
            },
        );
        guard.tracked = Some(id);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job_ticket = Arc::clone(&ticket);
        self.pool.submit(Box::new(move || {
            let instance = guard.version.instance.load();
            let result = match instance.as_ref() {
                Some(instance) => instance.handle(&ModuleRequest {
                    method: request.method.as_str(),
                    path: &request.path,
                    query: &request.query,
                    headers: &request.headers,
                    body: &request.body,
                    session: request.session.as_deref(),
                }),
                None => Err(CallError::Failed("version already retired".into())),
            };
            drop(instance);
            let _ = tx.send(result);
            drop(permit);
            if let Err(overran) =
                job_ticket
                    .0
                    .compare_exchange(Ticket::RUNNING, Ticket::DONE, SeqCst, SeqCst)
            {
                guard
                    .version
                    .stuck_returned(id, overran == Ticket::REPLACED);
            }
            drop(guard);
        }));
        Call {
            reply: rx,
            ticket,
            id,
        }
    }

    /// The request of `call` overran its timeout and its client was answered without it: report
    /// its handler as stuck and, within `max_stuck_threads`, start a thread in its place so the
    /// version keeps its capacity. Nothing happens if the handler already returned.
    pub(crate) fn overran(&self, call: &Call) {
        let replace = self.stuck.fetch_add(1, SeqCst) < self.limits.max_stuck_threads;
        let state = if replace {
            Ticket::REPLACED
        } else {
            Ticket::STUCK
        };
        if call
            .ticket
            .0
            .compare_exchange(Ticket::RUNNING, state, SeqCst, SeqCst)
            .is_err()
        {
            // It returned meanwhile: not stuck after all.
            self.stuck.fetch_sub(1, SeqCst);
            return;
        }
        let replaced = replace
            && match self.pool.replace_stuck() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(app = %self.info.app, version = %self.info.version,
                        error = %e, "no thread started in place of a stuck handler");
                    // Its thread must not leave when the handler returns: none replaced it.
                    call.ticket.0.store(Ticket::STUCK, SeqCst);
                    false
                }
            };
        let (method, path, elapsed_ms) = self.describe(call.id);
        tracing::warn!(app = %self.info.app, version = %self.info.version, %method, %path,
            elapsed_ms, stuck = self.stuck(), replaced, unhealthy = self.unhealthy(),
            "handler stuck past the request timeout; still running");
    }

    /// Method, path and running time of request `id`, for a log line.
    fn describe(&self, id: u64) -> (String, String, u64) {
        lock(&self.running)
            .get(&id)
            .map(|t| {
                (
                    t.method.to_string(),
                    t.path.clone(),
                    crate::clock::millis(t.started.elapsed()),
                )
            })
            .unwrap_or_default()
    }

    /// A stuck handler returned, on its own worker thread.
    fn stuck_returned(&self, id: u64, replaced: bool) {
        let stuck = self.stuck.fetch_sub(1, SeqCst) - 1;
        if replaced {
            // A replacement runs in this thread's place: leave, so the pool keeps its size.
            Pool::leave_after_job();
        }
        let (method, path, elapsed_ms) = self.describe(id);
        tracing::info!(app = %self.info.app, version = %self.info.version, %method, %path,
            elapsed_ms, stuck, "stuck handler returned");
    }

    /// Waits until no request runs on this version, or `timeout` passes. Call after the
    /// version stopped taking new requests.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> bool {
        // `Duration::MAX` waits for ever; an `Instant` that far out would overflow.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return self.in_flight() == 0;
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks the version failed and unloads it in the background: a hook that overran its time
    /// may still be running, and the unload waits for it without holding up the deploy.
    pub(crate) fn fail(self: &Arc<Self>, reason: &str) {
        self.set_error(reason);
        self.set_state(State::Failed);
        let version = Arc::clone(self);
        tokio::spawn(async move { version.unload(State::Failed).await });
    }

    /// Shuts the app down and unloads the library. Call once no request runs on it.
    ///
    /// Returns how long it took and the mappings of the module that remain (none when the
    /// unload worked).
    pub(crate) async fn unload(self: &Arc<Self>, final_state: State) -> (Duration, Vec<String>) {
        let started = Instant::now();
        let version = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || version.unload_blocking(final_state))
            .await
            .unwrap_or_else(|e| vec![format!("unload task failed: {e}")]);
        (started.elapsed(), outcome)
    }

    fn unload_blocking(&self, final_state: State) -> Vec<String> {
        // The shutdown hook and the instance's destructor are module code: run them on the pool,
        // whose threads are then joined, so no thread that ran module code outlives the library.
        if let Some(instance) = self.instance.swap(None) {
            let app = self.info.app.clone();
            let version = self.info.version.clone();
            let hook = final_state == State::Retired;
            self.pool.submit(Box::new(move || {
                if hook && let Err(e) = instance.shutdown() {
                    tracing::warn!(%app, %version, error = %e, "shutdown hook failed");
                }
                drop(instance);
            }));
        }
        self.pool.stop_and_join();
        let module = lock(&self.module).take();
        let mut leftovers = Vec::new();
        if let Some(module) = module {
            match Arc::try_unwrap(module) {
                Ok(module) => {
                    if let Err(e) = module.close() {
                        leftovers.push(format!("dlclose failed: {e}"));
                    }
                }
                Err(_) => leftovers.push("module still referenced; not closed".into()),
            }
            match crate::loader::mapped_regions(&self.copy) {
                Ok(regions) => leftovers.extend(regions),
                Err(e) => leftovers.push(format!("cannot read /proc/self/maps: {e}")),
            }
        }
        self.set_state(final_state);
        leftovers
    }
}
