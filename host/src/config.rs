//! The host configuration: a TOML file, overridden by command-line flags, validated before start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod guard;
mod quarantine;
mod tls;

pub use guard::{GuardConfig, GuardOverrides};
pub use quarantine::QuarantineConfig;
pub use tls::TlsConfig;

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
        }
    }
}

/// Limits that bound what one app can take from the host.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted; larger is a 413.
    pub max_body_bytes: u64,
    /// Requests one app runs or queues at once; more wait up to `queue_timeout_ms`.
    pub max_concurrent_requests: usize,
    /// How long a request waits for a slot before a 503 with `Retry-After`.
    pub queue_timeout_ms: u64,
    /// How long a handler may take before the client gets a 504.
    pub request_timeout_ms: u64,
    /// Worker threads per loaded version (handlers run on them, never on the I/O threads).
    pub worker_threads: usize,
    /// Stack size of each worker thread, in MiB (a stack overflow ends the whole process).
    pub worker_stack_mib: usize,
    /// Handlers past `request_timeout_ms` whose threads are replaced so the version keeps its
    /// capacity; with more stuck than this, the version answers 503 until some return.
    pub max_stuck_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 2 * 1024 * 1024,
            max_concurrent_requests: 256,
            queue_timeout_ms: 1_000,
            request_timeout_ms: 30_000,
            worker_threads: 16,
            worker_stack_mib: 8,
            max_stuck_threads: 16,
        }
    }
}

impl Limits {
    /// `queue_timeout_ms` as a duration.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `worker_stack_mib` in bytes.
    pub fn worker_stack_bytes(&self) -> usize {
        self.worker_stack_mib.saturating_mul(1024 * 1024)
    }

    fn validate(&self, scope: &str) -> Result<()> {
        let fail = |what: &str| Err(Error::Config(format!("{scope}: {what} must be at least 1")));
        if self.max_concurrent_requests == 0 {
            return fail("max_concurrent_requests");
        }
        if self.worker_threads == 0 {
            return fail("worker_threads");
        }
        if self.request_timeout_ms == 0 {
            return fail("request_timeout_ms");
        }
        if self.worker_stack_mib == 0 {
            return fail("worker_stack_mib");
        }
        if self.worker_stack_mib > 1024 {
            return Err(Error::Config(format!(
                "{scope}: worker_stack_mib must be at most 1024"
            )));
        }
        Ok(())
    }
}

/// Sessions, under `[sessions]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// `memory` (this process only), or `redis://HOST:PORT/DB` to share sessions between
    /// processes and keep them across restarts.
    pub store: String,
    /// A session not used for this long expires.
    pub timeout_secs: u64,
    /// Name of the session cookie.
    pub cookie_name: String,
    /// Send the cookie with `Secure` (only over HTTPS) on every response; set it when a TLS
    /// proxy fronts the host. Unset: on when only the HTTPS listener serves apps
    /// (`tls.redirect_http`), off otherwise. Requests that arrive over TLS always get it.
    pub cookie_secure: Option<bool>,
    /// Prefix of the Redis keys (one hash per session).
    pub redis_prefix: String,
    /// Longest wait for one store operation; a session request then fails with a 503.
    pub op_timeout_ms: u64,
    /// Most sessions the in-memory store holds; creating one more fails with a 503.
    pub max_sessions: usize,
    /// How often the in-memory store removes expired sessions.
    pub sweep_interval_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            store: "memory".to_owned(),
            timeout_secs: 1800,
            cookie_name: "BATON_SESSION".to_owned(),
            cookie_secure: None,
            redis_prefix: "baton:session:".to_owned(),
            op_timeout_ms: 1_000,
            max_sessions: 100_000,
            sweep_interval_secs: 60,
        }
    }
}

impl SessionConfig {
    /// Whether sessions stay in this process.
    pub fn is_memory(&self) -> bool {
        self.store == "memory"
    }

    /// `timeout_secs` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// `op_timeout_ms` as a duration.
    pub fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.op_timeout_ms)
    }

    fn validate(&self) -> Result<()> {
        let fail = |what: String| Err(Error::Config(format!("sessions.{what}")));
        if !self.is_memory() && !self.store.starts_with("redis://") {
            return fail(format!(
                "store {:?} must be \"memory\" or a redis://HOST:PORT/DB URL",
                self.store
            ));
        }
        for (name, value) in [
            ("timeout_secs", self.timeout_secs),
            ("op_timeout_ms", self.op_timeout_ms),
            ("max_sessions", self.max_sessions as u64),
            ("sweep_interval_secs", self.sweep_interval_secs),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.cookie_name.is_empty() || !self.cookie_name.chars().all(token) {
            return fail(format!(
                "cookie_name {:?} must be a non-empty HTTP token",
                self.cookie_name
            ));
        }
        if self.redis_prefix.is_empty() {
            return fail("redis_prefix must not be empty".to_owned());
        }
        Ok(())
    }
}

/// Connection timeouts and limits, under `[http]`. They apply to the app listener; the admin
/// listener uses the same timeouts and its own connection limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's headers must be complete this long after its first byte (for a new
    /// connection: after it was accepted), or the connection is closed.
    pub header_read_timeout_ms: u64,
    /// Longest wait for the next piece of a request body while the server is reading it;
    /// the request then fails with a 408 and the connection is closed.
    pub body_read_timeout_ms: u64,
    /// A keep-alive connection with no request in progress is closed after this long.
    pub idle_timeout_ms: u64,
    /// HTTP/2: how often to ping a connection's peer (0: never).
    pub http2_keep_alive_interval_ms: u64,
    /// HTTP/2: a peer that does not answer a ping within this long is dropped.
    pub http2_keep_alive_timeout_ms: u64,
    /// Most open connections on the app listener; `None` sizes it from the open-files limit.
    pub max_connections: Option<usize>,
    /// Most open connections on the admin listener.
    pub admin_max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 20_000,
            idle_timeout_ms: 20_000,
            http2_keep_alive_interval_ms: 20_000,
            http2_keep_alive_timeout_ms: 10_000,
            max_connections: None,
            admin_max_connections: 64,
        }
    }
}

impl HttpConfig {
    /// `header_read_timeout_ms` as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// `body_read_timeout_ms` as a duration.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// `idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// The HTTP/2 ping interval, if pings are on.
    pub fn http2_keep_alive_interval(&self) -> Option<Duration> {
        (self.http2_keep_alive_interval_ms > 0)
            .then(|| Duration::from_millis(self.http2_keep_alive_interval_ms))
    }

    /// `http2_keep_alive_timeout_ms` as a duration.
    pub fn http2_keep_alive_timeout(&self) -> Duration {
        Duration::from_millis(self.http2_keep_alive_timeout_ms)
    }

    fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            (
                "http2_keep_alive_timeout_ms",
                self.http2_keep_alive_timeout_ms,
            ),
            (
                "max_connections",
                self.max_connections.map_or(1, |n| n as u64),
            ),
            ("admin_max_connections", self.admin_max_connections as u64),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("http.{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

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
    fn validate(&self) -> Result<()> {
        if self.max_bytes == 0 || self.max_concurrent == 0 {
            return Err(Error::Config(
                "uploads.max_bytes and uploads.max_concurrent must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Limits an app overrides; unset fields take the global value.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    /// See [`Limits::max_body_bytes`].
    pub max_body_bytes: Option<u64>,
    /// See [`Limits::max_concurrent_requests`].
    pub max_concurrent_requests: Option<usize>,
    /// See [`Limits::queue_timeout_ms`].
    pub queue_timeout_ms: Option<u64>,
    /// See [`Limits::request_timeout_ms`].
    pub request_timeout_ms: Option<u64>,
    /// See [`Limits::worker_threads`].
    pub worker_threads: Option<usize>,
    /// See [`Limits::worker_stack_mib`].
    pub worker_stack_mib: Option<usize>,
    /// See [`Limits::max_stuck_threads`].
    pub max_stuck_threads: Option<usize>,
}

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
        let config: Config = toml::from_str("[apps.a]\nmount = \"/x/\"").unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("apps.a.mount")
        );
        let config: Config = toml::from_str("[limits]\nworker_threads = 0").unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("worker_threads")
        );
        let config: Config =
            toml::from_str("[apps.a]\nmount = \"/x\"\n[apps.b]\nmount = \"/x\"").unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("both mounted")
        );
    }

    #[test]
    fn sessions_default_to_memory_and_refuse_bad_settings() {
        let config: Config =
            toml::from_str("[sessions]\nstore = \"redis://127.0.0.1:6379/2\"\ntimeout_secs = 60\n")
                .unwrap();
        config.validate().unwrap();
        assert_eq!(config.sessions.cookie_name, "BATON_SESSION");
        assert!(Config::default().sessions.is_memory());
        for bad in [
            "store = \"postgres://x\"",
            "timeout_secs = 0",
            "cookie_name = \"a b\"",
            "op_timeout_ms = 0",
        ] {
            let config: Config = toml::from_str(&format!("[sessions]\n{bad}")).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("sessions."), "{bad}: {err}");
        }
        assert!(toml::from_str::<Config>("[sessions]\ntimeout = 5").is_err());
    }

    #[test]
    fn connection_and_upload_settings_have_defaults_and_refuse_zeros() {
        let config: Config =
            toml::from_str("[http]\nidle_timeout_ms = 5000\n[uploads]\nmax_bytes = 1024\n")
                .unwrap();
        config.validate().unwrap();
        assert_eq!(config.http.idle_timeout(), Duration::from_secs(5));
        assert_eq!(config.http.header_read_timeout(), Duration::from_secs(10));
        assert_eq!(config.http.max_connections, None);
        assert_eq!(config.uploads.max_bytes, 1024);
        assert_eq!(config.uploads.max_concurrent, 2);
        for bad in [
            "[http]\nheader_read_timeout_ms = 0",
            "[http]\nmax_connections = 0",
            "[uploads]\nmax_concurrent = 0",
        ] {
            let config: Config = toml::from_str(bad).unwrap();
            assert!(config.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<Config>("[http]\nidle_timeout = 5").is_err());
        let pings_off: Config = toml::from_str("[http]\nhttp2_keep_alive_interval_ms = 0").unwrap();
        assert_eq!(pings_off.http.http2_keep_alive_interval(), None);
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
