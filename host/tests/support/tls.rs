//! TLS for the tests: the kit's certificate authority and certificate files for the host, real
//! TLS clients (rustls) speaking HTTP/1.1 or HTTP/2 through hyper, and `curl`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};

use super::http::Reply;

pub use baton_testkit::tls::{TestCa, openssl, replace_file, write_pair};

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection to a host, kept open for several requests.
pub struct TlsConn {
    /// The certificate the server presented.
    pub leaf: CertificateDer<'static>,
    /// The protocol ALPN chose.
    pub alpn: Option<Vec<u8>>,
    authority: String,
    sender: Sender,
}

/// Connects to `addr` as `localhost` with `config` (HTTP/2 if ALPN picks `h2`).
pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<TlsConn, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    handshake(tcp, config).await
}

/// Starts TLS as `localhost` with `config` on a TCP connection opened earlier.
pub async fn handshake(
    tcp: tokio::net::TcpStream,
    config: Arc<ClientConfig>,
) -> Result<TlsConn, String> {
    let addr = tcp.peer_addr().map_err(|e| format!("peer address: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no server certificate")?
        .clone()
        .into_owned();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let sender = if alpn.as_deref() == Some(b"h2") {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| format!("http/1.1 handshake: {e}"))?;
        tokio::spawn(conn);
        Sender::H1(sender)
    };
    Ok(TlsConn {
        leaf,
        alpn,
        authority: format!("localhost:{}", addr.port()),
        sender,
    })
}

impl TlsConn {
    /// `GET path` on this connection; also returns the response's HTTP version.
    pub async fn get(&mut self, path: &str) -> Result<(Reply, http::Version), String> {
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                sender.ready().await.map_err(|e| format!("{e}"))?;
                let request = http::Request::get(path)
                    .header(http::header::HOST, &self.authority)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                sender.send_request(request).await
            }
            Sender::H2(sender) => {
                sender.ready().await.map_err(|e| format!("{e}"))?;
                let request = http::Request::get(format!("https://{}{path}", self.authority))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                sender.send_request(request).await
            }
        }
        .map_err(|e| format!("{e}"))?;
        let version = response.version();
        Ok((Reply::read(response).await?, version))
    }
}

/// What a `curl` run printed.
#[derive(Debug)]
pub struct Curl {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `curl -sS` with `args`; a missing `curl` fails the test (`.ci/run` installs it).
pub fn curl(args: &[&str]) -> Curl {
    let output = Command::new("curl")
        .arg("-sS")
        .args(["--max-time", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl is not installed: `apt-get install -y curl` (.ci/run does this)");
    Curl {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `--resolve localhost:PORT:127.0.0.1`, so curl connects where the host listens.
pub fn resolve(addr: SocketAddr) -> String {
    format!("localhost:{}:{}", addr.port(), addr.ip())
}
