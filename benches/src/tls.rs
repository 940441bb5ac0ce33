//! TLS for the benchmarks: the test kit's certificate authority and a server certificate for
//! `localhost` made for the run, written where both servers can read them, and the load's
//! client configuration (ring, trusting only that authority, no session resumption, so every
//! new connection is a full handshake).

use std::path::{Path, PathBuf};

use baton_testkit::tls::{TestCa, write_pair};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::load::TlsClient;

/// The certificate files of a run and the authority that signed them.
#[derive(Debug)]
pub struct Certs {
    /// The chain (server certificate, then the authority's), PEM.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8), PEM.
    pub key: PathBuf,
    /// The `[tls]` table of a host serving these files.
    pub config: String,
    ca: TestCa,
}

impl Certs {
    /// Makes an authority and a certificate for `localhost` and `127.0.0.1`, and writes the
    /// chain and key to `dir`.
    pub fn generate(dir: &Path) -> Certs {
        let ca = TestCa::new("baton benchmark CA");
        let config = write_pair(dir, &ca.issue());
        Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            config,
            ca,
        }
    }

    /// A load client that trusts the authority, offers HTTP/1.1 by ALPN and never resumes a
    /// session.
    ///
    /// # Errors
    /// If `localhost` is not a server name (it is).
    pub fn client(&self) -> anyhow::Result<TlsClient> {
        let mut config = self.ca.client_config(&[b"http/1.1"]);
        config.resumption = Resumption::disabled();
        Ok(TlsClient {
            connector: TlsConnector::from(std::sync::Arc::new(config)),
            name: ServerName::try_from("localhost")?,
        })
    }
}
