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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct Running {
    /// Method.
    pub method: String,
    /// Path relative to the mount.
    pub path: String,
    /// How long it has been running.
    pub elapsed_ms: u64,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
    running: Mutex<HashMap<u64, (http::Method, String, Instant)>>,
    next_request: AtomicU64,
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
        let pool = Pool::start(&format!("baton-{}", info.app), limits.worker_threads)
            .map_err(|e| format!("cannot start worker threads: {e}"))?;
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
    pub(crate) async fn init(&self, config: Vec<u8>) -> Result<(), CallError> {
        let Some(module) = lock(&self.module).clone() else {
            return Err(CallError::Failed("module already unloaded".into()));
        };
        let instance = self
            .pool
            .call(move || module.instantiate(&config))
            .await
            .unwrap_or_else(|| Err(CallError::Failed("worker pool stopped".into())))?;
        self.instance.store(Some(Arc::new(instance)));
        self.set_state(State::Warming);
        Ok(())
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

    /// The requests running on this version now, longest-running first.
    pub fn running(&self) -> Vec<Running> {
        let mut running: Vec<Running> = lock(&self.running)
            .values()
            .map(|(method, path, started)| Running {
                method: method.to_string(),
                path: path.clone(),
                elapsed_ms: started.elapsed().as_millis() as u64,
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
    pub(crate) async fn warmup(&self) -> Result<(), CallError> {
        let Some(instance) = self.instance.load_full() else {
            return Err(CallError::Failed("no instance".into()));
        };
        self.pool
            .call(move || instance.warmup())
            .await
            .unwrap_or_else(|| Err(CallError::Failed("worker pool stopped".into())))
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
        let rx = self.dispatch(
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
        match tokio::time::timeout(timeout, rx).await {
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
        &self,
        mut guard: InFlight,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        request: OwnedRequest,
    ) -> tokio::sync::oneshot::Receiver<Result<ModuleResponse, CallError>> {
        let id = self.next_request.fetch_add(1, SeqCst);
        lock(&self.running).insert(
            id,
            (request.method.clone(), request.path.clone(), Instant::now()),
        );
        guard.tracked = Some(id);
        let (tx, rx) = tokio::sync::oneshot::channel();
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
            drop(guard);
        }));
        rx
    }

    /// Waits until no request runs on this version, or `timeout` passes. Call after the
    /// version stopped taking new requests.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// Marks the version failed and unloads it.
    pub(crate) async fn fail(self: &Arc<Self>, reason: &str) {
        self.set_error(reason);
        self.set_state(State::Failed);
        self.unload(State::Failed).await;
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
