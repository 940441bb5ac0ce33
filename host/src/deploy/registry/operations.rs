//! What operators (and the watcher, for a deleted file) do to a deployed app: upload a module,
//! undeploy, roll back, and set, promote or abort a canary. Each takes the app's deploy lock,
//! changes its versions through [`AppSlot::switch`] or the deploy pipeline, and retires what
//! no longer takes requests.

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::pipeline::{DeployRequest, Origin};
use super::{AppSlot, Canary, DeployMode, Deployed, Registry, SwapTimings, Switch};
use crate::clock::unix_ms;
use crate::deploy::outcomes::{Cause, Regression};
use crate::deploy::version::{State, Version};
use crate::error::{Error, Result};
use crate::sync::lock;

/// Longest module file name an upload may have (the host's copies add their own prefixes).
const MAX_UPLOAD_NAME: usize = 128;

impl Registry {
    fn known(&self, app: &str) -> Result<Arc<AppSlot>> {
        self.app(app)
            .ok_or_else(|| Error::UnknownApp(app.to_owned()))
    }

    /// Deploys an uploaded module: `file` (in the upload area) is named after `name`, then
    /// goes through the same pipeline as a dropped file. The file is removed in every case.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad file name; deploy errors.
    pub async fn deploy_upload(
        self: &Arc<Self>,
        name: &str,
        file: &Path,
        mode: DeployMode,
    ) -> Result<Deployed> {
        let detected = Instant::now();
        if let Err(e) = check_upload_name(name) {
            remove_quietly(file);
            return Err(e);
        }
        let path = file.with_file_name(format!("{}-{name}", self.store.unique()));
        if let Err(e) = std::fs::rename(file, &path) {
            remove_quietly(file);
            return Err(Error::io(
                format!("cannot rename upload {}", file.display()),
                e,
            ));
        }
        let request = DeployRequest::new(&path, Origin::Upload)
            .detected(detected)
            .mode(mode);
        let result = self.run(request).await;
        remove_quietly(&path);
        if result.is_err() {
            lock(&self.rejected).retain(|r| r.file != path);
        }
        result
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

    /// Undeploys an app: it stops taking requests (404), drains and retires (a canary too).
    /// The host remembers it across restarts: the app's files in the modules directory are
    /// ignored at start until one of them is deployed again.
    pub async fn undeploy(self: &Arc<Self>, app: &str) -> Option<Arc<Version>> {
        self.undeploy_app(app, true).await
    }

    async fn undeploy_app(self: &Arc<Self>, app: &str, remember: bool) -> Option<Arc<Version>> {
        let slot = lock(&self.apps).get(app).cloned()?;
        let _deploying = slot.deploying.lock().await;
        let switched = slot.switch(&mut lock(&slot.guard), Switch::To(None));
        if let Some(watch) = switched.window {
            self.end_guard(&slot, watch, "the app was undeployed");
        }
        let version = switched.previous?;
        self.publish_routes();
        if remember {
            lock(&self.undeployed).insert(app.to_owned());
        }
        tracing::info!(app = %slot.name, version = %version.info().version, "undeployed");
        self.save_state();
        self.retire_later(&slot, Arc::clone(&version), None);
        if let Some(canary) = switched.canary {
            self.retire_later(&slot, canary, None);
        }
        Some(version)
    }

    /// Switches `app` back to its previous version if a guard window is open (it is still
    /// loaded); otherwise deploys the newest retired version of `app` whose private copy is
    /// kept and whose bytes differ from the active version's.
    ///
    /// # Errors
    /// [`Error::UnknownApp`]; [`Error::Conflict`] if no earlier version is kept; deploy errors.
    pub async fn rollback(self: &Arc<Self>, app: &str) -> Result<Deployed> {
        let slot = self.known(app)?;
        {
            let _deploying = slot.deploying.lock().await;
            let mut window = lock(&slot.guard);
            if let Some(watch) = window.take() {
                // The previous version is still loaded and warm: switch back to it.
                let figures = watch.new.outcomes().now();
                let regression = Regression {
                    cause: Cause::Operator,
                    reason: "rolled back by the operator during the guard window".to_owned(),
                };
                let fallback = self.switch_back(&slot, &mut window, watch, &regression, &figures);
                return Ok(Deployed::New(fallback));
            }
        }
        let active = slot.active().map(|a| a.hash());
        let previous = slot
            .versions()
            .into_iter()
            .rev()
            .find(|v| v.state() == State::Retired && v.stored() && Some(v.hash()) != active)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "no earlier version of {app} is kept in the store (keep_versions = {})",
                    self.config.keep_versions
                ))
            })?;
        tracing::info!(app, version = %previous.info().version, "rolling back");
        self.run(
            DeployRequest::new(previous.source(), Origin::Rollback).reading(previous.copy_path()),
        )
        .await
    }

    /// Sets `app`'s canary to `version` at `percent` of new requests: changes the share of the
    /// current canary, or loads a version whose private copy is kept (a retired one) as the
    /// canary after its warm-up.
    ///
    /// # Errors
    /// [`Error::UnknownApp`], [`Error::Invalid`] for a percentage above 100,
    /// [`Error::UnknownVersion`] if `version` is neither the canary nor kept,
    /// [`Error::Conflict`] if it is the active version or the app has none; deploy errors.
    pub async fn set_canary(
        self: &Arc<Self>,
        app: &str,
        version: &str,
        percent: u8,
    ) -> Result<Canary> {
        if percent > 100 {
            return Err(Error::Invalid(format!(
                "percent must be between 0 and 100, not {percent}"
            )));
        }
        let slot = self.known(app)?;
        let kept = {
            let _deploying = slot.deploying.lock().await;
            let Some(active) = slot.active() else {
                return Err(Error::Conflict(format!("{app} has no active version")));
            };
            if active.info().version == version {
                return Err(Error::Conflict(format!(
                    "{app}@{version} is the active version; name another version as canary"
                )));
            }
            if let Some(canary) = slot
                .canary()
                .filter(|c| c.version.info().version == version)
            {
                let split = Switch::Split(Arc::clone(&canary.version), percent);
                // The same canary with another share: nothing leaves service.
                let _same = slot.switch(&mut lock(&slot.guard), split);
                tracing::info!(app, version, percent, "canary split changed");
                self.save_state();
                return Ok(Canary { percent, ..canary });
            }
            slot.versions()
                .into_iter()
                .rev()
                .find(|v| v.info().version == version && v.state() == State::Retired && v.stored())
                .ok_or_else(|| Error::UnknownVersion {
                    app: app.to_owned(),
                    version: version.to_owned(),
                })?
        };
        let request = DeployRequest::new(kept.source(), Origin::Canary)
            .reading(kept.copy_path())
            .mode(DeployMode::Canary(percent));
        match self.run(request).await? {
            Deployed::New(version) => Ok(Canary { version, percent }),
            Deployed::Unchanged(version) => Err(Error::Conflict(format!(
                "{app}@{} with the same bytes is already live",
                version.info().version
            ))),
        }
    }

    /// Makes `app`'s canary its active version; the old active version drains and retires.
    ///
    /// # Errors
    /// [`Error::UnknownApp`]; [`Error::Conflict`] if no canary is set.
    pub async fn promote(self: &Arc<Self>, app: &str) -> Result<Arc<Version>> {
        let slot = self.known(app)?;
        let _deploying = slot.deploying.lock().await;
        let Some(canary) = slot.canary() else {
            return Err(Error::Conflict(format!("{app} has no canary to promote")));
        };
        let started = Instant::now();
        let to = Switch::To(Some(Arc::clone(&canary.version)));
        let switched = slot.switch(&mut lock(&slot.guard), to);
        if let Some(watch) = switched.window {
            self.end_guard(&slot, watch, "a canary was promoted");
        }
        let previous = switched.previous;
        let info = canary.version.info();
        *lock(&slot.last_swap) = Some(SwapTimings {
            from: previous.as_ref().map(|p| p.info().version.clone()),
            from_id: previous.as_ref().map(|p| p.id()),
            to: info.version.clone(),
            to_id: canary.version.id(),
            detected_unix_ms: unix_ms(SystemTime::now()),
            ..SwapTimings::default()
        });
        tracing::info!(app, version = %info.version,
            replaced = previous.as_ref().map(|p| p.info().version.as_str()), "canary promoted; active");
        if let Some(previous) = &previous {
            self.metrics.swapped(app, started.elapsed());
            self.note_previous(previous);
        }
        self.save_state();
        if let Some(previous) = previous {
            self.retire_later(&slot, previous, Some(started));
        }
        Ok(canary.version)
    }

    /// Ends `app`'s canary split: the canary takes no new requests, drains and retires.
    ///
    /// # Errors
    /// [`Error::UnknownApp`]; [`Error::Conflict`] if no canary is set.
    pub async fn abort_canary(self: &Arc<Self>, app: &str) -> Result<Arc<Version>> {
        let slot = self.known(app)?;
        let _deploying = slot.deploying.lock().await;
        let Some(canary) = slot.canary() else {
            return Err(Error::Conflict(format!("{app} has no canary to abort")));
        };
        let switched = slot.switch(&mut lock(&slot.guard), Switch::Unsplit);
        tracing::info!(app, version = %canary.version.info().version, "canary aborted");
        self.save_state();
        if let Some(watch) = switched.window {
            self.end_guard(&slot, watch, "the canary was aborted");
        }
        self.retire_later(&slot, Arc::clone(&canary.version), None);
        Ok(canary.version)
    }
}

fn check_upload_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
    {
        return Err(Error::Invalid(format!(
            "bad module file name {name:?}: use letters, digits and . _ - +"
        )));
    }
    if name.len() > MAX_UPLOAD_NAME {
        return Err(Error::Invalid(format!(
            "bad module file name: {} characters long, at most {MAX_UPLOAD_NAME}",
            name.len()
        )));
    }
    Ok(())
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}
