//! Reloads the certificate when its files change.
//!
//! The directories holding the certificate and the key are watched, not the files: tools
//! replace certificates by renaming a new file over the old one or by switching a symlink
//! (certbot's `live/`, Kubernetes' `..data`), which a watch on the old file would miss. Any
//! change in those directories leads to a reload, which is a no-op when the two files read the
//! same as before. Reads are not changes, so the reload's own reading does not trigger another.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::event::{AccessKind, AccessMode};
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebouncedEvent, Debouncer, RecommendedCache, new_debouncer};

use super::{Certificates, TlsError};

/// How long a burst of file events settles before the reload: long enough for a tool that
/// writes the certificate and then the key to have written both.
const SETTLE: Duration = Duration::from_millis(200);

/// A running watch of the certificate's files; dropping it stops watching.
pub(crate) struct CertWatcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

impl std::fmt::Debug for CertWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertWatcher").finish_non_exhaustive()
    }
}

/// Whether an event may mean a file's content changed (anything but a read).
fn is_change(event: &DebouncedEvent) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directory a file lives in (`.` for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

impl CertWatcher {
    /// Watches the directories of `certificates`' files and reloads it when they change.
    ///
    /// # Errors
    /// [`TlsError::Watch`] if a directory cannot be watched.
    pub(crate) fn start(certificates: Arc<Certificates>) -> Result<CertWatcher, TlsError> {
        let (cert, key) = certificates.files();
        let mut dirs = vec![dir_of(cert), dir_of(key)];
        dirs.dedup();
        let watched = Arc::clone(&certificates);
        let mut debouncer = new_debouncer(SETTLE, None, move |result| match result {
            Ok(events) => {
                let events: Vec<DebouncedEvent> = events;
                if events.iter().any(is_change) {
                    watched.reload_logged("file change");
                }
            }
            Err(errors) => tracing::warn!(?errors, "certificate file watch errors"),
        })
        .map_err(|source| TlsError::Watch {
            path: dirs[0].clone(),
            source,
        })?;
        for dir in &dirs {
            debouncer
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| TlsError::Watch {
                    path: dir.clone(),
                    source,
                })?;
        }
        tracing::info!(dirs = ?dirs, "watching the TLS certificate and key for changes");
        Ok(CertWatcher {
            _debouncer: debouncer,
        })
    }
}
