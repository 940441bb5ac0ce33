//! `state_dir/live.json`: which versions the serving process runs and in which state, rewritten
//! (atomically) whenever that changes, so the supervisor can tell after a death what was live.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name under `state_dir`.
const LIVE_FILE: &str = "live.json";

/// The versions one serving process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Live {
    /// The serving process that wrote it.
    pub pid: u32,
    /// Versions that run app code and may be blamed for a crash: loading, warming, active and
    /// canaries. A version in standby or draining is an old version finishing its work.
    pub versions: Vec<LiveVersion>,
}

/// Where a live version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LiveState {
    /// Being copied, mapped or initialised (its app and version may not be known yet).
    Loading,
    /// Running its warm-up.
    Warming,
    /// Taking requests.
    Active,
}

/// One live version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LiveVersion {
    /// App name (empty while its module is being mapped).
    pub app: String,
    /// Version (empty while its module is being mapped).
    pub version: String,
    /// xxh3 of the module's bytes, hex.
    pub hash: String,
    /// The file it was deployed from.
    pub source: PathBuf,
    /// Where it is.
    pub state: LiveState,
    /// It takes a canary share beside the active version.
    #[serde(default)]
    pub canary: bool,
    /// It is the new version of an open guard window (the previous one waits in standby).
    #[serde(default)]
    pub guarded: bool,
}

impl LiveVersion {
    /// Whether it changed recently: loading, warming, a canary, or in its guard window.
    pub(crate) fn is_recent(&self) -> bool {
        self.state != LiveState::Active || self.canary || self.guarded
    }
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(LIVE_FILE)
}

/// Writes `live` atomically (a temporary file, then a rename).
///
/// # Errors
/// If the file cannot be written.
pub(crate) fn write(state_dir: &Path, live: &Live) -> crate::Result<()> {
    super::write_json(&path(state_dir), live)
}

/// What the serving process `pid` last wrote, if the file is its own.
pub(crate) fn read(state_dir: &Path, pid: u32) -> Option<Live> {
    let bytes = std::fs::read(path(state_dir)).ok()?;
    serde_json::from_slice::<Live>(&bytes)
        .ok()
        .filter(|live| live.pid == pid)
}
