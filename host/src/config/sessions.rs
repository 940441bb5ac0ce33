//! Sessions, under `[sessions]`: the store, the expiry, the cookie; the store URL's grammar is
//! in `url`.

mod url;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub(crate) use url::{StoreKind, StoreUrl, redact_url};

/// Sessions, under `[sessions]`. Its `Debug` hides the store URL's password.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// `memory` (this process only), or a Redis URL to share sessions between processes and
    /// keep them across restarts: `redis://HOST:PORT/DB`, `rediss://HOST:PORT/DB` (TLS),
    /// `redis+sentinel://HOST:PORT,…/MASTER/DB` or `redis+cluster://HOST:PORT,…`.
    pub store: String,
    /// PEM file of the certificate authorities a `rediss://` server's certificate must chain
    /// to, trusted instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (chain) presented to a `rediss://` server that asks
    /// for one; with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub tls_key_file: Option<PathBuf>,
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
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
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

    /// `store`, parsed.
    ///
    /// # Errors
    /// [`Error::Config`] if it is not a store URL.
    pub(crate) fn store_url(&self) -> Result<StoreUrl> {
        StoreUrl::parse(&self.store).map_err(|e| Error::Config(format!("sessions.{e}")))
    }

    /// `timeout_secs` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// `op_timeout_ms` as a duration.
    pub fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.op_timeout_ms)
    }

    pub(super) fn validate(&self) -> Result<()> {
        let fail = |what: String| Err(Error::Config(format!("sessions.{what}")));
        let store = self.store_url()?;
        let tls_files = [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ];
        for (name, file) in tls_files {
            let Some(file) = file else { continue };
            if !store.is_tls() {
                return fail(format!(
                    "{name} needs a rediss:// store, not {:?}",
                    redact_url(&self.store)
                ));
            }
            if !file.is_file() {
                return fail(format!("{name} {} is not a readable file", file.display()));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return fail("tls_cert_file and tls_key_file go together".to_owned());
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
        // In a cluster the session id in braces is the key's hash tag: the prefix may not have one.
        if store.kind() == StoreKind::Cluster && self.redis_prefix.contains(['{', '}']) {
            return fail(format!(
                "redis_prefix {:?} may not contain braces with a cluster store",
                self.redis_prefix
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let SessionConfig {
            store,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            timeout_secs,
            cookie_name,
            cookie_secure,
            redis_prefix,
            op_timeout_ms,
            max_sessions,
            sweep_interval_secs,
        } = self;
        f.debug_struct("SessionConfig")
            .field("store", &redact_url(store))
            .field("tls_ca_file", tls_ca_file)
            .field("tls_cert_file", tls_cert_file)
            .field("tls_key_file", tls_key_file)
            .field("timeout_secs", timeout_secs)
            .field("cookie_name", cookie_name)
            .field("cookie_secure", cookie_secure)
            .field("redis_prefix", redis_prefix)
            .field("op_timeout_ms", op_timeout_ms)
            .field("max_sessions", max_sessions)
            .field("sweep_interval_secs", sweep_interval_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

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
    fn tls_files_need_a_tls_store_and_go_in_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "").unwrap();
        let pem = format!("{:?}", pem);
        let check = |lines: String| {
            let config: Config = toml::from_str(&format!("[sessions]\n{lines}")).unwrap();
            config.validate().map_err(|e| e.to_string())
        };
        let tls = "store = \"rediss://:secret@h:6380/0\"\n";
        check(format!("{tls}tls_ca_file = {pem}")).unwrap();
        check(format!("{tls}tls_cert_file = {pem}\ntls_key_file = {pem}")).unwrap();
        for (lines, expected) in [
            (
                format!("store = \"redis://:secret@h/0\"\ntls_ca_file = {pem}"),
                "needs a rediss://",
            ),
            (format!("{tls}tls_cert_file = {pem}"), "go together"),
            (
                format!("{tls}tls_ca_file = \"/nonexistent/ca.pem\""),
                "not a readable file",
            ),
            (
                "store = \"redis+cluster://:secret@a:1/2\"".to_owned(),
                "database 0 only",
            ),
            (
                "store = \"redis+cluster://:secret@a:1\"\nredis_prefix = \"s{x}:\"".to_owned(),
                "may not contain braces",
            ),
        ] {
            let err = check(lines.clone()).unwrap_err();
            assert!(err.contains(expected), "{lines}: {err}");
            assert!(!err.contains("secret"), "{lines}: {err}");
        }
    }

    #[test]
    fn the_debug_form_hides_the_store_password() {
        let config: Config =
            toml::from_str("[sessions]\nstore = \"redis://:hunter2@h:1/0\"\n").unwrap();
        let shown = format!("{config:?}");
        assert!(shown.contains("redis://:***@h:1/0"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
