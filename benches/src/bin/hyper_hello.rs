//! `hyper-hello`: the bare hyper baseline for `swapbench` and `tlsbench`. It answers every
//! request with a short greeting on the same runtime shape as the `baton` host (tokio
//! multi-thread, default worker count, `TCP_NODELAY`), and prints `listening addr=IP:PORT` on
//! stderr once bound. With `--tls-cert` and `--tls-key` it serves HTTPS (rustls with the `ring`
//! provider, as the host; ALPN `http/1.1`).
//!
//! ```text
//! hyper-hello [--listen 127.0.0.1:0] [--tls-cert CHAIN.pem --tls-key KEY.pem]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

async fn hello(
    _: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(b"hello from hyper\n")));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

fn acceptor(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn main() -> anyhow::Result<()> {
    let usage = "usage: hyper-hello [--listen ADDR] [--tls-cert FILE --tls-key FILE]";
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let (mut cert, mut key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().context(usage)?;
        match flag.as_str() {
            "--listen" => listen = value.parse()?,
            "--tls-cert" => cert = Some(PathBuf::from(value)),
            "--tls-key" => key = Some(PathBuf::from(value)),
            _ => anyhow::bail!(usage),
        }
    }
    let tls = match (&cert, &key) {
        (Some(cert), Some(key)) => Some(acceptor(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!(usage),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!("listening addr={}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                let http = http1::Builder::new();
                match tls {
                    None => {
                        let _ = http
                            .serve_connection(TokioIo::new(stream), service_fn(hello))
                            .await;
                    }
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = http
                                .serve_connection(TokioIo::new(stream), service_fn(hello))
                                .await;
                        }
                    }
                }
            });
        }
    })
}
