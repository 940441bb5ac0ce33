//! TLS for the benchmarks: a certificate authority and a server certificate for `localhost`
//! made for the run (rcgen, ECDSA P-256), written where both servers can read them, and the
//! load's client configuration (ring, trusting only that authority, no session resumption, so
//! every new connection is a full handshake).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::load::TlsClient;

/// The certificate files of a run and the authority that signed them.
#[derive(Debug)]
pub struct Certs {
    /// The chain (server certificate, then the authority's), PEM.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8), PEM.
    pub key: PathBuf,
    ca: CertificateDer<'static>,
}

impl Certs {
    /// Makes an authority and a certificate for `localhost` and `127.0.0.1`, and writes the
    /// chain and key to `dir`.
    ///
    /// # Errors
    /// If generating or writing fails.
    pub fn generate(dir: &Path) -> anyhow::Result<Certs> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "baton benchmark CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &issuer)?;
        let certs = Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: ca_cert.der().clone(),
        };
        std::fs::write(&certs.cert, format!("{}{}", cert.pem(), ca_cert.pem()))?;
        std::fs::write(&certs.key, key.serialize_pem())?;
        Ok(certs)
    }

    /// The `[tls]` table of a host serving these files.
    pub fn config(&self) -> String {
        format!("[tls]\ncert = {:?}\nkey = {:?}\n", self.cert, self.key)
    }

    /// A load client that trusts the authority, offers HTTP/1.1 by ALPN and never resumes a
    /// session.
    ///
    /// # Errors
    /// If the authority's certificate is refused.
    pub fn client(&self) -> anyhow::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from("localhost")?,
        })
    }
}
