//! One loaded version of an app: its state, counters, worker pool and instance.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use tokio::sync::Notify;

use super::pool::Pool;
use crate::config::Limits;
use crate::loader::{CallError, Instance, Module, ModuleInfo, ModuleRequest, ModuleResponse};

/// Where a version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum State {
    /// Being copied, mapped and initialised.
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
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Loading,
            1 => State::Warming,
            2 => State::Active,
            3 => State::Draining,
            4 => State::Retired,
            _ => State::Failed,
        }
    }
}

/// A request's claim on a version: while it exists the version cannot retire.
#[derive(Debug)]
pub(crate) struct InFlight {
    version: Arc<Version>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let version = &self.version;
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

/// One loaded module version.
#[derive(Debug)]
pub struct Version {
    id: u64,
    info: ModuleInfo,
    source: PathBuf,
    copy: PathBuf,
    limits: Limits,
    state: AtomicU8,
    in_flight: AtomicUsize,
    served: AtomicU64,
    idle: Notify,
    pool: Pool,
    instance: ArcSwapOption<Instance>,
    module: Mutex<Option<Arc<Module>>>,
    error: Mutex<Option<String>>,
    loaded_at: SystemTime,
}

impl Version {
    /// Starts the worker pool and builds the app instance on it.
    ///
    /// # Errors
    /// The app's `init` failure; the version is then already unloaded.
    pub(crate) async fn start(
        id: u64,
        module: Arc<Module>,
        source: PathBuf,
        limits: Limits,
        config: Vec<u8>,
    ) -> Result<Arc<Version>, (Arc<Version>, String)> {
        let info = module.info().clone();
        let copy = module.path().to_owned();
        let name = format!("baton-{}", info.app);
        let pool = match Pool::start(&name, limits.worker_threads) {
            Ok(pool) => pool,
            Err(e) => {
                return Err((
                    Self::failed_early(id, info, source, copy, limits),
                    format!("cannot start worker threads: {e}"),
                ));
            }
        };
        let version = Arc::new(Version {
            id,
            info,
            source,
            copy,
            limits,
            state: AtomicU8::new(State::Loading as u8),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle: Notify::new(),
            pool,
            instance: ArcSwapOption::empty(),
            module: Mutex::new(Some(Arc::clone(&module))),
            error: Mutex::new(None),
            loaded_at: SystemTime::now(),
        });
        let created = version
            .pool
            .call(move || module.instantiate(&config))
            .await
            .unwrap_or_else(|| Err(CallError::Failed("worker pool stopped".into())));
        match created {
            Ok(instance) => {
                version.instance.store(Some(Arc::new(instance)));
                version.set_state(State::Warming);
                Ok(version)
            }
            Err(e) => {
                let reason = format!("init {e}");
                version.fail(&reason).await;
                Err((version, reason))
            }
        }
    }

    fn failed_early(
        id: u64,
        info: ModuleInfo,
        source: PathBuf,
        copy: PathBuf,
        limits: Limits,
    ) -> Arc<Version> {
        Arc::new(Version {
            id,
            info,
            source,
            copy,
            limits,
            state: AtomicU8::new(State::Failed as u8),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle: Notify::new(),
            pool: Pool::start("baton-unused", 0).expect("an empty pool starts no thread"),
            instance: ArcSwapOption::empty(),
            module: Mutex::new(None),
            error: Mutex::new(None),
            loaded_at: SystemTime::now(),
        })
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
    pub fn source(&self) -> &PathBuf {
        &self.source
    }

    /// The private copy the library was mapped from.
    pub fn copy_path(&self) -> &std::path::Path {
        &self.copy
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
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_error(&self, reason: &str) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
    }

    /// The limits this version runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Claims the version for one request, unless it stopped taking new ones.
    pub(crate) fn try_enter(self: &Arc<Self>) -> Option<InFlight> {
        // Paired with `set_state` + `wait_idle`: either the request sees the new state and backs
        // off, or the drain sees the request in flight and waits for it.
        self.in_flight.fetch_add(1, SeqCst);
        match self.state() {
            State::Active | State::Warming => Some(InFlight {
                version: Arc::clone(self),
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

    /// Handles a request on a worker thread; `guard` is released there when the handler returns.
    pub(crate) fn dispatch(
        &self,
        guard: InFlight,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        request: OwnedRequest,
    ) -> tokio::sync::oneshot::Receiver<Result<ModuleResponse, CallError>> {
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
        let module = self.module.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut leftovers = Vec::new();
        if let Some(module) = module {
            let path = module.path().to_owned();
            match Arc::try_unwrap(module) {
                Ok(module) => {
                    if let Err(e) = module.close() {
                        leftovers.push(format!("dlclose failed: {e}"));
                    }
                }
                Err(_) => leftovers.push("module still referenced; not closed".into()),
            }
            match crate::loader::mapped_regions(&path) {
                Ok(regions) => leftovers.extend(regions),
                Err(e) => leftovers.push(format!("cannot read /proc/self/maps: {e}")),
            }
        }
        self.set_state(final_state);
        leftovers
    }
}
