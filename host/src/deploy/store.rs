//! The private module store: every accepted module file is copied here under a unique name
//! before it is mapped, so operators can overwrite or delete their files freely and glibc never
//! hands back an already-loaded library for a path or inode it has seen.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A directory of private module copies.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    next: AtomicU64,
    /// Names this process's copies apart from those of earlier runs, which may be kept (state
    /// across restarts) and may come from a process with the same pid (a container's pid 1).
    run: String,
}

impl Store {
    /// Opens (creating) the store under `state_dir`.
    pub(crate) fn open(state_dir: &Path) -> Result<Store> {
        let dir = state_dir.join("store");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io(format!("cannot resolve {}", dir.display()), e))?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Ok(Store {
            dir,
            next: AtomicU64::new(1),
            run: format!("{:x}{:05x}", started, std::process::id()),
        })
    }

    /// The next deployment id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The store directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every file in the store.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A name unique to this process and call.
    pub(crate) fn unique(&self) -> String {
        format!("{}-{:06}", self.run, self.next_id())
    }

    /// Copies the module file `read` (deployed as `source`) into the store for deployment
    /// `id`, hashing it on the way; returns the copy's path and the hash of its bytes.
    ///
    /// Streams through a small buffer: reading a whole module into one allocation would leave
    /// glibc's heap several megabytes larger after the first few deploys.
    pub(crate) fn copy_in(&self, id: u64, source: &Path, read: &Path) -> Result<(PathBuf, u64)> {
        use std::io::{Read, Write};
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "module.so".to_owned());
        let target = self.dir.join(format!("{}-{id:06}-{name}", self.run));
        let refuse = |what: &str, e: std::io::Error| Error::Load {
            path: source.to_owned(),
            reason: format!("{what}: {e}"),
        };
        let mut input = std::fs::File::open(read).map_err(|e| refuse("cannot read", e))?;
        let mut output = std::fs::File::create(&target)
            .map_err(|e| refuse("cannot copy into the private store", e))?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let copied = loop {
            let n = match input.read(&mut buffer) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(refuse("cannot read", e)),
            };
            hasher.update(&buffer[..n]);
            if let Err(e) = output.write_all(&buffer[..n]) {
                break Err(refuse("cannot copy into the private store", e));
            }
        };
        if let Err(e) = copied {
            drop(output);
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
        Ok((target, hasher.digest()))
    }

    /// Removes a private copy that is no longer mapped.
    pub(crate) fn remove(&self, copy: &Path) {
        if copy.starts_with(&self.dir) {
            let _ = std::fs::remove_file(copy);
        }
    }
}
