//! Module uploads: the request body streams into a file under `state_dir/uploads/`, never
//! whole into memory, and is refused as soon as it passes the size limit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::server::{BodyError, RequestBody};

/// The upload area's name under the state directory.
const UPLOADS: &str = "uploads";

/// Why an upload could not be received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(super) enum UploadError {
    /// The body passed the size limit.
    #[error("the upload is larger than uploads.max_bytes ({limit} bytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body could not be read (the client stalled or went away).
    #[error("cannot read the upload: {0}")]
    Body(#[source] BodyError),
    /// The upload could not be written to disk.
    #[error("cannot write the upload to {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The upload area of a state directory.
pub(crate) fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(UPLOADS)
}

/// Removes what earlier runs left in the upload area (an upload cut short by a crash).
pub(crate) fn remove_leftovers(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(file = %path.display(), error = %e,
                "cannot remove an upload left by an earlier run"),
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir(state_dir).display(),
            "removed uploads left by an earlier run");
    }
}

/// Streams `body` into a new file of the upload area; at most `limit` bytes.
///
/// # Errors
/// [`UploadError`]; the partial file is removed.
pub(super) async fn receive(
    body: RequestBody,
    state_dir: &Path,
    limit: u64,
) -> Result<PathBuf, UploadError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = dir(state_dir);
    let path = dir.join(format!(
        "{}-{}.part",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let received = write(body, &dir, &path, limit).await;
    if received.is_err() {
        let _ = tokio::fs::remove_file(&path).await;
    }
    received.map(|()| path)
}

async fn write(
    mut body: RequestBody,
    dir: &Path,
    path: &Path,
    limit: u64,
) -> Result<(), UploadError> {
    let failed = |source| UploadError::Write {
        path: path.to_owned(),
        source,
    };
    tokio::fs::create_dir_all(dir).await.map_err(failed)?;
    let mut file = tokio::fs::File::create(path).await.map_err(failed)?;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(UploadError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > limit {
            return Err(UploadError::TooLarge { limit });
        }
        file.write_all(&data).await.map_err(failed)?;
    }
    file.flush().await.map_err(failed)?;
    Ok(())
}
