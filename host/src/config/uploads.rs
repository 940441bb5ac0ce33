//! Module uploads through the admin API, under `[uploads]`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Module uploads through the admin API (`POST /apps`), under `[uploads]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// Largest module upload; a larger one is refused (413) as soon as it passes this size.
    pub max_bytes: u64,
    /// Uploads received at once; one more is refused with a 503.
    pub max_concurrent: usize,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            max_bytes: 512 * 1024 * 1024,
            max_concurrent: 2,
        }
    }
}

impl UploadConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_bytes == 0 || self.max_concurrent == 0 {
            return Err(Error::Config(
                "uploads.max_bytes and uploads.max_concurrent must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
