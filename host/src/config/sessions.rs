//! Sessions, under `[sessions]`: the store, the expiry, the cookie.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

    pub(super) fn validate(&self) -> Result<()> {
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
}
