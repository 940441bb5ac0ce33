//! TLS, under `[tls]`: the certificate and key of the HTTPS listener (`listen_tls`), the
//! handshake's time limit, and the redirect of plain HTTP to HTTPS.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// TLS settings of the HTTPS listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, the server's own certificate first.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Longest a TLS handshake may take from the accept (the header-read timeout, which also
    /// starts at the accept, bounds it too).
    pub handshake_timeout_ms: u64,
    /// Answer every request on the plain listener with a 308 to the same host and path on the
    /// HTTPS listener.
    pub redirect_http: bool,
    /// Reload the certificate when its files change (SIGHUP reloads it either way).
    pub watch: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            handshake_timeout_ms: 10_000,
            redirect_http: false,
            watch: true,
        }
    }
}

impl TlsConfig {
    millis_getters! {
        handshake_timeout => handshake_timeout_ms;
    }

    /// The certificate and key files, when both are set.
    pub fn files(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.cert.as_ref().zip(self.key.as_ref())
    }

    /// Checks the settings against whether an HTTPS listener is configured (the files
    /// themselves are read and checked by [`crate::tls::Certificates::load`]).
    pub(super) fn validate(&self, listen_tls: bool) -> Result<()> {
        let fail = |what: &str| Err(Error::Config(format!("tls: {what}")));
        match (listen_tls, &self.cert, &self.key) {
            (true, None, _) => return fail("listen_tls is set, so tls.cert is required"),
            (true, _, None) => return fail("listen_tls is set, so tls.key is required"),
            (false, Some(_), _) | (false, _, Some(_)) => {
                return fail("tls.cert and tls.key need listen_tls (the HTTPS listener's address)");
            }
            _ => {}
        }
        if self.redirect_http && !listen_tls {
            return fail("tls.redirect_http needs listen_tls (the HTTPS listener's address)");
        }
        if self.handshake_timeout_ms == 0 {
            return fail("tls.handshake_timeout_ms must be at least 1");
        }
        Ok(())
    }
}
