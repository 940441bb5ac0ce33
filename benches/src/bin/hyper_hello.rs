//! `hyper-hello`: the bare hyper baseline for `swapbench`, `tlsbench` and `streambench`. It
//! answers every request with a short greeting on the same runtime shape as the `baton` host
//! (tokio multi-thread, default worker count, `TCP_NODELAY`), and prints `listening
//! addr=IP:PORT` on stderr once bound. With `--tls-cert` and `--tls-key` it serves HTTPS (rustls
//! with the `ring` provider, as the host; ALPN `http/1.1`).
//!
//! With `--hand-off` every greeting is made on one of [`HAND_OFF_THREADS`] threads fed by a
//! crossbeam channel and awaited through a oneshot, as the host runs every handler on its
//! version's workers: the hand-off alone, without the host's other work, for telling the two
//! apart.
//!
//! `GET /bytes?n=N` answers N bytes (`a`…`z` repeating, as the `hello` example's `/bytes`) in
//! 64 KiB frames without a declared length, so hyper sends them chunked as the host sends a
//! streamed response. The frames are slices of one shared block: no copy, the least a server
//! can do.
//!
//! ```text
//! hyper-hello [--listen 127.0.0.1:0] [--tls-cert CHAIN.pem --tls-key KEY.pem] [--hand-off]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Threads of the `--hand-off` pool: the host's default `limits.worker_threads`.
const HAND_OFF_THREADS: usize = 16;

/// Work for a `--hand-off` thread.
type Job = Box<dyn FnOnce() + Send>;

/// The `--hand-off` pool: its threads wait on the channel as the host's workers do. Returns once
/// every thread runs, so that all are there before the server says it listens.
fn hand_off_pool() -> anyhow::Result<crossbeam_channel::Sender<Job>> {
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let started = Arc::new(std::sync::Barrier::new(HAND_OFF_THREADS + 1));
    for i in 0..HAND_OFF_THREADS {
        let (rx, started) = (rx.clone(), Arc::clone(&started));
        std::thread::Builder::new()
            .name(format!("hand-off-{i}"))
            .spawn(move || {
                started.wait();
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
    }
    started.wait();
    Ok(tx)
}

/// The size of a `/bytes` frame, as the host's streamed writes.
const FRAME: usize = 64 * 1024;

/// A `/bytes` body: `left` bytes in [`FRAME`]-sized slices of `block`, with no declared length.
struct Download {
    block: Bytes,
    left: u64,
}

impl Body for Download {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let take = usize::try_from(self.left).map_or(FRAME, |left| left.min(FRAME));
        self.left -= take as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.block.slice(..take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown, like a streamed response from the host: sent chunked.
        SizeHint::default()
    }
}

/// `n` of `/bytes?n=N`.
fn bytes_wanted(request: &http::Request<hyper::body::Incoming>) -> Option<u64> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("n="))?
        .parse()
        .ok()
}

async fn hello(
    request: http::Request<hyper::body::Incoming>,
    block: Bytes,
    pool: Option<crossbeam_channel::Sender<Job>>,
) -> Result<http::Response<BoxBody<Bytes, Infallible>>, Infallible> {
    if request.uri().path() == "/bytes" {
        let mut response = match bytes_wanted(&request) {
            Some(left) => http::Response::new(Download { block, left }.boxed()),
            None => {
                let mut r = http::Response::new(Full::from("?n=N expected\n").boxed());
                *r.status_mut() = http::StatusCode::BAD_REQUEST;
                r
            }
        };
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(response);
    }
    let greeting = match pool {
        None => Bytes::from_static(b"hello from hyper\n"),
        Some(pool) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let job: Job = Box::new(move || {
                let _ = tx.send(Bytes::from_static(b"hello from hyper\n"));
            });
            match pool.send(job) {
                Ok(()) => rx.await.unwrap_or_default(),
                Err(_) => Bytes::new(),
            }
        }
    };
    let mut response = http::Response::new(Full::new(greeting).boxed());
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
    let usage = "usage: hyper-hello [--listen ADDR] [--tls-cert FILE --tls-key FILE] [--hand-off]";
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let (mut cert, mut key) = (None, None);
    let mut pool = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--hand-off" {
            pool = Some(hand_off_pool()?);
            continue;
        }
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
    let block: Bytes = (0..FRAME).map(|i| b'a' + (i % 26) as u8).collect();
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
            let block = block.clone();
            let pool = pool.clone();
            tokio::spawn(async move {
                let service =
                    service_fn(move |request| hello(request, block.clone(), pool.clone()));
                let http = http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    })
}
