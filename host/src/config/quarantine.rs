//! Crash quarantine, under `[quarantine]`: how many deaths of the serving process, within how
//! long, make a version that was live in them quarantined.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Quarantine settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Deaths of the serving process blamed on one version that quarantine it.
    pub crashes: u32,
    /// How long a blamed death counts; 0 turns the quarantine off.
    pub window_secs: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig {
            crashes: 2,
            window_secs: 600,
        }
    }
}

impl QuarantineConfig {
    /// Whether versions are quarantined at all.
    pub fn enabled(&self) -> bool {
        self.window_secs > 0
    }

    /// `window_secs` as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.crashes == 0 {
            return Err(Error::Config(
                "quarantine.crashes must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}
