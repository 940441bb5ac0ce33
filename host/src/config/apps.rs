//! Settings of one app, under `[apps.NAME]`: its mount, limits and guard overrides, its own
//! config table, its warm-up and start-up time limits, its assets' `Cache-Control`.

use serde::{Deserialize, Serialize};

use super::{GuardOverrides, LimitOverrides};

/// Settings of one app, under `[apps.NAME]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// Mount path; defaults to `/NAME`. `/` mounts the app at the root.
    pub mount: Option<String>,
    /// Limits that differ from the global ones.
    pub limits: LimitOverrides,
    /// The app's own config table, passed to its `init`.
    pub config: toml::Table,
    /// Paths (relative to the mount, query allowed) a new version must answer with 2xx before
    /// it takes traffic.
    pub warmup_paths: Vec<String>,
    /// How long each warm-up request may take.
    pub warmup_timeout_ms: u64,
    /// How long `init` and the warm-up hook may each take before the version is refused.
    pub start_timeout_ms: u64,
    /// Guard settings that differ from the global `[guard]` ones.
    pub guard: GuardOverrides,
    /// `Cache-Control` of this app's static assets, instead of `[assets] cache_control`.
    pub assets_cache_control: Option<String>,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            mount: None,
            limits: LimitOverrides::default(),
            config: toml::Table::new(),
            warmup_paths: Vec::new(),
            warmup_timeout_ms: 10_000,
            start_timeout_ms: 60_000,
            guard: GuardOverrides::default(),
            assets_cache_control: None,
        }
    }
}
