//! The registry: apps by name and by mount, and the deploy pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Semaphore;

use super::store::Store;
use super::version::{InFlight, State, Version};
use crate::config::{Config, Limits};
use crate::error::{Error, Result};
use crate::loader::Module;

/// One app: its mount, limits and the version that takes new requests.
#[derive(Debug)]
pub struct AppSlot {
    name: String,
    mount: String,
    limits: Limits,
    permits: Arc<Semaphore>,
    active: ArcSwapOption<Version>,
    versions: Mutex<Vec<Arc<Version>>>,
    deploying: tokio::sync::Mutex<()>,
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

    /// Every version this app has had in this process, oldest first.
    pub fn versions(&self) -> Vec<Arc<Version>> {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The admission semaphore shared by all versions of the app.
    pub(crate) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Claims the active version for one request, retrying if a swap retires it meanwhile.
    pub(crate) fn enter(&self) -> Option<(Arc<Version>, InFlight)> {
        loop {
            let version = self.active.load_full()?;
            if let Some(guard) = version.try_enter() {
                return Some((version, guard));
            }
            // The version was switched away between the load and the claim: take the new one.
            std::hint::spin_loop();
        }
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
}

impl Registry {
    /// An empty registry whose private store lives under the config's `state_dir`.
    ///
    /// # Errors
    /// If the store directory cannot be created.
    pub fn new(config: Arc<Config>) -> Result<Registry> {
        Ok(Registry {
            store: Store::open(&config.state_dir)?,
            config,
            apps: Mutex::new(BTreeMap::new()),
            routes: ArcSwap::default(),
        })
    }

    /// The host configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// All apps, by name.
    pub fn apps(&self) -> Vec<Arc<AppSlot>> {
        self.apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
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
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(apps.entry(app.to_owned()).or_insert_with(|| {
            let limits = self.config.limits_for(app);
            Arc::new(AppSlot {
                name: app.to_owned(),
                mount: self.config.mount_for(app),
                limits,
                permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
                active: ArcSwapOption::empty(),
                versions: Mutex::new(Vec::new()),
                deploying: tokio::sync::Mutex::new(()),
            })
        }))
    }

    fn publish_routes(&self) {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let mut mounts: Vec<(String, Arc<AppSlot>)> = apps
            .values()
            .filter(|slot| slot.active.load().is_some())
            .map(|slot| (slot.mount.clone(), Arc::clone(slot)))
            .collect();
        mounts.sort_by_key(|(mount, _)| std::cmp::Reverse(mount.len()));
        self.routes.store(Arc::new(Routes { mounts }));
    }

    /// Deploys the module file at `source`: private copy, load, init, warm-up, switch. The
    /// version it replaces drains and retires in the background.
    ///
    /// # Errors
    /// [`Error::Load`] if the file is refused, [`Error::Start`] if init or warm-up fails; the
    /// app's current version keeps serving in both cases.
    pub async fn deploy(self: &Arc<Self>, source: &Path) -> Result<Arc<Version>> {
        let id = self.store.next_id();
        let copy = self.store.copy_in(id, source)?;
        let display = source.to_owned();
        let opened = {
            let copy = copy.clone();
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
                return Err(e);
            }
        };
        let info = module.info().clone();
        let slot = self.slot(&info.app);
        let _deploying = slot.deploying.lock().await;
        tracing::info!(app = %info.app, version = %info.version, file = %source.display(),
            sdk = %info.sdk_version, rustc = %info.rustc_version, "loading");
        let config = self.config.app_config_json(&info.app);
        let started = Version::start(id, module, source.to_owned(), slot.limits, config).await;
        let version = match started {
            Ok(version) => version,
            Err((version, reason)) => {
                self.record(&slot, &version);
                self.store.remove(&copy);
                return Err(Error::Start {
                    app: info.app,
                    version: info.version,
                    stage: "init",
                    reason,
                });
            }
        };
        self.record(&slot, &version);
        if let Err(e) = version.warmup().await {
            let reason = format!("warmup {e}");
            version.fail(&reason).await;
            self.store.remove(&copy);
            return Err(Error::Start {
                app: info.app,
                version: info.version,
                stage: "warmup",
                reason,
            });
        }
        version.set_state(State::Active);
        let previous = slot.active.swap(Some(Arc::clone(&version)));
        self.publish_routes();
        tracing::info!(app = %info.app, version = %info.version, mount = %slot.mount,
            replaced = previous.as_ref().map(|p| p.info().version.as_str()), "active");
        if let Some(previous) = previous {
            previous.set_state(State::Draining);
            let registry = Arc::clone(self);
            tokio::spawn(async move { registry.retire(previous).await });
        }
        Ok(version)
    }

    fn record(&self, slot: &AppSlot, version: &Arc<Version>) {
        slot.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(version));
    }

    /// Waits for a draining version's requests, then shuts it down and unloads it.
    async fn retire(&self, version: Arc<Version>) {
        let info = version.info();
        let timeout = self.config.drain_timeout();
        if !version.wait_idle(timeout).await {
            tracing::warn!(app = %info.app, version = %info.version, in_flight = version.in_flight(),
                timeout_secs = timeout.as_secs(),
                "drain timeout passed with requests still running; library stays mapped until they finish");
            version.wait_idle(std::time::Duration::MAX).await;
        }
        let (took, leftovers) = version.unload(State::Retired).await;
        if leftovers.is_empty() {
            self.store.remove(version.copy_path());
            tracing::info!(app = %info.app, version = %info.version,
                unload_ms = took.as_millis() as u64, "retired and unmapped");
        } else {
            tracing::warn!(app = %info.app, version = %info.version, ?leftovers,
                "retired, but the library is still mapped");
        }
    }

    /// Stops every app: no new requests, drain (bounded by `timeout`), shutdown hooks, unload.
    pub async fn shutdown(self: &Arc<Self>, timeout: std::time::Duration) {
        let slots = self.apps();
        for slot in &slots {
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
                let config_timeout = timeout;
                let registry = Arc::clone(self);
                tasks.spawn(async move {
                    let info = version.info().clone();
                    if !version.wait_idle(config_timeout).await {
                        tracing::warn!(app = %info.app, version = %info.version,
                            in_flight = version.in_flight(),
                            "shutdown: requests still running after the drain timeout; not unloading");
                        return;
                    }
                    let (_, leftovers) = version.unload(State::Retired).await;
                    if leftovers.is_empty() {
                        registry.store.remove(version.copy_path());
                    }
                    tracing::info!(app = %info.app, version = %info.version,
                        unmapped = leftovers.is_empty(), "stopped");
                });
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Deploys every module file (`*.so`) in `dir`, oldest first, so the newest file of an app
    /// ends up active. Files that fail are logged and skipped.
    ///
    /// # Errors
    /// If the directory cannot be read.
    pub async fn deploy_dir(self: &Arc<Self>, dir: &Path) -> Result<usize> {
        let mut files = module_files(dir)?;
        files.sort_by_key(|(mtime, path)| (*mtime, path.clone()));
        let mut deployed = 0;
        for (_, path) in files {
            match self.deploy(&path).await {
                Ok(_) => deployed += 1,
                Err(e) => tracing::error!(error = %e, "deploy failed"),
            }
        }
        Ok(deployed)
    }
}

/// Module files in `dir`: regular files named `*.so`, with their modification times.
pub(crate) fn module_files(dir: &Path) -> Result<Vec<(std::time::SystemTime, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::io(
            format!("cannot read modules directory {}", dir.display()),
            e,
        )
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "so") {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            files.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), path));
        }
    }
    Ok(files)
}
