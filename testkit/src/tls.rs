//! Certificates for a run: a certificate authority of the run's own (rcgen), server
//! certificates it signs for `localhost` and `127.0.0.1`, the files a host reads them from, and
//! rustls client configurations that trust only that authority.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A certificate authority made for the run.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    /// The CA certificate, PEM (for `curl --cacert`).
    pub pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A server certificate for `localhost` and `127.0.0.1` and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The chain: the server certificate, then the CA's.
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
    /// The server certificate, as a client sees it.
    pub leaf: CertificateDer<'static>,
}

impl TestCa {
    /// A new authority (ECDSA P-256) called `name`.
    ///
    /// # Panics
    /// If rcgen cannot make it (it always can).
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            der: cert.der().clone(),
            pem: cert.pem(),
        }
    }

    /// A new server certificate signed by this CA.
    ///
    /// # Panics
    /// If rcgen cannot make it (it always can).
    pub fn issue(&self) -> Issued {
        let key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server certificate parameters");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a server certificate");
        Issued {
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
            leaf: cert.der().clone(),
        }
    }

    /// A client configuration (ring, safe default protocol versions) that trusts only this CA
    /// and offers `alpn`.
    ///
    /// # Panics
    /// If rustls refuses the CA's certificate (it never does).
    pub fn client_config(&self, alpn: &[&[u8]]) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("the CA certificate");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// [`TestCa::client_config`], shared.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        Arc::new(self.client_config(alpn))
    }
}

/// Writes `text` to `path` as certificate tools do: a temporary file in the same directory,
/// renamed over the old one.
///
/// # Panics
/// If it cannot be written.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Writes `issued` as `cert.pem` and `key.pem` in `dir`; returns the `[tls]` table of a host
/// configuration naming them.
///
/// # Panics
/// If they cannot be written.
pub fn write_pair(dir: &Path, issued: &Issued) -> String {
    replace_file(&dir.join("cert.pem"), &issued.chain_pem);
    replace_file(&dir.join("key.pem"), &issued.key_pem);
    format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        dir.join("cert.pem"),
        dir.join("key.pem")
    )
}

/// Runs `openssl` with `args` in `dir`, as the README shows it.
///
/// # Panics
/// If `openssl` is missing (`.ci/run` installs it) or fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is not installed: `apt-get install -y openssl` (.ci/run does this)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
