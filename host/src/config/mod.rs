//! The host configuration: a TOML file, overridden by command-line flags, validated before start.
//!
//! [`Config`] is the whole file and its cross-cutting checks (admin token, mounts); each table
//! has a file of its own with its type, defaults and `validate`:
//!
//! - `limits`: `[limits]` and an app's `[apps.NAME.limits]` overrides.
//! - `apps`: `[apps.NAME]`, one app's mount, config table, warm-up and start-up limits.
//! - `sessions`: `[sessions]`, the store and the cookie.
//! - `http`: `[http]`, the listeners' connection timeouts and caps, the trusted proxies.
//! - `compression`: `[compression]`, gzip and brotli for apps' responses.
//! - `uploads`: `[uploads]`, module uploads through the admin API.
//! - `guard`: `[guard]` and `[apps.NAME.guard]`, the window after a switch and its rollback rules.
//! - `tls`: `[tls]`, the HTTPS listener's certificate.
//! - `quarantine`: `[quarantine]`, when a version that crashes the process is kept out.
//! - `assets`: `[assets]` and an app's `assets_cache_control`, how embedded static files are
//!   cached.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Getters that give `*_ms` settings as durations.
macro_rules! millis_getters {
    ($($name:ident => $field:ident;)*) => {$(
        #[doc = concat!("`", stringify!($field), "` as a duration.")]
        pub fn $name(&self) -> Duration {
            Duration::from_millis(self.$field)
        }
    )*};
}

/// The name of the first of `fields` set to zero, among settings that must be at least 1.
fn first_zero<'a>(fields: &[(&'a str, u64)]) -> Option<&'a str> {
    fields
        .iter()
        .find(|(_, value)| *value == 0)
        .map(|(name, _)| *name)
}

mod apps;
mod assets;
mod compression;
mod guard;
mod http;
mod limits;
mod quarantine;
mod sessions;
mod tls;
mod uploads;

pub(crate) use apps::AppConfig;
pub(crate) use assets::AssetsConfig;
pub(crate) use compression::CompressionConfig;
pub(crate) use guard::{GuardConfig, GuardOverrides};
pub(crate) use http::HttpConfig;
pub(crate) use limits::{LimitOverrides, Limits};
pub(crate) use quarantine::QuarantineConfig;
pub(crate) use sessions::{SessionConfig, StoreKind, StoreUrl};
pub(crate) use tls::TlsConfig;
pub(crate) use uploads::UploadConfig;

/// The whole host configuration. Every field has a default; see the README's reference.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP listener binds.
    pub listen: SocketAddr,
    /// Address of the HTTPS listener, which serves the same apps with `[tls]`'s certificate;
    /// none by default.
    pub listen_tls: Option<SocketAddr>,
    /// Directory of module files to serve (and, with hot swap, to watch).
    pub modules: PathBuf,
    /// Directory the host owns: private copies of loaded modules and its state.
    pub state_dir: PathBuf,
    /// Add `x-baton-version: <app>@<version>` to every response from an app.
    pub version_header: bool,
    /// How long a graceful shutdown or a drain waits for running requests.
    pub drain_timeout_secs: u64,
    /// Address of the admin listener (status; loopback by default).
    pub admin: SocketAddr,
    /// Watch the modules directory and deploy new or changed files without a restart.
    pub watch: bool,
    /// How long the watcher lets a burst of file events settle before acting.
    pub watch_debounce_ms: u64,
    /// Fallback for file systems without close-write events: a file whose size and mtime have
    /// not changed for this long is taken as complete.
    pub watch_settle_ms: u64,
    /// Retired versions per app whose private copies stay in the store for rollback.
    pub keep_versions: usize,
    /// Bearer token the admin API requires (also `BATON_ADMIN_TOKEN`). Required when `admin`
    /// is not a loopback address; when set, required on loopback too.
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,
    /// One `baton::access` event per request (app, version, method, path, status, duration).
    pub access_log: bool,
    /// During a canary split, send a request carrying the session cookie to the version its
    /// cookie hashes to, so a session stays on one version.
    pub canary_sticky: bool,
    /// After a graceful shutdown starts, keep accepting for this long while `/readyz` answers
    /// 503, so load balancers stop sending first.
    pub shutdown_grace_ms: u64,
    /// Default limits for every app.
    pub limits: Limits,
    /// Per-app settings, by app name.
    pub apps: BTreeMap<String, AppConfig>,
    /// Where sessions live and how their cookie looks.
    pub sessions: SessionConfig,
    /// The guard window after a switch and the regression that rolls a version back.
    pub guard: GuardConfig,
    /// Connection timeouts and limits of both listeners, under `[http]`.
    pub http: HttpConfig,
    /// Module uploads through the admin API, under `[uploads]`.
    pub uploads: UploadConfig,
    /// The HTTPS listener's certificate and settings, under `[tls]`.
    pub tls: TlsConfig,
    /// When versions that keep crashing the serving process are quarantined.
    pub quarantine: QuarantineConfig,
    /// How apps' embedded static assets are cached, under `[assets]`.
    pub assets: AssetsConfig,
    /// gzip and brotli for apps' responses, under `[compression]`.
    pub compression: CompressionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listen_tls: None,
            modules: PathBuf::from("./modules"),
            state_dir: PathBuf::from("./.baton"),
            version_header: true,
            drain_timeout_secs: 30,
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            watch: true,
            watch_debounce_ms: 20,
            watch_settle_ms: 2_000,
            keep_versions: 2,
            admin_token: None,
            access_log: true,
            canary_sticky: false,
            shutdown_grace_ms: 0,
            limits: Limits::default(),
            apps: BTreeMap::new(),
            sessions: SessionConfig::default(),
            guard: GuardConfig::default(),
            http: HttpConfig::default(),
            uploads: UploadConfig::default(),
            tls: TlsConfig::default(),
            quarantine: QuarantineConfig::default(),
            assets: AssetsConfig::default(),
            compression: CompressionConfig::default(),
        }
    }
}

impl Config {
    /// Reads a TOML config file.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file and what is wrong in it.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Checks the whole configuration before anything starts.
    ///
    /// # Errors
    /// [`Error::Config`] describing the first problem.
    pub fn validate(&self) -> Result<()> {
        self.limits.validate("limits")?;
        self.sessions.validate()?;
        self.guard.validate("guard")?;
        self.http.validate()?;
        self.uploads.validate()?;
        self.tls.validate(self.listen_tls.is_some())?;
        self.quarantine.validate()?;
        self.assets.validate("assets.cache_control")?;
        self.compression.validate()?;
        match self.admin_token.as_deref() {
            Some(token) if token.trim().is_empty() || token.chars().any(char::is_control) => {
                return Err(Error::Config(
                    "admin_token must be non-empty printable text".into(),
                ));
            }
            None if !self.admin.ip().is_loopback() => {
                return Err(Error::Config(format!(
                    "the admin listener {} is not a loopback address: set admin_token (or \
                     BATON_ADMIN_TOKEN) so the admin API is not open to the network",
                    self.admin
                )));
            }
            _ => {}
        }
        let mut mounts = BTreeMap::new();
        for name in self.apps.keys() {
            self.limits_for(name)
                .validate(&format!("apps.{name}.limits"))?;
            self.guard_for(name)
                .validate(&format!("apps.{name}.guard"))?;
            self.assets_for(name)
                .validate(&format!("apps.{name}.assets_cache_control"))?;
            let mount = self.mount_for(name);
            if !mount.starts_with('/') || (mount.len() > 1 && mount.ends_with('/')) {
                return Err(Error::Config(format!(
                    "apps.{name}.mount {mount:?} must start with '/' and not end with one"
                )));
            }
            if let Some(path) = self.apps[name]
                .warmup_paths
                .iter()
                .find(|p| !p.starts_with('/'))
            {
                return Err(Error::Config(format!(
                    "apps.{name}.warmup_paths: {path:?} must start with '/'"
                )));
            }
            if let Some(other) = mounts.insert(mount.clone(), name) {
                return Err(Error::Config(format!(
                    "apps {other} and {name} are both mounted at {mount}"
                )));
            }
        }
        Ok(())
    }

    /// The mount path of an app.
    pub fn mount_for(&self, app: &str) -> String {
        self.apps
            .get(app)
            .and_then(|a| a.mount.clone())
            .unwrap_or_else(|| format!("/{app}"))
    }

    /// The effective limits of an app.
    pub fn limits_for(&self, app: &str) -> Limits {
        let base = self.limits;
        let Some(o) = self.apps.get(app).map(|a| a.limits) else {
            return base;
        };
        Limits {
            max_body_bytes: o.max_body_bytes.unwrap_or(base.max_body_bytes),
            max_concurrent_requests: o
                .max_concurrent_requests
                .unwrap_or(base.max_concurrent_requests),
            queue_timeout_ms: o.queue_timeout_ms.unwrap_or(base.queue_timeout_ms),
            request_timeout_ms: o.request_timeout_ms.unwrap_or(base.request_timeout_ms),
            worker_threads: o.worker_threads.unwrap_or(base.worker_threads),
            worker_stack_mib: o.worker_stack_mib.unwrap_or(base.worker_stack_mib),
            max_stuck_threads: o.max_stuck_threads.unwrap_or(base.max_stuck_threads),
            stream_send_timeout_ms: o
                .stream_send_timeout_ms
                .unwrap_or(base.stream_send_timeout_ms),
            max_streams: o.max_streams.unwrap_or(base.max_streams),
        }
    }

    /// The app's own config table as JSON, for its `init`.
    pub fn app_config_json(&self, app: &str) -> Vec<u8> {
        match self.apps.get(app) {
            Some(a) => serde_json::to_vec(&a.config).unwrap_or_else(|_| b"{}".to_vec()),
            None => b"{}".to_vec(),
        }
    }

    /// How long the app's `init` and warm-up hook may each take.
    pub fn start_timeout_for(&self, app: &str) -> Duration {
        Duration::from_millis(
            self.apps
                .get(app)
                .map_or(AppConfig::default().start_timeout_ms, |a| {
                    a.start_timeout_ms
                }),
        )
    }

    /// The app's warm-up requests and their timeout.
    pub fn warmup_for(&self, app: &str) -> (Vec<String>, Duration) {
        match self.apps.get(app) {
            Some(a) => (
                a.warmup_paths.clone(),
                Duration::from_millis(a.warmup_timeout_ms),
            ),
            None => (Vec::new(), Duration::ZERO),
        }
    }

    /// Whether the session cookie carries `Secure` on every response: as set, or by default
    /// when only the HTTPS listener serves apps (plain HTTP is redirected to it).
    pub fn cookie_secure(&self) -> bool {
        self.sessions
            .cookie_secure
            .unwrap_or(self.listen_tls.is_some() && self.tls.redirect_http)
    }

    /// The name of the session cookie a sticky canary split hashes.
    pub fn session_cookie_name(&self) -> &str {
        &self.sessions.cookie_name
    }

    /// How long drains and shutdown wait.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// The effective asset settings of an app: `[assets]` with its `assets_cache_control`.
    pub fn assets_for(&self, app: &str) -> AssetsConfig {
        self.assets.merged(
            self.apps
                .get(app)
                .and_then(|a| a.assets_cache_control.as_deref()),
        )
    }

    /// The effective guard settings of an app.
    pub fn guard_for(&self, app: &str) -> GuardConfig {
        match self.apps.get(app) {
            Some(a) => self.guard.merged(&a.guard),
            None => self.guard,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_validate() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        config.validate().unwrap();
    }

    #[test]
    fn app_overrides_merge_with_globals() {
        let config: Config = toml::from_str(
            r#"
            [limits]
            request_timeout_ms = 5000
            [apps.hello]
            mount = "/"
            limits = { worker_threads = 2 }
            config = { greeting = "hi" }
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.mount_for("hello"), "/");
        assert_eq!(config.mount_for("other"), "/other");
        let limits = config.limits_for("hello");
        assert_eq!(
            (limits.worker_threads, limits.request_timeout_ms),
            (2, 5000)
        );
        assert_eq!(config.app_config_json("hello"), br#"{"greeting":"hi"}"#);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("listn = \"1.2.3.4:1\"").is_err());
        for (toml, named) in [
            ("[apps.a]\nmount = \"/x/\"", "apps.a.mount"),
            ("[limits]\nworker_threads = 0", "worker_threads"),
            (
                "[apps.a]\nmount = \"/x\"\n[apps.b]\nmount = \"/x\"",
                "both mounted",
            ),
        ] {
            let config: Config = toml::from_str(toml).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(named), "{toml}: {error}");
        }
    }

    #[test]
    fn tls_needs_its_listener_and_both_files_and_makes_tls_only_cookies_secure() {
        let pair = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let config: Config =
            toml::from_str(&format!("listen_tls = \"127.0.0.1:8443\"\n{pair}")).unwrap();
        config.validate().unwrap();
        assert_eq!(config.tls.handshake_timeout(), Duration::from_secs(10));
        assert!(!config.cookie_secure(), "plain HTTP still serves apps");
        for bad in [
            "listen_tls = \"127.0.0.1:8443\"\n[tls]\ncert = \"c.pem\"",
            "listen_tls = \"127.0.0.1:8443\"\n[tls]\nkey = \"k.pem\"",
            pair,
            "[tls]\nredirect_http = true",
        ] {
            let config: Config = toml::from_str(bad).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("tls"), "{bad}: {error}");
        }
        let tls_only: Config = toml::from_str(&format!(
            "listen_tls = \"127.0.0.1:8443\"\n{pair}redirect_http = true\n"
        ))
        .unwrap();
        tls_only.validate().unwrap();
        assert!(tls_only.cookie_secure());
        let explicit: Config = toml::from_str(&format!(
            "listen_tls = \"127.0.0.1:8443\"\n{pair}redirect_http = true\n\
             [sessions]\ncookie_secure = false\n"
        ))
        .unwrap();
        assert!(!explicit.cookie_secure(), "an explicit setting wins");
        assert!(!Config::default().cookie_secure());
    }

    #[test]
    fn a_non_loopback_admin_needs_a_token() {
        let config: Config = toml::from_str("admin = \"0.0.0.0:9090\"").unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("admin_token"), "{error}");
        let config: Config =
            toml::from_str("admin = \"0.0.0.0:9090\"\nadmin_token = \"s3cret\"").unwrap();
        config.validate().unwrap();
        let config: Config = toml::from_str("admin_token = \" \"").unwrap();
        assert!(config.validate().is_err());
    }
}
