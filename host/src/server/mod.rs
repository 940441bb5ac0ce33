//! The HTTP server: accept loop, connections (HTTP/1.1 keep-alive and h2c), graceful shutdown.

mod service;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::deploy::Registry;
use crate::session::Sessions;
pub use service::Body;

/// Serves the apps of `registry` on `listener` until `shutdown` resolves, then stops accepting
/// and lets open connections finish their requests for at most `drain`.
pub async fn serve_apps(
    listener: TcpListener,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let handler = move |req| {
        let registry = Arc::clone(&registry);
        let sessions = Arc::clone(&sessions);
        async move { service::handle(&registry, &sessions, req).await }
    };
    serve(listener, handler, shutdown, drain).await;
}

/// Serves `handler` on `listener` (HTTP/1.1 and h2c) until `shutdown` resolves, then stops
/// accepting and lets open connections finish their requests for at most `drain`.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let response = handler(req);
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; waiting for open requests");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_secs = drain.as_secs(),
            "connections still open after the drain timeout"
        );
    }
}
