//! The private module store: every accepted module file is copied here under a unique name
//! before it is mapped, so operators can overwrite or delete their files freely and glibc never
//! hands back an already-loaded library for a path or inode it has seen.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::loader::LoadError;

/// A private copy made by [`Store::copy_in`].
#[derive(Debug)]
pub(crate) struct Copied {
    /// The copy.
    pub(crate) path: PathBuf,
    /// xxh3 of its bytes.
    pub(crate) hash: u64,
    /// The source file as it was when copied.
    stamp: Stamp,
}

/// What identifies one state of a file: which file, how long, when last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// How `after` (with `copied` bytes read in between) differs from `self`, if it does.
    fn change(&self, after: &Stamp, copied: u64) -> Option<String> {
        if (self.dev, self.ino) != (after.dev, after.ino) {
            Some("replaced by another file".to_owned())
        } else if self.len != after.len {
            Some(format!("size {} → {} bytes", self.len, after.len))
        } else if copied != self.len {
            Some(format!("{copied} bytes read of {}", self.len))
        } else if (self.mtime, self.ctime) != (after.mtime, after.ctime) {
            Some("rewritten".to_owned())
        } else {
            None
        }
    }
}

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
        let started = crate::clock::now_unix_ms();
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
    /// `id`, hashing it on the way.
    ///
    /// The copy is accepted only if the file did not change while it was read: device, inode,
    /// size, modification and change times equal before and after, and as many bytes copied as
    /// it has. Otherwise its writer is not done ([`Error::Unsettled`]): the copy is discarded.
    /// So is an empty file written less than `grace` ago: a `cp` over the file has truncated
    /// it and not written yet.
    ///
    /// Streams through a small buffer: reading a whole module into one allocation would leave
    /// glibc's heap several megabytes larger after the first few deploys.
    pub(crate) fn copy_in(
        &self,
        id: u64,
        source: &Path,
        read: &Path,
        grace: std::time::Duration,
    ) -> Result<Copied> {
        use std::io::{Read, Write};
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "module.so".to_owned());
        let target = self.dir.join(format!("{}-{id:06}-{name}", self.run));
        let refuse = |e: LoadError| Error::Load {
            path: source.to_owned(),
            source: e,
        };
        let mut input =
            std::fs::File::open(read).map_err(|e| refuse(LoadError::Source { source: e }))?;
        let before = input
            .metadata()
            .map(|m| Stamp::of(&m))
            .map_err(|e| refuse(LoadError::Source { source: e }))?;
        let just_written = || {
            let modified = std::time::UNIX_EPOCH
                + std::time::Duration::new(before.mtime.0.max(0) as u64, before.mtime.1 as u32);
            modified.elapsed().is_ok_and(|age| age < grace)
        };
        if before.len == 0 && just_written() {
            return Err(Error::Unsettled {
                path: source.to_owned(),
                change: "empty: its writer has not written yet".to_owned(),
            });
        }
        let mut output =
            std::fs::File::create(&target).map_err(|e| refuse(LoadError::Store { source: e }))?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut length = 0u64;
        let copied = loop {
            let n = match input.read(&mut buffer) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(refuse(LoadError::Source { source: e })),
            };
            hasher.update(&buffer[..n]);
            length += n as u64;
            if let Err(e) = output.write_all(&buffer[..n]) {
                break Err(refuse(LoadError::Store { source: e }));
            }
        };
        let settled = copied.and_then(|()| {
            // The path, not the open file: a rename over it is a change too.
            let after = std::fs::metadata(read)
                .map(|m| Stamp::of(&m))
                .map_err(|e| refuse(LoadError::Source { source: e }))?;
            match before.change(&after, length) {
                None => Ok(()),
                Some(change) => Err(Error::Unsettled {
                    path: source.to_owned(),
                    change,
                }),
            }
        });
        if let Err(e) = settled {
            drop(output);
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
        Ok(Copied {
            path: target,
            hash: hasher.digest(),
            stamp: before,
        })
    }

    /// How the file a copy was made from (`read`) changed since, if it did: a refusal of a
    /// file that changed since is its writer's unfinished work, not the file's fault.
    pub(crate) fn changed_since(&self, read: &Path, copied: &Copied) -> Option<String> {
        match std::fs::metadata(read) {
            Ok(meta) => copied.stamp.change(&Stamp::of(&meta), copied.stamp.len),
            Err(e) => Some(format!("gone: {e}")),
        }
    }

    /// Removes a private copy that is no longer mapped.
    pub(crate) fn remove(&self, copy: &Path) {
        if copy.starts_with(&self.dir) {
            let _ = std::fs::remove_file(copy);
        }
    }
}
