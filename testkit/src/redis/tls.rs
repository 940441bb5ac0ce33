//! A `redis-server` that speaks only TLS (`rediss://`), with a certificate from a CA made for
//! the run, and, when asked, a client certificate required from the same CA.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use super::node::{RedisProc, node_args};
use crate::tls::TestCa;

/// Whether the server asks its clients for a certificate (`--tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Mutual TLS: a client without a certificate from the CA is refused.
    Required,
    /// Server authentication only, as most managed Redis services do it.
    NotAsked,
}

/// A TLS-only `redis-server` and the files a client needs, in a directory of its own:
/// `ca.pem` (the CA that signed the server's certificate), `other-ca.pem` (one that did not),
/// `client.pem` and `client-key.pem`.
#[derive(Debug)]
pub struct TlsRedis {
    server: RedisProc,
    client_certs: ClientCerts,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    /// Starts it and waits until its port accepts connections.
    ///
    /// # Panics
    /// If it does not start (see [`TlsRedis::try_start`]).
    pub fn start(client_certs: ClientCerts) -> TlsRedis {
        Self::try_start(client_certs).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`TlsRedis::start`], returning what went wrong.
    ///
    /// # Errors
    /// If the files cannot be written, `redis-server` is not on PATH or does not come up.
    pub fn try_start(client_certs: ClientCerts) -> anyhow::Result<TlsRedis> {
        let dir = tempfile::tempdir()?;
        let ca = TestCa::new("baton test Redis CA");
        let (server, client) = (ca.issue(), ca.issue());
        let path = |name: &str| dir.path().join(name);
        for (name, text) in [
            ("ca.pem", &ca.pem),
            ("server.pem", &server.chain_pem),
            ("server-key.pem", &server.key_pem),
            ("client.pem", &client.chain_pem),
            ("client-key.pem", &client.key_pem),
            ("other-ca.pem", &TestCa::new("another CA").pem),
        ] {
            std::fs::write(path(name), text)?;
        }
        let file = |name: &str| path(name).display().to_string();
        let auth_clients = match client_certs {
            ClientCerts::Required => "yes",
            ClientCerts::NotAsked => "no",
        };
        let server = RedisProc::try_start(
            dir.path(),
            |port| {
                // Port 0: no plain port.
                let mut args = node_args(0, None);
                args.extend(
                    [
                        "--tls-port",
                        &port.to_string(),
                        "--tls-cert-file",
                        &file("server.pem"),
                        "--tls-key-file",
                        &file("server-key.pem"),
                        "--tls-ca-cert-file",
                        &file("ca.pem"),
                        "--tls-auth-clients",
                        auth_clients,
                    ]
                    .map(str::to_owned),
                );
                args
            },
            |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )?;
        Ok(TlsRedis {
            server,
            client_certs,
            dir,
        })
    }

    /// `rediss://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.server.port)
    }

    /// The server's process id.
    ///
    /// # Panics
    /// If it was killed.
    pub fn pid(&self) -> u32 {
        self.server.pid().expect("redis-server is running")
    }

    /// A file of its directory: `ca.pem`, `other-ca.pem`, `client.pem`, `client-key.pem`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `[sessions]` lines of a host that trusts the CA in file `ca` and, when the server
    /// asks for one, presents the client certificate.
    pub fn sessions_config(&self, ca: &str) -> String {
        let mut lines = format!("tls_ca_file = {:?}\n", self.file(ca));
        if self.client_certs == ClientCerts::Required {
            lines += &format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                self.file("client.pem"),
                self.file("client-key.pem")
            );
        }
        lines
    }

    /// A direct TLS connection, to look at what the hosts stored.
    ///
    /// # Panics
    /// If the server does not accept one within 5 s.
    pub fn conn(&self) -> ::redis::Connection {
        let read = |name: &str| std::fs::read(self.file(name)).expect("the kit wrote it");
        let certificates = ::redis::TlsCertificates {
            client_tls: Some(::redis::ClientTlsConfig {
                client_cert: read("client.pem"),
                client_key: read("client-key.pem"),
            }),
            root_cert: Some(read("ca.pem")),
        };
        // The redis client builds its rustls configuration with the process's default provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        ::redis::Client::build_with_tls(self.url(), certificates)
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url()))
    }
}
