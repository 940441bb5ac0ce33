//! The registry: every app of the host, by name and by mount, and what happens to their
//! versions.
//!
//! - [`slot`]: an app's slot and the one [`AppSlot::switch`] that changes which versions take
//!   its new requests;
//! - [`routes`]: the mount table requests are routed by;
//! - [`pipeline`]: a deploy's stages, copy → validate → open → start → warm → switch;
//! - [`retire`]: the one drain-then-unload, after a switch and at shutdown;
//! - [`operations`]: upload, undeploy, rollback, and canary set, promote and abort;
//! - [`canary`]: which version a request goes to during a canary split;
//! - [`guard`]: the guard window after a switch, and its switch back;
//! - [`state`]: `state.json`, what a restart restores;
//! - [`quarantine`]: `live.json` and the versions that crashed the serving process.

mod canary;
mod guard;
mod operations;
mod pipeline;
mod quarantine;
mod retire;
mod routes;
mod slot;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

pub(crate) use canary::{Canary, CanaryStatus};
pub(crate) use guard::GuardState;
pub(crate) use pipeline::{DeployMode, Deployed};
use pipeline::{DeployRequest, Origin};
use routes::Routes;
use slot::Switch;
pub(crate) use slot::{AppSlot, SwapTimings};

use super::store::Store;
use crate::clock::unix_ms;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::sync::lock;

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
    undeployed: Mutex<BTreeSet<String>>,
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
            undeployed: Mutex::new(BTreeSet::new()),
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

    /// The app called `app`, if it was ever deployed.
    pub fn app(&self, app: &str) -> Option<Arc<AppSlot>> {
        lock(&self.apps).get(app).cloned()
    }

    /// Recently refused module files whose app is unknown (newest last).
    pub fn rejected(&self) -> Vec<Rejection> {
        lock(&self.rejected).clone()
    }

    /// The slot of `app`, created empty the first time.
    fn slot(&self, app: &str) -> Arc<AppSlot> {
        let mut apps = lock(&self.apps);
        Arc::clone(
            apps.entry(app.to_owned())
                .or_insert_with(|| Arc::new(AppSlot::new(app, &self.config))),
        )
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
            match self.run(DeployRequest::new(&path, Origin::Scan)).await {
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
