//! State across restarts: `state_dir/state.json` lists, per app, the private copy of its active
//! version (and of its canary, with the split). It is rewritten atomically (temporary file, then
//! rename) on every switch, split change and undeploy, and those copies survive a shutdown.
//!
//! At start the host first restores every app from it, then scans the modules directory: a file
//! of an app that was restored is ignored at start (the restored version wins; touching the file
//! or `baton deploy` deploys it), files of other apps deploy as usual. An app undeployed
//! through the admin API is listed too, and its files are ignored at start the same way until
//! it is deployed again. Store files that no live version uses afterwards are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{DeployMode, Registry, lock};
use crate::deploy::version::Version;

/// The file's name under `state_dir`.
const STATE_FILE: &str = "state.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    apps: BTreeMap<String, SavedApp>,
    /// Apps undeployed through the admin API; their files are ignored at start.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    undeployed: BTreeSet<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedApp {
    active: SavedVersion,
    canary: Option<SavedCanary>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedVersion {
    version: String,
    /// File name in the store.
    copy: String,
    /// xxh3 of the module's bytes, hex.
    hash: String,
    /// The file it was deployed from.
    source: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedCanary {
    #[serde(flatten)]
    version: SavedVersion,
    percent: u8,
}

fn saved(version: &Version) -> SavedVersion {
    SavedVersion {
        version: version.info().version.clone(),
        copy: version
            .copy_path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        hash: format!("{:016x}", version.hash()),
        source: version.source().to_owned(),
    }
}

impl Registry {
    fn state_file(&self) -> PathBuf {
        self.config.state_dir.join(STATE_FILE)
    }

    /// Records which versions take traffic, so a restart brings them back. Does nothing until
    /// the start is complete and once a shutdown began.
    pub(super) fn save_state(&self) {
        if !self.persist.load(SeqCst) {
            return;
        }
        let _one_writer = lock(&self.saving);
        let mut state = Saved {
            undeployed: lock(&self.undeployed).clone(),
            ..Saved::default()
        };
        for slot in self.apps() {
            let Some(active) = slot.active() else {
                continue;
            };
            let canary = slot.canary().map(|c| SavedCanary {
                version: saved(&c.version),
                percent: c.percent,
            });
            state.apps.insert(
                slot.name().to_owned(),
                SavedApp {
                    active: saved(&active),
                    canary,
                },
            );
        }
        let path = self.state_file();
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::error!(file = %path.display(), error = %e,
                "cannot save the host state; a restart may not restore the current versions");
        }
    }

    /// Brings back the versions `state.json` lists, from their private copies. Apps restored
    /// here keep their version over files of the modules directory at start.
    pub(crate) async fn restore(self: &Arc<Self>) {
        let path = self.state_file();
        let state: Saved = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => state,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e,
                        "unreadable host state; starting from the modules directory only");
                    return;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the host state");
                return;
            }
        };
        lock(&self.undeployed).clone_from(&state.undeployed);
        for (app, saved) in state.apps {
            if !self
                .restore_one(&app, &saved.active, DeployMode::Switch)
                .await
            {
                continue;
            }
            lock(&self.restored).insert(app.clone());
            if let Some(canary) = &saved.canary {
                self.restore_one(&app, &canary.version, DeployMode::Canary(canary.percent))
                    .await;
            }
        }
    }

    async fn restore_one(
        self: &Arc<Self>,
        app: &str,
        saved: &SavedVersion,
        mode: DeployMode,
    ) -> bool {
        let copy = self.store.dir().join(&saved.copy);
        match self
            .deploy_from(&saved.source, &copy, Instant::now(), mode)
            .await
        {
            Ok(deployed) => {
                let version = match &deployed {
                    super::Deployed::New(v) | super::Deployed::Unchanged(v) => v,
                };
                tracing::info!(app, version = %version.info().version, copy = %copy.display(),
                    "restored from the host state");
                if version.info().app != app || format!("{:016x}", version.hash()) != saved.hash {
                    tracing::warn!(app, expected = %saved.version, copy = %copy.display(),
                        "the restored copy is not the module the state names");
                }
                true
            }
            Err(e) => {
                tracing::error!(app, version = %saved.version, error = %e,
                    "cannot restore from the host state");
                false
            }
        }
    }

    /// Whether a file of `app` found at start must leave the restored version alone.
    pub(super) fn was_restored(&self, app: &str) -> bool {
        lock(&self.restored).contains(app)
    }

    /// Ends the start: removes store files no live version uses (earlier runs' copies), then
    /// records the state and keeps it up to date from now on.
    pub(crate) fn started(self: &Arc<Self>) {
        let live: Vec<PathBuf> = self
            .apps()
            .iter()
            .flat_map(|slot| slot.versions())
            .filter(|v| v.stored())
            .map(|v| v.copy_path().to_owned())
            .collect();
        for file in self.store.files() {
            if !live.iter().any(|l| l == &file) {
                remove(&file);
            }
        }
        self.persist.store(true, SeqCst);
        self.save_state();
        self.start_sampler();
    }
}

fn remove(file: &Path) {
    if let Err(e) = std::fs::remove_file(file) {
        tracing::warn!(file = %file.display(), error = %e, "cannot remove an unused store copy");
    }
}
