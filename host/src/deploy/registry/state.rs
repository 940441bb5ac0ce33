//! State across restarts: `state_dir/state.json` lists, per app, the private copy of its active
//! version (and of its canary, with the split), and of its previous version (the one the active
//! version replaced, while its copy is kept), with whether a guard window was open. It is
//! rewritten atomically (temporary file, then rename) on every switch, split change, end of a
//! guard window and undeploy, and those copies survive a shutdown and a crash.
//!
//! At start the host first restores every app from it, then scans the modules directory: a file
//! of an app that was restored is ignored at start (the restored version wins; touching the file
//! or `baton deploy` deploys it), files of other apps deploy as usual. An app undeployed
//! through the admin API is listed too, and its files are ignored at start the same way until
//! it is deployed again. Store files that no live version uses and no app names as its previous
//! version are removed afterwards.
//!
//! After a crash: a quarantined active version is not restored; its previous version is, if it
//! is kept and not quarantined itself (otherwise the app is not served). A version whose guard
//! window was open when the process died comes back with its previous version as the fallback
//! of a new window (a graceful shutdown closes the window first, so it does not).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use serde::{Deserialize, Serialize};

use super::pipeline::{DeployRequest, Origin};
use super::quarantine::hex;
use super::{AppSlot, DeployMode, Deployed, Registry};
use crate::deploy::version::{State, Version};
use crate::error::{Error, Result};
use crate::sync::lock;

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
    /// The version the active one replaced, while its private copy is kept.
    #[serde(default)]
    previous: Option<SavedVersion>,
    /// A guard window was open: `previous` is its fallback.
    #[serde(default)]
    guarded: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SavedVersion {
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

impl Saved {
    /// Writes the state to `path` atomically: a temporary file, then a rename over the old one.
    ///
    /// # Errors
    /// [`Error::StateFile`] if it cannot be encoded, [`Error::Io`] if it cannot be written.
    fn write(&self, path: &Path) -> Result<()> {
        crate::crash::write_json(path, self)
    }

    /// The state written at `path`; `None` if there is none.
    ///
    /// # Errors
    /// [`Error::StateFile`] if it is not a state file, [`Error::Io`] if it cannot be read.
    fn read(path: &Path) -> Result<Option<Saved>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::StateFile {
                path: path.to_owned(),
                source,
            })
    }
}

fn saved(version: &Version) -> SavedVersion {
    SavedVersion {
        version: version.info().version.clone(),
        copy: version
            .copy_path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        hash: hex(version.hash()),
        source: version.source().to_owned(),
    }
}

impl Registry {
    fn state_file(&self) -> PathBuf {
        self.config.state_dir.join(STATE_FILE)
    }

    /// Records which versions take traffic, so a restart brings them back. Does nothing until
    /// the start is complete and once a shutdown began.
    /// Also republishes `live.json`, at start and during shutdown too.
    pub(super) fn save_state(&self) {
        self.publish_live();
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
            let previous = self.previous_of(&slot, &active);
            state.apps.insert(
                slot.name().to_owned(),
                SavedApp {
                    guarded: previous.is_some() && guarded(&slot),
                    active: saved(&active),
                    canary,
                    previous,
                },
            );
        }
        let path = self.state_file();
        if let Err(e) = state.write(&path) {
            tracing::error!(error = %e,
                "cannot save the host state; a restart may not restore the current versions");
        }
    }

    /// Brings back the versions `state.json` lists, from their private copies. Apps restored
    /// here keep their version over files of the modules directory at start.
    pub(crate) async fn restore(self: &Arc<Self>) {
        self.report_quarantine();
        self.publish_live();
        let state = match Saved::read(&self.state_file()) {
            Ok(Some(state)) => state,
            Ok(None) => return,
            Err(e @ Error::StateFile { .. }) => {
                tracing::error!(error = %e,
                    "unreadable host state; starting from the modules directory only");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the host state");
                return;
            }
        };
        lock(&self.undeployed).clone_from(&state.undeployed);
        for (app, saved) in state.apps {
            self.restore_app(&app, saved).await;
        }
    }

    async fn restore_app(self: &Arc<Self>, app: &str, saved: SavedApp) {
        let previous = saved.previous.filter(|p| {
            let kept = self.store.dir().join(&p.copy).is_file();
            kept && self.quarantined_hex(&p.hash).is_none()
        });
        if let Some(q) = self.quarantined_hex(&saved.active.hash) {
            let Some(previous) = previous else {
                tracing::error!(app, version = %q.version, crashes = q.crashes,
                    "the active version is quarantined and no previous version is kept; \
                     the app is not served until another version is deployed or the \
                     quarantine is cleared");
                return;
            };
            tracing::warn!(app, version = %q.version, crashes = q.crashes,
                previous = %previous.version,
                "the active version is quarantined; restoring the previous version instead");
            if self.restore_one(app, &previous, DeployMode::Switch).await {
                lock(&self.restored).insert(app.to_owned());
            }
            return;
        }
        let reopen = saved.guarded && self.config.guard_for(app).enabled();
        if let Some(previous) = previous.as_ref().filter(|_| reopen) {
            // The process died during a guard window: the fallback comes back first, so that
            // restoring the active version opens a new window over it.
            tracing::info!(app, version = %saved.active.version, fallback = %previous.version,
                "a guard window was open when the serving process stopped; reopening it");
            self.restore_one(app, previous, DeployMode::Switch).await;
        }
        if !self
            .restore_one(app, &saved.active, DeployMode::Switch)
            .await
        {
            return;
        }
        lock(&self.restored).insert(app.to_owned());
        if let Some(previous) = previous {
            lock(&self.previous).insert(app.to_owned(), previous);
        }
        if let Some(canary) = &saved.canary {
            if let Some(q) = self.quarantined_hex(&canary.version.hash) {
                tracing::warn!(app, version = %q.version, "the canary is quarantined; not restored");
                return;
            }
            self.restore_one(app, &canary.version, DeployMode::Canary(canary.percent))
                .await;
        }
    }

    /// Remembers `version` as the one its app's active version replaced.
    pub(super) fn note_previous(&self, version: &Version) {
        lock(&self.previous).insert(version.info().app.clone(), saved(version));
    }

    /// Forgets `app`'s previous version (it was switched back to, or discarded).
    pub(super) fn forget_previous(&self, app: &str) {
        lock(&self.previous).remove(app);
    }

    /// Whether `copy` is the private copy of some app's previous version.
    pub(super) fn is_previous(&self, copy: &Path) -> bool {
        let name = copy.file_name().map(|n| n.to_string_lossy().into_owned());
        lock(&self.previous)
            .values()
            .any(|p| Some(&p.copy) == name.as_ref())
    }

    /// `slot`'s previous version as saved, if its copy is still kept and it is not `active`.
    fn previous_of(&self, slot: &AppSlot, active: &Version) -> Option<SavedVersion> {
        let previous = lock(&self.previous).get(slot.name()).cloned()?;
        let kept = self.store.dir().join(&previous.copy).is_file();
        (kept && previous.hash != hex(active.hash())).then_some(previous)
    }

    async fn restore_one(
        self: &Arc<Self>,
        app: &str,
        saved: &SavedVersion,
        mode: DeployMode,
    ) -> bool {
        let copy = self.store.dir().join(&saved.copy);
        let request = DeployRequest::new(&saved.source, Origin::Restore)
            .reading(&copy)
            .mode(mode);
        match self.run(request).await {
            Ok(deployed) => {
                let version = match &deployed {
                    Deployed::New(v) | Deployed::Unchanged(v) => v,
                };
                tracing::info!(app, version = %version.info().version, copy = %copy.display(),
                    "restored from the host state");
                if version.info().app != app || hex(version.hash()) != saved.hash {
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
        let stored: Vec<Arc<Version>> = self
            .apps()
            .iter()
            .flat_map(|slot| slot.versions())
            .filter(|v| v.stored())
            .collect();
        // A previous version with the same bytes as a loaded one (a canary) uses its copy.
        for previous in lock(&self.previous).values_mut() {
            if let Some(same) = stored.iter().find(|v| hex(v.hash()) == previous.hash) {
                *previous = saved(same);
            }
        }
        let live: Vec<PathBuf> = stored.iter().map(|v| v.copy_path().to_owned()).collect();
        for file in self.store.files() {
            if !live.iter().any(|l| l == &file) && !self.is_previous(&file) {
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

/// Whether `slot` has a guard window open: its previous version waits in standby.
fn guarded(slot: &AppSlot) -> bool {
    slot.versions().iter().any(|v| v.state() == State::Standby)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(active: &Version, previous: Option<&Version>) -> SavedApp {
        SavedApp {
            active: saved(active),
            canary: None,
            previous: previous.map(saved),
            guarded: previous.is_some(),
        }
    }

    fn json(state: &Saved) -> serde_json::Value {
        serde_json::to_value(state).unwrap()
    }

    #[test]
    fn the_state_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let (one, two, three) = (
            Version::stub(1, "hello", "1.0.0"),
            Version::stub(2, "hello", "1.1.0"),
            Version::stub(3, "shop", "2.0.0"),
        );
        let mut state = Saved::default();
        state.apps.insert("hello".into(), app(&two, Some(&one)));
        let mut shop = app(&three, None);
        shop.canary = Some(SavedCanary {
            version: saved(&one),
            percent: 25,
        });
        state.apps.insert("shop".into(), shop);
        state.undeployed.insert("gone".into());

        state.write(&path).unwrap();
        let read = Saved::read(&path).unwrap().expect("written");
        assert_eq!(json(&read), json(&state));
        assert_eq!(read.apps["hello"].active.hash, hex(two.hash()));
        assert_eq!(read.apps["hello"].active.source, two.source());
        assert!(read.apps["hello"].guarded);
        assert_eq!(read.apps["shop"].canary.as_ref().unwrap().percent, 25);
        assert!(read.undeployed.contains("gone"));
        // Written through a temporary file, renamed over the state file.
        assert!(!path.with_extension("json.tmp").exists());

        // Rewritten with less, it reads back with less.
        state.apps.remove("shop");
        state.undeployed.clear();
        state.write(&path).unwrap();
        let read = Saved::read(&path).unwrap().unwrap();
        assert_eq!(json(&read), json(&state));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("undeployed"), "{text}");
    }

    #[test]
    fn a_missing_state_file_is_no_state() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Saved::read(&dir.path().join(STATE_FILE)).unwrap().is_none());
    }

    #[test]
    fn a_corrupt_state_file_is_a_state_file_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for corrupt in ["", "{\"apps\": {\"hello\": ", "[1, 2]", "\u{0}\u{1}garbage"] {
            std::fs::write(&path, corrupt).unwrap();
            let err = Saved::read(&path).unwrap_err();
            assert!(matches!(err, Error::StateFile { .. }), "{corrupt:?}: {err}");
        }
    }

    #[test]
    fn an_unreadable_state_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(Saved::read(&path), Err(Error::Io { .. })));
        assert!(matches!(
            Saved::default().write(&path),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn a_state_file_of_an_earlier_release_reads() {
        // Before previous versions and guard windows were saved.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(
            &path,
            r#"{"apps": {"hello": {"active": {"version": "1.0.0", "copy": "1-a.so",
                "hash": "00000000000000ff", "source": "modules/hello.so"}, "canary": null}}}"#,
        )
        .unwrap();
        let read = Saved::read(&path).unwrap().unwrap();
        let hello = &read.apps["hello"];
        assert_eq!(hello.active.copy, "1-a.so");
        assert!(hello.previous.is_none() && !hello.guarded && read.undeployed.is_empty());
    }
}
