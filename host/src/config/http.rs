//! The listeners' connections, under `[http]`: header, body and idle timeouts, HTTP/2 pings,
//! connection caps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::first_zero;
use crate::error::{Error, Result};

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
    millis_getters! {
        header_read_timeout => header_read_timeout_ms;
        body_read_timeout => body_read_timeout_ms;
        idle_timeout => idle_timeout_ms;
        http2_keep_alive_timeout => http2_keep_alive_timeout_ms;
    }

    /// The HTTP/2 ping interval, if pings are on.
    pub fn http2_keep_alive_interval(&self) -> Option<Duration> {
        (self.http2_keep_alive_interval_ms > 0)
            .then(|| Duration::from_millis(self.http2_keep_alive_interval_ms))
    }

    pub(super) fn validate(&self) -> Result<()> {
        let zero = first_zero(&[
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
        ]);
        if let Some(name) = zero {
            return Err(Error::Config(format!("http.{name} must be at least 1")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
}
