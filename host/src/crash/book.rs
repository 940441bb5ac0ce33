//! `state_dir/quarantine.json`: the crashes each version was blamed for (its strikes, within
//! the window) and the versions quarantined. The supervisor writes it after a death, the serving
//! process when an operator clears an entry; both under a lock on `quarantine.lock`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::live::LiveVersion;
use crate::error::{Error, Result};

/// The file's name under `state_dir`.
const BOOK_FILE: &str = "quarantine.json";
const LOCK_FILE: &str = "quarantine.lock";

/// Strikes and quarantined versions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Book {
    /// Crashes blamed on versions not (yet) quarantined, oldest first.
    #[serde(default)]
    pub strikes: Vec<Strike>,
    /// Versions the host does not load.
    #[serde(default)]
    pub quarantined: Vec<Quarantined>,
}

/// One crash blamed on one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Strike {
    /// App name.
    pub app: String,
    /// Version.
    pub version: String,
    /// xxh3 of the module's bytes, hex.
    pub hash: String,
    /// When the serving process died (Unix milliseconds).
    pub at_unix_ms: u64,
}

/// A version that crashed the serving process too often: not loaded until an operator clears
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// App name (empty if the process died while the module was being mapped).
    pub app: String,
    /// Version (empty likewise).
    pub version: String,
    /// xxh3 of the module's bytes, hex: what is refused.
    pub hash: String,
    /// The file it was deployed from.
    pub source: PathBuf,
    /// When it was quarantined (Unix milliseconds).
    pub at_unix_ms: u64,
    /// Deaths of the serving process blamed on it within the window.
    pub crashes: u32,
    /// How the last of them died.
    pub how: How,
}

/// How a serving process died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct How {
    /// Its pid.
    pub pid: u32,
    /// The exit status, as `wait` reported it (e.g. `signal: 6 (SIGABRT) (core dumped)`).
    pub status: String,
    /// The exit code a shell shows: the code, or 128 + the signal.
    pub code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Which rule blamed the version: `thread`, `recent` or `everything`.
    pub rule: String,
    /// The stderr line naming the thread that brought it down, if any.
    pub clue: Option<String>,
    /// Its last stderr lines, oldest first.
    pub last_lines: Vec<String>,
}

/// What one blamed crash did to a version.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    /// The version.
    pub version: LiveVersion,
    /// Its crashes within the window, this one included.
    pub crashes: u32,
    /// It is quarantined now.
    pub quarantined: bool,
}

fn io(what: &str, path: &Path, source: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), source)
}

impl Book {
    /// The book in `state_dir` (empty if there is none).
    ///
    /// # Errors
    /// If it exists but cannot be read or parsed.
    pub(crate) fn read(state_dir: &Path) -> Result<Book> {
        let path = state_dir.join(BOOK_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::StateFile {
                path: path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Book::default()),
            Err(e) => Err(io("cannot read", &path, e)),
        }
    }

    /// Reads the book, lets `change` change it, and writes it back atomically, all under the
    /// book's lock.
    ///
    /// # Errors
    /// If the book cannot be locked, read or written.
    pub(crate) fn update<T>(state_dir: &Path, change: impl FnOnce(&mut Book) -> T) -> Result<T> {
        std::fs::create_dir_all(state_dir).map_err(|e| io("cannot create", state_dir, e))?;
        let lock_path = state_dir.join(LOCK_FILE);
        let lock =
            std::fs::File::create(&lock_path).map_err(|e| io("cannot open", &lock_path, e))?;
        lock.lock().map_err(|e| io("cannot lock", &lock_path, e))?;
        let mut book = Book::read(state_dir)?;
        let out = change(&mut book);
        super::write_json(&state_dir.join(BOOK_FILE), &book)?;
        Ok(out)
    }

    /// Counts a crash at `now_ms` against each of `blamed`: a version with `threshold` crashes
    /// within `window` (this one included) is quarantined and its strikes dropped.
    pub(crate) fn strike(
        &mut self,
        blamed: &[&LiveVersion],
        how: &How,
        now_ms: u64,
        window: Duration,
        threshold: u32,
    ) -> Vec<Verdict> {
        let since = now_ms.saturating_sub(crate::clock::millis(window));
        self.strikes.retain(|s| s.at_unix_ms >= since);
        let mut verdicts = Vec::new();
        for version in blamed {
            if self.is_quarantined(&version.hash) {
                continue;
            }
            self.strikes.push(Strike {
                app: version.app.clone(),
                version: version.version.clone(),
                hash: version.hash.clone(),
                at_unix_ms: now_ms,
            });
            let crashes = self
                .strikes
                .iter()
                .filter(|s| s.hash == version.hash)
                .count() as u32;
            let quarantined = crashes >= threshold;
            if quarantined {
                self.strikes.retain(|s| s.hash != version.hash);
                self.quarantined.push(Quarantined {
                    app: version.app.clone(),
                    version: version.version.clone(),
                    hash: version.hash.clone(),
                    source: version.source.clone(),
                    at_unix_ms: now_ms,
                    crashes,
                    how: how.clone(),
                });
            }
            verdicts.push(Verdict {
                version: (*version).clone(),
                crashes,
                quarantined,
            });
        }
        verdicts
    }

    /// Whether the module with these bytes (hex hash) is quarantined.
    pub(crate) fn is_quarantined(&self, hash: &str) -> bool {
        self.quarantined.iter().any(|q| q.hash == hash)
    }

    /// Removes the quarantine of `app`'s `version` (and the strikes of those bytes); returns the
    /// entries removed.
    pub(crate) fn clear(&mut self, app: &str, version: &str) -> Vec<Quarantined> {
        let (cleared, kept) = std::mem::take(&mut self.quarantined)
            .into_iter()
            .partition::<Vec<_>, _>(|q| q.app == app && q.version == version);
        self.quarantined = kept;
        self.strikes
            .retain(|s| !cleared.iter().any(|q| q.hash == s.hash));
        cleared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash::live::LiveState;

    fn live(app: &str, hash: &str) -> LiveVersion {
        LiveVersion {
            app: app.to_owned(),
            version: "2.0.0".to_owned(),
            hash: hash.to_owned(),
            source: "/m/x.so".into(),
            state: LiveState::Active,
            canary: false,
            guarded: true,
        }
    }

    fn how() -> How {
        How {
            pid: 7,
            status: "signal: 9 (SIGKILL)".to_owned(),
            code: 137,
            signal: Some(9),
            rule: "recent".to_owned(),
            clue: None,
            last_lines: Vec::new(),
        }
    }

    #[test]
    fn a_second_crash_within_the_window_quarantines() {
        let (v, other) = (live("hello", "aa"), live("counter", "bb"));
        let window = Duration::from_secs(600);
        let mut book = Book::default();
        let first = book.strike(&[&v], &how(), 1_000_000, window, 2);
        assert_eq!((first[0].crashes, first[0].quarantined), (1, false));
        // Outside the window the first strike no longer counts.
        let late = 1_000_000 + 600_001;
        let second = book.strike(&[&v, &other], &how(), late, window, 2);
        assert_eq!((second[0].crashes, second[0].quarantined), (1, false));
        let third = book.strike(&[&v], &how(), late + 1, window, 2);
        assert_eq!((third[0].crashes, third[0].quarantined), (2, true));
        assert!(book.is_quarantined("aa") && !book.is_quarantined("bb"));
        assert_eq!(
            book.strikes.len(),
            1,
            "the quarantined version's strikes are gone"
        );
        // Quarantined versions collect no more strikes.
        assert!(book.strike(&[&v], &how(), late + 2, window, 2).is_empty());

        let dir = tempfile::tempdir().unwrap();
        Book::update(dir.path(), |b| *b = book.clone()).unwrap();
        let cleared = Book::update(dir.path(), |b| b.clear("hello", "2.0.0")).unwrap();
        assert_eq!(cleared.len(), 1);
        let after = Book::read(dir.path()).unwrap();
        assert!(after.quarantined.is_empty());
        assert_eq!(after.strikes.len(), 1, "other versions keep their strikes");
    }
}
