//! One app request, in stages: route it to its app, read its body within the app's limit, admit
//! it (a place among the app's concurrent requests, a version that takes requests), dispatch it
//! to the version's workers and wait for the handler within the request timeout.
//!
//! Each stage ends with the next stage's input or a [`Rejection`], which [`handle`] turns into
//! the response; all of it runs inside the request's span, which also follows the handler onto
//! its worker thread.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue, SET_COOKIE};
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;
use tracing::field::Empty;

use crate::config::Limits;
use crate::deploy::{AppSlot, InFlight, OwnedRequest, Registry, Version};
use crate::session::{RequestSession, Sessions};

use super::compress::{self, Accepts, ResponseBody};
use super::rejection::Rejection;
use super::{BodyError, OverTls, RequestBody, client_info};

/// The response body type of every response the host sends.
pub(crate) type Body = Full<Bytes>;

/// Where a request went: for its metrics, its access log line and its version header.
#[derive(Default)]
struct Served {
    app: Option<Arc<AppSlot>>,
    version: Option<Arc<Version>>,
    /// `x-baton-version`, once the request was dispatched to a version that has one.
    version_header: Option<HeaderValue>,
}

/// Serves one request: counts it on its version's metrics, writes its access log line and
/// compresses the response as `[compression]` and the request allow.
pub(crate) async fn handle(
    registry: &Registry,
    sessions: &Arc<Sessions>,
    req: Request<RequestBody>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let accepts = Accepts::of(&req);
    let access = registry.config().access_log.then(|| {
        let client = client_info(req.extensions()).copied();
        (req.method().clone(), req.uri().clone(), client)
    });
    // App, version and path (relative to the mount) are known once routed.
    let span = tracing::info_span!("request", app = Empty, version = Empty,
        method = %req.method(), path = Empty);
    let mut served = Served::default();
    let mut response = serve(registry, sessions, req, &mut served)
        .instrument(span.clone())
        .await
        .unwrap_or_else(|rejection| span.in_scope(|| rejection.into_response()));
    if let Some(value) = served.version_header {
        response.headers_mut().insert("x-baton-version", value);
    }
    let took = started.elapsed();
    if let Some(version) = &served.version {
        version.observe(response.status(), took);
    }
    if let Some((method, uri, client)) = access {
        let version = served.version.as_ref().map(|v| v.info().version.as_str());
        // The peer is logged when it is a proxy that forwarded for the client.
        let proxy = client.filter(|c| c.peer.ip().to_canonical() != c.addr);
        tracing::info!(target: "baton::access", app = served.app.as_ref().map(|a| a.name()),
            version, %method, path = uri.path(), status = response.status().as_u16(),
            duration_ms = took.as_secs_f64() * 1000.0,
            client = client.map(|c| tracing::field::display(c.addr)),
            scheme = client.map(|c| c.scheme.as_str()),
            proxy = proxy.map(|c| tracing::field::display(c.peer.ip().to_canonical())),
            "request");
    }
    compress::compress(&registry.config().compression, accepts, response)
}

/// The stages of a request, inside its span.
async fn serve(
    registry: &Registry,
    sessions: &Arc<Sessions>,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, Rejection> {
    let (slot, path) = registry.route(req.uri().path()).ok_or(Rejection::NoApp)?;
    let path = path.to_owned();
    tracing::Span::current()
        .record("app", slot.name())
        .record("path", path.as_str());
    served.app = Some(Arc::clone(&slot));
    let limits = *slot.limits();
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, &limits).await?;
    let admitted = admit(&slot, &parts.headers, &limits, served).await?;
    if registry.config().version_header {
        served.version_header = admitted.version.header().cloned();
    }
    dispatch(sessions, admitted, parts, path, body, &limits).await
}

/// Reads the whole body, refusing one larger than the app's `max_body_bytes` as soon as it is
/// declared or received.
async fn read_body(
    headers: &HeaderMap,
    body: RequestBody,
    limits: &Limits,
) -> Result<Bytes, Rejection> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes) {
        return Err(Rejection::BodyTooLarge);
    }
    let max_body = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    match Limited::new(body, max_body).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Rejection::BodyTooLarge),
        Err(e) => Err(match e.downcast::<BodyError>() {
            Ok(e) if e.is_timeout() => Rejection::BodyStalled(*e),
            Ok(e) => Rejection::BodyUnreadable(e),
            Err(e) => Rejection::BodyUnreadable(e),
        }),
    }
}

/// A request let in: its place among the app's concurrent requests and its claim on the version
/// that serves it.
struct Admitted {
    permit: OwnedSemaphorePermit,
    version: Arc<Version>,
    guard: InFlight,
}

/// Takes a place among the app's concurrent requests (waiting at most the queue timeout) and
/// picks the version that serves the request, which must not be stuck.
async fn admit(
    slot: &AppSlot,
    headers: &HeaderMap,
    limits: &Limits,
    served: &mut Served,
) -> Result<Admitted, Rejection> {
    // A free place is taken without arming a timer; only a full app waits, bounded.
    let permit = match Arc::clone(slot.permits()).try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => tokio::time::timeout(
            limits.queue_timeout(),
            Arc::clone(slot.permits()).acquire_owned(),
        )
        .await
        .ok()
        .and_then(Result::ok),
    };
    let permit = permit.ok_or(Rejection::AtCapacity {
        queue_timeout_ms: limits.queue_timeout_ms,
    })?;
    let (version, guard) = slot.enter(headers).ok_or(Rejection::NoApp)?;
    tracing::Span::current().record("version", version.info().version.as_str());
    served.version = Some(Arc::clone(&version));
    if version.unhealthy() {
        return Err(Rejection::Stuck {
            stuck: version.stuck(),
        });
    }
    Ok(Admitted {
        permit,
        version,
        guard,
    })
}

/// Runs the handler on one of the version's worker threads and waits for it within the
/// request timeout; then stores the session changes it made.
async fn dispatch(
    sessions: &Arc<Sessions>,
    admitted: Admitted,
    parts: Parts,
    path: String,
    body: Bytes,
    limits: &Limits,
) -> Result<Response<Body>, Rejection> {
    let Admitted {
        permit,
        version,
        guard,
    } = admitted;
    let session = sessions.begin(&parts.headers, parts.extensions.get::<OverTls>().is_some());
    let mut call = version.dispatch(
        guard,
        Some(permit),
        OwnedRequest {
            method: parts.method,
            path,
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers: parts.headers,
            body,
            session: Some(Arc::clone(&session)),
            span: tracing::Span::current(),
        },
    );
    let Ok(outcome) = tokio::time::timeout(limits.request_timeout(), &mut call.reply).await else {
        version.overran(&call);
        return Err(Rejection::Timeout {
            timeout_ms: limits.request_timeout_ms,
        });
    };
    let out = outcome
        .map_err(|_| Rejection::WorkersStopped)?
        .map_err(Rejection::Handler)?;
    if let Some(error) = &out.error {
        if out.status == http::StatusCode::SERVICE_UNAVAILABLE && sessions.is_down() {
            // The app passed on the store's outage, which `Sessions` logs once.
            tracing::debug!(%error, "handler error during a session store outage");
        } else {
            tracing::warn!(status = out.status.as_u16(), %error, "handler error");
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(out.body)));
    *response.status_mut() = out.status;
    *response.headers_mut() = out.headers;
    finish_session(&session, response).await
}

/// Stores what the handler changed in its session and adds the session cookie. If the store
/// fails, nothing was written and the client gets a 503 instead of the handler's response.
async fn finish_session(
    session: &RequestSession,
    mut response: Response<Body>,
) -> Result<Response<Body>, Rejection> {
    if let Some(cookie) = session.finish().await.map_err(Rejection::SessionStore)?
        && let Ok(value) = HeaderValue::from_str(&cookie)
    {
        response.headers_mut().append(SET_COOKIE, value);
    }
    Ok(response)
}
