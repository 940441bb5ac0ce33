//! The watcher: turns file events in the modules directory into deploys and undeploys.
//!
//! A file is deployed when its writer is done with it: a close-after-write event (a plain `cp`)
//! or a rename into the directory (the `cp` to a hidden temporary name then `mv` convention).
//! On file systems that report neither, a file whose size and modification time have not moved
//! for `watch_settle_ms` is taken as complete. A file that changed while it was copied into the
//! store (a plain `cp` run again over it) is waiting for its writer: it is deployed once it has
//! settled, or at its writer's next close. A file whose deploy failed is tried again when it
//! changes; one that failed for a transient reason (out of file descriptors or disk space) is
//! tried again a few times, with growing waits. Deleting the active version's file undeploys
//! its app. Hidden files are ignored.
//!
//! Deploys of one file run one at a time, and at most one more waits: a deploy that has not
//! started yet will read the file as it is then, so further events add nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use notify_debouncer_full::notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebouncedEvent, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use crate::deploy::{Deployed, Registry, is_module_file};
use crate::error::{Error, Result};

/// A running watcher; dropping it stops watching.
pub(crate) struct Watcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `dir` for `registry`.
///
/// # Errors
/// [`Error::Watch`] if the directory cannot be watched.
pub(crate) fn watch(registry: Arc<Registry>, dir: &Path) -> Result<Watcher> {
    let config = registry.config();
    let debounce = Duration::from_millis(config.watch_debounce_ms.max(1));
    let settle = Duration::from_millis(config.watch_settle_ms.max(1));
    let (tx, rx) = mpsc::unbounded_channel();
    let cannot_watch = |source| Error::Watch {
        dir: dir.to_owned(),
        source,
    };
    let mut debouncer = new_debouncer(debounce, None, move |result| match result {
        Ok(events) => {
            let _ = tx.send(events);
        }
        Err(errors) => tracing::warn!(?errors, "file watch errors"),
    })
    .map_err(cannot_watch)?;
    debouncer
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(cannot_watch)?;
    let task = tokio::spawn(run(registry, rx, settle));
    tracing::info!(dir = %dir.display(), "watching for modules");
    Ok(Watcher {
        _debouncer: debouncer,
        task,
    })
}

/// The first wait before a deploy that failed for a transient reason is tried again; it
/// doubles each time, up to `RETRY_LAST` (about a minute in all).
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_LAST: Duration = Duration::from_secs(32);

/// A file that changed but whose writer has not said it is done.
struct Pending {
    size: u64,
    modified: SystemTime,
    since: Instant,
    detected: Instant,
}

/// The deploys of one file.
#[derive(Default)]
struct FileDeploys {
    /// One deploy at a time per file, so a repeated event sees the first deploy's outcome.
    lock: tokio::sync::Mutex<()>,
    /// A deploy waits for `lock` and has not read the file yet.
    queued: AtomicBool,
}

struct State {
    pending: HashMap<PathBuf, Pending>,
    files: HashMap<PathBuf, Arc<FileDeploys>>,
    /// Files that changed while they were copied, to wait for again.
    unsettled: mpsc::UnboundedSender<(PathBuf, Instant)>,
}

async fn run(
    registry: Arc<Registry>,
    mut rx: mpsc::UnboundedReceiver<Vec<DebouncedEvent>>,
    settle: Duration,
) {
    let (unsettled, mut unsettled_rx) = mpsc::unbounded_channel();
    let mut state = State {
        pending: HashMap::new(),
        files: HashMap::new(),
        unsettled,
    };
    let tick = (settle / 4).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { return };
                for event in batch {
                    state.handle(&registry, &event);
                }
            }
            Some((path, detected)) = unsettled_rx.recv() => state.wait_for(&path, detected),
            () = tokio::time::sleep(tick), if !state.pending.is_empty() => {
                state.settle(&registry, settle);
            }
        }
    }
}

fn writer_done(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    )
}

fn removed(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::From | RenameMode::Both | RenameMode::Any
            ))
    )
}

impl State {
    fn handle(&mut self, registry: &Arc<Registry>, event: &DebouncedEvent) {
        for path in event.paths.iter().filter(|p| is_module_file(p)) {
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() => {
                    if writer_done(&event.kind) {
                        self.pending.remove(path);
                        self.deploy(registry, path, event.time);
                    } else if matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_)) {
                        self.wait_for(path, event.time);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && removed(&event.kind) => {
                    self.pending.remove(path);
                    let (registry, path) = (Arc::clone(registry), path.clone());
                    tokio::spawn(async move {
                        if registry.source_removed(&path).await.is_some() {
                            tracing::info!(file = %path.display(), "module file deleted; app undeployed");
                        }
                    });
                }
                _ => {}
            }
        }
    }

    /// Deploys `path` once its size and mtime stay put for the settle time (or at its writer's
    /// close).
    fn wait_for(&mut self, path: &Path, detected: Instant) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let detected = self.pending.get(path).map_or(detected, |p| p.detected);
        self.pending.insert(
            path.to_owned(),
            Pending {
                size: meta.len(),
                modified,
                since: Instant::now(),
                detected,
            },
        );
    }

    /// Deploys pending files whose size and mtime stayed put for `settle`.
    fn settle(&mut self, registry: &Arc<Registry>, settle: Duration) {
        let mut ready = Vec::new();
        self.pending.retain(|path, pending| {
            let Ok(meta) = std::fs::metadata(path) else {
                return false;
            };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if meta.len() != pending.size || modified != pending.modified {
                pending.size = meta.len();
                pending.modified = modified;
                pending.since = Instant::now();
                return true;
            }
            if pending.since.elapsed() < settle {
                return true;
            }
            ready.push((path.clone(), pending.detected));
            false
        });
        for (path, detected) in ready {
            self.deploy(registry, &path, detected);
        }
    }

    fn deploy(&mut self, registry: &Arc<Registry>, path: &Path, detected: Instant) {
        let file = Arc::clone(self.files.entry(path.to_owned()).or_default());
        if file.queued.swap(true, Ordering::SeqCst) {
            // A deploy of this file is waiting and will read it as it is by then.
            return;
        }
        let (registry, path, unsettled) = (
            Arc::clone(registry),
            path.to_owned(),
            self.unsettled.clone(),
        );
        tokio::spawn(async move {
            let _one_at_a_time = file.lock.lock().await;
            file.queued.store(false, Ordering::SeqCst);
            let mut wait = RETRY_FIRST;
            loop {
                match registry.deploy(&path, detected).await {
                    Ok(Deployed::New(_) | Deployed::Unchanged(_)) => return,
                    Err(e @ Error::Unsettled { .. }) => {
                        tracing::info!(error = %e, "module file still being written");
                        let _ = unsettled.send((path, detected));
                        return;
                    }
                    // Out of file descriptors or disk space: worth another try shortly.
                    Err(e) if e.is_transient() && wait <= RETRY_LAST => {
                        tracing::warn!(error = %e, retry_in_ms = crate::clock::millis(wait),
                            "deploy failed for a transient reason; retrying");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "deploy failed");
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_cannot_be_watched_keeps_the_watchers_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config {
            state_dir: dir.path().join("state"),
            ..crate::Config::default()
        };
        let registry = Arc::new(Registry::new(Arc::new(config)).unwrap());
        let missing = dir.path().join("missing");
        match watch(registry, &missing) {
            Err(Error::Watch { dir, source }) => {
                assert_eq!(dir, missing);
                use notify_debouncer_full::notify::ErrorKind;
                let not_found = match &source.kind {
                    ErrorKind::PathNotFound => true,
                    ErrorKind::Io(e) => e.kind() == std::io::ErrorKind::NotFound,
                    _ => false,
                };
                assert!(not_found, "{source:?}");
            }
            other => panic!("expected Error::Watch, got {other:?}"),
        }
    }
}
