//! The HTTP server: accept loop, connections (HTTP/1.1 keep-alive and h2c, and both over TLS
//! with ALPN), their timeouts and cap, graceful shutdown.
//!
//! One accept loop serves every listener of a kind (the plain and the HTTPS app listeners share
//! one set of connections, so one cap and one eviction order cover both).
//!
//! - `conn`: each connection's activity, the idle and header timeouts, the set of open
//!   connections that enforces the cap (closing the longest-idle one to make room).
//! - `body`: the request body with its progress timeout, and the response body that marks the
//!   end of a request on its connection.
//! - `service`: one app request in stages (route, read body, admit, dispatch), inside its span.
//! - `rejection`: the one error type of the request path; each knows its response.
//! - `redirect`: the answer of a plain listener when the host serves HTTPS only.
//! - `client`: who a request comes from, behind trusted proxies (handed to the handler with the
//!   request).
//! - `compress`: gzip and brotli for apps' responses.

mod access;
mod body;
mod client;
mod compress;
pub(crate) use compress::encode_whole;
mod conn;
mod redirect;
mod rejection;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Either;
use hyper::body::{Body as HttpBody, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::config::HttpConfig;
use crate::deploy::Registry;
use crate::session::Sessions;
pub(crate) use access::VersionFields;
pub(crate) use body::{Body, BodyError, RequestBody};
use client::{ClientInfo, TrustedProxies};
use conn::{ConnIo, Connections, IdleTimeouts, TrackedIo};
use rejection::{BoxError, Rejection};

/// A listening socket and, for HTTPS, the TLS acceptor of its connections.
pub(crate) struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.tcp.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Listener {
    /// A listener of plain HTTP (HTTP/1.1 and h2c).
    pub(crate) fn plain(tcp: TcpListener) -> Listener {
        Listener { tcp, tls: None }
    }

    /// A listener of HTTPS: each connection's TLS handshake with `acceptor`, then HTTP/2 or
    /// HTTP/1.1.
    pub(crate) fn tls(tcp: TcpListener, acceptor: TlsAcceptor) -> Listener {
        Listener {
            tcp,
            tls: Some(acceptor),
        }
    }
}

/// Waits for a connection on any of `listeners`, starting the search at `first` so a busy
/// listener cannot starve another. Returns the listener's index and what its accept gave.
async fn accept_any(
    listeners: &[Listener],
    first: usize,
) -> (usize, std::io::Result<(TcpStream, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        for i in 0..listeners.len() {
            let i = (first + i) % listeners.len();
            if let Poll::Ready(accepted) = listeners[i].tcp.poll_accept(cx) {
                return Poll::Ready((i, accepted));
            }
        }
        Poll::Pending
    })
    .await
}

/// How a listener treats its connections: timeouts, the most it keeps open, and the proxies
/// whose forwarding headers it believes.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    idle: IdleTimeouts,
    body_read_timeout: Duration,
    http2_keep_alive_interval: Option<Duration>,
    http2_keep_alive_timeout: Duration,
    max_connections: usize,
    tls_handshake_timeout: Duration,
    trusted_proxies: Arc<TrustedProxies>,
}

impl ConnectionSettings {
    /// The timeouts of `http`, with at most `max_connections` open at once.
    pub(crate) fn new(http: &HttpConfig, max_connections: usize) -> ConnectionSettings {
        ConnectionSettings {
            idle: IdleTimeouts {
                header: http.header_read_timeout(),
                idle: http.idle_timeout(),
            },
            body_read_timeout: http.body_read_timeout(),
            http2_keep_alive_interval: http.http2_keep_alive_interval(),
            http2_keep_alive_timeout: http.http2_keep_alive_timeout(),
            max_connections: max_connections.max(1),
            tls_handshake_timeout: http.header_read_timeout(),
            trusted_proxies: Arc::new(TrustedProxies::new(http.trusted_proxy_nets())),
        }
    }

    /// The same, with TLS handshakes bounded by `timeout` (the header timeout, which starts at
    /// the accept too, still bounds them).
    pub(crate) fn with_tls_handshake_timeout(self, timeout: Duration) -> ConnectionSettings {
        ConnectionSettings {
            tls_handshake_timeout: timeout,
            ..self
        }
    }
}

/// The soft limit on open files (`RLIMIT_NOFILE`); `None` if unlimited.
pub(crate) fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The default cap on the app listener's connections for an open-files limit of `nofile`:
/// what is left after a reserve for the admin listener, module files, uploads, the session
/// store and the log (an eighth of the limit, at least 128).
pub(crate) fn default_max_connections(nofile: Option<u64>) -> usize {
    let nofile = nofile.unwrap_or(1 << 20);
    let reserve = (nofile / 8).max(128);
    usize::try_from(nofile.saturating_sub(reserve).max(16)).unwrap_or(usize::MAX)
}

/// Serves the apps of `registry` on `listeners` until `shutdown` resolves, then stops
/// accepting and lets open connections finish their requests for at most `drain`. `shutdown`
/// resolves to how long idle HTTP/1 keep-alive connections may linger (see [`serve`]). With
/// `redirect_to_tls` (the HTTPS listener's port), requests on plain listeners get a 308 to the
/// same host and path over HTTPS instead.
pub(crate) async fn serve_apps(
    listeners: Vec<Listener>,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    shutdown: impl Future<Output = Duration>,
    drain: Duration,
    settings: ConnectionSettings,
    redirect_to_tls: Option<u16>,
) {
    let handler = move |req: Request<RequestBody>, client: ClientInfo| {
        let registry = Arc::clone(&registry);
        let sessions = Arc::clone(&sessions);
        async move {
            match redirect_to_tls {
                Some(port) if !client.over_tls => redirect::to_https(&req, port)
                    .unwrap_or_else(Rejection::into_response)
                    .map(compress::boxed),
                _ => service::handle(&registry, &sessions, req, client).await,
            }
        }
    };
    serve(listeners, handler, shutdown, drain, settings).await;
}

/// How long to wait after the `failures`-th accept error in a row.
fn accept_backoff(failures: u32) -> Duration {
    Duration::from_millis(10u64 << (failures.clamp(1, 8) - 1)).min(Duration::from_secs(1))
}

/// Serves `handler` on `listeners` (HTTP/1.1 and h2c, or both over TLS) until `shutdown`
/// resolves, then stops accepting, closes the connections with no request in progress, and
/// lets the others finish their requests for at most `drain`.
///
/// `shutdown` resolves to a linger: `ZERO` closes idle connections at once. Otherwise (a
/// hand-over to another process on the same listener) an idle HTTP/1 keep-alive connection
/// stays open that long, every response from then on says `Connection: close`, and the
/// connection closes after it; a client that sends on a kept-alive connection just as it is
/// closed would see its request fail, and one that gets `Connection: close` simply reconnects.
/// A TLS handshake in progress at a hand-over is finished and the connection treated the same.
pub(crate) async fn serve<H, F, B>(
    listeners: Vec<Listener>,
    handler: H,
    shutdown: impl Future<Output = Duration>,
    drain: Duration,
    settings: ConnectionSettings,
) where
    H: Fn(Request<RequestBody>, ClientInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.http2_keep_alive_interval)
        .keep_alive_timeout(settings.http2_keep_alive_timeout);
    let builder = Arc::new(builder);
    let conns = Arc::new(Connections::new());
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.tcp.local_addr().ok())
        .collect();
    let addr = addrs.first().copied();
    let mut next_listener = 0;
    let mut failures = 0u32;
    let mut at_cap = false;
    tokio::pin!(shutdown);
    let linger = loop {
        // At the cap, new connections wait in the kernel's backlog while the connection idle
        // for longest makes room; with every connection busy, the next one to close does.
        if conns.len() >= settings.max_connections {
            if !at_cap {
                at_cap = true;
                tracing::warn!(addr = ?addr, max_connections = settings.max_connections,
                    "connection limit reached; closing the longest-idle connections to make room");
            }
            conns.evict_idlest();
            tokio::select! {
                () = conns.wait_closed(Duration::from_millis(50)) => continue,
                l = &mut shutdown => break l,
            }
        }
        let (tls, (stream, peer)) = tokio::select! {
            (i, accepted) = accept_any(&listeners, next_listener) => match accepted {
                Ok(accepted) => {
                    next_listener = i + 1;
                    (listeners[i].tls.clone(), accepted)
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, one line per episode.
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(addr = ?addr, error = %e,
                            "accept failed; backing off until it works again");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(accept_backoff(failures)) => continue,
                        l = &mut shutdown => break l,
                    }
                }
            },
            l = &mut shutdown => break l,
        };
        if failures > 0 {
            tracing::info!(addr = ?addr, failures, "accepting again");
            failures = 0;
        }
        if at_cap && conns.len() + 1 < settings.max_connections {
            at_cap = false;
        }
        let _ = stream.set_nodelay(true);
        let (id, state) = conns.open();
        let handler = handler.clone();
        let body_timeout = settings.body_read_timeout;
        let over_tls = tls.is_some();
        let trusted = Arc::clone(&settings.trusted_proxies);
        let service = {
            let state = Arc::clone(&state);
            let conns = Arc::clone(&conns);
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let request = state.start_request();
                let handler = handler.clone();
                let conns = Arc::clone(&conns);
                let client = ClientInfo::new(peer, over_tls, req.headers(), &trusted);
                let h2 = req.version() == Version::HTTP_2;
                if h2 {
                    state.saw_h2();
                }
                async move {
                    let mut response = if req.version() == Version::HTTP_11
                        && !req.headers().contains_key(http::header::HOST)
                    {
                        Rejection::MissingHost.into_response().map(Either::Right)
                    } else {
                        handler(req.map(|b| RequestBody::new(b, body_timeout)), client)
                            .await
                            .map(Either::Left)
                    };
                    if !h2 && conns.shutting_down() {
                        // The client reconnects for its next request, to whoever serves then.
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(
                        response.map(|b| body::TrackedBody::new(b, request)),
                    )
                }
            })
        };
        let builder = Arc::clone(&builder);
        let conns = Arc::clone(&conns);
        let timeouts = settings.idle;
        let handshake_timeout = settings.tls_handshake_timeout.min(timeouts.header);
        tokio::spawn(async move {
            // Set when a hand-over starts during the TLS handshake.
            let mut handover = false;
            let io = match tls {
                None => ConnIo::Plain(stream),
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
                    tokio::pin!(handshake);
                    let done = loop {
                        tokio::select! {
                            done = &mut handshake => break Some(done),
                            () = state.close_requested() => {
                                // Evicted, or shutting down: a handshake is no request. In a
                                // hand-over a request may follow it, as on an idle connection.
                                if !conns.shutting_down() || conns.linger().is_zero() {
                                    break None;
                                }
                                handover = true;
                            }
                        }
                    };
                    match done {
                        Some(Ok(Ok(tls))) => ConnIo::Tls(Box::new(tls)),
                        Some(Ok(Err(e))) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            conns.closed(id);
                            return;
                        }
                        Some(Err(_)) => {
                            tracing::debug!(%peer, timeout_ms = crate::clock::millis(handshake_timeout),
                                "closing a connection whose TLS handshake did not finish in time");
                            conns.closed(id);
                            return;
                        }
                        None => {
                            conns.closed(id);
                            return;
                        }
                    }
                }
            };
            let io = TokioIo::new(TrackedIo::new(io, Arc::clone(&state)));
            // Boxed so it can be dropped (closing the socket) before the slot is given back.
            let mut conn = Box::pin(builder.serve_connection_with_upgrades(io, service));
            let mut closing = false;
            let mut lingering = handover.then(|| tokio::time::Instant::now() + conns.linger());
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = tokio::time::sleep_until(state.next_check(&timeouts)) => {
                        if state.expired(&timeouts) {
                            tracing::debug!(%peer, "closing a connection that sent no request in time");
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(lingering.unwrap_or_else(tokio::time::Instant::now)),
                        if lingering.is_some() =>
                    {
                        lingering = None;
                        if state.is_idle() {
                            break;
                        }
                        if !closing {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                    () = state.close_requested() => {
                        if state.is_idle() {
                            let linger = conns.linger();
                            if !conns.shutting_down() || linger.is_zero() || state.is_h2() {
                                break;
                            }
                            // A hand-over: a request may be on its way; it gets an answer
                            // with `Connection: close`.
                            lingering = Some(tokio::time::Instant::now() + linger);
                            continue;
                        }
                        conns.spared(&state);
                        if conns.shutting_down() && !closing {
                            // Finish the requests in progress, take no more.
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
            drop(conn);
            conns.closed(id);
        });
    };
    drop(listeners);
    conns.shut_down(linger);
    tracing::info!(addrs = ?addrs, open = conns.len(), "stopped accepting; waiting for open requests");
    if tokio::time::timeout(drain, conns.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            addr = ?addr,
            timeout_secs = drain.as_secs(),
            open = conns.len(),
            "connections still open after the drain timeout"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_a_reserve_of_file_descriptors() {
        assert_eq!(default_max_connections(Some(1024)), 896);
        assert_eq!(default_max_connections(Some(65536)), 57344);
        assert_eq!(default_max_connections(Some(100)), 16);
    }

    #[test]
    fn accept_errors_back_off_up_to_a_second() {
        assert_eq!(accept_backoff(1), Duration::from_millis(10));
        assert_eq!(accept_backoff(2), Duration::from_millis(20));
        assert_eq!(accept_backoff(7), Duration::from_millis(640));
        assert_eq!(accept_backoff(8), Duration::from_secs(1));
        assert_eq!(accept_backoff(100), Duration::from_secs(1));
    }
}
