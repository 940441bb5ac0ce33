//! The serving process's side of crash quarantine: it publishes its live versions in
//! `state_dir/live.json` for the supervisor to read after a death, refuses to load quarantined
//! module bytes from anywhere (state, scan, watcher, upload), reports the quarantine at start,
//! and lets an operator clear it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::{Registry, lock};
use crate::crash::live::{self, Live, LiveState, LiveVersion};
use crate::crash::{Book, Quarantined};
use crate::deploy::version::State;
use crate::error::{Error, Result};

/// A module hash as the state files write it.
pub(super) fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// What the registry keeps for the quarantine.
#[derive(Debug, Default)]
pub(super) struct Quarantine {
    /// Quarantined versions, as read at start (and cleared since).
    entries: Mutex<Vec<Quarantined>>,
    /// Modules being copied and mapped, before their app is known, by deployment id.
    opening: Mutex<BTreeMap<u64, LiveVersion>>,
    /// One writer of `live.json` at a time.
    writing: Mutex<()>,
}

impl Quarantine {
    /// The quarantine recorded in `state_dir` (none if it cannot be read: logged).
    pub(super) fn load(state_dir: &Path) -> Quarantine {
        let entries = match Book::read(state_dir) {
            Ok(book) => book.quarantined,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the quarantine; no version is refused");
                Vec::new()
            }
        };
        Quarantine {
            entries: Mutex::new(entries),
            ..Quarantine::default()
        }
    }
}

/// A module being opened, listed in `live.json` until the deploy ends.
#[derive(Debug)]
pub(super) struct Opening<'r> {
    registry: &'r Registry,
    id: u64,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        lock(&self.registry.quarantine.opening).remove(&self.id);
        self.registry.publish_live();
    }
}

impl Registry {
    /// The quarantined versions.
    pub fn quarantine(&self) -> Vec<Quarantined> {
        lock(&self.quarantine.entries).clone()
    }

    /// The quarantine entry of these module bytes, if they are quarantined.
    pub(super) fn quarantined(&self, hash: u64) -> Option<Quarantined> {
        let hash = hex(hash);
        self.quarantined_hex(&hash)
    }

    /// The quarantine entry of these module bytes (hex hash), if they are quarantined.
    pub(super) fn quarantined_hex(&self, hash: &str) -> Option<Quarantined> {
        lock(&self.quarantine.entries)
            .iter()
            .find(|q| q.hash == hash)
            .cloned()
    }

    /// Logs every quarantined version: called at start.
    pub(super) fn report_quarantine(&self) {
        for q in lock(&self.quarantine.entries).iter() {
            tracing::warn!(app = %q.app, version = %q.version, hash = %q.hash,
                source = %q.source.display(), crashes = q.crashes, at_unix_ms = q.at_unix_ms,
                status = %q.how.status, code = q.how.code, rule = %q.how.rule,
                clue = q.how.clue.as_deref(), last_lines = ?q.how.last_lines,
                "quarantined: this version crashed the serving process; it is not loaded");
        }
    }

    /// Lifts the quarantine of `app`'s `version`: its module can be deployed again.
    ///
    /// # Errors
    /// [`Error::NotQuarantined`] if it is not quarantined; an I/O error if the quarantine file
    /// cannot be updated.
    pub fn clear_quarantine(&self, app: &str, version: &str) -> Result<Vec<Quarantined>> {
        let cleared = Book::update(&self.config.state_dir, |book| book.clear(app, version))?;
        lock(&self.quarantine.entries).retain(|q| !(q.app == app && q.version == version));
        if cleared.is_empty() {
            return Err(Error::NotQuarantined {
                app: app.to_owned(),
                version: version.to_owned(),
            });
        }
        tracing::info!(
            app,
            version,
            "quarantine cleared; the module can be deployed again"
        );
        Ok(cleared)
    }

    /// Lists a module being opened (deployment `id`) in `live.json` until the returned guard
    /// is dropped: a crash while it is mapped or initialised is blamed on it.
    pub(super) fn opening(&self, id: u64, hash: u64, source: &Path) -> Opening<'_> {
        lock(&self.quarantine.opening).insert(
            id,
            LiveVersion {
                app: String::new(),
                version: String::new(),
                hash: hex(hash),
                source: source.to_owned(),
                state: LiveState::Loading,
                canary: false,
                guarded: false,
            },
        );
        self.publish_live();
        Opening { registry: self, id }
    }

    /// Rewrites `live.json` with the versions that run app code now.
    pub(super) fn publish_live(&self) {
        let mut versions = Vec::new();
        for slot in self.apps() {
            let all = slot.versions();
            // The new version of an open window is the active one while another is in standby.
            let guarded = all.iter().any(|v| v.state() == State::Standby);
            let active = slot.active().map(|v| v.id());
            let canary = slot.canary().map(|c| c.version.id());
            for v in all {
                let state = match v.state() {
                    State::Loading => LiveState::Loading,
                    State::Warming => LiveState::Warming,
                    State::Active => LiveState::Active,
                    _ => continue,
                };
                versions.push(LiveVersion {
                    app: v.info().app.clone(),
                    version: v.info().version.clone(),
                    hash: hex(v.hash()),
                    source: v.source().to_owned(),
                    state,
                    canary: canary == Some(v.id()),
                    guarded: guarded && active == Some(v.id()),
                });
            }
        }
        for opening in lock(&self.quarantine.opening).values() {
            if !versions.iter().any(|v| v.hash == opening.hash) {
                versions.push(opening.clone());
            }
        }
        let live = Live {
            pid: std::process::id(),
            versions,
        };
        let _one_writer = lock(&self.quarantine.writing);
        if let Err(e) = live::write(&self.config.state_dir, &live) {
            tracing::error!(error = %e,
                "cannot write live.json; a crash now cannot be blamed on the right version");
        }
    }
}
