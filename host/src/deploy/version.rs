//! One loaded version of an app: its state, counters, worker pool and instance, from
//! loading through init and warm-up to its unload. The requests running on it live in
//! [`requests`].

mod io;
mod requests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use tokio::sync::Notify;

use super::outcomes::Outcomes;
use super::pool::{Pool, PoolError};
use crate::config::Limits;
use crate::loader::{CallError, Instance, Module, ModuleInfo};
use crate::metrics::VersionMetrics;
use crate::sync::lock;

pub(crate) use io::{BodyRest, Reply, StreamAbort, StreamBody};
pub(crate) use requests::Running;
use requests::Tracked;
pub(crate) use requests::{InFlight, Origin, OwnedRequest, RequestSpan};

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

/// Why a warm-up request did not answer 2xx.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WarmError {
    /// The version was switched away from before the request could claim it.
    #[error("version stopped taking requests")]
    Stopped,
    /// The app answered with a status other than 2xx.
    #[error("warm-up request GET {path} answered {status}")]
    Status {
        /// The request's path.
        path: String,
        /// What the app answered.
        status: http::StatusCode,
    },
    /// The handler failed or panicked.
    #[error("warm-up request GET {path} {source}")]
    Failed {
        /// The request's path.
        path: String,
        /// How the call failed.
        source: CallError,
    },
    /// The version's worker pool stopped before the handler answered.
    #[error("worker pool stopped")]
    PoolStopped,
    /// The handler did not answer in time (it goes on running as a stuck handler).
    #[error("warm-up request GET {path} took longer than {} ms", timeout.as_millis())]
    TimedOut {
        /// The request's path.
        path: String,
        /// The warm-up timeout.
        timeout: Duration,
    },
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
    /// By request id: a sequence number, hashed with a fast hash, not SipHash (nothing a client
    /// sends chooses it).
    running: Mutex<foldhash::HashMap<u64, Tracked>>,
    next_request: AtomicU64,
    /// Handlers running past their timeout.
    stuck: AtomicUsize,
    stored: AtomicBool,
    loaded_at: SystemTime,
    metrics: VersionMetrics,
    outcomes: Outcomes,
    header: Option<http::HeaderValue>,
    /// Its `app` and `version` as its access lines write them.
    access_fields: crate::server::VersionFields,
    /// Cancelled when the drain deadline passed: streamed responses still running are cut.
    cut: tokio_util::sync::CancellationToken,
    /// Whether the instance reads bodies and writes responses as streams (ABI 1.1).
    streams: AtomicBool,
    /// Streamed responses running now.
    open_streams: AtomicUsize,
    /// The host is stopping: long responses should end, as on a drain.
    stopping: AtomicBool,
    /// The static files the version serves without calling its module, copied at start.
    assets: std::sync::OnceLock<crate::assets::AssetTable>,
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
    ) -> Result<Arc<Version>, PoolError> {
        let info = module.info().clone();
        Version::assemble(id, info, Some(module), source, hash, limits, metrics)
    }

    /// A version of an app and version that was never loaded, without worker threads: for
    /// tests of what the registry does with versions (routing, splits, the state file).
    #[cfg(test)]
    pub(crate) fn stub(id: u64, app: &str, version: &str) -> Arc<Version> {
        let info = ModuleInfo {
            app: app.to_owned(),
            version: version.to_owned(),
            sdk_version: String::new(),
            rustc_version: String::new(),
            abi: (0, 0),
        };
        let limits = Limits {
            worker_threads: 0,
            ..Limits::default()
        };
        let source = PathBuf::from(format!("modules/{app}-{version}.so"));
        let metrics = crate::metrics::Metrics::new().version(app, version);
        Version::assemble(id, info, None, source, id, limits, metrics)
            .expect("a pool without threads starts")
    }

    /// A version in state `Loading` of `module` (its private copy; a stub has none), with its
    /// worker threads started.
    fn assemble(
        id: u64,
        info: ModuleInfo,
        module: Option<Arc<Module>>,
        source: PathBuf,
        hash: u64,
        limits: Limits,
        metrics: VersionMetrics,
    ) -> Result<Arc<Version>, PoolError> {
        let copy = module
            .as_ref()
            .map_or_else(|| source.clone(), |m| m.path().to_owned());
        let pool = Pool::start(
            &format!("baton-{}", info.app),
            limits.worker_threads,
            limits.worker_stack_bytes(),
        )?;
        // Validated app names and versions are header-safe; built once, not per response.
        let header = http::HeaderValue::from_str(&format!("{}@{}", info.app, info.version)).ok();
        let access_fields = crate::server::VersionFields::new(&info.app, &info.version);
        Ok(Arc::new(Version {
            id,
            copy,
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
            module: Mutex::new(module),
            error: Mutex::new(None),
            running: Mutex::default(),
            next_request: AtomicU64::new(0),
            stuck: AtomicUsize::new(0),
            stored: AtomicBool::new(true),
            loaded_at: SystemTime::now(),
            metrics,
            outcomes: Outcomes::default(),
            header,
            access_fields,
            cut: tokio_util::sync::CancellationToken::new(),
            streams: AtomicBool::new(false),
            open_streams: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            assets: std::sync::OnceLock::new(),
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
        self.streams.store(instance.streams(), SeqCst);
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

    /// Whether the version stopped taking new requests: what a long-running response asks to
    /// know when to end itself.
    pub(crate) fn draining(&self) -> bool {
        !matches!(self.state(), State::Active | State::Warming)
            || self.stopping.load(SeqCst)
            || self.cut.is_cancelled()
    }

    /// The host is stopping (or handing over to a new serving process): from now on
    /// [`Version::draining`] says so, while the version still serves.
    pub(crate) fn begin_stop(&self) {
        self.stopping.store(true, SeqCst);
    }

    /// Cuts the streamed responses still running: their writes fail and their clients see
    /// them end. For a drain whose deadline passed.
    pub(crate) fn cut_streams(&self) {
        self.cut.cancel();
    }

    /// Takes a place for one more streamed response, unless `max_streams` run already.
    pub(crate) fn open_stream(self: &Arc<Self>) -> Option<io::StreamSlot> {
        let open = self.open_streams.fetch_add(1, SeqCst);
        if open >= self.limits.max_streams {
            self.open_streams.fetch_sub(1, SeqCst);
            return None;
        }
        Some(io::StreamSlot(Arc::clone(self)))
    }

    /// Whether the version's module takes request bodies and sends responses as streams.
    pub(crate) fn streams(&self) -> bool {
        self.streams.load(SeqCst)
    }

    /// Copies the instance's embedded assets out of the module (on a worker thread: the
    /// listing is module code) into the version's asset table.
    ///
    /// # Errors
    /// The module's listing failed.
    pub(crate) async fn load_assets(
        &self,
        config: crate::config::AssetsConfig,
        compression: crate::config::CompressionConfig,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let Some(instance) = self.instance.load_full() else {
            return Err(CallError::Failed("no instance".into()));
        };
        let listed = self
            .bounded_call(timeout, move || instance.assets())
            .await?;
        let entries: Vec<crate::assets::AssetEntry> = listed
            .into_iter()
            .map(|a| crate::assets::AssetEntry {
                path: a.path,
                bytes: a.bytes,
                hash: a.hash,
                modified: (a.modified_unix_secs > 0)
                    .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(a.modified_unix_secs)),
            })
            .collect();
        // Compressing every file once is CPU work: off the runtime's threads.
        let table = tokio::task::spawn_blocking(move || {
            crate::assets::AssetTable::new(entries, &config).precompressed(&compression)
        })
        .await
        .map_err(|e| CallError::Failed(format!("building the asset table failed: {e}")))?;
        if !table.is_empty() {
            tracing::info!(app = %self.info.app, version = %self.info.version,
                files = table.len(), bytes = table.bytes(), "static assets loaded");
        }
        let _ = self.assets.set(table);
        Ok(())
    }

    /// The version's static files, if it has any.
    pub(crate) fn assets(&self) -> Option<&crate::assets::AssetTable> {
        self.assets.get().filter(|table| !table.is_empty())
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

    /// Its `app` and `version` fields, for its access lines.
    pub(crate) fn access_fields(&self) -> &crate::server::VersionFields {
        &self.access_fields
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

    /// Runs the app's warm-up hook on a worker thread.
    pub(crate) async fn warmup(&self, timeout: Duration) -> Result<(), CallError> {
        let Some(instance) = self.instance.load_full() else {
            return Err(CallError::Failed("no instance".into()));
        };
        self.bounded_call(timeout, move || instance.warmup()).await
    }

    /// Sends `GET path` to this version directly; it must answer 2xx within `timeout`.
    ///
    /// # Errors
    /// [`WarmError`]: what the request came to instead.
    pub(crate) async fn warm_request(
        self: &Arc<Self>,
        path: &str,
        timeout: Duration,
    ) -> Result<(), WarmError> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let span = RequestSpan::warmup(Arc::clone(self), path.to_owned());
        let guard = self.try_enter().ok_or(WarmError::Stopped)?;
        let mut call = self.dispatch(
            guard,
            None,
            OwnedRequest {
                query: query.to_owned(),
                headers: http::HeaderMap::new(),
                body: bytes::Bytes::new(),
                rest: None,
                // Warm-up requests have no client and so no session.
                session: None,
                span,
                origin: Origin::default(),
            },
        );
        let outcome = tokio::time::timeout(timeout, &mut call.reply).await;
        if outcome.is_err() {
            self.overran(&call);
        }
        let path = path.to_owned();
        let status = |reply: &Reply| match reply {
            Reply::Full(response) | Reply::Stream { head: response, .. } => response.status,
            Reply::SessionFailed(_) | Reply::TooManyStreams { .. } => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
        };
        match outcome {
            Ok(Ok(Ok(reply))) if status(&reply).is_success() => Ok(()),
            Ok(Ok(Ok(reply))) => Err(WarmError::Status {
                path,
                status: status(&reply),
            }),
            Ok(Ok(Err(source))) => Err(WarmError::Failed { path, source }),
            Ok(Err(_)) => Err(WarmError::PoolStopped),
            Err(_) => Err(WarmError::TimedOut { path, timeout }),
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
        let outcome = super::spawn_in_the_background(move || version.unload_blocking(final_state))
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
