//! The deploy pipeline: every deploy — a file event, the scan at start, an upload, the restore
//! of the host state, a rollback or canary of a kept copy — is one [`DeployRequest`] run through
//! the same named stages:
//!
//! 1. **copy**: the module's bytes into the private store, with their hash;
//! 2. **validate**: quarantined bytes are refused; the same bytes as a live version, or bytes
//!    the guard rolled back coming from the watcher, change nothing;
//! 3. **open**: the library is mapped and says which app it is; at start, an app restored from
//!    the host state or undeployed through the admin API leaves the file alone;
//! 4. **start**: the version's worker threads;
//! 5. **warm**: the app's `init`, its warm-up hook and the configured warm-up requests;
//! 6. **switch**: the version takes its traffic ([`AppSlot::switch`]); the one it replaces
//!    drains and retires in the background, or waits in standby through a guard window.
//!
//! A failure at any stage leaves the app's current version serving and drops the private copy.

use std::ops::ControlFlow::{self, Break, Continue};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::guard::Watch;
use super::{AppSlot, Registry, SwapTimings, Switch};
use crate::clock::{ms_since, unix_ms};
use crate::deploy::store::Copied;
use crate::deploy::version::{State, Version};
use crate::error::{Error, Result, StartStage};
use crate::loader::Module;
use crate::sync::lock;

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

/// What asked for a deploy: it decides which start-time and rollback rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// The scan of the modules directory at start: apps restored from the host state keep
    /// their version, apps undeployed through the admin API stay undeployed.
    Scan,
    /// A file event in the modules directory: bytes the guard rolled back are left alone.
    Watch,
    /// An upload through the admin API.
    Upload,
    /// The restore of the host state at start.
    Restore,
    /// An operator's rollback to a kept version.
    Rollback,
    /// An operator's canary of a kept version.
    Canary,
}

impl Origin {
    fn name(self) -> &'static str {
        match self {
            Origin::Scan => "scan",
            Origin::Watch => "watch",
            Origin::Upload => "upload",
            Origin::Restore => "restore",
            Origin::Rollback => "rollback",
            Origin::Canary => "canary",
        }
    }
}

/// The stages of the pipeline, in order, as named in its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The bytes are in the private store.
    Copy,
    /// The bytes may be deployed.
    Validate,
    /// The library is mapped.
    Open,
    /// The version's worker threads run.
    Start,
    /// `init`, the warm-up hook and the warm-up requests are done.
    Warm,
    /// The version takes its traffic.
    Switch,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Copy => "copy",
            Stage::Validate => "validate",
            Stage::Open => "open",
            Stage::Start => "start",
            Stage::Warm => "warm",
            Stage::Switch => "switch",
        }
    }
}

/// One deploy: which module file, what asked for it, and how the new version takes traffic.
#[derive(Debug, Clone)]
pub(super) struct DeployRequest {
    /// The module file as shown and watched: the operator's file, an upload under its name, or
    /// the file a kept copy was first deployed from.
    pub(super) source: PathBuf,
    /// Where the bytes are read: `source` itself, or a private copy kept in the store.
    pub(super) read: PathBuf,
    /// When the file was detected; the swap's timeline counts from here.
    pub(super) detected: Instant,
    /// How the new version takes traffic.
    pub(super) mode: DeployMode,
    /// What asked for the deploy.
    pub(super) origin: Origin,
}

impl DeployRequest {
    /// A deploy of the file at `source`, detected now, replacing the active version.
    pub(super) fn new(source: &Path, origin: Origin) -> DeployRequest {
        DeployRequest {
            source: source.to_owned(),
            read: source.to_owned(),
            detected: Instant::now(),
            mode: DeployMode::Switch,
            origin,
        }
    }

    /// The bytes are read from `read` (a kept copy), not from the source file.
    pub(super) fn reading(self, read: &Path) -> DeployRequest {
        DeployRequest {
            read: read.to_owned(),
            ..self
        }
    }

    /// The file was detected at `detected`.
    pub(super) fn detected(self, detected: Instant) -> DeployRequest {
        DeployRequest { detected, ..self }
    }

    /// The new version takes traffic as `mode` says.
    pub(super) fn mode(self, mode: DeployMode) -> DeployRequest {
        DeployRequest { mode, ..self }
    }
}

/// Where a version's deploy got to before the switch, in milliseconds after detection.
#[derive(Debug, Clone, Copy)]
struct Progress {
    loaded_ms: u64,
    warmed_ms: u64,
}

impl Registry {
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
    /// ([`Registry::deploy_upload`]) tries them again.
    pub async fn deploy(self: &Arc<Self>, source: &Path, detected: Instant) -> Result<Deployed> {
        self.run(DeployRequest::new(source, Origin::Watch).detected(detected))
            .await
    }

    /// Runs one deploy through the pipeline, and keeps the list of refused files up to date.
    ///
    /// # Errors
    /// As [`Registry::deploy`].
    pub(super) async fn run(self: &Arc<Self>, request: DeployRequest) -> Result<Deployed> {
        let result = self.stages(&request).await;
        match &result {
            Ok(Deployed::New(_) | Deployed::Unchanged(_)) => self.accept(&request.source),
            Err(e) if e.is_refusal() => {
                self.metrics.module_rejected();
                self.reject(&request.source, e);
            }
            Err(_) => {}
        }
        result
    }

    async fn stages(self: &Arc<Self>, request: &DeployRequest) -> Result<Deployed> {
        let id = self.store.next_id();
        let copied = self.copy(id, request).await?;
        self.passed(request, Stage::Copy);
        if let Break(done) = self.validate(request, &copied)? {
            return Ok(done);
        }
        self.passed(request, Stage::Validate);
        // Listed as live from here to the end of the deploy: a crash meanwhile is blamed on it.
        let _opening = self.opening(id, copied.hash, &request.source);
        let (slot, module) = match self.open(request, &copied).await? {
            Continue(opened) => opened,
            Break(done) => return Ok(done),
        };
        self.passed(request, Stage::Open);
        let _deploying = slot.deploying.lock().await;
        let version = self.start(request, &slot, id, module, &copied)?;
        let loaded_ms = ms_since(request.detected);
        self.passed(request, Stage::Start);
        self.warm(&slot, &version).await?;
        let warmed_ms = ms_since(request.detected);
        self.passed(request, Stage::Warm);
        let progress = Progress {
            loaded_ms,
            warmed_ms,
        };
        let deployed = self.switch_to(request, &slot, version, progress);
        self.passed(request, Stage::Switch);
        Ok(deployed)
    }

    /// Notes a stage done, for a deploy's progress in debug logs.
    fn passed(&self, request: &DeployRequest, stage: Stage) {
        tracing::debug!(file = %request.source.display(), origin = request.origin.name(),
            stage = stage.name(), elapsed_ms = ms_since(request.detected), "deploy stage done");
    }

    /// Copy: the bytes into the private store, off the async threads.
    async fn copy(self: &Arc<Self>, id: u64, request: &DeployRequest) -> Result<Copied> {
        let (registry, source, read) = (
            Arc::clone(self),
            request.source.clone(),
            request.read.clone(),
        );
        let grace = std::time::Duration::from_millis(self.config.watch_settle_ms);
        crate::deploy::spawn_in_the_background(move || {
            registry.store.copy_in(id, &source, &read, grace)
        })
        .await
        .map_err(|source| Error::Join {
            what: "copy task failed",
            source,
        })?
    }

    /// Validate: whether these bytes may be deployed. The copy is dropped when they are not.
    fn validate(&self, request: &DeployRequest, copied: &Copied) -> Result<ControlFlow<Deployed>> {
        let source = &request.source;
        if let Some(q) = self.quarantined(copied.hash) {
            self.store.remove(&copied.path);
            return Err(Error::Quarantined {
                path: source.clone(),
                app: q.app,
                version: q.version,
                crashes: q.crashes,
            });
        }
        if let Some(live) = self.live_with_hash(copied.hash) {
            self.store.remove(&copied.path);
            tracing::info!(app = %live.info().app, version = %live.info().version,
                file = %source.display(), "same module bytes already deployed; nothing to do");
            return Ok(Break(Deployed::Unchanged(live)));
        }
        if let Some(kept) = self.refuse_rolled_back(copied.hash, request.origin) {
            self.store.remove(&copied.path);
            tracing::warn!(app = %kept.info().app, file = %source.display(),
                active = %kept.info().version,
                "these module bytes were rolled back by the guard; not deploying them again from \
                 the modules directory (upload them with `baton deploy` to try again)");
            return Ok(Break(Deployed::Unchanged(kept)));
        }
        Ok(Continue(()))
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

    /// Open: maps the library, off the async threads, and finds its app's slot.
    async fn open(
        &self,
        request: &DeployRequest,
        copied: &Copied,
    ) -> Result<ControlFlow<Deployed, (Arc<AppSlot>, Module)>> {
        let source = &request.source;
        let opened = {
            let (copy, display) = (copied.path.clone(), source.clone());
            crate::deploy::spawn_in_the_background(move || Module::open(&copy, &display))
                .await
                .map_err(|e| Error::Load {
                    path: source.clone(),
                    source: crate::loader::LoadError::Task { source: e },
                })?
        };
        let module = match opened {
            Ok(module) => module,
            Err(e) => {
                self.store.remove(&copied.path);
                // A file rewritten since it was copied is refused for its writer's unfinished
                // work, not its own: wait for it to settle rather than reject it.
                if e.is_refusal()
                    && let Some(change) = self.store.changed_since(&request.read, copied)
                {
                    return Err(Error::Unsettled {
                        path: source.clone(),
                        change,
                    });
                }
                return Err(e);
            }
        };
        let app = module.info().app.clone();
        if request.origin != Origin::Scan {
            return Ok(Continue((self.slot(&app), module)));
        }
        if lock(&self.undeployed).contains(&app) {
            self.close(module, &copied.path).await;
            return Err(Error::Undeployed {
                app,
                file: source.clone(),
            });
        }
        let slot = self.slot(&app);
        if self.was_restored(&app)
            && let Some(active) = slot.active()
        {
            tracing::info!(app = %app, version = %module.info().version, file = %source.display(),
                kept = %active.info().version,
                "app restored from the host state; this file is ignored at start");
            self.close(module, &copied.path).await;
            return Ok(Break(Deployed::Unchanged(active)));
        }
        Ok(Continue((slot, module)))
    }

    /// Unmaps a library that will not be deployed, on the deploy thread, and drops its copy.
    async fn close(&self, module: Module, copy: &Path) {
        let _ = crate::deploy::spawn_in_the_background(move || drop(module)).await;
        self.store.remove(copy);
    }

    /// Start: the version, with its worker threads, listed among the app's versions.
    fn start(
        &self,
        request: &DeployRequest,
        slot: &AppSlot,
        id: u64,
        module: Module,
        copied: &Copied,
    ) -> Result<Arc<Version>> {
        let info = module.info().clone();
        let metrics = self.metrics.version(&info.app, &info.version);
        let version = Version::new(
            id,
            Arc::new(module),
            request.source.clone(),
            copied.hash,
            slot.limits,
            metrics,
        )
        .map_err(|e| {
            self.store.remove(&copied.path);
            let e = start_error(&info.app, &info.version, StartStage::Load, e.to_string());
            slot.set_error(Some(e.to_string()));
            e
        })?;
        slot.record(&version);
        self.publish_live();
        tracing::info!(app = %info.app, version = %info.version,
            file = %request.source.display(), origin = request.origin.name(),
            sdk = %info.sdk_version, rustc = %info.rustc_version, "loading");
        Ok(version)
    }

    /// Warm: `init`, the warm-up hook, then the configured warm-up requests. A version that
    /// fails here is unloaded and its copy dropped.
    async fn warm(&self, slot: &AppSlot, version: &Arc<Version>) -> Result<()> {
        let Err((stage, reason)) = self.warm_up(version).await else {
            return Ok(());
        };
        let info = version.info();
        version.fail(&reason);
        version.set_stored(false);
        self.store.remove(version.copy_path());
        self.metrics.warmup_failed(&info.app);
        let e = start_error(&info.app, &info.version, stage, reason);
        slot.set_error(Some(e.to_string()));
        Err(e)
    }

    async fn warm_up(&self, version: &Arc<Version>) -> Result<(), (StartStage, String)> {
        let app = version.info().app.clone();
        let start_timeout = self.config.start_timeout_for(&app);
        version
            .init(self.config.app_config_json(&app), start_timeout)
            .await
            .map_err(|e| (StartStage::Init, format!("init {e}")))?;
        version
            .load_assets(
                self.config.assets_for(&app),
                self.config.compression.clone(),
                start_timeout,
            )
            .await
            .map_err(|e| (StartStage::Init, format!("listing assets {e}")))?;
        version
            .warmup(start_timeout)
            .await
            .map_err(|e| (StartStage::Warmup, format!("warmup {e}")))?;
        let (paths, timeout) = self.config.warmup_for(&app);
        for path in paths {
            version
                .warm_request(&path, timeout)
                .await
                .map_err(|e| (StartStage::Warmup, e.to_string()))?;
        }
        Ok(())
    }

    /// Switch: the warm version takes its traffic, as the canary or as the active version.
    fn switch_to(
        self: &Arc<Self>,
        request: &DeployRequest,
        slot: &Arc<AppSlot>,
        version: Arc<Version>,
        progress: Progress,
    ) -> Deployed {
        let info = version.info();
        if let DeployMode::Canary(percent) = request.mode
            && slot.active.load().is_some()
        {
            slot.set_error(None);
            tracing::info!(app = %info.app, version = %info.version, percent, "canary");
            let switched = slot.switch(
                &mut lock(&slot.guard),
                Switch::Split(Arc::clone(&version), percent),
            );
            self.save_state();
            if let Some(watch) = switched.window {
                self.end_guard(slot, watch, "a canary was set");
            }
            if let Some(replaced) = switched.canary {
                self.retire_later(slot, replaced, None);
            }
            return Deployed::New(version);
        }
        let detected = request.detected;
        let switched = {
            let mut window = lock(&slot.guard);
            let switched = slot.switch(&mut window, Switch::To(Some(Arc::clone(&version))));
            if slot.guard_config.enabled()
                && let Some(previous) = &switched.previous
            {
                previous.set_state(State::Standby);
                *window = Some(Watch::open(
                    &slot.guard_config,
                    Arc::clone(&version),
                    Arc::clone(previous),
                    detected,
                ));
            }
            switched
        };
        let previous = switched.previous;
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
            loaded_ms: progress.loaded_ms,
            warmed_ms: progress.warmed_ms,
            switched_ms,
            drained_ms: None,
            retired_ms: None,
            guard: watching.clone(),
            rolled_back: None,
        });
        tracing::info!(app = %info.app, version = %info.version, mount = %slot.mount,
            replaced = previous.as_ref().map(|p| p.info().version.as_str()),
            switched_ms, "active");
        if let Some(superseded) = switched.window {
            // At most one fallback: the version before the one just replaced goes at once.
            self.end_guard(slot, superseded, "a newer version was deployed");
        }
        if let Some(previous) = previous {
            if watching.is_some() {
                self.watch(slot, &version, &previous, detected);
            } else {
                self.retire_later(slot, previous, Some(detected));
            }
        }
        if let Some(canary) = switched.canary {
            self.retire_later(slot, canary, None);
        }
        Deployed::New(version)
    }
}

fn start_error(app: &str, version: &str, stage: StartStage, reason: String) -> Error {
    Error::Start {
        app: app.to_owned(),
        version: version.to_owned(),
        stage,
        reason,
    }
}
