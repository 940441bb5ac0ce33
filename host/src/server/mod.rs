//! The HTTP server: accept loop, connections (HTTP/1.1 keep-alive and h2c), graceful shutdown.

mod service;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::deploy::Registry;
use crate::session::Sessions;
pub(crate) use service::handle;

/// Serves `registry`'s apps on `listener` until `shutdown` resolves, then stops accepting and
/// lets open connections finish their requests for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
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
        let registry = Arc::clone(&registry);
        let sessions = Arc::clone(&sessions);
        let service = hyper::service::service_fn(move |req| {
            let registry = Arc::clone(&registry);
            let sessions = Arc::clone(&sessions);
            async move { Ok::<_, std::convert::Infallible>(handle(&registry, &sessions, req).await) }
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
