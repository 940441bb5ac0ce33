//! The listeners' connections, under `[http]`: header, body and idle timeouts, HTTP/2 pings,
//! connection caps, and the proxies whose forwarding headers are believed.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use serde::{Deserialize, Serialize};

use super::first_zero;
use crate::error::{Error, Result};

/// Connection timeouts and limits, under `[http]`. They apply to the app listener; the admin
/// listener uses the same timeouts and its own connection limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
    /// Peers (IP addresses or CIDR ranges) whose `Forwarded`, `X-Forwarded-For` and
    /// `X-Forwarded-Proto` headers are believed; empty (the default) believes nobody.
    pub trusted_proxies: Vec<String>,
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
            trusted_proxies: Vec::new(),
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
        if let Some(bad) = self
            .trusted_proxies
            .iter()
            .find(|entry| parse_proxy(entry).is_none())
        {
            return Err(Error::Config(format!(
                "http.trusted_proxies: {bad:?} is neither an IP address nor a CIDR range \
                 (like \"10.0.0.0/8\")"
            )));
        }
        Ok(())
    }

    /// The trusted proxies as networks (an address is a network of one); entries that do not
    /// parse, which [`validate`](Self::validate) refuses, are left out.
    pub(crate) fn trusted_proxy_nets(&self) -> Vec<IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|entry| parse_proxy(entry))
            .collect()
    }
}

/// An IP address or a CIDR range; an IPv4-mapped IPv6 address is taken as its IPv4 address,
/// as peers are.
fn parse_proxy(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(IpNet::from(ip.to_canonical()));
    }
    let net = entry.parse::<IpNet>().ok()?;
    // `10.1.2.3/8` means `10.0.0.0/8`, as nginx takes it.
    Some(net.trunc())
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

    #[test]
    fn trusted_proxies_are_addresses_or_ranges_and_a_bad_entry_is_named() {
        assert!(Config::default().http.trusted_proxy_nets().is_empty());
        let config: Config = toml::from_str(
            "[http]\ntrusted_proxies = [\"127.0.0.1\", \"10.1.2.3/8\", \"::1\", \"fd00::/8\"]",
        )
        .unwrap();
        config.validate().unwrap();
        let nets: Vec<String> = config
            .http
            .trusted_proxy_nets()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]);
        for bad in ["localhost", "10.0.0.0/33", "1.2.3", "", "10.0.0.0/8/8"] {
            let config: Config =
                toml::from_str(&format!("[http]\ntrusted_proxies = [\"::1\", {bad:?}]")).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains("trusted_proxies") && error.contains(&format!("{bad:?}")),
                "{bad}: {error}"
            );
        }
    }
}
