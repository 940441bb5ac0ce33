//! TLS for the HTTPS listener (rustls with the `ring` provider): the certificate and key read
//! from PEM files and checked against each other, the acceptor that offers HTTP/2 and HTTP/1.1
//! by ALPN, and the reload of both files without dropping a connection.
//!
//! The certificate in use sits behind one atomic pointer that every new handshake reads
//! ([`Certificates`] is rustls' certificate resolver). A reload — the files changed (`watch`), or
//! SIGHUP — reads and checks the new pair first and swaps the pointer only if it is good: new
//! handshakes use the new certificate, connections already open carry on with the old one, and a
//! bad new file is logged while the old certificate keeps serving.

mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

pub(crate) use watch::CertWatcher;

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("the TLS {what} {} is not valid PEM: {source}", path.display())]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("the TLS certificate file {} holds no CERTIFICATE block", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error(
        "the TLS key file {} holds no private key (a PEM PRIVATE KEY, RSA PRIVATE KEY or EC \
         PRIVATE KEY block)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind rustls cannot sign with, or is malformed.
    #[error("the TLS key {} cannot be used: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The key is not the one the certificate was issued for.
    #[error(
        "the TLS key {} does not match the certificate {} (the first certificate of the chain \
         must be the one issued for this key)",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate cannot be parsed.
    #[error("the TLS certificate {} cannot be used: {source}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The files could not be watched for changes.
    #[error("cannot watch {} for certificate changes: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The watcher's error.
        source: notify_debouncer_full::notify::Error,
    },
}

/// The crypto provider every TLS object of the host uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and key as read from their files, checked to belong together.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// A hash of both files' bytes: a reload of unchanged files is a no-op.
    fingerprint: u64,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads the certificate chain at `cert` and the private key at `key` and checks that the key
/// is the first certificate's.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let cert_pem = read("certificate", cert)?;
    let key_pem = read("key", key)?;
    let pem_error = |what, path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Pem { what, path, source }
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("certificate", cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(private) => private,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key.to_owned(),
            });
        }
        Err(e) => return Err(pem_error("key", key)(e)),
    };
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|source| TlsError::Key {
            path: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }
        Err(source) => {
            return Err(TlsError::Certificate {
                path: cert.to_owned(),
                source,
            });
        }
    }
    Ok(Loaded {
        key: Arc::new(certified),
        fingerprint: xxhash_rust::xxh3::xxh3_64(&[cert_pem, key_pem].concat()),
    })
}

/// The HTTPS listener's certificate: loaded from its files, reloaded when they change, handed
/// to every new handshake.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The fingerprint of the files in use; reloads are serialised by this lock.
    fingerprint: Mutex<u64>,
    provider: Arc<CryptoProvider>,
}

impl Certificates {
    /// Reads and checks the certificate chain at `cert` and the key at `key`.
    ///
    /// # Errors
    /// A file that is missing or unreadable, not PEM, without a certificate or a key, a key of
    /// a kind that cannot sign, or a key that is not the certificate's.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificates>, TlsError> {
        let provider = provider();
        let loaded = load(cert, key, &provider)?;
        Ok(Arc::new(Certificates {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::new(loaded.key),
            fingerprint: Mutex::new(loaded.fingerprint),
            provider,
        }))
    }

    /// Reads the files again and, if they changed and are good, makes new handshakes use them.
    /// Returns whether the certificate in use changed; open connections are not touched.
    ///
    /// # Errors
    /// As [`Certificates::load`]; the certificate in use stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let mut fingerprint = crate::sync::lock(&self.fingerprint);
        let loaded = load(&self.cert, &self.key, &self.provider)?;
        if loaded.fingerprint == *fingerprint {
            return Ok(false);
        }
        self.current.store(loaded.key);
        *fingerprint = loaded.fingerprint;
        Ok(true)
    }

    /// Reloads and logs the outcome (`why`: what asked for it).
    pub fn reload_logged(&self, why: &'static str) {
        match self.reload() {
            Ok(true) => tracing::info!(cert = %self.cert.display(), key = %self.key.display(),
                trigger = why, "TLS certificate reloaded; new connections use it"),
            Ok(false) => tracing::debug!(trigger = why, "TLS certificate files unchanged"),
            Err(e) => tracing::error!(error = %e, trigger = why,
                "new TLS certificate or key refused; the previous certificate keeps serving"),
        }
    }

    /// The certificate chain new handshakes present (the server's own certificate first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }

    /// The acceptor of the HTTPS listener: this certificate (as it is at each handshake), TLS
    /// 1.2 and 1.3, ALPN `h2` then `http/1.1`.
    ///
    /// # Panics
    /// Never: the provider's default protocol versions are always consistent.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }

    /// The certificate and key files.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests;
