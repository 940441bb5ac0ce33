//! The registry: apps by name and by mount, and the deploy pipeline.

mod canary;
mod guard;
mod quarantine;
mod state;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;
use tokio::sync::Semaphore;

use canary::Split;
pub use canary::{Canary, CanaryStatus};
use guard::Watch;
pub use guard::{GuardState, GuardStatus, RolledBack};

use super::store::Store;
use super::version::{InFlight, State, Version};
use crate::config::{Config, GuardConfig, Limits};
use crate::error::{Error, Result};
use crate::loader::Module;
use crate::metrics::Metrics;

use crate::clock::{ms_since, unix_ms};
use crate::sync::lock;

/// The timeline of an app's last swap, in milliseconds after the file was detected, and what
/// its guard window found.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct SwapTimings {
    /// Version switched away from, if any.
    pub from: Option<String>,
    /// Its deployment id.
    pub from_id: Option<u64>,
    /// Version switched to.
    pub to: String,
    /// Its deployment id.
    pub to_id: u64,
    /// When the file was detected (Unix milliseconds).
    pub detected_unix_ms: u64,
    /// Module copied, mapped and validated.
    pub loaded_ms: u64,
    /// `init`, warm-up hook and warm-up requests done.
    pub warmed_ms: u64,
    /// New requests go to the new version.
    pub switched_ms: u64,
    /// The old version's last request finished.
    pub drained_ms: Option<u64>,
    /// The old version is shut down and unmapped.
    pub retired_ms: Option<u64>,
    /// The guard window of this swap, if the app has one.
    pub guard: Option<GuardStatus>,
    /// Set when the new version was switched back to the old one, with why.
    pub rolled_back: Option<RolledBack>,
}

/// A module file that was refused, as shown in status.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Rejection {
    /// The file.
    pub file: PathBuf,
    /// Why.
    pub error: String,
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub enum Deployed {
    /// A new version is active (or, for a canary deploy, takes its share of requests).
    New(Arc<Version>),
    /// The same bytes are already deployed: nothing changed.
    Unchanged(Arc<Version>),
}

/// How a deployed version takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployMode {
    /// It replaces the active version (and ends any canary split).
    Switch,
    /// It becomes the app's canary, taking this percentage of new requests; the active version
    /// takes the rest. With no active version it simply becomes active.
    Canary(u8),
}

/// What asked for a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The scan of the modules directory at start: apps restored from the host state keep
    /// their version.
    Start,
    /// A file event in the modules directory.
    Watch,
    /// An operator (upload, rollback, canary) or the restore of the host state.
    Operator,
}

/// One app: its mount, limits and the version that takes new requests.
#[derive(Debug)]
pub struct AppSlot {
    name: String,
    mount: String,
    limits: Limits,
    guard_config: GuardConfig,
    /// The open guard window, if any. Every change of `active` happens under this lock, so the
    /// guard's own switch back never races an operator's action.
    guard: Mutex<Option<Watch>>,
    permits: Arc<Semaphore>,
    active: ArcSwapOption<Version>,
    versions: Mutex<Vec<Arc<Version>>>,
    last_swap: Mutex<Option<SwapTimings>>,
    last_error: Mutex<Option<String>>,
    deploying: tokio::sync::Mutex<()>,
    /// Whether `split` may hold a canary: the one check the single-version path pays.
    split_on: AtomicBool,
    split: ArcSwapOption<Split>,
    split_counter: AtomicU64,
    sticky: bool,
    cookie_name: String,
}

impl AppSlot {
    /// App name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Mount path.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Effective limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The version taking new requests, if any.
    pub fn active(&self) -> Option<Arc<Version>> {
        self.active.load_full()
    }

    /// The versions this app has had in this process that are still worth showing: the live
    /// ones, the failed and retired ones of recent deploys. Oldest first.
    pub fn versions(&self) -> Vec<Arc<Version>> {
        lock(&self.versions).clone()
    }

    /// The timeline of the last swap.
    pub fn last_swap(&self) -> Option<SwapTimings> {
        lock(&self.last_swap).clone()
    }

    /// The last deploy error of this app.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// The admission semaphore shared by all versions of the app.
    pub(crate) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Claims the version a new request goes to (the active one, or during a canary split the
    /// one the split picks), retrying if a swap retires it meanwhile.
    pub(crate) fn enter(&self, headers: &http::HeaderMap) -> Option<(Arc<Version>, InFlight)> {
        loop {
            let version = if self.split_on.load(std::sync::atomic::Ordering::Relaxed) {
                self.pick(headers)?
            } else {
                self.active.load_full()?
            };
            if let Some(guard) = version.try_enter() {
                return Some((version, guard));
            }
            // Switched away between the load and the claim: the new version is already active.
            std::hint::spin_loop();
        }
    }

    fn record(&self, version: &Arc<Version>) {
        let mut versions = lock(&self.versions);
        versions.push(Arc::clone(version));
        // Keep status readable: forget the oldest finished versions beyond a few.
        while versions.len() > 8 {
            match versions
                .iter()
                .position(|v| matches!(v.state(), State::Retired | State::Failed) && !v.stored())
            {
                Some(i) => {
                    versions.remove(i);
                }
                None => break,
            }
        }
    }

    fn set_error(&self, error: Option<String>) {
        *lock(&self.last_error) = error;
    }
}

#[derive(Debug, Default)]
struct Routes {
    /// (mount, app), longest mount first.
    mounts: Vec<(String, Arc<AppSlot>)>,
}

/// All apps of the host.
#[derive(Debug)]
pub struct Registry {
    config: Arc<Config>,
    store: Store,
    apps: Mutex<BTreeMap<String, Arc<AppSlot>>>,
    routes: ArcSwap<Routes>,
    rejected: Mutex<Vec<Rejection>>,
    metrics: Metrics,
    /// Whether changes are written to `state.json` (not during start or shutdown).
    persist: AtomicBool,
    saving: Mutex<()>,
    /// Apps brought back from `state.json` at start.
    restored: Mutex<HashSet<String>>,
    /// Hashes of module bytes the guard rolled back (newest last), with their app.
    rolled_back: Mutex<Vec<(u64, String)>>,
    /// Apps undeployed through the admin API and not deployed since: their files stay
    /// ignored at start.
    undeployed: Mutex<std::collections::BTreeSet<String>>,
    /// Per app, the version the active one replaced, kept in the store across restarts.
    previous: Mutex<BTreeMap<String, state::SavedVersion>>,
    /// Quarantined versions and what `live.json` says.
    quarantine: quarantine::Quarantine,
}

impl Registry {
    /// An empty registry whose private store lives under the config's `state_dir`.
    ///
    /// # Errors
    /// If the store directory cannot be created.
    pub fn new(config: Arc<Config>) -> Result<Registry> {
        let store = Store::open(&config.state_dir)?;
        Ok(Registry {
            quarantine: quarantine::Quarantine::load(&config.state_dir),
            previous: Mutex::new(BTreeMap::new()),
            store,
            config,
            apps: Mutex::new(BTreeMap::new()),
            routes: ArcSwap::default(),
            rejected: Mutex::new(Vec::new()),
            metrics: Metrics::new(),
            persist: AtomicBool::new(false),
            saving: Mutex::new(()),
            restored: Mutex::new(HashSet::new()),
            rolled_back: Mutex::new(Vec::new()),
            undeployed: Mutex::new(std::collections::BTreeSet::new()),
        })
    }

    /// The host configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// All apps, by name.
    pub fn apps(&self) -> Vec<Arc<AppSlot>> {
        lock(&self.apps).values().cloned().collect()
    }

    /// Recently refused module files whose app is unknown (newest last).
    pub fn rejected(&self) -> Vec<Rejection> {
        lock(&self.rejected).clone()
    }

    /// The app mounted at `path`, and the path relative to its mount.
    pub fn route<'p>(&self, path: &'p str) -> Option<(Arc<AppSlot>, &'p str)> {
        let routes = self.routes.load();
        routes.mounts.iter().find_map(|(mount, slot)| {
            let rest = if mount == "/" {
                path
            } else {
                let rest = path.strip_prefix(mount.as_str())?;
                if !(rest.is_empty() || rest.starts_with('/')) {
                    return None;
                }
                rest
            };
            Some((Arc::clone(slot), if rest.is_empty() { "/" } else { rest }))
        })
    }

    fn slot(&self, app: &str) -> Arc<AppSlot> {
        let mut apps = lock(&self.apps);
        Arc::clone(apps.entry(app.to_owned()).or_insert_with(|| {
            let limits = self.config.limits_for(app);
            Arc::new(AppSlot {
                name: app.to_owned(),
                mount: self.config.mount_for(app),
                limits,
                guard_config: self.config.guard_for(app),
                guard: Mutex::new(None),
                permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
                active: ArcSwapOption::empty(),
                versions: Mutex::new(Vec::new()),
                last_swap: Mutex::new(None),
                last_error: Mutex::new(None),
                deploying: tokio::sync::Mutex::new(()),
                split_on: AtomicBool::new(false),
                split: ArcSwapOption::empty(),
                split_counter: AtomicU64::new(0),
                sticky: self.config.canary_sticky,
                cookie_name: self.config.session_cookie_name().to_owned(),
            })
        }))
    }

    fn publish_routes(&self) {
        let apps = lock(&self.apps);
        let mut mounts: Vec<(String, Arc<AppSlot>)> = apps
            .values()
            .filter(|slot| slot.active.load().is_some())
            .map(|slot| (slot.mount.clone(), Arc::clone(slot)))
            .collect();
        mounts.sort_by_key(|(mount, _)| std::cmp::Reverse(mount.len()));
        self.routes.store(Arc::new(Routes { mounts }));
    }

    fn reject(&self, file: &Path, error: &Error) {
        let mut rejected = lock(&self.rejected);
        rejected.retain(|r| r.file != file);
        rejected.push(Rejection {
            file: file.to_owned(),
            error: error.to_string(),
            at_unix_ms: unix_ms(SystemTime::now()),
        });
        if rejected.len() > 16 {
            rejected.remove(0);
        }
    }

    fn accept(&self, file: &Path) {
        lock(&self.rejected).retain(|r| r.file != file);
    }

    /// The live version (loading, warming or active) whose module has these bytes.
    fn live_with_hash(&self, hash: u64) -> Option<Arc<Version>> {
        self.apps().into_iter().find_map(|slot| {
            slot.versions().into_iter().find(|v| {
                v.hash() == hash
                    && matches!(v.state(), State::Loading | State::Warming | State::Active)
            })
        })
    }

    /// Deploys the module file at `source`, detected at `detected`: private copy, load, init,
    /// warm-up, switch. The version it replaces drains and retires in the background. The same
    /// bytes as a live version are a no-op.
    ///
    /// # Errors
    /// [`Error::Load`] if the file is refused, [`Error::Start`] if init or warm-up fails; the
    /// app's current version keeps serving in both cases.
    ///
    /// This is the watcher's deploy: bytes the guard rolled back in this process are not
    /// deployed again this way (a repeated file event, or the file left in place); an upload
    /// ([`Registry::deploy_from`]) tries them again.
    pub async fn deploy(self: &Arc<Self>, source: &Path, detected: Instant) -> Result<Deployed> {
        self.deploy_checked(source, source, detected, DeployMode::Switch, Trigger::Watch)
            .await
    }

    /// Deploys the module whose bytes are in `read`, shown (and watched) as `source`.
    ///
    /// # Errors
    /// As [`Registry::deploy`].
    pub async fn deploy_from(
        self: &Arc<Self>,
        source: &Path,
        read: &Path,
        detected: Instant,
        mode: DeployMode,
    ) -> Result<Deployed> {
        self.deploy_checked(source, read, detected, mode, Trigger::Operator)
            .await
    }

    /// A deploy, and what asked for it.
    async fn deploy_checked(
        self: &Arc<Self>,
        source: &Path,
        read: &Path,
        detected: Instant,
        mode: DeployMode,
        trigger: Trigger,
    ) -> Result<Deployed> {
        let result = self
            .deploy_inner(source, read, detected, mode, trigger)
            .await;
        match &result {
            Ok(Deployed::New(_) | Deployed::Unchanged(_)) => self.accept(source),
            Err(e) if e.is_refusal() => {
                self.metrics.module_rejected();
                self.reject(source, e);
            }
            Err(_) => {}
        }
        result
    }

    async fn deploy_inner(
        self: &Arc<Self>,
        source: &Path,
        read: &Path,
        detected: Instant,
        mode: DeployMode,
        trigger: Trigger,
    ) -> Result<Deployed> {
        let id = self.store.next_id();
        let copied = {
            let (registry, source, read) = (Arc::clone(self), source.to_owned(), read.to_owned());
            let grace = std::time::Duration::from_millis(self.config.watch_settle_ms);
            tokio::task::spawn_blocking(move || registry.store.copy_in(id, &source, &read, grace))
                .await
                .map_err(|e| Error::io("copy task failed", std::io::Error::other(e)))??
        };
        let (copy, hash) = (copied.path.clone(), copied.hash);
        if let Some(q) = self.quarantined(hash) {
            self.store.remove(&copy);
            return Err(Error::Quarantined {
                path: source.to_owned(),
                app: q.app,
                version: q.version,
                crashes: q.crashes,
            });
        }
        if let Some(live) = self.live_with_hash(hash) {
            self.store.remove(&copy);
            tracing::info!(app = %live.info().app, version = %live.info().version,
                file = %source.display(), "same module bytes already deployed; nothing to do");
            return Ok(Deployed::Unchanged(live));
        }
        if let Some(kept) = self.refuse_rolled_back(hash, trigger) {
            self.store.remove(&copy);
            tracing::warn!(app = %kept.info().app, file = %source.display(),
                active = %kept.info().version,
                "these module bytes were rolled back by the guard; not deploying them again from \
                 the modules directory (upload them with `baton deploy` to try again)");
            return Ok(Deployed::Unchanged(kept));
        }
        // Listed as live from here to the end of the deploy: a crash meanwhile is blamed on it.
        let _opening = self.opening(id, hash, source);
        let opened = {
            let (copy, display) = (copy.clone(), source.to_owned());
            tokio::task::spawn_blocking(move || Module::open(&copy, &display))
                .await
                .map_err(|e| Error::Load {
                    path: source.to_owned(),
                    reason: format!("loader task failed: {e}"),
                })?
        };
        let module = match opened {
            Ok(module) => Arc::new(module),
            Err(e) => {
                self.store.remove(&copy);
                // A file rewritten since it was copied is refused for its writer's unfinished
                // work, not its own: wait for it to settle rather than reject it.
                if e.is_refusal()
                    && let Some(change) = self.store.changed_since(read, &copied)
                {
                    return Err(Error::Unsettled {
                        path: source.to_owned(),
                        change,
                    });
                }
                return Err(e);
            }
        };
        let info = module.info().clone();
        if trigger == Trigger::Start && lock(&self.undeployed).contains(&info.app) {
            let _ = tokio::task::spawn_blocking(move || drop(module)).await;
            self.store.remove(&copy);
            return Err(Error::Undeployed {
                app: info.app,
                file: source.to_owned(),
            });
        }
        let slot = self.slot(&info.app);
        if trigger == Trigger::Start
            && self.was_restored(&info.app)
            && let Some(active) = slot.active()
        {
            tracing::info!(app = %info.app, version = %info.version, file = %source.display(),
                kept = %active.info().version,
                "app restored from the host state; this file is ignored at start");
            let _ = tokio::task::spawn_blocking(move || drop(module)).await;
            self.store.remove(&copy);
            return Ok(Deployed::Unchanged(active));
        }
        let _deploying = slot.deploying.lock().await;
        let start_error = |stage, reason: String| Error::Start {
            app: info.app.clone(),
            version: info.version.clone(),
            stage,
            reason,
        };
        let metrics = self.metrics.version(&info.app, &info.version);
        let version = match Version::new(id, module, source.to_owned(), hash, slot.limits, metrics)
        {
            Ok(version) => version,
            Err(reason) => {
                self.store.remove(&copy);
                let e = start_error("load", reason);
                slot.set_error(Some(e.to_string()));
                return Err(e);
            }
        };
        slot.record(&version);
        self.publish_live();
        let loaded_ms = ms_since(detected);
        tracing::info!(app = %info.app, version = %info.version, file = %source.display(),
            sdk = %info.sdk_version, rustc = %info.rustc_version, "loading");

        if let Err(e) = self.warm(&version).await {
            let (stage, reason) = e;
            version.fail(&reason);
            version.set_stored(false);
            self.store.remove(&copy);
            self.metrics.warmup_failed(&info.app);
            let e = start_error(stage, reason);
            slot.set_error(Some(e.to_string()));
            return Err(e);
        }
        let warmed_ms = ms_since(detected);

        if let DeployMode::Canary(percent) = mode
            && slot.active.load().is_some()
        {
            version.set_state(State::Active);
            slot.set_error(None);
            tracing::info!(app = %info.app, version = %info.version, percent, "canary");
            let (replaced, watch) = {
                let mut guard = lock(&slot.guard);
                (
                    slot.set_split(Some(Arc::clone(&version)), percent),
                    guard.take(),
                )
            };
            self.save_state();
            if let Some(watch) = watch {
                self.end_guard(&slot, watch, "a canary was set");
            }
            if let Some(replaced) = replaced {
                self.retire_later(&slot, replaced, None);
            }
            return Ok(Deployed::New(version));
        }
        version.set_state(State::Active);
        let guarded = slot.guard_config.enabled();
        let (previous, canary, superseded) = {
            let mut guard = lock(&slot.guard);
            let superseded = guard.take();
            let canary = slot.set_split(None, 0);
            let previous = slot.active.swap(Some(Arc::clone(&version)));
            if guarded && let Some(previous) = &previous {
                previous.set_state(State::Standby);
                *guard = Some(Watch::open(
                    &slot.guard_config,
                    Arc::clone(&version),
                    Arc::clone(previous),
                    detected,
                ));
            }
            (previous, canary, superseded)
        };
        if previous.is_none() {
            self.publish_routes();
        }
        let switched_ms = ms_since(detected);
        if previous.is_some() {
            self.metrics.swapped(&info.app, detected.elapsed());
        }
        slot.set_error(None);
        lock(&self.undeployed).remove(&info.app);
        if let Some(previous) = &previous {
            self.note_previous(previous);
        }
        self.save_state();
        let watching = lock(&slot.guard)
            .as_ref()
            .filter(|w| w.new.id() == version.id())
            .map(Watch::status);
        *lock(&slot.last_swap) = Some(SwapTimings {
            from: previous.as_ref().map(|p| p.info().version.clone()),
            from_id: previous.as_ref().map(|p| p.id()),
            to: info.version.clone(),
            to_id: version.id(),
            detected_unix_ms: unix_ms(SystemTime::now()).saturating_sub(switched_ms),
            loaded_ms,
            warmed_ms,
            switched_ms,
            drained_ms: None,
            retired_ms: None,
            guard: watching.clone(),
            rolled_back: None,
        });
        tracing::info!(app = %info.app, version = %info.version, mount = %slot.mount,
            replaced = previous.as_ref().map(|p| p.info().version.as_str()),
            switched_ms, "active");
        if let Some(superseded) = superseded {
            // At most one fallback: the version before the one just replaced goes at once.
            self.end_guard(&slot, superseded, "a newer version was deployed");
        }
        if let Some(previous) = previous {
            if watching.is_some() {
                self.watch(&slot, &version, &previous, detected);
            } else {
                self.retire_later(&slot, previous, Some(detected));
            }
        }
        if let Some(canary) = canary {
            self.retire_later(&slot, canary, None);
        }
        Ok(Deployed::New(version))
    }

    /// Marks a version that takes no new requests as draining and retires it in the background.
    fn retire_later(
        self: &Arc<Self>,
        slot: &Arc<AppSlot>,
        version: Arc<Version>,
        swap: Option<Instant>,
    ) {
        version.set_state(State::Draining);
        let registry = Arc::clone(self);
        let slot = Arc::clone(slot);
        tokio::spawn(async move { registry.retire(slot, version, swap).await });
    }

    /// `init`, the warm-up hook, then the configured warm-up requests.
    async fn warm(&self, version: &Arc<Version>) -> Result<(), (&'static str, String)> {
        let app = version.info().app.clone();
        let start_timeout = self.config.start_timeout_for(&app);
        version
            .init(self.config.app_config_json(&app), start_timeout)
            .await
            .map_err(|e| ("init", format!("init {e}")))?;
        version
            .warmup(start_timeout)
            .await
            .map_err(|e| ("warmup", format!("warmup {e}")))?;
        let (paths, timeout) = self.config.warmup_for(&app);
        for path in paths {
            version
                .warm_request(&path, timeout)
                .await
                .map_err(|e| ("warmup", e))?;
        }
        Ok(())
    }

    /// Waits for a draining version's requests, then shuts it down and unloads it.
    async fn retire(&self, slot: Arc<AppSlot>, version: Arc<Version>, swap: Option<Instant>) {
        let info = version.info().clone();
        let timeout = self.config.drain_timeout();
        if !version.wait_idle(timeout).await {
            let running = version.running();
            let stuck = running.iter().filter(|r| r.stuck).count();
            let message = format!(
                "drain timeout ({} s) passed with {} request(s) still running ({stuck} stuck \
                 past the request timeout); library stays mapped until they finish",
                timeout.as_secs(),
                running.len()
            );
            tracing::warn!(app = %info.app, version = %info.version, ?running, "{message}");
            version.set_error(&message);
            version.wait_idle(std::time::Duration::MAX).await;
        }
        let drained_ms = swap.map(ms_since);
        if let Some(swap) = swap
            && !self.drain_recorded(&slot, &version)
        {
            self.metrics.drained(&info.app, swap.elapsed());
        }
        let (took, leftovers) = version.unload(State::Retired).await;
        let retired_ms = swap.map(ms_since);
        if let Some(timings) = lock(&slot.last_swap)
            .as_mut()
            .filter(|t| swap.is_some() && t.from_id == Some(version.id()))
        {
            // After a guard window the drain was recorded when it happened.
            timings.drained_ms = timings.drained_ms.or(drained_ms);
            timings.retired_ms = retired_ms;
        }
        if leftovers.is_empty() {
            tracing::info!(app = %info.app, version = %info.version,
                unload_ms = crate::clock::millis(took), "retired and unmapped");
            self.prune_store(&slot);
        } else {
            let message = format!("retired, but the library is still mapped: {leftovers:?}");
            tracing::warn!(app = %info.app, version = %info.version, "{message}");
            version.set_error(&message);
        }
    }

    /// Keeps the private copies of the newest `keep_versions` retired versions; removes older.
    fn prune_store(&self, slot: &AppSlot) {
        let mut retired: Vec<Arc<Version>> = slot
            .versions()
            .into_iter()
            .filter(|v| v.state() == State::Retired && v.stored())
            .collect();
        retired.sort_by_key(|v| std::cmp::Reverse(v.id()));
        for version in retired.into_iter().skip(self.config.keep_versions) {
            self.store.remove(version.copy_path());
            version.set_stored(false);
        }
    }

    /// Undeploys the app whose active version came from `source` (its file was deleted): the
    /// mount answers 404 from now on, and the version drains and retires. A deleted canary's
    /// file ends the canary split instead.
    pub async fn source_removed(self: &Arc<Self>, source: &Path) -> Option<Arc<Version>> {
        let apps = self.apps();
        if let Some(slot) = apps
            .iter()
            .find(|slot| slot.active().is_some_and(|v| v.source() == source))
        {
            return self.undeploy_app(&slot.name, false).await;
        }
        let slot = apps
            .iter()
            .find(|slot| slot.canary().is_some_and(|c| c.version.source() == source))?;
        self.abort_canary(&slot.name).await.ok()
    }

    /// The app called `app`, if it was ever deployed.
    pub fn app(&self, app: &str) -> Option<Arc<AppSlot>> {
        lock(&self.apps).get(app).cloned()
    }

    /// Undeploys an app: it stops taking requests (404), drains and retires (a canary too).
    /// The host remembers it across restarts: the app's files in the modules directory are
    /// ignored at start until one of them is deployed again.
    pub async fn undeploy(self: &Arc<Self>, app: &str) -> Option<Arc<Version>> {
        self.undeploy_app(app, true).await
    }

    async fn undeploy_app(self: &Arc<Self>, app: &str, remember: bool) -> Option<Arc<Version>> {
        let slot = lock(&self.apps).get(app).cloned()?;
        let _deploying = slot.deploying.lock().await;
        let (canary, version, watch) = {
            let mut guard = lock(&slot.guard);
            let watch = guard.take();
            (slot.set_split(None, 0), slot.active.swap(None), watch)
        };
        if let Some(watch) = watch {
            self.end_guard(&slot, watch, "the app was undeployed");
        }
        let version = version?;
        self.publish_routes();
        if remember {
            lock(&self.undeployed).insert(app.to_owned());
        }
        tracing::info!(app = %slot.name, version = %version.info().version, "undeployed");
        self.save_state();
        self.retire_later(&slot, Arc::clone(&version), None);
        if let Some(canary) = canary {
            self.retire_later(&slot, canary, None);
        }
        Some(version)
    }

    /// Stops every app: no new requests, drain (bounded by `timeout`), shutdown hooks, unload.
    ///
    /// The private copies of the versions that were active (and canaries) stay in the store,
    /// for the next start to restore.
    pub async fn shutdown(self: &Arc<Self>, timeout: std::time::Duration) {
        let slots = self.apps();
        for slot in &slots {
            // A fallback is not restored after a restart: it drains and unloads with the rest
            // (and `state.json` no longer names an open window).
            if let Some(watch) = lock(&slot.guard).take() {
                watch.fallback.set_state(State::Draining);
            }
        }
        self.save_state();
        self.persist
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let mut kept = HashSet::new();
        for slot in &slots {
            kept.extend(slot.active().map(|v| v.id()));
            kept.extend(slot.canary().map(|c| c.version.id()));
        }
        let kept = Arc::new(kept);
        for slot in &slots {
            if let Some(canary) = slot.set_split(None, 0) {
                canary.set_state(State::Draining);
            }
            if let Some(version) = slot.active.swap(None) {
                version.set_state(State::Draining);
            }
        }
        self.publish_routes();
        let mut tasks = tokio::task::JoinSet::new();
        for slot in slots {
            for version in slot.versions() {
                if version.state() != State::Draining {
                    continue;
                }
                let registry = Arc::clone(self);
                let kept = Arc::clone(&kept);
                tasks.spawn(async move {
                    let info = version.info().clone();
                    if !version.wait_idle(timeout).await {
                        tracing::warn!(app = %info.app, version = %info.version,
                            running = ?version.running(),
                            "shutdown: requests still running after the drain timeout; not unloading");
                        return;
                    }
                    let (_, leftovers) = version.unload(State::Retired).await;
                    if leftovers.is_empty()
                        && !kept.contains(&version.id())
                        && !registry.is_previous(version.copy_path())
                    {
                        registry.store.remove(version.copy_path());
                    }
                    tracing::info!(app = %info.app, version = %info.version,
                        unmapped = leftovers.is_empty(), "stopped");
                });
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Deploys every module file in `dir`, oldest first, so the newest file of an app ends up
    /// active. Files that fail are logged and skipped.
    ///
    /// # Errors
    /// If the directory cannot be read.
    pub async fn deploy_dir(self: &Arc<Self>, dir: &Path) -> Result<usize> {
        let mut files = module_files(dir)?;
        files.sort_by_key(|(mtime, path)| (*mtime, path.clone()));
        let mut deployed = 0;
        for (_, path) in files {
            let outcome = self
                .deploy_checked(
                    &path,
                    &path,
                    Instant::now(),
                    DeployMode::Switch,
                    Trigger::Start,
                )
                .await;
            match outcome {
                Ok(_) => deployed += 1,
                Err(e @ Error::Undeployed { .. }) => tracing::info!(reason = %e, "file skipped"),
                Err(e) => tracing::error!(error = %e, "deploy failed"),
            }
        }
        Ok(deployed)
    }
}

/// Whether `path` names a module file: `*.so`, not hidden (hidden names are temporary files of
/// the copy-then-rename convention).
pub(crate) fn is_module_file(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "so")
        && path
            .file_name()
            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
}

/// Module files in `dir`, with their modification times.
pub(crate) fn module_files(dir: &Path) -> Result<Vec<(SystemTime, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::io(
            format!("cannot read modules directory {}", dir.display()),
            e,
        )
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !is_module_file(&path) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            files.push((meta.modified().unwrap_or(UNIX_EPOCH), path));
        }
    }
    Ok(files)
}
