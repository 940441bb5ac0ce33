//! Crashes of the serving process and the quarantine of the versions that cause them.
//!
//! The two processes share three things, all in `state_dir`:
//!
//! - [`live`]: the serving process keeps `live.json` up to date with the versions that run app
//!   code (loading, warming, active, canary, the new version of a guard window);
//! - the stderr of the serving process, relayed by the supervisor ([`Tail`]), whose last lines
//!   usually name the thread that brought the process down;
//! - [`Book`] (`quarantine.json`): after a death the supervisor [`blame`]s some of the live
//!   versions (see there for the rule) and counts a strike against each; a version with
//!   `quarantine.crashes` strikes within `quarantine.window_secs` is quarantined. The next
//!   serving process does not load it — not from `state.json`, the modules directory, the
//!   watcher or an upload — and restores the app's previous kept version instead, until an
//!   operator clears it.

mod blame;
mod book;
pub(crate) mod live;
mod tail;

use std::path::Path;
use std::process::ExitStatus;

pub(crate) use blame::blame;
pub(crate) use book::{Book, How, Quarantined};
pub(crate) use tail::Tail;

use crate::config::QuarantineConfig;
use crate::error::{Error, Result};

use crate::clock::now_unix_ms as now_ms;

/// Writes `value` to the state file `path` as JSON, atomically (a temporary file beside it, then
/// a rename): the other process, or the next one after a crash, never reads half a file.
///
/// # Errors
/// [`Error::StateFile`] if `value` cannot be serialized, [`Error::Io`] if the file cannot be
/// written.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::StateFile {
        path: path.to_owned(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// The supervisor's part after serving process `pid` died with `status`: blames the versions
/// it ran (from its `live.json` and its `last_lines` of stderr), counts the strikes and
/// quarantines, and logs what it decided. `code` is the exit code a shell shows.
pub(crate) fn after_death(
    state_dir: &Path,
    config: &QuarantineConfig,
    pid: u32,
    status: &ExitStatus,
    code: i32,
    last_lines: Vec<String>,
) {
    use std::os::unix::process::ExitStatusExt;
    if !config.enabled() {
        return;
    }
    let Some(live) = live::read(state_dir, pid) else {
        tracing::warn!(
            pid,
            "the dead serving process left no record of its versions; nothing is blamed"
        );
        return;
    };
    let blame = blame(&live, &last_lines);
    if blame.versions.is_empty() {
        tracing::info!(
            pid,
            "no version was live in the dead serving process; nothing is blamed"
        );
        return;
    }
    let how = How {
        pid,
        status: status.to_string(),
        code,
        signal: status.signal(),
        rule: blame.rule.name().to_owned(),
        clue: blame.clue.clone(),
        last_lines,
    };
    let verdicts = Book::update(state_dir, |book| {
        book.strike(
            &blame.versions,
            &how,
            now_ms(),
            config.window(),
            config.crashes,
        )
    });
    let verdicts = match verdicts {
        Ok(verdicts) => verdicts,
        Err(e) => {
            tracing::error!(error = %e, "cannot record the crash; nothing is quarantined");
            return;
        }
    };
    for verdict in verdicts {
        let v = &verdict.version;
        if verdict.quarantined {
            tracing::error!(app = %v.app, version = %v.version, hash = %v.hash,
                source = %v.source.display(), crashes = verdict.crashes,
                window_secs = config.window_secs, status = %how.status, code = how.code,
                rule = %how.rule, clue = how.clue.as_deref(), last_lines = ?how.last_lines,
                "version quarantined: it crashed the serving process; the next one will not load it");
        } else {
            tracing::warn!(app = %v.app, version = %v.version, hash = %v.hash,
                crashes = verdict.crashes, quarantine_at = config.crashes,
                window_secs = config.window_secs, status = %how.status, rule = %how.rule,
                clue = how.clue.as_deref(), "version blamed for the crash");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_is_written_whole_or_fails_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.json");
        write_json(&path, &live::Live::default()).unwrap();
        assert!(!path.with_extension("json.tmp").exists());
        let back: live::Live = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, live::Live::default());

        // JSON object keys must be strings.
        let unrepresentable = std::collections::BTreeMap::from([((1, 2), 3)]);
        assert!(matches!(
            write_json(&path, &unrepresentable),
            Err(Error::StateFile { .. })
        ));
        let nowhere = dir.path().join("missing").join("live.json");
        assert!(matches!(
            write_json(&nowhere, &live::Live::default()),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
        ));
    }
}
