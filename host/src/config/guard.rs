//! The guard window, under `[guard]` and `[apps.NAME.guard]`: how long the previous version
//! stays loaded after a switch, and what regression of the new version switches back to it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Guard settings (the global `[guard]` table, or an app's effective ones).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// How long after a switch the previous version stays loaded as the fallback while the new
    /// version's traffic is compared with it; 0 turns the guard off.
    pub window_secs: u64,
    /// How much of the previous version's traffic before the switch makes its baseline.
    pub baseline_secs: u64,
    /// Requests the new version must have answered before any verdict (and the baseline must
    /// have for the latency check and for its own 5xx ratio to count).
    pub min_requests: u64,
    /// How many points (as a fraction) the new version's 5xx ratio may exceed the baseline's.
    pub error_ratio_margin: f64,
    /// How many times the baseline's p90 latency the new version's p90 may reach; 0 turns the
    /// latency check off.
    pub latency_factor: f64,
    /// How much slower (p90) the new version must also be before it counts as a regression.
    pub latency_margin_ms: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            window_secs: 30,
            baseline_secs: 60,
            min_requests: 100,
            error_ratio_margin: 0.05,
            latency_factor: 2.0,
            latency_margin_ms: 100,
        }
    }
}

/// Longest baseline: the previous version keeps one snapshot of its counters per second.
pub(crate) const MAX_BASELINE_SECS: u64 = 3600;

impl GuardConfig {
    /// Whether switches of this app are guarded.
    pub fn enabled(&self) -> bool {
        self.window_secs > 0
    }

    /// `window_secs` as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }

    /// `baseline_secs` as a duration.
    pub fn baseline(&self) -> Duration {
        Duration::from_secs(self.baseline_secs)
    }

    /// These settings with an app's overrides applied.
    pub fn merged(&self, o: &GuardOverrides) -> GuardConfig {
        GuardConfig {
            window_secs: o.window_secs.unwrap_or(self.window_secs),
            baseline_secs: o.baseline_secs.unwrap_or(self.baseline_secs),
            min_requests: o.min_requests.unwrap_or(self.min_requests),
            error_ratio_margin: o.error_ratio_margin.unwrap_or(self.error_ratio_margin),
            latency_factor: o.latency_factor.unwrap_or(self.latency_factor),
            latency_margin_ms: o.latency_margin_ms.unwrap_or(self.latency_margin_ms),
        }
    }

    pub(crate) fn validate(&self, scope: &str) -> Result<()> {
        let fail = |what: String| Err(Error::Config(format!("{scope}.{what}")));
        if !(1..=MAX_BASELINE_SECS).contains(&self.baseline_secs) {
            return fail(format!(
                "baseline_secs must be between 1 and {MAX_BASELINE_SECS}, not {}",
                self.baseline_secs
            ));
        }
        if self.min_requests == 0 {
            return fail("min_requests must be at least 1".to_owned());
        }
        if !(self.error_ratio_margin > 0.0 && self.error_ratio_margin <= 1.0) {
            return fail(format!(
                "error_ratio_margin must be above 0 and at most 1, not {}",
                self.error_ratio_margin
            ));
        }
        if !(self.latency_factor == 0.0 || self.latency_factor >= 1.0)
            || !self.latency_factor.is_finite()
        {
            return fail(format!(
                "latency_factor must be 0 (off) or at least 1, not {}",
                self.latency_factor
            ));
        }
        Ok(())
    }
}

/// Guard settings an app overrides; unset fields take the global value.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GuardOverrides {
    /// See [`GuardConfig::window_secs`].
    pub window_secs: Option<u64>,
    /// See [`GuardConfig::baseline_secs`].
    pub baseline_secs: Option<u64>,
    /// See [`GuardConfig::min_requests`].
    pub min_requests: Option<u64>,
    /// See [`GuardConfig::error_ratio_margin`].
    pub error_ratio_margin: Option<f64>,
    /// See [`GuardConfig::latency_factor`].
    pub latency_factor: Option<f64>,
    /// See [`GuardConfig::latency_margin_ms`].
    pub latency_margin_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_guard_is_on_by_default_and_apps_override_it() {
        let config: Config = toml::from_str(
            r#"
            guard = { window_secs = 20, min_requests = 50 }
            [apps.quiet.guard]
            window_secs = 0
            [apps.strict.guard]
            error_ratio_margin = 0.01
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert!(Config::default().guard.enabled());
        assert_eq!(Config::default().guard.window_secs, 30);
        assert!(!config.guard_for("quiet").enabled());
        let strict = config.guard_for("strict");
        assert_eq!(
            (
                strict.window_secs,
                strict.min_requests,
                strict.error_ratio_margin
            ),
            (20, 50, 0.01)
        );
        assert_eq!(config.guard_for("other").window_secs, 20);
    }

    #[test]
    fn bad_guard_settings_are_refused() {
        for bad in [
            "[guard]\nbaseline_secs = 0",
            "[guard]\nmin_requests = 0",
            "[guard]\nerror_ratio_margin = 0.0",
            "[guard]\nerror_ratio_margin = 2.0",
            "[guard]\nlatency_factor = 0.5",
            "[apps.a.guard]\nbaseline_secs = 4000",
        ] {
            let config: Config = toml::from_str(bad).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("guard."), "{bad}: {error}");
        }
        assert!(toml::from_str::<Config>("[guard]\nwindow = 5").is_err());
    }
}
