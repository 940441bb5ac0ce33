//! Canary splits and the operator's actions on an app: split, promote, abort, rollback.
//!
//! During a split the app's new requests go to the canary with probability `percent` and to
//! the active version otherwise. Without stickiness the choice walks a fixed permutation of
//! 0..100 (a shared counter times 61, mod 100), so every hundred requests split exactly. With
//! `canary_sticky`, a request carrying the session cookie goes by a hash of the cookie's value:
//! the same session lands on the same version without any store lookup, and raising the
//! percentage only ever moves sessions from the active version to the canary.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::{AppSlot, DeployMode, Deployed, Registry, SwapTimings, lock, unix_ms};
use crate::deploy::outcomes::{Cause, Regression};
use crate::deploy::version::{State, Version};
use crate::error::{Error, Result};

/// A canary split as installed: the canary version and its share of new requests.
#[derive(Debug)]
pub(crate) struct Split {
    pub(crate) version: Arc<Version>,
    pub(crate) percent: u8,
}

/// An app's canary, as reported.
#[derive(Debug, Clone)]
pub struct Canary {
    /// The canary version.
    pub version: Arc<Version>,
    /// Its share of new requests, in percent.
    pub percent: u8,
}

/// The canary part of the status document.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CanaryStatus {
    /// Canary version.
    pub version: String,
    /// Its share of new requests, in percent; the active version takes the rest.
    pub percent: u8,
}

impl From<&Canary> for CanaryStatus {
    fn from(canary: &Canary) -> Self {
        CanaryStatus {
            version: canary.version.info().version.clone(),
            percent: canary.percent,
        }
    }
}

impl AppSlot {
    /// The canary, if a split is set.
    pub fn canary(&self) -> Option<Canary> {
        self.split.load().as_ref().map(|split| Canary {
            version: Arc::clone(&split.version),
            percent: split.percent,
        })
    }

    /// The share of new requests `version` takes now, in percent.
    pub fn weight(&self, version: &Version) -> u8 {
        let canary = self.split.load();
        match (canary.as_ref(), self.active.load().as_ref()) {
            (Some(split), _) if split.version.id() == version.id() => split.percent,
            (split, Some(active)) if active.id() == version.id() => {
                100 - split.map_or(0, |s| s.percent)
            }
            _ => 0,
        }
    }

    /// Installs (or with `None` removes) the canary; returns the canary it replaced, if that
    /// was another version.
    pub(super) fn set_split(
        &self,
        canary: Option<Arc<Version>>,
        percent: u8,
    ) -> Option<Arc<Version>> {
        let id = canary.as_ref().map(|c| c.id());
        let split = canary.map(|version| Arc::new(Split { version, percent }));
        self.split_on.store(split.is_some(), SeqCst);
        let old = self.split.swap(split)?;
        (Some(old.version.id()) != id).then(|| Arc::clone(&old.version))
    }

    /// The version a new request goes to during a split.
    pub(super) fn pick(&self, headers: &http::HeaderMap) -> Option<Arc<Version>> {
        let split = self.split.load();
        let Some(split) = split.as_ref() else {
            return self.active.load_full();
        };
        let sticky = self
            .sticky
            .then(|| crate::session::session_id(headers, &self.cookie_name))
            .flatten();
        let bucket = match sticky {
            Some(id) => xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % 100,
            None => self.split_counter.fetch_add(1, Relaxed).wrapping_mul(61) % 100,
        };
        if bucket < u64::from(split.percent) {
            Some(Arc::clone(&split.version))
        } else {
            self.active.load_full()
        }
    }
}

impl Registry {
    fn known(&self, app: &str) -> Result<Arc<AppSlot>> {
        self.app(app)
            .ok_or_else(|| Error::UnknownApp(app.to_owned()))
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
                slot.set_split(Some(Arc::clone(&canary.version)), percent);
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
        let source = kept.source().to_owned();
        match self
            .deploy_from(
                &source,
                kept.copy_path(),
                Instant::now(),
                DeployMode::Canary(percent),
            )
            .await?
        {
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
        let (previous, watch) = {
            let mut guard = lock(&slot.guard);
            let watch = guard.take();
            let previous = slot.active.swap(Some(Arc::clone(&canary.version)));
            slot.set_split(None, 0);
            (previous, watch)
        };
        if let Some(watch) = watch {
            self.end_guard(&slot, watch, "a canary was promoted");
        }
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
        slot.set_split(None, 0);
        tracing::info!(app, version = %canary.version.info().version, "canary aborted");
        self.save_state();
        self.retire_later(&slot, Arc::clone(&canary.version), None);
        Ok(canary.version)
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
            let mut guard = lock(&slot.guard);
            if let Some(watch) = guard.take() {
                // The previous version is still loaded and warm: switch back to it.
                let figures = watch.new.outcomes().now();
                let regression = Regression {
                    cause: Cause::Operator,
                    reason: "rolled back by the operator during the guard window".to_owned(),
                };
                let fallback = self.switch_back(&slot, watch, &regression, &figures);
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
        let source = previous.source().to_owned();
        self.deploy_from(
            &source,
            previous.copy_path(),
            Instant::now(),
            DeployMode::Switch,
        )
        .await
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
        let result = self.deploy_from(&path, &path, detected, mode).await;
        remove_quietly(&path);
        if result.is_err() {
            lock(&self.rejected).retain(|r| r.file != path);
        }
        result
    }
}

/// Longest module file name an upload may have (the host's copies add their own prefixes).
const MAX_UPLOAD_NAME: usize = 128;

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
